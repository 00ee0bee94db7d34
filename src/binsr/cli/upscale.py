"""``binsr upscale``: super-resolve one image or a folder of images with a checkpoint or a shipped model.

One image goes to ``-o OUTPUT`` (default ``<stem>_x<scale>.png`` beside it; an existing folder receives
that name); a folder goes to the folder ``-o OUTPUT`` (default ``<input>_x<scale>/``) as ``<stem>.png``.
An input file is never overwritten, outputs are written atomically, and large images are processed in
tiles (``--tile``, ``--overlap``) so memory stays bounded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from binsr.data.io import IMAGE_SUFFIXES, list_images, read_image, write_image
from binsr.errors import BinsrError
from binsr.evaluate import resolve_upscaler
from binsr.inference import DEFAULT_SCALE, DEFAULT_TILE, load_upscaler, spec_scale, with_self_ensemble


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``upscale`` subcommand."""
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve an image or a folder of images",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("input", metavar="INPUT", type=Path, help="an image file or a folder of images")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output image or, for a folder input, folder (default: <stem>_x<scale>.png, <input>_x<scale>/)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        choices=(2, 3, 4),
        help="upscaling factor (default: the checkpoint's, x4 otherwise)",
    )
    parser.add_argument(
        "--model",
        default="default",
        metavar="NAME_OR_CHECKPOINT",
        help="a .safetensors checkpoint, 'default' (shipped binary model) or 'default-fp' (default: default)",
    )
    parser.add_argument(
        "--tile", type=int, default=DEFAULT_TILE, help=f"LR tile side, 0 for none (default: {DEFAULT_TILE})"
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="LR context pixels around each tile (default: the model's receptive-field radius, exact)",
    )
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the model over the 8 flips/rotations of each input (EDSR's '+'; 8x slower)",
    )
    parser.set_defaults(func=run)


def plan_outputs(source: Path, output: Path | None, scale: int) -> list[tuple[Path, Path]]:
    """``(input image, output path)`` pairs for ``source``; refuses to overwrite any input image."""
    if not source.exists():
        raise BinsrError(f"input not found: {source}")
    if source.is_dir():
        images = list_images(source)
        folder = output or source.resolve().with_name(f"{source.resolve().name}_x{scale}")
        if folder.exists() and not folder.is_dir():
            raise BinsrError(f"output {folder} exists and is not a folder (the input {source} is a folder)")
        jobs = [(image, folder / f"{image.stem}.png") for image in images]
    else:
        images = [source]
        default_name = f"{source.stem}_x{scale}.png"
        target = output or source.with_name(default_name)
        jobs = [(source, target / default_name if target.is_dir() else target)]
    inputs = {image.resolve() for image in images}
    seen: dict[Path, Path] = {}
    for image, target in jobs:
        resolved = target.resolve()
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise BinsrError(f"output {target} has no image suffix ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if resolved in inputs:
            raise BinsrError(f"refusing to overwrite input image {target}; choose another output with -o")
        if resolved in seen:
            raise BinsrError(f"inputs {seen[resolved]} and {image} would both be written to {target}")
        seen[resolved] = image
    return jobs


def run(args: argparse.Namespace) -> int:
    """Upscale every planned image and report where each result went."""
    scale = args.scale or spec_scale(args.model) or DEFAULT_SCALE
    jobs = plan_outputs(args.input, args.output, scale)
    # a model (tiled, with a progress bar), else bicubic or another upscaler known to ``binsr eval``
    upscaler = load_upscaler(
        args.model, scale, tile=args.tile, overlap=args.overlap, progress=True
    ) or resolve_upscaler(args.model, scale)
    if args.self_ensemble:
        upscaler = with_self_ensemble(upscaler)
    for image, target in tqdm(jobs, unit="image", disable=None if len(jobs) > 1 else True):
        sr = upscaler(read_image(image), scale)
        write_image(target, sr)
        tqdm.write(f"{image} -> {target} ({sr.shape[1]}x{sr.shape[0]})")
    return 0

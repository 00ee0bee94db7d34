"""``binsr eval``: PSNR/SSIM of an upscaler on evaluation folders, by the SR protocol.

Example::

    binsr eval --model bicubic --scale 2 3 4 --data Set5 Set14 BSD100 --format json

``--format json`` prints exactly one JSON object to stdout,
``{"results": [{"dataset", "scale", "psnr", "ssim", "images"}, ...]}`` (PSNR rounded to 4 decimals, SSIM
to 6; a non-finite PSNR is ``null``); ``table`` (default) shows 2 and 4 decimals; ``csv`` has a header
row. Progress bars go to stderr, only when it is a terminal.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from typing import Any

from binsr.cli.common import format_columns
from binsr.errors import BinsrError
from binsr.metrics import CONVENTIONS

FORMATS = ("table", "json", "csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "eval",
        help="PSNR/SSIM (Y channel, MATLAB protocol) of a model on HR folders",
        description="Evaluate an upscaler on HR folders (or EDSR / BasicSR paired folders): modcrop, "
        "MATLAB bicubic LR, upscale, PSNR/SSIM on the Y channel with the scale cropped from each border.",
    )
    parser.add_argument("--model", default="bicubic", help="upscaler: 'bicubic' or a registered spec")
    parser.add_argument(
        "--scale", nargs="+", required=True, metavar="S", help="one or more scales (2, 3 or 4)"
    )
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR", help="one or more data folders")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="matlab",
        help="matlab: Y rounded to 8 bits (published tables); basicsr: float Y",
    )
    parser.add_argument("--save-images", metavar="DIR", help="also write SR images to DIR/<set>/x<s>/")
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the model over the 8 flips/rotations of each input (EDSR's '+'; 8x slower, one scale)",
    )
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")
    parser.set_defaults(func=run)


def _finite(value: float, digits: int) -> float | None:
    """``value`` rounded, or ``None`` if it is not finite (JSON has no infinity)."""
    return round(value, digits) if math.isfinite(value) else None


def format_results(results: list[dict[str, Any]], fmt: str) -> str:
    """Render evaluation results as ``table``, ``json`` or ``csv`` text (without a trailing newline)."""
    if fmt == "json":
        rows = [
            {
                "dataset": r["dataset"],
                "scale": r["scale"],
                "psnr": _finite(r["psnr"], 4),
                "ssim": _finite(r["ssim"], 6),
                "images": r["images"],
            }
            for r in results
        ]
        return json.dumps({"results": rows}, allow_nan=False)
    if fmt == "csv":
        lines: list[str] = []

        class _Sink:
            def write(self, text: str) -> None:
                lines.append(text)

        writer = csv.writer(_Sink(), lineterminator="\n")
        writer.writerow(["dataset", "scale", "psnr", "ssim", "images"])
        for r in results:
            writer.writerow([r["dataset"], r["scale"], f"{r['psnr']:.4f}", f"{r['ssim']:.6f}", r["images"]])
        return "".join(lines).rstrip("\n")
    header = ("dataset", "scale", "PSNR", "SSIM", "images")
    body = [
        (r["dataset"], f"x{r['scale']}", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", str(r["images"]))
        for r in results
    ]
    return format_columns(header, body)


def run(args: argparse.Namespace) -> int:
    """Run ``binsr eval`` with parsed ``args``; prints the results to stdout and returns 0."""
    from binsr.evaluate import check_scale, evaluate

    scales = [check_scale(value) for value in args.scale]
    model = args.model
    if args.self_ensemble:
        from binsr.evaluate import resolve_upscaler
        from binsr.inference import with_self_ensemble

        if len(scales) != 1:
            raise BinsrError("--self-ensemble takes one --scale (a model is trained for one)")
        model = with_self_ensemble(resolve_upscaler(args.model, scales[0]))
    results = evaluate(
        model,
        args.data,
        scales,
        convention=args.convention,
        progress=not args.no_progress,
        save_dir=args.save_images,
    )
    sys.stdout.write(format_results(results, args.format) + "\n")
    sys.stdout.flush()
    return 0

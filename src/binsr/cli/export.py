"""``binsr export``: write a trained model as a ``.binsr`` packed file for the CPU engine.

CHECKPOINT is a binsr ``.safetensors`` model file (or, with ``--random-init``, a registered model name,
built with ``--scale`` and ``--kwargs``). Binary convolution weights are packed at 1 bit per weight with
their per-channel scale; thresholds, RPReLU parameters and full-precision layers are stored as float32.
The file is written atomically; by default the packed runtime is then checked against the PyTorch model
on a small random input (``--no-verify`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from binsr.engine.export import SUFFIX, export_model
from binsr.errors import BinsrError

VERIFY_SIZE = (24, 32)
"""LR height and width of the verification input."""

VERIFY_TOLERANCE = 1e-4
"""Largest max-abs difference (on [0, 1] images) reported as an exact match."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="pack a model checkpoint into a .binsr file for the CPU engine",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a binsr .safetensors model file")
    parser.add_argument(
        "-o", "--output", type=Path, default=None, help="output .binsr file (default: CHECKPOINT's stem)"
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="CHECKPOINT is a registered model name, exported with random weights (tests, benchmarks)",
    )
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=4, help="with --random-init")
    parser.add_argument(
        "--kwargs",
        default="{}",
        metavar="JSON",
        help='model options with --random-init, e.g. {"n_blocks": 4}',
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init (default: 0)")
    parser.add_argument("--no-verify", action="store_true", help="skip the runtime check after writing")
    parser.set_defaults(func=run)


def _load(args: argparse.Namespace) -> torch.nn.Module:
    from binsr.checkpoint import load_model
    from binsr.models import create_model

    if not args.random_init:
        return load_model(args.checkpoint)
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError:
        raise BinsrError(f"--kwargs is not JSON: {args.kwargs!r}") from None
    if not isinstance(kwargs, dict):
        raise BinsrError(f"--kwargs must be a JSON object, got {args.kwargs!r}")
    torch.manual_seed(args.seed)
    return create_model(args.checkpoint, scale=args.scale, **kwargs).eval()


def verify(model: torch.nn.Module, path: Path) -> float:
    """Max abs difference between ``model`` and the packed runtime on a seeded random [0, 1] input."""
    from binsr.engine.runtime import PackedModel

    x = torch.rand(1, 3, *VERIFY_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return float((model(x) - PackedModel.load(path)(x)).abs().max())


def run(args: argparse.Namespace) -> int:
    """Export, then report the file, its size and the verification."""
    output = args.output
    if output is None:
        stem = f"{args.checkpoint}_x{args.scale}" if args.random_init else Path(args.checkpoint).stem
        output = (
            Path(Path(stem).name + SUFFIX) if args.random_init else Path(args.checkpoint).with_suffix(SUFFIX)
        )
    if output.suffix.lower() != SUFFIX:
        raise BinsrError(f"output {output} must end with {SUFFIX}")
    model = _load(args)
    summary = export_model(model, output)
    print(
        f"{output}: {summary['model']} x{summary['scale']}, {summary['ops']} ops, "
        f"{summary['binary_convs']} binary convs, {summary['bytes']:,} bytes"
    )
    if not args.no_verify:
        diff = verify(model, output)
        status = "matches" if diff <= VERIFY_TOLERANCE else "DIFFERS from"
        stream = sys.stdout if diff <= VERIFY_TOLERANCE else sys.stderr
        print(f"runtime {status} the PyTorch model: max |diff| = {diff:.2e} on a random input", file=stream)
    return 0

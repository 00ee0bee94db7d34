"""``binsr activations``: what each binary convolution's sign binarizer sees, on a set of LR images.

Example::

    binsr activations runs/study/cpu/x2/<run>/last.safetensors --scale 2 --data ../shared/data/Set5

For every model (a checkpoint or a shipped model name, as ``binsr eval --model``) and every convolution
with a binarized input, over the LR images of the ``--data`` folders (made as in evaluation): ``mean|t|``
of the binarizer input ``t = x + b``, the share with ``|t| > 1`` (no gradient there through the clipped
surrogates; the plain STE passes it) and the share binarized to ``+1``, the thresholds' ``mean|b|``,
and the smallest and largest per-filter ``mean|W_b|`` of the binary weights (:mod:`binsr.activations`).
``--format json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator

from torch import Tensor

from binsr.activations import BinarizerInputStats
from binsr.cli.common import format_columns


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``activations`` subcommand."""
    parser = subparsers.add_parser(
        "activations",
        help="statistics of the binarizer inputs of binary models on LR images",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="checkpoints or shipped model names")
    parser.add_argument("--scale", required=True, metavar="S", help="the models' scale (2, 3 or 4)")
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR", help="one or more image folders")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")
    parser.set_defaults(func=run)


def format_table(name: str, stats: list[BinarizerInputStats]) -> str:
    """One model's statistics as an aligned text table headed by ``name``, with a mean row."""
    header = ("layer", "mean|t|", "|t|>1", "+1", "mean|b|", "|Wb|min", "|Wb|max")

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def cells(row: BinarizerInputStats) -> tuple[str, ...]:
        return (
            row.layer,
            f"{row.mean_abs:.3f}",
            f"{row.outside_unit:.3f}",
            f"{row.positive:.3f}",
            number(row.threshold_mean_abs),
            number(row.weight_scale_min),
            number(row.weight_scale_max),
        )

    body = [cells(row) for row in stats]
    count = len(stats)
    body.append(
        (
            "mean",
            f"{sum(r.mean_abs for r in stats) / count:.3f}",
            f"{sum(r.outside_unit for r in stats) / count:.3f}",
            f"{sum(r.positive for r in stats) / count:.3f}",
            "",
            "",
            "",
        )
    )
    return name + "\n" + format_columns(header, body)


def run(args: argparse.Namespace) -> int:
    """Run ``binsr activations`` with parsed ``args``; prints the statistics and returns 0."""
    from binsr.activations import binarizer_input_stats
    from binsr.data.datasets import open_eval_set
    from binsr.data.io import to_rgb_batch
    from binsr.errors import BinsrError
    from binsr.evaluate import check_scale, image_progress, resolve_upscaler

    scale = check_scale(args.scale)
    datasets = [open_eval_set(folder, scale) for folder in args.data]

    def inputs(label: str) -> Iterator[Tensor]:
        for dataset in datasets:
            for sample in image_progress(dataset, label, progress=not args.no_progress):
                yield to_rgb_batch(sample.lr)

    results = {}
    for spec in args.models:
        model = getattr(resolve_upscaler(spec, scale), "model", None)
        if model is None:
            raise BinsrError(f"{spec} is not a PyTorch model (a binary checkpoint or shipped model name)")
        try:
            results[spec] = binarizer_input_stats(model, inputs(f"{spec}: "))
        except BinsrError as error:
            raise BinsrError(f"{spec}: {error}") from None
    if args.format == "json":
        payload = {
            "scale": scale,
            "data": [dataset.name for dataset in datasets],
            "models": {spec: [dataclasses.asdict(row) for row in rows] for spec, rows in results.items()},
        }
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        sys.stdout.write("\n\n".join(format_table(spec, rows) for spec, rows in results.items()) + "\n")
    sys.stdout.flush()
    return 0

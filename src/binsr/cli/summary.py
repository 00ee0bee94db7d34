"""``binsr summary``: per-layer parameters and MACs by precision, with BBCU's Params/OPs totals.

In the spirit of larq's model summary: one row per convolution/linear layer (output shape, FP and
1-bit parameters, FP and 1-bit MACs), then totals, ``params = FP + 1-bit/32``, ``OPs = FP MACs +
1-bit MACs/64`` (BBCU's convention), size, compression ratio and the share of binary MACs.
``--format json`` prints one JSON object instead. See :mod:`binsr.complexity` for what is counted.
"""

from __future__ import annotations

import argparse
import inspect
import json

import yaml

from binsr.cli.common import parse_size
from binsr.complexity import DEFAULT_INPUT, count_complexity
from binsr.errors import BinsrError
from binsr.models import create_model, model_factory


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``summary`` subcommand."""
    parser = subparsers.add_parser(
        "summary",
        help="count parameters and MACs per precision for a model",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("model", metavar="MODEL", help="a registered model name (see binsr.list_models())")
    parser.add_argument("--scale", type=int, default=4, help="upscaling factor 2, 3 or 4 (default: 4)")
    parser.add_argument(
        "--input",
        default=f"{DEFAULT_INPUT[0]}x{DEFAULT_INPUT[1]}",
        metavar="WxH",
        help="LR input width x height (default: %(default)s, BBCU's)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    parser.add_argument(
        "--fp", action="store_true", help="summarise the binary=False twin (same layers, all full precision)"
    )
    parser.add_argument(
        "--no-bias", action="store_true", help="count weights only (BBCU Table 1's parameter convention)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model option, e.g. --set n_feats=32 --set attention=null (repeatable)",
    )
    parser.set_defaults(func=run)


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["n_feats=32", "attention=null"]`` → ``{"n_feats": 32, "attention": None}`` (YAML scalars)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BinsrError(f"bad --set {pair!r}; expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise BinsrError(f"bad --set value {value!r} for {key!r}") from None
    return options


def run(args: argparse.Namespace) -> int:
    """Build the model, count it and print a table or one JSON object."""
    size = parse_size(args.input)
    options = parse_options(args.set)
    if args.fp and "binary" in inspect.signature(model_factory(args.model)).parameters:
        options["binary"] = False
    model = create_model(args.model, scale=args.scale, **options)
    complexity = count_complexity(model, size, include_bias=not args.no_bias)
    if args.format == "json":
        print(json.dumps(complexity.to_dict()))
    else:
        print(complexity.format_table())
    return 0

"""``binsr train``: train a model from a YAML config, or resume a run.

``binsr train CONFIG.yaml [--set key=value ...]`` starts the run ``<path.runs>/<name>/``;
``binsr train --resume RUN_DIR [--set ...]`` continues it from its last checkpoint (with its saved
``config.yaml``, or with ``CONFIG.yaml`` when one is given); ``--stop-at N`` stops after iteration N
(a checkpoint, the schedule unchanged), so a long run can be trained in chunks. Multi-GPU /
multi-node: launch the same command with ``torchrun --nproc_per_node N -m binsr train CONFIG.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from binsr.errors import BinsrError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (or resume a run)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("config", metavar="CONFIG", type=Path, nargs="?", help="the YAML training config")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.iterations=100 (value parsed as YAML, relative paths "
        "taken from the config file's folder; repeatable)",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue the run in RUN_DIR")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="training device (default: CUDA when available, else CPU)"
    )
    parser.add_argument(
        "--stop-at",
        metavar="N",
        type=int,
        help="stop after iteration N with a checkpoint, keeping the configured schedule (--resume continues)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="train through torch.compile (faster steps after a compilation of 10-60 s; needs a C++ "
        "compiler on the CPU)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load and validate the config, then train; prints the run folder and the best validation PSNR."""
    from binsr.train import CONFIG_FILE, load_config, train

    if args.config is None and args.resume is None:
        raise BinsrError("give a CONFIG file to start a run, or --resume RUN_DIR to continue one")
    if args.stop_at is not None and args.stop_at < 1:
        raise BinsrError(f"--stop-at must be a positive iteration, got {args.stop_at}")
    if args.resume is not None and not (args.resume / CONFIG_FILE).is_file():
        raise BinsrError(f"cannot resume: {args.resume} is not a run directory (no {CONFIG_FILE})")
    config_path = args.config if args.config is not None else args.resume / CONFIG_FILE
    config = load_config(config_path, args.overrides)
    result = train(
        config,
        args.resume,
        resume=args.resume is not None,
        device=args.device,
        progress=not args.no_progress,
        stop_at=args.stop_at,
        compile_model=args.compile,
    )
    if result.rank == 0:
        best = (
            f"; best mean validation PSNR {result.best_psnr:.2f} dB at iteration {result.best_iteration}"
            if result.best_psnr is not None
            else ""
        )
        print(f"trained {result.iteration} iterations in {result.run_dir}{best}", file=sys.stdout)
        if result.iteration < config["train"]["iterations"]:
            print(f"stopped early; continue with: binsr train --resume {result.run_dir}", file=sys.stdout)
    return 0

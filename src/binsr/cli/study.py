"""``binsr study``: run a grid of training runs from a study file, or regenerate its report.

``binsr study STUDY.yaml [--only PATTERN ...] [--dry-run] [--results DIR] [--jobs N]`` trains every run
of the study that is not done yet (resuming interrupted ones), scores each, and rewrites
``study.json`` and ``RESULTS.md``; ``--keep`` saves what a fresh clone needs to go on into the study's
kept folder. ``binsr study report [--results STUDY_JSON] [-o RESULTS.md]``
regenerates the report from ``study.json`` alone. ``binsr study anatomy --data SET [--data SET ...]
[--checkpoints INDEX] [-o ANATOMY.md]`` splits the gap of the shipped binary checkpoints to their twins
over image regions (:mod:`binsr.study.anatomy`). See docs/STUDY.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RESULTS = Path("docs/results/study.json")
DEFAULT_CHECKPOINTS = Path("docs/results/checkpoints/index.json")
DEFAULT_ANATOMY = Path("docs/ANATOMY.md")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` subcommand."""
    parser = subparsers.add_parser(
        "study",
        help="run a study grid (models x variants x scales x seeds, with FP twins) or regenerate its report",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="'binsr study report' regenerates RESULTS.md from study.json (default "
        "docs/results/study.json; the report goes to the folder above: docs/RESULTS.md). "
        "'binsr study anatomy --data SET ...' writes docs/ANATOMY.md: where the shipped binary checkpoints "
        "lose to their twins.",
    )
    parser.add_argument(
        "study", metavar="STUDY.yaml|report|anatomy", help="a study file, 'report' or 'anatomy'"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only runs whose label matches this shell pattern, e.g. 'cpu/x4/ours/*/bin/s0/*' "
        "(labels: track/xS/model/variant/bin|fp/sSEED/iITERATIONS; repeatable; teachers are added)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs, their status and the work left (hours at the rates recorded on the device "
        "that --device/--threads/--jobs choose)",
    )
    parser.add_argument(
        "--results",
        metavar="DIR",
        type=Path,
        help="runs go to DIR/runs, results to DIR/results/study.json, the report to DIR/RESULTS.md "
        "(default: the study file's output section); with 'report': the study.json file (or its folder)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="with 'report' or 'anatomy': the Markdown file to write"
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="FOLDER",
        help="with 'anatomy': an evaluation set folder (repeatable)",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=DEFAULT_CHECKPOINTS,
        metavar="INDEX",
        help=f"with 'anatomy': the shipped checkpoints' index.json or folder (default {DEFAULT_CHECKPOINTS})",
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="train N runs at a time (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads per run (default: all cores for --jobs 1, else cores / jobs); "
        "1 is best on a busy machine",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="training device (default: CUDA if available)"
    )
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="train nothing: score finished runs on the evaluation sets they lack, rewrite study.json "
        "and the report",
    )
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="with --score-only: also score the selected finished runs with the x8 self-ensemble "
        "(8 passes per image; select few runs with --only)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="train nothing: copy into the study's kept folder (output.kept, under version control) the "
        "finished runs that unfinished ones need and the state of partly trained runs, so a fresh clone "
        "goes on from them",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="continue after a run fails (exit status 1)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="train through torch.compile (faster steps after a compilation of 10-60 s per run)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the study, or regenerate the report (``binsr study report``)."""
    if args.study == "report" and not Path(args.study).is_file():
        from binsr.study import write_report

        results = args.results if args.results is not None else DEFAULT_RESULTS
        if results.is_dir():
            results = results / "study.json"
        report = args.output if args.output is not None else results.parent.parent / "RESULTS.md"
        written = write_report(results, report)
        print(f"wrote {report} and {len(written) - 1} figures from {results}", file=sys.stdout)
        return 0
    if args.study == "anatomy" and not Path(args.study).is_file():
        from binsr.study.anatomy import write_anatomy

        output = args.output if args.output is not None else DEFAULT_ANATOMY
        written = write_anatomy(args.checkpoints, args.data, output, progress=not args.no_progress)
        print(f"wrote {output} and {len(written) - 1} figures from {args.checkpoints}", file=sys.stdout)
        return 0
    from binsr.study import load_study, run_study

    study = load_study(args.study, args.results)
    if args.keep:
        from binsr.study.runner import keep_runs

        changes = keep_runs(study)
        for what, ids in changes.items():
            for run_id in ids:
                print(f"{what:8s} {run_id}", file=sys.stdout)
        print(f"kept folder {study.kept_dir} up to date ({sum(map(len, changes.values()))} changes)")
        return 0
    return run_study(
        study,
        only=args.only,
        dry_run=args.dry_run,
        jobs=args.jobs,
        device=args.device,
        progress=not args.no_progress,
        keep_going=args.keep_going,
        threads=args.threads,
        score_only=args.score_only,
        self_ensemble=args.self_ensemble,
        compile_model=args.compile,
    )

"""Train the shipped default models (binary x4 and x2 and their full-precision twins) in one time budget.

    python scripts/train_shipped_models.py --data DIR --runs DIR --budget SECONDS [--device cuda]

``DIR`` holds ``T91/``, ``BSD200/`` and ``Set5/``. The four runs of ``configs/default_x{4,2}[_fp].yaml``
train concurrently (one process each; on one GPU they share it). Phase 1 trains all four for a few
iterations to measure their speed together; phase 2 gives each scale the iteration count that the
slower of its binary model and twin finishes in ``--budget`` seconds, the same count for both, so each
binary model is compared with a twin trained on exactly the same budget. The iteration counts used are
written to ``<runs>/iterations.json``; the resolved configs are in each run folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("default_x4", "default_x4_fp", "default_x2", "default_x2_fp")
CALIBRATION_ITERATIONS = 60


def overrides(
    data: Path, runs: Path, name: str, iterations: int, calibrating: bool, extra: list[str]
) -> list[str]:
    """``--set`` values pointing a shipped config at ``data`` and ``runs``."""
    values = [
        f"datasets.train.hr_folders=[{data / 'T91'}, {data / 'BSD200'}]",
        f"datasets.val.folders=[{data / 'Set5'}]",
        f"path.runs={runs}",
        f"name={name}",
        f"train.iterations={iterations}",
    ]
    if calibrating:
        values += [
            "logging.print_every=10",
            "datasets.val.every=100000",
            "train.scheduler.warmup_iterations=0",
        ]
    return values + extra


def launch(config: str, values: list[str], device: str, log: Path) -> subprocess.Popen[bytes]:
    """Start one training process (through the library, not the CLI), leading its own session."""
    code = (
        "import sys; from binsr.train import load_config, train; "
        "c = load_config(sys.argv[1], sys.argv[3:]); "
        "r = train(c, device=sys.argv[2], progress=False); "
        "print('done', r.iteration, r.best_psnr, r.best_iteration, flush=True)"
    )
    args = [sys.executable, "-c", code, str(REPO / "configs" / f"{config}.yaml"), device, *values]
    return subprocess.Popen(
        args, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
    )


def seconds_per_iteration(run_dir: Path) -> float:
    """Training seconds per iteration from a calibration run's ``metrics.csv`` (the first training row
    skipped; validation rows carry no time)."""
    with (run_dir / "metrics.csv").open() as f:
        rows = [(int(r["iteration"]), float(r["time"])) for r in csv.DictReader(f) if r["time"]]
    (i0, t0), (i1, t1) = rows[1], rows[-1]
    return (t1 - t0) / (i1 - i0)


def calibrate(
    configs: tuple[str, ...], data: Path, folder: Path, iterations: int, device: str, extra: list[str]
) -> dict[str, float]:
    """Train ``configs`` side by side for ``iterations`` in ``folder``; their seconds per iteration.

    Each process's output goes to ``cal_<config>.log`` beside ``folder``; a failed one raises
    RuntimeError with its log."""
    logs = {c: folder.parent / f"cal_{c}.log" for c in configs}
    procs = {
        c: launch(c, overrides(data, folder, c, iterations, True, extra), device, logs[c]) for c in configs
    }
    failed = [c for c, p in procs.items() if p.wait() != 0]
    if failed:
        raise RuntimeError(f"calibration of {failed[0]} failed:\n{logs[failed[0]].read_text()}")
    return {c: seconds_per_iteration(folder / c) for c in configs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="wall-clock seconds for phase 2")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-iterations", type=int, default=100000)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    data, runs = args.data.resolve(), args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)

    try:
        speed = calibrate(
            CONFIGS, data, runs / "calibration", CALIBRATION_ITERATIONS, args.device, args.extra
        )
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    # Validation every 1000 iterations and checkpoints take a little time: keep 10 % in reserve.
    iterations = {}
    for scale in ("x4", "x2"):
        slowest = max(speed[f"default_{scale}"], speed[f"default_{scale}_fp"])
        n = int(0.9 * args.budget / slowest) // 100 * 100
        iterations[scale] = max(100, min(args.max_iterations, n))
    summary = {"seconds_per_iteration": speed, "iterations": iterations, "budget_s": args.budget}
    (runs / "iterations.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)

    started = time.monotonic()
    procs = {
        c: launch(
            c,
            overrides(data, runs, c, iterations[c.split("_")[1]], False, args.extra),
            args.device,
            runs / f"{c}.log",
        )
        for c in CONFIGS
    }
    failed = 0
    for c, p in procs.items():
        code = p.wait()
        tail = (runs / f"{c}.log").read_text().strip().splitlines()[-1:]
        print(f"{c}: exit {code} after {time.monotonic() - started:.0f} s: {tail}", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

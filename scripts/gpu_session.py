"""One lent-GPU session: the shipped x2 pair and a slice of the CPU-track study, side by side, in one budget.

    python scripts/gpu_session.py --out DIR --budget SECONDS [--jobs 13] [--only PATTERN ...]

The machine has one GPU and 16 cores; a 32-channel study run is bound by Python and kernel launches,
not by the GPU, so ``--jobs`` runs share the GPU (one core and one torch thread each) while the two
shipped x2 configs (``configs/default_x2[_fp].yaml``) train beside them.

1. Calibration: the shipped pair (``train_shipped_models.calibrate``) and a copy of ``studies/cpu.yaml``
   at ``--calibration-iterations`` (``--jobs`` runs of the selected slice, one of each network first)
   train together, so the measured seconds per iteration include the sharing.
2. The iteration counts that finish inside the budget: the study's ``train.iterations`` (a multiple of
   500, from each network's calibrated speed times SUSTAINED, the runs scheduled longest first over
   ``--jobs`` workers, plateau runs ``plateau.factor`` x as long) and the shipped pair's (both the same).
   ``studies/cpu.yaml`` is rewritten with that count and the expected seconds per iteration.
3. Both trainings run to the end or to the deadline; what finished is packed under ``--out`` (at most
   seven files): ``study_<k>.tar.gz`` (study.json and every finished run's done.json, config, metrics
   and final checkpoint), ``shipped_x2_0.tar.gz`` (the two runs), ``meta_0.tar.gz`` (the rewritten
   cpu.yaml and the logs) and ``session.json`` (speeds, iteration counts, timings).

Data: the study file and the shipped configs read ``../shared/data`` (relative to the repository); on
a machine without it, ``--data DIR`` (T91, BSD200 and the evaluation sets) is linked there. The sets
that did not fit the upload can be left out with ``--eval-sets`` and scored later, here, by
``binsr study studies/cpu.yaml --score-only``. On the lent machine (2026-11-26), with the images as
lossless WebP (gray ones as they are) in an ignored ``.gpu_data/`` (``python scripts/make_gpu_data.py``)
named in ``carry`` (every call: a call without it deletes it there)::

    export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
    python scripts/gpu_session.py --out $OUT --data .gpu_data --budget 540 --jobs 13 \
        --eval-sets Set5 Set14 --only 'cpu/x*/ours/base/*' --only 'cpu/x*/bbcu_l/base/*'

``--study-only`` skips steps 1 and 2 and the shipped pair: ``studies/cpu.yaml`` runs as committed (so
every run keeps its id) until the deadline, and runs stopped there are packed with their training
state to be resumed elsewhere (:func:`pack_study`). ``--compile`` trains the study through
``torch.compile``. Runs come from the study's kept folder (``docs/results/kept_runs``, tracked, so it
travels with the working tree; ``binsr study studies/cpu.yaml --keep`` fills it here after a session): a
run that needs another (a distillation teacher, the model an ``init: twin`` variant starts from) kept
finished is not trained again, and a run partly trained (an earlier session stopped it at its
deadline) continues from its kept state.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "scripts"))
from train_shipped_models import calibrate, launch, overrides, seconds_per_iteration  # noqa: E402

from binsr.study import Study, StudyRun, load_study  # noqa: E402
from binsr.study.runner import DONE_FILE, partial_files, select_runs  # noqa: E402
from binsr.train import CONFIG_FILE, LAST_FILE  # noqa: E402
from binsr.train.logs import METRICS_CSV  # noqa: E402
from binsr.train.state import STATE_JSON  # noqa: E402

SHIPPED = ("default_x2", "default_x2_fp")
PART_BYTES = 15 * 2**20
"""Each packed archive stays under this size (the device returns files of at most 16 MiB)."""
RESERVE = 0.85
"""Share of the remaining budget planned for training (validation, scoring and start-up take the rest)."""
SUSTAINED = 2.5
"""Sustained seconds per iteration over calibrated ones. On the H200 lent on 2026-11-26, 60 calibration
iterations (while the other runs were still starting) gave 0.025 s/it; the 32-channel runs then trained
at 0.045-0.085 s/it (BBCU-L and the twins) and 0.15-0.21 s/it (``ours``) with 15 processes sharing it."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def link_data(data: Path | None) -> Path:
    """The data folder: ``../shared/data`` (as the configs spell it), made a link to ``data`` when it
    does not exist; ``data`` itself where no link can be made there."""
    if DATA.exists() or data is None:
        return DATA
    try:
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.symlink_to(data.resolve())
    except OSError as error:
        log(f"cannot link {DATA} ({error}): the study files name {data.resolve()} instead")
        return data.resolve()
    return DATA


def study_text(
    source: str, iterations: int, seconds: float | None = None, sets: list[str] | None = None
) -> str:
    """``studies/cpu.yaml``'s text with ``train.iterations`` (validation every quarter) and speed set,
    and only the evaluation ``sets`` named (all when ``None``)."""
    text = re.sub(r"(?m)^    iterations: \d+$", f"    iterations: {iterations}", source, count=1)
    every = max(1, iterations // 4)
    text = re.sub(r"(?m)^      every: \d+$", f"      every: {every}", text, count=1)
    text = re.sub(
        r"(?m)^  logging: \{print_every: \d+, checkpoint_every: \d+\}$",
        f"  logging: {{print_every: {max(1, min(100, iterations // 10))}, checkpoint_every: {every}}}",
        text,
        count=1,
    )
    text = keep_sets(text, sets)
    if seconds is not None:
        text = re.sub(
            r"(?m)^    seconds_per_iteration: .*$",
            f"    seconds_per_iteration: {seconds:.3f}   # one of --jobs runs sharing the lent GPU: "
            "scripts/gpu_session.py's calibration x SUSTAINED",
            text,
            count=1,
        )
    return text


def keep_sets(text: str, sets: list[str] | None) -> str:
    """A study file's text with only the evaluation ``sets`` named (all when ``None``); the runs' ids do
    not depend on them."""
    if sets is None:
        return text
    head, block = text.split("\neval:\n  sets:\n", 1)
    lines = block.splitlines(keepends=True)
    entries = [line for line in lines if line.startswith("    ")]
    kept = [line for line in entries if line.split(":")[0].strip() in sets]
    return head + "\neval:\n  sets:\n" + "".join(kept) + "".join(lines[len(entries) :])


def start_study(
    study: Path, results: Path, only: list[str], jobs: int, device: str, log_file: Path, compile_model: bool
) -> subprocess.Popen:
    """``binsr study`` on the runs matching ``only``, ``jobs`` at a time with one torch thread each
    (through ``torch.compile`` with ``compile_model``)."""
    args = [sys.executable, "-m", "binsr", "study", str(study), "--results", str(results)]
    args += [f"--only={pattern}" for pattern in only]
    args += ["--jobs", str(jobs), "--threads", "1", "--device", device, "--keep-going", "--no-progress"]
    args += ["--compile"] if compile_model else []
    return subprocess.Popen(
        args, stdout=log_file.open("ab"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
    )


def makespan(costs: list[float], jobs: int) -> float:
    """Longest-first list scheduling of run ``costs`` over ``jobs`` workers: the largest worker load."""
    loads = [0.0] * jobs
    for cost in sorted(costs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + cost)
    return max(loads)


def network_of(run: StudyRun) -> tuple[str, bool]:
    """What sets a run's speed: its model and whether it is binary."""
    network = run.config["network"]
    return network["name"], bool(network.get("binary", False))


def calibration_runs(runs: list[StudyRun], jobs: int) -> list[StudyRun]:
    """``jobs`` runs that need no other run: one of each network first, then the next ones in order."""
    free = [run for run in runs if not run.needs]
    first = list({network_of(run): run for run in reversed(free)}.values())[::-1]
    return (first + [run for run in free if run not in first])[:jobs]


def network_speeds(study: Study, runs: list[StudyRun]) -> dict[tuple[str, bool], float]:
    """Median calibrated seconds per iteration of each network among ``runs``."""
    measured: dict[tuple[str, bool], list[float]] = {}
    for run in runs:
        metrics = study.run_dir(run) / METRICS_CSV
        if metrics.is_file():
            with contextlib.suppress(IndexError, ZeroDivisionError):  # too few rows: it failed early
                measured.setdefault(network_of(run), []).append(seconds_per_iteration(metrics.parent))
    if not measured:
        raise SystemExit(f"no calibration run of the study finished under {study.runs_dir}")
    return {key: sorted(values)[len(values) // 2] for key, values in measured.items()}


def stop(process: subprocess.Popen) -> None:
    """Stop a process and its children (it leads its own session), gently first."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)


def pack(files: list[tuple[Path, str]], out: Path, stem: str, max_parts: int) -> tuple[list[str], list[str]]:
    """Pack ``files`` (path, name in the archive), in order, into at most ``max_parts`` archives
    ``<stem>_<k>.tar.gz`` of at most PART_BYTES (uncompressed) each; returns (archives, names left out)."""
    parts: list[list[tuple[Path, str]]] = [[]]
    size, left_out = 0, []
    for path, name in files:
        weight = path.stat().st_size + 1024
        if size + weight > PART_BYTES and parts[-1]:
            if len(parts) == max_parts:
                left_out.append(name)
                continue
            parts.append([])
            size = 0
        parts[-1].append((path, name))
        size += weight
    archives = []
    for k, members in enumerate(part for part in parts if part):
        archive = f"{stem}_{k}.tar.gz"
        with tarfile.open(out / archive, "w:gz") as tar:
            for path, name in members:
                tar.add(path, name)
        archives.append(archive)
    return archives, left_out


def kept_finished_runs(run_file: Path, results: Path) -> list[str]:
    """Ids of the finished runs in the study's kept folder (tracked, so on the device too): ``binsr
    study`` restores them instead of training them, and they are not packed back."""
    device = load_study(run_file, results)
    if device.kept_dir is None:
        return []
    return [run.run_id for run in device.runs if (device.kept_dir / run.run_id / DONE_FILE).is_file()]


def pack_study(
    study_root: Path, out: Path, session: dict, max_parts: int, reused: tuple[str, ...] = ()
) -> list[str]:
    """Pack the study under ``study_root``: study.json and the finished runs' records first, then their
    checkpoints (``ours`` and twins before the others), then the runs stopped at the deadline, whole
    enough to resume (most advanced first); the ``reused`` runs (brought in, not trained here) are left
    out. Names are relative to ``study_root`` (``runs/<track>/x<scale>/<id>/...``,
    ``results/study.json``)."""
    runs_root = study_root / "runs"
    done_dirs = sorted(
        p.parent for p in study_root.rglob(DONE_FILE) if str(p.parent.relative_to(runs_root)) not in reused
    )
    reached = {  # run folder -> iteration of its last committed state, for runs not finished
        p.parent: json.loads(p.read_text(encoding="utf-8"))["iteration"]
        for p in runs_root.rglob(STATE_JSON)
        if not (p.parent / DONE_FILE).exists()
    }
    partial_dirs = sorted(reached, key=lambda d: (-reached[d], d))
    small = [study_root / "results" / "study.json"]
    small += [run_dir / n for run_dir in done_dirs for n in (DONE_FILE, CONFIG_FILE, METRICS_CSV)]
    weights = sorted(
        (d / LAST_FILE for d in done_dirs if (d / LAST_FILE).is_file()),
        key=lambda path: not ("/ours-" in str(path) or "/twin-" in str(path)),
    )
    partial = [run_dir / n for run_dir in partial_dirs for n in partial_files()]
    files = [
        (path, str(path.relative_to(study_root))) for path in [*small, *weights, *partial] if path.is_file()
    ]
    session["study_done_runs"] = len(done_dirs)
    session["study_partial_runs"] = {str(d.relative_to(runs_root)): reached[d] for d in partial_dirs}
    archives, session["left_out"] = pack(files, out, "study", max_parts)
    return archives


def seed_records(study_file: Path, root: Path) -> bool:
    """Give the device's study (results under ``root``) the committed ``study.json`` unless it has one
    (a warm machine's later call keeps its own), so runs recorded here count as recorded there too: a
    ``--only`` pattern that matches one (a twin recorded beside the binary run it serves) does not train
    it again. Returns whether it copied."""
    target = root / "results" / "study.json"
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(load_study(study_file).results.read_bytes())
    return True


def study_only(args: argparse.Namespace, data: Path, started: float, deadline: float) -> int:
    """``--study-only``: ``studies/cpu.yaml`` as committed (its budget, so the runs keep their ids) until
    it ends or the deadline, one phase after another (``--only`` first, then each ``--then``); finished
    and partial runs packed (:func:`pack_study`). With ``--compile``, a study that fails before the
    deadline is started again without it (it resumes its runs from their last checkpoints)."""
    if data != DATA:
        log(f"--study-only needs the data at {DATA} (the runs' ids hold the study file's paths)")
        return 1
    out, work = args.out.resolve(), args.work.resolve()
    study_file = REPO / "studies" / "cpu.yaml"
    run_file = study_file.with_name("cpu_device.yaml")
    run_file.write_text(keep_sets(study_file.read_text(encoding="utf-8"), args.eval_sets), encoding="utf-8")
    phases = [args.only, *args.then]
    session: dict = {"budget_s": args.budget, "jobs": args.jobs, "phases": phases, "compile": args.compile}
    session["reused"] = kept_finished_runs(run_file, work / "study")
    session["seeded_records"] = seed_records(study_file, work / "study")
    session["phase_exits"] = []
    compile_model = args.compile
    for only in phases:
        while time.monotonic() < deadline:
            log(f"study {run_file.name}{' (compiled)' if compile_model else ''}: {only}")
            study_proc = start_study(
                run_file, work / "study", only, args.jobs, args.device, work / "study.log", compile_model
            )
            while time.monotonic() < deadline and study_proc.poll() is None:
                time.sleep(5)
            code = study_proc.poll()
            stop(study_proc)
            session["phase_exits"].append({"only": only, "compile": compile_model, "exit": code})
            if code is None or code == 0 or not compile_model:
                break
            log(f"the compiled study exited with {code}: again without torch.compile")
            compile_model = False
    session["stopped_at_deadline"] = time.monotonic() >= deadline
    run_file.unlink()
    session["elapsed_s"] = round(time.monotonic() - started, 1)
    archives = pack_study(work / "study", out, session, 6, tuple(session["reused"]))
    archives += pack([(work / "study.log", "study.log")], out, "meta", 1)[0]
    session["archives"] = archives
    (out / "session.json").write_text(json.dumps(session, indent=2), encoding="utf-8")
    log(
        f"packed {archives}; {session['study_done_runs']} runs done, partial: {session['study_partial_runs']}"
    )
    return 0


def run_files(root: Path, patterns: tuple[str, ...]) -> list[tuple[Path, str]]:
    return [(p, str(p.relative_to(root))) for pattern in patterns for p in sorted(root.rglob(pattern))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="wall-clock seconds for everything")
    parser.add_argument("--work", type=Path, default=REPO / "gpu_session", help="scratch folder")
    parser.add_argument("--data", type=Path, help="folder with T91, BSD200, Set5, Set14, BSD100")
    parser.add_argument("--jobs", type=int, default=13)
    parser.add_argument("--only", action="append", default=[], help="study runs (binsr study --only)")
    parser.add_argument(
        "--then",
        action="append",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="with --study-only: a later phase (its runs' patterns), started when the earlier ones end",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--eval-sets",
        nargs="+",
        metavar="NAME",
        help="score the study runs on these of its sets only (the others: 'binsr study' here, later)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="study runs through torch.compile (binsr study --compile)"
    )
    parser.add_argument(
        "--study-only",
        action="store_true",
        help="no calibration and no shipped models: studies/cpu.yaml as committed until the deadline, "
        "runs stopped there packed to be resumed elsewhere",
    )
    parser.add_argument("--max-iterations", type=int, default=30000)
    parser.add_argument("--calibration-iterations", type=int, default=60)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="shipped config overrides")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget - 45  # packing and copying out
    out, work = args.out.resolve(), args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    data = link_data(args.data)
    if args.study_only:
        return study_only(args, data, started, deadline)
    study_file = REPO / "studies" / "cpu.yaml"
    source = study_file.read_text(encoding="utf-8")
    run_source = source if data == DATA else source.replace("../../shared/data", str(data))
    session: dict = {"budget_s": args.budget, "jobs": args.jobs, "only": args.only}

    # 1. calibration, everything at once
    log("calibration")
    cal_study = study_file.with_name("cpu_calibration.yaml")
    cal_iterations = args.calibration_iterations
    cal_study.write_text(study_text(run_source, cal_iterations, sets=args.eval_sets), encoding="utf-8")
    cal_results = work / "calibration_study"
    cal = load_study(cal_study, cal_results)
    cal_runs = calibration_runs(select_runs(cal, args.only), args.jobs)
    cal_labels = [run.labels[0] for run in cal_runs]
    study_proc = start_study(
        cal_study,
        cal_results,
        cal_labels,
        args.jobs,
        args.device,
        work / "calibration_study.log",
        args.compile,
    )
    shipped_cal = work / "calibration_shipped"
    try:
        shipped_speeds = calibrate(SHIPPED, data, shipped_cal, cal_iterations, args.device, args.extra)
    except RuntimeError as error:
        log(str(error))
        stop(study_proc)
        return 1
    study_proc.wait()
    cal_study.unlink()
    shipped_speed = max(shipped_speeds.values())
    speeds = network_speeds(cal, cal_runs)
    calibration_s = time.monotonic() - started
    log(f"calibration: {calibration_s:.0f} s; study {speeds} s/it, shipped x2 {shipped_speed:.4f} s/it")

    # 2. iteration counts inside what is left
    left = (deadline - time.monotonic()) * RESERVE
    slowest = max(speeds.values())
    study = load_study(study_file, work / "study")
    base = next(run.iterations for run in study.runs if run.kind != "plateau")  # train.iterations
    runs = select_runs(study, args.only)
    # a run's cost in units of train.iterations: plateau runs are factor x longer (2, or 4 in a ladder)
    costs = [SUSTAINED * speeds.get(network_of(run), slowest) * run.iterations / base for run in runs]
    per_iteration = makespan(costs, args.jobs)  # seconds of the busiest worker per train.iterations
    per_run_overhead = 25.0  # start-up, data loading, validation and scoring of one run
    runs_per_worker = math.ceil(len(costs) / args.jobs)
    n = int((left - runs_per_worker * per_run_overhead) / per_iteration) // 500 * 500
    n = min(args.max_iterations, max(500, n))
    n_shipped = min(args.max_iterations, max(100, int(left / (SUSTAINED * shipped_speed)) // 100 * 100))
    speed = SUSTAINED * sorted(speeds.values())[len(speeds) // 2]  # what --dry-run should expect
    session.update(
        calibration_s=round(calibration_s, 1),
        study_seconds_per_iteration={
            f"{name}{'' if binary else '-fp'}": v for (name, binary), v in speeds.items()
        },
        shipped_seconds_per_iteration=shipped_speed,
        study_runs=len(costs),
        busiest_worker_seconds_per_iteration=per_iteration,
        study_iterations=n,
        shipped_iterations=n_shipped,
    )
    log(json.dumps(session))
    study_file.write_text(study_text(source, n, speed), encoding="utf-8")  # the one to commit
    run_file = study_file.with_name("cpu_device.yaml")
    run_file.write_text(study_text(run_source, n, speed, args.eval_sets), encoding="utf-8")

    # 3. train both, up to the deadline
    study_proc = start_study(
        run_file, work / "study", args.only, args.jobs, args.device, work / "study.log", args.compile
    )
    shipped_runs = work / "shipped"
    shipped = {
        c: launch(
            c, overrides(data, shipped_runs, c, n_shipped, False, args.extra), args.device, work / f"{c}.log"
        )
        for c in SHIPPED
    }
    procs = [study_proc, *shipped.values()]
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(5)
    names = ["study", *shipped]
    timed_out = [name for name, p in zip(names, procs, strict=True) if p.poll() is None]
    for p in procs:
        stop(p)
    session["stopped_at_deadline"] = timed_out
    session["elapsed_s"] = round(time.monotonic() - started, 1)
    log(f"training ended after {session['elapsed_s']} s; stopped at the deadline: {timed_out}")

    # 4. pack what finished
    archives = pack_study(work / "study", out, session, 4)
    shipped_files = run_files(
        shipped_runs, ("*/last.safetensors", "*/metrics.csv", "*/config.yaml", "*/*.png")
    )
    archives += pack(shipped_files, out, "shipped_x2", 1)[0]
    meta = [(study_file, "cpu.yaml")]
    meta += [(work / n, n) for n in ("study.log", "calibration_study.log") if (work / n).is_file()]
    meta += [(work / f"{c}.log", f"{c}.log") for c in SHIPPED if (work / f"{c}.log").is_file()]
    archives += pack(meta, out, "meta", 1)[0]
    session["archives"] = archives
    (out / "session.json").write_text(json.dumps(session, indent=2), encoding="utf-8")
    log(f"packed {archives}; left out {len(session['left_out'])} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

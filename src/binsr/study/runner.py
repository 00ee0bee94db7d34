"""Running a study: train every run (resumably), score it, record it in ``study.json``, regenerate the report.

A run is *done* when its folder holds ``done.json`` (written last, atomically, after training and
scoring): it carries the run's scores, OPs/params, final checkpoint and training curve. Done runs are
skipped. A run folder with a committed training state (``last_state.json``) but no ``done.json`` is
continued with :func:`binsr.train.train`'s resume machinery; a folder without a state starts afresh.
``study.json`` is rebuilt from the ``done.json`` markers of the study after every run (records of other
studies and tracks already in the file are kept; a record with the same key is replaced).

The runs folder is scratch space, so a fresh clone has only ``study.json`` and the study's ``kept``
folder (tracked). A run recorded in ``study.json`` under its id is *recorded*: it is not trained
again unless a run still to train needs its checkpoint (a teacher) and neither folder has it nor the
study's shipped checkpoints (:func:`restore_shipped_runs`).
``binsr study STUDY --keep`` (:func:`keep_runs`) copies into the kept folder what must survive the
runs folder (the final checkpoints of finished runs that unfinished ones need, the training state of
partial runs), and every run of the study starts from its kept copy when that is further along
(:func:`restore_kept_runs`).

Scoring uses the same code as ``binsr eval`` (:func:`binsr.evaluate.resolve_upscaler` on the checkpoint
file, then :func:`binsr.evaluate.evaluate`), so ``binsr eval --model <checkpoint>`` reproduces every
number, and :func:`binsr.complexity.count_complexity` at the study's input size (320x180).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from binsr.errors import BinsrError, TrainingStoppedError
from binsr.fileio import atomic_write_bytes
from binsr.hardware import UNRECORDED_DEVICE, device_name
from binsr.study.report import PER_IMAGE, SELF_ENSEMBLE, load_results, write_report
from binsr.study.spec import RecordKey, Study, StudyRun

__all__ = [
    "DONE_FILE",
    "complete_scores",
    "execute_run",
    "keep_runs",
    "partial_files",
    "recalibrate_finished",
    "record_of",
    "recorded_run_ids",
    "restore_kept_runs",
    "restore_shipped_runs",
    "run_status",
    "run_study",
    "score_checkpoint",
    "select_runs",
    "shipped_runs",
    "sync_results",
]

DONE_FILE = "done.json"
DONE_FORMAT = "binsr-study-run"
SHIPPED_INDEX = "index.json"
"""The list of the checkpoints a shipped folder holds (written by ``scripts/ship_study_checkpoints.py``)."""
CURVE_POINTS = 200
"""At most this many training-loss points per run are kept in ``study.json`` (validation rows all kept)."""


# ---------------------------------------------------------------------------------------- selection


def matching_runs(study: Study, only: Sequence[str] = ()) -> list[StudyRun]:
    """The runs whose labels match any shell pattern in ``only`` (all when empty), without the runs
    they need."""
    if not only:
        return list(study.runs)
    return [
        run
        for run in study.runs
        if any(fnmatch.fnmatchcase(label, pattern) for label in run.labels for pattern in only)
    ]


def select_runs(study: Study, only: Sequence[str] = ()) -> list[StudyRun]:
    """The runs whose labels match any shell pattern in ``only`` (all when empty), plus the runs they
    need (teachers, the models they are initialised from)."""
    if not only:
        return list(study.runs)
    by_id = study.by_id()
    chosen = {run.run_id for run in matching_runs(study, only)}
    if not chosen:
        example = study.runs[0].labels[0] if study.runs else "track/x4/model/variant/bin/s0/i1000"
        raise BinsrError(
            f"--only {' '.join(only)} matches no run of study {study.name} (labels look like {example})"
        )
    stack = list(chosen)
    while stack:
        needed = by_id[stack.pop()].needs
        if needed is not None and needed not in chosen:
            chosen.add(needed)
            stack.append(needed)
    return [run for run in study.runs if run.run_id in chosen]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BinsrError(f"cannot read {path}: {error}") from None


def read_done(study: Study, run: StudyRun) -> dict[str, Any] | None:
    """The ``done.json`` of ``run`` or ``None`` when it has not finished."""
    path = study.run_dir(run) / DONE_FILE
    if not path.is_file():
        return None
    done = _read_json(path)
    if not isinstance(done, dict) or done.get("format") != DONE_FORMAT:
        raise BinsrError(f"{path} is not a binsr study marker; delete it to rerun the run")
    return done


def recorded_run_ids(study: Study) -> set[str]:
    """Ids of the runs that have a record in the study's ``study.json`` (finished, perhaps elsewhere)."""
    if not study.results.is_file():
        return set()
    return {str(record["run"]) for record in load_results(study.results)["runs"] if record.get("run")}


def _state_info(run_dir: Path) -> dict[str, Any] | None:
    """The JSON half of the training state committed in ``run_dir`` (None without one; {} unreadable)."""
    from binsr.train.state import STATE_JSON

    path = run_dir / STATE_JSON
    if not path.is_file():
        return None
    info = _read_json(path)
    return info if isinstance(info, dict) else {}


def _state_iteration(run_dir: Path) -> int:
    """The iteration of the training state committed in ``run_dir`` (-1 without one)."""
    info = _state_info(run_dir)
    return -1 if info is None else int(info.get("iteration", 0))


def run_folders(study: Study, run: StudyRun) -> list[Path]:
    """Where ``run`` may be: its folder under the runs folder, then its kept copy (when the study keeps)."""
    return [study.run_dir(run)] + ([study.kept_dir / run.run_id] if study.kept_dir is not None else [])


def run_status(study: Study, run: StudyRun, recorded: Iterable[str] = ()) -> tuple[str, int]:
    """``("done" | "partial" | "recorded" | "new", iterations trained so far)`` of ``run``, from its
    folder, else its kept copy, else ``study.json`` (``recorded``: ids from :func:`recorded_run_ids`;
    a run folder that exists overrides its record, so deleting ``done.json`` still reruns a run)."""
    folders = run_folders(study, run)
    for folder in folders:
        if (folder / DONE_FILE).is_file():
            return "done", run.iterations
    reached = max(_state_iteration(folder) for folder in folders)
    if reached >= 0:
        return "partial", reached
    if run.run_id in recorded and not folders[0].exists():
        return "recorded", run.iterations
    return "new", 0


def _finished_files() -> tuple[str, ...]:
    """What a finished run needs to serve others (its record, config, curve, final checkpoint), the
    record last (it marks the copy complete)."""
    from binsr.train import CONFIG_FILE, LAST_FILE
    from binsr.train.logs import METRICS_CSV

    return (CONFIG_FILE, METRICS_CSV, LAST_FILE, DONE_FILE)


def partial_files() -> tuple[str, ...]:
    """What a run stopped part-way needs to be continued, the state's JSON last (its commit point,
    :mod:`binsr.train.state`)."""
    from binsr.train import CONFIG_FILE, LAST_FILE
    from binsr.train.logs import METRICS_CSV
    from binsr.train.state import STATE_JSON, STATE_TENSORS

    return (CONFIG_FILE, METRICS_CSV, LAST_FILE, STATE_TENSORS, STATE_JSON)


def _copy_run_files(source: Path, target: Path, names: Sequence[str]) -> None:
    """Copy the files ``names`` that ``source`` has into ``target``, in that order, each atomically."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_file():
            atomic_write_bytes(target / name, (source / name).read_bytes())


def restore_kept_runs(study: Study, runs: Iterable[StudyRun]) -> list[str]:
    """Copy into the runs folder each of ``runs`` whose kept copy is further along (finished there, or
    a training state of a later iteration); returns their ids. A restored partial run continues from
    the kept state; a restored finished one serves as a teacher without being trained again."""
    from binsr.train.state import STATE_NEXT

    if study.kept_dir is None:
        return []
    restored = []
    for run in runs:
        source, target = study.kept_dir / run.run_id, study.run_dir(run)
        if not source.is_dir() or (target / DONE_FILE).is_file():
            continue
        if (source / DONE_FILE).is_file():
            _copy_run_files(source, target, _finished_files())
        elif _state_iteration(source) > _state_iteration(target):
            (target / STATE_NEXT).unlink(missing_ok=True)
            _copy_run_files(source, target, partial_files())
        else:
            continue
        restored.append(run.run_id)
    return restored


def shipped_runs(
    index: list[dict[str, Any]], by_key: dict[tuple, dict[str, Any]], folder: Path
) -> dict[str, Path]:
    """Run id -> the file of ``folder`` that ``index`` (its ``index.json``) ships of that run.

    An entry answers for the run of the ``study.json`` record (``by_key``, records by :func:`record_key`)
    with its key when its file is in ``folder`` and its scores are the record's (scores that differ mean
    the grid point was trained again since, so the file is not that run's checkpoint)."""
    runs = {}
    for entry in index:
        record = by_key.get(record_key(entry))
        name = str(entry.get("file", ""))
        if (
            record is None
            or not record.get("run")
            or Path(name).name != name
            or not (folder / name).is_file()
        ):
            continue
        if all(
            record["scores"].get(set_name) == score for set_name, score in entry.get("scores", {}).items()
        ):
            runs[str(record["run"])] = folder / name
    return runs


def restore_shipped_runs(study: Study, runs: Iterable[StudyRun]) -> list[str]:
    """Restore from the study's shipped folder each recorded run that one of ``runs`` still to finish
    needs (a teacher, an initialisation) and that is in neither the runs nor the kept folder; returns
    their ids.

    A restored run's folder gets the shipped file as its final checkpoint and a ``done.json`` rebuilt
    from its ``study.json`` record (``shipped``: the file it came from), so it serves without being
    trained again and its records stay as they were."""
    from binsr.train import LAST_FILE

    index_file = study.shipped_dir / SHIPPED_INDEX if study.shipped_dir is not None else None
    if index_file is None or not index_file.is_file() or not study.results.is_file():
        return []
    index = _read_json(index_file)
    if not isinstance(index, list) or not all(isinstance(entry, dict) for entry in index):
        raise BinsrError(f"{index_file} is not a list of shipped checkpoints")
    records = load_results(study.results)["runs"]
    shipped = shipped_runs(index, {record_key(r): r for r in records}, index_file.parent)
    recorded = recorded_run_ids(study)
    by_id = study.by_id()
    needed = dict.fromkeys(
        run.needs for run in runs if run.needs is not None and read_done(study, run) is None
    )
    restored = []
    for run_id in needed:
        run = by_id[run_id]
        if run_id not in shipped or run_status(study, run, recorded)[0] != "recorded":
            continue
        record = next(r for r in records if r.get("run") == run_id)
        target = study.run_dir(run)
        done = {
            "format": DONE_FORMAT,
            "run": run_id,
            "kind": run.kind,
            "labels": run.labels,
            "iterations": run.iterations,
            "train_seconds": record["train_seconds"],
            "device": record.get("device"),
            **({"train_time": record["train_time"]} if record.get("train_time") else {}),
            "shipped": str(shipped[run_id]),
            "checkpoint": str(target / LAST_FILE),
            "ops": record["ops"],
            "params": record["params"],
            "scores": record["scores"],
            **({SELF_ENSEMBLE: record[SELF_ENSEMBLE]} if SELF_ENSEMBLE in record else {}),
            "curve": record["curve"],
        }
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target / LAST_FILE, shipped[run_id].read_bytes())
        atomic_write_bytes(target / DONE_FILE, json.dumps(done, indent=1).encode("utf-8"))
        restored.append(run_id)
    return restored


def keep_runs(study: Study) -> dict[str, list[str]]:
    """Bring the study's kept folder up to date with its runs folder; returns the ids by what was done.

    ``finished``: a finished run that a run not yet finished (nor recorded) needs keeps its final
    checkpoint and record, unless it was restored from the shipped folder (which keeps it already);
    ``partial``: a run stopped part-way keeps its training state when it is
    further along than the kept one; ``dropped``: a kept run that is now finished and needed by no
    unfinished run is removed (its record in ``study.json`` remains)."""
    if study.kept_dir is None:
        raise BinsrError(f"study {study.name} has no kept folder: set output.kept in {study.path}")
    recorded = recorded_run_ids(study)
    unfinished = [run for run in study.runs if run_status(study, run, recorded)[0] in ("new", "partial")]
    needed = {run.needs for run in unfinished if run.needs is not None}
    changes: dict[str, list[str]] = {"finished": [], "partial": [], "dropped": []}
    for run in study.runs:
        source, kept = study.run_dir(run), study.kept_dir / run.run_id
        if (source / DONE_FILE).is_file():
            if run.run_id in needed:
                if not (kept / DONE_FILE).is_file() and "shipped" not in (read_done(study, run) or {}):
                    _replace_kept(source, kept, _finished_files())
                    changes["finished"].append(run.run_id)
            elif kept.is_dir():
                shutil.rmtree(kept)
                changes["dropped"].append(run.run_id)
        elif _state_iteration(source) > _state_iteration(kept):
            _replace_kept(source, kept, partial_files())
            changes["partial"].append(run.run_id)
    return changes


def _replace_kept(source: Path, kept: Path, names: Sequence[str], tries: int = 5) -> None:
    """Replace the folder ``kept`` with copies of ``names`` from ``source`` (built aside, then renamed).

    A training state is copied again (up to ``tries`` times) until its two files match: the run may be
    saving a checkpoint while it is copied."""
    from binsr.train.state import STATE_JSON, state_is_whole

    staging = kept.with_name(kept.name + ".staging")
    for _ in range(tries):
        shutil.rmtree(staging, ignore_errors=True)
        _copy_run_files(source, staging, names)
        if STATE_JSON not in names or state_is_whole(staging):
            break
        time.sleep(1.0)
    else:
        shutil.rmtree(staging, ignore_errors=True)
        raise BinsrError(f"could not copy a whole training state from {source}: is its run saving non-stop?")
    if kept.exists():
        shutil.rmtree(kept)
    staging.rename(kept)


# ------------------------------------------------------------------------------------ one run


def score_checkpoint(
    checkpoint: Path,
    scale: int,
    sets: dict[str, str],
    convention: str,
    input_size: tuple[int, int],
    self_ensemble: bool = False,
) -> dict[str, Any]:
    """PSNR/SSIM of ``checkpoint`` on each named set (as ``binsr eval``, with ``--self-ensemble`` when
    ``self_ensemble``) and its OPs / params (of one pass).

    Each set's score also holds the PSNR of every image (``per_image_psnr``, image name → dB, rounded to
    1e-6 dB), so the report can pair a binary run with its twin image by image."""
    from binsr.complexity import count_complexity
    from binsr.evaluate import evaluate, resolve_upscaler
    from binsr.inference import with_self_ensemble

    upscaler = resolve_upscaler(str(checkpoint), scale)
    complexity = count_complexity(upscaler.model, input_size)  # type: ignore[attr-defined]
    if self_ensemble:
        upscaler = with_self_ensemble(upscaler)
    results = evaluate(upscaler, list(sets.values()), [scale], convention, progress=False, per_image=True)
    return {
        "ops": float(complexity.ops),
        "params": float(complexity.params),
        "scores": {
            name: {
                "psnr": float(r["psnr"]),
                "ssim": float(r["ssim"]),
                PER_IMAGE: {row["image"]: round(float(row["psnr"]), 6) for row in r["per_image"]},
            }
            for name, r in zip(sets, results, strict=True)
        },
    }


def read_curve(run_dir: Path) -> dict[str, Any]:
    """The training curve of a run from its ``metrics.csv``: iterations, loss and first validation PSNR.

    Loss rows are thinned to about :data:`CURVE_POINTS`; rows with a validation score are all kept.
    """
    from binsr.train.logs import METRICS_CSV

    path = run_dir / METRICS_CSV
    curve: dict[str, Any] = {"val_set": None, "iteration": [], "loss": [], "psnr": []}
    if not path.is_file():
        return curve
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    psnr_columns = [c for c in (rows[0].keys() if rows else []) if c.endswith("_psnr")]
    column = psnr_columns[0] if psnr_columns else None
    curve["val_set"] = column[: -len("_psnr")] if column else None
    stride = max(1, math.ceil(len(rows) / CURVE_POINTS))

    def number(text: str | None) -> float | None:
        return float(f"{float(text):.6g}") if text not in (None, "") else None

    for index, row in enumerate(rows):
        psnr = number(row.get(column)) if column else None
        if psnr is None and index % stride and index != len(rows) - 1:
            continue
        curve["iteration"].append(int(float(row["iteration"])))
        curve["loss"].append(number(row.get("loss")))
        curve["psnr"].append(psnr)
    return curve


def main_device(train_time: dict[str, dict[str, float]]) -> str | None:
    """The device that trained the most iterations of a run (``train_time``: device -> iterations and
    seconds, as ``done.json`` and ``study.json`` keep it), leaving out those whose device was not
    recorded; None when there is none."""
    known = {name: t["iterations"] for name, t in train_time.items() if name != UNRECORDED_DEVICE}
    return max(known, key=known.__getitem__) if known else None


def execute_run(
    study: Study, run: StudyRun, device: str | None = None, progress: bool = True, compile_model: bool = False
) -> dict[str, Any]:
    """Train ``run`` (continuing a partial run), score its final checkpoint and write ``done.json``.

    ``compile_model`` trains through ``torch.compile`` (:class:`binsr.train.Trainer`); it is not part of
    the run's identity (only rounding differs), and ``done.json`` records it for the process that
    finished the run (a resumed run may have trained partly either way). ``done.json`` keeps the
    iterations and seconds the run trained on each device (``train_time``, from the training state)
    and, as ``device``, the one that trained most of them (:func:`main_device`)."""
    from binsr.train import LAST_FILE, train
    from binsr.train.loop import BEST_FILE
    from binsr.train.state import STATE_JSON

    run_dir = study.run_dir(run)
    if run.needs is not None and read_done(study, study.by_id()[run.needs]) is None:
        raise BinsrError(f"run {run.run_id} needs {run.needs} to finish first")
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = (run_dir / STATE_JSON).is_file()
    if not resume:  # killed before its first checkpoint: start afresh
        for name in (LAST_FILE, BEST_FILE):
            (run_dir / name).unlink(missing_ok=True)
    result = train(
        run.config, run_dir, resume=resume, device=device, progress=progress, compile_model=compile_model
    )
    if result.iteration != run.iterations:
        raise BinsrError(f"run {run.run_id} stopped at iteration {result.iteration} of {run.iterations}")
    state = _read_json(run_dir / STATE_JSON)
    train_time = {
        name: {"iterations": int(t["iterations"]), "seconds": round(float(t["seconds"]), 1)}
        for name, t in state.get("time_by_device", {}).items()
    }
    done = {
        "format": DONE_FORMAT,
        "run": run.run_id,
        "kind": run.kind,
        "labels": run.labels,
        "iterations": result.iteration,
        "train_seconds": round(float(state.get("elapsed", 0.0)), 1),
        "device": main_device(train_time) or device_name(device),
        "train_time": train_time,
        "compiled": compile_model,
        "checkpoint": str(run_dir / LAST_FILE),
        **score_checkpoint(
            run_dir / LAST_FILE, run.config["scale"], study.eval_sets, study.convention, study.input_size
        ),
        "curve": read_curve(run_dir),
    }
    atomic_write_bytes(run_dir / DONE_FILE, json.dumps(done, indent=1).encode("utf-8"))
    return done


def recalibrate_finished(study: Study, runs: Iterable[StudyRun], out: TextIO | None = None) -> int:
    """Re-estimate the BatchNorm statistics of finished runs whose final EMA checkpoint was saved with
    the trained model's (before the trainer re-estimated them, :mod:`binsr.train.batchnorm`); returns
    how many checkpoints changed.

    Each such checkpoint is rewritten (:func:`~binsr.train.batchnorm.recalibrate_checkpoint`, the file
    the trainer writes now) and its scores are dropped from ``done.json``, so :func:`complete_scores`
    scores it again. Runs of models without BatchNorm are untouched.
    """
    from binsr.train import LAST_FILE
    from binsr.train.batchnorm import recalibrate_checkpoint

    changed = 0
    for run in runs:
        done = read_done(study, run)
        if done is None:
            continue
        run_dir = study.run_dir(run)
        if not recalibrate_checkpoint(run_dir / LAST_FILE, run.config):
            continue
        if out is not None:
            out.write(f"re-estimated the BatchNorm statistics of {run.run_id}'s EMA model\n")
            out.flush()
        done["scores"] = {}
        done.pop(SELF_ENSEMBLE, None)
        atomic_write_bytes(run_dir / DONE_FILE, json.dumps(done, indent=1).encode("utf-8"))
        changed += 1
    return changed


def complete_scores(
    study: Study, runs: Iterable[StudyRun], out: TextIO | None = None, self_ensemble: bool = False
) -> int:
    """Score finished runs on the study's evaluation sets that their ``done.json`` lacks, or has without
    per-image scores (runs scored before they were kept); returns how many runs were scored. With
    ``self_ensemble`` the scores are those of the x8 self-ensemble, kept under ``scores_x8``.

    Adding a set to a study's ``eval.sets`` (or finishing a study on a machine that lacked one) then
    costs an evaluation, not a retraining. The run's own final checkpoint is scored, as ``binsr eval``
    would, and ``done.json`` is rewritten atomically with the new scores in place of the old.
    """
    from binsr.train import LAST_FILE

    field = SELF_ENSEMBLE if self_ensemble else "scores"
    completed = 0
    for run in runs:
        done = read_done(study, run)
        if done is None:
            continue
        have = done.get(field, {})
        missing = {
            name: folder for name, folder in study.eval_sets.items() if PER_IMAGE not in have.get(name, {})
        }
        if not missing:
            continue
        if out is not None:
            x8 = " (x8 self-ensemble)" if self_ensemble else ""
            out.write(f"scoring {run.run_id} on {', '.join(missing)}{x8}\n")
            out.flush()
        run_dir = study.run_dir(run)
        extra = score_checkpoint(
            run_dir / LAST_FILE,
            run.config["scale"],
            missing,
            study.convention,
            study.input_size,
            self_ensemble,
        )
        scores = {**have, **extra["scores"]}
        done[field] = {name: scores[name] for name in dict.fromkeys([*study.eval_sets, *scores])}
        atomic_write_bytes(run_dir / DONE_FILE, json.dumps(done, indent=1).encode("utf-8"))
        completed += 1
    return completed


def _init_worker(threads: int) -> None:
    """Process-pool initialiser: share the cores between the parallel runs."""
    import torch

    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------- results


def record_of(study: Study, run: StudyRun, key: RecordKey, done: dict[str, Any]) -> dict[str, Any]:
    """The ``study.json`` record of grid point ``key`` answered by ``run`` (finished as ``done``)."""
    from binsr.train import LAST_FILE

    checkpoint = os.path.relpath(study.run_dir(run) / LAST_FILE, study.results.parent).replace(os.sep, "/")
    return {
        "model": key.model,
        "variant": key.variant,
        "binary": key.binary,
        "track": key.track,
        "scale": key.scale,
        "seed": key.seed,
        "iterations": key.iterations,
        "checkpoint": checkpoint,
        "ops": done["ops"],
        "params": done["params"],
        "scores": done["scores"],
        **({SELF_ENSEMBLE: done[SELF_ENSEMBLE]} if SELF_ENSEMBLE in done else {}),
        "kind": run.kind,
        "distill": run.teacher is not None,
        "network": run.config["network"],
        "study": study.name,
        "run": run.run_id,
        "train_seconds": done["train_seconds"],
        "device": done.get("device"),
        **({"train_time": done["train_time"]} if done.get("train_time") else {}),
        "curve": done["curve"],
    }


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(RecordKey))
"""The fields of a ``study.json`` record that identify it (those of :class:`RecordKey`)."""


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """The identity of a ``study.json`` record (a later record with the same key replaces it)."""
    return tuple(record[k] for k in RECORD_FIELDS)


def sync_results(study: Study, report: bool = True) -> int:
    """Rewrite ``study.json`` with the records of every finished run of ``study``; returns their count.

    Other records already in the file are kept, but a record of a run's id that the grid no longer
    gives it (a variant once sharing the twin, since dropped from that seed) takes the results of the
    record the grid does give it: a run trained again (a recorded teacher) has one checkpoint and one
    set of scores. Every record of a run in the grid gets that run's ``network`` section (records written
    before the study kept it included). The report is regenerated when ``report`` is true.
    """
    existing = load_results(study.results)["runs"] if study.results.is_file() else []
    records = {record_key(r): r for r in existing}
    count = 0
    for run in study.runs:
        done = read_done(study, run)
        if done is None:
            continue
        for key in run.records:
            record = record_of(study, run, key, done)
            records[record_key(record)] = record
            count += 1
    for run in study.runs:
        answered = [records[k] for k in map(dataclasses.astuple, run.records) if k in records]
        if not answered:
            continue
        for key, record in records.items():
            if record.get("run") == run.run_id and record.get("study") == study.name:
                records[key] = {**answered[0], **{field: record[field] for field in RECORD_FIELDS}}
    networks = {run.run_id: run.config["network"] for run in study.runs}
    for key, record in records.items():
        if record.get("study") == study.name and record.get("run") in networks:
            records[key] = {**record, "network": networks[record["run"]]}
    study.results.parent.mkdir(parents=True, exist_ok=True)
    ordered = [records[k] for k in sorted(records, key=lambda k: tuple(map(str, k)))]
    text = json.dumps({"runs": ordered}, indent=1, sort_keys=False) + "\n"
    atomic_write_bytes(study.results, text.encode("utf-8"))
    if report:
        write_report(study.results, study.report)
    return count


# ------------------------------------------------------------------------------------ the study


class _InlineExecutor:
    """An executor that runs each job at once in this process (``--jobs 1``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to release."""


def _runs_to_train(study: Study, unfinished: list[StudyRun]) -> list[StudyRun]:
    """The runs of ``unfinished`` (not done here) to train: those without a record in ``study.json`` or
    with a folder here, and the recorded ones that a run to train needs (its checkpoint is not here),
    in the given order."""
    recorded = {run_id for run_id in recorded_run_ids(study) if not study.run_dir(run_id).exists()}
    by_id = {run.run_id: run for run in unfinished}
    chosen = {run.run_id for run in unfinished if run.run_id not in recorded}
    stack = list(chosen)
    while stack:
        needed = by_id[stack.pop()].needs
        if needed in by_id and needed not in chosen:
            chosen.add(needed)
            stack.append(needed)
    return [run for run in unfinished if run.run_id in chosen]


def _describe(run: StudyRun) -> str:
    if not run.records:  # needed by others only
        return f"{run.run_id} [{run.kind}: {run.config['network']['name']}, {run.iterations} it]"
    first = run.records[0]
    more = f" (+{len(run.records) - 1} shared)" if len(run.records) > 1 else ""
    return f"{run.run_id} [{run.kind}: {first.model}/{first.variant}{more}, {run.iterations} it]"


TRAINS_LIKE = {"init": "binary", "init-twin": "twin"}
"""Run kinds whose iterations cost what another kind's do (a binary network started from its trained
twin trains like any binary run): the dry run estimates them at that kind's rate until one of their own
is recorded."""


MIN_TIMED_ITERATIONS = 500
"""The fewest iterations on a device that :func:`measured_seconds_per_iteration` takes a rate from."""


RateKey = tuple[Any, ...]
"""``(kind, track, scale, model, variant)`` or a leading part of it down to ``(kind, track, scale)``:
what a measured rate is of. A rate is not carried across scales or tracks (on the CPU an x4 step of the
study costs about three x2 steps)."""

COARSEST_RATE_KEY = 3
"""The length of the coarsest :data:`RateKey`: ``(kind, track, scale)``."""


def rate_key(kind: str, point: dict[str, Any]) -> RateKey:
    """The full :data:`RateKey` of a run of ``kind`` answering ``point`` (a ``study.json`` row, or a
    :class:`RecordKey` as a dict; model and variant None for a run that answers none, a twin trained
    only to start a binary run from)."""
    return (kind, point["track"], point["scale"], point["model"], point["variant"])


def _stretch_rate(time_by_device: dict[str, Any] | None, device: str) -> float | None:
    """Seconds per iteration on ``device`` from a tally of iterations and seconds by device (a
    record's ``train_time``, a state's ``time_by_device``); None under :data:`MIN_TIMED_ITERATIONS`
    there (a short stretch is mostly compilation and start-up)."""
    stretch = (time_by_device or {}).get(device)
    if not stretch or stretch["iterations"] < MIN_TIMED_ITERATIONS:
        return None
    return float(stretch["seconds"]) / int(stretch["iterations"])


def measured_seconds_per_iteration(study: Study, device: str) -> dict[RateKey, float]:
    """Median training seconds per iteration of the runs recorded in ``study.json`` on ``device`` (a
    :func:`device_name` description), by run kind (``twin``, ``binary``, ``distill``, ``plateau``),
    track and scale and, finer, model and variant (a deeper network costs more): each
    :data:`RateKey` from ``(kind, track, scale)`` to the full :func:`rate_key`. A run shared by several
    records counts once. A record that keeps its time by device (``train_time``) counts its iterations
    on ``device`` alone (at least :data:`MIN_TIMED_ITERATIONS` of them: a short stretch is mostly
    compilation and start-up); an older one counts whole when ``device`` finished it."""
    per_run: dict[str, tuple[RateKey, float]] = {}
    records = load_results(study.results)["runs"] if study.results.is_file() else []
    for record in records:
        if not record.get("run"):
            continue
        key = rate_key(record.get("kind", ""), record)
        if record.get("train_time"):
            rate = _stretch_rate(record["train_time"], device)
            if rate:
                per_run[record["run"]] = (key, rate)
        elif record.get("device") == device and record.get("train_seconds"):
            per_run[record["run"]] = (key, float(record["train_seconds"]) / int(record["iterations"]))
    by_key: dict[RateKey, list[float]] = {}
    for key, seconds in per_run.values():
        for length in range(COARSEST_RATE_KEY, len(key) + 1):
            by_key.setdefault(key[:length], []).append(seconds)
    return {key: statistics.median(values) for key, values in by_key.items()}


def run_rate(study: Study, run: StudyRun, device: str, measured: dict[RateKey, float]) -> float | None:
    """The seconds per iteration :func:`print_plan` expects of ``run`` on ``device``: its own so far
    when its saved training state (folder, else kept copy) has at least :data:`MIN_TIMED_ITERATIONS`
    there; else the rate ``measured`` (:func:`measured_seconds_per_iteration`) for the most specific
    :data:`RateKey` it matches, its own kind before the kind it trains like (:data:`TRAINS_LIKE`) at
    each level; None when neither kind was timed on ``device`` at its track and scale."""
    for folder in run_folders(study, run):
        own = _stretch_rate((_state_info(folder) or {}).get("time_by_device"), device)
        if own:
            return own
    kinds = [run.kind] + ([TRAINS_LIKE[run.kind]] if run.kind in TRAINS_LIKE else [])
    point = {"track": run.run_id.split("/")[0], "scale": int(run.config["scale"])}
    point |= dataclasses.asdict(run.records[0]) if run.records else {"model": None, "variant": None}
    for length in range(len(rate_key("", point)), COARSEST_RATE_KEY - 1, -1):
        for kind in kinds:
            rate = measured.get(rate_key(kind, point)[:length])
            if rate:
                return rate
    return None


def validation_points(
    study: Study, run: StudyRun, records: dict[str, dict[str, Any]]
) -> tuple[str | None, dict[int, float]]:
    """The validation set and iteration -> validation PSNR of ``run`` so far: from its folder or its
    kept copy (whichever logged more validations), else from the curve of its ``study.json`` record
    (``records``: by run id)."""
    curves = [read_curve(folder) for folder in run_folders(study, run)]
    if run.run_id in records:
        curves.append(records[run.run_id].get("curve") or {})
    scored = [
        (
            c.get("val_set"),
            {i: p for i, p in zip(c.get("iteration", []), c.get("psnr", []), strict=True) if p is not None},
        )
        for c in curves
    ]
    return max(scored, key=lambda pair: len(pair[1]), default=(None, {}))


def gap_so_far(
    study: Study, run: StudyRun, twins: dict[RecordKey, StudyRun], records: dict[str, dict[str, Any]]
) -> str | None:
    """For a binary run part-way through: its last validation PSNR and its twin's at that iteration
    (same schedule, so the gap is the one at equal training), e.g. ``Set5 validation at 18000:
    31.061 dB, twin 31.235 dB (-0.174)``; None for other runs, or when the twin has not got there."""
    if not run.records or not run.records[0].binary:
        return None
    twin = twins.get(dataclasses.replace(run.records[0], binary=False))
    if twin is None:
        return None
    val_set, mine = validation_points(study, run, records)
    theirs = validation_points(study, twin, records)[1]
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        return None
    at = shared[-1]
    return (
        f"{val_set or 'validation set'} validation at {at}: {mine[at]:.3f} dB, twin {theirs[at]:.3f} dB "
        f"({mine[at] - theirs[at]:+.3f})"
    )


def print_plan(study: Study, runs: Iterable[StudyRun], out: TextIO, device: str | None = None) -> None:
    """The ``--dry-run`` listing: every selected run, its status and the remaining work.

    The hours left are the remaining iterations of each run at the median seconds per iteration of the
    recorded runs most like it on ``device`` (:func:`run_rate`: the same kind, track, scale, model and
    variant where recorded, else fewer of them; a :func:`device_name` description); where its kind was
    not timed there at its track and scale, at the track's ``seconds_per_iteration``. The rates
    printed are the mean of those expected of each kind, weighted by the iterations left. A binary run
    part-way through also shows its gap to its twin so far (:func:`gap_so_far`)."""
    runs = list(runs)
    records = (  # by run id; its keys are recorded_run_ids(study), read once
        {str(r["run"]): r for r in load_results(study.results)["runs"] if r.get("run")}
        if study.results.is_file()
        else {}
    )
    recorded = set(records)
    twins = {key: other for other in study.runs for key in other.records if not key.binary}
    measured = measured_seconds_per_iteration(study, device) if device else {}
    left: dict[str, int] = {}
    applied: dict[str, dict[str, list[float]]] = {}  # track -> kind -> [iterations, seconds] expected
    unmeasured: dict[str, int] = {}  # iterations of the kinds never recorded on ``device``
    for run in runs:
        status, iteration = run_status(study, run, recorded)
        track = run.run_id.split("/")[0]
        remaining = run.iterations - iteration
        left[track] = left.get(track, 0) + remaining
        rate = run_rate(study, run, device, measured) if device and remaining else None
        if rate:
            tally = applied.setdefault(track, {}).setdefault(run.kind, [0.0, 0.0])
            tally[0] += remaining
            tally[1] += remaining * rate
        else:
            unmeasured[track] = unmeasured.get(track, 0) + remaining
        needs = f" <- {'teacher' if run.teacher else 'from'} {run.needs}" if run.needs else ""
        out.write(f"{status:8s} {iteration:>7d}/{run.iterations:<7d} {_describe(run)}{needs}\n")
        for label in run.labels:
            out.write(f"{'':25s}{label}\n")
        gap = gap_so_far(study, run, twins, records) if status == "partial" else None
        if gap:
            out.write(f"{'':25s}{gap}\n")
    out.write(f"{len(runs)} runs; runs folder {study.runs_dir}; results {study.results}\n")
    out.write(
        "(recorded: finished elsewhere, its record in study.json; trained again only as a teacher"
        " whose checkpoint is not shipped)\n"
    )
    for track, iterations in left.items():
        seconds = study.tracks[track]["seconds_per_iteration"]
        parts = []
        if track in applied:
            expected = sorted(applied[track].items())
            hours = sum(total for _, total in applied[track].values()) / 3600
            rates = ", ".join(f"{kind} {total / n:.3g}" for kind, (n, total) in expected)
            parts.append(f"{hours:.1f} h at the s/it recorded on {device} ({rates})")
        if unmeasured.get(track) and seconds:
            untimed = f" for the {unmeasured[track]} of kinds or scales not timed there" if parts else ""
            parts.append(f"{unmeasured[track] * seconds / 3600:.1f} h at the file's {seconds} s/it{untimed}")
        estimate = f" ≈ {' + '.join(parts)} for one worker (divide by --jobs)" if parts else ""
        out.write(f"track {track}: {iterations} iterations left{estimate}\n")


def run_study(
    study: Study,
    *,
    only: Sequence[str] = (),
    dry_run: bool = False,
    jobs: int = 1,
    device: str | None = None,
    progress: bool = True,
    keep_going: bool = False,
    threads: int | None = None,
    score_only: bool = False,
    self_ensemble: bool = False,
    compile_model: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run the selected runs of ``study`` one after another (or ``jobs`` at a time); returns an exit code.

    Finished runs are skipped, partial ones continued; the runs a run needs go first. With
    ``jobs > 1`` the longest runs start first (a stable sort, so the study's order breaks ties). After every
    run ``study.json`` and the report are rewritten. A run that fails with a :class:`BinsrError` stops
    the study, or with ``keep_going`` is reported and the rest go on (exit code 1 at the end); a run
    stopped by a signal (:class:`~binsr.errors.TrainingStoppedError`, its state saved) stops the study.
    ``threads`` is the torch thread count of each run (default: torch's for one job, else cores / jobs).
    Finished runs are first brought up to date: an EMA checkpoint saved with copied BatchNorm
    statistics gets its own (:func:`recalibrate_finished`), and every run is scored on any evaluation
    set its ``done.json`` lacks (:func:`complete_scores`); with ``score_only`` nothing is trained,
    and with ``self_ensemble`` too the finished runs that ``only`` matches (not the runs they need)
    are also scored with the x8 self-ensemble (8 passes per image: select few).
    ``compile_model``: train every run through ``torch.compile`` (:func:`execute_run`).
    """
    out = out or sys.stdout
    if jobs < 1 or (threads is not None and threads < 1):
        raise BinsrError(f"--jobs and --threads must be >= 1, got {jobs} and {threads}")
    if self_ensemble and not score_only:
        raise BinsrError("--self-ensemble scores finished runs: use it with --score-only")
    selected = select_runs(study, only)
    if dry_run:
        import torch

        cores_per_job = threads or (None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs))
        planned_on = (
            None if device == "cuda" and not torch.cuda.is_available() else device_name(device, cores_per_job)
        )
        print_plan(study, selected, out, planned_on)
        return 0
    restored = restore_kept_runs(study, selected)
    if restored:
        out.write(f"restored {len(restored)} kept runs from {study.kept_dir}\n")
    shipped = restore_shipped_runs(study, selected)
    if shipped:
        out.write(
            f"restored {len(shipped)} recorded runs from the checkpoints shipped in {study.shipped_dir}\n"
        )
    recalibrate_finished(study, selected, out)
    complete_scores(study, selected, out)
    if self_ensemble:  # the runs asked for only: 8 passes per image is too dear for their teachers too
        complete_scores(study, matching_runs(study, only), out, self_ensemble=True)
    done_ids = {run.run_id for run in study.runs if read_done(study, run) is not None}
    pending = _runs_to_train(study, [run for run in selected if run.run_id not in done_ids])
    if score_only:
        sync_results(study)
        out.write(
            f"study {study.name}: {len(selected) - len(pending)} runs scored, {len(pending)} not trained\n"
        )
        return 0
    if jobs > 1:  # longest runs first (plateau runs), so parallel workers finish together
        pending.sort(key=lambda run: -run.iterations)
    done = sum(run.run_id in done_ids for run in selected)
    out.write(
        f"study {study.name}: {len(selected)} runs selected, {done} done, "
        f"{len(selected) - len(pending) - done} recorded (finished elsewhere), {len(pending)} to run\n"
    )
    out.flush()
    sync_results(study)
    if not pending:
        return 0
    executor: Any
    if jobs == 1:
        executor = _InlineExecutor()
        if threads is not None:
            _init_worker(threads)
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)
        )
        progress = False
    failed: dict[str, str] = {}
    running: dict[Future, StudyRun] = {}
    total, finished = len(pending), 0
    try:
        while pending or running:
            for run in list(pending):
                if len(running) >= jobs:
                    break
                if run.needs in failed:
                    failed[run.run_id] = f"{run.needs}, which it needs, failed"
                    pending.remove(run)
                    continue
                if run.needs is not None and run.needs not in done_ids:
                    continue
                pending.remove(run)
                out.write(f"[{finished + len(running) + 1}/{total}] training {_describe(run)}\n")
                out.flush()
                running[executor.submit(execute_run, study, run, device, progress, compile_model)] = run
            if not running:
                if pending:
                    raise BinsrError(f"run {pending[0].run_id} waits for {pending[0].needs}, never run")
                break
            complete, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in complete:
                run = running.pop(future)
                finished += 1
                error = future.exception()
                if error is None:
                    done_ids.add(run.run_id)
                    done = future.result()
                    scores = ", ".join(
                        f"{k} {v['psnr']:.2f}/{v['ssim']:.4f}" for k, v in done["scores"].items()
                    )
                    out.write(f"[{finished}/{total}] done {run.run_id}: {scores}\n")
                    sync_results(study)
                elif (
                    keep_going
                    and isinstance(error, BinsrError)
                    and not isinstance(error, TrainingStoppedError)  # a signal stops the study
                ):
                    failed[run.run_id] = str(error)
                    out.write(f"[{finished}/{total}] FAILED {run.run_id}: {error}\n")
                else:
                    raise error
                out.flush()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if failed:
        out.write(f"{len(failed)} runs failed: {', '.join(sorted(failed))}\n")
        return 1
    out.write(
        f"study {study.name}: all selected runs done; results in {study.results}, report {study.report}\n"
    )
    return 0

"""``binsr study``: grid expansion and twin pairing, resumable runs, ``study.json``, the generated report.

The end-to-end tests run ``studies/smoke.yaml`` with its data folders replaced by three tiny generated
images (training, validation and all evaluation sets), so a whole study of four runs takes seconds.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from binsr.cli import main
from binsr.errors import BinsrError
from binsr.study import load_results, load_study, run_study, runner, write_report
from binsr.study.report import (
    PER_IMAGE,
    SELF_ENSEMBLE,
    _best_ours,
    _competitor_coverage,
    _devices_line,
    _groups,
    best_variant,
    bootstrap_interval,
    paired_differences,
    render_report,
    screened_ahead,
    surrogate_ablation,
    twin_gap,
    twin_plateau,
)
from binsr.study.runner import (
    DONE_FILE,
    RECORD_FIELDS,
    keep_runs,
    print_plan,
    recorded_run_ids,
    restore_kept_runs,
    run_status,
    score_checkpoint,
    select_runs,
)
from binsr.study.spec import StudyRun, parse_study
from binsr.train.config import parse_yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "studies" / "smoke.yaml"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three small RGB images (one gray), used for training, validation and evaluation."""
    root = tmp_path_factory.mktemp("study_images")
    rng = np.random.default_rng(0)
    for i in range(3):
        ramp = np.linspace(0, 200, 48)[None, :, None] + np.linspace(0, 50, 40)[:, None, None]
        img = (ramp + rng.integers(0, 56, (40, 48, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img[..., 0] if i == 2 else img).save(root / f"{i}.png")
    return root


@pytest.fixture
def one_thread() -> Any:
    """Train on one thread: tiny models gain nothing from more, and a busy machine makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smoke_raw(images: Path) -> dict[str, Any]:
    """``studies/smoke.yaml`` with every data folder pointing at ``images``."""
    raw = parse_yaml(SMOKE.read_text(encoding="utf-8"), str(SMOKE))
    raw["base"]["datasets"]["train"]["hr_folders"] = [str(images)]
    raw["base"]["datasets"]["val"]["folders"] = [str(images)]
    raw["eval"]["sets"] = {"Set5": str(images), "Set14": str(images), "BSD100": str(images)}
    return raw


def grid_raw(images: Path) -> dict[str, Any]:
    """A study with shared twins, ablation variants, distillation and a plateau check (not trained)."""
    raw = smoke_raw(images)
    raw["models"] = {
        "bbcu_l": {},
        "bireal": {},
        "irnet": {},
        "ours": {
            "kwargs": {"attention": "channel"},
            "variants": {
                "base": {},
                "fda": {"surrogate": "fda"},
                "nothr": {"learnable_threshold": False},
                "base-distill": {"distill": True},
            },
        },
    }
    raw["scales"] = [4, 2]
    raw["seeds"] = [0, 1]
    raw["plateau"] = {"factor": 2, "seeds": [0]}
    raw["base"]["train"]["scheduler"] = {"type": "multistep", "milestones": [20], "warmup_iterations": 5}
    return raw


# -------------------------------------------------------------------------------------- the grid


def test_grid_expansion_and_twin_pairing(images: Path, tmp_path: Path) -> None:
    study = parse_study(grid_raw(images), tmp_path / "grid.yaml", tmp_path / "out")
    records = [(record, run) for run in study.runs for record in run.records]
    binary = [r for r, _ in records if r.binary]
    assert len(binary) == 2 * 2 * (3 + 4)  # scales x seeds x (3 models + 4 ours variants)
    keys = {r for r, _ in records}
    for record in binary:  # every binary record has its twin: same everything, binary false
        assert record.__class__(**{**record.__dict__, "binary": False}) in keys
    run_of = {r: run for r, run in records}

    def twin(model: str, variant: str = "base", seed: int = 0, scale: int = 4) -> str:
        match = [
            r
            for r in keys
            if (r.model, r.variant, r.seed, r.scale, r.binary, r.iterations)
            == (model, variant, seed, scale, False, 30)
        ]
        return run_of[match[0]].run_id

    # identical full-precision networks are trained once; different ones are not merged
    assert twin("bireal") == twin("irnet") != twin("bbcu_l")
    assert twin("ours") == twin("ours", "fda") == twin("ours", "base-distill") != twin("ours", "nothr")
    assert twin("ours", seed=0) != twin("ours", seed=1) and twin("irnet", scale=4) != twin("irnet", scale=2)
    # distillation: teacher = the twin's final checkpoint, scheduled before the student
    order = [run.run_id for run in study.runs]
    distill = [run for run in study.runs if run.kind == "distill"]
    assert len(distill) == 4
    for run in distill:
        assert run.teacher == twin("ours", seed=run.records[0].seed, scale=run.records[0].scale)
        assert order.index(run.teacher) < order.index(run.run_id)
        assert run.config["train"]["distill"]["teacher"] == str(
            study.run_dir(run.teacher) / "last.safetensors"
        )
        assert run.config["train"]["distill"]["feature_weight"] == 0.1
    assert all(run.config["train"]["distill"] is None for run in study.runs if run.kind != "distill")
    # plateau: twins of seed 0 only, twice the iterations, the same schedule shape
    plateau = [run for run in study.runs if run.kind == "plateau"]
    assert plateau and {r.seed for run in plateau for r in run.records} == {0}
    for run in plateau:
        assert run.iterations == 60 and not run.config["network"]["binary"]
        assert run.config["train"]["scheduler"]["milestones"] == [40]
        assert run.config["train"]["scheduler"]["warmup_iterations"] == 10
    assert len(plateau) == len(
        {run.run_id for run in study.runs if run.kind == "twin" and "-s0" in run.run_id}
    )
    # binary runs get the grid's network; twins binary false; seeds and scales as listed
    for run in study.runs:
        first = run.records[0]
        assert run.config["scale"] == first.scale and run.config["seed"] == first.seed
        assert run.config["network"]["n_feats"] == 8 and run.config["network"]["binary"] is first.binary
    # --only selects by label and adds the teacher
    chosen = select_runs(study, ["*/x2/ours/base-distill/bin/s1/*"])
    assert [run.kind for run in chosen] == ["twin", "distill"]
    with pytest.raises(BinsrError, match="matches no run"):
        select_runs(study, ["nothing/*"])


def test_model_and_variant_seeds_make_a_screening_design(images: Path, tmp_path: Path) -> None:
    raw = grid_raw(images)
    raw["seeds"] = [0, 1, 2]
    raw["models"]["bbcu_l"] = {"seeds": [2, 0]}  # a model's seeds; listed out of order
    raw["models"]["ours"]["variants"]["fda"]["seeds"] = [0]  # a variant screened on seed 0
    study = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out")
    seeds: dict[tuple[str, str, bool], set[int]] = {}
    for run in study.runs:
        for r in run.records:
            seeds.setdefault((r.model, r.variant, r.binary), set()).add(r.seed)
    assert seeds[("bbcu_l", "base", True)] == seeds[("bbcu_l", "base", False)] == {0, 2}
    assert seeds[("ours", "fda", True)] == seeds[("ours", "fda", False)] == {0}
    assert seeds[("ours", "base", True)] == seeds[("bireal", "base", True)] == {0, 1, 2}
    # the screened variant still shares its twin with base on the seed it has
    twin_of = {
        (r.model, r.variant, r.seed): run.run_id for run in study.runs for r in run.records if not r.binary
    }
    assert twin_of[("ours", "fda", 0)] == twin_of[("ours", "base", 0)]
    # runs follow the study's seed order, not the model's listing
    bbcu_seeds = [run.records[0].seed for run in study.runs if run.run_id.split("/")[-1].startswith("bbcu_l")]
    assert bbcu_seeds == sorted(bbcu_seeds)


def test_plateau_ladder_trains_each_factor(images: Path, tmp_path: Path) -> None:
    raw = grid_raw(images)
    raw["plateau"] = {"factor": [4, 2], "seeds": [0]}
    study = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out")
    plateau = [run for run in study.runs if run.kind == "plateau"]
    short_twins = {run.run_id for run in study.runs if run.kind == "twin" and "-s0" in run.run_id}
    assert sorted({run.iterations for run in plateau}) == [60, 120] and len(plateau) == 2 * len(short_twins)
    for run in plateau:  # the same schedule shape at each length
        factor = run.iterations // 30
        assert run.config["train"]["scheduler"]["milestones"] == [20 * factor]
        assert run.config["train"]["scheduler"]["warmup_iterations"] == 5 * factor
    # the 2x runs are the same runs as with factor: 2 alone (same ids, so nothing is retrained)
    raw["plateau"] = {"factor": 2, "seeds": [0]}
    doubled = {run.run_id for run in parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out").runs}
    assert {run.run_id for run in plateau if run.iterations == 60} <= doubled
    # raising the budget to 60 (the same schedule shape) makes the 60-iteration plateau twins the
    # study's twins and its 120 ones the plateau runs of the new budget: the same ids, nothing retrained
    raw["base"]["train"]["iterations"] = 60
    raw["base"]["train"]["scheduler"] = {"type": "multistep", "milestones": [40], "warmup_iterations": 10}
    longer = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out").runs
    reused = {run.run_id for run in longer if run.kind in ("twin", "plateau") and "-s0" in run.run_id}
    assert reused == {run.run_id for run in plateau}


def test_length_factor_lengthens_one_scale_onto_its_plateau_runs(images: Path, tmp_path: Path) -> None:
    raw = grid_raw(images)
    plain = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out").runs
    raw["tracks"]["smoke"]["length_factor"] = {4: 2}
    runs = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out").runs
    lengths = {(run.kind, run.config["scale"], run.iterations) for run in runs}
    assert {n for kind, scale, n in lengths if scale == 2} == {30, 60}  # x2 as before (60: plateau)
    assert {n for kind, scale, n in lengths if scale == 4 and kind != "plateau"} == {60}
    assert {n for kind, scale, n in lengths if scale == 4 and kind == "plateau"} == {120}
    for run in runs:  # the same schedule shape at the longer length
        factor = run.iterations // 30
        assert run.config["train"]["scheduler"]["milestones"] == [20 * factor]
        assert run.config["train"]["scheduler"]["warmup_iterations"] == 5 * factor
    # x2 keeps its runs; x4's twins are the plateau runs the plain study trained (nothing retrained)
    assert {r.run_id for r in runs if "/x2/" in r.run_id} == {r.run_id for r in plain if "/x2/" in r.run_id}
    plain_x4_plateau = {r.run_id for r in plain if r.kind == "plateau" and "/x4/" in r.run_id}
    assert plain_x4_plateau <= {r.run_id for r in runs if r.kind == "twin"}


def test_plateau_models_limit_the_check_to_the_twins_named(images: Path, tmp_path: Path) -> None:
    raw = grid_raw(images)
    everything = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out").runs
    raw["plateau"] = {"factor": 2, "seeds": [0], "models": ["ours/base", "bbcu_l"]}
    study = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out")
    plateau = [run for run in study.runs if run.kind == "plateau"]
    checked = {(r.model, r.variant) for run in plateau for r in run.records}
    # ours/base's twin answers for the variants sharing it (fda, base-distill), not for nothr's twin
    assert {model for model, _ in checked} == {"ours", "bbcu_l"} and ("ours", "nothr") not in checked
    assert len(plateau) == 2 * 2  # two networks x two scales, seed 0
    # the runs it keeps are the runs the unrestricted study has (same ids)
    assert {run.run_id for run in plateau} <= {run.run_id for run in everything}


def test_plateau_binary_scales_train_the_checked_binary_runs_as_long(images: Path, tmp_path: Path) -> None:
    raw = grid_raw(images)
    raw["plateau"] = {"factor": 2, "seeds": [0], "models": ["ours/base", "bbcu_l"], "binary_scales": [2]}
    runs = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out").runs
    long_binary = [run for run in runs if run.kind == "plateau" and run.records[0].binary]
    assert sorted(run.labels[0] for run in long_binary) == [
        "smoke/x2/bbcu_l/base/bin/s0/i60",
        "smoke/x2/ours/base/bin/s0/i60",
    ]
    by_label = {run.labels[0]: run for run in runs}
    for run in long_binary:  # the same network and recipe shape as the budget's run: its digest
        short = by_label[run.labels[0].replace("/i60", "/i30")]
        assert run.run_id.rsplit("-", 1)[1] == short.run_id.rsplit("-", 1)[1]
        assert run.config["network"] == short.config["network"] and run.config["train"]["distill"] is None
        assert run.config["train"]["scheduler"]["milestones"] == [40]
    raw["plateau"]["binary_scales"] = [3]
    with pytest.raises(BinsrError, match="binary_scales must list scales of scales"):
        parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out")


def test_init_twin_binarizes_the_trained_twin_and_retrains_it_as_its_own_twin(
    images: Path, tmp_path: Path
) -> None:
    plain = parse_study(grid_raw(images), tmp_path / "grid.yaml", tmp_path / "out")
    raw = grid_raw(images)
    variants = raw["models"]["ours"]["variants"]
    variants["base-init"] = {"init": "twin"}  # shares M with base
    variants["spatial-init"] = {"init": "twin", "attention": "spatial"}  # M needed by it alone
    study = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out")
    by_id = study.by_id()
    # the runs the plain grid had keep their ids (and their records)
    assert {run.run_id for run in plain.runs} <= set(by_id)
    order = [run.run_id for run in study.runs]

    def record_run(variant: str, binary: bool, seed: int = 0, scale: int = 4) -> Any:
        return next(
            run
            for run in study.runs
            for r in run.records
            if (r.model, r.variant, r.binary, r.seed, r.scale, r.iterations)
            == ("ours", variant, binary, seed, scale, 30)
        )

    model = record_run("base", False)  # M of base-init: base's own twin
    student, again = record_run("base-init", True), record_run("base-init", False)
    assert (student.kind, again.kind) == ("init", "init-twin")
    assert student.needs == again.needs == model.run_id and student.teacher is None
    final = str(study.run_dir(model) / "last.safetensors")
    assert student.config["train"]["init_from"] == again.config["train"]["init_from"] == final
    assert again.run_id != model.run_id and again.config["network"] == model.config["network"]
    assert order.index(model.run_id) < min(order.index(student.run_id), order.index(again.run_id))
    assert model.config["train"]["init_from"] is None
    # no plateau runs of the retrained twins; M of spatial-init answers for no record, but runs first
    assert not any(
        r.variant.endswith("-init") for run in study.runs if run.kind == "plateau" for r in run.records
    )
    spatial = record_run("spatial-init", True)
    lone = by_id[str(spatial.needs)]
    assert lone.records == [] and lone.kind == "twin"
    chosen = select_runs(study, ["*/x4/ours/spatial-init/bin/s0/*"])
    assert [run.run_id for run in chosen] == [lone.run_id, spatial.run_id]
    log = io.StringIO()
    run_study(study, dry_run=True, only=["*/x4/ours/spatial-init/*/s0/*"], out=log)
    assert f"{lone.run_id} [twin: ours, 30 it]" in log.getvalue()
    assert f"<- from {lone.run_id}" in log.getvalue()


def test_dry_run_estimates_hours_from_the_runs_recorded_on_the_same_device(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hours left come from the median seconds per iteration of the recorded runs on the device the
    study will train on that are most like each run: the same kind, track and scale, and the same model
    and variant where those were recorded (a run shared by several records counts once); a run's own
    stretch in its saved state comes first; a kind or scale never timed there falls back to the
    track's ``seconds_per_iteration`` (an x4 step costs more than an x2 one, so no rate crosses scales)."""
    raw = grid_raw(images)
    study = parse_study(raw, tmp_path / "grid.yaml", tmp_path / "out")
    here, elsewhere = "CPU Test (2 cores, 2 torch threads)", "NVIDIA Test"
    study.tracks["smoke"]["seconds_per_iteration"] = 360.0

    def record(run: str, kind: str, device: str, seconds_per_iteration: float, model: str = "ours") -> dict:
        return {
            "model": model, "variant": "base", "binary": kind != "twin", "track": "smoke", "scale": 2,
            "seed": 0, "iterations": 100, "checkpoint": "x", "ops": 1, "params": 1, "scores": {},
            "run": run, "kind": kind, "device": device, "train_seconds": 100 * seconds_per_iteration,
        }  # fmt: skip

    def plan(device: str) -> str:
        log = io.StringIO()
        print_plan(study, study.runs, log, device)
        return log.getvalue()

    def expected(rate_of: Any) -> str:
        """The estimate for ``rate_of(run)`` (seconds per iteration, None where not timed here)."""
        rates = {run.run_id: rate_of(run) for run in study.runs}
        timed = [run for run in study.runs if rates[run.run_id]]
        untimed = sum(run.iterations for run in study.runs if not rates[run.run_id])
        by_kind: dict[str, list[float]] = {}
        for run in timed:
            tally = by_kind.setdefault(run.kind, [0.0, 0.0])
            tally[0] += run.iterations
            tally[1] += run.iterations * rates[run.run_id]
        hours = sum(run.iterations * rates[run.run_id] for run in timed) / 3600
        listed = ", ".join(f"{kind} {total / n:.3g}" for kind, (n, total) in sorted(by_kind.items()))
        return (
            f"≈ {hours:.1f} h at the s/it recorded on {here} ({listed}) + {untimed * 0.1:.1f} h at the"
            f" file's 360.0 s/it for the {untimed} of kinds or scales not timed there for one worker"
        )

    records = [
        record("old/a", "twin", here, 50.0),
        record("old/a", "twin", here, 50.0),  # the same run under a second label
        record("old/b", "twin", here, 90.0),
        record("old/f", "twin", here, 10.0, model="bbcu_l"),
        record("old/c", "binary", elsewhere, 1.0),
    ]
    study.results.parent.mkdir(parents=True)
    study.results.write_text(json.dumps({"runs": records}), encoding="utf-8")
    assert {run.records[0].scale for run in study.runs} == {2, 4}

    def twin_rate(run: StudyRun) -> float | None:
        point = run.records[0]
        if run.kind != "twin" or point.scale != 2:
            return None  # binary runs timed elsewhere only, x4 nowhere
        return {"ours": 70.0, "bbcu_l": 10.0}.get(point.model, 50.0)  # else the median of 50, 90, 10

    assert expected(twin_rate) in plan(here)
    assert "binary 1" not in plan(here)
    # no run recorded on the device: the file's rate for all
    total = sum(run.iterations for run in study.runs) * 360.0 / 3600
    assert f"iterations left ≈ {total:.1f} h at the file's 360.0 s/it for one worker" in plan("CPU Other")
    # a run started from the trained twin (kind ``init``, ``init-twin``) trains like a binary run or a twin
    raw["models"] = {"ours": {"variants": {"base-init": {"init": "twin"}}}}
    study = parse_study(raw, tmp_path / "init.yaml", tmp_path / "init")
    study.tracks["smoke"]["seconds_per_iteration"] = 360.0
    assert {run.kind for run in study.runs} == {"twin", "init-twin", "init"}
    study.results.parent.mkdir(parents=True)
    timed = [record("old/a", "twin", here, 50.0), record("old/c", "binary", here, 2.0)]
    study.results.write_text(json.dumps({"runs": timed}), encoding="utf-8")

    def init_rate(binary_rate: float) -> Any:
        return lambda run: None if run.config["scale"] != 2 else binary_rate if run.kind == "init" else 50.0

    assert expected(init_rate(2.0)) in plan(here)
    # a record that keeps its time by device counts its iterations here alone, whoever finished it, and
    # not a stretch too short to be more than start-up
    moved = record("old/d", "binary", elsewhere, 1.0) | {
        "train_time": {
            here: {"iterations": 1000, "seconds": 4000.0},
            elsewhere: {"iterations": 9000, "seconds": 9.0},
        }
    }
    short = record("old/e", "twin", here, 1.0) | {"train_time": {here: {"iterations": 100, "seconds": 10.0}}}
    timed = [record("old/a", "twin", here, 50.0), moved, short]
    study.results.write_text(json.dumps({"runs": timed}), encoding="utf-8")
    assert expected(init_rate(4.0)) in plan(here)
    # a run part-way through is expected to go on at its own pace here, from its saved state
    monkeypatch.setattr(runner, "MIN_TIMED_ITERATIONS", 150)  # runs of 30 iterations; ``short`` stays out
    started = next(run for run in study.runs if run.kind == "init" and run.config["scale"] == 4)
    study.run_dir(started).mkdir(parents=True)
    state = {"iteration": 0, "time_by_device": {here: {"iterations": 200, "seconds": 600.0}}}
    (study.run_dir(started) / "last_state.json").write_text(json.dumps(state), encoding="utf-8")
    own = init_rate(4.0)
    assert expected(lambda run: 3.0 if run is started else own(run)) in plan(here)


def test_the_report_names_every_device_a_run_trained_on() -> None:
    """A record with ``train_time`` counts under each device it trained on (in part where more than
    one); an older record under the device that finished it."""
    records = [
        {"train_time": {"GPU": {"iterations": 90, "seconds": 9.0}, "CPU": {"iterations": 9, "seconds": 2.0}}},
        {"device": "GPU", "train_time": {"GPU": {"iterations": 100, "seconds": 10.0}}},
        {"device": "CPU"},
        {},
        {
            "train_time": {
                "not recorded": {"iterations": 5, "seconds": 1.0},
                "GPU": {"iterations": 5, "seconds": 1.0},
            }
        },
    ]
    assert _devices_line(records) == (
        "CPU (2 runs, 1 of them in part); GPU (3 runs, 2 of them in part); "
        "not recorded (see docs/STUDY.md) (2 runs, 1 of them in part)"
    )


def test_dry_run_shows_a_partial_binary_runs_gap_to_its_twin_at_the_same_iteration(
    images: Path, tmp_path: Path
) -> None:
    """A binary run part-way through is listed with its last validation PSNR and its twin's at that
    iteration: from the twin's folder while it trains, from its study.json record once recorded."""
    study = parse_study(grid_raw(images), tmp_path / "grid.yaml", tmp_path / "out")
    by_label = {label: run for run in study.runs for label in run.labels}
    binary = by_label["smoke/x2/bbcu_l/base/bin/s1/i30"]
    twin = by_label["smoke/x2/bbcu_l/base/fp/s1/i30"]

    def partial(run: StudyRun, rows: list[str], iteration: int) -> None:
        folder = study.run_dir(run)
        folder.mkdir(parents=True)
        header = "iteration,loss,lr,time,Set5_psnr,Set5_ssim\n"
        (folder / "metrics.csv").write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
        (folder / "last_state.json").write_text(json.dumps({"iteration": iteration}), encoding="utf-8")

    partial(binary, ["5,0.1,1e-4,1.0,30.5,0.9", "10,0.1,1e-4,2.0,30.75,0.9", "15,0.1,1e-4,3.0,,"], 15)
    partial(twin, ["5,0.1,1e-4,1.0,30.9,0.9"], 7)
    log = io.StringIO()
    print_plan(study, [binary, twin], log)
    assert "Set5 validation at 5: 30.500 dB, twin 30.900 dB (-0.400)" in log.getvalue()
    assert log.getvalue().count("validation at") == 1  # not for the twin itself
    shutil.rmtree(study.run_dir(twin))  # the twin finished elsewhere: its record's curve
    curve = {"val_set": "Set5", "iteration": [5, 10, 30], "loss": [0.1] * 3, "psnr": [30.9, 31.0, 31.2]}
    study.results.parent.mkdir(parents=True)
    record = {
        "model": "bbcu_l", "variant": "base", "binary": False, "track": "smoke", "scale": 2, "seed": 1,
        "iterations": 30, "checkpoint": "x", "ops": 1, "params": 1, "scores": {}, "run": twin.run_id,
        "curve": curve,
    }  # fmt: skip
    study.results.write_text(json.dumps({"runs": [record]}), encoding="utf-8")
    log = io.StringIO()
    print_plan(study, [binary], log)
    assert "Set5 validation at 10: 30.750 dB, twin 31.000 dB (-0.250)" in log.getvalue()


def test_architecture_digest_does_not_depend_on_the_torch_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.11 (a lent GPU's) prints BatchNorm without the ``bias=True`` that 2.13 prints: the same
    network must get the same digest (so a run trained there keeps its id here)."""
    from binsr.study import spec

    spec._ARCH_CACHE.clear()
    here = spec.architecture_digest("bnn", 2, {"n_feats": 8, "n_blocks": 1, "binary": False})
    old_repr = torch.nn.modules.batchnorm._NormBase.extra_repr

    def torch_2_11_extra_repr(self: torch.nn.Module) -> str:
        return old_repr(self).replace(", bias=True", "")

    monkeypatch.setattr(torch.nn.modules.batchnorm._NormBase, "extra_repr", torch_2_11_extra_repr)
    assert "bias" not in repr(torch.nn.BatchNorm2d(8))
    spec._ARCH_CACHE.clear()
    assert spec.architecture_digest("bnn", 2, {"n_feats": 8, "n_blocks": 1, "binary": False}) == here
    spec._ARCH_CACHE.clear()
    # the text hashed still tells networks apart (a BatchNorm without bias prints bias=False)
    text = spec.module_tree_text(torch.nn.Sequential(torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 8, 3)))
    assert "BatchNorm2d(8, eps=1e-05" in text and "Conv2d(8, 8" in text


def test_run_ids_are_stable_and_follow_the_recipe(images: Path, tmp_path: Path) -> None:
    first = parse_study(grid_raw(images), tmp_path / "a.yaml", tmp_path / "out")
    again = parse_study(grid_raw(images), tmp_path / "b.yaml", tmp_path / "out")
    assert [run.run_id for run in first.runs] == [run.run_id for run in again.runs]
    changed = grid_raw(images)
    changed["base"]["train"]["optimizer"]["lr"] = 5e-4
    ids = {run.run_id for run in parse_study(changed, tmp_path / "c.yaml", tmp_path / "out").runs}
    assert ids.isdisjoint(run.run_id for run in first.runs)
    logging_only = grid_raw(images)
    logging_only["base"]["logging"]["print_every"] = 3
    same = [run.run_id for run in parse_study(logging_only, tmp_path / "d.yaml", tmp_path / "out").runs]
    assert same == [run.run_id for run in first.runs]


# ------------------------------------------------------------------------------ running a study


@pytest.mark.usefixtures("one_thread")
def test_smoke_study_runs_resumes_and_records(images: Path, tmp_path: Path) -> None:
    study_file = tmp_path / "smoke.yaml"
    study_file.write_text(json.dumps(smoke_raw(images)))  # JSON is YAML
    out_dir = tmp_path / "out"
    study = load_study(study_file, out_dir)
    assert len(study.runs) == 4 and {run.kind for run in study.runs} == {"twin", "binary"}

    # an interrupted run: the CLI is killed right after the checkpoint at iteration 10
    first = study.runs[0]
    env = {**os.environ, "BINSR_TEST_KILL": "checkpoint@10", "OMP_NUM_THREADS": "1"}
    label = first.labels[0]
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "binsr",
            "study",
            str(study_file),
            "--results",
            str(out_dir),
            "--only",
            label,
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert killed.returncode != 0
    assert run_status(study, first) == ("partial", 10)

    log = io.StringIO()
    assert run_study(study, progress=False, out=log) == 0
    assert "4 runs selected, 0 done, 0 recorded (finished elsewhere), 4 to run" in log.getvalue()
    assert all(run_status(study, run)[0] == "done" for run in study.runs)
    rows = (study.run_dir(first) / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(5, 31, 5))  # resumed, not restarted

    data = load_results(study.results)
    check_study_json(data, study.results)
    assert len(data["runs"]) == 4
    assert all(r["device"].startswith("CPU ") and "torch threads" in r["device"] for r in data["runs"])
    # the run killed and resumed in this process's place kept its time on one device, all its iterations
    assert all(list(r["train_time"]) == [r["device"]] for r in data["runs"])
    assert all(r["train_time"][r["device"]]["iterations"] == r["iterations"] for r in data["runs"])
    report = study.report.read_text()
    assert "4 training runs" in report and "Trained on: CPU " in report and "(4 runs)." in report
    for link in re.findall(r"\]\((results/[^)]+\.png)\)", report):
        assert (study.report.parent / link).is_file()
    assert "results/psnr_ops_smoke_x2.png" in report and "results/curves_smoke_x2.png" in report

    # finished runs are skipped; a run whose done marker is deleted (only that one) runs again
    markers = {run.run_id: study.run_dir(run) / DONE_FILE for run in study.runs}
    before = {run_id: path.stat().st_mtime_ns for run_id, path in markers.items()}
    victim = study.runs[2].run_id
    markers[victim].unlink()
    log = io.StringIO()
    assert run_study(load_study(study_file, out_dir), progress=False, out=log) == 0
    assert "4 runs selected, 3 done, 0 recorded (finished elsewhere), 1 to run" in log.getvalue()
    assert log.getvalue().count("training ") == 1 and f"training {victim}" in log.getvalue()
    after = {run_id: path.stat().st_mtime_ns for run_id, path in markers.items()}
    assert {k for k in after if after[k] != before[k]} == {victim}
    again = load_results(study.results)
    assert [record_scores(r) for r in again["runs"]] == [record_scores(r) for r in data["runs"]]

    # nothing left: a second call trains nothing; --dry-run lists every run as done
    log = io.StringIO()
    assert run_study(load_study(study_file, out_dir), progress=False, out=log) == 0
    assert "0 to run" in log.getvalue()
    log = io.StringIO()
    run_study(study, dry_run=True, out=log)
    assert log.getvalue().count("done ") == 4


@pytest.mark.usefixtures("one_thread")
def test_a_fresh_clone_goes_on_from_study_json_and_the_kept_folder(images: Path, tmp_path: Path) -> None:
    """The runs folder is scratch: a clone without it does not retrain the runs recorded in study.json,
    retrains a recorded teacher only when a run still to train needs it, and continues a run stopped
    part-way from the state kept (tracked) by ``--keep``."""
    raw = smoke_raw(images)
    variants = {"base": {}, "d": {"distill": True}}
    raw["models"] = {"ours": {"kwargs": {"attention": "channel"}, "variants": variants}}
    raw["eval"]["sets"] = {"Set5": str(images)}
    raw["output"] = {"runs": "runs", "results": "results/study.json", "report": "RESULTS.md", "kept": "kept"}
    study_file = tmp_path / "clone1" / "study.yaml"
    study_file.parent.mkdir()
    study_file.write_text(json.dumps(raw))
    study = load_study(study_file)
    by_label = {run.labels[0].split("/", 2)[2]: run for run in study.runs}
    twin, base, distilled = (
        by_label["ours/base/fp/s0/i30"],
        by_label["ours/base/bin/s0/i30"],
        by_label["ours/d/bin/s0/i30"],
    )
    assert distilled.needs == twin.run_id
    # the first clone: twin and base finish, the distilled run is killed after its checkpoint at 10
    assert run_study(study, only=[base.labels[0], twin.labels[0]], progress=False, out=io.StringIO()) == 0
    env = {**os.environ, "BINSR_TEST_KILL": "checkpoint@10", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "binsr", "study", str(study_file), "--only", distilled.labels[0]]
    assert subprocess.run([*command, "--no-progress"], capture_output=True, env=env, timeout=120).returncode
    assert run_status(study, distilled) == ("partial", 10)
    assert recorded_run_ids(study) == {twin.run_id, base.run_id}
    changes = keep_runs(study)
    assert changes == {"finished": [twin.run_id], "partial": [distilled.run_id], "dropped": []}
    assert keep_runs(study) == {"finished": [], "partial": [], "dropped": []}  # up to date
    assert not (tmp_path / "clone1" / "kept" / base.run_id).exists()  # recorded; nobody needs it

    # a fresh clone: study.json and the kept folder, no runs folder
    clone = tmp_path / "clone2"
    shutil.copytree(tmp_path / "clone1", clone, ignore=shutil.ignore_patterns("runs"))
    fresh = load_study(clone / "study.yaml")
    log = io.StringIO()
    run_study(fresh, dry_run=True, out=log)
    rows = [line.split() for line in log.getvalue().splitlines() if not line.startswith(" ")]
    statuses = {row[2]: row[0] for row in rows if row[0] in ("new", "partial", "done", "recorded")}
    assert statuses == {base.run_id: "recorded", twin.run_id: "done", distilled.run_id: "partial"}
    log = io.StringIO()
    assert run_study(fresh, progress=False, out=log) == 0
    assert "restored 2 kept runs" in log.getvalue()
    assert "3 runs selected, 1 done, 1 recorded (finished elsewhere), 1 to run" in log.getvalue()
    rows = (fresh.run_dir(distilled) / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(5, 31, 5))  # resumed from the kept state
    assert not fresh.run_dir(base).exists()
    records = load_results(fresh.results)["runs"]
    assert {r["run"] for r in records} == {twin.run_id, base.run_id, distilled.run_id}
    assert keep_runs(fresh) == {"finished": [], "partial": [], "dropped": [twin.run_id, distilled.run_id]}

    # without a kept teacher, a recorded teacher is retrained for the run that needs it
    third = tmp_path / "clone3"
    shutil.copytree(tmp_path / "clone1", third, ignore=shutil.ignore_patterns("runs", "kept"))
    # the twin once answered a variant the grid has since dropped: retrained, it answers with new scores
    data = load_results(third / "results" / "study.json")
    old_twin = next(r for r in data["runs"] if r["run"] == twin.run_id)
    data["runs"].append({**old_twin, "variant": "dropped", "scores": {"Set5": {"psnr": 1.0, "ssim": 0.1}}})
    (third / "results" / "study.json").write_text(json.dumps(data))
    fresh = load_study(third / "study.yaml")
    log = io.StringIO()
    assert run_study(fresh, progress=False, out=log) == 0
    assert "3 runs selected, 0 done, 1 recorded (finished elsewhere), 2 to run" in log.getvalue()
    assert f"training {twin.run_id}" in log.getvalue() and f"training {base.run_id}" not in log.getvalue()
    retrained = {r["variant"]: r for r in load_results(fresh.results)["runs"] if r["run"] == twin.run_id}
    assert retrained.keys() == {"base", "d", "dropped"}
    assert (
        retrained["dropped"]["scores"] == retrained["base"]["scores"] != {"Set5": {"psnr": 1.0, "ssim": 0.1}}
    )
    assert restore_kept_runs(fresh, fresh.runs) == []  # its kept folder is empty

    # a teacher whose checkpoint is shipped (scripts/ship_study_checkpoints.py's index.json) is restored
    # from it; an index entry whose scores are not the record's (a stale file) is not used
    records = load_results(tmp_path / "clone1" / "results" / "study.json")["runs"]
    twin_record = next(r for r in records if r["run"] == twin.run_id)
    entry = {"file": "twin.safetensors", **{k: twin_record[k] for k in RECORD_FIELDS}}
    for name, scores, restored in (("clone4", twin_record["scores"], True), ("clone5", {"Set5": {}}, False)):
        clone = tmp_path / name
        shutil.copytree(tmp_path / "clone1", clone, ignore=shutil.ignore_patterns("runs", "kept"))
        raw["output"]["shipped"] = "shipped"
        (clone / "study.yaml").write_text(json.dumps(raw))
        (clone / "shipped").mkdir()
        shutil.copy(study.run_dir(twin) / "last.safetensors", clone / "shipped" / "twin.safetensors")
        (clone / "shipped" / "index.json").write_text(json.dumps([{**entry, "scores": scores}]))
        fresh = load_study(clone / "study.yaml")
        log = io.StringIO()
        assert run_study(fresh, progress=False, out=log) == 0
        assert ("restored 1 recorded runs from the checkpoints shipped" in log.getvalue()) == restored
        assert (f"training {twin.run_id}" in log.getvalue()) != restored
        if restored:
            assert "3 runs selected, 1 done, 1 recorded (finished elsewhere), 1 to run" in log.getvalue()
            done = json.loads((fresh.run_dir(twin) / DONE_FILE).read_text())
            assert done["shipped"] == str(clone / "shipped" / "twin.safetensors")
            again = [r for r in load_results(fresh.results)["runs"] if r["run"] == twin.run_id]
            assert again == [r for r in records if r["run"] == twin.run_id]  # rebuilt as they were
            (fresh.run_dir(distilled) / DONE_FILE).unlink()  # unfinished again: it needs the teacher
            changes = keep_runs(fresh)
            assert changes["finished"] == [] and changes["partial"] == [distilled.run_id]  # shipped already


@pytest.mark.usefixtures("one_thread")
def test_init_twin_study_trains_the_model_first_and_records_the_pair(images: Path, tmp_path: Path) -> None:
    raw = smoke_raw(images)
    raw["models"] = {"ours": {"variants": {"base-init": {"init": "twin"}}}}
    study = parse_study(raw, tmp_path / "init.yaml", tmp_path / "out")
    assert [run.kind for run in study.runs] == ["twin", "init-twin", "init"]
    log = io.StringIO()
    assert run_study(study, progress=False, out=log) == 0
    data = load_results(study.results)
    check_study_json(data, study.results)
    pair = {(r["binary"], r["kind"]) for r in data["runs"]}
    assert pair == {(True, "init"), (False, "init-twin")}  # M itself answers for no record
    assert all(r["variant"] == "base-init" for r in data["runs"])


@pytest.mark.usefixtures("one_thread")
def test_a_set_added_later_is_scored_without_retraining(images: Path, tmp_path: Path) -> None:
    raw = smoke_raw(images)
    raw["eval"]["sets"] = {"Set5": str(images)}
    study_file = tmp_path / "smoke.yaml"
    study_file.write_text(json.dumps(raw))
    out_dir = tmp_path / "out"
    study = load_study(study_file, out_dir)
    run = study.runs[0]
    assert run_study(study, only=[run.labels[0]], progress=False, out=io.StringIO()) == 0
    marker = study.run_dir(run) / DONE_FILE
    first = json.loads(marker.read_text())
    assert list(first["scores"]) == ["Set5"]
    trained = (study.run_dir(run) / "last.safetensors").stat().st_mtime_ns

    raw["eval"]["sets"] = {"Set5": str(images), "Set14": str(tmp_path / "set14")}
    (tmp_path / "set14").mkdir()
    for name in ("0.png", "1.png"):
        (tmp_path / "set14" / name).write_bytes((images / name).read_bytes())
    study_file.write_text(json.dumps(raw))
    study = load_study(study_file, out_dir)
    log = io.StringIO()
    assert run_study(study, score_only=True, progress=False, out=log) == 0
    assert f"scoring {run.run_id} on Set14" in log.getvalue()
    assert f"1 runs scored, {len(study.runs) - 1} not trained" in log.getvalue()
    assert (study.run_dir(run) / "last.safetensors").stat().st_mtime_ns == trained  # not retrained
    second = json.loads(marker.read_text())
    assert list(second["scores"]) == ["Set5", "Set14"]
    assert second["scores"]["Set5"] == first["scores"]["Set5"]
    expected = score_checkpoint(
        study.run_dir(run) / "last.safetensors", 2, {"Set14": str(tmp_path / "set14")}, "matlab", (320, 180)
    )
    assert second["scores"]["Set14"] == expected["scores"]["Set14"]
    assert [set(r["scores"]) for r in load_results(study.results)["runs"]] == [{"Set5", "Set14"}]


@pytest.mark.usefixtures("one_thread")
def test_runs_scored_without_per_image_psnr_are_rescored(images: Path, tmp_path: Path) -> None:
    """A ``done.json`` from before per-image scores were kept gets them from ``--score-only`` (the same
    checkpoint, the same set means), without retraining."""
    study_file = tmp_path / "smoke.yaml"
    study_file.write_text(json.dumps(smoke_raw(images)))
    study = load_study(study_file, tmp_path / "out")
    run = study.runs[0]
    assert run_study(study, only=[run.labels[0]], progress=False, out=io.StringIO()) == 0
    marker = study.run_dir(run) / DONE_FILE
    first = json.loads(marker.read_text())
    old = copy.deepcopy(first)
    for score in old["scores"].values():
        del score[PER_IMAGE]
    marker.write_text(json.dumps(old))
    log = io.StringIO()
    assert run_study(load_study(study_file, tmp_path / "out"), score_only=True, progress=False, out=log) == 0
    assert f"scoring {run.run_id} on Set5" in log.getvalue()
    assert json.loads(marker.read_text())["scores"] == first["scores"]
    assert sorted(first["scores"]["Set5"][PER_IMAGE]) == ["0", "1", "2"]  # the images of the folder
    log = io.StringIO()  # nothing left to score
    assert run_study(load_study(study_file, tmp_path / "out"), score_only=True, progress=False, out=log) == 0
    assert "scoring" not in log.getvalue()


@pytest.mark.usefixtures("one_thread")
def test_ema_checkpoints_saved_with_copied_batchnorm_statistics_are_updated_and_rescored(
    images: Path, tmp_path: Path
) -> None:
    """A finished run whose EMA model kept the trained model's BatchNorm statistics (as the trainer saved
    it before it re-estimated them) gets the checkpoint the trainer writes now, and its new scores."""
    from safetensors.torch import load_file

    from binsr.checkpoint import save_model
    from binsr.models import create_model
    from binsr.train.state import load_state

    raw = smoke_raw(images)
    raw["models"] = {"bnn": {}}
    raw["twins"] = False
    study_file = tmp_path / "smoke.yaml"
    study_file.write_text(json.dumps(raw))
    study = load_study(study_file, tmp_path / "out")
    (run,) = study.runs
    assert run_study(study, progress=False, out=io.StringIO()) == 0
    run_dir = study.run_dir(run)
    trained = load_file(run_dir / "last.safetensors")
    first = json.loads((run_dir / DONE_FILE).read_text())

    state, _ = load_state(run_dir)
    old = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    old.update({k[6:]: v for k, v in state.items() if k.startswith("model.") and "running_" in k})
    model = create_model("bnn", scale=2, n_feats=8, n_blocks=1)
    model.load_state_dict(old)
    save_model(run_dir / "last.safetensors", model, extra={"ema": True, "iteration": 30})
    stale = score_checkpoint(run_dir / "last.safetensors", 2, {"Set5": str(images)}, "matlab", (320, 180))
    assert stale["scores"]["Set5"]["psnr"] != first["scores"]["Set5"]["psnr"]

    log = io.StringIO()
    assert run_study(load_study(study_file, tmp_path / "out"), score_only=True, progress=False, out=log) == 0
    assert f"re-estimated the BatchNorm statistics of {run.run_id}" in log.getvalue()
    assert f"scoring {run.run_id} on Set5, Set14, BSD100" in log.getvalue()
    updated = load_file(run_dir / "last.safetensors")
    for name, value in trained.items():
        torch.testing.assert_close(updated[name], value)
    again = json.loads((run_dir / DONE_FILE).read_text())["scores"]
    for name, score in first["scores"].items():
        assert again[name]["psnr"] == pytest.approx(score["psnr"], abs=1e-6)
    log = io.StringIO()  # done once
    assert run_study(load_study(study_file, tmp_path / "out"), score_only=True, progress=False, out=log) == 0
    assert "re-estimated" not in log.getvalue() and "scoring" not in log.getvalue()


def record_scores(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["model"], record["binary"], json.dumps(record["scores"], sort_keys=True))


def check_study_json(data: dict[str, Any], path: Path) -> None:
    """The schema of ``study.json`` as issue 6 states it, and the twin pairing inside it."""
    assert set(data) == {"runs"}
    keys = set()
    for record in data["runs"]:
        for name, kind in (
            ("model", str),
            ("variant", str),
            ("binary", bool),
            ("track", str),
            ("scale", int),
            ("seed", int),
            ("iterations", int),
            ("checkpoint", str),
            ("ops", float),
            ("params", float),
            ("scores", dict),
        ):
            assert isinstance(record[name], kind), name
        assert set(record["scores"]) == {"Set5", "Set14", "BSD100"}
        for score in record["scores"].values():
            assert set(score) == {"psnr", "ssim", PER_IMAGE}
            assert 10 < score["psnr"] < 60 and 0 < score["ssim"] <= 1
            # the set's PSNR is the mean of its images' (kept rounded to 1e-6 dB)
            assert statistics.fmean(score[PER_IMAGE].values()) == pytest.approx(score["psnr"], abs=1e-6)
        assert (path.parent / record["checkpoint"]).is_file()
        assert record["ops"] > 0 and record["params"] > 0
        assert record["network"]["name"] == record["model"]  # the options its network was built with
        assert record["network"].get("binary", True) is record["binary"]
        keys.add(
            tuple(record[k] for k in ("track", "model", "variant", "scale", "seed", "iterations", "binary"))
        )
    for key in keys:
        if key[-1]:
            assert (*key[:-1], False) in keys


# ---------------------------------------------------------------------------------- the report

FIXTURE = {
    "runs": [
        *[
            {
                "model": model,
                "variant": "base",
                "binary": binary,
                "track": "cpu",
                "scale": 4,
                "seed": seed,
                "iterations": 100,
                "checkpoint": f"runs/{model}-{binary}-{seed}.safetensors",
                "ops": 2.5e9 if binary else 4.0e9,
                "params": 12_345.0 if binary else 40_000.0,
                "scores": {
                    name: {
                        "psnr": psnr + offset + 0.1 * seed - (0.3 if binary else 0.0),
                        "ssim": 0.8 + 0.01 * seed,
                    }
                    for name, offset in (("Set5", 0.0), ("Set14", -3.0), ("BSD100", -4.0))
                },
                "curve": {
                    "val_set": "Set5",
                    "iteration": [50, 100],
                    "loss": [0.1, 0.05],
                    "psnr": [psnr - 1, psnr],
                },
            }
            for model, psnr in (("bbcu_l", 30.0), ("ours", 30.2))
            for binary in (True, False)
            for seed in (0, 1)
        ],
        {
            "model": "bbcu_l",
            "variant": "base",
            "binary": False,
            "track": "cpu",
            "scale": 4,
            "seed": 0,
            "iterations": 200,
            "checkpoint": "runs/long.safetensors",
            "ops": 4.0e9,
            "params": 40_000.0,
            "scores": {
                "Set5": {"psnr": 30.05, "ssim": 0.8},
                "Set14": {"psnr": 27.0, "ssim": 0.7},
                "BSD100": {"psnr": 26.0, "ssim": 0.6},
            },
        },
    ]
}


def test_best_variant_is_judged_at_the_longest_budget() -> None:
    """A short slice with a smaller gap does not beat the longest training (under-trained twins)."""

    def record(variant: str, binary: bool, iterations: int, psnr: float) -> dict[str, Any]:
        return {
            "track": "cpu", "scale": 2, "model": "ours", "variant": variant, "binary": binary,
            "iterations": iterations, "seed": 0, "scores": {"Set5": {"psnr": psnr, "ssim": 0.9}},
        }  # fmt: skip

    records = [
        record("base", True, 3000, 36.79),  # gap -0.01 dB at 3000 iterations
        record("base", False, 3000, 36.80),
        record("base", True, 12000, 37.05),  # -0.10 dB at 12000
        record("base", False, 12000, 37.15),
        record("w-xnor", True, 12000, 37.00),  # -0.15 dB at 12000
        record("w-xnor", False, 12000, 37.15),
    ]
    best = best_variant(records, "cpu", 2)
    assert best is not None
    key, gaps = best
    assert key == ("cpu", 2, "ours", "base", True, 12000)
    assert gaps == pytest.approx([-0.10])
    # a plateau check's binary run at 24000 (one seed, a check) is not a budget
    checks = [record("base", True, 24000, 37.20), record("base", False, 24000, 37.22)]
    for check in checks:
        check["kind"] = "plateau"
    assert best_variant(records + checks, "cpu", 2) == best
    # against bbcu_l on the seeds both have: seed 1 of bbcu_l (no ours seed 1) is left out
    records += [record("base", True, 12000, 36.95), record("base", True, 12000, 40.0)]
    records[-2]["model"] = records[-1]["model"] = "bbcu_l"
    records[-1]["seed"] = 1
    lines = _best_ours(records, _groups(records), "cpu", 2, ["Set5"])
    assert lines[-1].startswith("Against `bbcu_l` on the same budget (seed 0): +0.100 dB PSNR")
    # the ceiling of that margin: the twin (37.15) against bbcu_l's binary run (36.95)
    assert lines[-1].endswith("(its twin's margin, what a lossless binary `base` would have: +0.200 dB).")


def test_best_variant_says_whether_its_twin_has_plateaued() -> None:
    """The plateau check of a twin shared with another variant (same checkpoint) counts for it."""

    def record(variant: str, binary: bool, iterations: int, psnr: float, checkpoint: str) -> dict[str, Any]:
        return {
            "track": "cpu", "scale": 2, "model": "ours", "variant": variant, "binary": binary,
            "iterations": iterations, "seed": 0, "checkpoint": checkpoint,
            "scores": {"Set5": {"psnr": psnr, "ssim": 0.9}},
        }  # fmt: skip

    records = [
        record("base", False, 100, 37.00, "twin-i100"),
        record("base", True, 100, 36.90, "base-i100"),
        record("distill", False, 100, 37.00, "twin-i100"),  # the same twin run
        record("distill", True, 100, 36.97, "distill-i100"),
        record("base", False, 200, 37.15, "twin-i200"),  # plateau run of base only: +0.15
    ]
    groups = _groups(records)
    assert twin_plateau(groups, ("cpu", 2, "ours", "distill", False, 100)) == pytest.approx((0.15, 100, 200))
    assert twin_plateau(groups, ("cpu", 2, "ours", "distill", False, 200)) is None
    lines = _best_ours(records, groups, "cpu", 2, ["Set5"])
    assert "**distill**" in lines[1] and "**Its twin had not plateaued** at 100 iterations" in lines[2]
    records[-1]["scores"]["Set5"]["psnr"] = 37.05
    lines = _best_ours(records, _groups(records), "cpu", 2, ["Set5"])
    assert lines[2] == "Its twin has plateaued at 100 iterations (Set5 +0.050 dB at 200)."
    lines = _best_ours(records[:4], _groups(records[:4]), "cpu", 2, ["Set5"])
    assert lines[2] == "Its twin's plateau at 100 iterations has not been checked."


def test_best_variant_needs_every_seed_and_screened_variants_are_listed() -> None:
    """A variant screened on one seed does not replace one confirmed on three; if it looks better on
    its seed, the report says so (paired with the confirmed variant on that seed)."""

    def record(variant: str, binary: bool, seed: int, psnr: float) -> dict[str, Any]:
        return {
            "track": "cpu", "scale": 2, "model": "ours", "variant": variant, "binary": binary,
            "iterations": 12000, "seed": seed, "scores": {"Set5": {"psnr": psnr, "ssim": 0.9}},
        }  # fmt: skip

    records = []
    for seed, base_gap in ((0, -0.06), (1, -0.04), (2, -0.05)):
        records += [record("base", True, seed, 37.0 + base_gap), record("base", False, seed, 37.0)]
    records += [record("fda", True, 0, 36.98), record("fda", False, 0, 37.0)]  # -0.02 on seed 0
    records += [record("ste", True, 0, 36.90), record("ste", False, 0, 37.0)]  # -0.10: behind
    best = best_variant(records, "cpu", 2)
    assert best is not None and best[0][3] == "base" and best[1] == pytest.approx([-0.05])
    ahead = screened_ahead(records, best[0])
    assert [(name, seeds) for name, seeds, _, _ in ahead] == [("fda", [0])]
    assert ahead[0][2:] == pytest.approx((-0.02, -0.06))  # base on seed 0 alone: -0.06
    lines = _best_ours(records, _groups(records), "cpu", 2, ["Set5"])
    assert "`fda` (seed 0: -0.020 dB against -0.060 dB)" in lines[-1]


def test_report_lists_the_competitors_without_a_paired_run() -> None:
    """A competitor counts once its binary run has a twin on a common seed, at the scale in question."""

    def record(
        model: str, binary: bool, seed: int, scale: int = 2, iterations: int = 12000
    ) -> dict[str, Any]:
        return {
            "track": "cpu", "scale": scale, "model": model, "variant": "base", "binary": binary,
            "iterations": iterations, "seed": seed, "scores": {"Set5": {"psnr": 37.0, "ssim": 0.9}},
            "checkpoint": f"{model}-{binary}-{seed}-{scale}-{iterations}", "ops": 1e9, "params": 1e3,
        }  # fmt: skip

    records = [record("bnn", True, 0), record("bnn", False, 0)]  # paired
    records += [record("bbcu_l", True, 0, iterations=3000), record("bbcu_l", False, 0, iterations=3000)]
    records += [record("bbcu_l", True, 1), record("bbcu_l", False, 1)]  # paired at two budgets
    records += [record("irnet", True, 0), record("irnet", False, 1)]  # no common seed
    records += [record("btm", True, 0, scale=4), record("btm", False, 0, scale=4)]  # the other scale
    records += [record("reactnet", False, 0)]  # twin only
    records += [record("ours", True, 0), record("ours", False, 0)]  # not a competitor
    lines = _competitor_coverage(_groups(records), "cpu", 2)
    assert lines[-1] == (
        "Competitors with a binary run and its twin (iterations): `bnn` (12000), `bbcu_l` (3000, 12000); "
        "none yet: `bireal`, `irnet`, `reactnet`, `btm`, `ma2019`, `e2fif`, `bbcu_m`."
    )
    assert _competitor_coverage(_groups(records), "cpu", 4)[-1].startswith(
        "Competitors with a binary run and its twin (iterations): `btm` (12000); none yet: `bnn`, `bireal`,"
    )
    assert "Competitors with a binary run and its twin" in render_report(records, "study.json", {})


@pytest.mark.usefixtures("one_thread")
def test_report_crosses_surrogates_with_the_learnable_threshold() -> None:
    """The surrogate ablation takes the plain binary runs that differ in surrogate and threshold only
    (model defaults filled in), each against its own twin, on the seeds every cell has."""

    def record(variant: str, binary: bool, seed: int, psnr: float, **network: Any) -> dict[str, Any]:
        return {
            "track": "cpu", "scale": 2, "model": "ours", "variant": variant, "binary": binary,
            "iterations": 100, "seed": seed, "checkpoint": f"{variant}{binary}{seed}", "ops": 1e9,
            "params": 1e4, "scores": {"Set5": {"psnr": psnr, "ssim": 0.9}},
            "kind": ("binary" if binary else "twin") if variant != "distilled" else "distill",
            "network": {"name": "ours", "binary": binary, "n_feats": 8, **network},
        }  # fmt: skip

    records = []
    for seed in (0, 1):  # base (approx_sign, threshold learned by default) on two seeds
        records += [record("base", True, seed, 36.90), record("base", False, seed, 37.00)]
    fixed = {"surrogate": "approx_sign", "learnable_threshold": False}
    records += [record("approx-off", True, 0, 36.80, **fixed), record("approx-off", False, 0, 37.00, **fixed)]
    records += [record("fda-on", True, 0, 36.95, surrogate="fda"), record("fda-on", False, 0, 37.00)]
    records += [record("distilled", True, 0, 37.00)]  # distilled: another recipe, not a cell
    records += [record("wide", True, 0, 30.0, n_feats=16), record("wide", False, 0, 37.0)]  # another split
    old = record("no-network", True, 0, 30.0)
    del old["network"]  # a record written before the study kept its network: left out
    records += [old]
    groups = _groups(records)
    iterations, seeds, cells = surrogate_ablation(groups, "cpu", 2)  # type: ignore[misc]
    assert (iterations, seeds) == (100, [0])
    assert {cell: key[3] for cell, key in cells.items()} == {
        ("approx_sign", True): "base",
        ("approx_sign", False): "approx-off",
        ("fda", True): "fda-on",
    }
    text = render_report(records, "study.json", {})
    assert "Surrogate ablation (100 iterations, seed 0)" in text
    assert "| approx_sign | `base`: -0.100 (-0.100) | `approx-off`: -0.200 (-0.200) | +0.100 |" in text
    assert "| fda | `fda-on`: -0.050 (-0.050) | not run |  |" in text
    # without a fixed-threshold run there is nothing to cross
    assert surrogate_ablation(_groups([r for r in records if r["variant"] != "approx-off"]), "cpu", 2) is None


def test_self_ensemble_scores_are_kept_beside_the_plain_ones(images: Path, tmp_path: Path) -> None:
    """``--score-only --self-ensemble`` scores the selected finished runs with the x8 self-ensemble (as
    ``binsr eval --self-ensemble``), keeps them under ``scores_x8`` and leaves the plain scores alone."""
    from binsr.evaluate import evaluate, resolve_upscaler
    from binsr.inference import with_self_ensemble

    raw = smoke_raw(images)
    raw["models"] = {"ours": {"variants": {"distilled": {"distill": True}}}}  # the binary run needs its twin
    study_file = tmp_path / "smoke.yaml"
    study_file.write_text(json.dumps(raw))
    study = load_study(study_file, tmp_path / "out")
    assert run_study(study, progress=False, out=io.StringIO()) == 0
    plain = {run.run_id: json.loads((study.run_dir(run) / DONE_FILE).read_text()) for run in study.runs}
    with pytest.raises(BinsrError, match="use it with --score-only"):
        run_study(study, self_ensemble=True, progress=False, out=io.StringIO())
    binary = next(run for run in study.runs if run.kind == "distill")
    log = io.StringIO()  # the runs matched only, not the runs they need
    assert run_study(study, only=binary.labels, score_only=True, self_ensemble=True, out=log) == 0
    assert log.getvalue().count("(x8 self-ensemble)") == 1 and f"scoring {binary.run_id}" in log.getvalue()
    log = io.StringIO()
    assert run_study(study, score_only=True, self_ensemble=True, progress=False, out=log) == 0
    assert log.getvalue().count("(x8 self-ensemble)") == 1 and binary.run_id not in log.getvalue()
    for run in study.runs:
        done = json.loads((study.run_dir(run) / DONE_FILE).read_text())
        assert done["scores"] == plain[run.run_id]["scores"]
        upscaler = with_self_ensemble(resolve_upscaler(str(study.run_dir(run) / "last.safetensors"), 2))
        expected = evaluate(upscaler, [str(images)], [2], "matlab", progress=False)[0]
        assert done[SELF_ENSEMBLE]["Set5"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-9)
        assert done[SELF_ENSEMBLE]["Set5"]["psnr"] != done["scores"]["Set5"]["psnr"]
    records = load_results(study.results)["runs"]
    assert all(set(r[SELF_ENSEMBLE]) == {"Set5", "Set14", "BSD100"} for r in records)
    log = io.StringIO()  # scored once: a second call scores nothing
    assert run_study(study, score_only=True, self_ensemble=True, progress=False, out=log) == 0
    assert "x8" not in log.getvalue()
    assert "With the x8 self-ensemble" in study.report.read_text()


def test_report_table_of_self_ensemble_gaps() -> None:
    """Δ plain, Δ×8 (both self-ensembled) and ×8 − twin (self-ensembled binary against the plain twin),
    on the seeds with x8 scores on both sides only."""

    def record(binary: bool, seed: int, plain: float, x8: float | None) -> dict[str, Any]:
        out = {
            "track": "cpu", "scale": 2, "model": "ours", "variant": "base", "binary": binary,
            "iterations": 100, "seed": seed, "checkpoint": f"{binary}{seed}", "ops": 1e9, "params": 1e4,
            "scores": {"Set5": {"psnr": plain, "ssim": 0.9}},
        }  # fmt: skip
        if x8 is not None:
            out[SELF_ENSEMBLE] = {"Set5": {"psnr": x8, "ssim": 0.91}}
        return out

    records = [
        record(True, 0, 36.90, 37.10),
        record(False, 0, 37.00, 37.12),
        record(True, 1, 36.80, None),  # no x8 score: left out of the table
        record(False, 1, 37.00, 37.10),
    ]
    text = render_report(records, "study.json", {})
    row = next(line for line in text.splitlines() if line.startswith("| ours | base | 100 | seed 0 |"))
    assert row.split("|")[5:8] == [" -0.100 ", " -0.020 ", " +0.100 "]
    # with per-image x8 scores the Δ×8 cell carries its bootstrap interval (every image -0.02 here)
    records[0][SELF_ENSEMBLE]["Set5"][PER_IMAGE] = {"a": 37.00, "b": 37.20}
    records[1][SELF_ENSEMBLE]["Set5"][PER_IMAGE] = {"a": 37.02, "b": 37.22}
    text = render_report(records, "study.json", {})
    row = next(line for line in text.splitlines() if line.startswith("| ours | base | 100 | seed 0 |"))
    assert row.split("|")[6] == " -0.020 [-0.020, -0.020] "
    assert "With the x8 self-ensemble" not in render_report(records[2:], "study.json", {})


def test_bootstrap_interval_covers_seeds_and_images() -> None:
    assert bootstrap_interval([np.full((3, 5), -0.04)]) == pytest.approx((-0.04, -0.04))
    # one seed, many images: about mean ± 1.96 sd / sqrt(n)
    draws = np.random.default_rng(1).normal(0.3, 1.0, size=(1, 2000))
    low, high = bootstrap_interval([draws])
    half = 1.96 / math.sqrt(2000)
    assert low < draws.mean() < high
    assert high - low == pytest.approx(2 * half, rel=0.15)
    # seeds that disagree while their images agree: the interval still has width (the seed spread)
    seeds_apart = np.repeat(np.array([[-0.1], [0.0], [0.1]]), 50, axis=1)
    low, high = bootstrap_interval([seeds_apart])
    assert low < -0.03 and high > 0.03
    # several sets: the interval of the mean over sets
    low, high = bootstrap_interval([np.full((2, 4), -0.1), np.full((2, 9), 0.3)])
    assert (low, high) == pytest.approx((0.1, 0.1))
    with pytest.raises(BinsrError, match="same seeds"):
        bootstrap_interval([np.zeros((2, 3)), np.zeros((3, 3))])


def test_report_gives_bootstrap_intervals_and_per_image_gaps(tmp_path: Path) -> None:
    """With per-image scores the best variant's gaps and its margin over bbcu_l get intervals, the
    images that lose most are named and a per-image figure is drawn."""
    images = ["baby", "bird", "butterfly", "head", "woman"]
    loss = {"baby": -0.01, "bird": -0.02, "butterfly": -0.30, "head": 0.01, "woman": -0.03}

    def record(model: str, binary: bool, seed: int) -> dict[str, Any]:
        drop = loss if model == "ours" else dict.fromkeys(images, -0.2)
        drop = drop if binary else dict.fromkeys(images, 0.0)
        per_image = {image: 30.0 + index + 0.01 * seed + drop[image] for index, image in enumerate(images)}
        score = {"psnr": statistics.fmean(per_image.values()), "ssim": 0.9, PER_IMAGE: per_image}
        return {
            "track": "cpu", "scale": 2, "model": model, "variant": "base", "binary": binary,
            "iterations": 100, "seed": seed, "checkpoint": f"runs/{model}-{binary}-{seed}.safetensors",
            "ops": 1e9, "params": 1e4,
            "scores": {"Set5": score},
        }  # fmt: skip

    records = [record(m, b, seed) for m in ("ours", "bbcu_l") for b in (True, False) for seed in (0, 1, 2)]
    groups = _groups(records)
    ours, twin = groups[("cpu", 2, "ours", "base", True, 100)], groups[("cpu", 2, "ours", "base", False, 100)]
    paired = paired_differences(ours, twin, "Set5")
    assert paired is not None and paired[0] == images and paired[1].shape == (3, 5)
    assert paired[1].mean() == pytest.approx(twin_gap(ours, twin, "Set5")[0])  # -0.07
    lines = _best_ours(records, groups, "cpu", 2, ["Set5"])
    text = "\n".join(lines)
    interval = re.search(r"Set5 -0\.070 dB \[([-+.\d]+), ([-+.\d]+)\]", text)
    assert interval is not None and float(interval[1]) < -0.07 < float(interval[2])
    assert "within that noise of the target" in text  # one image drives the loss: a wide interval
    assert "Set5 4/5 images lose (most: butterfly -0.300, woman -0.030, bird -0.020)" in text
    assert re.search(r"Against `bbcu_l` .*: \+0\.130 dB \[[-+.\d]+, [-+.\d]+\] PSNR", text)
    without = copy.deepcopy(records)
    for r in without:
        del r["scores"]["Set5"][PER_IMAGE]
    assert "[" not in "\n".join(_best_ours(without, _groups(without), "cpu", 2, ["Set5"]))

    results = tmp_path / "study.json"
    results.write_text(json.dumps({"runs": records}))
    written = write_report(results, tmp_path / "RESULTS.md")
    assert tmp_path / "results" / "image_gaps_cpu_x2.png" in written
    assert "](results/image_gaps_cpu_x2.png)" in (tmp_path / "RESULTS.md").read_text()
    records[0]["scores"]["Set5"][PER_IMAGE] = [30.0, 31.0]  # names lost
    results.write_text(json.dumps({"runs": records}))
    with pytest.raises(BinsrError, match=r"runs\[0\]\.scores\.Set5\.per_image_psnr must map image names"):
        load_results(results)


def test_report_from_study_json(tmp_path: Path) -> None:
    results = tmp_path / "docs" / "results" / "study.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(FIXTURE))
    report = tmp_path / "docs" / "RESULTS.md"
    assert main(["study", "report", "--results", str(results), "-o", str(report)]) == 0
    text = report.read_text()
    rows = {
        tuple(cells[:4]): cells
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    # bbcu_l binary: Set5 PSNR 29.7 and 29.8 -> mean 29.75, sample std 0.0707; SSIM 0.80 / 0.81
    bbcu = rows[("bbcu_l", "base", "1", "100")]
    assert bbcu[4] == "2"
    assert bbcu[5] == "29.75 ± 0.07 / 0.8050 ± 0.0071"
    assert bbcu[6] == "26.75 ± 0.07 / 0.8050 ± 0.0071"
    assert bbcu[8:11] == ["-0.300", "-0.300", "-0.300"]  # binary - twin, mean over seeds
    assert bbcu[11:13] == ["2.50", "12.3"]  # OPs (G), params (K)
    twin = rows[("bbcu_l", "base", "32", "100")]
    assert twin[5].startswith("30.05 ± 0.07") and twin[8:11] == ["", "", ""]
    assert rows[("bbcu_l", "base", "32", "200")][5] == "30.05 / 0.8000"  # one seed: no std
    assert "Best `ours` variant: **base**" in text and "not met" in text
    assert "Best `ours` variant: **base** (100 iterations, seeds 0, 1)" in text
    assert "Against `bbcu_l` on the same budget (seeds 0, 1): +0.200 dB" in text
    plateau = [line for line in text.splitlines() if line.startswith("| bbcu_l/base | 1 |")]
    assert plateau == ["| bbcu_l/base | 1 | 30.00 (100) | 30.05 (200) | +0.050 | yes |"]
    figures = sorted(p.name for p in (report.parent / "results").glob("*.png"))
    assert figures == ["curves_cpu_x4.png", "psnr_ops_cpu_x4.png"]
    # deterministic: the same json gives the same bytes; the numbers follow the json
    snapshot = {p: p.read_bytes() for p in [report, *(report.parent / "results").glob("*.png")]}
    write_report(results, report)
    assert all(p.read_bytes() == data for p, data in snapshot.items())
    changed = copy.deepcopy(FIXTURE)
    changed["runs"][0]["scores"]["Set5"]["psnr"] = 29.5  # bbcu_l binary seed 0: 29.7 -> 29.5
    results.write_text(json.dumps(changed))
    write_report(results, report)
    assert "| bbcu_l | base | 1 | 100 | 2 | 29.65 ± 0.21 / 0.8050 ± 0.0071 |" in report.read_text()

    # a twin shared by two variants (same runs) gets one row, beside the variant that has a binary row
    shared = copy.deepcopy(FIXTURE)
    shared["runs"] += [
        {**copy.deepcopy(r), "variant": "nothr"}
        for r in FIXTURE["runs"]
        if r["model"] == "ours" and not r["binary"]
    ]
    results.write_text(json.dumps(shared))
    write_report(results, report)
    text = report.read_text()
    assert "| ours | base (twin shared with 1 more) | 32 | 100 | 2 |" in text
    assert "| ours | nothr |" not in text

    # a variant sharing that twin on fewer seeds (its runs all in the row above) gets no row either
    subset = copy.deepcopy(shared)
    subset["runs"] += [
        {**copy.deepcopy(r), "variant": "oneseed"}
        for r in FIXTURE["runs"]
        if r["model"] == "ours" and not r["binary"] and r["seed"] == 0
    ]
    results.write_text(json.dumps(subset))
    write_report(results, report)
    text = report.read_text()
    assert "| ours | base (twin shared with 2 more) | 32 | 100 | 2 |" in text
    assert "| ours | oneseed |" not in text

    # a plateau ladder (100, 200, 400 iterations) gets one row per doubling
    ladder = copy.deepcopy(FIXTURE)
    longest = copy.deepcopy(FIXTURE["runs"][-1])
    longest.update(iterations=400, checkpoint="runs/longest.safetensors")
    longest["scores"]["Set5"]["psnr"] = 30.3
    ladder["runs"].append(longest)
    results.write_text(json.dumps(ladder))
    write_report(results, report)
    plateau = [line for line in report.read_text().splitlines() if line.startswith("| bbcu_l/base | 1 |")]
    assert plateau == [
        "| bbcu_l/base | 1 | 30.00 (100) | 30.05 (200) | +0.050 | yes |",
        "| bbcu_l/base | 1 | 30.05 (200) | 30.30 (400) | +0.250 | no |",
    ]


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.update(colour="red"), "unknown study key <top level>.colour"),
        (lambda raw: raw.pop("models"), "study key models is required"),
        (lambda raw: raw["models"].update(resnet9={}), "study model 'resnet9' is not a registered model"),
        (lambda raw: raw["models"]["ours"]["variants"].update(x={"wings": 2}), "variant x: .*wings"),
        (lambda raw: raw["base"].update(network={"name": "bnn"}), "base.network is set by the grid"),
        (lambda raw: raw.update(scales=[5]), "unsupported scale 5"),
        (lambda raw: raw.update(seeds=[0, 0]), "lists a value twice"),
        (
            lambda raw: raw["models"].update(bnn={"seeds": [7]}),
            "models.bnn.seeds lists seeds that are not in",
        ),
        (
            lambda raw: raw["models"]["ours"]["variants"].update(x={"seeds": []}),
            "models.ours.variants.x.seeds must be a non-empty list",
        ),
        (lambda raw: raw["base"]["train"].update(lr=1), "unknown config key train.lr"),
        (
            lambda raw: (
                raw["models"]["ours"]["variants"].update(d={"distill": True}) or raw.update(twins=False)
            ),
            "distillation needs twins: true",
        ),
        (lambda raw: raw.update(plateau={"factor": 1}), "plateau.factor must be an integer >= 2"),
        (lambda raw: raw.update(plateau={"factor": [2, "4"]}), "plateau.factor must be an integer >= 2"),
        (lambda raw: raw.update(plateau={"factor": [2, 2]}), "plateau.factor lists a factor twice"),
        (lambda raw: raw.update(plateau={"models": ["ours/fast"]}), "plateau.models must list models"),
        (lambda raw: raw["models"]["ours"]["variants"].update(i={"init": "x4"}), "variants.i.init must be"),
        (
            lambda raw: (
                raw["models"]["ours"]["variants"].update(i={"init": "twin"}) or raw.update(twins=False)
            ),
            "init: twin needs a binary model and twins: true",
        ),
        (lambda raw: raw["eval"].update(sets={}), "eval.sets must map set names"),
        (
            lambda raw: raw["tracks"]["smoke"].update(length_factor={3: 2}),
            r"length_factor names scales not in scales: \[3\]",
        ),
        (lambda raw: raw["tracks"]["smoke"].update(length_factor={4: 0}), "map scales to integers >= 1"),
        (lambda raw: raw.update(output={"shipped": 3}), "output.shipped must be a folder"),
    ],
)
def test_bad_study_file_is_one_line_error(images: Path, tmp_path: Path, change: Any, message: str) -> None:
    raw = smoke_raw(images)
    change(raw)
    with pytest.raises(BinsrError, match=message) as caught:
        parse_study(raw, tmp_path / "bad.yaml", tmp_path / "out")
    assert "\n" not in str(caught.value)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    missing = tmp_path / "missing.json"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"runs": [{"model": "bnn"}]}))
    for argv in (
        ["study", str(bad)],
        ["study", str(tmp_path / "none.yaml")],
        ["study", "report", "--results", str(missing)],
        ["study", "report", "--results", str(broken)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("binsr: error: ") and err.count("\n") == 1

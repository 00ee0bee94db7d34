"""``scripts/gpu_session.py`` packs what a lent GPU trained: finished runs, and runs stopped at the
deadline whole enough for ``binsr study`` to resume them elsewhere."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from PIL import Image

from binsr.data.io import read_image

REPO = Path(__file__).resolve().parents[1]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_session", REPO / "scripts" / "gpu_session.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_study_keeps_finished_and_partial_runs(tmp_path: Path) -> None:
    script = load_script()
    root = tmp_path / "study"
    (root / "results").mkdir(parents=True)
    (root / "results" / "study.json").write_text('{"runs": []}')
    done = root / "runs" / "cpu" / "x2" / "ours-base-i6000-s0-aaaa"
    behind, ahead = (root / "runs" / "cpu" / "x4" / f"twin-i6000-{d}-s0" for d in ("bbbb", "cccc"))
    for run_dir in (done, behind, ahead):
        run_dir.mkdir(parents=True)
        for name in ("config.yaml", "metrics.csv", "last.safetensors", "last_state.safetensors"):
            (run_dir / name).write_text(name)
    (done / "done.json").write_text("{}")
    for run_dir, iteration in ((done, 6000), (behind, 750), (ahead, 3000)):
        (run_dir / "last_state.json").write_text(json.dumps({"iteration": iteration}))
    out = tmp_path / "out"
    out.mkdir()
    session: dict = {}
    archives = script.pack_study(root, out, session, 2)
    names = []
    for archive in archives:
        with tarfile.open(out / archive) as tar:
            names += tar.getnames()
    assert names[0] == "results/study.json"
    finished = [n for n in names if n.startswith("runs/cpu/x2/")]
    assert sorted(finished) == sorted(
        f"runs/cpu/x2/ours-base-i6000-s0-aaaa/{n}"
        for n in ("done.json", "config.yaml", "metrics.csv", "last.safetensors")
    )
    partial = [n.split("/")[3] for n in names if n.startswith("runs/cpu/x4/")]
    assert partial == ["twin-i6000-cccc-s0"] * 5 + ["twin-i6000-bbbb-s0"] * 5  # most advanced first
    assert {n.rsplit("/", 1)[1] for n in names if "cccc" in n} == set(script.partial_files())
    assert session["study_done_runs"] == 1 and session["left_out"] == []
    assert session["study_partial_runs"] == {
        "cpu/x4/twin-i6000-cccc-s0": 3000,
        "cpu/x4/twin-i6000-bbbb-s0": 750,
    }


class FinishedProcess:
    """A stand-in for a study process that has already exited with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


def test_study_only_runs_phases_in_order_and_retries_a_failed_compiled_study(
    tmp_path: Path, monkeypatch
) -> None:
    script = load_script()
    exits = iter([1, 0, 0])  # the compiled first phase fails, its eager retry and the next phase succeed
    calls = []

    def start_study(study, results, only, jobs, device, log_file, compile_model):
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("log")
        calls.append((list(only), compile_model))
        return FinishedProcess(next(exits))

    monkeypatch.setattr(script, "start_study", start_study)
    args = script.argparse.Namespace(
        out=tmp_path / "out",
        work=tmp_path / "work",
        only=["cpu/x4/ours/base/bin/s0/i12000"],
        then=[["cpu/x2/ours/base/fp/s0/i24000", "cpu/x4/ours/base/fp/s0/i24000"]],
        eval_sets=None,
        budget=100.0,
        jobs=2,
        compile=True,
        device="cpu",
    )
    args.out.mkdir()
    now = script.time.monotonic()
    assert script.study_only(args, script.DATA, now, now + 60) == 0
    assert calls == [
        (["cpu/x4/ours/base/bin/s0/i12000"], True),
        (["cpu/x4/ours/base/bin/s0/i12000"], False),
        (["cpu/x2/ours/base/fp/s0/i24000", "cpu/x4/ours/base/fp/s0/i24000"], False),
    ]
    session = json.loads((args.out / "session.json").read_text())
    assert [e["exit"] for e in session["phase_exits"]] == [1, 0, 0]
    committed = REPO / "docs" / "results" / "study.json"  # recorded runs stay recorded on the device
    assert session["seeded_records"] is True
    assert (args.work / "study" / "results" / "study.json").read_bytes() == committed.read_bytes()
    assert script.seed_records(REPO / "studies" / "cpu.yaml", args.work / "study") is False
    assert not (REPO / "studies" / "cpu_device.yaml").exists()


def test_kept_finished_runs_are_reused_not_packed_back(tmp_path: Path) -> None:
    """A finished run in the study's kept folder (tracked, so on the device too) is restored by ``binsr
    study`` instead of trained, and not packed back."""
    script = load_script()
    raw = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    raw["models"] = {"ours": {"variants": {"base": {}, "base-init": {"init": "twin"}}}}
    raw["output"] = {"runs": "local_runs", "results": "local.json", "report": "LOCAL.md", "kept": "kept"}
    run_file = tmp_path / "study.yaml"
    run_file.write_text(json.dumps(raw))
    work = tmp_path / "work" / "study"
    assert script.kept_finished_runs(run_file, work) == []
    local = script.load_study(run_file)
    twin = next(run for run in local.runs if run.kind == "twin")
    kept = tmp_path / "kept" / twin.run_id
    kept.mkdir(parents=True)
    (kept / script.DONE_FILE).write_text("{}")
    assert script.kept_finished_runs(run_file, work) == [twin.run_id]
    done = work / "runs" / twin.run_id  # restored on the device by binsr study
    done.mkdir(parents=True)
    (done / script.DONE_FILE).write_text("{}")
    (work / "results").mkdir()
    (work / "results" / "study.json").write_text('{"runs": []}')
    out = tmp_path / "out"
    out.mkdir()
    session: dict = {}
    script.pack_study(work, out, session, 1, (twin.run_id,))
    with tarfile.open(out / "study_0.tar.gz") as tar:
        assert tar.getnames() == ["results/study.json"]
    assert session["study_done_runs"] == 0


def test_gpu_data_is_lossless_webp_of_every_image(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_gpu_data", REPO / "scripts" / "make_gpu_data.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "Tiny").mkdir(parents=True)
    images = {
        "rgb": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "gray": rng.integers(0, 256, (16, 12), dtype=np.uint8),
    }
    for name, pixels in images.items():
        Image.fromarray(pixels).save(tmp_path / "data" / "Tiny" / f"{name}.png")
    (tmp_path / "data" / "Tiny" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    (out / "Tiny").mkdir(parents=True)
    (out / "Tiny" / "gray.webp").write_bytes(b"an RGB copy made before gray images were kept gray")
    assert script.convert(tmp_path / "data", out, ["Tiny"], progress=False) > 0
    # A gray image stays gray (WebP would read back as RGB, scored on luma): its PNG is copied.
    assert sorted(p.name for p in (out / "Tiny").iterdir()) == ["gray.png", "rgb.webp"]
    for path, pixels in zip(["gray.png", "rgb.webp"], [images["gray"], images["rgb"]], strict=True):
        again = read_image(out / "Tiny" / path)
        assert again.shape == pixels.shape and np.array_equal(again, pixels)
    with pytest.raises(SystemExit, match="no folder"):
        script.convert(tmp_path / "data", out, ["Missing"], progress=False)

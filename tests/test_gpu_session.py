"""``scripts/gpu_session.py`` packs what a lent GPU trained: finished runs, and runs stopped at the
deadline whole enough for ``binsr study`` to resume them elsewhere."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path
from types import ModuleType

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
    assert {n.rsplit("/", 1)[1] for n in names if "cccc" in n} == set(script.PARTIAL_FILES)
    assert session["study_done_runs"] == 1 and session["left_out"] == []
    assert session["study_partial_runs"] == {
        "cpu/x4/twin-i6000-cccc-s0": 3000,
        "cpu/x4/twin-i6000-bbbb-s0": 750,
    }

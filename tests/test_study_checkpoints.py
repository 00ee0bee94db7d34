"""The study checkpoints kept in docs/results/checkpoints reproduce their study.json scores with binsr eval.

``scripts/ship_study_checkpoints.py`` copies the best ``ours`` variant's checkpoint and its twin's there and
lists them in ``index.json`` with the scores of their ``study.json`` records; issue 6 asks that
``binsr eval`` reproduce those numbers within 0.01 dB. Set5 and Set14 keep the test short; BSD100 is
scored by the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

from binsr.evaluate import evaluate, resolve_upscaler
from binsr.study.runner import record_key

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


def test_kept_study_checkpoints_reproduce_their_scores(data_dir: Path) -> None:
    index = json.loads((RESULTS / "checkpoints" / "index.json").read_text(encoding="utf-8"))
    records = json.loads((RESULTS / "study.json").read_text(encoding="utf-8"))["runs"]
    assert {entry["binary"] for entry in index} == {True, False}
    for entry in index:
        record = next(r for r in records if record_key(r) == record_key(entry))
        assert record["scores"] == entry["scores"]  # the index copies study.json
        upscaler = resolve_upscaler(str(RESULTS / "checkpoints" / entry["file"]), entry["scale"])
        folders = [str(data_dir / "Set5"), str(data_dir / "Set14")]
        for row in evaluate(upscaler, folders, [entry["scale"]], progress=False):
            expected = entry["scores"][row["dataset"]]
            assert abs(row["psnr"] - expected["psnr"]) <= 0.01, (entry["file"], row)
            assert abs(row["ssim"] - expected["ssim"]) <= 1e-4, (entry["file"], row)

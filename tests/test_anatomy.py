"""The anatomy of a binary model's gap to its twin (binsr.study.anatomy, ``binsr study anatomy``)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from binsr.cli import main
from binsr.data.datasets import open_eval_set
from binsr.errors import BinsrError
from binsr.evaluate import evaluate, resolve_upscaler
from binsr.study.anatomy import (
    BORDER_PX,
    BORDER_REGION,
    GRADIENT_BANDS,
    GRADIENT_QUANTILES,
    REGIONS,
    excess_error_parts,
    region_masks,
    set_anatomy,
    write_anatomy,
)

CHECKPOINTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "checkpoints"


def _plane(seed: int = 0, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(16, 235, shape))


def test_gradient_bands_partition_the_image_at_its_quantiles() -> None:
    masks = region_masks(_plane())
    bands = np.stack([masks[name] for name in GRADIENT_BANDS])
    assert (bands.sum(axis=0) == 1).all()  # every pixel in exactly one band
    widths = np.diff([0.0, *GRADIENT_QUANTILES, 1.0])
    assert np.allclose(bands.mean(axis=(1, 2)), widths, atol=2 / bands[0].size)
    border = masks[BORDER_REGION]
    assert border.sum() == 60 * 80 - (60 - 2 * BORDER_PX) * (80 - 2 * BORDER_PX)
    assert border[0].all() and border[:, BORDER_PX - 1].all() and not border[BORDER_PX, BORDER_PX]


def test_parts_sum_to_the_gap_and_land_where_the_binary_model_errs() -> None:
    hr = _plane(0)
    twin = hr + np.random.default_rng(1).normal(0, 3, hr.shape)
    binary = twin.copy()
    binary[:3, :] += 4.0  # extra error on the top rows only: all inside the border band
    gap, parts, shares, excess = excess_error_parts(binary, twin, hr)
    expected = 10 * math.log10(((twin - hr) ** 2).sum() / ((binary - hr) ** 2).sum())
    assert gap == pytest.approx(expected) and gap < 0
    assert sum(parts[name] for name in GRADIENT_BANDS) == pytest.approx(gap)
    assert parts[BORDER_REGION] == pytest.approx(gap)
    assert excess[3:].max() == 0 and excess[:3].sum() > 0
    assert shares[BORDER_REGION] == pytest.approx(region_masks(hr)[BORDER_REGION].mean())


def test_equal_errors_have_no_gap_and_no_parts() -> None:
    hr = _plane(2)
    sr = hr + 1.0
    gap, parts, _, excess = excess_error_parts(sr, sr.copy(), hr)
    assert gap == 0.0 and set(parts) == set(REGIONS) and all(v == 0.0 for v in parts.values())
    assert not excess.any()
    with pytest.raises(ValueError, match="differ in shape"):
        excess_error_parts(sr, sr[1:], hr)


def _small_set(data_dir: Path, tmp_path: Path) -> Path:
    """Two Set5 images, enough to run the shipped 32-channel checkpoints quickly."""
    folder = tmp_path / "Mini"
    folder.mkdir()
    for name in ("bird.png", "head.png"):
        shutil.copy(data_dir / "Set5" / name, folder / name)
    return folder


def test_set_anatomy_reproduces_the_evaluated_gap_of_shipped_checkpoints(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = _small_set(data_dir, tmp_path)
    index = json.loads((CHECKPOINTS / "index.json").read_text(encoding="utf-8"))
    entries = {e["binary"]: e for e in index if e["scale"] == 2}
    binary, twin = (resolve_upscaler(str(CHECKPOINTS / entries[b]["file"]), 2) for b in (True, False))
    anatomy = set_anatomy(binary, twin, open_eval_set(folder, 2), progress=False)
    scores = {
        b: {
            r["image"]: r["psnr"]
            for r in evaluate(u, folder, 2, progress=False, per_image=True)[0]["per_image"]
        }
        for b, u in ((True, binary), (False, twin))
    }
    for image in anatomy.images:
        assert image.gap == pytest.approx(scores[True][image.image] - scores[False][image.image], abs=1e-9)
        assert sum(image.parts[name] for name in GRADIENT_BANDS) == pytest.approx(image.gap, abs=1e-9)
    assert anatomy.gap == pytest.approx(sum(anatomy.mean_part(name) for name in GRADIENT_BANDS))
    worst = min(anatomy.images, key=lambda i: i.gap)
    assert anatomy.worst_excess.shape == anatomy.worst_plane.shape
    mse = {b: 255.0**2 * 10 ** (-scores[b][worst.image] / 10) for b in (True, False)}
    assert anatomy.worst_excess.mean() == pytest.approx(mse[True] - mse[False], rel=1e-6)


def test_cli_writes_the_document_and_one_figure_per_pair(data_dir: Path, tmp_path: Path) -> None:
    folder = _small_set(data_dir, tmp_path)
    output = tmp_path / "docs" / "ANATOMY.md"
    argv = ["study", "anatomy", "--data", str(folder), "--checkpoints", str(CHECKPOINTS), "-o", str(output)]
    assert main([*argv, "--no-progress"]) == 0
    text = output.read_text(encoding="utf-8")
    scales = sorted({e["scale"] for e in json.loads((CHECKPOINTS / "index.json").read_text())})
    for scale in scales:
        assert f"## cpu x{scale}:" in text
        assert (tmp_path / "docs" / "results" / f"anatomy_cpu_x{scale}.png").stat().st_size > 10_000
    rows = [line for line in text.splitlines() if line.startswith("| **Mini**")]
    assert len(rows) == len(scales)
    for row in rows:  # the gradient bands' parts add up to the set's gap
        cells = [float(c) for c in row.strip("|").split("|")[1:]]
        assert sum(cells[1 : 1 + len(GRADIENT_BANDS)]) == pytest.approx(cells[0], abs=0.003)


def test_bad_anatomy_input_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    broken = tmp_path / "index.json"
    broken.write_text(json.dumps([{"file": "x.safetensors"}]))
    for argv in (
        ["study", "anatomy", "--checkpoints", str(CHECKPOINTS)],  # no --data
        ["study", "anatomy", "--data", str(tmp_path / "none"), "--checkpoints", str(CHECKPOINTS)],
        [
            "study",
            "anatomy",
            "--data",
            str(data_dir / "Set5"),
            "--checkpoints",
            str(tmp_path / "missing.json"),
        ],
        ["study", "anatomy", "--data", str(data_dir / "Set5"), "--checkpoints", str(broken)],
    ):
        assert main([*argv, "-o", str(tmp_path / "A.md")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("binsr: error: ") and err.count("\n") == 1
    assert not (tmp_path / "A.md").exists()
    with pytest.raises(BinsrError, match="no binary checkpoint"):
        only_twin = tmp_path / "twin.json"
        entries = [e for e in json.loads((CHECKPOINTS / "index.json").read_text()) if not e["binary"]]
        only_twin.write_text(json.dumps(entries))
        write_anatomy(only_twin, [data_dir / "Set5"], tmp_path / "A.md")

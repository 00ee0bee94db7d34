"""``binsr upscale`` and ``binsr compare`` on tiny images with a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from binsr.checkpoint import save_model
from binsr.cli import main
from binsr.data.io import read_image, write_image
from binsr.inference import ModelUpscaler, with_self_ensemble
from tiny_models import tiny_model


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_x2.safetensors"
    save_model(path, tiny_model(scale=2))
    return path


def _image(path: Path, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    write_image(path, img)
    return img


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("binsr: error: ") and fragment in err and len(err.strip().splitlines()) == 1, err


def test_one_image_default_output_matches_model(tmp_path: Path, ckpt: Path) -> None:
    lr = _image(tmp_path / "pic.png", (13, 17, 3))
    assert main(["upscale", str(tmp_path / "pic.png"), "--model", str(ckpt), "--tile", "5"]) == 0
    out = read_image(tmp_path / "pic_x2.png")
    expected = ModelUpscaler(tiny_model(scale=2), 2, tile=None)(lr, 2)
    assert out.shape == (26, 34, 3) and np.abs(out.astype(int) - expected).max() <= 1


def test_folder_to_default_folder_keeps_gray(tmp_path: Path, ckpt: Path) -> None:
    folder = tmp_path / "imgs"
    _image(folder / "a.png", (8, 9, 3))
    _image(folder / "b.bmp", (7, 6), seed=1)
    assert main(["upscale", str(folder), "--model", str(ckpt), "--scale", "2"]) == 0
    out = tmp_path / "imgs_x2"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert read_image(out / "a.png").shape == (16, 18, 3) and read_image(out / "b.png").shape == (14, 12)


def test_self_ensemble_in_upscale_and_eval(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lr = _image(tmp_path / "pic.png", (13, 17, 3))
    argv = ["upscale", str(tmp_path / "pic.png"), "--model", str(ckpt), "--tile", "5", "--self-ensemble"]
    assert main([*argv, "-o", str(tmp_path / "plus.png")]) == 0
    capsys.readouterr()
    expected = with_self_ensemble(ModelUpscaler(tiny_model(scale=2), 2, tile=None))(lr, 2)
    plain = ModelUpscaler(tiny_model(scale=2), 2, tile=None)(lr, 2)
    out = read_image(tmp_path / "plus.png")
    assert np.abs(out.astype(int) - expected).max() <= 1 and np.abs(out.astype(int) - plain).max() > 1

    hr_set = tmp_path / "set"
    _image(hr_set / "hr.png", (24, 30, 3))
    scores = {}
    for extra in ([], ["--self-ensemble"]):
        eval_argv = ["eval", "--model", str(ckpt), "--scale", "2", "--data", str(hr_set), "--format", "json"]
        assert main([*eval_argv, "--no-progress", *extra]) == 0
        scores[bool(extra)] = json.loads(capsys.readouterr().out)
    assert scores[True] != scores[False]
    _fails(
        ["eval", "--scale", "2", "--data", str(hr_set), "--self-ensemble"],
        capsys,
        "self-ensemble needs a model",
    )
    _fails(
        ["eval", "--model", str(ckpt), "--scale", "2", "4", "--data", str(hr_set), "--self-ensemble"],
        capsys,
        "--self-ensemble takes one --scale",
    )


def test_refusals(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "pic.png"
    original = _image(image, (6, 6, 3))
    model = ["--model", str(ckpt)]
    _fails(["upscale", str(image), *model, "-o", str(image)], capsys, "refusing to overwrite input image")
    _fails(["upscale", str(tmp_path), *model, "-o", str(tmp_path)], capsys, "refusing to overwrite input")
    assert np.array_equal(read_image(image), original)
    _fails(["upscale", str(tmp_path / "nope.png"), *model], capsys, "input not found")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    _fails(["upscale", str(tmp_path / "junk.png"), *model], capsys, "junk.png")
    _fails(["upscale", str(image), *model, "--scale", "4"], capsys, "x2 model, but scale x4")
    _fails(["upscale", str(image), *model, "-o", str(tmp_path / "x.txt")], capsys, "no image suffix")
    _fails(
        ["upscale", str(image), "--model", "default", "--scale", "3"],
        capsys,
        "no shipped model 'default' for scale 3",
    )
    assert not (tmp_path / "pic_x2.png").exists()


def test_compare_writes_a_png(tmp_path: Path, ckpt: Path) -> None:
    image = tmp_path / "hr.png"
    _image(image, (33, 40, 3))
    figure = tmp_path / "fig.png"
    argv = ["compare", str(image), "--scale", "2", "--models", f"bicubic,{ckpt}", "-o", str(figure)]
    assert main([*argv, "--crop", "4,2,20,16"]) == 0
    assert read_image(figure).ndim == 3
    assert main([*argv, "--crop", "auto"]) == 0

"""Image I/O: listing, reading every common mode, clear errors, atomic writes, tensor helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from binsr.data.io import IMAGE_SUFFIXES, list_images, modcrop, read_image, to_tensor, to_uint8, write_image
from binsr.errors import BinsrError


def test_list_images_sorted_and_case_insensitive(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.Tiff", "d.bmp", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.Tiff", "d.bmp"]
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} <= IMAGE_SUFFIXES


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(BinsrError, match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(BinsrError, match="not a folder"):
        list_images(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(BinsrError, match="no images") as info:
        list_images(empty)
    assert str(empty) in str(info.value) and "\n" not in str(info.value)


def test_read_rgb_gray_and_converted_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), gray)
    # RGBA: alpha is dropped, colours kept as stored.
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 10, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    # LA -> L, alpha dropped.
    Image.fromarray(np.stack([gray, gray // 2], axis=2), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), gray)
    # Palette -> RGB.
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    pal = Image.open(tmp_path / "p.png")
    assert pal.mode == "P"
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    # Bilevel -> 0/255 gray.
    Image.fromarray(gray > 127).save(tmp_path / "bw.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bw.png"), np.where(gray > 127, 255, 0))
    # JPEG and BMP decode to RGB too.
    Image.fromarray(rgb).save(tmp_path / "x.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "x.bmp"), rgb)
    Image.fromarray(rgb).save(tmp_path / "x.JPG")
    assert read_image(tmp_path / "x.JPG").shape == (5, 7, 3)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_16_bit_gray_is_round_v_over_257(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 128, 129, 257, 385, 386], [65535, 65407, 65408, 514, 1000, 32896]], np.uint16)
    Image.fromarray(values).save(tmp_path / f"g16{suffix}")
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)
    got = read_image(tmp_path / f"g16{suffix}")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert got[0].tolist()[:4] == [0, 0, 1, 1] and got[1, 0] == 255


def test_truncated_and_non_image_files_are_refused(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BinsrError) as info:
        read_image(tmp_path / "cut.png")
    assert "cut.png" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "text.png").write_text("this is not a PNG")
    with pytest.raises(BinsrError, match="not an image") as info:
        read_image(tmp_path / "text.png")
    assert "text.png" in str(info.value)
    with pytest.raises(BinsrError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_write_image_atomic_creates_parents_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    target = tmp_path / "a" / "b" / "out.png"
    assert write_image(target, rgb) == target
    np.testing.assert_array_equal(read_image(target), rgb)
    gray = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    write_image(target, gray)  # overwrite in place
    np.testing.assert_array_equal(read_image(target), gray)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]  # no temporary left over
    with pytest.raises(TypeError):
        write_image(tmp_path / "f.png", rgb.astype(np.float32))
    with pytest.raises(BinsrError, match="suffix"):
        write_image(tmp_path / "f.xyz", rgb)
    assert not (tmp_path / "f.xyz").exists()


def test_tensor_helpers_and_modcrop() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    t = to_tensor(rgb)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert torch.allclose(t[:, 1, 2], torch.tensor(rgb[1, 2] / 255.0, dtype=torch.float32))
    np.testing.assert_array_equal(to_uint8(t), rgb)
    assert to_tensor(rgb[..., 0]).shape == (1, 2, 3)
    assert to_uint8(to_tensor(rgb[..., 0])).shape == (2, 3)
    # Clamping and round half up: 0.5/255 -> 1, -0.2 -> 0, 1.7 -> 255.
    t = torch.tensor([[[0.5 / 255, 0.49 / 255, -0.2, 1.7]]], dtype=torch.float64)
    assert to_uint8(t).tolist() == [[1, 0, 0, 255]]
    assert to_uint8(torch.zeros(1, 3, 4, 5)).shape == (4, 5, 3)
    img = np.zeros((13, 10, 3), np.uint8)
    assert modcrop(img, 4).shape == (12, 8, 3)
    assert modcrop(img[..., 0], 3).shape == (12, 9)
    assert modcrop(torch.zeros(2, 3, 13, 10), 4).shape == (2, 3, 12, 8)

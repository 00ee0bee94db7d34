"""binsr.inference: exact tiling, uint8 / gray handling, shipped-model lookup and upscaler resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from binsr.checkpoint import save_model
from binsr.data.io import to_tensor, to_uint8
from binsr.errors import BinsrError
from binsr.evaluate import BicubicUpscaler
from binsr.inference import (
    ModelUpscaler,
    SelfEnsemble,
    load_upscaler,
    receptive_field_radius,
    shipped_model_path,
    tile_grid,
    upscale_tensor,
    upscale_uint8,
    with_self_ensemble,
)
from tiny_models import tiny_model


def test_receptive_field_radius_bounds_the_tiny_model() -> None:
    # head 3x3 (1) + body 3x3 dilation 2 (2) + resampling margin (2)
    assert receptive_field_radius(tiny_model()) == 5


def test_tile_grid_covers_every_pixel_once() -> None:
    cover = np.zeros((23, 37), dtype=int)
    for (rows, cols), (crows, ccols) in tile_grid(23, 37, tile=8, overlap=3):
        cover[rows, cols][crows, ccols] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize("scale", [2, 3])
def test_tiled_equals_untiled(scale: int) -> None:
    model = tiny_model(scale=scale)
    lr = torch.rand(1, 3, 29, 43)  # odd sizes, 4 x 6 tiles of 7-8 pixels
    with torch.inference_mode():
        full = model(lr)
    tiled = upscale_tensor(model, lr, scale, tile=8)
    assert tiled.shape == (1, 3, scale * 29, scale * 43)
    torch.testing.assert_close(tiled, full, rtol=0, atol=1e-5)
    assert torch.equal(upscale_tensor(model, lr, scale, tile=None), full)
    # too little context is visibly wrong: the check above is not vacuous
    assert (upscale_tensor(model, lr, scale, tile=8, overlap=1) - full).abs().max() > 1e-3


def test_uint8_matches_rounded_float_and_handles_gray() -> None:
    model = tiny_model(scale=2)
    rgb = np.random.default_rng(0).integers(0, 256, (19, 25, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = to_uint8(model(to_tensor(rgb)[None]))
    out = upscale_uint8(model, rgb, 2, tile=6)
    assert out.shape == (38, 50, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected).max() <= 1  # float rounding at .5 only
    gray = rgb[..., 0]
    with torch.inference_mode():
        expected = to_uint8(model(to_tensor(gray)[None].expand(1, 3, -1, -1)).mean(1))
    out = ModelUpscaler(model, 2, tile=6)(gray, 2)
    assert out.shape == (38, 50) and np.abs(out.astype(int) - expected).max() <= 1


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight images of ``x`` under D4, built as quarter turns and their transposes."""
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.transpose(-2, -1) for t in turns]


def test_self_ensemble_is_the_mean_over_d4_and_is_equivariant() -> None:
    model = tiny_model(scale=2)
    ensemble = SelfEnsemble(model)
    lr = torch.rand(1, 3, 11, 16)
    with torch.inference_mode():
        out = ensemble(lr)
        # the same mean, built another way: transposes instead of flips, each output mapped back
        inverses = [lambda y, k=k: torch.rot90(y, -k, dims=(-2, -1)) for k in range(4)]
        inverses += [lambda y, k=k: torch.rot90(y.transpose(-2, -1), -k, dims=(-2, -1)) for k in range(4)]
        by_hand = sum(inv(model(g)) for inv, g in zip(inverses, _dihedral(lr), strict=True)) / 8
        torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-6)
        assert (out - model(lr)).abs().max() > 1e-3  # the plain model is not equivariant: not vacuous
        for g_in, g_out in zip(_dihedral(lr), _dihedral(out), strict=True):
            torch.testing.assert_close(ensemble(g_in), g_out, rtol=0, atol=1e-6)
    assert receptive_field_radius(ensemble) == receptive_field_radius(model)
    tiled = upscale_tensor(ensemble, lr, 2, tile=5)
    torch.testing.assert_close(tiled, out, rtol=0, atol=1e-5)


def test_with_self_ensemble_wraps_model_upscalers_only() -> None:
    plain = ModelUpscaler(tiny_model(scale=2), 2, name="tiny")
    wrapped = with_self_ensemble(plain)
    assert isinstance(wrapped.model, SelfEnsemble) and wrapped.scale == 2 and "self-ensemble" in wrapped.name
    rgb = np.random.default_rng(1).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = to_uint8(SelfEnsemble(plain.model)(to_tensor(rgb)[None]))
    assert np.abs(wrapped(rgb, 2).astype(int) - expected).max() <= 1
    assert not isinstance(plain.model, SelfEnsemble)  # the original is left as it was
    with pytest.raises(BinsrError, match="self-ensemble needs a model"):
        with_self_ensemble(BicubicUpscaler())


def test_model_upscaler_refuses_other_scales() -> None:
    with pytest.raises(BinsrError, match="x2 model; cannot upscale by x4"):
        ModelUpscaler(tiny_model(scale=2), 2)(np.zeros((4, 4, 3), np.uint8), 4)


def test_load_upscaler_from_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_model(scale=3))
    upscaler = load_upscaler(str(path), None)
    assert upscaler is not None and upscaler.scale == 3
    with pytest.raises(BinsrError, match="x3 model, but scale x2"):
        load_upscaler(str(path), 2)
    assert load_upscaler("bicubic", 2) is None
    with pytest.raises(BinsrError, match="has no shipped weights"):
        load_upscaler("test_tiny_sr", 2)


def test_shipped_model_lookup(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text(
        json.dumps({"default": {"2": "d2.safetensors", "4": "d4.safetensors"}})
    )
    save_model(tmp_path / "d4.safetensors", tiny_model(scale=4))
    assert shipped_model_path("default", None, tmp_path) == tmp_path / "d4.safetensors"
    with pytest.raises(BinsrError, match=r"no shipped model 'default' for scale 3; shipped: x2, x4"):
        shipped_model_path("default", 3, tmp_path)
    with pytest.raises(BinsrError, match="missing its file"):
        shipped_model_path("default", 2, tmp_path)
    with pytest.raises(BinsrError, match=r"no shipped model 'default-fp' for scale 4; shipped: none"):
        shipped_model_path("default-fp", 4, tmp_path)

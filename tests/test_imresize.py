"""MATLAB bicubic imresize: pinned against an independent per-pixel reference and hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from binsr.data.imresize import (
    bicubic_downscale_uint8,
    bicubic_upscale_uint8,
    contributions,
    cubic,
    imresize,
    resize_matrix,
)

# ---------------------------------------------------------------------------------------------------
# An independent, slow reference written straight from MATLAB's definition (imresize.m, contributions):
# per output pixel, 1-based coordinates, explicit taps, the mirror rule aux(mod(j - 1, 2n) + 1).


def keys(t: float) -> float:
    """Keys' cubic kernel, a = -0.5."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def ref_resize_1d(line: list[float], out_len: int, s: float) -> list[float]:
    """One MATLAB bicubic pass over a 1-D signal, written as explicit loops."""
    n = len(line)
    aux = list(range(1, n + 1)) + list(range(n, 0, -1))
    width = 4.0 / s if s < 1 else 4.0
    out = []
    for x in range(1, out_len + 1):
        u = x / s + 0.5 * (1 - 1 / s)
        left = math.floor(u - width / 2)
        taps = [left + p for p in range(math.ceil(width) + 2)]
        w = [s * keys(s * (u - j)) if s < 1 else keys(u - j) for j in taps]
        total = sum(w)
        value = 0.0
        for j, wj in zip(taps, w, strict=True):
            value += wj / total * line[aux[(j - 1) % (2 * n)] - 1]
        out.append(value)
    return out


def ref_imresize(
    img: np.ndarray, scales: tuple[float, float], out: tuple[int, int], uint8: bool
) -> np.ndarray:
    """Two reference passes in MATLAB's order; uint8 rounding (half away from zero) after each pass."""
    a = img.astype(np.float64)
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]
    for dim in order:
        a = np.moveaxis(a, dim, 0)
        res = np.zeros((out[dim], *a.shape[1:]))
        for idx in np.ndindex(a.shape[1:]):
            col = ref_resize_1d(list(a[(slice(None), *idx)]), out[dim], scales[dim])
            res[(slice(None), *idx)] = col
        if uint8:
            res = np.floor(np.clip(res, 0, 255) + 0.5)
        a = np.moveaxis(res, 0, dim)
    return a


# ---------------------------------------------------------------------------------------------------


def test_cubic_kernel_values() -> None:
    t = torch.tensor([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.25], dtype=torch.float64)
    expected = [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0, 0.8671875]
    assert cubic(t).tolist() == expected


def test_upscale_x2_first_row_weights_by_hand() -> None:
    # x = 1, u = 0.75: taps j = -2..3 at distances 2.75..-2.25 with weights 0, k(1.75), k(0.75),
    # k(0.25), k(1.25), 0. Mirroring sends j = 0 -> 1 and j = -1 -> 2, so pixel 1 gets
    # 0.2265625 + 0.8671875 and pixel 2 gets -0.0234375 - 0.0703125.
    m = resize_matrix(4, 8, 2.0)
    assert m[0].tolist() == [1.09375, -0.09375, 0.0, 0.0]
    weights, indices = contributions(4, 8, 2.0)
    assert weights.shape == (8, 6)
    # 1-based taps j = -2..3 mirror through aux = [1 2 3 4 4 3 2 1] to 3, 2, 1, 1, 2, 3.
    assert indices[0].tolist() == [2, 1, 0, 0, 1, 2]


def test_downscale_x2_interior_weights_by_hand() -> None:
    # s = 0.5: h(t) = 0.5 k(0.5 t), width 8. Output x = 3 has u = 5.5, so input pixels 2..9 (1-based)
    # at distances 3.5 .. -3.5 get 0.5 * k(1.75), k(1.25), k(0.75), k(0.25), k(0.25), ... (sum 1).
    m = resize_matrix(16, 8, 0.5)
    half = [-0.0234375, -0.0703125, 0.2265625, 0.8671875]
    expected = [v / 2 for v in half + half[::-1]]
    assert m[2, 1:9].tolist() == expected
    assert m[2, 0].item() == 0.0 and m[2, 9:].abs().sum().item() == 0.0


def test_output_size_rule_is_ceil() -> None:
    x = torch.rand(2, 5, 7, dtype=torch.float64)
    assert imresize(x, scale=0.5).shape == (2, 3, 4)
    assert imresize(x, scale=1 / 3).shape == (2, 2, 3)
    assert imresize(x, scale=3).shape == (2, 15, 21)
    assert imresize(x, output_size=(4, 9)).shape == (2, 4, 9)


def test_constant_stays_constant() -> None:
    x = torch.full((1, 9, 13), 0.37, dtype=torch.float64)
    for scale in (0.25, 1 / 3, 0.5, 2, 3, 4):
        y = imresize(x, scale=scale)
        assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-14)
    img = np.full((12, 12, 3), 200, np.uint8)
    assert (bicubic_downscale_uint8(img, 4) == 200).all()
    assert (bicubic_upscale_uint8(img, 3) == 200).all()


def test_ramp_is_reproduced_away_from_borders() -> None:
    # Keys' a = -0.5 kernel reproduces linear functions: f(j) = j upscaled x2 gives f(u), u = x/2 + 1/4.
    n = 12
    ramp = torch.arange(1, n + 1, dtype=torch.float64).repeat(3, 1)
    y = imresize(ramp, output_size=(3, 2 * n))[0]
    x = torch.arange(1, 2 * n + 1, dtype=torch.float64)
    u = x / 2 + 0.25
    interior = slice(4, 2 * n - 4)
    assert torch.allclose(y[interior], u[interior], atol=1e-12)
    # Downscaling a ramp by 2: output x sits at u = 2x - 0.5, also exact in the interior.
    y = imresize(torch.arange(1, 33, dtype=torch.float64)[None], output_size=(1, 16))[0]
    u = 2 * torch.arange(1, 17, dtype=torch.float64) - 0.5
    assert torch.allclose(y[3:-3], u[3:-3], atol=1e-12)


@pytest.mark.parametrize("shape", [(7, 5), (12, 9), (9, 13), (6, 6)])
@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 2, 3, 4])
def test_float_imresize_matches_reference(shape: tuple[int, int], scale: float) -> None:
    rng = np.random.default_rng(hash((shape, scale)) % 2**32)
    img = rng.random(shape)
    out = (math.ceil(scale * shape[0]), math.ceil(scale * shape[1]))
    expected = ref_imresize(img, (scale, scale), out, uint8=False)
    got = imresize(torch.from_numpy(img), scale=scale).numpy()
    assert got.shape == out
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("shape", [(12, 24), (36, 12, 3), (24, 36)])
def test_uint8_down_and_up_match_reference(scale: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(scale * 100 + shape[0])
    hr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    h, w = shape[:2]
    lr = bicubic_downscale_uint8(hr, scale, rounding="per_pass")
    chans = [hr] if hr.ndim == 2 else [hr[..., c] for c in range(hr.shape[2])]
    ref_lr = [ref_imresize(c, (1 / scale, 1 / scale), (h // scale, w // scale), uint8=True) for c in chans]
    ref_lr = ref_lr[0] if hr.ndim == 2 else np.stack(ref_lr, axis=-1)
    assert lr.dtype == np.uint8 and lr.shape == ref_lr.shape
    np.testing.assert_array_equal(lr, ref_lr)
    sr = bicubic_upscale_uint8(lr, scale, rounding="per_pass")
    lr_chans = [lr] if lr.ndim == 2 else [lr[..., c] for c in range(lr.shape[2])]
    ref_sr = [ref_imresize(c, (scale, scale), (h, w), uint8=True) for c in lr_chans]
    ref_sr = ref_sr[0] if lr.ndim == 2 else np.stack(ref_sr, axis=-1)
    np.testing.assert_array_equal(sr, ref_sr)


def test_uint8_rounds_after_each_pass_and_saturates() -> None:
    # High-contrast content overshoots: the result must be clipped, and equal to the per-pass reference
    # (MATLAB's imresizemex returns uint8 after each dimension), not to one final rounding.
    img = np.zeros((8, 8), np.uint8)
    img[::2, ::2] = 255
    img[1::2, 1::2] = 255
    up = bicubic_upscale_uint8(img, 3, rounding="per_pass")
    ref = ref_imresize(img, (3, 3), (24, 24), uint8=True)
    np.testing.assert_array_equal(up, ref)
    once = np.floor(np.clip(ref_imresize(img, (3, 3), (24, 24), uint8=False), 0, 255) + 0.5)
    assert (once != ref).any()
    # The default rounds once, after both passes in float64.
    np.testing.assert_array_equal(bicubic_upscale_uint8(img, 3), once)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_uint8_default_rounds_once(scale: int) -> None:
    rng = np.random.default_rng(scale)
    hr = rng.integers(0, 256, size=(12 * scale, 7 * scale), dtype=np.uint8)
    h, w = hr.shape
    exact = ref_imresize(hr, (1 / scale, 1 / scale), (h // scale, w // scale), uint8=False)
    ref = np.floor(np.clip(exact, 0, 255) + 0.5)
    np.testing.assert_array_equal(bicubic_downscale_uint8(hr, scale), ref)
    with pytest.raises(ValueError, match="rounding"):
        bicubic_downscale_uint8(hr, scale, rounding="twice")


def test_unequal_scales_resize_smaller_scale_first() -> None:
    # Scales (2, 0.5): MATLAB resizes W (scale 0.5) first. With uint8 rounding the order is visible.
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(10, 16), dtype=np.uint8)
    from binsr.data.imresize import _resize_uint8

    got = _resize_uint8(img, None, (20, 8), rounding="per_pass")
    ref = ref_imresize(img, (2.0, 0.5), (20, 8), uint8=True)
    np.testing.assert_array_equal(got, ref)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="multiple"):
        bicubic_downscale_uint8(np.zeros((10, 12), np.uint8), 4)
    with pytest.raises(TypeError):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), scale=2)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4), scale=-1.0)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4))

"""PSNR/SSIM protocol: BT.601 luma, hand-computed PSNR, SSIM against scikit-image, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from binsr.metrics import gaussian_window, psnr, rgb_to_y, score_sr, ssim


def test_rgb_to_y_bt601_studio_swing() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(img)
    np.testing.assert_allclose(y[0], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-12)


def test_psnr_known_constant_error() -> None:
    a = np.full((8, 8), 100.0)
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25))  # 34.1514 dB
    assert psnr(a, a - 1) == pytest.approx(20 * math.log10(255))  # 48.1308 dB
    assert psnr(a, a) == math.inf
    assert psnr(a / 255, (a + 5) / 255, data_range=1.0) == pytest.approx(psnr(a, a + 5))


def test_gaussian_window_is_fspecial() -> None:
    g = gaussian_window()
    k = np.outer(g, g)
    i = np.arange(11) - 5
    ref = np.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-15)


def _skimage_valid(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image SSIM with ssim_index.m's settings, averaged over the valid region only.

    skimage filters with mode='reflect' on the full image and then crops (win_size - 1) // 2 = 5 pixels
    from the SSIM map before averaging, so its mean covers exactly the 'valid' region; we also crop its
    full map explicitly to make that visible.
    """
    from skimage.metrics import structural_similarity

    mean, full = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, full=True
    )
    valid = float(full[5:-5, 5:-5].mean())
    assert valid == pytest.approx(mean, abs=1e-12)
    return valid


@pytest.mark.parametrize("shape", [(11, 11), (32, 40), (57, 23)])
def test_ssim_matches_skimage_on_valid_region(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    a = rng.integers(0, 256, shape).astype(np.float64)
    smooth = np.cumsum(rng.normal(size=shape), axis=1)
    b = np.clip(a * 0.7 + 20 * smooth + 10, 0, 255).round()
    assert ssim(a, b) == pytest.approx(_skimage_valid(a, b), abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_hand_value_for_constant_images() -> None:
    # Constant images: sigmas are 0, SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a, b = np.full((15, 15), 100.0), np.full((15, 15), 110.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
    with pytest.raises(ValueError):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))


def test_score_sr_conventions_crop_and_gray() -> None:
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-6, 7, hr.shape), 0, 255).astype(np.uint8)
    s = 4
    y_hr, y_sr = rgb_to_y(hr), rgb_to_y(sr)
    crop = (slice(s, -s), slice(s, -s))
    mat = score_sr(sr, hr, s, "matlab")
    r_hr, r_sr = np.floor(y_hr + 0.5)[crop], np.floor(y_sr + 0.5)[crop]
    assert mat == pytest.approx((psnr(r_sr, r_hr), ssim(r_sr, r_hr)))
    bas = score_sr(sr, hr, s, "basicsr")
    assert bas == pytest.approx((psnr(y_sr[crop], y_hr[crop]), ssim(y_sr[crop], y_hr[crop])))
    assert mat != bas
    # Border pixels are ignored: damaging only the cropped border changes nothing.
    damaged = sr.copy()
    damaged[:s] = 0
    damaged[:, -s:] = 255
    assert score_sr(damaged, hr, s) == mat
    # A gray image is scored on its own values (no luma transform, no 16..235 range).
    g_hr, g_sr = hr[..., 0], sr[..., 0]
    assert score_sr(g_sr, g_hr, s) == pytest.approx(
        (psnr(g_sr[crop], g_hr[crop]), ssim(g_sr[crop], g_hr[crop]))
    )
    with pytest.raises(ValueError):
        score_sr(sr[:-1], hr, s)
    with pytest.raises(ValueError):
        score_sr(sr, hr, s, "opencv")

"""The PSNR/SSIM protocol of the SR literature.

Protocol (:func:`score_sr`): both images ``uint8``; colour images are converted to the BT.601
studio-swing luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (``R, G, B`` in ``0..255``,
``Y`` in ``[16, 235]``); a single-channel image is scored on its own gray values; ``scale`` pixels are
cropped from every border; then PSNR with peak 255 and SSIM.

Two conventions differ only in the luma rounding:

* ``"matlab"`` (the published tables): ``Y`` is rounded to 8 bits, as MATLAB's ``rgb2ycbcr`` returns
  ``uint8`` for ``uint8`` input;
* ``"basicsr"``: ``Y`` stays a float (BasicSR's ``bgr2ycbcr(y_only=True)`` on float input).

SSIM (:func:`ssim`) follows Wang et al.'s ``ssim_index.m``: an 11x11 Gaussian window with sigma 1.5
(normalised to sum 1), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = 255``, population
(biased) variances, and the mean of the SSIM map over the *valid* region only (``filter2(..., 'valid')``,
no padding):

    SSIM = ((2 mu_a mu_b + C1)(2 sigma_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2))

References: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 13(4), 2004; ITU-R BT.601.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

from binsr.data.imresize import single_thread

__all__ = ["CONVENTIONS", "gaussian_window", "psnr", "rgb_to_y", "score_sr", "scored_plane", "ssim"]

Convention = Literal["matlab", "basicsr"]
CONVENTIONS: tuple[str, ...] = ("matlab", "basicsr")

_Y_WEIGHTS = (65.481, 128.553, 24.966)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing luma of an RGB image with values in ``0..255``, as float64 in ``[16, 235]``.

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (MATLAB ``rgb2ycbcr``, first channel, before
    its rounding). ``img`` is ``HxWx3`` (any real dtype); the result is ``HxW`` float64.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 image, got shape {img.shape}")
    rgb = img.astype(np.float64)
    return (
        16.0
        + (_Y_WEIGHTS[0] * rgb[..., 0] + _Y_WEIGHTS[1] * rgb[..., 1] + _Y_WEIGHTS[2] * rgb[..., 2]) / 255.0
    )


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / mean((a - b)^2))`` in dB (``inf`` if equal)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


@lru_cache(maxsize=8)
def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The 1-D Gaussian ``g(i) ∝ exp(-i^2 / (2 sigma^2))``, ``i = -(size-1)/2 .. (size-1)/2``, sum 1.

    Its outer product is MATLAB's ``fspecial('gaussian', size, sigma)``. float64; read-only.
    """
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(i**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 2-D correlation of ``x`` (``[..., H, W]``) with ``g ⊗ g``, 'valid' region only.

    Written as ``k`` shifted, weighted sums per axis (float64; faster than a float64 ``conv2d`` on CPU).
    """
    k = g.numel()
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    weights = g.tolist()
    rows = x[..., 0:h, :] * weights[0]
    for i in range(1, k):
        rows.add_(x[..., i : i + h, :], alpha=weights[i])
    out = rows[..., 0:w] * weights[0]
    for i in range(1, k):
        out.add_(rows[..., i : i + w], alpha=weights[i])
    return out


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two single-channel images (``HxW``, values in ``0..data_range``), ``ssim_index.m`` style.

    Gaussian window 11, sigma 1.5, ``C1 = (0.01 data_range)^2``, ``C2 = (0.03 data_range)^2``, mean over
    the valid region (formula in the module docstring). Both sides must be at least 11x11.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two HxW images of equal shape, got {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    x = torch.from_numpy(np.array(a, dtype=np.float64))
    y = torch.from_numpy(np.array(b, dtype=np.float64))
    with single_thread():
        stack = torch.stack([x, y, x * x, y * y, x * y])
        mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(stack, gaussian_window())
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        sigma_xx, sigma_yy, sigma_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
        num = (2 * mu_xy + c1) * (2 * sigma_xy + c2)
        ssim_map = num / ((mu_xx + mu_yy + c1) * (sigma_xx + sigma_yy + c2))
        return float(ssim_map.mean())


def _luma(img: np.ndarray, convention: str) -> np.ndarray:
    """The plane that is scored: Y of an RGB image (rounded for MATLAB), or the gray values."""
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0].astype(np.float64)
    y = rgb_to_y(img)
    if convention == "matlab":
        y = np.floor(y + 0.5)  # uint8 rgb2ycbcr: round half away from zero (Y > 0)
    return y


def score_sr(
    sr: np.ndarray, hr: np.ndarray, scale: int, convention: Convention | str = "matlab"
) -> tuple[float, float]:
    """``(psnr, ssim)`` of a super-resolved image against its ground truth, by the SR protocol.

    ``sr`` and ``hr`` are ``uint8`` images of equal shape (``HxWx3`` RGB or ``HxW`` gray). RGB is scored on
    BT.601 luma (rounded to 8 bits for ``convention="matlab"``, float for ``"basicsr"``), gray on its
    own values; ``scale`` pixels are cropped from every border first.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
    y_sr = scored_plane(sr, scale, convention)
    y_hr = scored_plane(hr, scale, convention)
    return psnr(y_sr, y_hr), ssim(y_sr, y_hr)


def scored_plane(img: np.ndarray, scale: int, convention: Convention | str = "matlab") -> np.ndarray:
    """The ``float64`` plane :func:`score_sr` compares: the luma of ``img`` (its gray values if it has one
    channel), with ``scale`` pixels cropped from every border."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; use one of {CONVENTIONS}")
    y = _luma(img, convention)
    return y[scale:-scale, scale:-scale] if scale > 0 else y

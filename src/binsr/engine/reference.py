"""Pure-PyTorch reference of the packed kernels, used by the tests (slow, unpacked, exact).

It follows the training-time convention literally: ``a = sign(x + b)`` with sign(0) = +1, spatial padding
with +1, a convolution with ``sign(W)`` done in float64 (so the ±1 sums are exact integers), then the same
float32 epilogue as the kernels, in the same order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from binsr.engine.conv import Pair, RPReLUParams, _pair


def sign_pm1(t: torch.Tensor) -> torch.Tensor:
    """±1 float32 signs with sign(0) = +1."""
    return torch.where(t < 0, -1.0, 1.0).to(torch.float32)


def reference_binary_conv2d(
    x: torch.Tensor,
    threshold: torch.Tensor | None,
    weight: torch.Tensor,
    alpha: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: Pair = 1,
    padding: Pair | None = None,
    rprelu: RPReLUParams | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``α · conv(pad₊₁(sign(x + b)), sign(W)) + bias``, then optional RPReLU and residual add.

    Args:
        x: float ``[N, C, H, W]``; threshold: ``[C]`` or None.
        weight: ``[OC, C, KH, KW]`` (only its signs are used); alpha: ``[OC]``; bias: ``[OC]`` or None.
        stride, padding: as in :func:`binsr.engine.binary_conv2d` (padding None = ``k // 2``).
        rprelu: optional ``(gamma, slope, zeta)``; residual: optional ``[N, OC, OH, OW]``.
    """
    shifted = x.float()
    if threshold is not None:
        shifted = shifted + threshold.float().reshape(1, -1, 1, 1)
    kh, kw = int(weight.shape[2]), int(weight.shape[3])
    ph, pw = (kh // 2, kw // 2) if padding is None else _pair(padding, "padding")
    a = F.pad(sign_pm1(shifted), (pw, pw, ph, ph), value=1.0)
    counts = F.conv2d(a.double(), sign_pm1(weight).double(), stride=_pair(stride, "stride")).float()
    oc = int(weight.shape[0])

    def per_channel(v: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32).reshape(-1).expand(oc).reshape(1, -1, 1, 1)

    y = per_channel(alpha) * counts
    y = y + (per_channel(bias) if bias is not None else 0.0)
    if rprelu is not None:
        gamma, slope, zeta = rprelu
        t = y - per_channel(gamma)
        t = torch.where(t < 0, t * per_channel(slope), t)
        y = t + per_channel(zeta)
    if residual is not None:
        y = y + residual.float()
    return y

"""EDSR-baseline (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPRW 2017, Table 1 "baseline" column): 16 residual blocks × 64 channels, no BatchNorm, residual
scaling 1, a body-end conv plus a long skip, a sub-pixel upsampler without activation and a tail conv.

The input (RGB in [0, 1]) is shifted by the DIV2K mean and the output shifted back, as EDSR's
``MeanShift`` does (here a buffer, not a frozen 1×1 conv, so it costs no counted MACs).
"""

from __future__ import annotations

import torch
from torch import nn

from binsr.models.common import (
    DIV2K_RGB_MEAN,
    FPUpStage,
    MeanShift,
    SRModel,
    Upsampler,
    check_size,
    make_body,
    sr_model,
)
from binsr.models.srresnet import PLAIN_UNIT


class EDSR(SRModel):
    """EDSR: ``add_mean(tail(up(body(head(x)) + head(x))))`` with ``head = conv 3→C``."""

    def __init__(self, *, scale: int, n_feats: int, n_blocks: int) -> None:
        super().__init__(scale)
        self.sub_mean = MeanShift(DIV2K_RGB_MEAN, -1)
        self.add_mean = MeanShift(DIV2K_RGB_MEAN, +1)
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = make_body(n_feats, n_blocks, PLAIN_UNIT, mid_act="relu", block_skip=True)
        self.body_end = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.upsampler = Upsampler(n_feats, scale, lambda c, f: FPUpStage(c, f, act=None))
        self.tail = nn.Conv2d(n_feats, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(self.sub_mean(x))
        out = self.body_end(self.body(head)) + head
        return self.add_mean(self.tail(self.upsampler(out)))


@sr_model("edsr_baseline")
def edsr_baseline(*, scale: int, n_feats: int = 64, n_blocks: int = 16) -> EDSR:
    """EDSR-baseline (Lim et al. 2017): 16 × 64, no BN, residual scale 1 (x4: 1518 K params).

    Example:
        >>> import torch
        >>> from binsr.models import create_model
        >>> create_model("edsr_baseline", scale=3, n_feats=8, n_blocks=1)(torch.rand(1, 3, 4, 4)).shape
        torch.Size([1, 3, 12, 12])
    """
    check_size("edsr_baseline", n_feats, n_blocks)
    return EDSR(scale=scale, n_feats=n_feats, n_blocks=n_blocks)  # PyTorch's default init, as EDSR

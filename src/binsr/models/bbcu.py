"""BBCU-L and BBCU-M (Xia et al., "Basic Binary Convolution Unit for Binarized Image Restoration
Network", ICLR 2023), following the released code (``bbcul_arch.py``, ``bbcum_arch.py``,
``quant_convs_bbcu.py``) and Table 1.

BBCU unit: ``y = RPReLU(BinConv(Sign(x + b))) + x`` — a learnable per-channel threshold ``b``, Bi-Real's
ApproxSign gradient, weights ``α·sign(W)`` with ``α = mean|W|`` per output channel, RPReLU, no BN.
A body block is two such units (BBCU's ``BinaryBlock``; no extra block-level skip), 16 blocks = 32
binary 3×3 convs. Residual alignment: the input is multiplied by ``k`` (130 for 64 channels) and the
output divided by ``k``, with a bilinear global skip.

* BBCU-L keeps ``conv_first``, the upsampler (conv → PixelShuffle → LReLU per ×2/×3 stage) and
  ``conv_hr``/``conv_last`` full precision: x4 79.20 G OPs / 372 K params, x2 18.55 G / 225 K.
* BBCU-M also binarizes the upsampler (binary conv to ``s²C`` + RPReLU + PixelShuffle, plus the
  nearest-upsampled input) and ``conv_hr`` (a BBCU unit): x4 3.95 G / 51 K, x2 1.83 G / 46 K.
"""

from __future__ import annotations

from binsr.models.common import (
    Binarizer,
    ResNetSR,
    UnitSpec,
    check_size,
    default_alignment,
    resnet_backbone,
    sr_model,
)


def bbcu_spec(
    *,
    surrogate: Binarizer = "approx_sign",
    weight_binarizer: Binarizer = "xnor",
    learnable_threshold: bool = True,
    rprelu: bool = True,
    attention: str | None = None,
) -> UnitSpec:
    """The BBCU unit, with each ingredient switchable (used by :mod:`binsr.models.ours` for ablations)."""
    return UnitSpec(
        input_binarizer=surrogate,
        weight_binarizer=weight_binarizer,
        learnable_threshold=learnable_threshold,
        act="rprelu" if rprelu else None,
        attention=attention,
    )


def _bbcu(name: str, *, scale: int, binary: bool, n_feats: int, n_blocks: int, k: float | None, m: bool):
    check_size(name, n_feats, n_blocks)
    return resnet_backbone(
        scale=scale,
        binary=binary,
        n_feats=n_feats,
        n_blocks=n_blocks,
        spec=bbcu_spec(),
        binary_upsampler=m,
        alignment=default_alignment(n_feats) if k is None else k,
    )


@sr_model("bbcu_l")
def bbcu_l(
    *, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16, k: float | None = None
) -> ResNetSR:
    """BBCU-L (Xia et al. 2023, Table 1): binary body, FP head / upsampler / tail.

    ``k`` is the residual-alignment factor (default ``130 · n_feats / 64``; 1 disables it).

    Example:
        >>> import torch
        >>> from binsr.models import create_model
        >>> create_model("bbcu_l", scale=4, n_feats=8, n_blocks=1)(torch.rand(1, 3, 5, 5)).shape
        torch.Size([1, 3, 20, 20])
    """
    return _bbcu("bbcu_l", scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks, k=k, m=False)


@sr_model("bbcu_m")
def bbcu_m(
    *, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16, k: float | None = None
) -> ResNetSR:
    """BBCU-M (Xia et al. 2023, Table 1): BBCU-L with a binary upsampler and binary ``conv_hr``.

    Example:
        >>> import torch
        >>> from binsr.models import create_model
        >>> create_model("bbcu_m", scale=2, n_feats=8, n_blocks=1)(torch.rand(1, 3, 5, 5)).shape
        torch.Size([1, 3, 10, 10])
    """
    return _bbcu("bbcu_m", scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks, k=k, m=True)

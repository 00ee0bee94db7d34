"""SRResNet as BBCU uses it: BasicSR's ``MSRResNet`` (Ledig et al., CVPR 2017, without BatchNorm).

This is the full-precision reference of BBCU (Xia et al., ICLR 2023), Table 1: 16 residual blocks ×
64 channels, ``conv → ReLU → conv (+ x)`` blocks with bias and no BN, LReLU(0.1) sub-pixel upsampler,
``conv_hr``, ``conv_last`` and a bilinear global skip. At a 320×180 LR input it has 1515 K / 1367 K
parameters (x4 / x2, weights only; 1518 K / 1370 K with biases) and 146.1 G / 85.43 G MACs.
"""

from __future__ import annotations

from binsr.models.common import ResNetSR, UnitSpec, check_size, resnet_backbone, sr_model

#: A plain full-precision conv with bias, ReLU inside the block, block skip (``ResidualBlockNoBN``).
PLAIN_UNIT = UnitSpec(
    input_binarizer="identity",
    weight_binarizer="identity",
    learnable_threshold=False,
    act=None,
    shortcut=False,
    bias=True,
    plain=True,
)


@sr_model("srresnet")
def srresnet(*, scale: int, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """SRResNet (MSRResNet, no BN): BBCU Table 1's full-precision row (1515 K params, 146.14 G OPs x4).

    Example:
        >>> import torch
        >>> from binsr.models import create_model
        >>> create_model("srresnet", scale=2, n_feats=8, n_blocks=1)(torch.rand(1, 3, 6, 6)).shape
        torch.Size([1, 3, 12, 12])
    """
    check_size("srresnet", n_feats, n_blocks)
    return resnet_backbone(
        scale=scale,
        binary=False,
        n_feats=n_feats,
        n_blocks=n_blocks,
        spec=PLAIN_UNIT,
        mid_act="relu",
        block_skip=True,
    )

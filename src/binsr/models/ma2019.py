"""Ma et al., "Efficient Super Resolution Using Binarized Neural Network" (CVPRW 2019).

Only the convolution *weights* of the residual blocks are binarized (``α ⊙ sign(W)`` with a learnable
per-filter scale α, :class:`binsr.binarize.Ma2019Weight`); activations stay full precision, so the
body still costs full-precision MACs while its parameters count at 1 bit. The residual block is
SRResNet's (Ledig et al. 2017): ``conv → BN → PReLU → conv → BN (+ x)``. The rest of the network is
BBCU-L's full-precision head / upsampler / tail (Ma et al. binarize SRResNet the same way, keeping
everything outside the residual blocks full precision). Anchor (as restated by reimplementations):
SRResNet x4 Set5 30.34 dB, Set14 27.16, Urban100 24.48.
"""

from __future__ import annotations

from binsr.models.common import ResNetSR, UnitSpec, check_size, resnet_backbone, sr_model


@sr_model("ma2019")
def ma2019(
    *, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16, bn: bool = True
) -> ResNetSR:
    """Ma et al. 2019: binary-weight residual blocks, full-precision activations (``bn`` toggles BN)."""
    check_size("ma2019", n_feats, n_blocks)
    spec = UnitSpec(
        input_binarizer="identity",
        weight_binarizer="ma2019",
        learnable_threshold=False,
        norm="bn" if bn else None,
        act=None,
        shortcut=False,
    )
    return resnet_backbone(
        scale=scale,
        binary=binary,
        n_feats=n_feats,
        n_blocks=n_blocks,
        spec=spec,
        mid_act="prelu",
        block_skip=True,
    )

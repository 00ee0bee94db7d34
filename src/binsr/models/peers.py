"""BBCU's peers: BNN, Bi-Real, IR-Net, ReActNet and BTM on BBCU-L's backbone.

BBCU (Xia et al., ICLR 2023), Table 1, compares these binarization methods on one backbone: the
SRResNet skeleton with 16 blocks × 2 binary 3×3 convs (64 channels) and a full-precision head,
upsampler and tail, hence the same 79.20 G OPs / 372 K params (x4) and 18.55 G / 225 K (x2) as
BBCU-L. Only the unit around each binary conv differs; BatchNorm, thresholds and PReLU/RPReLU slopes
are not counted in those numbers (see :mod:`binsr.complexity`).

Simplifications (honest list): BBCU does not publish its peer implementations, so each unit follows
the method's own paper; no method here uses BBCU's residual alignment (``k = 1``); BNN uses XNOR's
``mean|W|`` weight scale (Hubara et al. use plain ``sign(W)``); Bi-Real's magnitude-aware weight
gradient is replaced by the clipped STE of ``"xnor"``; ReActNet's distillation from an FP teacher
and two-step schedule, IR-Net's layer-wise tricks beyond EDE + Libra-PB, and BTM's multiple
receptive-field block and distillation are training/architecture extras not reproduced here.
"""

from __future__ import annotations

from binsr.models.common import (
    DIV2K_RGB_MEAN,
    ResNetSR,
    UnitSpec,
    check_size,
    resnet_backbone,
    sr_model,
)


def _peer(
    name: str, spec: UnitSpec, *, scale: int, binary: bool, n_feats: int, n_blocks: int, **kw
) -> ResNetSR:
    check_size(name, n_feats, n_blocks)
    return resnet_backbone(scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks, spec=spec, **kw)


@sr_model("bnn")
def bnn(*, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """BNN (Hubara et al., NeurIPS 2016) as in BBCU Table 1.

    Unit ``BN(BinConv(Sign(x)))`` with the clipped straight-through estimator (gradient
    ``1[|x| <= 1]``) and no per-conv shortcut; a block is two units plus a block-level skip (the
    EDSR/SRResNet residual block with its convs binarized).
    """
    spec = UnitSpec(
        input_binarizer="clipped_ste", learnable_threshold=False, norm="bn", act=None, shortcut=False
    )
    return _peer("bnn", spec, scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks, block_skip=True)


@sr_model("bireal")
def bireal(*, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """Bi-Real Net (Liu et al., ECCV 2018) as in BBCU Table 1.

    Unit ``BN(BinConv(ApproxSign(x))) + x``: a real-valued shortcut around every binary conv and the
    piecewise-quadratic ApproxSign gradient ``2 − 2|x|``.
    """
    spec = UnitSpec(input_binarizer="approx_sign", learnable_threshold=False, norm="bn", act=None)
    return _peer("bireal", spec, scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks)


@sr_model("irnet")
def irnet(*, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """IR-Net (Qin et al., CVPR 2020) as in BBCU Table 1.

    Bi-Real's unit ``BN(BinConv(Sign(x))) + x`` with IR-Net's two pieces: Libra-PB weights (balanced,
    standardised, power-of-two scale) and the EDE activation gradient, whose sharpness follows
    ``set_progress``.
    """
    spec = UnitSpec(
        input_binarizer="ede", weight_binarizer="libra_pb", learnable_threshold=False, norm="bn", act=None
    )
    return _peer("irnet", spec, scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks)


@sr_model("reactnet")
def reactnet(*, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """ReActNet (Liu et al., ECCV 2020) as in BBCU Table 1.

    Unit ``RPReLU(BN(BinConv(RSign(x))) + x)``: RSign's learnable per-channel threshold, ApproxSign
    gradient, XNOR weights, BatchNorm, and RPReLU after the shortcut addition.
    """
    spec = UnitSpec(input_binarizer="approx_sign", norm="bn", act="rprelu", act_after_add=True)
    return _peer("reactnet", spec, scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks)


@sr_model("btm")
def btm(*, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """BTM (Jiang et al., "Training Binary Neural Network without Batch Normalization for Image
    Super-Resolution", AAAI 2021) as in BBCU Table 1.

    BTM's binary training mechanism replaces BatchNorm: unit ``PReLU(BinConv(Sign(x + b))) + x``
    without BN, XNOR weight scales, ApproxSign gradient, a learnable threshold, Xavier-uniform
    initialisation of every conv, and input normalisation (the DIV2K mean is subtracted from the
    input and added back to the output; BTM also divides by the data set's standard deviation,
    omitted here because the paper gives no value).
    """
    spec = UnitSpec(input_binarizer="approx_sign", act="prelu")
    return _peer(
        "btm",
        spec,
        scale=scale,
        binary=binary,
        n_feats=n_feats,
        n_blocks=n_blocks,
        input_mean=DIV2K_RGB_MEAN,
        init="xavier",
    )

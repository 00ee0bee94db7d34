"""E2FIF (Song et al., "E2FIF: Push the Limit of Binarized Deep Imagery Super-resolution Using
End-to-end Full-precision Information Flow", arXiv 2022).

E2FIF's point is an end-to-end full-precision information flow: a real-valued shortcut over *every*
binary convolution, so features never pass through a 1-bit bottleneck. Following its released
EDSR variant, a residual block is ``out = BN(BinConv(x)) + x; out = LReLU(out);
out = BN(BinConv(out)) + out``, with the E2FIF activation gradient ``max(0, 2 − |2x|)`` and sign
weights with an identity (STE) gradient.

Simplifications: here the block sits on BBCU-L's backbone (FP head, LReLU sub-pixel upsampler,
``conv_hr``, tail and bilinear global skip) so it is comparable with BBCU Table 1; E2FIF's own EDSR
model uses a body-level skip and a single ``conv → 3s²`` + PixelShuffle tail instead. The weights use
XNOR's ``mean|W|`` scale with the clipped STE (``"xnor"``) rather than unscaled sign weights.
"""

from __future__ import annotations

from binsr.models.common import ResNetSR, UnitSpec, check_size, resnet_backbone, sr_model


@sr_model("e2fif")
def e2fif(*, scale: int, binary: bool = True, n_feats: int = 64, n_blocks: int = 16) -> ResNetSR:
    """E2FIF (Song et al. 2022) units on BBCU-L's backbone (same OPs/params as BBCU-L)."""
    check_size("e2fif", n_feats, n_blocks)
    spec = UnitSpec(input_binarizer="e2fif", learnable_threshold=False, norm="bn", act=None)
    return resnet_backbone(
        scale=scale, binary=binary, n_feats=n_feats, n_blocks=n_blocks, spec=spec, mid_act="lrelu"
    )

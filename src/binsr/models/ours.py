"""``ours``: BBCU-L's backbone with every ingredient switchable, for the ablation study.

Default recipe: BBCU units (``y = RPReLU(Attn(BinConv(Sign(x + b)))) + x``) with a learnable
threshold ``b``, a chosen activation surrogate, latent full-precision weights with *learnable*
per-filter scales (Ma et al. 2019's ``α ⊙ sign(W)``, ``weight_binarizer="ma2019"``) instead of
BBCU's detached ``mean|W|``, and a cheap full-precision attention after each binary conv (IR2Net's
information restriction by default). Residual alignment and the bilinear global skip are BBCU's.
Each piece is a keyword, so an ablation is one ``create_model("ours", ..., attention=None)`` away.
With the defaults' attention off and ``weight_binarizer="xnor"`` it is exactly BBCU-L.
"""

from __future__ import annotations

from binsr.models.bbcu import bbcu_spec
from binsr.models.common import (
    Binarizer,
    ResNetSR,
    check_size,
    default_alignment,
    resnet_backbone,
    sr_model,
)


@sr_model("ours")
def ours(
    *,
    scale: int,
    binary: bool = True,
    n_feats: int = 64,
    n_blocks: int = 16,
    surrogate: Binarizer = "approx_sign",
    learnable_threshold: bool = True,
    weight_binarizer: Binarizer = "ma2019",
    attention: str | None = "ir2net",
    rprelu: bool = True,
    residual_alignment: float | None = None,
    binary_upsampler: bool = False,
) -> ResNetSR:
    """Our binary SR model on BBCU-L's backbone; every ingredient is a keyword.

    Args:
        surrogate: activation binarizer (``"approx_sign"``, ``"swish_sign"``, ``"e2fif"``, ``"ede"``,
            ``"fda"``, ``"ste"``, ``"clipped_ste"``).
        learnable_threshold: RSign/BBCU's per-channel threshold ``b`` in ``Sign(x + b)``.
        weight_binarizer: ``"ma2019"`` (learnable scales), ``"xnor"`` (BBCU), ``"xnor_learnable"``,
            ``"libra_pb"``.
        attention: ``"ir2net"``, ``"channel"``, ``"spatial"`` or None, after each binary conv.
        rprelu: RPReLU after each binary conv (False: none).
        residual_alignment: BBCU's ``k`` (None: ``130 · n_feats / 64``; 1 disables it).
        binary_upsampler: binarize the upsampler and ``conv_hr`` as BBCU-M does.

    Example:
        >>> import torch
        >>> from binsr.models import create_model
        >>> net = create_model("ours", scale=2, n_feats=8, n_blocks=1, attention="channel")
        >>> net(torch.rand(1, 3, 6, 6)).shape
        torch.Size([1, 3, 12, 12])
    """
    check_size("ours", n_feats, n_blocks)
    spec = bbcu_spec(
        surrogate=surrogate,
        weight_binarizer=weight_binarizer,
        learnable_threshold=learnable_threshold,
        rprelu=rprelu,
        attention=attention,
    )
    k = default_alignment(n_feats) if residual_alignment is None else residual_alignment
    return resnet_backbone(
        scale=scale,
        binary=binary,
        n_feats=n_feats,
        n_blocks=n_blocks,
        spec=spec,
        binary_upsampler=binary_upsampler,
        alignment=k,
    )

"""What the sign binarizers of a trained model see: statistics of every binary convolution's input.

A :class:`binsr.layers.BinaryConv2d` binarizes ``t = x + b`` (``x`` its input, ``b`` the learnable
per-channel threshold, or ``t = x`` without one). Over every element of ``t`` on a set of LR images,
per binary-input convolution:

- ``mean_abs = mean |t|``: the scale of what is binarized (the sign keeps none of it);
- ``outside_unit = share of |t| > 1``: where the clipped surrogates (clipped STE, ApproxSign / E2FIF,
  FDA) pass no gradient, while the plain STE (BinaryConnect, Courbariaux et al. 2015) still passes
  ``grad_out`` unchanged, so nothing in its backward pass bounds ``|t|``;
- ``positive = share of t >= 0``: the share binarized to ``+1`` (``sign(0) = +1``); far from 1/2 the
  bits carry little information.

A threshold ``b`` can move the sign only where ``|b|`` is comparable to ``|t|``: when ``mean_abs`` is far
above the thresholds' scale, the learnable threshold (ReActNet's RSign, Liu et al. 2020) does nothing.

Beside them, the magnitude the binary weights carry: per output filter ``o``, ``mean |W_b[o]|`` of the
weight the convolution uses (``α_o`` for ``α ⊙ sign(W)``: learned by Ma et al. 2019, ``mean|W_o|`` for
XNOR, a power of two of the standardised filter for IR-Net's Libra-PB), reported as its smallest and
largest value over the filters (``weight_scale_min`` / ``weight_scale_max``).
``binsr activations`` prints these statistics (see :mod:`binsr.cli.activations`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from binsr.errors import BinsrError
from binsr.layers import BinaryConv2d


@dataclass(frozen=True)
class BinarizerInputStats:
    """Statistics of one binary convolution's binarizer input ``t = x + b`` (see the module doc)."""

    layer: str
    elements: int
    mean_abs: float
    outside_unit: float
    positive: float
    threshold_mean_abs: float | None
    weight_scale_min: float | None
    weight_scale_max: float | None


class _Accumulator:
    """Running sums of ``|t|``, ``1[|t| > 1]`` and ``1[t >= 0]`` over every element seen."""

    def __init__(self) -> None:
        self.elements = 0
        self.abs_sum = 0.0
        self.outside = 0
        self.positive = 0

    def add(self, t: Tensor) -> None:
        t = t.detach().double()
        magnitude = t.abs()
        self.elements += t.numel()
        self.abs_sum += magnitude.sum().item()
        self.outside += int((magnitude > 1).sum().item())
        self.positive += int((t >= 0).sum().item())


@torch.no_grad()
def binarizer_input_stats(model: nn.Module, inputs: Iterable[Tensor]) -> list[BinarizerInputStats]:
    """Run ``model`` (in eval mode) on every batch of ``inputs`` and gather, for each
    :class:`BinaryConv2d` with a binary input, the statistics of ``t = x + b`` over all their elements.

    Each input runs whole (no tiling, so no pixel is counted twice). Raises :class:`BinsrError` when
    the model has no convolution with a binary input, or ``inputs`` is empty.
    """
    convs = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, BinaryConv2d) and module.binary_input
    }
    if not convs:
        raise BinsrError(
            "the model has no convolution with a binarized input (a full-precision twin, or a packed .binsr "
            "model: pass its .safetensors checkpoint)"
        )
    sums = {name: _Accumulator() for name in convs}
    hooks = [
        module.register_forward_pre_hook(lambda mod, args, acc=sums[name]: acc.add(mod.threshold(args[0])))
        for name, module in convs.items()
    ]
    was_training = model.training
    model.eval()
    try:
        for batch in inputs:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not next(iter(sums.values())).elements:
        raise BinsrError("no input images to gather binarizer statistics on")
    return [_stats(name, conv, sums[name]) for name, conv in convs.items()]


def _stats(name: str, conv: BinaryConv2d, acc: _Accumulator) -> BinarizerInputStats:
    bias = getattr(conv.threshold, "bias", None)
    scales = conv.effective_weight().detach().abs().flatten(1).mean(1) if conv.binary_weight else None
    return BinarizerInputStats(
        layer=name,
        elements=acc.elements,
        mean_abs=acc.abs_sum / acc.elements,
        outside_unit=acc.outside / acc.elements,
        positive=acc.positive / acc.elements,
        threshold_mean_abs=None if bias is None else bias.detach().abs().mean().item(),
        weight_scale_min=None if scales is None else scales.min().item(),
        weight_scale_max=None if scales is None else scales.max().item(),
    )

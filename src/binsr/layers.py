"""Layers for binary super-resolution networks: ``BinaryConv2d``, ``RPReLU`` and attention modules.

The binarizers themselves live in :mod:`binsr.binarize`; this module combines them with convolutions.
Attention modules are full precision and built only from ``nn.Conv2d`` (plus parameter-free pooling,
means and gates), so a MAC-counting hook over ``nn.Conv2d`` / ``nn.Linear`` counts them.
``BinaryConv2d`` is an ``nn.Conv2d`` subclass too: such a hook sees it, and reads its
``input_precision`` / ``weight_precision`` to count its MACs as binary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from binsr.binarize import LearnableThreshold, Registry, get_activation_binarizer, get_weight_binarizer


class BinaryConv2d(nn.Conv2d):
    """A drop-in ``nn.Conv2d`` whose input and weight pass through binarizers.

    Forward::

        a = input_binarizer(threshold(x))          # threshold: x + b_c, only if learnable_threshold
        w = weight_binarizer(self.weight)          # e.g. α_o · sign(W_o)
        y = conv2d(pad(a, value=input_binarizer.pad_value), w, bias, stride)

    Backward: the binarizers' surrogate gradients (see :mod:`binsr.binarize`) composed with the
    ordinary convolution gradient; ``self.weight`` is the latent full-precision weight the optimizer
    updates (``nn.Conv2d`` initialisation).

    **Padding convention** (a bit-packed XNOR-popcount kernel must reproduce it exactly): the border
    is padded *after* binarization with the binarizer's image of zero, ``input_binarizer.pad_value``.
    For every sign binarizer that is ``+1`` (``sign(0) = +1``): in the packed form, where bit 1 means
    −1, padding is all-zero bits, so a packed kernel pads with zero words and computes every output,
    border included, as ``dot = K − 2·popcount(a XOR w)`` with ``K = C_in·k_h·k_w`` — no correction
    term and no count of valid taps. For the identity binarizer the pad value is 0, so the
    ``binary=False`` twin (both binarizers ``"identity"``, no threshold) is an ordinary zero-padded
    ``nn.Conv2d``. The learnable threshold acts on the real input only and never on the padding.

    Args:
        in_channels, out_channels, kernel_size, stride: as for ``nn.Conv2d`` (dilation and groups 1).
        padding: pixels of padding on each side; ``None`` means ``kernel_size // 2`` ("same" for
            odd kernels at stride 1).
        bias: add a learnable full-precision bias per output channel.
        input_binarizer: a registered activation binarizer name or instance.
        weight_binarizer: a registered weight binarizer name or an instance for ``out_channels``.
        learnable_threshold: shift the input by a learnable per-channel ``b`` before binarizing.

    Shapes: input ``[N, C_in, H, W]``, output ``[N, C_out, H', W']`` as for ``nn.Conv2d``.

    Example::

        >>> conv = BinaryConv2d(64, 64, 3)
        >>> conv(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        bias: bool = False,
        *,
        input_binarizer: str | nn.Module = "approx_sign",
        weight_binarizer: str | nn.Module = "xnor",
        learnable_threshold: bool = True,
    ) -> None:
        kernel = _pair(kernel_size)
        if padding is None:
            padding = (kernel[0] // 2, kernel[1] // 2)
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias)
        self.threshold: nn.Module = LearnableThreshold(in_channels) if learnable_threshold else nn.Identity()
        self.input_binarizer = get_activation_binarizer(input_binarizer)
        self.weight_binarizer = get_weight_binarizer(weight_binarizer, out_channels)

    @property
    def input_precision(self) -> int:
        """Bits per input activation as the convolution sees it (1 when binarized)."""
        return self.input_binarizer.precision

    @property
    def weight_precision(self) -> int:
        """Bits per effective weight (1 when binarized)."""
        return self.weight_binarizer.precision

    @property
    def binary_input(self) -> bool:
        """The input is binarized (1 bit)."""
        return self.input_precision == 1

    @property
    def binary_weight(self) -> bool:
        """The weights are binarized (1 bit)."""
        return self.weight_precision == 1

    @property
    def binary(self) -> bool:
        """Both input and weights are binary: the layer runs as XNOR-popcount."""
        return self.binary_input and self.binary_weight

    def effective_weight(self) -> Tensor:
        """The weight the convolution uses (``α ⊙ sign(W)`` for a binary weight binarizer)."""
        return self.weight_binarizer(self.weight)

    def set_progress(self, progress: float) -> None:
        """Forward the training progress in ``[0, 1]`` to the input binarizer (idempotent)."""
        self.input_binarizer.set_progress(progress)

    def forward(self, x: Tensor) -> Tensor:
        a = self.input_binarizer(self.threshold(x))
        pad_h, pad_w = self.padding
        if pad_h or pad_w:
            a = F.pad(a, (pad_w, pad_w, pad_h, pad_h), value=self.input_binarizer.pad_value)
        return F.conv2d(a, self.effective_weight(), self.bias, self.stride)


@torch.no_grad()
def settle_weight_scales(model: nn.Module) -> None:
    """Compute every binary conv's weight scale once, now, from its current latent weights.

    A learnable scale (``α_o = mean|W_o|``, Ma et al. 2019) is set on the first forward call; a
    trainer calls this after loading initial weights and before copying the model (EMA), so the copy
    starts with the scales of the loaded weights rather than the placeholder ones.
    """
    for module in model.modules():
        if isinstance(module, BinaryConv2d):
            module.effective_weight()


class RPReLU(nn.Module):
    """ReActNet's RPReLU (Liu et al. 2020), used by BBCU: ``y = PReLU(x − γ_c; β_c) + ζ_c``.

    Forward: ``y = (x − γ) + ζ`` where ``x > γ``, else ``β·(x − γ) + ζ``, per channel ``c``.
    Backward: ``∂y/∂x = 1`` or ``β``; ``∂y/∂γ = −∂y/∂x``; ``∂y/∂ζ = 1``;
    ``∂y/∂β = min(x − γ, 0)``. Initialised as a plain PReLU: ``β = 0.25``, ``γ = ζ = 0``.
    Input ``[N, C, ...]``.
    """

    def __init__(self, channels: int, init_slope: float = 0.25) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.zeta = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), init_slope))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return F.prelu(x - self.gamma.view(shape), self.slope) + self.zeta.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.gamma.numel()}"


# ----------------------------------------------------------------------------------------------
# Attention modules
# ----------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Base of the pluggable attention modules: ``forward(x, identity=None) -> same shape as x``.

    ``x`` is the features to attend (typically a block's branch output); ``identity`` is the block's
    input, used by modules that fuse the two (``"ir2net"``) and ignored by the others, so a block
    can always call ``attn(y, identity=x)``. All convolutions are full-precision ``nn.Conv2d``.
    """


_ATTENTION = Registry[Attention]("attention")


def register_attention(name: str) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator registering an :class:`Attention` subclass, built as ``cls(channels, **kw)``."""
    return _ATTENTION.register(name)


def list_attention() -> list[str]:
    """Sorted names accepted by :func:`create_attention` (``"none"`` included)."""
    return _ATTENTION.names()


def create_attention(name: str | None, channels: int, **kwargs: object) -> nn.Module:
    """The attention module registered as ``name`` for ``channels`` features (``None`` = ``"none"``).

    Raises :class:`BinsrError` for an unknown name.
    """
    return _ATTENTION.lookup("none" if name is None else name)(channels, **kwargs)


@register_attention("none")
class NoAttention(nn.Identity, Attention):
    """No attention: returns ``x`` unchanged (an ``nn.Identity`` that also accepts ``identity``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        return x


@register_attention("channel")
class ChannelAttention(Attention):
    """Squeeze-and-excitation channel attention as in RCAN (Zhang et al. 2018).

    ``y = x ⊙ σ(W₂ ReLU(W₁ avgpool(x) + b₁) + b₂)`` with 1×1 convolutions ``C → h → C``,
    ``h = max(C // reduction, min_hidden)``. Cost: ``2·C·h`` MACs per image.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))


@register_attention("spatial")
class SpatialAttention(Attention):
    """CBAM spatial attention (Woo et al. 2018): ``y = x ⊙ σ(conv_k×k([mean_c x, max_c x]))``.

    One ``2 → 1`` convolution without bias; cost ``2·k²`` MACs per pixel.
    """

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        stats = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(stats))


@register_attention("ir2net")
class IR2NetAttention(Attention):
    """Information restriction and recovery, after IR2Net (Xue et al. 2022), adapted to pixel-level SR.

    IR2Net erases the parts of the *network input* on which an activation-based attention map
    ``Σ_c |F_c|^p`` of the features is low (restriction: give a binary network only what it can
    learn), and fuses shallow, information-rich features into the final ones with a cheap
    attention/ghost module (recovery). Super-resolution must reconstruct every pixel, so nothing may
    be erased for good; per block we therefore *soft-erase* and *refill*:

    - restriction: ``a = mean_c|x| / mean_{h,w}(mean_c|x|)`` (the attention map, normalised per image
      so it ignores the feature scale), ``m = σ(conv_{k×k, 1→1}(a))``, ``r = x ⊙ m`` — positions with
      low relative activation energy are damped, differentiably;
    - recovery: ``y = r + (1 − m) ⊙ ghost(s)`` with ``s = identity`` (the block input) if given,
      else ``x``, and ``ghost`` a depthwise ``k×k`` convolution (GhostNet's cheap operation). The
      positions the restriction damped are refilled from full-precision shallower features; the
      gate reuses ``m`` and costs no parameters.

    Initialisation keeps the block close to the plain one: the restriction conv has zero weights and
    bias 2 (``m ≈ 0.88`` everywhere) and the ghost conv zero weights. Cost per pixel:
    ``k²`` MACs (restriction) + ``C·k²`` MACs (ghost); ``(C + 1)·k² + 1`` parameters.

    Backward: ordinary autograd (all operations are smooth).
    """

    def __init__(self, channels: int, kernel_size: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.restrict = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2)
        self.ghost = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False
        )
        nn.init.zeros_(self.restrict.weight)
        nn.init.constant_(self.restrict.bias, 2.0)
        nn.init.zeros_(self.ghost.weight)

    def restriction_map(self, x: Tensor) -> Tensor:
        """The keep-map ``m ∈ (0, 1)``, shape ``[N, 1, H, W]``."""
        energy = x.abs().mean(1, keepdim=True)
        energy = energy / (energy.mean((2, 3), keepdim=True) + self.eps)
        return torch.sigmoid(self.restrict(energy))

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        keep = self.restriction_map(x)
        source = x if identity is None else identity
        return x * keep + (1 - keep) * self.ghost(source)

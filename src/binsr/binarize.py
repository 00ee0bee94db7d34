"""Binarizers: activation surrogates, learnable thresholds and weight binarizers, registered by name.

Nothing here knows about convolutions; :mod:`binsr.layers` combines these pieces into ``BinaryConv2d``.

**Activation binarizers.** Each surrogate is a plain function whose forward is the sign function
with ``sign(0) = +1`` (exactly ``+1`` / ``-1`` in the input's dtype) and whose backward is
``grad_in = grad_out · g(x)`` for a surrogate derivative ``g``; each also has a small
:class:`ActivationBinarizer` class registered under a string name, so a layer can take
``input_binarizer="approx_sign"`` or an instance. A binarizer states its ``precision`` (1 for
binary, 32 for ``"identity"``) and its ``pad_value``, the image of zero (``+1`` for every sign,
``0`` for the identity), which fixes how binary convolutions pad (see :class:`binsr.layers.BinaryConv2d`).
``set_progress(p)`` receives the training progress ``p ∈ [0, 1]``; only schedule-dependent
binarizers (``"ede"``, ``"fda"``) use it.

**Weight binarizers.** Modules built by :func:`get_weight_binarizer` with ``forward(weight)`` mapping
the latent full-precision weight ``[out, ...]`` to the effective weight of the same shape. Every
binary one (``precision == 1``) also has ``scale_and_sign(weight) -> (alpha[out], sign)`` with
``effective == alpha.view(-1, 1, ..., 1) * sign`` bit for bit, for exporters that pack the signs.

Example::

    >>> import torch
    >>> act = get_activation_binarizer("approx_sign")
    >>> act(torch.tensor([-0.5, 0.0, 2.0]))
    tensor([-1.,  1.,  1.])
    >>> wb = get_weight_binarizer("xnor", out_channels=2)
    >>> alpha, s = wb.scale_and_sign(torch.tensor([[0.5, -1.5], [2.0, 2.0]]))
    >>> alpha, s
    (tensor([1., 2.]), tensor([[ 1., -1.],
            [ 1.,  1.]]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn
from torch.autograd import Function

from binsr.errors import BinsrError

SurrogateGrad = Callable[[Tensor], Tensor]
M = TypeVar("M", bound=nn.Module)


# ----------------------------------------------------------------------------------------------
# Registries
# ----------------------------------------------------------------------------------------------


class Registry(Generic[M]):
    """A name → class table: ``register(name)`` decorates a class, ``lookup(name)`` raises a one-line
    :class:`BinsrError` listing the known names when ``name`` is unknown."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.classes: dict[str, type[M]] = {}

    def register(self, name: str) -> Callable[[type[M]], type[M]]:
        def decorate(cls: type[M]) -> type[M]:
            if name in self.classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self.classes)

    def lookup(self, name: str) -> type[M]:
        if name not in self.classes:
            raise BinsrError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self.classes[name]


# ----------------------------------------------------------------------------------------------
# Sign with a surrogate gradient
# ----------------------------------------------------------------------------------------------


def sign(x: Tensor) -> Tensor:
    """``+1`` where ``x >= 0`` and ``-1`` elsewhere, in ``x``'s dtype (so ``sign(0) = +1``); no gradient."""
    return (x >= 0).to(x.dtype) * 2 - 1


class _SurrogateSign(Function):
    """Forward ``sign(x)``; backward ``grad_out · surrogate(x)`` for a derivative given as a callable."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: SurrogateGrad) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return sign(x)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate(x), None


def _within(x: Tensor, limit: float) -> Tensor:
    """The indicator ``1[|x| <= limit]`` in ``x``'s dtype."""
    return (x.abs() <= limit).to(x.dtype)


def _ste_grad(x: Tensor) -> Tensor:
    return torch.ones_like(x)


def _clipped_ste_grad(x: Tensor, clip_value: float) -> Tensor:
    return _within(x, clip_value)


def _approx_sign_grad(x: Tensor) -> Tensor:
    return (2 - 2 * x.abs()).clamp_min(0)


def _swish_sign_grad(x: Tensor, beta: float) -> Tensor:
    bx = beta * x
    return beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))


def _ede_grad(x: Tensor, t: float, k: float) -> Tensor:
    return k * t * (1 - torch.tanh(t * x) ** 2)


def _fda_grad(x: Tensor, omega: float, n: int) -> Tensor:
    series = sum(torch.cos((2 * i + 1) * omega * x) for i in range(n + 1))
    return 4 * omega / math.pi * series * _within(x, 1.0)


def ste_sign(x: Tensor) -> Tensor:
    """Sign with the plain straight-through estimator (BinaryConnect, Courbariaux et al. 2015).

    Forward: ``sign(x)`` (``sign(0) = +1``). Backward: ``grad_in = grad_out``.
    """
    return _SurrogateSign.apply(x, _ste_grad)


def clipped_ste_sign(x: Tensor, clip_value: float = 1.0) -> Tensor:
    """Sign with the clipped straight-through estimator (BNN, Hubara et al. 2016).

    Forward: ``sign(x)``. Backward: ``grad_in = grad_out · 1[|x| <= clip_value]``.
    """
    return _SurrogateSign.apply(x, partial(_clipped_ste_grad, clip_value=clip_value))


def approx_sign(x: Tensor) -> Tensor:
    """Sign with the piecewise-polynomial ApproxSign gradient (Bi-Real Net, Liu et al. 2018).

    Forward: ``sign(x)``. Backward: ``grad_in = grad_out · max(0, 2 − 2|x|)``, i.e. ``2 − 2|x|`` for
    ``|x| <= 1`` and 0 outside. E2FIF (Song et al. 2023) writes the same derivative as ``max(0, 2 − |2x|)``.
    """
    return _SurrogateSign.apply(x, _approx_sign_grad)


def swish_sign(x: Tensor, beta: float = 5.0) -> Tensor:
    """Sign with the SwishSign gradient (BNN+, Darabi et al. 2018).

    Forward: ``sign(x)``. Backward: ``grad_in = grad_out · β(2 − βx·tanh(βx/2)) / (1 + cosh(βx))``.
    """
    return _SurrogateSign.apply(x, partial(_swish_sign_grad, beta=beta))


def ede_sign(x: Tensor, t: float, k: float) -> Tensor:
    """Sign with the Error Decay Estimator (IR-Net, Qin et al. 2020) at a fixed ``t`` and ``k``.

    Forward: ``sign(x)``. Backward: ``grad_in = grad_out · k·t·(1 − tanh²(t·x))``, the derivative of
    ``k·tanh(t·x)``. :class:`EDESign` schedules ``t`` and ``k`` over training.
    """
    return _SurrogateSign.apply(x, partial(_ede_grad, t=t, k=k))


def fda_sign(x: Tensor, omega: float = 0.1, n: int = 9) -> Tensor:
    """Sign with the Fourier-series gradient of FDA-BNN (Xu et al. 2021, NeurIPS).

    The square wave ``(4/π)·Σ_i sin((2i+1)ωx)/(2i+1)`` truncated after ``n + 1`` terms is
    differentiated term by term. Forward: ``sign(x)``. Backward:
    ``grad_in = grad_out · (4ω/π)·Σ_{i=0..n} cos((2i+1)ωx)`` for ``|x| <= 1``, 0 outside.
    """
    return _SurrogateSign.apply(x, partial(_fda_grad, omega=omega, n=n))


# ----------------------------------------------------------------------------------------------
# Activation binarizer classes
# ----------------------------------------------------------------------------------------------

_ACTIVATION = Registry["ActivationBinarizer"]("activation binarizer")


def register_activation_binarizer(
    name: str,
) -> Callable[[type[ActivationBinarizer]], type[ActivationBinarizer]]:
    """Class decorator registering an :class:`ActivationBinarizer` subclass under ``name``."""
    return _ACTIVATION.register(name)


def list_activation_binarizers() -> list[str]:
    """Sorted names of the registered activation binarizers."""
    return _ACTIVATION.names()


def get_activation_binarizer(spec: str | nn.Module, **kwargs: Any) -> ActivationBinarizer:
    """An activation binarizer from a registered name (with constructor ``kwargs``) or an instance.

    Raises :class:`BinsrError` for an unknown name; an instance is returned as is and must be an
    :class:`ActivationBinarizer` (it states ``precision``, ``pad_value`` and ``set_progress``).
    """
    if isinstance(spec, str):
        return _ACTIVATION.lookup(spec)(**kwargs)
    if not isinstance(spec, ActivationBinarizer) or kwargs:
        raise TypeError("pass a registered name with kwargs, or an ActivationBinarizer instance alone")
    return spec


class ActivationBinarizer(nn.Module):
    """Base class: a binarizer of activations (elementwise, shape-preserving).

    Attributes:
        precision: bits per value of the output (1 for a sign, 32 for the identity).
        pad_value: the binarizer's image of zero, the value a binary convolution pads its binarized
            input with (``+1`` for every sign since ``sign(0) = +1``; ``0`` for the identity).
    """

    precision: int = 1
    pad_value: float = 1.0

    def set_progress(self, progress: float) -> None:
        """Receive the training progress in ``[0, 1]``; a no-op unless the surrogate has a schedule."""
        _check_progress(progress)


def _check_progress(progress: float) -> None:
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress must lie in [0, 1], got {progress}")


@register_activation_binarizer("identity")
class IdentityBinarizer(ActivationBinarizer):
    """No binarization: forward ``x``, backward ``grad_out``; full precision (32 bits), pads with 0."""

    precision = 32
    pad_value = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return x


@register_activation_binarizer("ste")
class STESign(ActivationBinarizer):
    """:func:`ste_sign` as a module: forward ``sign(x)``, backward ``grad_out``."""

    def forward(self, x: Tensor) -> Tensor:
        return ste_sign(x)


@register_activation_binarizer("clipped_ste")
class ClippedSTESign(ActivationBinarizer):
    """:func:`clipped_ste_sign` as a module: forward ``sign(x)``, backward ``grad_out·1[|x| <= clip]``."""

    def __init__(self, clip_value: float = 1.0) -> None:
        super().__init__()
        self.clip_value = clip_value

    def forward(self, x: Tensor) -> Tensor:
        return clipped_ste_sign(x, self.clip_value)

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value}"


@register_activation_binarizer("approx_sign")
class ApproxSign(ActivationBinarizer):
    """:func:`approx_sign` as a module (Bi-Real Net): backward ``grad_out · max(0, 2 − 2|x|)``."""

    def forward(self, x: Tensor) -> Tensor:
        return approx_sign(x)


@register_activation_binarizer("e2fif")
class E2FIFSign(ApproxSign):
    """The E2FIF surrogate (Song et al. 2023, binary SR): backward ``grad_out · max(0, 2 − |2x|)``.

    This is the same derivative as Bi-Real's ApproxSign, so the class only gives it E2FIF's name.
    """


@register_activation_binarizer("swish_sign")
class SwishSign(ActivationBinarizer):
    """:func:`swish_sign` as a module (BNN+): backward ``grad_out · β(2 − βx·tanh(βx/2))/(1 + cosh(βx))``."""

    def __init__(self, beta: float = 5.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        return swish_sign(x, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


@register_activation_binarizer("ede")
class EDESign(ActivationBinarizer):
    """IR-Net's Error Decay Estimator (Qin et al. 2020) with its schedule over training progress ``p``.

    Forward ``sign(x)``; backward ``grad_out · k·t·(1 − tanh²(t·x))`` with
    ``t = 10^(log10 t_min + (log10 t_max − log10 t_min)·p)`` and ``k = max(1/t, 1)``. Early on
    (small ``t``, ``k·t = 1``) the gradient is close to the identity STE; at the end (``t = 10``) it
    is a sharp bump around 0. The defaults follow this project's anchors (``t_min = 1e-3``); the
    IR-Net code starts at ``t_min = 0.1``.
    """

    def __init__(self, t_min: float = 1e-3, t_max: float = 10.0) -> None:
        super().__init__()
        self.t_min = t_min
        self.t_max = t_max
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        _check_progress(progress)
        log_min, log_max = math.log10(self.t_min), math.log10(self.t_max)
        self.t = 10 ** (log_min + (log_max - log_min) * progress)
        self.k = max(1 / self.t, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return ede_sign(x, self.t, self.k)

    def extra_repr(self) -> str:
        return f"t_min={self.t_min}, t_max={self.t_max}, t={self.t:.4g}, k={self.k:.4g}"


@register_activation_binarizer("fda")
class FDASign(ActivationBinarizer):
    """FDA-BNN's Fourier-series surrogate (Xu et al. 2021) with its schedule of the number of terms.

    Forward ``sign(x)``; backward ``grad_out · (4ω/π)·Σ_{i=0..n} cos((2i+1)ωx)`` for ``|x| <= 1``,
    0 outside, with ``n = n_start + floor((n_end − n_start)·p)`` at training progress ``p``. The
    defaults (``ω = 0.1``, ``n`` from 9 to 18) are those of the authors' code; there the gradient is a
    smooth bump (≈1.27 at 0, ≈0.58 at ±1 for ``n = 9``). ``ω = π/2`` makes the series the square wave
    of period 4, i.e. exactly ``sign`` on ``(−2, 2)``, but its derivative is a spike of height ``2(n+1)``.
    """

    def __init__(self, omega: float = 0.1, n_start: int = 9, n_end: int = 18) -> None:
        super().__init__()
        self.omega = omega
        self.n_start = n_start
        self.n_end = n_end
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        _check_progress(progress)
        self.n = self.n_start + math.floor((self.n_end - self.n_start) * progress)

    def forward(self, x: Tensor) -> Tensor:
        return fda_sign(x, self.omega, self.n)

    def extra_repr(self) -> str:
        return f"omega={self.omega}, n={self.n} (from {self.n_start} to {self.n_end})"


class LearnableThreshold(nn.Module):
    """A learnable per-channel shift applied before the sign: forward ``x + b_c``, backward identity.

    RSign of ReActNet (Liu et al. 2020) writes ``sign(x − α_c)``; BBCU (Xia et al. 2023) writes
    ``Sign(x + b)``; ``b`` starts at 0. Input ``[N, C, ...]``; gradient ``∂/∂b_c = Σ grad_out`` over
    all but the channel dimension.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"channels={self.bias.numel()}"


# ----------------------------------------------------------------------------------------------
# Weight binarizers
# ----------------------------------------------------------------------------------------------


def _per_channel(alpha: Tensor, like: Tensor) -> Tensor:
    """``alpha[out]`` viewed to broadcast against a weight ``[out, ...]``."""
    return alpha.view(-1, *([1] * (like.dim() - 1)))


class _ScaledSign(Function):
    """Forward ``alpha[o] · sign(latent[o, ...])``.

    Backward: ``∂/∂latent = grad_out · 1[|latent| <= clip]`` (plain STE ``grad_out`` when ``clip`` is
    None; the scale is deliberately not applied, as in BBCU's clamp trick) and
    ``∂/∂alpha[o] = Σ sign(latent[o, ...]) · grad_out[o, ...]``.
    """

    @staticmethod
    def forward(ctx: Any, latent: Tensor, alpha: Tensor, clip: float | None) -> Tensor:
        s = sign(latent)
        ctx.save_for_backward(latent, s)
        ctx.clip = clip
        return _per_channel(alpha, s) * s

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        latent, s = ctx.saved_tensors
        grad_latent = grad_alpha = None
        if ctx.needs_input_grad[0]:
            grad_latent = grad_out if ctx.clip is None else grad_out * _within(latent, ctx.clip)
        if ctx.needs_input_grad[1]:
            grad_alpha = (grad_out * s).flatten(1).sum(1)
        return grad_latent, grad_alpha, None


_WEIGHT = Registry["WeightBinarizer"]("weight binarizer")


def register_weight_binarizer(name: str) -> Callable[[type[WeightBinarizer]], type[WeightBinarizer]]:
    """Class decorator registering a :class:`WeightBinarizer` subclass under ``name``."""
    return _WEIGHT.register(name)


def list_weight_binarizers() -> list[str]:
    """Sorted names of the registered weight binarizers."""
    return _WEIGHT.names()


def get_weight_binarizer(spec: str | nn.Module, out_channels: int, **kwargs: Any) -> WeightBinarizer:
    """A weight binarizer for a weight ``[out_channels, ...]`` from a registered name or an instance.

    Raises :class:`BinsrError` for an unknown name; an instance is returned as is and must be a
    :class:`WeightBinarizer` built for ``out_channels``.
    """
    if isinstance(spec, str):
        return _WEIGHT.lookup(spec)(out_channels, **kwargs)
    if not isinstance(spec, WeightBinarizer) or kwargs or spec.out_channels != out_channels:
        raise TypeError(
            f"pass a registered name with kwargs, or a WeightBinarizer for {out_channels} outputs"
        )
    return spec


class WeightBinarizer(nn.Module):
    """Base class: maps a latent full-precision weight ``[out_channels, ...]`` to the effective weight.

    Attributes:
        precision: bits per effective weight value (1 for binary, 32 for the identity).
        out_channels: the size of the weight's first dimension.
    """

    precision: int = 1

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


@register_weight_binarizer("identity")
class IdentityWeight(WeightBinarizer):
    """No binarization: the effective weight is the latent weight (32 bits)."""

    precision = 32

    def forward(self, weight: Tensor) -> Tensor:
        return weight


class ScaledSignWeight(WeightBinarizer):
    """Base of the binary weight binarizers: effective ``W_b = α ⊙ sign(latent(W))``, one α per output.

    Subclasses define :meth:`latent` (what the sign is taken of) and :meth:`scale` (α). Gradients
    reach ``W`` through ``latent`` by the straight-through estimator, restricted to
    ``|latent| <= clip`` when ``clip`` is set (the same as BBCU's forward through
    ``clamp(W, −clip, clip)``); they reach α as ``Σ sign · grad_out`` when α is learnable.
    """

    def __init__(self, out_channels: int, clip: float | None = None) -> None:
        super().__init__(out_channels)
        self.clip = clip

    def latent(self, weight: Tensor) -> Tensor:
        """The tensor whose sign is taken (the weight itself unless a subclass reshapes it)."""
        return weight

    def scale(self, weight: Tensor) -> Tensor:
        """The per-output-channel scale α ``[out_channels]``."""
        raise NotImplementedError

    def forward(self, weight: Tensor) -> Tensor:
        return _ScaledSign.apply(self.latent(weight), self.scale(weight), self.clip)

    @torch.no_grad()
    def scale_and_sign(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha[out], sign)`` with ``sign ∈ {+1, −1}`` of the weight's shape, such that
        ``alpha.view(-1, 1, ..., 1) * sign`` equals :meth:`forward`'s output exactly."""
        return self.scale(weight).detach().clone(), sign(self.latent(weight))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, clip={self.clip}"


@register_weight_binarizer("xnor")
class XNORWeight(ScaledSignWeight):
    """XNOR-Net / BBCU weights: ``W_b = α ⊙ sign(W)``, ``α_o = mean|W_o|`` (detached).

    Rastegari et al. 2016; BBCU (Xia et al. 2023) backward: ``∂/∂W = grad_out · 1[|W| <= 1]``, the
    gradient of ``clamp(W, −1, 1)``; α passes no gradient.
    """

    def __init__(self, out_channels: int, clip: float | None = 1.0) -> None:
        super().__init__(out_channels, clip)

    def scale(self, weight: Tensor) -> Tensor:
        return weight.detach().abs().flatten(1).mean(1)


@register_weight_binarizer("xnor_learnable")
class LearnableScaleWeight(ScaledSignWeight):
    """``W_b = α ⊙ sign(W)`` with α a learnable per-output-channel parameter.

    α is initialised to ``mean|W_o|``: from ``weight`` if given at construction, otherwise on the
    first forward call (a buffer records that, so a loaded checkpoint is not re-initialised). The
    buffer is read once, on the first call after construction or loading, and a Python flag answers
    afterwards: reading a CUDA tensor's value in every forward would stall the GPU queue each time.
    Backward: ``∂/∂W = grad_out · 1[|W| <= clip]`` (STE; ``clip = None`` for no restriction) and
    ``∂/∂α_o = Σ sign(W_o) · grad_out_o``.
    """

    def __init__(self, out_channels: int, clip: float | None = 1.0, weight: Tensor | None = None) -> None:
        super().__init__(out_channels, clip)
        self.alpha = nn.Parameter(torch.ones(out_channels))
        self.register_buffer("alpha_initialized", torch.zeros((), dtype=torch.bool))
        self._alpha_checked = False  # alpha_initialized has been read since construction / loading
        if weight is not None:
            self.init_alpha(weight)

    @torch.no_grad()
    def init_alpha(self, weight: Tensor) -> None:
        """Set ``α_o = mean|W_o|``."""
        self.alpha.copy_(weight.abs().flatten(1).mean(1))
        self.alpha_initialized.fill_(True)
        self._alpha_checked = True

    def scale(self, weight: Tensor) -> Tensor:
        if not self._alpha_checked:
            if not self.alpha_initialized:
                self.init_alpha(weight)
            self._alpha_checked = True
        return self.alpha

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._alpha_checked = False  # the loaded buffer decides again at the next forward


@register_weight_binarizer("ma2019")
class Ma2019Weight(LearnableScaleWeight):
    """Ma et al. 2019 (Efficient Super Resolution Using Binarized Neural Network, CVPRW).

    Binary weights ``W_b = α ⊙ sign(W)`` with a learnable per-filter scale α (initialised to
    ``mean|W_o|``) over full-precision latent weights. Backward: the plain STE of BinaryConnect,
    ``∂/∂W = grad_out`` (``clip = None`` by default; pass ``clip=1.0`` for the clipped form), and
    ``∂/∂α_o = Σ sign(W_o) · grad_out_o``.
    """

    def __init__(self, out_channels: int, clip: float | None = None, weight: Tensor | None = None) -> None:
        super().__init__(out_channels, clip, weight)


@register_weight_binarizer("libra_pb")
class LibraPBWeight(ScaledSignWeight):
    """IR-Net's Libra Parameter Binarization (Qin et al. 2020).

    Per filter, ``Ŵ = (W − mean W) / std W`` (balanced and standardised, maximising the entropy of
    the signs), ``W_b = sign(Ŵ) · 2^round(log2 mean|Ŵ|)``; the power-of-two scale is detached and
    becomes a bit shift at inference. Backward: STE through the sign (``∂/∂Ŵ = grad_out``, or
    ``· 1[|Ŵ| <= clip]``), then ordinary autograd through the standardisation to ``W``.
    """

    def latent(self, weight: Tensor) -> Tensor:
        flat = weight.flatten(1)
        centred = flat - flat.mean(1, keepdim=True)
        return (centred / centred.std(1, keepdim=True)).view_as(weight)

    def scale(self, weight: Tensor) -> Tensor:
        mean_abs = self.latent(weight.detach()).abs().flatten(1).mean(1)
        return torch.exp2(torch.round(torch.log2(mean_abs)))

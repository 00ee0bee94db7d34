"""Building blocks shared by every model family: one place for units, blocks, upsamplers and skips.

The binary SR literature reuses one skeleton, BasicSR's ``MSRResNet`` (SRResNet without BatchNorm):

```
x ─► ×k ─► conv_first ─► LReLU ─► body (blocks) ─► upsampler ─► conv_hr ─► LReLU ─► conv_last ─► + ─► ÷k
      └───────────────────────────── bilinear ×s (global skip) ──────────────────────────────────┘
```

Methods differ in (a) the *unit* around each 3×3 body convolution (binarizers, threshold, norm,
activation, shortcut), (b) how two units form a *block*, and (c) which of head / upsampler / ``conv_hr``
are binary. :class:`UnitSpec`, :class:`ResBlock`, :class:`Upsampler` and :class:`ResNetSR` express those
three choices, so every model file is a short entry function.

Every model is an :class:`SRModel`: it stores ``scale`` and ``config`` (``{"name", "scale", "kwargs"}``,
enough for :func:`binsr.models.create_model` to rebuild it from a checkpoint) and forwards
``set_progress(p)`` to every :class:`~binsr.layers.BinaryConv2d`. Entry functions are registered with
:func:`sr_model`, which wraps :func:`~binsr.models.registry.register_model` and records ``config``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from binsr.errors import BinsrError
from binsr.layers import Attention, BinaryConv2d, RPReLU, create_attention
from binsr.models.registry import register_model

Binarizer = str | nn.Module

#: DIV2K training-set RGB mean in [0, 1] (EDSR's ``MeanShift`` constants).
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)

#: BBCU's residual-alignment factor for 64 channels (``k: 130.`` in its option files).
BBCU_ALIGNMENT_64 = 130.0


def default_alignment(n_feats: int) -> float:
    """BBCU's residual-alignment factor scaled with the width: ``130 · n_feats / 64``."""
    return BBCU_ALIGNMENT_64 * n_feats / 64


# --------------------------------------------------------------------------------------------- models


class SRModel(nn.Module):
    """Base of every binsr model: ``scale``, ``config`` and :meth:`set_progress`.

    ``config`` is filled in by the :func:`sr_model` decorator after construction.
    """

    scale: int
    config: dict[str, Any]

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.config = {}

    def binary_convs(self) -> list[BinaryConv2d]:
        """Every :class:`~binsr.layers.BinaryConv2d` of the model, in module order."""
        return [m for m in self.modules() if isinstance(m, BinaryConv2d)]

    def set_progress(self, progress: float) -> None:
        """Tell every binary convolution how far training is (0 → 1), e.g. for IR-Net's EDE schedule."""
        set_progress(self, progress)


def set_progress(model: nn.Module, progress: float) -> None:
    """Forward ``progress`` ∈ [0, 1] to every :class:`~binsr.layers.BinaryConv2d` inside ``model``."""
    for module in model.modules():
        if isinstance(module, BinaryConv2d):
            module.set_progress(progress)


def sr_model(name: str) -> Callable[[Callable[..., SRModel]], Callable[..., SRModel]]:
    """Register an entry function ``f(*, scale, **kwargs)`` under ``name`` and record its config.

    The wrapper binds the call to the entry function's signature (so defaults are filled in and an
    unknown keyword is a :class:`BinsrError`), builds the model and sets
    ``model.config = {"name": name, "scale": scale, "kwargs": {...every other argument...}}``.
    """

    def decorate(factory: Callable[..., SRModel]) -> Callable[..., SRModel]:
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def build(*, scale: int, **kwargs: Any) -> SRModel:
            try:
                bound = signature.bind(scale=scale, **kwargs)
            except TypeError as error:
                known = ", ".join(p for p in signature.parameters if p != "scale")
                raise BinsrError(f"model {name!r}: {error}; its options are: {known}") from None
            bound.apply_defaults()
            model = factory(**bound.arguments)
            model.scale = scale
            model.config = {
                "name": name,
                "scale": scale,
                "kwargs": {k: v for k, v in bound.arguments.items() if k != "scale"},
            }
            return model

        register_model(name)(build)
        return build

    return decorate


def check_size(name: str, n_feats: int, n_blocks: int) -> None:
    """Reject widths and depths no model can be built with."""
    if n_feats < 1 or n_blocks < 0:
        raise BinsrError(
            f"model {name!r}: n_feats must be >= 1 and n_blocks >= 0 (got {n_feats}, {n_blocks})"
        )


# ---------------------------------------------------------------------------------------- small parts


def make_activation(name: str | None, channels: int) -> nn.Module:
    """An activation by name: ``"rprelu"``, ``"prelu"``, ``"relu"``, ``"lrelu"`` (slope 0.1) or None."""
    if name is None:
        return nn.Identity()
    if name == "rprelu":
        return RPReLU(channels)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=False)
    raise BinsrError(f"unknown activation {name!r}; use rprelu, prelu, relu, lrelu or None")


def make_norm(name: str | None, channels: int) -> nn.Module:
    """A normalisation by name: ``"bn"`` (BatchNorm2d) or None (identity)."""
    if name is None:
        return nn.Identity()
    if name == "bn":
        return nn.BatchNorm2d(channels)
    raise BinsrError(f"unknown norm {name!r}; use 'bn' or None")


class MeanShift(nn.Module):
    """Add ``sign · mean`` per RGB channel (EDSR's fixed ``MeanShift``, here a buffer, not a 1×1 conv)."""

    mean: torch.Tensor

    def __init__(self, mean: Sequence[float] = DIV2K_RGB_MEAN, sign: int = -1) -> None:
        super().__init__()
        self.register_buffer("mean", sign * torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mean


def bilinear_skip(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The global skip of SRResNet/BBCU: ``x`` bilinearly upsampled by ``scale`` (no antialias)."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def upsample_factors(scale: int) -> list[int]:
    """Pixel-shuffle stages: x2 → [2], x3 → [3], x4 → [2, 2] (SRResNet/EDSR convention)."""
    if scale == 4:
        return [2, 2]
    if scale in (2, 3):
        return [scale]
    raise BinsrError(f"unsupported scale {scale!r}; use 2, 3 or 4")


def init_convs_(model: nn.Module, method: str = "kaiming0.1") -> None:
    """Initialise the convolutions of ``model`` outside attention modules (those keep their own init).

    ``"kaiming0.1"`` (BasicSR's ``default_init_weights(..., 0.1)``): Kaiming-normal weights × 0.1 and
    zero bias for every plain ``nn.Conv2d``; binary convolutions keep ``nn.Conv2d``'s default.
    ``"xavier"`` (BTM): Xavier-uniform weights and zero bias for every convolution, binary ones too.
    """
    if method not in ("kaiming0.1", "xavier"):
        raise BinsrError(f"unknown init {method!r}; use 'kaiming0.1' or 'xavier'")
    skip = {id(m) for a in model.modules() if isinstance(a, Attention) for m in a.modules()}
    for module in model.modules():
        if id(module) in skip or not isinstance(module, nn.Conv2d):
            continue
        if method == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif type(module) is nn.Conv2d:
            nn.init.kaiming_normal_(module.weight)
            with torch.no_grad():
                module.weight.mul_(0.1)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# -------------------------------------------------------------------------------------- binary units


@dataclass(frozen=True)
class UnitSpec:
    """How one 3×3 body convolution is wrapped.

    ``y = post(norm(conv(x)) → attention → act [→ + x])`` — precisely::

        z = attention(norm(conv(x)), identity=x)   # identity only with a shortcut
        y = act(z) + x        if shortcut and not act_after_add   (BBCU, BTM)
        y = act(z + x)        if shortcut and act_after_add       (ReActNet)
        y = act(z)            if not shortcut                     (BNN, Ma et al., SRResNet)

    ``conv`` is a :class:`~binsr.layers.BinaryConv2d` whose ``learnable_threshold`` is the per-channel
    ``b`` in ``Sign(x + b)`` (ReActNet's RSign / BBCU's shift); ``plain=True`` makes it an ``nn.Conv2d``
    (full-precision reference models). :meth:`full_precision` gives the ``binary=False`` twin: same
    modules, both binarizers ``"identity"``.
    """

    input_binarizer: Binarizer = "approx_sign"
    weight_binarizer: Binarizer = "xnor"
    learnable_threshold: bool = True
    norm: str | None = None
    act: str | None = "rprelu"
    act_after_add: bool = False
    shortcut: bool = True
    attention: str | None = None
    bias: bool = False
    plain: bool = False

    def full_precision(self) -> UnitSpec:
        """The same unit with both binarizers replaced by ``"identity"``."""
        return dataclasses.replace(self, input_binarizer="identity", weight_binarizer="identity")

    def select(self, binary: bool) -> UnitSpec:
        """``self`` if ``binary`` else :meth:`full_precision`."""
        return self if binary else self.full_precision()

    def conv(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
        """The unit's convolution (zero-padded, ``padding = kernel_size // 2``)."""
        if self.plain:
            return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=self.bias)
        return BinaryConv2d(
            in_channels,
            out_channels,
            kernel_size,
            bias=self.bias,
            input_binarizer=self.input_binarizer,
            weight_binarizer=self.weight_binarizer,
            learnable_threshold=self.learnable_threshold,
        )


class Unit(nn.Module):
    """One convolution with its norm, attention, activation and optional shortcut (see :class:`UnitSpec`)."""

    def __init__(self, channels: int, spec: UnitSpec, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        if spec.shortcut and out_channels != channels:
            raise ValueError("a unit with a shortcut needs out_channels == channels")
        self.conv = spec.conv(channels, out_channels)
        self.norm = make_norm(spec.norm, out_channels)
        self.attention = create_attention(spec.attention, out_channels)
        self.act = make_activation(spec.act, out_channels)
        self.shortcut = spec.shortcut
        self.act_after_add = spec.act_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(self.conv(x))
        z = self.attention(z, identity=x) if self.shortcut else self.attention(z)
        if not self.shortcut:
            return self.act(z)
        if self.act_after_add:
            return self.act(z + x)
        return self.act(z) + x


class ResBlock(nn.Module):
    """Two units, an optional activation between them and an optional block-level skip.

    ``y = unit2(mid_act(unit1(x))) (+ x if block_skip)``. With plain units, ``mid_act="relu"`` and
    ``block_skip=True`` it is EDSR/BasicSR's ``ResidualBlockNoBN``; BBCU's ``BinaryBlock`` is two BBCU
    units with no block skip (each unit has its own).
    """

    def __init__(
        self, channels: int, spec: UnitSpec, *, mid_act: str | None = None, block_skip: bool = False
    ) -> None:
        super().__init__()
        self.unit1 = Unit(channels, spec)
        self.mid_act = make_activation(mid_act, channels)
        self.unit2 = Unit(channels, spec)
        self.block_skip = block_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unit2(self.mid_act(self.unit1(x)))
        return y + x if self.block_skip else y


def make_body(n_feats: int, n_blocks: int, spec: UnitSpec, **block_kwargs: Any) -> nn.Sequential:
    """``n_blocks`` :class:`ResBlock` s of width ``n_feats``."""
    return nn.Sequential(*(ResBlock(n_feats, spec, **block_kwargs) for _ in range(n_blocks)))


# ----------------------------------------------------------------------------------------- upsamplers


class FPUpStage(nn.Sequential):
    """Full-precision sub-pixel stage: conv ``C → f²C`` (with bias), PixelShuffle(f), optional activation."""

    def __init__(self, channels: int, factor: int, act: str | None = "lrelu") -> None:
        super().__init__(
            nn.Conv2d(channels, channels * factor * factor, 3, padding=1),
            nn.PixelShuffle(factor),
            make_activation(act, channels),
        )


class BinaryUpStage(nn.Module):
    """BBCU-M's binary sub-pixel stage (``BinaryUpConv2d``).

    ``y = PixelShuffle_f(RPReLU(BinConv_{C→f²C}(Sign(x + b)))) + nearest_f(x)``: the residual is the
    input repeated by nearest-neighbour upsampling, so the binary path only learns a correction.
    """

    def __init__(self, channels: int, factor: int, spec: UnitSpec) -> None:
        super().__init__()
        self.factor = factor
        self.unit = Unit(channels, dataclasses.replace(spec, shortcut=False), channels * factor * factor)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.unit(x)) + F.interpolate(x, scale_factor=self.factor, mode="nearest")


class Upsampler(nn.Sequential):
    """One stage per factor of :func:`upsample_factors`; ``make_stage(channels, factor)`` builds a stage."""

    def __init__(self, channels: int, scale: int, make_stage: Callable[[int, int], nn.Module]) -> None:
        super().__init__(*(make_stage(channels, f) for f in upsample_factors(scale)))


# ------------------------------------------------------------------------------------------ backbone


class ResNetSR(SRModel):
    """The MSRResNet/BBCU skeleton with a pluggable body, upsampler and ``conv_hr``.

    Forward: optional input mean shift, multiply by the residual-alignment factor ``k``,
    ``LReLU(conv_first)``, body, upsampler, ``conv_last(LReLU(conv_hr(·)))``, add the bilinear upsampled
    (scaled) input, divide by ``k``, undo the mean shift. ``conv_first`` and ``conv_last`` are always
    full-precision ``nn.Conv2d`` with bias (every method in BBCU's Table 1 keeps them FP).

    Args:
        scale: upscaling factor (2, 3 or 4).
        n_feats: feature width ``C``.
        body: the residual body (``C → C`` at LR resolution).
        up_stage: ``make_stage(C, f)`` for the :class:`Upsampler`.
        conv_hr: the ``C → C`` layer at HR resolution before ``conv_last``.
        alignment: BBCU's residual-alignment factor ``k`` (1 disables it).
        input_mean: RGB mean subtracted from the input and added back to the output (None: none).
    """

    def __init__(
        self,
        *,
        scale: int,
        n_feats: int,
        body: nn.Module,
        up_stage: Callable[[int, int], nn.Module],
        conv_hr: nn.Module,
        alignment: float = 1.0,
        input_mean: Sequence[float] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__(scale)
        self.alignment = float(alignment)
        self.sub_mean = MeanShift(input_mean, -1) if input_mean is not None else nn.Identity()
        self.add_mean = MeanShift(input_mean, +1) if input_mean is not None else nn.Identity()
        self.conv_first = nn.Conv2d(in_channels, n_feats, 3, padding=1)
        self.body = body
        self.upsampler = Upsampler(n_feats, scale, up_stage)
        self.conv_hr = conv_hr
        self.conv_last = nn.Conv2d(n_feats, in_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x) * self.alignment
        out = self.upsampler(self.body(self.lrelu(self.conv_first(x))))
        out = self.conv_last(self.lrelu(self.conv_hr(out))) + bilinear_skip(x, self.scale)
        return self.add_mean(out / self.alignment)


def resnet_backbone(
    *,
    scale: int,
    binary: bool,
    n_feats: int,
    n_blocks: int,
    spec: UnitSpec,
    mid_act: str | None = None,
    block_skip: bool = False,
    binary_upsampler: bool = False,
    alignment: float = 1.0,
    input_mean: Sequence[float] | None = None,
    init: str = "kaiming0.1",
) -> ResNetSR:
    """A :class:`ResNetSR` whose body is ``n_blocks`` × two ``spec`` units.

    ``binary_upsampler=False`` is BBCU-L's layout (FP upsampler stages with LReLU and FP ``conv_hr``);
    ``True`` is BBCU-M's (binary :class:`BinaryUpStage` s and a binary ``conv_hr`` unit). ``binary=False``
    swaps every binarizer for ``"identity"`` and keeps every module.
    """
    spec = spec.select(binary)
    if binary_upsampler:

        def up_stage(channels: int, factor: int) -> nn.Module:
            return BinaryUpStage(channels, factor, spec)

        conv_hr: nn.Module = Unit(n_feats, spec)
    else:
        up_stage = FPUpStage
        conv_hr = nn.Conv2d(n_feats, n_feats, 3, padding=1)
    model = ResNetSR(
        scale=scale,
        n_feats=n_feats,
        body=make_body(n_feats, n_blocks, spec, mid_act=mid_act, block_skip=block_skip),
        up_stage=up_stage,
        conv_hr=conv_hr,
        alignment=alignment,
        input_mean=input_mean,
    )
    init_convs_(model, init)
    return model

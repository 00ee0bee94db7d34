"""Packed binary convolution with a fused epilogue.

For packed activations ``a`` (±1, spatial padding +1) and packed weights ``s = sign(W)`` the kernel computes,
per output channel ``c``::

    y = alpha[c] · (K − 2·popcount(a XOR s)) + bias[c]          # = alpha[c] · Σ a·s + bias[c]
    y = PReLU(y − gamma[c]; slope[c]) + zeta[c]                  # optional RPReLU
    y = y + residual                                             # optional residual add
    bits = sign(y + out_threshold[c])                            # optional re-binarization (packed)

with ``K = C_in·KH·KW`` over all taps. Float tensors are NCHW float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from binsr.engine._backend import kernels, resolve_isa, resolve_threads
from binsr.engine.packing import PackedActivations, PackedWeights, words_for
from binsr.errors import BinsrError

Pair = int | tuple[int, int]
RPReLUParams = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _pair(value: Pair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise BinsrError(f"{name} must be an int or a pair of ints, got {value!r}")


def output_size(
    height: int, width: int, kernel_size: tuple[int, int], stride: Pair = 1, padding: Pair | None = None
) -> tuple[int, int]:
    """(OH, OW) of a convolution, with torch's formula; ``padding=None`` means ``k // 2`` ("same")."""
    kh, kw = kernel_size
    sh, sw = _pair(stride, "stride")
    ph, pw = (kh // 2, kw // 2) if padding is None else _pair(padding, "padding")
    return ((height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1)


def _channel_vector(value: torch.Tensor | float, channels: int, name: str) -> torch.Tensor:
    """A contiguous float32 ``[channels]`` CPU tensor (scalars and 1-element tensors broadcast)."""
    t = torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise BinsrError(f"{name} has {t.numel()} entries for {channels} output channels")
    return t.contiguous()


def _run_conv(
    x: PackedActivations | torch.Tensor,
    threshold: torch.Tensor | None,
    packed_w: PackedWeights,
    alpha: torch.Tensor | float,
    bias: torch.Tensor | None,
    stride: Pair,
    padding: Pair | None,
    rprelu: RPReLUParams | None,
    residual: torch.Tensor | None,
    out_threshold: torch.Tensor | None,
    want_float: bool,
    threads: int | None,
    isa: str | None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, PackedActivations | None]:
    if isinstance(x, PackedActivations):
        if threshold is not None:
            raise BinsrError(
                "threshold applies to float input only; packed activations are binarized already"
            )
        n, c, h, w = x.shape
        x_bits, x_float, x_thr = x.bits.contiguous(), None, None
        if x_bits.dtype != torch.int64 or x_bits.shape[-1] != words_for(c):
            raise BinsrError("packed activations must be int64 words [N, H, W, ceil(C / 64)]")
    else:
        if x.dim() != 4:
            raise BinsrError(f"float input must be [N, C, H, W], got shape {tuple(x.shape)}")
        n, c, h, w = (int(v) for v in x.shape)
        x_bits = None
        x_float = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
        x_thr = None if threshold is None else _channel_vector(threshold, c, "threshold")
    if c != packed_w.in_channels:
        raise BinsrError(f"activations have {c} channels but the weights expect {packed_w.in_channels}")
    if packed_w.bits.dtype != torch.int64 or packed_w.bits.shape[-1] != words_for(c):
        raise BinsrError("packed weights must be int64 words [OC, KH, KW, ceil(C_in / 64)]")
    oc = packed_w.out_channels
    kh, kw = packed_w.kernel_size
    sh, sw = _pair(stride, "stride")
    ph, pw = (kh // 2, kw // 2) if padding is None else _pair(padding, "padding")
    oh, ow = output_size(h, w, (kh, kw), (sh, sw), (ph, pw))
    if oh < 1 or ow < 1:
        raise BinsrError(f"input {h}x{w} is too small for a {kh}x{kw} kernel with padding {(ph, pw)}")

    w_bits = packed_w.bits.contiguous()
    alpha_v = _channel_vector(alpha, oc, "alpha")
    bias_v = None if bias is None else _channel_vector(bias, oc, "bias")
    gamma = slope = zeta = None
    if rprelu is not None:
        gamma = _channel_vector(rprelu[0], oc, "rprelu gamma")
        slope = _channel_vector(rprelu[1], oc, "rprelu slope")
        zeta = _channel_vector(rprelu[2], oc, "rprelu zeta")
    res = None
    if residual is not None:
        if tuple(residual.shape) != (n, oc, oh, ow):
            raise BinsrError(f"residual has shape {tuple(residual.shape)}, expected {(n, oc, oh, ow)}")
        res = residual.detach().to(device="cpu", dtype=torch.float32).contiguous()
    thr = None if out_threshold is None else _channel_vector(out_threshold, oc, "out_threshold")

    if out is not None:
        if tuple(out.shape) != (n, oc, oh, ow) or out.dtype != torch.float32 or not out.is_contiguous():
            raise BinsrError(f"out must be a contiguous float32 tensor of shape {(n, oc, oh, ow)}")
        if out.device.type != "cpu":
            raise BinsrError("out must be a CPU tensor")
    elif want_float:
        out = torch.empty((n, oc, oh, ow), dtype=torch.float32)
    out_bits = torch.empty((n, oh, ow, words_for(oc)), dtype=torch.int64) if thr is not None else None

    def buf(t: torch.Tensor | None) -> object:
        return None if t is None else t.numpy()

    kernels().conv2d(
        buf(x_bits),
        w_bits.numpy(),
        alpha_v.numpy(),
        buf(bias_v),
        buf(gamma),
        buf(slope),
        buf(zeta),
        buf(res),
        buf(out),
        buf(thr),
        buf(out_bits),
        (n, h, w, c, oc, kh, kw, sh, sw, ph, pw),
        resolve_threads(threads),
        resolve_isa(isa),
        xf=buf(x_float),
        x_threshold=buf(x_thr),
    )
    packed_out = None if out_bits is None else PackedActivations(bits=out_bits, channels=oc)
    return out, packed_out


def binary_conv2d(
    x: PackedActivations | torch.Tensor,
    packed_w: PackedWeights,
    alpha: torch.Tensor | float,
    bias: torch.Tensor | None = None,
    *,
    threshold: torch.Tensor | None = None,
    stride: Pair = 1,
    padding: Pair | None = None,
    rprelu: RPReLUParams | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    threads: int | None = None,
    isa: str | None = None,
) -> torch.Tensor:
    """Binary convolution of packed activations with packed weights → float32 NCHW.

    Args:
        x: packed activations from :func:`~binsr.engine.pack_activations`, or a float ``[N, C, H, W]``
            tensor that the kernel binarizes as ``sign(x + threshold)`` and packs on the fly (fused, one
            pass; each input row is packed once, by whichever thread needs it first).
        packed_w: from :func:`~binsr.engine.pack_weights` (``sign(W)``).
        alpha: per-output-channel scale ``[OC]`` (or a scalar).
        bias: optional ``[OC]``.
        threshold: the per-channel ``b`` ``[C]`` of a float ``x`` (None means 0).
        stride: int or (sh, sw).
        padding: int or (ph, pw); None means ``k // 2``. Padded pixels are +1 (the binarizer's image of 0).
        rprelu: optional ``(gamma, slope, zeta)``, each ``[OC]`` or scalar: ``PReLU(y − gamma) + zeta``.
        residual: optional float ``[N, OC, OH, OW]`` added after RPReLU.
        out: optional preallocated contiguous float32 ``[N, OC, OH, OW]`` to write into (and return);
            reusing buffers avoids page-faulting a fresh allocation on every call.
        threads: worker threads (default ``torch.get_num_threads()``).
        isa: force ``avx512`` | ``avx2`` | ``generic`` (default ``$BINSR_ENGINE_ISA`` or the best one).

    Returns:
        float32 ``[N, OC, OH, OW]``.

    Example:
        >>> x = torch.randn(1, 64, 18, 32)
        >>> w = torch.randn(64, 64, 3, 3)
        >>> y = binary_conv2d(pack_activations(x), pack_weights(w), w.abs().mean((1, 2, 3)))
        >>> y_fused = binary_conv2d(x, pack_weights(w), w.abs().mean((1, 2, 3)))  # packing fused
        >>> tuple(y.shape)
        (1, 64, 18, 32)
    """
    result, _ = _run_conv(
        x, threshold, packed_w, alpha, bias, stride, padding, rprelu, residual, None, True, threads, isa, out
    )
    assert result is not None
    return result


def binary_conv2d_packed(
    x: PackedActivations | torch.Tensor,
    packed_w: PackedWeights,
    alpha: torch.Tensor | float,
    bias: torch.Tensor | None = None,
    *,
    out_threshold: torch.Tensor | float,
    threshold: torch.Tensor | None = None,
    return_float: bool = False,
    stride: Pair = 1,
    padding: Pair | None = None,
    rprelu: RPReLUParams | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    threads: int | None = None,
    isa: str | None = None,
) -> tuple[torch.Tensor | None, PackedActivations]:
    """:func:`binary_conv2d` with the next layer's binarization fused: packed ``sign(y + out_threshold)``.

    Returns ``(y, packed)`` where ``y`` is the float32 output when ``return_float`` (a BBCU block needs it
    as the next residual), else None; ``packed`` equals ``pack_activations(y, out_threshold)``. ``out``, a
    preallocated float32 output as for :func:`binary_conv2d`, implies ``return_float``.
    """
    out, packed = _run_conv(
        x,
        threshold,
        packed_w,
        alpha,
        bias,
        stride,
        padding,
        rprelu,
        residual,
        torch.as_tensor(out_threshold),
        return_float or out is not None,
        threads,
        isa,
        out,
    )
    assert packed is not None
    return out, packed

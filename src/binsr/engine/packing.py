"""Bit packing: activations and weights as uint64 words along channels (bit 1 = −1, bit 0 = +1).

Layouts (see ``kernels.h``): activations are NHWC words ``[N, H, W, CW]`` with ``CW = ceil(C / 64)``,
weights are ``[OC, KH, KW, CW]``; channel ``c`` is bit ``c % 64`` of word ``c // 64``, and the pad bits of
the last word are 0 in both, so they never count. Words are stored in ``torch.int64`` tensors (the bit
pattern is what matters; torch has few uint64 operations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from binsr.engine._backend import kernels, resolve_isa, resolve_threads
from binsr.errors import BinsrError

WORD_BITS = 64


def words_for(channels: int) -> int:
    """Number of 64-bit words holding ``channels`` bits."""
    return (channels + WORD_BITS - 1) // WORD_BITS


@dataclass(frozen=True)
class PackedActivations:
    """Binarized activations: ``bits`` is int64 ``[N, H, W, CW]``; ``channels`` is the real C."""

    bits: torch.Tensor
    channels: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The (N, C, H, W) shape of the float tensor these bits stand for."""
        n, h, w, _ = self.bits.shape
        return (n, self.channels, h, w)


@dataclass(frozen=True)
class PackedWeights:
    """Binary weights sign(W): ``bits`` is int64 ``[OC, KH, KW, CW]``; ``in_channels`` is the real C_in."""

    bits: torch.Tensor
    in_channels: int

    @property
    def out_channels(self) -> int:
        """Number of output channels."""
        return int(self.bits.shape[0])

    @property
    def kernel_size(self) -> tuple[int, int]:
        """(KH, KW)."""
        return (int(self.bits.shape[1]), int(self.bits.shape[2]))


def _pack_last_dim(negative: np.ndarray) -> np.ndarray:
    """Pack a boolean array along its last axis into little-endian uint64 words (pad bits 0)."""
    channels = negative.shape[-1]
    pad = words_for(channels) * WORD_BITS - channels
    if pad:
        negative = np.concatenate([negative, np.zeros((*negative.shape[:-1], pad), dtype=bool)], axis=-1)
    packed = np.packbits(np.ascontiguousarray(negative), axis=-1, bitorder="little")
    return packed.view("<u8").astype(np.uint64, copy=False)


def _unpack_last_dim(words: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`_pack_last_dim`: uint64 words → boolean array with ``channels`` entries."""
    as_bytes = np.ascontiguousarray(words).astype("<u8", copy=False).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :channels].astype(bool)


def pack_weights(sign: torch.Tensor) -> PackedWeights:
    """Pack binary weights ``[OC, C_in, KH, KW]``: bit 1 where ``sign < 0`` (so sign(0) = +1).

    Example:
        >>> w = pack_weights(torch.randn(64, 64, 3, 3).sign())
        >>> tuple(w.bits.shape), w.in_channels
        ((64, 3, 3, 1), 64)
    """
    if sign.dim() != 4:
        raise BinsrError(f"pack_weights expects [OC, C_in, KH, KW], got shape {tuple(sign.shape)}")
    negative = (sign.detach().cpu() < 0).permute(0, 2, 3, 1).numpy()
    words = _pack_last_dim(negative)
    return PackedWeights(bits=torch.from_numpy(words.view(np.int64).copy()), in_channels=int(sign.shape[1]))


def pack_activations(
    x: torch.Tensor,
    threshold: torch.Tensor | None = None,
    *,
    threads: int | None = None,
    isa: str | None = None,
) -> PackedActivations:
    """Binarize and pack float activations: bit 1 where ``x + threshold < 0`` (sign(0) = +1).

    Args:
        x: float32 ``[N, C, H, W]`` (other float dtypes are converted).
        threshold: per-channel ``b`` of shape ``[C]`` (``sign(x + b)``); None means 0.
        threads: worker threads (default: ``torch.get_num_threads()``).
        isa: force an ISA path (``avx512``, ``avx2``, ``generic``); default ``$BINSR_ENGINE_ISA`` or best.

    Returns:
        :class:`PackedActivations` with int64 words ``[N, H, W, ceil(C / 64)]``.
    """
    if x.dim() != 4:
        raise BinsrError(f"pack_activations expects [N, C, H, W], got shape {tuple(x.shape)}")
    n, c, h, w = (int(s) for s in x.shape)
    x32 = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    thr = None
    if threshold is not None:
        thr = threshold.detach().to(device="cpu", dtype=torch.float32).reshape(-1).contiguous()
        if thr.numel() != c:
            raise BinsrError(f"threshold has {thr.numel()} entries for {c} channels")
    out = torch.empty((n, h, w, words_for(c)), dtype=torch.int64)
    kernels().pack_nchw(
        x32.numpy(),
        None if thr is None else thr.numpy(),
        out.numpy(),
        n,
        c,
        h,
        w,
        resolve_threads(threads),
        resolve_isa(isa),
    )
    return PackedActivations(bits=out, channels=c)


def reference_pack_activations(x: torch.Tensor, threshold: torch.Tensor | None = None) -> PackedActivations:
    """Slow reference of :func:`pack_activations` (torch + numpy, no C)."""
    shifted = x.detach().cpu().float()
    if threshold is not None:
        shifted = shifted + threshold.detach().cpu().float().reshape(1, -1, 1, 1)
    negative = (shifted < 0).permute(0, 2, 3, 1).numpy()
    words = _pack_last_dim(negative)
    return PackedActivations(bits=torch.from_numpy(words.view(np.int64).copy()), channels=int(x.shape[1]))


def unpack_activations(packed: PackedActivations) -> torch.Tensor:
    """The ±1 float32 ``[N, C, H, W]`` tensor that ``packed`` encodes."""
    negative = _unpack_last_dim(packed.bits.numpy().view(np.uint64), packed.channels)
    signs = 1.0 - 2.0 * negative.astype(np.float32)
    return torch.from_numpy(signs).permute(0, 3, 1, 2).contiguous()


def unpack_weights(packed: PackedWeights) -> torch.Tensor:
    """The ±1 float32 ``[OC, C_in, KH, KW]`` tensor that ``packed`` encodes."""
    negative = _unpack_last_dim(packed.bits.numpy().view(np.uint64), packed.in_channels)
    signs = 1.0 - 2.0 * negative.astype(np.float32)
    return torch.from_numpy(signs).permute(0, 3, 1, 2).contiguous()

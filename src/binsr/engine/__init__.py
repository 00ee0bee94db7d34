"""The packed XNOR-popcount CPU engine.

Binary activations and weights are packed 64 channels to a uint64 word (bit 1 = −1); a binary
convolution is ``α · (K − 2·popcount(a XOR w))`` computed by the compiled extension
:mod:`binsr.engine._kernels` (AVX-512 VPOPCNTQ, AVX2 or portable C, chosen at run time; see
:func:`available_isas`). Whole models are exported to the ``.binsr`` format (:func:`export_model`,
``binsr export``) and run by :class:`PackedModel`. The kernels and the runtime read packed tensors and
the format only, never the training classes (only :mod:`binsr.engine.graph`, the exporter's tracer, does).

Example:
    >>> import torch
    >>> from binsr.engine import binary_conv2d, pack_activations, pack_weights
    >>> x, w = torch.randn(1, 64, 45, 80), torch.randn(64, 64, 3, 3)
    >>> y = binary_conv2d(pack_activations(x), pack_weights(w), alpha=w.abs().mean((1, 2, 3)))
"""

from binsr.engine._backend import ISA_ENV_VAR, available_isas
from binsr.engine.conv import binary_conv2d, binary_conv2d_packed, output_size
from binsr.engine.export import export_model, read_packed
from binsr.engine.packing import (
    PackedActivations,
    PackedWeights,
    pack_activations,
    pack_weights,
    reference_pack_activations,
    unpack_activations,
    unpack_weights,
)
from binsr.engine.reference import reference_binary_conv2d
from binsr.engine.runtime import PackedModel

__all__ = [
    "ISA_ENV_VAR",
    "PackedActivations",
    "PackedModel",
    "PackedWeights",
    "available_isas",
    "binary_conv2d",
    "binary_conv2d_packed",
    "export_model",
    "output_size",
    "pack_activations",
    "pack_weights",
    "read_packed",
    "reference_binary_conv2d",
    "reference_pack_activations",
    "unpack_activations",
    "unpack_weights",
]

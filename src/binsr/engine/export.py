"""The ``.binsr`` packed model format: writing (``binsr export``) and safe, validated reading.

A ``.binsr`` file is one `safetensors <https://huggingface.co/docs/safetensors>`_ file (no pickle):
tensors plus one metadata entry ``"binsr"`` holding a JSON header::

    {"format": "binsr-packed", "version": 1, "model": "bbcu_m", "scale": 4, "kwargs": {...},
     "graph": [{"name": "conv_first", "op": "conv2d", "args": [...], "kwargs": {...}}, ...]}

``graph`` lists the model's operations in execution order. Each op produces the value ``name``
from ``args`` / ``kwargs``, JSON values in which ``{"ref": NAME}`` is an earlier op's value and
``{"tensor": KEY}`` a stored tensor; ``op`` is one of :data:`OPS` (the runtime maps each name to the
torch call it stands for, or to the packed kernels for ``binary_conv2d``). The first op is ``input``,
the last ``output``. See ``docs/engine.md`` for the op table.

Binary weights are stored at 1 bit per weight: ``KEY.weight_bits`` is uint8 ``[OC, KH, KW, ceil(C_in/8)]``,
channel ``c`` in bit ``c % 8`` (LSB first) of byte ``c // 8``, bit 1 = −1, pad bits 0, with the
per-output-channel scale ``KEY.alpha`` float32 ``[OC]``: the effective weight is
``alpha[o] · (1 − 2·bit)``. Everything else (thresholds, RPReLU/PReLU parameters, BatchNorm
statistics, full-precision layers) is float32, exactly as trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from binsr.checkpoint import load_safetensors, save_safetensors_atomic
from binsr.errors import BinsrError

FORMAT = "binsr-packed"
VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
METADATA_KEY = "binsr"
SUFFIX = ".binsr"

#: The op vocabulary of format version 1.
OPS: frozenset[str] = frozenset(
    {
        "input",
        "output",
        "constant",
        "binary_conv2d",
        "conv2d",
        "batch_norm",
        "rprelu",
        "prelu",
        "leaky_relu",
        "relu",
        "sigmoid",
        "tanh",
        "abs",
        "neg",
        "add",
        "sub",
        "mul",
        "truediv",
        "mean",
        "amax",
        "sum",
        "cat",
        "pad",
        "pixel_shuffle",
        "interpolate",
        "adaptive_avg_pool2d",
    }
)

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------------------- bit layout


def pack_sign_bytes(signs: torch.Tensor) -> torch.Tensor:
    """Signs ``[OC, C_in, KH, KW]`` → uint8 ``[OC, KH, KW, ceil(C_in/8)]`` (bit 1 where ``sign < 0``)."""
    negative = (signs.detach().cpu() < 0).permute(0, 2, 3, 1).contiguous().numpy()
    return torch.from_numpy(np.packbits(negative, axis=-1, bitorder="little"))


def unpack_sign_bytes(bits: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Inverse of :func:`pack_sign_bytes`: float32 ±1 ``[OC, C_in, KH, KW]``."""
    negative = np.unpackbits(bits.numpy(), axis=-1, count=in_channels, bitorder="little")
    return torch.from_numpy(1.0 - 2.0 * negative.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def sign_bytes_to_words(bits: torch.Tensor) -> torch.Tensor:
    """uint8 sign bytes ``[..., B]`` → the kernels' int64 words ``[..., ceil(B/8)]`` (little-endian)."""
    pad = (-bits.shape[-1]) % 8
    array = np.ascontiguousarray(bits.numpy())
    if pad:
        array = np.concatenate([array, np.zeros((*array.shape[:-1], pad), dtype=np.uint8)], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(array).view("<i8").astype(np.int64))


# --------------------------------------------------------------------------------------------- export


def export_model(model: nn.Module, path: PathLike) -> dict[str, Any]:
    """Write ``model`` (a binsr model with ``config``) as a ``.binsr`` file, atomically.

    Returns the header (without the graph) plus counts: ``ops``, ``binary_convs``, ``bytes``.
    """
    from binsr.engine.graph import trace_model  # the only import of the training classes

    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not {"name", "scale"} <= config.keys():
        raise BinsrError("only binsr models (built by create_model / load_model) can be exported")
    ops, tensors = trace_model(model)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": config["name"],
        "scale": int(config["scale"]),
        "kwargs": dict(config.get("kwargs", {})),
        "graph": ops,
    }
    validate_graph(header, tensors, str(path))
    save_safetensors_atomic(path, tensors, {METADATA_KEY: json.dumps(header, separators=(",", ":"))})
    summary = {k: v for k, v in header.items() if k != "graph"}
    summary["ops"] = len(ops)
    summary["binary_convs"] = sum(op["op"] == "binary_conv2d" for op in ops)
    summary["bytes"] = Path(path).stat().st_size
    return summary


# -------------------------------------------------------------------------------------------- reading


def read_packed(path: PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(header, tensors)`` of a ``.binsr`` file, validated; one-line :class:`BinsrError` otherwise."""
    tensors, metadata = load_safetensors(path)
    if METADATA_KEY not in metadata:
        raise BinsrError(f"{path} is a safetensors file but not a binsr packed model (no 'binsr' metadata)")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError:
        raise BinsrError(f"{path} has a corrupt 'binsr' metadata entry") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        hint = " (a training checkpoint: run `binsr export` on it)" if found == "binsr-model" else ""
        raise BinsrError(f"{path} is not a binsr packed model (format {found!r}){hint}")
    if header.get("version") not in SUPPORTED_VERSIONS:
        raise BinsrError(
            f"{path} has packed format version {header.get('version')!r}; this binsr reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} (upgrade binsr?)"
        )
    validate_graph(header, tensors, str(path))
    return header, tensors


def validate_graph(header: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> None:
    """Check the header's scale and graph: known ops, unique names, refs to earlier values, tensors
    present and finite. Raises a one-line :class:`BinsrError` naming ``where`` and the op."""
    scale = header.get("scale")
    if not isinstance(scale, int) or scale < 1:
        raise BinsrError(f"{where}: bad scale {scale!r}")
    graph = header.get("graph")
    if not isinstance(graph, list) or len(graph) < 2:
        raise BinsrError(f"{where}: the graph is missing or empty")
    defined: set[str] = set()

    def check(value: object, op_name: str) -> None:
        if isinstance(value, dict) and set(value) == {"ref"}:
            if value["ref"] not in defined:
                raise BinsrError(f"{where}: op {op_name!r} uses undefined value {value['ref']!r}")
        elif isinstance(value, dict) and set(value) == {"tensor"}:
            tensor = tensors.get(str(value["tensor"]))
            if tensor is None:
                raise BinsrError(f"{where}: op {op_name!r} needs missing tensor {value['tensor']!r}")
            if tensor.dtype not in (torch.float32, torch.uint8):
                raise BinsrError(f"{where}: tensor {value['tensor']!r} has dtype {tensor.dtype}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise BinsrError(f"{where}: tensor {value['tensor']!r} has non-finite values")
        elif isinstance(value, list):
            for v in value:
                check(v, op_name)
        elif isinstance(value, dict):
            for v in value.values():
                check(v, op_name)

    for index, op in enumerate(graph):
        if not (isinstance(op, dict) and isinstance(op.get("name"), str) and op.get("op") in OPS):
            kind = op.get("op") if isinstance(op, dict) else op
            raise BinsrError(f"{where}: graph entry {index} is not a known op ({kind!r})")
        if not isinstance(op.get("args"), list) or not isinstance(op.get("kwargs"), dict):
            raise BinsrError(f"{where}: op {op['name']!r} has malformed args")
        if op["name"] in defined:
            raise BinsrError(f"{where}: op name {op['name']!r} is defined twice")
        check(op["args"], op["name"])
        check(op["kwargs"], op["name"])
        defined.add(op["name"])
    if graph[0]["op"] != "input" or graph[-1]["op"] != "output":
        raise BinsrError(f"{where}: the graph must start with 'input' and end with 'output'")

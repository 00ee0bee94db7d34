"""Tracing a binsr model into the op list of the ``.binsr`` format (export side only).

:func:`trace_model` runs ``torch.fx`` over a model with :class:`~binsr.layers.BinaryConv2d`,
:class:`~binsr.layers.RPReLU` and every ``torch.nn`` layer as leaf modules, and turns each graph node
into one op of the format (see :mod:`binsr.engine.export`): a whitelisted name, its arguments with
``{"ref": value}`` for graph values and ``{"tensor": key}`` for stored tensors, and keyword arguments.
Parameter-free code (attention gates, mean shifts, the bilinear global skip, residual alignment) is
traced through, so the ops are exactly the torch calls the model makes, in its order.

This module is the only part of the engine that knows the training classes; the runtime reads ops.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from binsr.engine.export import pack_sign_bytes
from binsr.errors import BinsrError
from binsr.layers import BinaryConv2d, RPReLU

#: fx ``call_function`` targets → format op names (the runtime maps the names back to the same calls).
FUNCTION_OPS: dict[Callable[..., Any], str] = {
    operator.add: "add",
    operator.sub: "sub",
    operator.mul: "mul",
    operator.truediv: "truediv",
    operator.neg: "neg",
    torch.add: "add",
    torch.sub: "sub",
    torch.mul: "mul",
    torch.div: "truediv",
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.relu: "relu",
    torch.abs: "abs",
    torch.mean: "mean",
    torch.amax: "amax",
    torch.sum: "sum",
    torch.cat: "cat",
    F.relu: "relu",
    F.leaky_relu: "leaky_relu",
    F.prelu: "prelu",
    F.interpolate: "interpolate",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.pixel_shuffle: "pixel_shuffle",
    F.pad: "pad",
}

#: Tensor methods (``call_method``) that equal the torch function of the same name.
METHOD_OPS: frozenset[str] = frozenset(
    {"add", "sub", "mul", "div", "sigmoid", "tanh", "relu", "abs", "mean", "amax", "sum"}
)


class _Tracer(fx.Tracer):
    """Keeps binary convolutions, RPReLU and ``torch.nn`` layers as leaves; traces binsr code through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, BinaryConv2d | RPReLU):
            return True
        return super().is_leaf_module(m, module_qualified_name)


class _Builder:
    """Collects ops and tensors while walking the traced graph."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.ops: list[dict[str, Any]] = []
        self.tensors: dict[str, torch.Tensor] = {}
        self.alias: dict[str, str] = {}

    # -- encoding ---------------------------------------------------------------------------------

    def tensor(self, key: str, value: torch.Tensor) -> dict[str, str]:
        """Store ``value`` (float32, or uint8 bits) under ``key`` and return its placeholder."""
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        self.tensors[key] = value.contiguous()
        return {"tensor": key}

    def encode(self, value: object) -> object:
        """An fx argument as JSON: graph values become ``{"ref": name}``."""
        if isinstance(value, fx.Node):
            return {"ref": self.alias.get(value.name, value.name)}
        if isinstance(value, list | tuple):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return {str(k): self.encode(v) for k, v in value.items()}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise BinsrError(f"cannot export argument {value!r} of type {type(value).__name__}")

    def emit(
        self, node: fx.Node, op: str, args: list[object], kwargs: dict[str, object] | None = None
    ) -> None:
        self.ops.append({"name": node.name, "op": op, "args": args, "kwargs": kwargs or {}})

    # -- nodes ------------------------------------------------------------------------------------

    def add_node(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.emit(node, "input", [])
        elif node.op == "output":
            self.ops.append(
                {"name": "output", "op": "output", "args": [self.encode(node.args[0])], "kwargs": {}}
            )
        elif node.op == "get_attr":
            value = _get_attr(self.model, str(node.target))
            if not isinstance(value, torch.Tensor):
                raise BinsrError(f"cannot export attribute {node.target!r} (not a tensor)")
            self.emit(node, "constant", [self.tensor(str(node.target), value)])
        elif node.op == "call_function":
            if node.target not in FUNCTION_OPS:
                raise BinsrError(f"cannot export function {getattr(node.target, '__name__', node.target)!r}")
            fn = node.target
            args, kwargs = list(node.args), dict(node.kwargs)
            if fn is F.interpolate:  # pin every default, so the runtime call cannot drift
                bound = inspect.signature(F.interpolate).bind(*args, **kwargs)
                bound.apply_defaults()
                args, kwargs = [bound.arguments.pop("input")], dict(bound.arguments)
            self.emit(node, FUNCTION_OPS[fn], self.encode(args), self.encode(kwargs))  # type: ignore[arg-type]
        elif node.op == "call_method":
            if node.target not in METHOD_OPS:
                raise BinsrError(f"cannot export tensor method {node.target!r}")
            name = "truediv" if node.target == "div" else str(node.target)
            self.emit(node, name, self.encode(list(node.args)), self.encode(dict(node.kwargs)))  # type: ignore[arg-type]
        elif node.op == "call_module":
            self.add_module(node, self.model.get_submodule(str(node.target)), str(node.target))
        else:  # pragma: no cover - fx has no other node kinds
            raise BinsrError(f"cannot export graph node {node.op!r}")

    def add_module(self, node: fx.Node, module: nn.Module, path: str) -> None:
        if node.kwargs or len(node.args) != 1:
            raise BinsrError(f"cannot export call of {path!r} with {len(node.args)} args / kwargs")
        x = self.encode(node.args[0])
        if isinstance(module, BinaryConv2d):
            self.emit(node, "binary_conv2d", [x], self.binary_conv(module, path))
        elif isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise BinsrError(f"cannot export {path!r}: only numeric zero padding is supported")
            bias = None if module.bias is None else self.tensor(f"{path}.bias", module.bias)
            weight = self.tensor(f"{path}.weight", module.weight)
            args = [x, weight, bias, list(module.stride), list(module.padding), list(module.dilation)]
            self.emit(node, "conv2d", [*args, module.groups])
        elif isinstance(module, nn.BatchNorm2d):
            if module.training or module.running_mean is None or module.running_var is None:
                raise BinsrError(f"cannot export {path!r}: BatchNorm needs eval mode and running stats")
            stats = [self.tensor(f"{path}.{k}", getattr(module, k)) for k in ("running_mean", "running_var")]
            affine = [
                None if getattr(module, k) is None else self.tensor(f"{path}.{k}", getattr(module, k))
                for k in ("weight", "bias")
            ]
            self.emit(node, "batch_norm", [x, *stats, *affine, False, 0.0, module.eps])
        elif isinstance(module, RPReLU):
            params = [self.tensor(f"{path}.{k}", getattr(module, k)) for k in ("gamma", "slope", "zeta")]
            self.emit(node, "rprelu", [x, *params])
        elif isinstance(module, nn.PReLU):
            self.emit(node, "prelu", [x, self.tensor(f"{path}.weight", module.weight)])
        elif isinstance(module, nn.LeakyReLU):
            self.emit(node, "leaky_relu", [x, float(module.negative_slope)])
        elif isinstance(module, nn.ReLU):
            self.emit(node, "relu", [x])
        elif isinstance(module, nn.Sigmoid):
            self.emit(node, "sigmoid", [x])
        elif isinstance(module, nn.PixelShuffle):
            self.emit(node, "pixel_shuffle", [x, int(module.upscale_factor)])
        elif isinstance(module, nn.Identity):
            self.alias[node.name] = str(x["ref"]) if isinstance(x, dict) else node.name
        else:
            raise BinsrError(f"cannot export layer {path!r} of type {type(module).__name__}")

    def binary_conv(self, conv: BinaryConv2d, path: str) -> dict[str, object]:
        """The keyword arguments of a ``binary_conv2d`` op (weights packed when binary)."""
        if conv.dilation != (1, 1) or conv.groups != 1:
            raise BinsrError(f"cannot export {path!r}: binary convolutions need dilation 1 and groups 1")
        if conv.binary_input and not conv.binary_weight:
            raise BinsrError(f"cannot export {path!r}: binary activations with full-precision weights")
        threshold = getattr(conv.threshold, "bias", None)
        attrs: dict[str, object] = {
            "in_channels": conv.in_channels,
            "out_channels": conv.out_channels,
            "kernel_size": list(conv.kernel_size),
            "stride": list(conv.stride),
            "padding": list(conv.padding),
            "binary_input": conv.binary_input,
            "pad_value": float(conv.input_binarizer.pad_value),
            "threshold": None if threshold is None else self.tensor(f"{path}.threshold", threshold),
            "bias": None if conv.bias is None else self.tensor(f"{path}.bias", conv.bias),
        }
        if conv.binary_weight:
            alpha, signs = conv.weight_binarizer.scale_and_sign(conv.weight)
            attrs["alpha"] = self.tensor(f"{path}.alpha", alpha)
            attrs["weight_bits"] = self.tensor(f"{path}.weight_bits", pack_sign_bytes(signs))
        else:
            attrs["weight"] = self.tensor(f"{path}.weight", conv.effective_weight())
        return attrs


def _get_attr(model: nn.Module, target: str) -> object:
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)


@torch.no_grad()
def trace_model(model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """``(ops, tensors)`` of ``model`` in eval mode (see the module docstring and :mod:`.export`).

    Raises :class:`BinsrError` naming the first layer or call the format cannot express.
    """
    was_training = model.training
    model.eval()
    try:
        try:
            graph = _Tracer().trace(model)
        except (TypeError, NotImplementedError, RuntimeError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise BinsrError(f"cannot trace {type(model).__name__} for export ({message})") from None
        builder = _Builder(model)
        for node in graph.nodes:
            builder.add_node(node)
    finally:
        model.train(was_training)
    return builder.ops, builder.tensors

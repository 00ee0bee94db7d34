"""Bit-aware model complexity: parameters, memory and MACs per precision, counted from forward hooks.

A forward hook on every convolution and linear layer (``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``,
``nn.Linear`` and subclasses such as :class:`binsr.layers.BinaryConv2d`) records its output shape, so a
new layer is counted without editing this module. Per layer:

* **parameters**: the weight, plus the bias when ``include_bias`` (default). A layer whose
  ``weight_precision`` is 1 counts its weight as *binary* parameters (its bias, if any, stays FP);
  everything else is full precision. Not counted: learnable thresholds, weight scales α, PReLU/RPReLU
  slopes and shifts, BatchNorm, fixed buffers (mean shifts) — they are O(channels), foldable into the
  next layer's threshold or the output scale at inference, and BBCU does not count them either.
* **MACs**: ``output elements × (in_channels / groups) × kernel area`` for convolutions,
  ``output elements × in_features`` for linear layers, batch size 1, bias additions not counted.
  They are *binary* MACs when the layer's input **and** weights are 1-bit
  (``input_precision == weight_precision == 1``): XNOR-popcount. A weight-only binary layer
  (Ma et al. 2019) has binary parameters but full-precision MACs.
* Pixel shuffle, interpolation, pooling, activations, normalisation and additions cost 0 MACs.

Totals follow BBCU (Xia et al. 2023, Table 1): ``params = params_fp + params_binary / 32`` and
``ops = macs_fp + macs_binary / 64`` at a 320×180 LR input. ``size_bytes = 4·params_fp +
params_binary / 8`` (rounded up): 4 bytes per FP value, 1 bit per binary weight.

BBCU's Table 1 parameter counts are weights only: SRResNet x4 is 1 514 880 weights (1515 K) and
1 517 571 with biases; BBCU-L x4 372 096 (372 K) vs 372 739. ``include_bias=False`` reproduces the
table to the unit; the default (biases counted) stays within 0.2 %. OPs match to 0.05 %.

The forward runs on PyTorch's ``meta`` device (shapes only, no arithmetic), so a 320×180 x4 summary of
SRResNet takes well under a second; 0-dim buffers (flags such as "scale initialised") stay on the CPU
so lazily initialised binarizers still work. If a model cannot run on ``meta`` it runs on the CPU under
``torch.no_grad``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from binsr.errors import BinsrError

#: BBCU's default LR input for counting OPs: width 320, height 180 (a 1280×720 output at x4).
DEFAULT_INPUT: tuple[int, int] = (320, 180)

COUNTED_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


@dataclass
class LayerComplexity:
    """Counts of one convolution or linear layer (MACs summed over its calls, batch size 1)."""

    name: str
    type: str
    output_shape: list[int] | None
    input_precision: int
    weight_precision: int
    params_fp: int
    params_binary: int
    macs_fp: int = 0
    macs_binary: int = 0

    @property
    def memory_bytes(self) -> float:
        """Bytes of the layer's counted parameters: 4 per FP value, 1/8 per binary weight."""
        return 4 * self.params_fp + self.params_binary / 8


@dataclass
class Complexity:
    """A model's per-layer counts and totals (see the module docstring for the conventions)."""

    model: str
    scale: int | None
    input: tuple[int, int]
    layers: list[LayerComplexity] = field(default_factory=list)

    @property
    def params_fp(self) -> int:
        return sum(layer.params_fp for layer in self.layers)

    @property
    def params_binary(self) -> int:
        return sum(layer.params_binary for layer in self.layers)

    @property
    def macs_fp(self) -> int:
        return sum(layer.macs_fp for layer in self.layers)

    @property
    def macs_binary(self) -> int:
        return sum(layer.macs_binary for layer in self.layers)

    @property
    def params(self) -> float:
        """BBCU's parameter count: ``params_fp + params_binary / 32``."""
        return self.params_fp + self.params_binary / 32

    @property
    def ops(self) -> float:
        """BBCU's operation count: ``macs_fp + macs_binary / 64``."""
        return self.macs_fp + self.macs_binary / 64

    @property
    def size_bytes(self) -> int:
        """Bytes to store the counted parameters: 4 per FP value, 1 bit per binary weight."""
        return 4 * self.params_fp + math.ceil(self.params_binary / 8)

    @property
    def compression(self) -> float:
        """Size of the same parameters all in FP32 divided by :attr:`size_bytes`."""
        fp32 = 4 * (self.params_fp + self.params_binary)
        return fp32 / self.size_bytes if self.size_bytes else 1.0

    @property
    def binary_mac_share(self) -> float:
        """Fraction of all MACs that are binary (XNOR-popcount)."""
        total = self.macs_fp + self.macs_binary
        return self.macs_binary / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: totals, then ``layers`` (each with ``memory_bytes``)."""
        return {
            "model": self.model,
            "scale": self.scale,
            "input": list(self.input),
            "params_fp": self.params_fp,
            "params_binary": self.params_binary,
            "params": self.params,
            "macs_fp": self.macs_fp,
            "macs_binary": self.macs_binary,
            "ops": self.ops,
            "size_bytes": self.size_bytes,
            "compression": self.compression,
            "binary_mac_share": self.binary_mac_share,
            "layers": [{**asdict(layer), "memory_bytes": layer.memory_bytes} for layer in self.layers],
        }

    def format_table(self) -> str:
        """A larq-style per-layer table with totals, compression ratio and binary MAC share."""
        header = ("layer", "type", "output shape", "params fp", "params 1-bit", "MACs fp", "MACs 1-bit")
        rows = [
            (
                layer.name,
                layer.type,
                "x".join(map(str, layer.output_shape)) if layer.output_shape else "-",
                f"{layer.params_fp:,}",
                f"{layer.params_binary:,}",
                f"{layer.macs_fp:,}",
                f"{layer.macs_binary:,}",
            )
            for layer in self.layers
        ]
        total = (
            "total",
            "",
            "",
            f"{self.params_fp:,}",
            f"{self.params_binary:,}",
            f"{self.macs_fp:,}",
            f"{self.macs_binary:,}",
        )
        widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

        def line(row: tuple[str, ...]) -> str:
            cells = [row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(len(row))]
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(header))
        scale = f" x{self.scale}" if self.scale else ""
        w, h = self.input
        summary = [
            f"{self.model}{scale} at {w}x{h} input",
            rule,
            line(header),
            rule,
            *(line(r) for r in rows),
            rule,
            line(total),
            rule,
            f"Params (FP + 1-bit/32):   {self.params / 1e3:,.2f} K",
            f"OPs (FP MACs + 1-bit/64): {self.ops / 1e9:,.2f} G",
            f"Size:                     {self.size_bytes / 1024:,.1f} KiB "
            f"(FP32 {4 * (self.params_fp + self.params_binary) / 1024:,.1f} KiB, "
            f"compression {self.compression:.2f}x)",
            f"Binary MAC share:         {100 * self.binary_mac_share:.1f} %",
        ]
        return "\n".join(summary)


def _counted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost conv/linear layers of ``model`` (a counted layer's own sub-layers are skipped)."""
    layers: list[tuple[str, nn.Module]] = []
    inside: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in inside or not isinstance(module, COUNTED_TYPES):
            continue
        layers.append((name or type(module).__name__, module))
        inside.update(id(m) for m in module.modules())
    return layers


def _macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    """Multiply-accumulates of one call with batch size 1."""
    batch = output.shape[0] if output.dim() > 1 else 1
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        x = inputs[0]
        return x.numel() // batch * (module.out_channels // module.groups) * kernel
    return output.numel() // batch * (module.in_channels // module.groups) * kernel


def _to_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device, keeping 0-dim buffers (flags, counters) on the CPU."""
    scalars = {name: buf.detach().clone().cpu() for name, buf in model.named_buffers() if buf.dim() == 0}
    meta = copy.deepcopy(model).to("meta")
    for name, value in scalars.items():
        owner_name, _, attr = name.rpartition(".")
        setattr(meta.get_submodule(owner_name), attr, value)
    return meta


def count_complexity(
    model: nn.Module,
    input_size: tuple[int, int] = DEFAULT_INPUT,
    *,
    name: str | None = None,
    scale: int | None = None,
    include_bias: bool = True,
    in_channels: int = 3,
    use_meta: bool = True,
) -> Complexity:
    """Count parameters and MACs by precision for one ``(1, in_channels, H, W)`` forward pass.

    Args:
        model: the network; it is not modified (a copy runs on the meta device).
        input_size: ``(width, height)`` of the input, BBCU's 320×180 by default.
        name, scale: labels for the result (default: ``model.config["name"]`` / ``model.scale``).
        include_bias: count conv/linear biases as FP parameters (BBCU's table does not).
        use_meta: run on the meta device first (falls back to a real CPU run if that fails).

    Example:
        >>> from binsr.models import create_model
        >>> c = count_complexity(create_model("bbcu_l", scale=4))
        >>> round(c.ops / 1e9, 2), round(c.params / 1e3)  # Table 1: 79.20 G, 372 K (weights only)
        (79.19, 373)
    """
    width, height = input_size
    if width < 1 or height < 1:
        raise BinsrError(f"input size must be positive, got {width}x{height}")
    config = getattr(model, "config", None) or {}
    name = name or config.get("name") or type(model).__name__
    scale = scale if scale is not None else getattr(model, "scale", None)

    def run(net: nn.Module, device: str) -> Complexity:
        result = Complexity(model=name, scale=scale, input=(width, height))
        records: dict[int, LayerComplexity] = {}
        handles = []
        for layer_name, layer in _counted_layers(net):
            weight_precision = int(getattr(layer, "weight_precision", 32))
            input_precision = int(getattr(layer, "input_precision", 32))
            weights = layer.weight.numel()
            bias = layer.bias.numel() if include_bias and getattr(layer, "bias", None) is not None else 0
            record = LayerComplexity(
                name=layer_name,
                type=type(layer).__name__,
                output_shape=None,
                input_precision=input_precision,
                weight_precision=weight_precision,
                params_fp=bias + (0 if weight_precision == 1 else weights),
                params_binary=weights if weight_precision == 1 else 0,
            )
            records[id(layer)] = record
            result.layers.append(record)

            def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
                rec = records[id(module)]
                rec.output_shape = list(output.shape[1:])
                macs = _macs(module, inputs, output)
                if rec.input_precision == 1 and rec.weight_precision == 1:
                    rec.macs_binary += macs
                else:
                    rec.macs_fp += macs

            handles.append(layer.register_forward_hook(hook))
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                net(torch.zeros(1, in_channels, height, width, device=device))
        finally:
            for handle in handles:
                handle.remove()
            net.train(was_training)
        return result

    if use_meta:
        try:
            return run(_to_meta(model), "meta")
        except (NotImplementedError, RuntimeError):
            pass
    device = next((p.device.type for p in model.parameters()), "cpu")
    return run(model, device)

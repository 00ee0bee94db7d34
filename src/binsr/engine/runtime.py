"""The CPU runtime of ``.binsr`` packed models: :class:`PackedModel`.

``PackedModel.load(path)`` reads the format only (:mod:`binsr.engine.export`), never the training
classes, and plans the graph once:

* every full-precision op runs as the very torch call the model made (``F.conv2d``, ``F.batch_norm``,
  ``F.interpolate``, ``torch.sigmoid``, Python ``+``...), in the model's order, so it matches bit for bit;
* a ``binary_conv2d`` with binary activations runs on the XNOR-popcount kernels, and absorbs the ops
  that follow it when its value has no other consumer, in the kernel epilogue's order:
  a ``batch_norm`` (folded into α and bias), then one activation (``rprelu``; ``prelu`` and
  ``leaky_relu`` as RPReLU with γ = ζ = 0), then an ``add`` of a same-shaped tensor (the residual);
* the threshold and sign of a binary conv's input are fused into packing: into the conv call itself for
  a float input, or into the producing binary conv's epilogue (``out_threshold``) when every binary
  consumer of a value shares one threshold; the float copy is then only written if something else needs it;
* a ``binary_conv2d`` with full-precision activations (Ma et al. 2019: binary weights only) runs as
  ``F.conv2d`` with the unpacked ``α · sign`` weights, zero padding applied as the layer does.

Binary sums are exact integers; the only differences to PyTorch are float roundings of
``α · Σ ±1`` against ``Σ ±α`` (a few ulps), so outputs agree to ~1e-6 unless a sign flips on a tie.

Example:
    >>> model = PackedModel.load("bbcu_m_x4.binsr", threads=2)
    >>> sr = model(torch.rand(1, 3, 180, 320))          # float NCHW in [0, 1] -> [1, 3, 720, 1280]
"""

from __future__ import annotations

import math
import operator
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from binsr.engine._backend import resolve_isa, resolve_threads
from binsr.engine.conv import RPReLUParams, binary_conv2d, binary_conv2d_packed
from binsr.engine.export import read_packed, sign_bytes_to_words, unpack_sign_bytes
from binsr.engine.packing import PackedActivations, PackedWeights, pack_activations
from binsr.errors import BinsrError

PathLike = str | os.PathLike[str]


def _rprelu(x: Tensor, gamma: Tensor, slope: Tensor, zeta: Tensor) -> Tensor:
    """RPReLU exactly as :class:`binsr.layers.RPReLU` computes it."""
    shape = (1, -1, *([1] * (x.dim() - 2)))
    return F.prelu(x - gamma.view(shape), slope) + zeta.view(shape)


#: op name → the torch call it stands for (``binary_conv2d``, ``input``, ``output`` are planned apart).
TORCH_OPS: dict[str, Callable[..., Any]] = {
    "constant": lambda t: t,
    "conv2d": F.conv2d,
    "batch_norm": F.batch_norm,
    "rprelu": _rprelu,
    "prelu": F.prelu,
    "leaky_relu": F.leaky_relu,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "abs": torch.abs,
    "neg": operator.neg,
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "mean": torch.mean,
    "amax": torch.amax,
    "sum": torch.sum,
    "cat": torch.cat,
    "pad": F.pad,
    "pixel_shuffle": F.pixel_shuffle,
    "interpolate": F.interpolate,
    "adaptive_avg_pool2d": F.adaptive_avg_pool2d,
}


#: unary ops that may run in place on a dead pool buffer: op name → in-place torch call.
INPLACE_OPS: dict[str, Callable[..., Any]] = {
    "leaky_relu": F.leaky_relu_,
    "relu": torch.relu_,
    "sigmoid": torch.sigmoid_,
}


@dataclass
class _Step:
    """One planned step: ``run(env)``, then drop ``free`` and return ``recycle`` to the buffer pool."""

    run: Callable[[dict[str, Any]], None]
    free: list[str] = field(default_factory=list)
    recycle: list[str] = field(default_factory=list)


class _Ref:
    """A graph value inside a materialised argument template."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _refs(value: object) -> list[str]:
    """Names of the graph values a JSON argument refers to (with repeats)."""
    if isinstance(value, dict):
        if set(value) == {"ref"}:
            return [str(value["ref"])]
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _substitute(value: object, env: dict[str, Any]) -> Any:
    """Replace :class:`_Ref` markers of a template by their values."""
    if isinstance(value, _Ref):
        return env[value.name]
    if isinstance(value, list):
        return [_substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, env) for k, v in value.items()}
    return value


def _is_ref(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"ref"}


@dataclass
class _BinaryConv:
    """A binary convolution op with its absorbed epilogue (see the module docstring)."""

    name: str  # the op's own value
    source: str  # its input value
    out: str  # the value the fused step produces (the last absorbed op)
    weights: PackedWeights | None
    weight: Tensor | None  # unpacked α·sign (full-precision activations) or a float weight
    alpha: Tensor
    bias: Tensor | None
    threshold: Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    pad_value: float
    rprelu: RPReLUParams | None = None
    residual: str | None = None
    out_threshold: Tensor | None = None  # emit packed bits for the next binary convs
    need_float: bool = True
    bits_input: bool = False  # read packed bits of ``source`` (made by its producer)
    absorbed: list[str] = field(default_factory=list)

    @property
    def kernel(self) -> bool:
        return self.weights is not None


class PackedModel(nn.Module):
    """An exported ``.binsr`` model, runnable on float NCHW tensors on the CPU.

    Args:
        header: the validated header of the file (see :func:`binsr.engine.export.read_packed`).
        tensors: the file's tensors.
        threads: threads for the kernels and torch ops (default: ``torch.get_num_threads()`` at call).
        isa: force an engine ISA path (default: ``$BINSR_ENGINE_ISA`` or the best one).
        name: used in error messages.
    """

    def __init__(
        self,
        header: dict[str, Any],
        tensors: dict[str, Tensor],
        *,
        threads: int | None = None,
        isa: str | None = None,
        name: str = "packed model",
    ) -> None:
        super().__init__()
        self.header = {k: v for k, v in header.items() if k != "graph"}
        self.graph: list[dict[str, Any]] = header["graph"]
        self.scale = int(header["scale"])
        self.model_name = str(header.get("model", "?"))
        self.threads = None if threads is None else resolve_threads(threads)
        self.isa = isa
        resolve_isa(isa)  # refuse a bad ISA now, not on the first call
        self.name = name
        self._tensors = tensors
        self._plan()

    @classmethod
    def load(cls, path: PathLike, *, threads: int | None = None, isa: str | None = None) -> PackedModel:
        """Read and plan the ``.binsr`` file ``path``."""
        header, tensors = read_packed(path)
        return cls(header, tensors, threads=threads, isa=isa, name=str(path))

    # ------------------------------------------------------------------------------------ planning

    def _tensor(self, value: object) -> Tensor:
        if not (isinstance(value, dict) and set(value) == {"tensor"}):
            raise BinsrError(f"{self.name}: expected a stored tensor, got {value!r}")
        return self._tensors[str(value["tensor"])]

    def _template(self, value: object) -> object:
        """A JSON argument with stored tensors resolved and refs as :class:`_Ref` markers."""
        if isinstance(value, dict):
            if set(value) == {"ref"}:
                return _Ref(str(value["ref"]))
            if set(value) == {"tensor"}:
                return self._tensor(value)
            return {k: self._template(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._template(v) for v in value]
        return value

    def _binary_conv(self, op: dict[str, Any]) -> _BinaryConv:
        kw, where = op["kwargs"], f"{self.name}: binary_conv2d {op['name']!r}"
        if len(op["args"]) != 1 or not _is_ref(op["args"][0]):
            raise BinsrError(f"{where} takes one input value")
        try:
            cin, cout = int(kw["in_channels"]), int(kw["out_channels"])
            kh, kw_ = (int(v) for v in kw["kernel_size"])
            stride = (int(kw["stride"][0]), int(kw["stride"][1]))
            padding = (int(kw["padding"][0]), int(kw["padding"][1]))
            binary_input, pad_value = bool(kw["binary_input"]), float(kw["pad_value"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise BinsrError(f"{where} has malformed attributes") from None
        optional = {k: None if kw.get(k) is None else self._tensor(kw[k]) for k in ("threshold", "bias")}
        weights = weight = None
        if "weight_bits" in kw:
            bits = self._tensor(kw["weight_bits"])
            alpha = self._tensor(kw.get("alpha"))
            if bits.dtype != torch.uint8 or tuple(bits.shape) != (cout, kh, kw_, (cin + 7) // 8):
                raise BinsrError(f"{where}: weight_bits must be uint8 {[cout, kh, kw_, (cin + 7) // 8]}")
            if binary_input:
                if pad_value != 1.0:
                    raise BinsrError(f"{where}: binary activations must pad with +1")
                weights = PackedWeights(bits=sign_bytes_to_words(bits), in_channels=cin)
            else:  # Ma et al.: binary weights, float activations -> the layer's own float weight
                signs = unpack_sign_bytes(bits, cin)
                weight = alpha.view(-1, *([1] * (signs.dim() - 1))) * signs
        elif binary_input:
            raise BinsrError(f"{where}: binary activations need packed binary weights")
        else:
            weight, alpha = self._tensor(kw.get("weight")), torch.ones(cout)
        for key, tensor, size in (("alpha", alpha, cout), *((k, v, None) for k, v in optional.items())):
            want = cin if key == "threshold" else cout
            if tensor is not None and tensor.numel() != (size or want):
                raise BinsrError(f"{where}: {key} has {tensor.numel()} entries, expected {size or want}")
        return _BinaryConv(
            name=op["name"],
            source=str(op["args"][0]["ref"]),
            out=op["name"],
            weights=weights,
            weight=weight,
            alpha=alpha,
            bias=optional["bias"],
            threshold=optional["threshold"],
            stride=stride,
            padding=padding,
            pad_value=pad_value,
        )

    def _absorb(
        self, conv: _BinaryConv, consumers: dict[str, list[dict[str, Any]]], uses: dict[str, int]
    ) -> None:
        """Fold the sole-consumer chain after ``conv`` into its epilogue (BN → activation → add)."""
        stage = 0
        while True:
            users = consumers.get(conv.out, [])
            if len(users) != 1 or uses[conv.out] != 1:
                return
            op, args = users[0], users[0]["args"]
            kind = op["op"]
            first_is_conv = bool(args) and _is_ref(args[0]) and args[0]["ref"] == conv.out
            if kind == "batch_norm" and stage < 1 and first_is_conv and len(args) == 8 and not args[5]:
                mean, var = self._tensor(args[1]), self._tensor(args[2])
                weight = None if args[3] is None else self._tensor(args[3])
                shift = None if args[4] is None else self._tensor(args[4])
                invstd = 1.0 / torch.sqrt(var + float(args[7]))
                scale = invstd if weight is None else invstd * weight
                offset = -mean * scale if shift is None else shift - mean * scale
                conv.alpha = conv.alpha * scale
                conv.bias = offset if conv.bias is None else conv.bias * scale + offset
                stage = 1
            elif kind in ("rprelu", "prelu", "leaky_relu") and stage < 2 and first_is_conv:
                channels = conv.alpha.numel()
                zeros = torch.zeros(channels)
                if kind == "rprelu" and len(args) == 4:
                    conv.rprelu = (self._tensor(args[1]), self._tensor(args[2]), self._tensor(args[3]))
                elif kind == "prelu" and len(args) == 2 and self._tensor(args[1]).numel() in (1, channels):
                    conv.rprelu = (zeros, self._tensor(args[1]).expand(channels), zeros)
                elif kind == "leaky_relu" and len(args) == 2 and not op["kwargs"]:
                    conv.rprelu = (zeros, torch.full((channels,), float(args[1])), zeros)
                else:
                    return
                stage = 2
            elif kind == "add" and stage < 3 and len(args) == 2 and all(_is_ref(a) for a in args):
                others = [a["ref"] for a in args if a["ref"] != conv.out]
                if len(others) != 1:
                    return
                conv.residual = str(others[0])
                stage = 3
            else:
                return
            conv.absorbed.append(op["name"])
            conv.out = op["name"]

    def _plan(self) -> None:
        graph = self.graph
        consumers: dict[str, list[dict[str, Any]]] = {}
        uses: dict[str, int] = {}
        for op in graph:
            refs = _refs(op["args"]) + _refs(op["kwargs"])
            for ref in refs:
                uses[ref] = uses.get(ref, 0) + 1
            for ref in dict.fromkeys(refs):
                consumers.setdefault(ref, []).append(op)
        convs: dict[str, _BinaryConv] = {}  # keyed by the fused step's position (its ``out``)
        absorbed: set[str] = set()
        for op in graph:
            if op["op"] == "binary_conv2d":
                conv = self._binary_conv(op)
                if conv.kernel:
                    self._absorb(conv, consumers, uses)
                absorbed.update([conv.name, *conv.absorbed])
                convs[conv.out] = conv
        # packed bits from the producer for binary consumers sharing one threshold
        by_source: dict[str, list[_BinaryConv]] = {}
        for conv in convs.values():
            if conv.kernel:
                by_source.setdefault(conv.source, []).append(conv)
        for producer in convs.values():
            readers = by_source.get(producer.out, [])
            if not producer.kernel or not readers:
                continue
            first = readers[0].threshold
            same = all(
                (r.threshold is None and first is None)
                or (r.threshold is not None and first is not None and torch.equal(r.threshold, first))
                for r in readers
            )
            if not same:
                continue
            producer.out_threshold = torch.zeros(producer.alpha.numel()) if first is None else first
            producer.need_float = uses[producer.out] > len(readers) or producer.out == _output_ref(graph)
            for reader in readers:
                reader.bits_input = True

        shuffle_adds = self._shuffle_adds(graph, uses, absorbed)

        # values in buffers of the runtime's pool: a dead one goes back to the pool, a unary op on it
        # whose input dies there runs in place (fresh 100 MB+ HR maps cost more in page faults than math)
        owned = {c.out for c in convs.values() if c.kernel and c.need_float} | set(shuffle_adds)
        # steps in graph order; a fused step runs at the position of its last absorbed op
        self._steps: list[_Step] = []
        last_use: dict[str, int] = {}
        for op in graph:
            name = op["name"]
            if op["op"] in ("input", "output") or (name in absorbed and name not in convs):
                continue
            if name in convs:
                conv = convs[name]
                refs = [conv.source + ("#bits" if conv.bits_input else "")]
                refs += [conv.residual] if conv.residual else []
                run = self._conv_step(conv)
            elif name in shuffle_adds:
                refs = list(shuffle_adds[name][:2])
                run = self._shuffle_add_step(name, *shuffle_adds[name])
            else:
                refs = list(dict.fromkeys(_refs(op["args"]) + _refs(op["kwargs"])))
                source = refs[0] if len(refs) == 1 else None
                if op["op"] in INPLACE_OPS and source in owned and uses[source] == 1:
                    run = self._inplace_step(op)
                    owned = (owned - {source}) | {name}  # the buffer now holds this op's value
                else:
                    run = self._torch_step(op)
            self._steps.append(_Step(run))
            for ref in refs:
                last_use[ref] = len(self._steps) - 1
        output = _output_ref(graph)
        for ref, index in last_use.items():
            if ref != output:
                (self._steps[index].recycle if ref in owned else self._steps[index].free).append(ref)
        self._input = graph[0]["name"]
        self._output = output
        self._convs = convs
        self._pool: dict[tuple[int, ...], list[Tensor]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _shuffle_adds(
        graph: list[dict[str, Any]], uses: dict[str, int], absorbed: set[str]
    ) -> dict[str, tuple[str, str, int]]:
        """``add(pixel_shuffle(V, f), interpolate(X, scale_factor=f, mode="nearest"))`` patterns
        (BBCU-M's upsampler): ``{add name: (V, X, f)}``; the shuffle and interpolate join ``absorbed``."""
        producers = {op["name"]: op for op in graph}
        found: dict[str, tuple[str, str, int]] = {}
        for op in graph:
            args = op["args"]
            if op["op"] != "add" or len(args) != 2 or not all(_is_ref(a) for a in args):
                continue
            pair = [producers.get(a["ref"]) for a in args]
            for shuffle, near in (pair, pair[::-1]):
                if not (
                    shuffle and near and shuffle["op"] == "pixel_shuffle" and near["op"] == "interpolate"
                ):
                    continue
                if uses[shuffle["name"]] != 1 or uses[near["name"]] != 1 or shuffle["kwargs"]:
                    continue
                sargs, nargs, kw = shuffle["args"], near["args"], near["kwargs"]
                if len(sargs) != 2 or not _is_ref(sargs[0]) or not isinstance(sargs[1], int):
                    continue
                factor = sargs[1]
                nearest = {
                    "size": None,
                    "scale_factor": kw.get("scale_factor"),
                    "mode": "nearest",
                    "align_corners": None,
                    "recompute_scale_factor": None,
                    "antialias": False,
                }
                if len(nargs) != 1 or not _is_ref(nargs[0]) or kw != nearest or kw["scale_factor"] != factor:
                    continue
                found[op["name"]] = (str(sargs[0]["ref"]), str(nargs[0]["ref"]), factor)
                absorbed.update([shuffle["name"], near["name"]])
                break
        return found

    def _inplace_step(self, op: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        """A unary op applied in place to a pool buffer whose value dies here (same values)."""
        fn, name = INPLACE_OPS[op["op"]], op["name"]
        args = self._template(op["args"])
        kwargs = {k: v for k, v in self._template(op["kwargs"]).items() if k != "inplace"}  # type: ignore[union-attr]

        def step(env: dict[str, Any]) -> None:
            env[name] = fn(*_substitute(args, env), **_substitute(kwargs, env))

        return step

    def _shuffle_add_step(
        self, name: str, source: str, near: str, f: int
    ) -> Callable[[dict[str, Any]], None]:
        """``pixel_shuffle(V, f) + nearest_f(X)`` in one pass: element for element the same adds."""

        def step(env: dict[str, Any]) -> None:
            v, x = env[source], env[near]
            n, cf2, h, w = v.shape
            c = cf2 // (f * f)
            if cf2 % (f * f) or tuple(x.shape) != (n, c, h, w):
                shuffled = F.pixel_shuffle(v, f)
                env[name] = shuffled + F.interpolate(x, scale_factor=f, mode="nearest")
                return
            out = self._take((n, c, h * f, w * f))
            shuffled = v.view(n, c, f, f, h, w).permute(0, 1, 4, 2, 5, 3)
            torch.add(shuffled, x.reshape(n, c, h, 1, w, 1), out=out.view(n, c, h, f, w, f))
            env[name] = out

        return step

    def _torch_step(self, op: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        fn = TORCH_OPS.get(op["op"])
        if fn is None:
            raise BinsrError(f"{self.name}: op {op['op']!r} cannot run here")
        args, kwargs, name = self._template(op["args"]), self._template(op["kwargs"]), op["name"]

        def step(env: dict[str, Any]) -> None:
            env[name] = fn(*_substitute(args, env), **_substitute(kwargs, env))

        return step

    def _conv_step(self, conv: _BinaryConv) -> Callable[[dict[str, Any]], None]:
        if not conv.kernel:
            return self._float_conv_step(conv)
        common = {"stride": conv.stride, "padding": conv.padding, "rprelu": conv.rprelu}

        def step(env: dict[str, Any]) -> None:
            x = env[conv.source + "#bits"] if conv.bits_input else env[conv.source]
            threshold = None if conv.bits_input else conv.threshold
            residual = env[conv.residual] if conv.residual else None
            args = (x, conv.weights, conv.alpha, conv.bias)
            kw = {**common, "threshold": threshold, "threads": self._threads(), "isa": self.isa}
            late: Tensor | None = None
            if residual is not None:
                n, _, h, w = x.shape if isinstance(x, PackedActivations) else tuple(x.shape)
                if tuple(residual.shape) != (n, conv.alpha.numel(), *self._out_size(conv, h, w)):
                    late, residual = residual, None
            kw["residual"] = residual
            if conv.need_float:
                n, _, h, w = x.shape if isinstance(x, PackedActivations) else tuple(x.shape)
                kw["out"] = self._take((n, conv.alpha.numel(), *self._out_size(conv, h, w)))
            if conv.out_threshold is not None and late is None:
                y, bits = binary_conv2d_packed(
                    *args, out_threshold=conv.out_threshold, return_float=conv.need_float, **kw
                )
                env[conv.out + "#bits"] = bits
            else:
                y = binary_conv2d(*args, **kw)
            if late is not None:  # a broadcasting residual is added after the kernel, as a torch op
                y = y + late
                if conv.out_threshold is not None:
                    env[conv.out + "#bits"] = pack_activations(y, conv.out_threshold, threads=kw["threads"])
            if y is not None:
                env[conv.out] = y

        return step

    @staticmethod
    def _out_size(conv: _BinaryConv, h: int, w: int) -> tuple[int, int]:
        kh, kw = conv.weights.kernel_size if conv.weights is not None else (1, 1)
        return (
            (h + 2 * conv.padding[0] - kh) // conv.stride[0] + 1,
            (w + 2 * conv.padding[1] - kw) // conv.stride[1] + 1,
        )

    def _float_conv_step(self, conv: _BinaryConv) -> Callable[[dict[str, Any]], None]:
        """``BinaryConv2d.forward`` with full-precision activations: threshold, pad, conv2d."""
        ph, pw = conv.padding
        threshold = None if conv.threshold is None else conv.threshold.view(1, -1, 1, 1)

        def step(env: dict[str, Any]) -> None:
            a = env[conv.source]
            if threshold is not None:
                a = a + threshold
            if ph or pw:
                a = F.pad(a, (pw, pw, ph, ph), value=conv.pad_value)
            env[conv.out] = F.conv2d(a, conv.weight, conv.bias, conv.stride)

        return step

    # ----------------------------------------------------------------------------------- running

    def _take(self, shape: tuple[int, ...]) -> Tensor:
        """A float32 buffer of ``shape`` from the pool (allocated when none is free)."""
        free = self._pool.get(tuple(shape))
        return free.pop() if free else torch.empty(shape, dtype=torch.float32)

    def release_buffers(self) -> None:
        """Drop the pooled buffers (they are kept between calls, up to the peak of one call)."""
        with self._lock:
            self._pool.clear()

    def _threads(self) -> int:
        return resolve_threads(self.threads)

    def receptive_field_radius(self) -> int:
        """Sum over all convolutions of their half-widths, in input pixels (no resampling margin)."""
        radius = 0
        for op in self.graph:
            if op["op"] == "binary_conv2d":
                kernel, dilation = op["kwargs"]["kernel_size"], [1, 1]
            elif op["op"] == "conv2d":
                kernel = list(self._tensor(op["args"][1]).shape[-2:])
                dilation = op["args"][5] if len(op["args"]) > 5 else [1, 1]
            else:
                continue
            dilation = [dilation, dilation] if isinstance(dilation, int) else dilation
            radius += max(math.ceil(d * (k - 1) / 2) for k, d in zip(kernel, dilation, strict=False))
        return radius

    def forward(self, x: Tensor) -> Tensor:
        """Run the model on float ``[N, C, H, W]`` (CPU); returns float32 ``[N, C', s·H, s·W]``."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise BinsrError(f"{self.name} expects a float [N, C, H, W] tensor")
        threads = self._threads()
        previous = torch.get_num_threads()
        if previous != threads:
            torch.set_num_threads(threads)
        try:
            with self._lock, torch.inference_mode():
                env: dict[str, Any] = {self._input: x.detach().to(device="cpu", dtype=torch.float32)}
                for step in self._steps:
                    step.run(env)
                    for ref in step.free:
                        del env[ref]
                    for ref in step.recycle:
                        buffer = env.pop(ref)
                        self._pool.setdefault(tuple(buffer.shape), []).append(buffer)
                return env[self._output]
        finally:
            if previous != threads:
                torch.set_num_threads(previous)

    def extra_repr(self) -> str:
        kernels = sum(c.kernel for c in self._convs.values())
        return f"{self.model_name} x{self.scale}, {len(self._steps)} steps, {kernels} packed binary convs"


def _output_ref(graph: list[dict[str, Any]]) -> str:
    args = graph[-1]["args"]
    if len(args) != 1 or not _is_ref(args[0]):
        raise BinsrError("the graph's output must be a single value")
    return str(args[0]["ref"])


# -------------------------------------------------------------------------------- upscaler glue


def load_packed_upscaler(
    spec: str, scale: int | None, *, tile: int | None, overlap: int | None, progress: bool = False
) -> Any:
    """A :class:`binsr.inference.ModelUpscaler` around the :class:`PackedModel` in file ``spec``.

    Tiling is exact: the default overlap is the graph's receptive-field radius plus the resampling margin.
    """
    from binsr.inference import RESAMPLING_MARGIN, ModelUpscaler

    model = PackedModel.load(spec)
    if scale is not None and model.scale != scale:
        raise BinsrError(f"{spec} is a x{model.scale} model, but scale x{scale} was asked for")
    if overlap is None:
        overlap = model.receptive_field_radius() + RESAMPLING_MARGIN
    return ModelUpscaler(
        model,
        model.scale,
        name=spec,
        tile=tile,
        overlap=overlap,
        progress=progress,
        header=model.header,
    )

"""Speed benchmarks of the packed engine against PyTorch FP32, for ``binsr bench``.

Each benchmark *section* is a function ``(BenchConfig) -> dict`` registered in :data:`SECTIONS`; ``binsr
bench`` runs the requested ones and merges their headline numbers (``layer_speedup``, later
``model_speedup`` and the file sizes) into one JSON report. Sections:

- ``layer`` (a): one binary 3×3 convolution 64→64 at 320×180 against ``torch.nn.functional.conv2d`` FP32 of
  the same shape. ``layer_speedup`` is float NCHW in → float NCHW out, packing included (one fused call);
  ``layer_speedup_two_pass`` packs in a separate call first; ``layer_speedup_packed`` starts from packed
  activations. Both engines run with the same thread count, in one process; the cases take turns in
  rounds of a few back-to-back runs (so a change in machine load hits them alike) after a warm-up, and
  medians are reported.
- ``model`` (b): a zoo model (default :data:`DEFAULT_MODEL` x4, random init) exported to ``.binsr`` and
  run by :class:`~binsr.engine.runtime.PackedModel`, against its full-precision twin
  (``create_model(name, binary=False)``) in PyTorch FP32 under ``torch.inference_mode``, same threads,
  on a ``320×180`` input; ``model_speedup`` = twin median / packed median.
- ``size`` (c): the ``.binsr`` file against the twin's safetensors checkpoint (``save_model``);
  ``size_ratio`` = packed / twin bytes, for the benchmark model and for BBCU-L.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from binsr.engine._backend import ISA_NAMES, available_isas, resolve_isa
from binsr.engine.conv import binary_conv2d
from binsr.engine.packing import pack_activations, pack_weights
from binsr.hardware import cpu_name

#: The reference layer: BBCU's 64-channel body conv at the 320×180 LR size the papers count OPs at.
LAYER_SHAPE = {"batch": 1, "in_channels": 64, "out_channels": 64, "height": 180, "width": 320, "kernel": 3}


@dataclass
class BenchConfig:
    """What ``binsr bench`` was asked for."""

    threads: int = 2
    repeats: int = 20
    warmup: int = 3
    isa: str | None = None
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)  # section-specific options (model name, ...)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def time_in_rounds(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int, block: int = 5
) -> dict[str, dict[str, float | list[float]]]:
    """Time each case ``repeats`` times; statistics in ms.

    The cases take turns in rounds; in each round a case runs one untimed call, then ``block`` timed calls
    back to back. Turns spread slow changes of machine load over all cases, and the untimed call lets a
    case reach its steady state again after another one ran (torch's conv2d, for one, leaves the allocator
    so that the next large allocation page-faults afresh).
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    while any(len(values) < repeats for values in samples.values()):
        for name, fn in cases.items():
            todo = min(block, repeats - len(samples[name]))
            if todo <= 0:
                continue
            fn()
            for _ in range(todo):
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {
            "median": round(statistics.median(values), 4),
            "min": round(min(values), 4),
            "all": [round(v, 4) for v in values],
        }
        for name, values in samples.items()
    }


def bench_layer(config: BenchConfig) -> dict[str, object]:
    """Section (a): one binary 3×3 conv 64→64 at 320×180 vs torch FP32 conv2d (see module docstring)."""
    s = LAYER_SHAPE
    g = torch.Generator().manual_seed(config.seed)
    x = torch.randn(s["batch"], s["in_channels"], s["height"], s["width"], generator=g)
    weight = torch.randn(s["out_channels"], s["in_channels"], s["kernel"], s["kernel"], generator=g)
    bias = torch.randn(s["out_channels"], generator=g)
    threshold = 0.1 * torch.randn(s["in_channels"], generator=g)
    alpha = weight.abs().mean(dim=(1, 2, 3))
    packed_w = pack_weights(weight)
    packed_x = pack_activations(x, threshold, threads=config.threads, isa=config.isa)
    pad = s["kernel"] // 2
    kw = {"threads": config.threads, "isa": config.isa}

    cases: dict[str, Callable[[], object]] = {
        "torch_fp32": lambda: F.conv2d(x, weight, bias, padding=pad),
        # float in -> float out in one call: rows are binarized and packed inside the kernel
        "binary_float_in": lambda: binary_conv2d(x, packed_w, alpha, bias, threshold=threshold, **kw),
        # the same in two calls: pack_activations, then the packed convolution
        "binary_float_in_two_pass": lambda: binary_conv2d(
            pack_activations(x, threshold, **kw), packed_w, alpha, bias, **kw
        ),
        "binary_packed_in": lambda: binary_conv2d(packed_x, packed_w, alpha, bias, **kw),
        "pack": lambda: pack_activations(x, threshold, **kw),
    }
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.inference_mode():
            times = time_in_rounds(cases, config.repeats, config.warmup)
    finally:
        torch.set_num_threads(previous_threads)

    def median(name: str) -> float:
        value = times[name]["median"]
        assert isinstance(value, float)
        return value

    flops = (
        2 * s["batch"] * s["out_channels"] * s["in_channels"] * s["kernel"] ** 2 * s["height"] * s["width"]
    )
    return {
        "shape": dict(s),
        "times_ms": times,
        "torch_fp32_gflops": round(flops / (median("torch_fp32") * 1e6), 2),
        "layer_speedup": round(median("torch_fp32") / median("binary_float_in"), 2),
        "layer_speedup_two_pass": round(median("torch_fp32") / median("binary_float_in_two_pass"), 2),
        "layer_speedup_packed": round(median("torch_fp32") / median("binary_packed_in"), 2),
    }


#: Defaults of the model sections: the fastest binary x4 model of the zoo (its upsampler and ``conv_hr``
#: are binary too) at the LR size the papers count OPs at, and the model whose file size the brief targets.
DEFAULT_MODEL = "bbcu_m"
DEFAULT_SCALE = 4
DEFAULT_INPUT = (320, 180)
DEFAULT_MODEL_REPEATS = 5
SIZE_REFERENCE_MODEL = "bbcu_l"


def _model_options(config: BenchConfig) -> tuple[str, int, tuple[int, int]]:
    name = str(config.extra.get("model", DEFAULT_MODEL))
    scale = int(config.extra.get("scale", DEFAULT_SCALE))  # type: ignore[call-overload]
    width, height = config.extra.get("input", DEFAULT_INPUT)  # type: ignore[misc]
    return name, scale, (int(width), int(height))


def _export_to(folder: str, name: str, scale: int) -> str:
    """Export a random-init binary ``name`` at ``scale`` into ``folder``; returns the path."""
    from binsr.engine.export import export_model
    from binsr.models import create_model

    path = os.path.join(folder, f"{name}_x{scale}.binsr")
    export_model(create_model(name, scale=scale).eval(), path)
    return path


def bench_model(config: BenchConfig) -> dict[str, object]:
    """Section (b): the exported binary model on the packed runtime against its full-precision twin
    (``create_model(name, binary=False)``, FP32 PyTorch under ``torch.inference_mode``), same threads."""
    from binsr.engine.runtime import PackedModel
    from binsr.models import create_model

    name, scale, (width, height) = _model_options(config)
    repeats = int(config.extra.get("model_repeats", DEFAULT_MODEL_REPEATS))  # type: ignore[call-overload]
    torch.manual_seed(config.seed)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(config.seed))
    with tempfile.TemporaryDirectory() as folder:
        packed = PackedModel.load(_export_to(folder, name, scale), threads=config.threads, isa=config.isa)
    twin = create_model(name, scale=scale, binary=False).eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.inference_mode():
            times = time_in_rounds(
                {"torch_fp32_twin": lambda: twin(x), "packed": lambda: packed(x)},
                repeats,
                config.warmup,
            )
    finally:
        torch.set_num_threads(previous_threads)
    fp, binary = times["torch_fp32_twin"]["median"], times["packed"]["median"]
    assert isinstance(fp, float) and isinstance(binary, float)
    return {
        "model": name,
        "scale": scale,
        "input": [width, height],
        "repeats": repeats,
        "times_ms": times,
        "model_speedup": round(fp / binary, 2),
    }


def bench_size(config: BenchConfig) -> dict[str, object]:
    """Section (c): ``.binsr`` file against the full-precision twin's safetensors checkpoint
    (:func:`binsr.checkpoint.save_model`), for the benchmark model and for BBCU-L."""
    from binsr.checkpoint import save_model
    from binsr.models import create_model

    name, scale, _ = _model_options(config)
    sizes: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in dict.fromkeys([name, SIZE_REFERENCE_MODEL]):
            twin_path = os.path.join(folder, f"{model}_fp.safetensors")
            twin = create_model(model, scale=scale, binary=False)
            save_model(twin_path, twin)
            packed_bytes = os.path.getsize(_export_to(folder, model, scale))
            twin_bytes = os.path.getsize(twin_path)
            sizes[model] = {
                "packed_bytes": packed_bytes,
                "fp_twin_bytes": twin_bytes,
                "size_ratio": round(packed_bytes / twin_bytes, 4),
                "binary_conv_params": sum(
                    m.weight.numel() for m in twin.modules() if type(m).__name__ == "BinaryConv2d"
                ),
                "total_params": sum(p.numel() for p in twin.parameters()),
            }
    result: dict[str, object] = {"scale": scale, "models": sizes}
    result["size_ratio"] = sizes[name]["size_ratio"]
    result[f"size_ratio_{SIZE_REFERENCE_MODEL}"] = sizes[SIZE_REFERENCE_MODEL]["size_ratio"]
    return result


#: name -> section function; ``binsr bench --sections`` picks from these, in this order.
SECTIONS: dict[str, Callable[[BenchConfig], dict[str, object]]] = {
    "layer": bench_layer,
    "model": bench_model,
    "size": bench_size,
}

#: Headline numbers copied from a section to the top level of the report.
HEADLINES: dict[str, tuple[str, ...]] = {
    "layer": ("layer_speedup", "layer_speedup_two_pass", "layer_speedup_packed"),
    "model": ("model_speedup",),
    "size": ("size_ratio", f"size_ratio_{SIZE_REFERENCE_MODEL}"),
}


def run_benchmarks(config: BenchConfig, sections: list[str] | None = None) -> dict[str, object]:
    """Run the named sections (default: all) and return the JSON-ready report."""
    names = list(SECTIONS) if sections is None else sections
    isa = ISA_NAMES[resolve_isa(config.isa)]
    report: dict[str, object] = {
        "threads": config.threads,
        "repeats": config.repeats,
        "warmup": config.warmup,
        "isa": isa,
        "machine": {
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "available_isas": available_isas(),
            "torch": torch.__version__,
            "loadavg_before": _loadavg(),
        },
    }
    for name in names:
        result = SECTIONS[name](config)
        report[name] = result
        for key in HEADLINES.get(name, ()):
            if key in result:
                report[key] = result[key]
    machine = report["machine"]
    assert isinstance(machine, dict)
    machine["loadavg_after"] = _loadavg()
    return report

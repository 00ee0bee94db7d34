"""``binsr bench``: speed of the packed binary engine against PyTorch FP32 on this machine.

Part (a), ``layer``: one binary 3×3 convolution 64→64 at 320×180 against ``torch.nn.functional.conv2d`` FP32
of the same shape with the same thread count, timed in one process (cases take turns in rounds, medians
after a warm-up). ``layer_speedup`` counts the packing of the float input (fused into the kernel call);
``layer_speedup_packed`` starts from packed activations (as inside a network whose previous layer emits
bits). Part (b), ``model``: a zoo model (``--model``, default the fastest binary x4 model, BBCU-M) exported
to ``.binsr`` and run by the packed runtime against its full-precision twin in PyTorch FP32 at ``--input``
(default 320x180); ``model_speedup`` is the ratio of medians. Part (c), ``size``: the ``.binsr`` file
against the twin's safetensors checkpoint (``size_ratio``), for that model and for BBCU-L.
"""

from __future__ import annotations

import argparse
import json
import sys

from binsr.cli.common import parse_size
from binsr.engine.benchmark import (
    DEFAULT_INPUT,
    DEFAULT_MODEL,
    DEFAULT_MODEL_REPEATS,
    DEFAULT_SCALE,
    SECTIONS,
    BenchConfig,
    run_benchmarks,
)
from binsr.errors import BinsrError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="time the binary engine against PyTorch FP32",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines (default: 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per case (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per case first (default: 3)")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"zoo model of (b) and (c) (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--scale", type=int, choices=(2, 3, 4), default=DEFAULT_SCALE, help="its scale (default: 4)"
    )
    parser.add_argument(
        "--input",
        default="x".join(map(str, DEFAULT_INPUT)),
        metavar="WxH",
        help="LR input size of (b) (default: %(default)s)",
    )
    parser.add_argument(
        "--model-repeats",
        type=int,
        default=DEFAULT_MODEL_REPEATS,
        help=f"timed runs per model in (b) (default: {DEFAULT_MODEL_REPEATS})",
    )
    parser.add_argument(
        "--isa",
        choices=("auto", "avx512", "avx2", "generic"),
        default=None,
        help="engine ISA path (default: $BINSR_ENGINE_ISA or the best this CPU runs)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, from {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    parser.add_argument("-o", "--output", default=None, help="also write the JSON report to this file")
    parser.set_defaults(func=run)


def _parse_sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise BinsrError(f"unknown bench section(s) {unknown or [text]}; choose from {', '.join(SECTIONS)}")
    return names


def format_table(report: dict) -> str:
    """A short human-readable rendering of a report from :func:`run_benchmarks`."""
    machine = report["machine"]
    lines = [
        f"binsr bench: {machine['cpu']}, {report['threads']} thread(s), ISA {report['isa']}, "
        f"median of {report['repeats']} runs after {report['warmup']} warm-up",
        f"load average before/after: {machine['loadavg_before']} / {machine['loadavg_after']}",
    ]
    layer = report.get("layer")
    if layer:
        s = layer["shape"]
        t = layer["times_ms"]
        lines += [
            "",
            f"(a) layer: {s['in_channels']}->{s['out_channels']} {s['kernel']}x{s['kernel']} conv at "
            f"{s['width']}x{s['height']}, batch {s['batch']}",
            f"  {'case':<38}{'median ms':>10}{'min ms':>10}",
        ]
        labels = {
            "torch_fp32": "torch FP32 conv2d",
            "binary_float_in": "binary, float in (packing fused)",
            "binary_float_in_two_pass": "binary, float in (pack, then conv)",
            "binary_packed_in": "binary, packed in",
            "pack": "packing only (threshold + bits)",
        }
        for key, label in labels.items():
            lines.append(f"  {label:<38}{t[key]['median']:>10.3f}{t[key]['min']:>10.3f}")
        lines.append(
            f"  layer_speedup {layer['layer_speedup']:.1f}x (float in; two-pass "
            f"{layer['layer_speedup_two_pass']:.1f}x), {layer['layer_speedup_packed']:.1f}x (packed in); "
            f"torch at {layer['torch_fp32_gflops']} GFLOP/s"
        )
    model = report.get("model")
    if model:
        t = model["times_ms"]
        lines += [
            "",
            f"(b) model: {model['model']} x{model['scale']} at {model['input'][0]}x{model['input'][1]}, "
            f"median of {model['repeats']} runs",
            f"  {'case':<38}{'median ms':>10}{'min ms':>10}",
            *(
                f"  {label:<38}{t[key]['median']:>10.1f}{t[key]['min']:>10.1f}"
                for key, label in (
                    ("torch_fp32_twin", "PyTorch FP32 twin"),
                    ("packed", "packed runtime (.binsr)"),
                )
            ),
            f"  model_speedup {model['model_speedup']:.1f}x",
        ]
    size = report.get("size")
    if size:
        lines += ["", f"(c) size at x{size['scale']}: .binsr file vs the FP twin's safetensors file"]
        for name, row in size["models"].items():
            lines.append(
                f"  {name:<10}{row['packed_bytes']:>12,} B vs {row['fp_twin_bytes']:>12,} B  "
                f"ratio {row['size_ratio']:.4f} (1/{1 / row['size_ratio']:.1f})"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print it."""
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        raise BinsrError("--threads and --repeats must be >= 1 and --warmup >= 0")
    if args.model_repeats < 1:
        raise BinsrError("--model-repeats must be >= 1")
    config = BenchConfig(
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        isa=None if args.isa in (None, "auto") else args.isa,
        extra={
            "model": args.model,
            "scale": args.scale,
            "input": parse_size(args.input),
            "model_repeats": args.model_repeats,
        },
    )
    report = run_benchmarks(config, _parse_sections(args.sections))
    text = json.dumps(report, indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    sys.stdout.write((text if args.format == "json" else format_table(report)) + "\n")
    return 0

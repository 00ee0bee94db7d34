"""Training-step speed: eager PyTorch against ``torch.compile`` (``binsr train --compile``), same run.

    python scripts/bench_train_step.py [--device cpu|cuda] [--threads 1] [--repeats 7] [-o FILE.json]

For each network of the study's CPU track (32 channels x 4 blocks, x2, batch 64 of 24x24 LR patches):
one Adam step (forward, L1 loss, backward, update) is timed ``--steps`` times in a row, ``--repeats``
times, the eager and the compiled model alternating so both see the same machine load; the medians and
their ratio are printed (and written as JSON with ``-o``). Compilation is done before timing and
reported apart. Both models start from the same weights and are fed the same batch; the first step's
losses are printed too, so a ratio never hides a different computation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from binsr.hardware import device_name
from binsr.models import create_model

NETWORKS = {
    "bbcu_l binary": ("bbcu_l", {"binary": True}),
    "ours binary": ("ours", {"binary": True}),
    "ours twin (FP)": ("ours", {"binary": False}),
}


def make_step(name: str, kwargs: dict, device: torch.device, compiled: bool) -> Callable[[], torch.Tensor]:
    """One training step of a fresh seed-0 model on a fixed batch (compiled through torch.compile)."""
    torch.manual_seed(0)
    model = create_model(name, scale=2, n_feats=32, n_blocks=4, **kwargs).to(device)
    generator = torch.Generator().manual_seed(1)
    lr = torch.rand(64, 3, 24, 24, generator=generator).to(device)
    hr = torch.rand(64, 3, 48, 48, generator=generator).to(device)
    model(lr[:1])  # lazy initialisations, as in a training run
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = (forward(lr) - hr).abs().mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def timed(step: Callable[[], torch.Tensor], steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps (the device drained before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in the study)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    parser.add_argument("-o", "--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = device_name(args.device)
    results = []
    for label, (name, kwargs) in NETWORKS.items():
        eager = make_step(name, kwargs, device, compiled=False)
        compiled = make_step(name, kwargs, device, compiled=True)
        started = time.perf_counter()
        first = float(compiled())
        compile_seconds = time.perf_counter() - started
        eager_first = float(eager())
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            times["eager"].append(timed(eager, args.steps, device))
            times["compiled"].append(timed(compiled, args.steps, device))
        eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
        row = {
            "network": label,
            "eager_s_per_step": round(eager_s, 5),
            "compiled_s_per_step": round(compiled_s, 5),
            "speedup": round(eager_s / compiled_s, 3),
            "compile_seconds": round(compile_seconds, 1),
            "first_loss": {"eager": eager_first, "compiled": first},
        }
        results.append(row)
        print(
            f"{label:16s} eager {eager_s * 1e3:8.1f} ms/step  compiled {compiled_s * 1e3:8.1f} ms/step  "
            f"speedup x{row['speedup']:.2f}  (compilation {compile_seconds:.0f} s; first loss "
            f"{eager_first:.6f} / {first:.6f})",
            flush=True,
        )
    report = {
        "machine": machine,
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "repeats": args.repeats,
        "steps": args.steps,
        "results": results,
    }
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

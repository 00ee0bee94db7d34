"""A run's trained weights, its EMA weights with copied and with re-estimated BatchNorm statistics.

    python scripts/ema_batchnorm_check.py RUN_DIR [RUN_DIR ...] [--data ../shared/data] [--sets Set5]
        [--json docs/results/ema_batchnorm_check.json]

Each run folder's committed training state (``last_state.safetensors``) holds the trained model
(``model.*``) and its EMA copy (``ema.*``). Before session 12 the trainer copied the trained model's
BatchNorm statistics into the EMA copy every step; this prints, per run and set, the PSNR / SSIM of
(1) the trained weights, (2) the EMA weights with those copied statistics (what the trainer validated
and saved then, if the state was written by it), and (3) the EMA weights with statistics re-estimated
by :func:`binsr.train.batchnorm.recalibrate_batchnorm` (what it validates and saves now), as a Markdown
table, and writes them as JSON. Evaluation is ``binsr eval``'s (MATLAB Y-channel protocol).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from binsr.evaluate import evaluate
from binsr.fileio import atomic_write_bytes
from binsr.inference import ModelUpscaler
from binsr.models import create_model
from binsr.train.batchnorm import calibration_batches, recalibrate_batchnorm
from binsr.train.config import model_kwargs
from binsr.train.data import sampler_from_config
from binsr.train.state import load_state

VARIANTS = ("trained", "EMA, copied statistics", "EMA, re-estimated statistics")


def score(model: torch.nn.Module, scale: int, folders: list[str]) -> list[list[float]]:
    rows = evaluate(ModelUpscaler(model=model, scale=scale, tile=None), folders, [scale], progress=False)
    return [[round(row["psnr"], 4), round(row["ssim"], 6)] for row in rows]


def check_run(run_dir: Path, folders: list[str]) -> dict[str, object]:
    """The three scores of one run folder, with the iteration its training state is at."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    loaded = load_state(run_dir)
    if loaded is None:
        raise SystemExit(f"{run_dir} has no training state")
    tensors, info = loaded
    network, scale = config["network"], config["scale"]

    def model_from(prefix: str) -> torch.nn.Module:
        model = create_model(network["name"], scale=scale, **model_kwargs(network))
        start = len(prefix) + 1
        model.load_state_dict({k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        return model.eval()

    ema = model_from("ema")
    scores = {VARIANTS[0]: score(model_from("model"), scale, folders)}
    scores[VARIANTS[1]] = score(ema, scale, folders)
    train_data = config["datasets"]["train"]
    sampler = sampler_from_config(train_data, scale)
    if not recalibrate_batchnorm(ema, calibration_batches(sampler, config["seed"], train_data["batch_size"])):
        raise SystemExit(f"{run_dir}: {network['name']} has no BatchNorm layer")
    scores[VARIANTS[2]] = score(ema, scale, folders)
    iteration = int(info["iteration"])
    return {"run": run_dir.name, "model": network["name"], "iteration": iteration, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with a training state")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--sets", nargs="+", default=["Set5"])
    parser.add_argument("--json", type=Path, default=Path("docs/results/ema_batchnorm_check.json"))
    args = parser.parse_args()
    folders = [str(args.data / name) for name in args.sets]
    results = [check_run(run_dir, folders) for run_dir in args.runs]
    atomic_write_bytes(args.json, (json.dumps(results, indent=1) + "\n").encode("utf-8"))
    header = " | ".join(f"{variant}: {name}" for variant in VARIANTS for name in args.sets)
    print(f"| run | iteration | {header} |")
    print("|---|---|" + "---|" * (len(VARIANTS) * len(args.sets)))
    for result in results:
        cells = [f"{p:.2f} / {s:.4f}" for variant in VARIANTS for p, s in result["scores"][variant]]  # type: ignore[index]
        print(f"| {result['run']} | {result['iteration']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""BatchNorm statistics of the averaged (EMA) model, re-estimated on training batches.

The EMA model ``θ_ema ← d·θ_ema + (1 − d)·θ`` (Polyak averaging) is another network than the one being
trained, but the running mean and variance of its BatchNorm layers are copied from the trained one
(BasicSR's EMA does the same), so they describe the trained network's activations, not its own. For a
full-precision network the two are close. For a binary one they need not be: the average of a latent
weight can have another sign than the latent weight, so the EMA model's binary convolutions are other
convolutions, and normalising their outputs with the trained network's statistics shifts every
feature. Measured on the cpu study's x2 ``ma2019`` run (Set5, ``scripts/ema_batchnorm_check.py``,
docs/results/ema_batchnorm_check.md): at iteration 7506, 37.01 dB with the trained weights, 34.85 dB
with the EMA weights and copied statistics, 37.05 dB with the EMA weights and statistics re-estimated
here; at the end (12000), 37.09, 36.26 and 37.10 dB.

The remedy is stochastic weight averaging's (Izmailov et al., "Averaging Weights Leads to Wider Optima
and Better Generalization", UAI 2018; ``torch.optim.swa_utils.update_bn``): run the averaged model in
train mode over training batches, with each BatchNorm layer's running statistics reset and
accumulated as a plain (cumulative) average, ``μ = mean_k μ_k`` and ``σ² = mean_k σ²_k`` over the
batches ``k`` (PyTorch's ``momentum=None``). The batches are the run's own first
:data:`CALIBRATION_BATCHES` training batches (:meth:`binsr.train.data.PatchSampler.batch`), so the
result depends only on the weights, the training data and the seed: the trainer and a later
re-estimation of a saved checkpoint give the same statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from binsr.checkpoint import RESERVED_KEYS, load_model, read_model_header, save_model
from binsr.train.data import PatchSampler, sampler_from_config

__all__ = [
    "CALIBRATION_BATCHES",
    "calibration_batches",
    "has_batchnorm",
    "recalibrate_batchnorm",
    "recalibrate_checkpoint",
]

CALIBRATION_BATCHES = 32
"""Training batches that re-estimate the statistics (2048 patches at the study's batch of 64)."""


def _batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """``model``'s BatchNorm layers that keep running statistics."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that keeps running statistics."""
    return bool(_batchnorm_layers(model))


def calibration_batches(
    sampler: PatchSampler, seed: int, batch_size: int, count: int = CALIBRATION_BATCHES
) -> Iterator[torch.Tensor]:
    """The LR inputs of training batches ``0 … count − 1`` of a run seeded ``seed`` (whole batches)."""
    for iteration in range(count):
        lr, _ = sampler.batch(seed, iteration, batch_size)
        yield lr


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> bool:
    """Replace the running statistics of ``model``'s BatchNorm layers by their average over ``batches``.

    Each batch is moved to the model's device and run in train mode; the layers' momenta and the
    model's train/eval mode are restored afterwards. Returns False (and runs nothing) when the model
    has no BatchNorm layer with running statistics.
    """
    layers = _batchnorm_layers(model)
    if not layers:
        return False
    device = next(model.parameters()).device
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches
    model.train()
    try:
        for batch in batches:
            model(batch.to(device))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)
    return True


def recalibrate_checkpoint(path: Path, config: dict[str, Any]) -> bool:
    """Re-estimate the BatchNorm statistics of an EMA model checkpoint saved without them.

    ``path`` is a run's model file (``last.safetensors``) and ``config`` the run's resolved config
    (its training data, seed and batch size). A checkpoint of a model without BatchNorm, of a run
    trained without EMA, or already re-estimated (header field ``bn_recalibrated``, written by the
    trainer) is left alone (returns False). Otherwise the statistics are re-estimated exactly as the
    trainer does at its last iteration (the trained network's path does not depend on the EMA copy, so
    the result is the checkpoint the trainer writes now), the file is rewritten atomically with
    ``bn_recalibrated`` in its header and without its stale ``val_psnr``, and True is returned.
    """
    header = read_model_header(path)
    if not header.get("ema") or "bn_recalibrated" in header:
        return False
    model = load_model(path)
    if not has_batchnorm(model):
        return False
    set_progress = getattr(model, "set_progress", None)
    if callable(set_progress):
        set_progress(1.0)
    train_data = config["datasets"]["train"]
    sampler = sampler_from_config(train_data, config["scale"])
    recalibrate_batchnorm(model, calibration_batches(sampler, config["seed"], train_data["batch_size"]))
    extra = {key: value for key, value in header.items() if key not in RESERVED_KEYS | {"val_psnr"}}
    save_model(path, model.eval(), extra={**extra, "bn_recalibrated": CALIBRATION_BATCHES})
    return True

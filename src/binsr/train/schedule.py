"""Learning-rate schedules as pure functions of the iteration.

The rate of step ``i`` (0-based) is :func:`learning_rate` of the config and ``i``, set on every parameter
group before the step. Having no scheduler object means there is no scheduler state to save: a resumed
run gets the same rates as an uninterrupted one by construction.

* ``multistep``: ``lr · gamma^(number of milestones <= i)`` (BasicSR's ``MultiStepLR``; BBCU halves
  the rate at 200k of 300k iterations).
* ``cosine``: ``eta_min + (lr - eta_min) · (1 + cos(π t)) / 2`` with ``t`` going from 0 after the
  warm-up to 1 at the last iteration.
* ``constant``: ``lr``.

A linear warm-up over the first ``warmup_iterations`` steps multiplies the rate by ``(i + 1) / warmup``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["learning_rate"]


def learning_rate(base_lr: float, scheduler: Mapping[str, Any], iterations: int, iteration: int) -> float:
    """The rate for 0-based step ``iteration`` of ``iterations`` under a resolved ``train.scheduler``."""
    warmup = scheduler["warmup_iterations"]
    kind = scheduler["type"]
    if kind == "multistep":
        lr = base_lr * scheduler["gamma"] ** bisect.bisect_right(scheduler["milestones"], iteration)
    elif kind == "cosine":
        span = max(iterations - 1 - warmup, 1)
        t = min(max(iteration - warmup, 0) / span, 1.0)
        lr = scheduler["eta_min"] + (base_lr - scheduler["eta_min"]) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif kind == "constant":
        lr = base_lr
    else:
        raise ValueError(f"unknown scheduler type {kind!r}")
    if iteration < warmup:
        lr *= (iteration + 1) / warmup
    return lr

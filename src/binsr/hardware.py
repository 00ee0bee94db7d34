"""What a job runs on, described for the records that benchmarks and training runs keep.

Used by the engine's benchmarks (:mod:`binsr.engine.benchmark`), the training loop (the time it
spent on each device, :class:`binsr.train.Trainer`) and the study (its speed estimates,
:mod:`binsr.study.runner`)."""

from __future__ import annotations

import os
import platform

UNRECORDED_DEVICE = "not recorded"
"""The device of training iterations whose device nobody wrote down: those of a training state saved
before the state kept a tally per device (session 35), and runs recorded before ``study.json`` kept one."""


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | None, threads: int | None = None) -> str:
    """What a run trains on: the GPU's name for ``cuda`` (or ``None`` where a GPU is available), else
    the CPU's model, its logical cores and the torch threads (``threads``, default torch's present
    count), e.g. ``CPU AMD EPYC (2 cores, 2 torch threads)``."""
    import torch

    if device == "cuda" or (device is None and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return f"CPU {cpu_name()} ({os.cpu_count()} cores, {threads or torch.get_num_threads()} torch threads)"

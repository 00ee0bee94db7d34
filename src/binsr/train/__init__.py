"""Training: YAML config, deterministic patch sampling, the loop, resumable checkpoints, DDP.

Entry points: :func:`load_config` (read, override, validate and resolve a YAML config) and :func:`train`
(run it in ``<path.runs>/<name>/``). The command line is ``binsr train`` (:mod:`binsr.cli.train`).

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv``, ``curves.png``,
``best.safetensors`` and ``last.safetensors`` (model files for :func:`binsr.checkpoint.load_model`),
``last_state.safetensors`` + ``last_state.json`` (the training state for ``--resume``) and, when
TensorBoard is installed, ``tensorboard/``.
"""

from binsr.train.config import SCHEMA, apply_overrides, dump_config, load_config, resolve_config
from binsr.train.loop import BEST_FILE, CONFIG_FILE, LAST_FILE, Trainer, TrainResult, train

__all__ = [
    "BEST_FILE",
    "CONFIG_FILE",
    "LAST_FILE",
    "SCHEMA",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "dump_config",
    "load_config",
    "resolve_config",
    "train",
]

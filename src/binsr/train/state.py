"""The training state of a run, saved so that a killed run resumes bit-identically (no pickle).

Tensors (raw model weights, EMA weights, optimizer moments, RNG states) go to
``last_state.safetensors``; everything else (iteration, optimizer hyper-parameters, grad-scaler state,
best PSNR, ...) to ``last_state.json``. Two files cannot be replaced in one atomic step, so a save is a
small two-phase commit; each step is itself atomic (temporary file, fsync, ``os.replace``):

1. write the tensors to ``last_state.next.safetensors``;
2. write ``last_state.json`` holding the SHA-256 of that tensor file (the commit point);
3. rename ``last_state.next.safetensors`` over ``last_state.safetensors``.

:func:`load_state` takes the tensor file whose hash the JSON names: ``next`` if the run died between
steps 2 and 3 (it then finishes the rename), otherwise ``last_state.safetensors``. A run killed before
step 2 keeps its previous, consistent state.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import torch

from binsr.checkpoint import load_safetensors, save_safetensors_atomic
from binsr.errors import BinsrError
from binsr.fileio import atomic_write_bytes

__all__ = [
    "STATE_JSON",
    "STATE_NEXT",
    "STATE_TENSORS",
    "get_rng_state",
    "load_state",
    "maybe_kill",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "save_state",
    "set_rng_state",
    "state_is_whole",
]

STATE_TENSORS = "last_state.safetensors"
STATE_NEXT = "last_state.next.safetensors"
STATE_JSON = "last_state.json"
KILL_ENV = "BINSR_TEST_KILL"
STATE_FORMAT = "binsr-train-state"
STATE_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_state(run_dir: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Commit ``tensors`` and the JSON-serialisable ``info`` as the run's state (see the module doc)."""
    next_path = run_dir / STATE_NEXT
    save_safetensors_atomic(next_path, tensors)
    maybe_kill("state-next", info.get("iteration"))
    record = {"format": STATE_FORMAT, "version": STATE_VERSION, "tensors_sha256": _sha256(next_path), **info}
    atomic_write_bytes(run_dir / STATE_JSON, json.dumps(record, indent=1).encode("utf-8"))
    maybe_kill("state-json", info.get("iteration"))
    os.replace(next_path, run_dir / STATE_TENSORS)


def state_is_whole(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a committed state whose tensor file is the one its JSON names (a copy
    taken while the run saved a checkpoint may pair one checkpoint's JSON with another's tensors)."""
    json_path, tensor_path = run_dir / STATE_JSON, run_dir / STATE_TENSORS
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not (isinstance(record, dict) and tensor_path.is_file()):
        return False
    return _sha256(tensor_path) == record.get("tensors_sha256")


def load_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(tensors, info)`` of the last committed state, or ``None`` if the run has none yet."""
    json_path = run_dir / STATE_JSON
    if not json_path.is_file():
        return None
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BinsrError(f"cannot read training state {json_path}: {error}") from None
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        raise BinsrError(f"{json_path} is not a binsr training state")
    if record.get("version") != STATE_VERSION:
        raise BinsrError(f"{json_path} has state version {record.get('version')!r}; expected {STATE_VERSION}")
    next_path, tensor_path = run_dir / STATE_NEXT, run_dir / STATE_TENSORS
    if next_path.is_file():
        if _sha256(next_path) == record["tensors_sha256"]:
            os.replace(next_path, tensor_path)
        else:
            next_path.unlink()
    if not tensor_path.is_file() or _sha256(tensor_path) != record["tensors_sha256"]:
        raise BinsrError(
            f"training state in {run_dir} is incomplete: {tensor_path} does not match {json_path}"
        )
    tensors, _ = load_safetensors(tensor_path)
    return tensors, record


def maybe_kill(point: str, iteration: object) -> None:
    """Crash-test hook: ``BINSR_TEST_KILL=<point>@<iteration>[:<SIGNAL>]`` sends this process SIGKILL (or
    the named signal, e.g. ``SIGTERM``) there.

    Points: ``step`` (after an optimizer step, before any logging or saving), ``state-next`` and
    ``state-json`` (inside :func:`save_state`, after phases 1 and 2) and ``checkpoint`` (after a whole
    checkpoint). Used by the kill-and-resume tests; without the variable it does nothing.
    """
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    where, _, name = target.partition(":")
    if where == f"{point}@{iteration}":
        os.kill(os.getpid(), signal.Signals[name] if name else signal.SIGKILL)


def optimizer_to_flat(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (named ``prefix.<param>.<key>``) and JSON data."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any], prefix: str
) -> None:
    """Inverse of :func:`optimizer_to_flat`: load the saved state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith(prefix + "."):
            param_id, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(param_id), {})[key] = tensor
    for name, value in info["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and key != "params" else value
            for key, value in group.items()
        }
        for group in info["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def get_rng_state() -> dict[str, torch.Tensor]:
    """The torch CPU (and CUDA) generator states as uint8 tensors."""
    states = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Restore the generator states saved by :func:`get_rng_state`."""
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)

"""Model checkpoints: safetensors files that rebuild their model, written atomically and read safely.

A binsr model file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file holding the model's
``state_dict`` (contiguous CPU tensors) plus one metadata entry, ``"binsr"``, a JSON string::

    {"format": "binsr-model", "version": 1, "model": "bbcu_l", "scale": 4, "kwargs": {...}, ...extra}

``model``, ``scale`` and ``kwargs`` come from ``model.config`` (set by :func:`binsr.create_model`), so
:func:`load_model` can rebuild the network with ``create_model(model, scale=scale, **kwargs)`` before it
loads the weights. Anything else the writer passes as ``extra`` (a training step, a dataset name, ...)
rides along in the same JSON object and is returned by :func:`read_model_header`.

Reading never unpickles: a ``torch.save`` file (zip or legacy pickle) is refused outright, and a
truncated, garbage or mismatched file is refused with a one-line :class:`~binsr.errors.BinsrError`
naming the file. Writing goes to a temporary file in the destination folder, is fsynced and then
``os.replace``-d into place, so a crash never leaves a half-written checkpoint under the final name.

Example::

    >>> model = binsr.create_model("bbcu_l", scale=4)
    >>> save_model("bbcu_l_x4.safetensors", model, extra={"step": 1000})
    >>> model2 = load_model("bbcu_l_x4.safetensors")
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as _safetensors_load_file
from safetensors.torch import save as _safetensors_save
from torch import nn

from binsr.errors import BinsrError
from binsr.fileio import atomic_write_bytes

FORMAT = "binsr-model"
VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
METADATA_KEY = "binsr"
RESERVED_KEYS = frozenset({"format", "version", "model", "scale", "kwargs"})
"""Header fields :func:`save_model` writes itself; the rest of a header is the caller's ``extra``."""

PathLike = str | os.PathLike[str]

# Magic bytes of files written by torch.save: the zip container (torch >= 1.6) and a raw pickle stream
# (protocol 2+ starts with 0x80; the legacy torch format is a pickle too).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def save_safetensors_atomic(
    path: PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save ``tensors`` (moved to CPU, made contiguous, shared storage copied) and string ``metadata``.

    The file is written with :func:`atomic_write_bytes`.
    """
    cpu = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    atomic_write_bytes(path, _safetensors_save(cpu, metadata=metadata))


def save_model(path: PathLike, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Save ``model``'s ``state_dict`` and its ``config`` as a binsr safetensors checkpoint.

    ``model.config`` must be ``{"name": str, "scale": int, "kwargs": dict}`` (as set by
    :func:`binsr.create_model`); ``extra`` must be JSON-serialisable and may not reuse the reserved keys
    ``format``, ``version``, ``model``, ``scale`` and ``kwargs``.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not {"name", "scale", "kwargs"} <= config.keys():
        raise ValueError("model has no binsr config {'name', 'scale', 'kwargs'}; build it with create_model")
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": config["name"],
        "scale": int(config["scale"]),
        "kwargs": dict(config["kwargs"]),
    }
    clash = sorted(set(extra or {}) & RESERVED_KEYS)
    if clash:
        raise ValueError(f"extra checkpoint fields clash with reserved keys: {', '.join(clash)}")
    header.update(extra or {})
    save_safetensors_atomic(path, model.state_dict(), {METADATA_KEY: json.dumps(header, sort_keys=True)})


def _read_header(path: PathLike) -> tuple[Path, dict[str, Any]]:
    """Check that ``path`` is a complete safetensors file (not a pickle) and return its JSON header.

    Only the header bytes are read; the tensor data is checked against the file size.
    """
    path = Path(path)
    if not path.exists():
        raise BinsrError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise BinsrError(f"checkpoint {path} is not a file")
    try:
        with path.open("rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            valid_size = 0 <= size <= min(file_size - 8, _MAX_HEADER_BYTES)
            raw = handle.read(size) if valid_size else b""
    except OSError as error:
        raise BinsrError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    # A safetensors header is a JSON object right after its 8-byte length; a pickle starts with 0x80
    # (protocol 2+) and a torch.save zip with "PK". The length's first byte can be 0x80 too, so the
    # pickle test applies only to files whose header is not JSON.
    if not raw.lstrip().startswith(b"{") and (prefix.startswith(_ZIP_MAGIC) or prefix[:1] == b"\x80"):
        raise BinsrError(f"refusing to load pickle checkpoint {path} (binsr only loads safetensors)")
    try:
        if not valid_size:
            raise ValueError("truncated or garbage header")
        header = _validate_header(json.loads(raw.decode("utf-8")), file_size - 8 - size)
    except (ValueError, TypeError, KeyError) as error:
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise BinsrError(
                f"refusing to load pickle checkpoint {path} (binsr only loads safetensors)"
            ) from None
        reason = "header is not JSON" if isinstance(error, json.JSONDecodeError) else str(error)
        raise BinsrError(f"checkpoint {path} is not a valid safetensors file ({reason})") from None
    return path, header


def _validate_header(header: object, body_size: int) -> dict[str, Any]:
    """``header`` if it is a safetensors header whose tensor data fills exactly ``body_size`` bytes."""
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ValueError(f"bad entry for tensor {name!r}")
        end = max(end, int(offsets[1]))
    if end != body_size:
        raise ValueError(f"truncated: tensor data needs {end} bytes, file has {body_size}")
    return header


def load_safetensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file safely: ``(tensors on CPU, string metadata)``.

    Refuses a missing file, a pickle (``torch.save``) file, and a truncated or garbage file with a
    one-line :class:`BinsrError` naming the file.
    """
    path, header = _read_header(path)
    try:
        tensors = _safetensors_load_file(path, device="cpu")
    except Exception as error:  # the library raises its own SafetensorError and friends
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BinsrError(f"checkpoint {path} is not a valid safetensors file ({reason})") from None
    return tensors, dict(header.get("__metadata__") or {})


def _model_header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """Decode and validate the ``binsr`` metadata entry of a model checkpoint."""
    from binsr.models import list_models
    from binsr.models.registry import SUPPORTED_SCALES

    if METADATA_KEY not in metadata:
        raise BinsrError(
            f"checkpoint {path} is a safetensors file but not a binsr model (no 'binsr' metadata)"
        )
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError:
        raise BinsrError(f"checkpoint {path} has a corrupt 'binsr' metadata entry") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BinsrError(f"checkpoint {path} is not a binsr model (format {header.get('format')!r})")
    if header.get("version") not in SUPPORTED_VERSIONS:
        raise BinsrError(
            f"checkpoint {path} has format version {header.get('version')!r}; this binsr reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} (upgrade binsr?)"
        )
    name, scale, kwargs = header.get("model"), header.get("scale"), header.get("kwargs", {})
    if name not in list_models():
        raise BinsrError(
            f"checkpoint {path} is for unknown model {name!r}; known: {', '.join(list_models())}"
        )
    if scale not in SUPPORTED_SCALES:
        raise BinsrError(f"checkpoint {path} has unsupported scale {scale!r}; supported: {SUPPORTED_SCALES}")
    if not isinstance(kwargs, dict):
        raise BinsrError(f"checkpoint {path} has malformed model kwargs {kwargs!r}")
    return header


def read_model_header(path: PathLike) -> dict[str, Any]:
    """The validated ``binsr`` header of a model checkpoint (format, version, model, scale, kwargs, extra).

    Only the header is parsed, not the tensors, but the file is still checked to be a complete
    safetensors file.
    """
    path, header = _read_header(path)
    return _model_header(path, dict(header.get("__metadata__") or {}))


def check_state_dict(path: PathLike, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse ``tensors`` unless their keys and shapes match ``model.state_dict()`` exactly and are finite.

    The error names ``path`` and the first offending key.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    if missing:
        raise BinsrError(f"checkpoint {path} does not match its model: missing key {missing[0]!r}")
    unexpected = [key for key in tensors if key not in expected]
    if unexpected:
        raise BinsrError(f"checkpoint {path} does not match its model: unexpected key {unexpected[0]!r}")
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape):
            raise BinsrError(
                f"checkpoint {path} does not match its model: {key!r} has shape {tuple(got.shape)}, "
                f"expected {tuple(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise BinsrError(f"checkpoint {path} has non-finite values in {key!r}")


def load_weights(path: PathLike, model: nn.Module) -> dict[str, str]:
    """Load safetensors file ``path`` into an existing ``model`` after :func:`check_state_dict`.

    Returns the file's string metadata. Useful for resuming training into an already-built model.
    """
    tensors, metadata = load_safetensors(path)
    _apply_weights(path, model, tensors)
    return metadata


def _apply_weights(path: PathLike, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """:func:`check_state_dict`, then load ``tensors`` into ``model`` strictly."""
    check_state_dict(path, model, tensors)
    model.load_state_dict(tensors, strict=True)


def load_model(path: PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model described by checkpoint ``path``, load its weights and return it in eval mode.

    Every check raises a one-line :class:`BinsrError` naming the file: missing file, pickle file,
    corrupt safetensors, unknown format or version, unregistered model, unsupported scale, keys or
    shapes that differ from the rebuilt model, non-finite values.
    """
    from binsr.models import create_model

    tensors, metadata = load_safetensors(path)
    header = _model_header(Path(path), metadata)
    try:
        model = create_model(header["model"], scale=header["scale"], **header["kwargs"])
    except (TypeError, ValueError) as error:
        raise BinsrError(f"checkpoint {path}: cannot build model {header['model']!r} ({error})") from None
    _apply_weights(path, model, tensors)
    return model.to(map_location).eval()

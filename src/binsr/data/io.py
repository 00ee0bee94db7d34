"""Reading and writing images, with one-line errors that name the file.

Conventions (the same everywhere in binsr):

* :func:`read_image` returns ``uint8`` arrays: ``HxWx3`` RGB for colour images, ``HxW`` for grayscale.
  Mode conversions: ``1`` (bilevel) -> ``L`` (0/255); ``LA`` -> ``L`` and ``RGBA`` -> ``RGB`` by
  **dropping the alpha channel** (colour values are kept as stored, not composited); palette ``P`` and
  ``PA``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> ``RGB`` through Pillow. 16-bit grayscale (``I;16*``,
  and ``I`` with values in ``0..65535``) is mapped to 8 bits by ``round(v / 257)`` (so ``257 k -> k``
  exactly, ``65535 -> 255``). Pillow itself decodes 48/64-bit RGB(A) PNG and TIFF to 8 bits by keeping
  the high byte (``floor(v / 256)``, at most one level from ``round(v / 257)``); binsr keeps that.
  Float images (mode ``F``) are refused, because their range is ambiguous.
* Decoding is forced with ``Image.load()``, so a truncated file is an error, not a grey block.
* :func:`write_image` writes atomically: a temporary file in the target folder, then ``os.replace``.
* Tensors are ``float32`` ``[C, H, W]`` in ``[0, 1]``; :func:`to_uint8` rounds ``clamp(t, 0, 1) * 255``
  half up (``floor(255 t + 0.5)``, MATLAB's rounding on non-negative values).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from binsr.errors import BinsrError
from binsr.fileio import atomic_write_bytes

__all__ = [
    "IMAGE_SUFFIXES",
    "list_images",
    "modcrop",
    "read_image",
    "to_rgb_batch",
    "to_tensor",
    "to_uint8",
    "write_image",
]

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""Lower-case suffixes of the image files :func:`list_images` picks up (matched case-insensitively)."""


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises :class:`BinsrError` if ``folder`` does not exist, is not a folder, or holds no image file
    (suffixes in :data:`IMAGE_SUFFIXES`, case-insensitive; hidden files are skipped).
    """
    path = Path(folder)
    if not path.exists():
        raise BinsrError(f"image folder not found: {path}")
    if not path.is_dir():
        raise BinsrError(f"not a folder: {path}")
    images = sorted(
        p
        for p in path.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise BinsrError(f"no images ({suffixes}) in folder: {path}")
    return images


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """Map 16-bit values to 8 bits by ``round(v / 257)`` (half up), saturating to ``0..255``."""
    v = values.astype(np.float64)
    return np.clip(np.floor(v / 257.0 + 0.5), 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``uint8``: ``HxWx3`` RGB or ``HxW`` grayscale (rules in the module doc).

    Raises :class:`BinsrError` naming the file if it is missing, not an image, truncated or corrupt,
    or in an unsupported mode.
    """
    path = Path(path)
    if not path.is_file():
        raise BinsrError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()
                return _to_array(img, path)
    except UnidentifiedImageError:
        raise BinsrError(f"not an image file (or an unsupported format): {path}") from None
    except Image.DecompressionBombError as error:
        raise BinsrError(f"image too large to decode safely: {path} ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BinsrError(f"cannot decode image {path}: {reason}") from None


def _to_array(img: Image.Image, path: Path) -> np.ndarray:
    """Convert a loaded Pillow image to the binsr ``uint8`` convention."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(img, dtype=np.uint8)[..., :3].copy()
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_to_eight(np.asarray(img))
    if mode == "F":
        raise BinsrError(f"unsupported image mode F (floating point) in {path}; convert it to 8 or 16 bits")
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    raise BinsrError(f"unsupported image mode {mode} in {path}")


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a ``uint8`` ``HxW`` or ``HxWx3`` (or ``HxWx4``) array atomically; returns the path.

    The format follows the suffix (PNG, JPEG, BMP, TIFF). Parent folders are created. The image is
    first written to a temporary file in the same folder, then moved over ``path`` with ``os.replace``,
    so readers never see a half-written file.
    """
    path = Path(path)
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise TypeError(
            f"write_image expects a uint8 numpy array, got {getattr(array, 'dtype', type(array))}"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"write_image expects HxW, HxWx3 or HxWx4, got shape {array.shape}")
    suffix = path.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if suffix not in IMAGE_SUFFIXES or fmt is None:
        raise BinsrError(f"cannot write image {path}: unsupported suffix {path.suffix!r}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format=fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:
        raise BinsrError(f"cannot write image {path}: {error.strerror or error}") from None
    return path


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``uint8`` ``HxW`` / ``HxWxC`` -> ``float32`` ``[C, H, W]`` in ``[0, 1]`` (``C = 1`` for grayscale)."""
    if img.dtype != np.uint8:
        raise TypeError(f"to_tensor expects a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"to_tensor expects HxW or HxWxC, got shape {img.shape}")
    return torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)) / 255.0


def to_rgb_batch(img: np.ndarray) -> torch.Tensor:
    """``uint8`` ``HxWx3`` (or gray ``HxW``, replicated to three channels) -> ``float32`` ``[1, 3, H, W]``
    in ``[0, 1]``: the input of an RGB SR model."""
    x = to_tensor(img)[None]
    return x.expand(1, 3, -1, -1) if x.shape[1] == 1 else x


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` (or ``[1, C, H, W]``, ``[H, W]``) in ``[0, 1]`` -> ``uint8`` ``HxWx3`` / ``HxW``.

    ``floor(clamp(t, 0, 1) * 255 + 0.5)``: round half up, as MATLAB's ``im2uint8`` on non-negatives. A
    single channel gives ``HxW``.
    """
    t = t.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"to_uint8 expects [C, H, W], got shape {tuple(t.shape)}")
    v = torch.floor(t.to(device="cpu", dtype=torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5)
    arr = v.to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def modcrop(img: np.ndarray | torch.Tensor, scale: int) -> np.ndarray | torch.Tensor:
    """Crop the bottom rows and right columns so height and width are multiples of ``scale``.

    numpy arrays are ``HxW`` or ``HxWxC``; tensors are ``(..., H, W)``. Returns a view.
    """
    if scale < 1:
        raise ValueError(f"modcrop scale must be >= 1, got {scale}")
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2], img.shape[-1]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]

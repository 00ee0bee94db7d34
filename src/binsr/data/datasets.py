"""Evaluation sets: an HR folder (LR made on the fly) or paired LR/HR folders in the usual SR layouts.

Every dataset yields :class:`EvalSample` ``(name, hr, lr)`` with ``hr`` the ground truth cropped to a
multiple of the scale (``modcrop``) and ``lr`` its ``uint8`` low-resolution input. Layouts understood by
:func:`open_eval_set`:

* **plain**: ``<folder>/*.png`` (any of :data:`binsr.data.io.IMAGE_SUFFIXES`); ``lr`` is made by
  ``bicubic_downscale_uint8(modcrop(hr, s), s)`` (MATLAB ``imresize``), cached in memory;
* **EDSR / BBCU**: ``<folder>/HR/<stem>.png`` with ``<folder>/LR_bicubic/X<s>/<stem>x<s>.png``;
* **BasicSR**: ``<folder>/GTmod12/<stem>.png`` with ``<folder>/LRbicx<s>/<stem>.png``.

For the paired layouts a missing ``X<s>`` / ``LRbicx<s>`` folder means the LR images are made from the HR
images as for a plain folder. The dataset name is the folder name. Image sizes are checked when the
set is opened (from the file headers), so a too-small image is reported before any work is done:
after modcrop an HR image needs an LR of at least :data:`MIN_LR_SIDE` pixels per side and, after the
``scale``-pixel border crop of the protocol, at least an 11x11 SSIM window.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from binsr.data.imresize import bicubic_downscale_uint8
from binsr.data.io import list_images, modcrop, read_image
from binsr.errors import BinsrError

__all__ = [
    "MIN_LR_SIDE",
    "EvalSample",
    "EvalSet",
    "clear_lr_cache",
    "min_hr_side",
    "open_eval_set",
]

MIN_LR_SIDE = 2
"""Smallest LR side accepted (MATLAB's bicubic needs at least 2 pixels to interpolate)."""

SSIM_WINDOW = 11
LR_CACHE_BYTES = 1 << 30
"""Bytes of generated LR images kept in the in-memory LRU cache (1 GiB: the training and evaluation
sets of this project at x2, x3 and x4 together, so a study worker makes each LR image once)."""

_LR_CACHE: OrderedDict[tuple[str, int, int, int], np.ndarray] = OrderedDict()


class EvalSample(NamedTuple):
    """One evaluation image: its name (file stem), the modcropped HR and the LR, both ``uint8``."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def min_hr_side(scale: int) -> int:
    """Smallest HR side (after modcrop) usable at ``scale``.

    ``max(MIN_LR_SIDE * scale, 2 * scale + 11)``: an LR of at least ``MIN_LR_SIDE`` pixels, and an 11x11
    SSIM window left after cropping ``scale`` pixels from each border.
    """
    return max(MIN_LR_SIDE * scale, 2 * scale + SSIM_WINDOW)


def clear_lr_cache() -> None:
    """Empty the in-memory cache of generated LR images."""
    _LR_CACHE.clear()


def _cached_lr(path: Path, hr: np.ndarray, scale: int) -> np.ndarray:
    """LR of ``hr`` (already modcropped) at ``scale``; cached by (path, mtime, size, scale)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, scale)
    lr = _LR_CACHE.get(key)
    if lr is not None:
        _LR_CACHE.move_to_end(key)
        return lr
    lr = bicubic_downscale_uint8(hr, scale)
    lr.setflags(write=False)
    _LR_CACHE[key] = lr
    while sum(image.nbytes for image in _LR_CACHE.values()) > LR_CACHE_BYTES and len(_LR_CACHE) > 1:
        _LR_CACHE.popitem(last=False)
    return lr


def _image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header; BinsrError naming the file if it is not an image."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise BinsrError(f"not an image file (or an unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BinsrError(f"cannot read image {path}: {error}") from None
    return height, width


def _check_size(path: Path, scale: int) -> None:
    """Raise BinsrError naming ``path`` if the image is too small to be evaluated at ``scale``."""
    height, width = _image_size(path)
    h, w = height - height % scale, width - width % scale
    need = min_hr_side(scale)
    if min(h, w) < need:
        raise BinsrError(
            f"image too small for x{scale}: {path} is {width}x{height} (WxH); "
            f"needs at least {need}x{need} after cropping to a multiple of {scale}"
        )


@dataclass
class EvalSet:
    """An evaluation set: HR files, optional paired LR files, and the scale.

    Iterating (or indexing) yields :class:`EvalSample`. ``lr_paths`` is ``None`` when the LR images are
    generated from the HR images (MATLAB bicubic, cached in memory).
    """

    name: str
    scale: int
    hr_paths: list[Path]
    lr_paths: list[Path] | None = None
    layout: str = "plain"

    def __len__(self) -> int:
        return len(self.hr_paths)

    def __iter__(self) -> Iterator[EvalSample]:
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: int) -> EvalSample:
        path = self.hr_paths[index]
        hr = modcrop(read_image(path), self.scale)
        if self.lr_paths is None:
            lr = _cached_lr(path, hr, self.scale)
        else:
            lr_path = self.lr_paths[index]
            lr = read_image(lr_path)
            expected = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
            if lr.shape[:2] != expected or lr.ndim != hr.ndim:
                raise BinsrError(
                    f"LR image {lr_path} has shape {lr.shape}, expected {expected} "
                    f"(HR {path} after modcrop, x{self.scale}) with the same channels"
                )
        return EvalSample(path.stem, hr, lr)


def _paired(hr_dir: Path, lr_dir: Path, scale: int, lr_name: str, name: str, layout: str) -> EvalSet:
    """A paired set: every HR file must have an LR partner ``lr_dir / lr_name.format(stem, suffix)``."""
    hr_paths = list_images(hr_dir)
    lr_paths = []
    for hr_path in hr_paths:
        lr_path = lr_dir / lr_name.format(stem=hr_path.stem, scale=scale, suffix=hr_path.suffix)
        if not lr_path.is_file():
            raise BinsrError(f"missing LR image for {hr_path}: expected {lr_path}")
        lr_paths.append(lr_path)
    return EvalSet(name, scale, hr_paths, lr_paths, layout)


def open_eval_set(folder: str | os.PathLike[str], scale: int) -> EvalSet:
    """Open ``folder`` as an evaluation set at ``scale``, detecting its layout (see the module doc).

    Raises :class:`BinsrError` naming the folder or file for a missing or empty folder, a file that is
    not an image, a missing LR partner, or an image too small for ``scale``.
    """
    root = Path(folder)
    if not root.exists():
        raise BinsrError(f"data folder not found: {root}")
    if not root.is_dir():
        raise BinsrError(f"not a folder: {root}")
    name = root.resolve().name
    if (root / "HR").is_dir():
        lr_dir = root / "LR_bicubic" / f"X{scale}"
        if lr_dir.is_dir():
            dataset = _paired(root / "HR", lr_dir, scale, "{stem}x{scale}{suffix}", name, "edsr")
        else:
            dataset = EvalSet(name, scale, list_images(root / "HR"), None, "edsr")
    elif (root / "GTmod12").is_dir():
        lr_dir = root / f"LRbicx{scale}"
        if lr_dir.is_dir():
            dataset = _paired(root / "GTmod12", lr_dir, scale, "{stem}{suffix}", name, "basicsr")
        else:
            dataset = EvalSet(name, scale, list_images(root / "GTmod12"), None, "basicsr")
    else:
        dataset = EvalSet(name, scale, list_images(root), None, "plain")
    for path in dataset.hr_paths:
        _check_size(path, scale)
    return dataset

"""Training patches: HR/LR image pairs cached in memory and a deterministic patch sampler.

Training folders are read once, at start-up, with the evaluation sets' reader
(:func:`binsr.data.datasets.open_eval_set`): HR modcropped to the scale and LR made by the protocol's
MATLAB bicubic (or read from a paired layout), so training sees exactly the LR that ``binsr eval``
feeds the model. Everything stays in memory (T91 + BSD200 at x4: about 115 MB). Grayscale images are
replicated to RGB.

A batch is a pure function of ``(seed, iteration)``: :meth:`PatchSampler.batch` seeds a fresh
``torch.Generator`` with ``seed * 1_000_003 + iteration`` and draws, for every sample of the *global*
batch, an image index, a crop position and an augmentation. Under DDP every rank draws the same global
batch and crops only its own contiguous slice, so ``world_size`` ranks together see exactly the samples a
single process would; a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from binsr.data.datasets import EvalSet, open_eval_set
from binsr.data.io import list_images, to_tensor
from binsr.errors import BinsrError

__all__ = [
    "SEED_STRIDE",
    "PatchSampler",
    "TrainPair",
    "load_hr_folders",
    "load_paired",
    "load_set",
    "sampler_from_config",
]

SEED_STRIDE = 1_000_003
"""Batch ``i`` of a run seeded ``s`` uses a generator seeded ``s * SEED_STRIDE + i``."""


@dataclass(frozen=True)
class TrainPair:
    """One training image: ``hr`` (``sH x sW x 3`` uint8) and its ``lr`` (``H x W x 3`` uint8)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def _rgb(img: np.ndarray) -> np.ndarray:
    """``HxWx3`` uint8: grayscale replicated to three channels."""
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def load_set(dataset: EvalSet) -> list[TrainPair]:
    """Read every image pair of ``dataset`` into memory (RGB, HR modcropped, LR of the protocol)."""
    return [TrainPair(f"{dataset.name}/{s.name}", _rgb(s.hr), _rgb(s.lr)) for s in dataset]


def load_hr_folders(folders: Sequence[str | Path], scale: int) -> list[TrainPair]:
    """Every image of ``folders``; each folder is opened like an evaluation set.

    A plain folder of HR images gets its LR by MATLAB bicubic; the EDSR (``HR/`` + ``LR_bicubic/X<s>/``)
    and BasicSR (``GTmod12/`` + ``LRbicx<s>/``) layouts use their stored LR images
    (see :func:`binsr.data.datasets.open_eval_set`).
    """
    return [pair for folder in folders for pair in load_set(open_eval_set(folder, scale))]


def load_paired(hr_folder: str | Path, lr_folder: str | Path, scale: int) -> list[TrainPair]:
    """Pair HR and LR images by file stem; an LR stem may carry an ``x{scale}`` suffix (``0001x4.png``).

    Each HR image is modcropped and must then be exactly ``scale`` times its LR image.
    """
    lr_by_stem: dict[str, Path] = {}
    for path in list_images(lr_folder):
        lr_by_stem.setdefault(re.sub(rf"x{scale}$", "", path.stem), path)
    hr_paths = list_images(hr_folder)
    missing = [path for path in hr_paths if path.stem not in lr_by_stem]
    if missing:
        raise BinsrError(
            f"no LR image for {missing[0]} in {lr_folder} (expected {missing[0].stem}[x{scale}].*)"
        )
    lr_paths = [lr_by_stem[path.stem] for path in hr_paths]
    return load_set(EvalSet(Path(hr_folder).name, scale, hr_paths, lr_paths, "paired"))


class PatchSampler:
    """Random aligned LR/HR patches with flips and 90° rotations, deterministic in ``(seed, iteration)``.

    Args:
        pairs: the cached images; those whose LR is smaller than ``patch_size`` are skipped.
        scale: upscaling factor.
        patch_size: LR patch side (the HR patch is ``scale`` times larger).
        flip: random horizontal flips.
        rot90: random rotations by multiples of 90°.
    """

    def __init__(
        self, pairs: Sequence[TrainPair], scale: int, patch_size: int, flip: bool = True, rot90: bool = True
    ) -> None:
        self.pairs = [p for p in pairs if min(p.lr.shape[:2]) >= patch_size]
        if not self.pairs:
            raise BinsrError(f"no training image has an LR side of at least patch_size={patch_size}")
        self.scale, self.patch_size, self.flip, self.rot90 = scale, patch_size, flip, rot90

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(
        self, seed: int, iteration: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank ``rank``'s slice of global batch ``iteration``: ``(lr, hr)``, float32 in [0, 1].

        ``lr`` is ``[b, 3, p, p]`` and ``hr`` ``[b, 3, s·p, s·p]`` with
        ``b = batch_size // world_size``; ``batch_size`` must be divisible by ``world_size``.
        """
        if batch_size % world_size:
            raise BinsrError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        generator = torch.Generator().manual_seed(seed * SEED_STRIDE + iteration)
        index = torch.randint(len(self.pairs), (batch_size,), generator=generator).tolist()
        position = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64).tolist()
        augment = torch.randint(8, (batch_size,), generator=generator).tolist()
        per_rank = batch_size // world_size
        lrs, hrs = [], []
        for i in range(rank * per_rank, (rank + 1) * per_rank):
            lr, hr = self._crop(self.pairs[index[i]], *position[i])
            lr, hr = self._augment(lr, hr, augment[i])
            lrs.append(to_tensor(lr))
            hrs.append(to_tensor(hr))
        return torch.stack(lrs), torch.stack(hrs)

    def _crop(self, pair: TrainPair, u: float, v: float) -> tuple[np.ndarray, np.ndarray]:
        """The LR patch at relative position ``(u, v)`` in [0, 1) and its HR patch."""
        p, s = self.patch_size, self.scale
        top = min(int(u * (pair.lr.shape[0] - p + 1)), pair.lr.shape[0] - p)
        left = min(int(v * (pair.lr.shape[1] - p + 1)), pair.lr.shape[1] - p)
        lr = pair.lr[top : top + p, left : left + p]
        hr = pair.hr[top * s : (top + p) * s, left * s : (left + p) * s]
        return lr, hr

    def _augment(self, lr: np.ndarray, hr: np.ndarray, code: int) -> tuple[np.ndarray, np.ndarray]:
        """Bit 0 of ``code``: horizontal flip; bits 1-2: number of 90° rotations."""
        if self.flip and code & 1:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        turns = code >> 1 if self.rot90 else 0
        if turns:
            lr, hr = np.rot90(lr, turns), np.rot90(hr, turns)
        return lr, hr


def sampler_from_config(train_data: dict[str, Any], scale: int) -> PatchSampler:
    """The :class:`PatchSampler` described by a resolved ``datasets.train`` config section."""
    if train_data["paired"] is not None:
        pairs = load_paired(train_data["paired"]["hr"], train_data["paired"]["lr"], scale)
    else:
        pairs = load_hr_folders(train_data["hr_folders"], scale)
    augment = train_data["augment"]
    return PatchSampler(pairs, scale, train_data["patch_size"], flip=augment["flip"], rot90=augment["rot90"])

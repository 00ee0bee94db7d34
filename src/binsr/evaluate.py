"""Evaluation: run an upscaler over evaluation sets and score it with the SR protocol.

The data flow is HR -> modcrop -> MATLAB bicubic LR (uint8) -> upscaler -> SR (uint8) -> luma ->
border crop -> PSNR/SSIM (:func:`binsr.metrics.score_sr`); results are means over the images of a set.

Upscalers are anything matching :class:`Upscaler`: ``upscaler(lr_uint8, scale) -> sr_uint8`` with
``lr`` ``HxWx3`` or ``HxW`` and ``sr`` of the same layout, ``scale`` times larger. :class:`BicubicUpscaler`
is built in; trained models and checkpoints come from :mod:`binsr.inference`.
:func:`resolve_upscaler` turns a string spec (the CLI's ``--model``) into an upscaler: ``"bicubic"`` is
built in, anything else goes through the hooks in :data:`UPSCALER_RESOLVERS`, which later code (model
zoo, checkpoints) extends.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm import tqdm

from binsr.data.datasets import EvalSample, EvalSet, open_eval_set
from binsr.data.imresize import _resize, bicubic_upscale_uint8
from binsr.data.io import modcrop, read_image, write_image
from binsr.errors import BinsrError
from binsr.metrics import CONVENTIONS, psnr, rgb_to_y, score_sr, ssim
from binsr.models.registry import SUPPORTED_SCALES

__all__ = [
    "UPSCALER_RESOLVERS",
    "BicubicUpscaler",
    "Upscaler",
    "check_scale",
    "evaluate",
    "evaluate_set",
    "image_progress",
    "legacy_bicubic_y_scores",
    "resolve_upscaler",
]


def check_scale(value: object) -> int:
    """``value`` as a supported integer scale (:data:`SUPPORTED_SCALES`), else :class:`BinsrError` naming it.

    Accepts ints and integer strings (``"4"``, ``"x4"``); refuses ``0``, ``2.5``, ``5``, ``"x"``...
    """
    text = str(value).strip()
    if isinstance(value, str) and text[:1] in ("x", "X"):
        text = text[1:]
    if isinstance(value, bool) or not (isinstance(value, int) or text.isdigit()):
        raise BinsrError(f"unsupported scale {value!r}; use one of {', '.join(map(str, SUPPORTED_SCALES))}")
    scale = int(text)
    if scale not in SUPPORTED_SCALES:
        raise BinsrError(f"unsupported scale {value!r}; use one of {', '.join(map(str, SUPPORTED_SCALES))}")
    return scale


@runtime_checkable
class Upscaler(Protocol):
    """Anything that super-resolves a ``uint8`` image: ``HxWx3`` or ``HxW`` in, the same layout out."""

    def __call__(self, lr: np.ndarray, scale: int) -> np.ndarray:
        """Return the ``uint8`` SR image of ``lr``, ``scale`` times larger in height and width."""
        ...


class BicubicUpscaler:
    """MATLAB bicubic ``imresize(lr, scale)`` on ``uint8`` (works on gray images directly)."""

    name = "bicubic"

    def __call__(self, lr: np.ndarray, scale: int) -> np.ndarray:
        """Upscale ``lr`` by ``scale`` with :func:`binsr.data.imresize.bicubic_upscale_uint8`."""
        return bicubic_upscale_uint8(lr, scale)

    def __repr__(self) -> str:
        return "BicubicUpscaler()"


UpscalerResolver = Callable[[str, int], Upscaler | None]

UPSCALER_RESOLVERS: dict[str, UpscalerResolver] = {}
"""Hooks turning a ``--model`` spec into an upscaler, tried in insertion order after ``"bicubic"``.

Each value is ``resolver(spec, scale) -> Upscaler | None``; ``None`` means "not mine". The key only
names the hook (for error messages and removal), e.g. ``UPSCALER_RESOLVERS["checkpoint"] = from_ckpt``.
"""


def resolve_upscaler(spec: str | Upscaler, scale: int) -> Upscaler:
    """The upscaler for ``spec`` at ``scale``: ``"bicubic"``, an upscaler object, or a hook's answer.

    Raises :class:`BinsrError` naming ``spec`` when no hook in :data:`UPSCALER_RESOLVERS` accepts it.
    """
    if not isinstance(spec, str):
        if callable(spec):
            return spec
        raise BinsrError(f"not an upscaler: {spec!r}")
    if spec.strip().lower() == "bicubic":
        return BicubicUpscaler()
    import binsr.inference  # noqa: F401  (registers the checkpoint / shipped-model hook)

    for resolver in UPSCALER_RESOLVERS.values():
        upscaler = resolver(spec, scale)
        if upscaler is not None:
            return upscaler
    hooks = ", ".join(UPSCALER_RESOLVERS) or "none registered"
    raise BinsrError(f"unknown model {spec!r}; built in: bicubic (resolver hooks: {hooks})")


def _progress_enabled(progress: bool) -> bool:
    """Progress bars only when asked for and stderr is a terminal."""
    return bool(progress) and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def image_progress(dataset: EvalSet, label: str, progress: bool = True) -> Iterator[EvalSample]:
    """``dataset``'s samples behind a transient progress bar ``"<label> <set> x<scale>"`` on stderr
    (shown only when ``progress`` and stderr is a terminal)."""
    return iter(
        tqdm(
            dataset,
            total=len(dataset),
            desc=f"{label}{dataset.name} x{dataset.scale}",
            unit="img",
            file=sys.stderr,
            disable=not _progress_enabled(progress),
            leave=False,
        )
    )


def evaluate_set(
    upscaler: Upscaler,
    dataset: EvalSet,
    *,
    convention: str = "matlab",
    progress: bool = True,
    save_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score ``upscaler`` on one evaluation set; returns the summary plus per-image scores.

    Returns ``{"dataset", "scale", "psnr", "ssim", "images", "per_image"}`` where ``psnr`` and ``ssim``
    are means over the images and ``per_image`` is a list of ``{"image", "psnr", "ssim"}``. If
    ``save_dir`` is given, each SR image is written to ``save_dir/<dataset>/x<scale>/<image>.png``.
    """
    if convention not in CONVENTIONS:
        raise BinsrError(f"unknown convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    scale = dataset.scale
    per_image: list[dict[str, Any]] = []
    bar = image_progress(dataset, "", progress)
    out_dir = Path(save_dir) / dataset.name / f"x{scale}" if save_dir is not None else None
    for sample in bar:
        sr = np.asarray(upscaler(sample.lr, scale))
        if sr.dtype != np.uint8 or sr.shape != sample.hr.shape:
            raise BinsrError(
                f"upscaler {upscaler!r} returned {sr.dtype} {sr.shape} for {sample.name}, "
                f"expected uint8 {sample.hr.shape}"
            )
        value_psnr, value_ssim = score_sr(sr, sample.hr, scale, convention)
        per_image.append({"image": sample.name, "psnr": value_psnr, "ssim": value_ssim})
        if out_dir is not None:
            write_image(out_dir / f"{sample.name}.png", sr)
    return {
        "dataset": dataset.name,
        "scale": scale,
        "psnr": float(np.mean([r["psnr"] for r in per_image])) if per_image else math.nan,
        "ssim": float(np.mean([r["ssim"] for r in per_image])) if per_image else math.nan,
        "images": len(per_image),
        "per_image": per_image,
    }


def evaluate(
    upscaler: str | Upscaler,
    folders: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    scales: Iterable[int] | int,
    convention: str = "matlab",
    progress: bool = True,
    *,
    per_image: bool = False,
    save_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``upscaler`` on every ``(folder, scale)``; one result dict per pair, folders outermost.

    Each dict is ``{"dataset", "scale", "psnr", "ssim", "images"}`` (means over images), plus
    ``"per_image"`` (a list of ``{"image", "psnr", "ssim"}``) when ``per_image=True``. ``upscaler`` is an
    :class:`Upscaler` or a spec for :func:`resolve_upscaler` (resolved once per scale). All sets are opened
    and checked before any image is upscaled, so bad inputs fail fast with a :class:`BinsrError`.
    """
    if isinstance(folders, str | os.PathLike):
        folders = [folders]
    scales = [check_scale(s) for s in ([scales] if isinstance(scales, int) else scales)]
    if convention not in CONVENTIONS:
        raise BinsrError(f"unknown convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    sets = [[open_eval_set(folder, scale) for scale in scales] for folder in folders]
    upscalers = {scale: resolve_upscaler(upscaler, scale) for scale in scales}
    results = []
    for row in sets:
        for dataset in row:
            result = evaluate_set(
                upscalers[dataset.scale], dataset, convention=convention, progress=progress, save_dir=save_dir
            )
            if not per_image:
                result.pop("per_image")
            results.append(result)
    return results


def legacy_bicubic_y_scores(folder: str | os.PathLike[str], scale: int) -> list[dict[str, Any]]:
    """Per-image bicubic scores by the *legacy* SRCNN/VDSR pipeline that produced the published rows.

    The bicubic baselines quoted everywhere (anchors.md section 1, first printed by SRCNN and VDSR) were
    computed on the luma plane only: ``Y = round(rgb2ycbcr(HR))`` (uint8), then
    ``SR = round(imresize(imresize(Y, 1/s), s))`` with both resizes in floating point (no 8-bit LR), and
    PSNR/SSIM on ``Y`` vs ``SR`` with ``s`` pixels cropped from each border. :func:`evaluate` instead uses
    the protocol that models are scored with (RGB uint8 LR as MATLAB writes it, RGB SR rounded, then Y),
    which gives bicubic values up to ~0.02 dB / ~0.0007 SSIM lower. This function exists to show where
    the published numbers come from; it is not used by ``binsr eval``.
    """
    scale = check_scale(scale)
    dataset = open_eval_set(folder, scale)
    rows = []
    for path in dataset.hr_paths:
        hr = modcrop(read_image(path), scale)
        y = np.floor(rgb_to_y(hr) + 0.5) if hr.ndim == 3 else hr.astype(np.float64)
        h, w = y.shape
        t = torch.from_numpy(y)
        lr = _resize(t, 1.0 / scale, (h // scale, w // scale), round_each_pass=False)
        sr = _resize(lr, float(scale), (h, w), round_each_pass=False)
        sr_y = torch.floor(sr.clamp(0.0, 255.0) + 0.5).numpy()
        crop = (slice(scale, -scale), slice(scale, -scale))
        rows.append(
            {"image": path.stem, "psnr": psnr(sr_y[crop], y[crop]), "ssim": ssim(sr_y[crop], y[crop])}
        )
    return rows

"""Running a model on whole images: tiled inference, the model :class:`Upscaler`, shipped weights.

Tiling ("crop the centre")
--------------------------
The LR image is cut into a grid of tiles of at most ``tile`` × ``tile`` pixels (sizes balanced so no
sliver is left at the edge). Each tile is run through the model with ``overlap`` extra LR pixels of real
image context on every side (less at the image border, where the model sees its own padding exactly as
in an untiled run), and only the tile's centre, ``scale`` × the tile, is kept. A model whose output
pixel depends on input pixels at most ``r`` LR pixels away (its receptive-field radius) therefore gives
the *same* result tiled and untiled, up to float rounding, whenever ``overlap >= r``.

:func:`receptive_field_radius` bounds ``r`` from the layers: the sum over every module with a
``kernel_size`` (convolutions, binary or not) of its half-width, plus 2 for a resampled global skip
(bilinear needs 1 LR pixel, bicubic 2). Summing is an upper bound (parallel branches are counted twice,
convolutions after the upsampler act on HR pixels), so the default ``overlap=None`` uses it and is
exact for every model built from local operations: convolutions, pointwise activations, binarizers
and thresholds, pixel shuffle, interpolation. Layers with a *global* receptive field (channel attention
with global average pooling) see only their tile, so tiled output is then close to, not equal to,
untiled output; pass ``tile=None`` for an exact run if memory allows. The bound is 39 for BBCU-L
(16 blocks, ×2 and ×4), 15 for a 4-block BBCU-L.

Memory: :func:`upscale_uint8` keeps the input as float32 (``12·h·w`` bytes), quantises each tile's
centre straight into a preallocated ``uint8`` output (``3·s²·h·w`` bytes) and holds one tile's
activations at a time, so a 4000×3000 image at ×4 needs about 0.6 GB of output plus the model's
activations for one tile. Measured: ``bbcu_l`` (32 features, 4 blocks) on a random 4000×3000 image at
×4, tile 128, overlap 15: peak RSS 1.43 GB (0.5 GB of it the torch import), 62 s on 16 CPU threads.
:func:`upscale_tensor` returns float32 and is meant for tensors that fit.

Importing this module adds the ``"checkpoint-or-shipped"`` hook to
:data:`binsr.evaluate.UPSCALER_RESOLVERS`, so ``binsr eval --model`` / ``binsr compare --models`` accept
a ``.safetensors`` checkpoint, ``default`` / ``default-fp`` (shipped binary model and its full-precision
twin) and any registered model name that has shipped weights (``weights/index.json``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from binsr.checkpoint import load_model, read_model_header
from binsr.data.io import to_rgb_batch, to_uint8
from binsr.errors import BinsrError
from binsr.evaluate import UPSCALER_RESOLVERS

DEFAULT_TILE = 128
"""LR tile side used by default. With BBCU-L's 39-pixel overlap one 64-channel float32 feature map of a
tile is 11 MB at LR size and 174 MB at ×4 HR size; context overhead is (206/128)² = 2.6× the compute."""

RESAMPLING_MARGIN = 2
"""LR pixels added to the convolutional radius for a bilinear / bicubic resampled global skip."""

EVAL_UNTILED_PIXELS = 2_000_000
"""``binsr eval`` / ``compare`` run images with at most this many SR pixels untiled (Set5 ... Manga109):
their numbers are then exactly those of an untiled run for every model; ~0.5 GB per 64-channel HR map."""

DEFAULT_SCALE = 4
"""Scale used for a shipped model when none is asked for."""

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped model files and their ``index.json``."""

SHIPPED_ALIASES = ("default", "default-fp")
"""Names always resolved through the shipped index: the binary model and its full-precision twin."""

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".pkl", ".ckpt", ".bin")
"""Suffixes that make a ``--model`` value a file path (pickle ones are then refused by the loader)."""

TileWriter = Callable[[int, int, torch.Tensor], None]


# ------------------------------------------------------------------------------------------- tiling


def receptive_field_radius(model: nn.Module) -> int:
    """An upper bound, in LR pixels, on how far an output pixel of ``model`` can look (see module doc)."""
    radius = 0
    for module in model.modules():
        kernel = getattr(module, "kernel_size", None)
        if kernel is None:
            continue
        kernels = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        dilation = getattr(module, "dilation", 1)
        dilations = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        radius += max(math.ceil(d * (k - 1) / 2) for k, d in zip(kernels, dilations, strict=False))
    return radius + RESAMPLING_MARGIN


def _spans(length: int, tile: int | None) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ``ceil(length / tile)`` contiguous spans of (nearly) equal size."""
    count = 1 if not tile else max(1, math.ceil(length / tile))
    edges = [i * length // count for i in range(count + 1)]
    return list(itertools.pairwise(edges))


def tile_grid(
    height: int, width: int, tile: int | None, overlap: int
) -> Iterator[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """For each tile: the LR window to run (centre + ``overlap`` context) and the centre inside it.

    Yields ``((rows, cols), (centre_rows, centre_cols))``: ``rows``/``cols`` slice the LR image,
    ``centre_*`` slice the window (both in LR pixels). ``tile=None`` (or 0) gives one tile.
    """
    for y0, y1 in _spans(height, tile):
        wy0, wy1 = max(0, y0 - overlap), min(height, y1 + overlap)
        for x0, x1 in _spans(width, tile):
            wx0, wx1 = max(0, x0 - overlap), min(width, x1 + overlap)
            yield (
                (slice(wy0, wy1), slice(wx0, wx1)),
                (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0)),
            )


def _check_tiling(tile: int | None, overlap: int | None) -> None:
    if tile is not None and tile < 0:
        raise BinsrError(f"tile size must be positive (or 0 for no tiling), got {tile}")
    if overlap is not None and overlap < 0:
        raise BinsrError(f"tile overlap must be >= 0, got {overlap}")


@torch.inference_mode()
def run_tiled(
    model: nn.Module,
    lr: torch.Tensor,
    scale: int,
    write: TileWriter,
    tile: int | None = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
) -> None:
    """Run ``model`` over ``lr`` (``(N, C, h, w)`` float) tile by tile; each output centre goes to ``write``.

    ``write(top, left, centre)`` receives the centre of one tile's output (``(N, C', th·s, tw·s)``, on
    the model's device) and its position in the ``(h·s, w·s)`` output. ``overlap=None`` means
    :func:`receptive_field_radius`. Runs under ``torch.inference_mode``.
    """
    _check_tiling(tile, overlap)
    if overlap is None:
        overlap = receptive_field_radius(model)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else lr.device
    dtype = param.dtype if param is not None and param.is_floating_point() else lr.dtype
    height, width = lr.shape[-2:]
    tiles = list(tile_grid(height, width, tile, overlap))
    for (rows, cols), (crows, ccols) in tqdm(
        tiles, unit="tile", leave=False, disable=None if progress else True
    ):
        window = lr[..., rows, cols].to(device=device, dtype=dtype)
        out = model(window)
        want = (scale * window.shape[-2], scale * window.shape[-1])
        if tuple(out.shape[-2:]) != want:
            raise ValueError(
                f"model output {tuple(out.shape[-2:])} for input {tuple(window.shape[-2:])} at ×{scale}"
            )
        centre = out[
            ...,
            scale * crows.start : scale * crows.stop,
            scale * ccols.start : scale * ccols.stop,
        ]
        write(scale * (rows.start + crows.start), scale * (cols.start + ccols.start), centre)


def upscale_tensor(
    model: nn.Module,
    lr: torch.Tensor,
    scale: int,
    tile: int | None = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Tiled ``model(lr)``: ``(N, 3, h, w)`` float in [0, 1] → ``(N, C', s·h, s·w)`` float32 on the CPU.

    Equal to the untiled output up to float rounding when ``overlap`` ≥ the receptive-field radius
    (the default, ``None``, computes it; see the module doc). Values are not clamped.

    Example::

        >>> sr = upscale_tensor(model, torch.rand(1, 3, 50, 70), scale=4, tile=32)
        >>> sr.shape
        torch.Size([1, 3, 200, 280])
    """
    out: dict[str, torch.Tensor] = {}

    def write(top: int, left: int, centre: torch.Tensor) -> None:
        if "sr" not in out:
            shape = (*centre.shape[:-2], scale * lr.shape[-2], scale * lr.shape[-1])
            out["sr"] = torch.empty(shape, dtype=torch.float32)
        out["sr"][..., top : top + centre.shape[-2], left : left + centre.shape[-1]] = centre

    run_tiled(model, lr, scale, write, tile=tile, overlap=overlap, progress=progress)
    return out["sr"]


def upscale_uint8(
    model: nn.Module,
    lr: np.ndarray,
    scale: int,
    tile: int | None = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Upscale a ``uint8`` ``HxWx3`` (or gray ``HxW``) image with an RGB model; returns ``uint8``.

    Each tile's centre is rounded (:func:`binsr.data.io.to_uint8`) straight into the preallocated output,
    so memory stays bounded. A gray image is replicated to three channels and the output channels are
    averaged before rounding, giving a gray ``(s·H)x(s·W)`` result.
    """
    if lr.dtype != np.uint8 or lr.ndim not in (2, 3) or (lr.ndim == 3 and lr.shape[2] != 3):
        raise ValueError(f"upscale_uint8 expects a uint8 HxW or HxWx3 image, got {lr.dtype} {lr.shape}")
    gray = lr.ndim == 2
    x = to_rgb_batch(lr)
    out = np.empty((scale * lr.shape[0], scale * lr.shape[1], *lr.shape[2:]), dtype=np.uint8)

    def write(top: int, left: int, centre: torch.Tensor) -> None:
        if gray:
            centre = centre.mean(dim=1, keepdim=True)
        out[top : top + centre.shape[-2], left : left + centre.shape[-1]] = to_uint8(centre)

    run_tiled(model, x, scale, write, tile=tile, overlap=overlap, progress=progress)
    return out


@dataclass
class ModelUpscaler:
    """An :class:`binsr.evaluate.Upscaler` around a model: ``uint8`` LR in, ``uint8`` SR out.

    ``name`` is used in error messages and reports (a checkpoint path or a shipped model name). An
    image whose SR output has at most ``untiled_pixels`` pixels runs in one piece (exact even for models
    with global context, such as channel attention); larger ones are tiled with ``tile`` / ``overlap``.
    """

    model: nn.Module
    scale: int
    name: str = "model"
    tile: int | None = DEFAULT_TILE
    overlap: int | None = None
    progress: bool = False
    untiled_pixels: int = 0
    header: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_tiling(self.tile, self.overlap)
        self.model.eval()

    def __call__(self, lr: np.ndarray, scale: int) -> np.ndarray:
        """Upscale ``lr`` by ``scale``, which must be the model's own scale."""
        if scale != self.scale:
            raise BinsrError(f"{self.name} is a x{self.scale} model; cannot upscale by x{scale}")
        untiled = scale * scale * lr.shape[0] * lr.shape[1] <= self.untiled_pixels
        tile = None if untiled else self.tile
        return upscale_uint8(self.model, lr, scale, tile=tile, overlap=self.overlap, progress=self.progress)


class SelfEnsemble(nn.Module):
    """The ×8 geometric self-ensemble of ``model``: the mean of its outputs over the eight flips and
    rotations of the input, each mapped back,

        SR(x) = 1/8 · Σ_{g ∈ D4} g⁻¹(f(g(x))),

    D4 being the four quarter turns with and without a horizontal flip (Timofte, Rothe, Van Gool, "Seven
    ways to improve example-based single image super resolution", CVPR 2016; EDSR+ in Lim et al., CVPR-W
    2017). It costs 8× the compute. The receptive field is the model's, so tiled runs stay exact.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for quarter_turns, flip in itertools.product(range(4), (False, True)):
            view = torch.rot90(x, quarter_turns, dims=(-2, -1))
            out = self.model(view.flip(-1) if flip else view)
            out = torch.rot90(out.flip(-1) if flip else out, -quarter_turns, dims=(-2, -1))
            total = out if total is None else total + out
        assert total is not None
        return total / 8


def with_self_ensemble(upscaler: Any) -> ModelUpscaler:
    """``upscaler`` (a model's: a checkpoint, a shipped or a packed model) run as a :class:`SelfEnsemble`."""
    if not isinstance(upscaler, ModelUpscaler):
        raise BinsrError(f"self-ensemble needs a model, not {getattr(upscaler, 'name', upscaler)!r}")
    return replace(upscaler, model=SelfEnsemble(upscaler.model), name=f"{upscaler.name} (x8 self-ensemble)")


# ------------------------------------------------------------------------------------ shipped weights


def shipped_models(weights_dir: Path | None = None) -> dict[str, dict[int, Path]]:
    """The shipped model files from ``weights/index.json``: ``{name: {scale: path}}`` (maybe empty).

    ``default`` is the shipped binary model, ``default-fp`` its full-precision twin; other names are
    registered models with shipped weights.
    """
    folder = weights_dir or WEIGHTS_DIR
    index_path = folder / "index.json"
    if not index_path.is_file():
        return {}
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        return {
            str(name): {int(scale): folder / str(file) for scale, file in scales.items()}
            for name, scales in index.items()
        }
    except (ValueError, AttributeError, TypeError) as error:
        raise BinsrError(f"corrupt shipped-weights index {index_path} ({error})") from None


def _pick_scale(shipped: dict[int, Path]) -> int:
    """The scale a shipped model runs at when none is asked for: ×4 if shipped, else the smallest."""
    return DEFAULT_SCALE if DEFAULT_SCALE in shipped or not shipped else min(shipped)


def shipped_model_path(name: str, scale: int | None = None, weights_dir: Path | None = None) -> Path:
    """The shipped file of model ``name`` at ``scale`` (``None``: ×4 if shipped, else the smallest)."""
    shipped = shipped_models(weights_dir).get(name, {})
    listing = ", ".join(f"x{s}" for s in sorted(shipped)) or "none"
    scale = _pick_scale(shipped) if scale is None else scale
    if scale not in shipped:
        raise BinsrError(f"no shipped model {name!r} for scale {scale}; shipped: {listing}")
    path = shipped[scale]
    if not path.is_file():
        raise BinsrError(f"shipped model {name!r} x{scale} is missing its file {path} (broken install?)")
    return path


def _is_shipped_name(spec: str) -> bool:
    return spec in SHIPPED_ALIASES or spec in shipped_models()


def is_packed_spec(spec: str) -> bool:
    """Whether a ``--model`` value names an exported ``.binsr`` file (see :mod:`binsr.engine.export`)."""
    return spec.lower().endswith(".binsr")


def is_checkpoint_spec(spec: str) -> bool:
    """Whether a ``--model`` value names a file (a checkpoint suffix, a folder separator, or a file)."""
    from binsr.models import list_models

    if spec.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in spec or os.sep in spec:
        return True
    return not (_is_shipped_name(spec) or spec in list_models()) and Path(spec).is_file()


def spec_scale(spec: str) -> int | None:
    """The scale a spec implies on its own: a checkpoint's, a shipped model's default; else ``None``."""
    if is_packed_spec(spec):
        from binsr.engine.export import read_packed

        return int(read_packed(spec)[0]["scale"])
    if is_checkpoint_spec(spec):
        return int(read_model_header(spec)["scale"])
    if _is_shipped_name(spec):
        return _pick_scale(shipped_models().get(spec, {}))
    return None


def load_upscaler(
    spec: str,
    scale: int | None = None,
    tile: int | None = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
) -> ModelUpscaler | None:
    """A :class:`ModelUpscaler` for a checkpoint path or a shipped model name, else ``None``.

    ``scale=None`` takes the checkpoint's scale (×4 for a shipped name). A checkpoint whose scale
    differs from ``scale``, a registered model without shipped weights, and every checkpoint problem
    raise :class:`BinsrError`.
    """
    from binsr.models import list_models

    if is_packed_spec(spec):  # an exported .binsr file runs on the packed CPU engine
        from binsr.engine.runtime import load_packed_upscaler

        return load_packed_upscaler(spec, scale, tile=tile, overlap=overlap, progress=progress)
    if is_checkpoint_spec(spec):
        path = Path(spec)
    elif _is_shipped_name(spec):
        path = shipped_model_path(spec, scale)
    elif spec in list_models():
        raise BinsrError(f"model {spec!r} has no shipped weights; pass a checkpoint file (.safetensors)")
    else:
        return None
    header = read_model_header(path)
    if scale is not None and header["scale"] != scale:
        raise BinsrError(f"checkpoint {path} is a x{header['scale']} model, but scale x{scale} was asked for")
    return ModelUpscaler(
        load_model(path),
        header["scale"],
        name=spec,
        tile=tile,
        overlap=overlap,
        progress=progress,
        header=header,
    )


def _resolve_for_evaluation(spec: str, scale: int) -> ModelUpscaler | None:
    """The :data:`binsr.evaluate.UPSCALER_RESOLVERS` hook: checkpoints and shipped models for ``eval``."""
    upscaler = load_upscaler(spec, scale)
    if upscaler is not None:
        upscaler.untiled_pixels = EVAL_UNTILED_PIXELS
    return upscaler


UPSCALER_RESOLVERS["checkpoint-or-shipped"] = _resolve_for_evaluation

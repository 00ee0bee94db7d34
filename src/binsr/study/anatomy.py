"""Where a binary model loses to its full-precision twin: the anatomy of the PSNR gap, pixel by pixel.

On one image, with ``e_B`` and ``e_M`` the squared errors of the binary model B and its twin M on the
plane the SR protocol scores (:func:`binsr.metrics.scored_plane`), the gap is

    Δ = PSNR(B) − PSNR(M) = 10 · log10(Σ e_M / Σ e_B),

and the excess error ``D = e_B − e_M`` sums to ``Σ e_B − Σ e_M``. A region R of the image gets the part
of the gap that its pixels' excess error carries,

    Δ_R = Δ · Σ_R D / Σ D,

so the parts of a partition of the image sum to Δ exactly, and the mean of Δ_R over a set's images is
R's part of the set's gap (a set's PSNR is the mean of its images'). The regions are bands of the HR
image's gradient magnitude ``|∇Y|`` (central differences), cut at the image's own quantiles
:data:`GRADIENT_QUANTILES` (flat areas … the strongest 1 % of edges), and, overlapping them, the border
band: the pixels within :data:`BORDER_PX` of the scored plane's edge, where the zero padding of every
convolution reaches. A band whose part of the gap is far above its share of the pixels is what limits
the binary model.

``binsr study anatomy --data SET ...`` (:func:`write_anatomy`) runs it on the checkpoint pairs shipped
with the study (``docs/results/checkpoints/index.json``) and writes ``docs/ANATOMY.md`` with a map of
``D`` on the image that loses most.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from binsr.data.datasets import EvalSet, open_eval_set
from binsr.errors import BinsrError
from binsr.evaluate import Upscaler, image_progress, resolve_upscaler
from binsr.fileio import atomic_write_bytes
from binsr.metrics import scored_plane

__all__ = [
    "BORDER_PX",
    "GRADIENT_QUANTILES",
    "ImageAnatomy",
    "SetAnatomy",
    "excess_error_parts",
    "region_masks",
    "set_anatomy",
    "write_anatomy",
]

GRADIENT_QUANTILES = (0.5, 0.9, 0.99)
"""Cuts, as quantiles of the image's own HR gradient magnitude, between the gradient bands."""
BORDER_PX = 8
"""Width, in HR pixels of the scored plane, of the border band."""
WORST_IMAGES = 3
"""How many of the images that lose most each set's table lists."""


def _band_names() -> list[str]:
    cuts = [0, *(round(100 * q) for q in GRADIENT_QUANTILES), 100]
    return [f"gradient {lo}–{hi} %" for lo, hi in itertools.pairwise(cuts)]


GRADIENT_BANDS = tuple(_band_names())
BORDER_REGION = f"border ≤ {BORDER_PX} px"
REGIONS = (*GRADIENT_BANDS, BORDER_REGION)
"""Region names: the gradient bands (a partition, flattest first), then the border band."""


def region_masks(y_hr: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of :data:`REGIONS` on a scored HR plane: gradient bands cut at the plane's own
    :data:`GRADIENT_QUANTILES` of ``|∇Y|`` (each pixel in exactly one band) and the border band."""
    grad_y, grad_x = np.gradient(y_hr.astype(np.float64))
    magnitude = np.hypot(grad_x, grad_y)
    cuts = [-np.inf, *np.quantile(magnitude, GRADIENT_QUANTILES), np.inf]
    masks = {
        name: (magnitude >= lo) & (magnitude < hi)
        for name, (lo, hi) in zip(GRADIENT_BANDS, itertools.pairwise(cuts), strict=True)
    }
    height, width = y_hr.shape
    rows, cols = np.ogrid[:height, :width]
    distance = np.minimum(np.minimum(rows, height - 1 - rows), np.minimum(cols, width - 1 - cols))
    masks[BORDER_REGION] = distance < BORDER_PX
    return masks


def excess_error_parts(
    y_binary: np.ndarray, y_twin: np.ndarray, y_hr: np.ndarray
) -> tuple[float, dict[str, float], dict[str, float], np.ndarray]:
    """``(Δ, part of Δ per region (dB), share of pixels per region, D)`` for one image's scored planes.

    ``Δ = 10 log10(Σ e_M / Σ e_B)`` and ``Δ_R = Δ · Σ_R D / Σ D`` (module doc); every part is 0 when the two
    models' errors are equal.
    """
    if not y_binary.shape == y_twin.shape == y_hr.shape:
        raise ValueError(f"planes differ in shape: {y_binary.shape}, {y_twin.shape}, {y_hr.shape}")
    error_binary = (y_binary - y_hr) ** 2
    error_twin = (y_twin - y_hr) ** 2
    excess = error_binary - error_twin
    total_excess = float(excess.sum())
    masks = region_masks(y_hr)
    shares = {name: float(mask.mean()) for name, mask in masks.items()}
    if total_excess == 0.0:
        return 0.0, dict.fromkeys(masks, 0.0), shares, excess
    gap = 10.0 * float(np.log10(error_twin.sum() / error_binary.sum()))
    parts = {name: gap * float(excess[mask].sum()) / total_excess for name, mask in masks.items()}
    return gap, parts, shares, excess


@dataclass(frozen=True)
class ImageAnatomy:
    """One image: its gap to the twin (dB), each region's part of it (dB) and share of the pixels."""

    image: str
    gap: float
    parts: dict[str, float]
    pixel_shares: dict[str, float]


@dataclass(frozen=True)
class SetAnatomy:
    """A set's images (in set order) and, for the image that loses most, its HR plane and excess map."""

    name: str
    images: list[ImageAnatomy]
    worst_plane: np.ndarray
    worst_excess: np.ndarray

    @property
    def gap(self) -> float:
        """The set's gap: the mean of its images' (as the set's PSNR is the mean of theirs)."""
        return statistics.fmean(image.gap for image in self.images)

    def mean_part(self, region: str) -> float:
        """``region``'s part of the set's gap (dB): the mean of its part of each image's gap."""
        return statistics.fmean(image.parts[region] for image in self.images)

    def mean_pixel_share(self, region: str) -> float:
        """The mean, over the images, of the share of their pixels that ``region`` holds."""
        return statistics.fmean(image.pixel_shares[region] for image in self.images)


def set_anatomy(
    binary: Upscaler,
    twin: Upscaler,
    dataset: EvalSet,
    convention: str = "matlab",
    progress: bool = True,
) -> SetAnatomy:
    """The anatomy of ``binary``'s gap to ``twin`` on every image of ``dataset`` (see the module doc)."""
    if len(dataset) == 0:
        raise BinsrError(f"evaluation set {dataset.name} has no images")
    images: list[ImageAnatomy] = []
    worst: tuple[float, np.ndarray, np.ndarray] | None = None
    for sample in image_progress(dataset, "anatomy ", progress):
        y_hr = scored_plane(sample.hr, dataset.scale, convention)
        y_binary, y_twin = (
            scored_plane(np.asarray(upscaler(sample.lr, dataset.scale)), dataset.scale, convention)
            for upscaler in (binary, twin)
        )
        gap, parts, shares, excess = excess_error_parts(y_binary, y_twin, y_hr)
        images.append(ImageAnatomy(sample.name, gap, parts, shares))
        if worst is None or gap < worst[0]:
            worst = (gap, y_hr, excess)
    assert worst is not None
    return SetAnatomy(dataset.name, images, worst[1], worst[2])


# ------------------------------------------------------------------------------------ the document


def _checkpoint_pairs(index_path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(binary entry, twin entry) of every pair in a study checkpoint index, sorted by track and scale."""
    try:
        entries = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BinsrError(f"checkpoint index not found: {index_path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BinsrError(f"cannot read checkpoint index {index_path}: {error}") from None
    fields = ("file", "track", "scale", "model", "variant", "binary", "seed", "iterations")
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and all(f in e for f in fields) for e in entries
    ):
        raise BinsrError(f"{index_path} is not a checkpoint index (a list of {{{', '.join(fields)}}})")
    twins = {_pair_key(e): e for e in entries if not e["binary"]}
    pairs = [(e, twins[_pair_key(e)]) for e in entries if e["binary"] and _pair_key(e) in twins]
    if not pairs:
        raise BinsrError(f"{index_path} lists no binary checkpoint with its twin")
    return sorted(pairs, key=lambda pair: _pair_key(pair[0]))


def _pair_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What a binary checkpoint and its twin share: all but ``binary`` (and the file)."""
    return tuple(entry[f] for f in ("track", "scale", "model", "variant", "seed", "iterations"))


def _row(label: str, gap: float, parts: Sequence[float]) -> str:
    return "| " + " | ".join([label, f"{gap:+.3f}", *(f"{p:+.3f}" for p in parts)]) + " |"


def _figure(anatomy: SetAnatomy, title: str, path: Path) -> None:
    """The HR plane of the set's worst image beside its excess error map D = e_B − e_M."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from binsr.study.report import save_figure

    worst = min(anatomy.images, key=lambda image: image.gap)
    height, width = anatomy.worst_plane.shape
    figure = Figure(
        figsize=(2 * 4.5 * width / max(height, width) + 1.5, 4.5 * height / max(height, width) + 0.9)
    )
    left, right = figure.subplots(1, 2)
    left.imshow(anatomy.worst_plane, cmap="gray", vmin=0, vmax=255)
    left.set_title(f"{anatomy.name} {worst.image}: HR (Y)", fontsize=9)
    limit = max(float(np.quantile(np.abs(anatomy.worst_excess), 0.999)), 1e-9)
    shown = right.imshow(anatomy.worst_excess, cmap="RdBu_r", vmin=-limit, vmax=limit)
    right.set_title(f"e_binary − e_twin (gap {worst.gap:+.3f} dB)", fontsize=9)
    for ax in (left, right):
        ax.set_axis_off()
    figure.colorbar(
        shown, ax=right, fraction=0.046, pad=0.02, label="squared-error excess (red: binary worse)"
    )
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def write_anatomy(
    index: str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    convention: str = "matlab",
    progress: bool = True,
) -> list[Path]:
    """Write ``output`` (Markdown) and one figure per checkpoint pair (in ``<output folder>/results/``):
    the anatomy of the gap of every binary checkpoint in the study index ``index`` to its twin, on each
    evaluation set folder of ``data``. Returns the written files."""
    from binsr.study.report import FIGURES_DIR

    index_path, output = Path(index), Path(output)
    if index_path.is_dir():
        index_path = index_path / "index.json"
    pairs = _checkpoint_pairs(index_path)
    if not data:
        raise BinsrError("no evaluation set given (--data FOLDER)")
    sets = {
        scale: [open_eval_set(f, scale) for f in data] for scale in sorted({b["scale"] for b, _ in pairs})
    }
    folder = output.parent / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Where the binary model loses to its twin",
        "",
        "Generated by `binsr study anatomy` (binsr.study.anatomy) from the checkpoints shipped with the "
        "study "
        f"(`{os.path.relpath(index_path, output.parent)}`), run on the CPU as `binsr eval` runs them; no "
        "hand-typed numbers. For each image, the "
        "gap Δ = PSNR(binary) − PSNR(twin) (MATLAB protocol, Y, `scale` pixels cropped) is split over "
        "regions by the binary model's excess squared error D = e_binary − e_twin: "
        "Δ_R = Δ · Σ_R D / Σ D. The gradient bands cut each image at its own quantiles of the HR "
        f"gradient magnitude |∇Y| and sum to Δ; the border band (pixels within {BORDER_PX} px of the scored "
        "plane's edge) overlaps them. Each set's row is the mean over its images, in dB; the *pixels* row "
        "is the share of the pixels each region holds.",
        "",
    ]
    written = [output]
    for binary_entry, twin_entry in pairs:
        track, scale = binary_entry["track"], binary_entry["scale"]
        paths = [index_path.parent / e["file"] for e in (binary_entry, twin_entry)]
        binary, twin = (resolve_upscaler(str(p), scale) for p in paths)
        model, variant, seed = binary_entry["model"], binary_entry["variant"], binary_entry["seed"]
        title = f"{track} x{scale}: {model} {variant}, seed {seed}, {binary_entry['iterations']} iterations"
        lines += [f"## {title}", "", f"`{paths[0].name}` against `{paths[1].name}`.", ""]
        header = ["set / image", "Δ (dB)", *REGIONS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        anatomies = [set_anatomy(binary, twin, dataset, convention, progress) for dataset in sets[scale]]
        for anatomy in anatomies:
            lines.append(_row(f"**{anatomy.name}**", anatomy.gap, [anatomy.mean_part(r) for r in REGIONS]))
            shares = [f"{anatomy.mean_pixel_share(r):.1%}" for r in REGIONS]
            lines.append("| *share of pixels* | | " + " | ".join(shares) + " |")
            for image in sorted(anatomy.images, key=lambda i: i.gap)[:WORST_IMAGES]:
                lines.append(
                    _row(f"{anatomy.name} {image.image}", image.gap, [image.parts[r] for r in REGIONS])
                )
        worst_set = min(anatomies, key=lambda a: min(i.gap for i in a.images))
        name = f"anatomy_{track}_x{scale}.png"
        _figure(worst_set, title, folder / name)
        written.append(folder / name)
        lines += ["", f"![{title}: the image that loses most]({FIGURES_DIR}/{name})", ""]
    atomic_write_bytes(output, "\n".join(lines).encode("utf-8"))
    return written

"""``RESULTS.md`` and its figures, generated from ``study.json`` alone (no hand-typed numbers).

For every (track, scale) the report has one table row per (model, variant, precision, iterations):
mean ± sample standard deviation (n − 1) over seeds of PSNR / SSIM on each evaluation set, the gap to the
full-precision twin (binary − twin PSNR, paired by seed, mean over the seeds both have; the twin is the
record with the same model, variant, track, scale, seed and iterations and ``binary: false``), OPs (G)
and params (K) by BBCU's convention. Below it: the best ``ours`` variant against its twin and against
``bbcu_l``, and the plateau check (twins trained longer: Set5 gain of the longer run). Figures (PNG,
matplotlib Agg) go to ``results/`` next to the report: PSNR against OPs and validation curves (from
the curves each record carries). Everything is sorted, so the same ``study.json`` gives the same files.

Where records carry per-image PSNR (``scores[set]["per_image_psnr"]``), the best variant's gaps and its
margin over ``bbcu_l`` get 95 % intervals from a bootstrap over seeds and images
(:func:`bootstrap_interval`, a fixed generator seed so the report is reproducible), and a figure shows
the gap of every image against its twin's PSNR, naming the images that lose most.

Where records carry x8 self-ensemble scores (``scores_x8``), a table gives, per binary group, the gap
to the twin with both models self-ensembled and the self-ensembled binary network against the plain
twin, on the seeds both have those scores for, beside the plain gap on the same seeds.

Where records carry the ``network`` section they were trained with, a table crosses the activation
surrogates with the learnable threshold (:func:`surrogate_ablation`): the binary ``ours`` variants that
differ from one another in those two options only, each against its own twin.
"""

from __future__ import annotations

import inspect
import io
import itertools
import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from binsr.errors import BinsrError
from binsr.fileio import atomic_write_bytes
from binsr.hardware import UNRECORDED_DEVICE

__all__ = [
    "FIGURES_DIR",
    "PER_IMAGE",
    "best_variant",
    "bootstrap_interval",
    "load_results",
    "paired_differences",
    "render_report",
    "save_figure",
    "screened_ahead",
    "surrogate_ablation",
    "write_report",
]

FIGURES_DIR = "results"
"""Folder, next to the report, that receives the figures."""
SET_ORDER = ("Set5", "Set14", "BSD100", "B100", "Urban100", "Manga109")
PLATEAU_DB = 0.1
"""A twin has plateaued when training it ``factor`` x longer raises Set5 PSNR by less than this."""
TARGET_GAP_DB = 0.05
"""The study's goal: the best binary variant loses at most this much to its twin on every set."""
GROUP_KEYS = ("track", "scale", "model", "variant", "binary", "iterations")
PER_IMAGE = "per_image_psnr"
"""Key, in a set's score, of the PSNR of each image (image name → dB): optional in ``study.json``."""
SELF_ENSEMBLE = "scores_x8"
"""Key, in a record, of its scores with the x8 self-ensemble (:class:`binsr.inference.SelfEnsemble`,
EDSR's "+"): the same shape as ``scores``, optional (``binsr study --score-only --self-ensemble``)."""
CONFIDENCE = 0.95
"""Coverage of the bootstrap intervals in the report."""
BOOTSTRAP_RESAMPLES = 4000
"""Resamples drawn for each bootstrap interval."""
WORST_IMAGES = 3
"""How many of the images that lose most to the twin the report names per set."""
ABLATION_FACTORS = ("surrogate", "learnable_threshold")
"""The two options of the surrogate ablation (issue 6: every surrogate with learnable thresholds on
and off)."""
COMPETITORS = ("bnn", "bireal", "irnet", "reactnet", "btm", "ma2019", "e2fif", "bbcu_l", "bbcu_m")
"""The published binary SR methods every (track, scale) of the study compares ``ours`` with."""

_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "variant": (str,),
    "binary": (bool,),
    "track": (str,),
    "scale": (int,),
    "seed": (int,),
    "iterations": (int,),
    "checkpoint": (str,),
    "ops": (int, float),
    "params": (int, float),
    "scores": (dict,),
}


# ------------------------------------------------------------------------------------- loading


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check ``study.json``: ``{"runs": [record, ...]}`` (see :mod:`binsr.study`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "study.json"
    if not path.is_file():
        raise BinsrError(f"study results not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BinsrError(f"cannot read study results {path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise BinsrError(f'study results {path} must hold {{"runs": [...]}}')
    for index, record in enumerate(data["runs"]):
        where = f"study results {path}: runs[{index}]"
        if not isinstance(record, dict):
            raise BinsrError(f"{where} must be an object")
        for key, types in _FIELDS.items():
            if not _is(record.get(key), types):
                raise BinsrError(f"{where}.{key} must be {' or '.join(t.__name__ for t in types)}")
        if SELF_ENSEMBLE in record and not isinstance(record[SELF_ENSEMBLE], dict):
            raise BinsrError(f"{where}.{SELF_ENSEMBLE} must be dict")
        for field in ("scores", SELF_ENSEMBLE):
            for name, score in record.get(field, {}).items():
                if not isinstance(score, dict) or not all(
                    _is(score.get(m), (int, float)) for m in ("psnr", "ssim")
                ):
                    raise BinsrError(f'{where}.{field}.{name} must be {{"psnr": number, "ssim": number}}')
                images = score.get(PER_IMAGE, {})
                if not isinstance(images, dict) or not all(_is(v, (int, float)) for v in images.values()):
                    raise BinsrError(f"{where}.{field}.{name}.{PER_IMAGE} must map image names to numbers")
    return data


# ----------------------------------------------------------------------------------- statistics


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _set_names(records: Sequence[dict[str, Any]]) -> list[str]:
    names = {name for record in records for name in record["scores"]}
    known = [name for name in SET_ORDER if name in names]
    return known + sorted(names - set(known))


def _groups(records: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Records grouped by (track, scale, model, variant, binary, iterations); each group sorted by seed."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record[k] for k in GROUP_KEYS), []).append(record)
    for members in groups.values():
        members.sort(key=lambda r: r["seed"])
    return groups


def _group_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    track, scale, model, variant, binary, iterations = key
    return (track, scale, model, variant, not binary, iterations)


def _scores(members: Sequence[dict[str, Any]], name: str, metric: str) -> list[float]:
    return [float(r["scores"][name][metric]) for r in members if name in r["scores"]]


def twin_gap(
    binary: Sequence[dict[str, Any]],
    twin: Sequence[dict[str, Any]],
    name: str,
    field: str = "scores",
    twin_field: str | None = None,
) -> tuple[float | None, int]:
    """Mean over common seeds of binary − twin PSNR on set ``name``, and the number of seeds used; the
    binary runs' scores are taken from ``field`` and the twins' from ``twin_field`` (default: the same),
    e.g. ``field=SELF_ENSEMBLE, twin_field="scores"``: the self-ensembled binary against the plain twin."""
    twin_field = twin_field or field
    twin_by_seed = {r["seed"]: r for r in twin if name in r.get(twin_field, {})}
    gaps = [
        float(r[field][name]["psnr"]) - float(twin_by_seed[r["seed"]][twin_field][name]["psnr"])
        for r in binary
        if r["seed"] in twin_by_seed and name in r.get(field, {})
    ]
    return (statistics.fmean(gaps), len(gaps)) if gaps else (None, 0)


def paired_differences(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]], name: str, field: str = "scores"
) -> tuple[list[str], np.ndarray] | None:
    """Per-image PSNR of ``first`` − ``second`` on set ``name``, paired by seed and image (both taken
    from ``field``: ``scores``, or ``scores_x8`` for the self-ensembles).

    Returns the image names and a (seeds × images) matrix over the seeds both have, or ``None`` when a
    paired record lacks per-image scores or the two score different images. The mean of the matrix is
    the difference of the set means (a set's PSNR is the mean of its images')."""
    second_by_seed = {r["seed"]: r for r in second}
    images: list[str] | None = None
    rows = []
    for record in first:
        other = second_by_seed.get(record["seed"])
        if other is None:
            continue
        mine = record.get(field, {}).get(name, {}).get(PER_IMAGE)
        theirs = other.get(field, {}).get(name, {}).get(PER_IMAGE)
        if not mine or not theirs or set(mine) != set(theirs) or (images and set(mine) != set(images)):
            return None
        images = images or sorted(mine)
        rows.append([float(mine[image]) - float(theirs[image]) for image in images])
    return (images, np.asarray(rows)) if rows and images else None


def bootstrap_interval(
    matrices: Sequence[np.ndarray],
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over ``matrices`` of each matrix's mean.

    Each matrix is (seeds × images) of paired differences on one evaluation set, with the same seeds
    as rows in every matrix. One resample draws the seeds with replacement (shared by the sets: a seed's
    runs are scored on all of them) and, within each set, the images with replacement (a two-level,
    "hierarchical" bootstrap: Efron & Tibshirani 1993, ch. 8; Davison & Hinkley 1997, sec. 3.8), so the
    interval covers both the seed-to-seed spread of training and which images a test set happens to
    hold. With one seed it covers the images only; with few seeds it is somewhat too narrow, since a
    resample of n seeds has (n − 1)/n of their variance.
    """
    if not matrices or len({m.shape[0] for m in matrices}) != 1:
        raise BinsrError("bootstrap_interval needs one or more matrices with the same seeds as rows")
    rng = np.random.default_rng(seed)
    n_seeds = matrices[0].shape[0]
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples) / n_seeds
    means = np.zeros(resamples)
    for matrix in matrices:
        n_images = matrix.shape[1]
        image_weights = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples)
        means += np.einsum("rs,si,ri->r", seed_weights, matrix, image_weights / n_images)
    means /= len(matrices)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def _interval_of(
    first: Sequence[dict[str, Any]],
    second: Sequence[dict[str, Any]],
    sets: Sequence[str],
    field: str = "scores",
) -> tuple[float, float] | None:
    """:func:`bootstrap_interval` of the mean over ``sets`` of ``first`` − ``second`` (scores from
    ``field``), if every set has per-image scores on the same seeds."""
    paired = [paired_differences(first, second, name, field) for name in sets]
    if not paired or any(p is None for p in paired) or len({p[1].shape[0] for p in paired if p}) != 1:
        return None
    return bootstrap_interval([p[1] for p in paired if p])


# ------------------------------------------------------------------------------------ formatting


def _fmt(values: Sequence[float], digits: int) -> str:
    if not values:
        return "–"
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_gap(gap: float | None) -> str:
    return "–" if gap is None else f"{gap:+.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _slug(track: str, scale: int) -> str:
    return f"{track}_x{scale}"


def render_report(
    records: Sequence[dict[str, Any]], source: str, figures: dict[tuple[str, int], list[tuple[str, str]]]
) -> str:
    """The Markdown text of the report (``figures``: (track, scale) → [(title, relative path)])."""
    groups = _groups(records)
    sets = _set_names(records)
    lines = [
        "# Results of the binarization study",
        "",
        f"Generated by `binsr study report` from `{source}` ({len(records)} records); do not edit by hand,",
        "rerun the command. PSNR / SSIM on the Y channel (MATLAB protocol, docs/PROTOCOL.md) of each run's",
        "final (EMA) checkpoint: mean ± sample standard deviation over seeds. Δ = binary − full-precision",
        "twin PSNR in dB (same model, variant, track, scale, seed and iterations), mean over seeds.",
        "OPs = FP MACs + binary MACs / 64 and params = FP + binary / 32 (BBCU's convention), 320×180 input.",
    ]
    for track, scale in sorted({(k[0], k[1]) for k in groups}):
        keys = sorted((k for k in groups if k[0] == track and k[1] == scale), key=_group_order)
        lines += ["", f"## Track `{track}`, x{scale}", ""]
        by_run = {r.get("run", r["checkpoint"]): r for k in keys for r in groups[k]}  # shared twins once
        seconds = sum(float(r.get("train_seconds") or 0.0) for r in by_run.values())
        lines.append(f"{len(by_run)} training runs, {seconds / 3600:.1f} h of training in all.")
        lines.append(f"Trained on: {_devices_line(by_run.values())}.")
        for title, link in figures.get((track, scale), []):
            lines += ["", f"![{title}]({link})"]
        header = ["model", "variant", "bits", "iterations", "seeds"]
        header += [f"{name} PSNR / SSIM" for name in sets] + [f"Δ {name}" for name in sets]
        header += ["OPs (G)", "params (K)"]
        rows = []
        twin_rows = _twin_rows(groups, keys)
        for key in _shown(groups, keys):
            _, _, model, variant, binary, iterations = key
            members = groups[key]
            twin = groups.get((track, scale, model, variant, False, iterations), []) if binary else []
            sharing = len(twin_rows.get(key, []))
            name = f"{variant} (twin shared with {sharing} more)" if sharing else variant
            row = [model, name, "1" if binary else "32", str(iterations), str(len(members))]
            row += [
                f"{_fmt(_scores(members, n, 'psnr'), 2)} / {_fmt(_scores(members, n, 'ssim'), 4)}"
                for n in sets
            ]
            row += [_fmt_gap(twin_gap(members, twin, n)[0]) if binary else "" for n in sets]
            row += [
                f"{statistics.fmean(float(r['ops']) for r in members) / 1e9:.2f}",
                f"{statistics.fmean(float(r['params']) for r in members) / 1e3:.1f}",
            ]
            rows.append(row)
        lines += ["", *_table(header, rows)]
        lines += _best_ours(records, groups, track, scale, sets)
        lines += _competitor_coverage(groups, track, scale)
        lines += _surrogate_table(groups, track, scale, sets)
        lines += _self_ensemble(groups, keys, sets)
        lines += _plateau(groups, keys)
    return "\n".join(lines) + "\n"


def _runs_of(members: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    return tuple(sorted(str(r.get("run", r["checkpoint"])) for r in members))


def _devices_line(records: Iterable[dict[str, Any]]) -> str:
    """Where the runs of ``records`` (one record per run) trained: each device with its number of runs,
    and how many of them trained there only in part (a record with ``train_time`` names every device
    it trained on; an older one only the device that finished it, as ``device``)."""
    runs: Counter[str] = Counter()
    partly: Counter[str] = Counter()
    for record in records:
        devices = list(record.get("train_time") or [record.get("device") or UNRECORDED_DEVICE])
        devices = [f"{d} (see docs/STUDY.md)" if d == UNRECORDED_DEVICE else d for d in devices]
        runs.update(devices)
        if len(devices) > 1:
            partly.update(devices)
    shares = {d: f", {partly[d]} of them in part" if partly[d] else "" for d in runs}
    return "; ".join(f"{d} ({n} runs{shares[d]})" for d, n in sorted(runs.items()))


def _twin_rows(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The full-precision rows of the table, each with the other (model, variant) groups it stands for.

    A twin shared by several variants (or models) gets one row: of the groups holding its runs, the one
    with the most seeds, preferring one with a binary row beside it, then the first. A group whose runs
    all belong to a row already chosen (the same trainings, on as many seeds or fewer) gets no row of
    its own; it is counted in the first such row."""
    binaries = {(k[2], k[3], k[5]) for k in keys if k[4]}
    twins = [k for k in keys if not k[4]]
    runs = {key: set(_runs_of(groups[key])) for key in twins}
    order = sorted(twins, key=lambda k: (-len(runs[k]), (k[2], k[3], k[5]) not in binaries, twins.index(k)))
    rows: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for key in order:
        container = next((row for row in rows if runs[key] <= runs[row]), None)
        if container is None:
            rows[key] = []
        else:
            rows[container].append(key)
    return rows


def _shown(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], keys: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The rows of the table: every binary group and one row per distinct full-precision training."""
    twin_rows = _twin_rows(groups, keys)
    return [key for key in keys if key[4] or key in twin_rows]


def _seeds(members: Sequence[dict[str, Any]]) -> str:
    return _seed_words(r["seed"] for r in members)


def _seed_words(seeds: Iterable[int]) -> str:
    chosen = sorted({int(seed) for seed in seeds})
    return f"seed{'s' if len(chosen) > 1 else ''} {', '.join(map(str, chosen))}"


def best_variant(
    records: Sequence[dict[str, Any]], track: str, scale: int, model: str = "ours"
) -> tuple[tuple[Any, ...], list[float]] | None:
    """The binary variant of ``model`` with the smallest mean loss to its twin over the sets, at
    ``track`` and ``scale``, among the runs of the longest training that has one and, within it, of the
    variants paired with their twins on the most seeds: its group key
    ``(track, scale, model, variant, True, iterations)`` and its gap on each set; ``None`` if no binary
    variant has a twin scored on every set (binary runs of a plateau check, ``kind: plateau``, are not
    a budget and do not count). The longest budget comes first because a gap measured on
    under-trained twins says little (a shorter slice can show a smaller gap that does not last); the
    seed count next because in a screening design a variant run on one seed has not been confirmed
    (:func:`screened_ahead` lists those that look better)."""
    candidates = _gap_candidates(records, track, scale, model)
    if not candidates:
        return None
    _, _, key, gaps = max(candidates, key=lambda c: (c[2][5], c[1], c[0], c[2][3]))
    return key, gaps


def _gap_candidates(
    records: Sequence[dict[str, Any]], track: str, scale: int, model: str, seeds: set[int] | None = None
) -> list[tuple[float, int, tuple[Any, ...], list[float]]]:
    """(mean gap over the sets, seeds paired, group key, gap per set) of every binary variant of
    ``model`` with a twin scored on every set, on ``seeds`` only when given."""
    chosen = [r for r in records if seeds is None or r["seed"] in seeds]
    groups = _groups(chosen)
    sets = _set_names([r for r in records if r["track"] == track and r["scale"] == scale])
    candidates = []
    for key, members in groups.items():
        if key[:3] != (track, scale, model) or not key[4]:
            continue
        if all(r.get("kind") == "plateau" for r in members):
            continue  # a binary run trained as long as the plateau twins: a check, not a budget
        twin = groups.get((*key[:4], False, key[5]), [])
        paired = [twin_gap(members, twin, name) for name in sets]
        gaps = [gap for gap, _ in paired]
        if gaps and all(gap is not None for gap in gaps):
            seeds_paired = min(n for _, n in paired)
            candidates.append((statistics.fmean(gaps), seeds_paired, key, gaps))  # type: ignore[arg-type]
    return candidates


def screened_ahead(
    records: Sequence[dict[str, Any]], best: tuple[Any, ...], model: str = "ours"
) -> list[tuple[str, list[int], float, float]]:
    """Variants of ``model`` at the budget of ``best`` (a :func:`best_variant` key) run on fewer seeds
    whose mean gap over the sets, on their own seeds, is smaller than ``best``'s on the same seeds:
    ``(variant, seeds, its mean gap, best's mean gap)``, the candidates to confirm on every seed."""
    track, scale, _, best_name, _, iterations = best
    out = []
    for _, _, key, _ in _gap_candidates(records, track, scale, model):
        if key[5] != iterations or key[3] == best_name:
            continue
        seeds = {r["seed"] for r in records if tuple(r[k] for k in GROUP_KEYS) == key}
        on_seeds = {c[2][3]: c[0] for c in _gap_candidates(records, track, scale, model, seeds)}
        if best_name in on_seeds and on_seeds[key[3]] > on_seeds[best_name]:
            out.append((key[3], sorted(seeds), on_seeds[key[3]], on_seeds[best_name]))
    return sorted(out, key=lambda item: -item[2])


def _best_ours(
    records: Sequence[dict[str, Any]],
    groups: dict[tuple[Any, ...], list[dict[str, Any]]],
    track: str,
    scale: int,
    sets: list[str],
) -> list[str]:
    """The best ``ours`` variant (:func:`best_variant`) against the target and against ``bbcu_l`` (mean
    PSNR difference over the sets, on the seeds both have)."""
    best = best_variant(records, track, scale)
    if best is None:
        return []
    key, gaps = best
    _, _, _, variant, _, iterations = key
    twin = groups.get((*key[:4], False, iterations), [])
    met = all(gap >= -TARGET_GAP_DB for gap in gaps)
    intervals = {name: _interval_of(groups[key], twin, [name]) for name in sets}
    detail = ", ".join(
        f"{name} {gap:+.3f} dB" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if (iv := intervals[name]) else "")
        for name, gap in zip(sets, gaps, strict=True)
    )
    lines = [
        "",
        f"Best `ours` variant: **{variant}** ({iterations} iterations, {_seeds(groups[key])}): "
        f"Δ to its twin {detail} "
        f"(target ≥ −{TARGET_GAP_DB} dB on every set: {'met' if met else 'not met'}).",
    ]
    plateau = twin_plateau(groups, (*key[:4], False, iterations))
    if plateau is None:
        lines.append(f"Its twin's plateau at {iterations} iterations has not been checked.")
    elif plateau[0] >= PLATEAU_DB:
        lines.append(
            f"**Its twin had not plateaued** at {iterations} iterations (Set5 {plateau[0]:+.3f} dB at "
            f"{plateau[2]}, plateau check below): a gap measured on an under-trained twin, not the "
            "study's measurement; the longer budget's runs replace it."
        )
    else:
        lines.append(
            f"Its twin has plateaued at {iterations} iterations (Set5 {plateau[0]:+.3f} dB at {plateau[2]})."
        )
    if any(intervals.values()):
        below = [name for name, iv in intervals.items() if iv and iv[1] < -TARGET_GAP_DB]
        within = [name for name, iv in intervals.items() if iv and iv[0] < -TARGET_GAP_DB <= iv[1]]
        above = [name for name, iv in intervals.items() if iv and iv[0] >= -TARGET_GAP_DB]
        verdicts = [
            f"{', '.join(names)}: {words}"
            for names, words in (
                (below, "missed beyond that noise (whole interval below the target)"),
                (within, "within that noise of the target"),
                (above, "met beyond that noise"),
            )
            if names
        ]
        lines.append(
            f"In brackets: {CONFIDENCE:.0%} bootstrap intervals over seeds and images "
            f"(`bootstrap_interval`). {'; '.join(verdicts)}."
        )
    losses = []
    for name in sets:
        per_image = _image_gaps(groups[key], twin, name)
        if per_image is not None:
            worst = sorted(zip(per_image[2], per_image[0], strict=True))[:WORST_IMAGES]
            losing = sum(1 for gap in per_image[2] if gap < 0)
            named = ", ".join(f"{image} {gap:+.3f}" for gap, image in worst)
            losses.append(f"{name} {losing}/{len(per_image[0])} images lose (most: {named})")
    if losses:
        lines.append(f"Per image (mean over seeds, dB): {'; '.join(losses)}.")
    ahead = screened_ahead(records, key)
    if ahead:
        listed = "; ".join(
            f"`{name}` ({_seed_words(seeds)}: {mine:+.3f} dB against {theirs:+.3f} dB)"
            for name, seeds, mine, theirs in ahead
        )
        lines.append(
            f"Screened on fewer seeds, smaller mean Δ than `{variant}` on the same seeds: {listed}; "
            "to be confirmed on every seed before they count."
        )
    bbcu = groups.get((track, scale, "bbcu_l", "base", True, iterations), [])
    common = {r["seed"] for r in bbcu} & {r["seed"] for r in groups[key]}
    reference = [r for r in bbcu if r["seed"] in common]  # the same seeds on both sides
    chosen = [r for r in groups[key] if r["seed"] in common]
    if reference:
        margin = _mean_difference(chosen, reference, sets)
        if margin is not None:
            interval = _interval_of(chosen, reference, sets)
            bracket = f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
            ceiling = _mean_difference([r for r in twin if r["seed"] in common], reference, sets)
            lossless = (
                f" (its twin's margin, what a lossless binary `{variant}` would have: {ceiling:+.3f} dB)"
                if ceiling is not None
                else ""
            )
            lines.append(
                f"Against `bbcu_l` on the same budget ({_seeds(reference)}): "
                f"{margin:+.3f} dB{bracket} PSNR on average over the sets{lossless}."
            )
    return lines


def _mean_difference(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]], sets: Sequence[str]
) -> float | None:
    """Mean over ``sets`` (those both score) of the difference of the two groups' mean PSNR."""
    diffs = []
    for name in sets:
        mine, theirs = _scores(first, name, "psnr"), _scores(second, name, "psnr")
        if mine and theirs:
            diffs.append(statistics.fmean(mine) - statistics.fmean(theirs))
    return statistics.fmean(diffs) if diffs else None


def network_options(record: dict[str, Any]) -> dict[str, Any] | None:
    """The options the record's network was built with: its model's defaults (the keywords of its entry
    function, :func:`binsr.models.model_factory`) overridden by the record's ``network`` section; ``None``
    for a record without one (written before the study recorded it) or of a model no longer registered."""
    from binsr.models import list_models, model_factory

    network = record.get("network")
    if not isinstance(network, dict) or record["model"] not in list_models():
        return None
    parameters = inspect.signature(model_factory(record["model"])).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **{key: value for key, value in network.items() if key != "name"}}


def surrogate_ablation(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], track: str, scale: int, model: str = "ours"
) -> tuple[int, list[int], dict[tuple[str, bool], tuple[Any, ...]]] | None:
    """The cells of the surrogate × learnable-threshold ablation of ``model`` at ``track`` and ``scale``.

    Candidates are the binary groups trained plainly (``kind: binary``: no distillation, no plateau
    check) whose records carry their ``network``; they are split by budget and by every option other
    than :data:`ABLATION_FACTORS`, and the split with the most (surrogate, learnable threshold) cells
    wins (then the longest budget). Returns its iterations, the seeds every cell has paired with its
    twin, and each cell's group key; ``None`` when no split has both threshold settings or no seed is
    common to its cells."""
    splits: dict[tuple[Any, ...], dict[tuple[str, bool], tuple[Any, ...]]] = {}
    for key, members in groups.items():
        if key[:3] != (track, scale, model) or not key[4]:
            continue
        if any(r.get("kind") != "binary" for r in members):
            continue
        options = [network_options(r) for r in members]
        first = options[0]
        if first is None or any(other != first for other in options):
            continue
        rest = tuple(sorted((k, repr(v)) for k, v in first.items() if k not in ABLATION_FACTORS))
        cell = (str(first["surrogate"]), bool(first["learnable_threshold"]))
        splits.setdefault((key[5], rest), {})[cell] = key
    usable = [(split, cells) for split, cells in splits.items() if len({on for _, on in cells}) == 2]
    if not usable:
        return None
    (iterations, _), cells = max(usable, key=lambda item: (len(item[1]), item[0][0]))
    seeds: set[int] | None = None
    for key in cells.values():
        twin = {r["seed"] for r in groups.get((*key[:4], False, key[5]), [])}
        paired = {r["seed"] for r in groups[key]} & twin
        seeds = paired if seeds is None else seeds & paired
    if not seeds:
        return None
    return iterations, sorted(seeds), cells


def _surrogate_table(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], track: str, scale: int, sets: list[str]
) -> list[str]:
    """The :func:`surrogate_ablation` table: a row per surrogate, the Δ to the twin per set (and its
    mean over the sets) with the threshold learnable and fixed, and learnable − fixed."""
    ablation = surrogate_ablation(groups, track, scale)
    if ablation is None:
        return []
    iterations, seeds, cells = ablation

    def gaps(key: tuple[Any, ...]) -> list[float] | None:
        members = [r for r in groups[key] if r["seed"] in seeds]
        twin = groups.get((*key[:4], False, key[5]), [])
        found = [twin_gap(members, twin, name)[0] for name in sets]
        return None if any(gap is None for gap in found) else found  # type: ignore[return-value]

    measured = {cell: gaps(key) for cell, key in cells.items()}
    rows = []
    for surrogate in sorted({name for name, _ in cells}):
        row = [surrogate]
        means = []
        for on in (True, False):
            found = measured.get((surrogate, on))
            if found is None:
                row.append("not run")
                means.append(None)
                continue
            means.append(statistics.fmean(found))
            per_set = " / ".join(f"{gap:+.3f}" for gap in found)
            row.append(f"`{cells[(surrogate, on)][3]}`: {per_set} ({means[-1]:+.3f})")
        both = means[0] is not None and means[1] is not None
        row.append(f"{means[0] - means[1]:+.3f}" if both else "")  # type: ignore[operator]
        rows.append(row)
    header = ["surrogate", "learnable threshold", "fixed threshold", "learnable − fixed"]
    return [
        "",
        f"Surrogate ablation ({iterations} iterations, {_seed_words(seeds)}): the binary `ours` variants "
        "that differ from one another only in the activation surrogate and in whether the threshold "
        f"`b` of Sign(x + b) is learned, each against its own twin: Δ {' / '.join(sets)} (mean over "
        "the sets), dB.",
        "",
        *_table(header, rows),
    ]


def _competitor_coverage(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], track: str, scale: int
) -> list[str]:
    """Which of :data:`COMPETITORS` have, at this (track, scale), a binary run paired with its twin (a
    seed both have), at which iteration counts, and which have none yet."""
    paired: dict[str, set[int]] = {}
    for (t, s, model, variant, binary, iterations), members in groups.items():
        if (t, s) != (track, scale) or not binary or model not in COMPETITORS:
            continue
        twin = groups.get((t, s, model, variant, False, iterations), [])
        if {r["seed"] for r in twin} & {r["seed"] for r in members}:
            paired.setdefault(model, set()).add(iterations)
    done = [f"`{m}` ({', '.join(map(str, sorted(paired[m])))})" for m in COMPETITORS if m in paired]
    missing = [f"`{m}`" for m in COMPETITORS if m not in paired]
    line = f"Competitors with a binary run and its twin (iterations): {', '.join(done) or 'none'}"
    return ["", line + (f"; none yet: {', '.join(missing)}." if missing else "; all of them.")]


def _self_ensemble(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], keys: list[tuple[Any, ...]], sets: list[str]
) -> list[str]:
    """A table of the binary groups whose runs and twins carry x8 self-ensemble scores, on the seeds
    that have them on both sides: the plain gap, the gap with both self-ensembled, and the
    self-ensembled binary network against the plain twin (8x its binary OPs against the twin's)."""
    rows = []
    for key in keys:
        track, scale, model, variant, binary, iterations = key
        if not binary:
            continue
        twin = groups.get((track, scale, model, variant, False, iterations), [])
        paired = {r["seed"] for r in twin if r.get(SELF_ENSEMBLE)} & {
            r["seed"] for r in groups[key] if r.get(SELF_ENSEMBLE)
        }
        if not paired:
            continue
        mine = [r for r in groups[key] if r["seed"] in paired]
        theirs = [r for r in twin if r["seed"] in paired]
        row = [model, variant, str(iterations), _seed_words(paired)]
        row += [_fmt_gap(twin_gap(mine, theirs, n)[0]) for n in sets]
        for n in sets:
            interval = _interval_of(mine, theirs, [n], SELF_ENSEMBLE)
            bracket = f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
            row.append(_fmt_gap(twin_gap(mine, theirs, n, SELF_ENSEMBLE)[0]) + bracket)
        row += [_fmt_gap(twin_gap(mine, theirs, n, SELF_ENSEMBLE, "scores")[0]) for n in sets]
        rows.append(row)
    if not rows:
        return []
    header = ["model", "variant", "iterations", "seeds"]
    header += [f"Δ {n}" for n in sets] + [f"Δ×8 {n}" for n in sets] + [f"×8 − twin {n}" for n in sets]
    return [
        "",
        'With the x8 self-ensemble (the mean over the 8 flips and rotations of the input, EDSR\'s "+"; '
        "`binsr study --score-only --self-ensemble`): Δ plain, Δ×8 with both models self-ensembled, and "
        "×8 − twin: the self-ensembled binary network against the plain twin (dB, mean over the seeds "
        f"scored both ways; in brackets {CONFIDENCE:.0%} bootstrap intervals over seeds and images).",
        "",
        *_table(header, rows),
    ]


def _image_gaps(
    binary: Sequence[dict[str, Any]], twin: Sequence[dict[str, Any]], name: str
) -> tuple[list[str], list[float], list[float]] | None:
    """Image names, the twin's PSNR of each and binary − twin PSNR of each (means over paired seeds) on
    set ``name``, or ``None`` without per-image scores."""
    paired = paired_differences(binary, twin, name)
    if paired is None:
        return None
    images, matrix = paired
    seeds = {r["seed"] for r in binary}
    twin_psnr = np.mean(
        [[float(r["scores"][name][PER_IMAGE][i]) for i in images] for r in twin if r["seed"] in seeds], axis=0
    )
    return images, twin_psnr.tolist(), matrix.mean(axis=0).tolist()


def _plateau_checks(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], keys: list[tuple[Any, ...]]
) -> list[tuple[list[str], int, int, float, float, set[str]]]:
    """Every plateau check among ``keys``: (the model/variant names sharing the twin, short and long
    iteration counts, mean Set5 PSNR of each over the paired seeds, the short runs' checkpoints)."""
    by_network: dict[tuple[Any, ...], dict[int, list[dict[str, Any]]]] = {}
    for key in keys:
        _, _, model, variant, binary, iterations = key
        if not binary:
            by_network.setdefault((model, variant), {})[iterations] = groups[key]
    merged: dict[tuple[Any, ...], list[str]] = {}
    values: dict[tuple[Any, ...], tuple[int, int, float, float]] = {}
    for (model, variant), runs in sorted(by_network.items()):
        for short_n, long_n in itertools.pairwise(sorted(runs)):
            long_by_seed = {r["seed"]: r for r in runs[long_n] if "Set5" in r["scores"]}
            pairs = [
                (r, long_by_seed[r["seed"]])
                for r in runs[short_n]
                if r["seed"] in long_by_seed and "Set5" in r["scores"]
            ]
            if not pairs:
                continue
            runs_paired = sorted((a.get("checkpoint", ""), b.get("checkpoint", "")) for a, b in pairs)
            identity = (short_n, long_n, tuple(runs_paired))
            merged.setdefault(identity, []).append(f"{model}/{variant}")
            short = statistics.fmean(float(a["scores"]["Set5"]["psnr"]) for a, _ in pairs)
            long = statistics.fmean(float(b["scores"]["Set5"]["psnr"]) for _, b in pairs)
            values[identity] = (short_n, long_n, short, long)
    return [
        (names, *values[identity], {short for short, _ in identity[2]})
        for identity, names in sorted(merged.items(), key=lambda item: (item[1][0], item[0][:2]))
    ]


def _plateau(groups: dict[tuple[Any, ...], list[dict[str, Any]]], keys: list[tuple[Any, ...]]) -> list[str]:
    """The plateau check: Set5 gain of each full-precision twin from one iteration count to the next.

    With twins at N, 2N and 4N iterations (``plateau.factor: [2, 4]``) a network gets two rows,
    N → 2N and 2N → 4N, so the table also says which budget would have plateaued.
    """
    checks = _plateau_checks(groups, keys)
    if not checks:
        return []
    rows = [
        [
            ", ".join(names),
            str(len(shorts)),
            f"{short:.2f} ({short_n})",
            f"{long:.2f} ({long_n})",
            f"{long - short:+.3f}",
            "yes" if long - short < PLATEAU_DB else "no",
        ]
        for names, short_n, long_n, short, long, shorts in checks
    ]
    header = [
        "twin (model/variant)",
        "seeds",
        "Set5 PSNR (iterations)",
        "Set5 PSNR, longer",
        "gain",
        f"plateaued (< {PLATEAU_DB} dB)",
    ]
    return ["", "Plateau check of the full-precision twins:", "", *_table(header, rows)]


def twin_plateau(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], twin_key: tuple[Any, ...]
) -> tuple[float, int, int] | None:
    """The plateau check of the twin group ``twin_key`` (directly or through a twin run it shares):
    (Set5 gain, its iteration count, the longer one), or ``None`` when it has not been checked."""
    keys = [k for k in groups if k[:2] == twin_key[:2]]
    checkpoints = {r.get("checkpoint") for r in groups.get(twin_key, [])}
    for _, short_n, long_n, short, long, shorts in _plateau_checks(groups, keys):
        if short_n == twin_key[5] and shorts & checkpoints:
            return long - short, short_n, long_n
    return None


# -------------------------------------------------------------------------------------- figures


def save_figure(figure: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG, atomically and without a timestamp (same input, same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def _figures(
    records: Sequence[dict[str, Any]], folder: Path, link_prefix: str
) -> dict[tuple[str, int], list[tuple[str, str]]]:
    """Write the PSNR-vs-OPs and curve figures of every (track, scale); returns their links."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    groups = _groups(records)
    sets = _set_names(records)
    main_set = sets[0] if sets else "Set5"
    folder.mkdir(parents=True, exist_ok=True)
    links: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for track, scale in sorted({(k[0], k[1]) for k in groups}):
        keys = _shown(
            groups, sorted((k for k in groups if k[0] == track and k[1] == scale), key=_group_order)
        )
        slug = _slug(track, scale)

        figure = Figure(figsize=(8, 5.5), dpi=100)
        ax = figure.subplots()
        for binary in (True, False):
            points = []
            for key in keys:
                if key[4] is not binary:
                    continue
                psnr = _scores(groups[key], main_set, "psnr")
                if psnr:
                    ops = statistics.fmean(float(r["ops"]) for r in groups[key]) / 1e9
                    points.append((ops, statistics.fmean(psnr), f"{key[2]}/{key[3]}"))
            if not points:
                continue
            xs, ys, _ = zip(*points, strict=True)
            style = {"marker": "o"} if binary else {"marker": "s", "facecolors": "none", "edgecolors": "C1"}
            ax.scatter(xs, ys, label="binary" if binary else "full precision", **style)
            if binary:
                for x, y, name in points:
                    ax.annotate(name, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set(
            xlabel="OPs (G, 320×180 input)",
            ylabel=f"{main_set} PSNR (dB)",
            title=f"{track} x{scale}: PSNR vs OPs",
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        figure.tight_layout()
        name = f"psnr_ops_{slug}.png"
        save_figure(figure, folder / name)
        links.setdefault((track, scale), []).append(
            (f"{track} x{scale}: PSNR vs OPs", f"{link_prefix}/{name}")
        )

        models = sorted({k[2] for k in keys})
        columns = min(3, len(models))
        rows = math.ceil(len(models) / columns)
        figure = Figure(figsize=(5 * columns, 3.6 * rows), dpi=100)
        axes = figure.subplots(rows, columns, squeeze=False)
        for index, model in enumerate(models):
            ax = axes[index // columns][index % columns]
            variants = sorted({k[3] for k in keys if k[2] == model})
            for v_index, variant in enumerate(variants):
                for key in keys:
                    if key[2] != model or key[3] != variant:
                        continue
                    record = groups[key][0]  # the smallest seed
                    curve = record.get("curve") or {}
                    points = [
                        (it, p)
                        for it, p in zip(curve.get("iteration", []), curve.get("psnr", []), strict=False)
                        if p is not None
                    ]
                    if not points:
                        continue
                    label = f"{variant} {'bin' if key[4] else 'fp'} {key[5]}"
                    ax.plot(
                        *zip(*points, strict=True),
                        lw=1,
                        ls="-" if key[4] else "--",
                        color=f"C{v_index % 10}",
                        label=label,
                    )
            ax.set(title=model, xlabel="iteration", ylabel="validation PSNR (dB)")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=5, loc="lower right")
        for index in range(len(models), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        figure.suptitle(f"{track} x{scale}: validation curves (smallest seed; dashed = full precision)")
        figure.tight_layout()
        name = f"curves_{slug}.png"
        save_figure(figure, folder / name)
        links[(track, scale)].append((f"{track} x{scale}: validation curves", f"{link_prefix}/{name}"))

        best = best_variant(records, track, scale)
        if best is not None:
            key = best[0]
            twin = groups.get((*key[:4], False, key[5]), [])
            panels = [(n, g) for n in sets if (g := _image_gaps(groups[key], twin, n)) is not None]
            if panels:
                title = f"{track} x{scale}: per-image gap of ours/{key[3]} ({key[5]} iterations)"
                name = f"image_gaps_{slug}.png"
                _image_gap_figure(panels, title, folder / name)
                links[(track, scale)].append((title, f"{link_prefix}/{name}"))
    return links


def _image_gap_figure(
    panels: Sequence[tuple[str, tuple[list[str], list[float], list[float]]]], title: str, path: Path
) -> None:
    """One panel per set: each image's binary − twin PSNR against the twin's PSNR on it, the target
    and the set's mean gap as lines, the images that lose most named."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5 * len(panels), 3.8), dpi=100)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (set_name, (images, twin_psnr, gaps)) in zip(axes, panels, strict=True):
        ax.scatter(twin_psnr, gaps, s=12, alpha=0.7)
        ax.axhline(-TARGET_GAP_DB, color="C3", ls="--", lw=1, label=f"target −{TARGET_GAP_DB} dB")
        ax.axhline(statistics.fmean(gaps), color="C2", lw=1, label=f"mean {statistics.fmean(gaps):+.3f} dB")
        ax.axhline(0.0, color="0.5", lw=0.5)
        for gap, x, image in sorted(zip(gaps, twin_psnr, images, strict=True))[:WORST_IMAGES]:
            ax.annotate(image, (x, gap), fontsize=6, xytext=(3, -3), textcoords="offset points")
        ax.set(title=set_name, xlabel="twin PSNR (dB)", ylabel="binary − twin PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    figure.suptitle(f"{title} (mean over seeds)")
    figure.tight_layout()
    save_figure(figure, path)


def write_report(results: str | Path, report: str | Path) -> list[Path]:
    """Regenerate ``report`` (Markdown) and its figures in ``<report folder>/results/`` from ``results``.

    Returns the written files.
    """
    results, report = Path(results), Path(report)
    if results.is_dir():
        results = results / "study.json"
    records = load_results(results)["runs"]
    report.parent.mkdir(parents=True, exist_ok=True)
    folder = report.parent / FIGURES_DIR
    figures = _figures(records, folder, FIGURES_DIR) if records else {}
    source = os.path.relpath(results, report.parent).replace(os.sep, "/")
    atomic_write_bytes(report, render_report(records, source, figures).encode("utf-8"))
    return [report] + [folder / Path(link).name for links in figures.values() for _, link in links]

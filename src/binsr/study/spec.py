"""Study files: a grid of training runs and its expansion into concrete, resumable runs.

A study file is YAML (relative paths are taken from the file's folder)::

    study: cpu                          # name (default: the file's stem)
    base:                               # a training config (configs/*.yaml) without name, scale, seed,
      datasets: {train: {...}, val: {...}}   # network and path: binsr train's SCHEMA checks it
      train: {iterations: 20000, ...}
    tracks:
      cpu:
        network: {n_feats: 32, n_blocks: 4}   # create_model kwargs for every model of the track
        config: {train: {iterations: 20000}}  # deep-merged over base (optional)
        length_factor: {4: 2}                 # optional: x4 runs train 2x as long (same schedule shape)
        seconds_per_iteration: 1.2            # optional: --dry-run's rate where none was recorded
    models:
      bbcu_l: {}                        # runs with one variant, "base"
      ours:
        kwargs: {}                      # per-model kwargs (over the track's network)
        seeds: [0, 1, 2]                # optional: this model's seeds (a subset of seeds; default all)
        variants:                       # named kwarg sets (over the model's kwargs)
          base: {}
          fda-nothr: {surrogate: fda, learnable_threshold: false, seeds: [0]}  # screened on seed 0
          base-distill: {distill: true} # distil from the full-precision twin (or a mapping of weights)
          base-init: {init: twin}       # start from the full-precision twin's final weights
    scales: [4, 2]
    seeds: [0, 1, 2]
    twins: true                         # pair every binary run with its full-precision twin
    plateau: {factor: 2, seeds: [0]}    # twin runs with factor x the iterations (same schedule shape);
                                        # a list ([2, 4]) trains a ladder: each doubling's gain is reported;
                                        # models: [ours/base, bbcu_l] checks only those twins (default all);
                                        # binary_scales: [2] also trains their binary runs that long there
    distill: {output_weight: 1.0, feature_weight: 0.1, features: ["body.*"]}
    eval: {sets: {Set5: ..., Set14: ..., BSD100: ...}, convention: matlab, input_size: [320, 180]}
    output: {runs: ../runs/study, results: ../docs/results/study.json, report: ../docs/RESULTS.md,
             kept: ../docs/results/kept_runs,     # optional: a tracked folder that keeps runs across clones
             shipped: ../docs/results/checkpoints}  # optional: checkpoints shipped with an index.json

Expansion (:func:`load_study`): every (track, scale, seed, model, variant) gives a *binary* run (or a
full-precision one for a model without a ``binary`` switch), for the seeds of the variant (its own
``seeds``, else its model's, else the study's: a screening design runs the ablations on fewer seeds than
the variants it compares), and, with ``twins``, its full-precision
twin (``binary: false``, distillation off, same iterations). Twins whose networks are identical
(same layers, attributes and initial weights, e.g. ``bnn`` and ``bireal`` without binarization, or two
``ours`` variants that differ only in the surrogate) are trained once and answer for all of them.
Distillation runs use their twin's final checkpoint as the teacher, so the twin is a dependency.
A variant with ``init: twin`` binarizes a trained full-precision model M (the twin of its network, as
the preprint's Q(M) − Q(B) asks): its binary run starts from M's final weights (latent weights, thresholds,
attention; the learnable weight scales start at ``mean|W|`` of M's filters) and trains the study's
recipe; its twin is M trained the same recipe again from M with binarization off, so the pair differs
only in binarization, as every pair does.

Each run lives in ``<output.runs>/<track>/x<scale>/<id>``, where ``<id>`` holds the run's length
(``i<N>``) and ends in a digest of everything else that determines the training (the study file's own
text of the recipe with the schedule as fractions of its length, the network, the teacher), so editing
the recipe starts new runs instead of resuming stale ones, while a run N iterations long has one id
whether N is the study's ``train.iterations`` or a plateau run's multiple of a shorter one: raising the
budget to a length a plateau ladder has reached reuses those runs. Labels used by ``--only`` are
``<track>/x<scale>/<model>/<variant>/<bin|fp>/s<seed>/i<iterations>``.

The runs folder is scratch space (not under version control), so what a fresh clone must not redo
lives elsewhere: the *records* of finished runs in ``study.json`` (a recorded run is not trained
again), and, in the optional ``output.kept`` folder (tracked), the runs it is worth carrying whole:
the final checkpoints of finished runs that others need (teachers, initialisations) and the training
state of runs stopped part-way (``binsr study STUDY --keep``; :mod:`binsr.study.runner`). A recorded
run that a run to train needs is also restored from the optional ``output.shipped`` folder (the
checkpoints ``scripts/ship_study_checkpoints.py`` ships, listed in its ``index.json``) when that ships
its final checkpoint, instead of being trained again.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from binsr.errors import BinsrError
from binsr.evaluate import check_scale
from binsr.metrics import CONVENTIONS
from binsr.train import LAST_FILE
from binsr.train.config import read_yaml_file, resolve_config

__all__ = ["RecordKey", "Study", "StudyRun", "load_study", "parse_study"]

TOP_KEYS = (
    "study",
    "base",
    "tracks",
    "models",
    "scales",
    "seeds",
    "twins",
    "plateau",
    "distill",
    "eval",
    "output",
)
GRID_KEYS = ("name", "scale", "seed", "network", "path")
"""Config keys the grid sets itself; ``base`` and a track's ``config`` may not hold them."""
DIGEST_IGNORED = ("logging", "path")
"""Config sections that do not change what a run learns (left out of the run digest)."""
DEFAULT_DISTILL = {"output_weight": 1.0, "feature_weight": 0.1, "features": ["body.*"]}
DEFAULT_OUTPUT = {
    "runs": "../runs/study",
    "results": "../docs/results/study.json",
    "report": "../docs/RESULTS.md",
}
OUTPUT_KEYS = (*DEFAULT_OUTPUT, "kept", "shipped")
"""Keys of a study's ``output`` section (``kept`` and ``shipped`` have no default: no such folder)."""
DEFAULT_INPUT = (320, 180)

KIND_PHASE = {"fp": 0, "twin": 0, "binary": 1, "init-twin": 1, "distill": 2, "init": 2, "plateau": 3}
"""Execution order inside one (track, seed, scale): twins first (teachers and initialisations), plateau
runs last."""
INIT_SOURCES = ("twin",)
"""What ``init`` of a variant may name: the final checkpoint of the variant's full-precision twin."""


@dataclass(frozen=True, order=True)
class RecordKey:
    """One row of ``study.json``: which grid point a run answers."""

    track: str
    scale: int
    model: str
    variant: str
    binary: bool
    seed: int
    iterations: int

    @property
    def label(self) -> str:
        """``<track>/x<scale>/<model>/<variant>/<bin|fp>/s<seed>/i<iterations>`` (matched by ``--only``)."""
        bits = "bin" if self.binary else "fp"
        return (
            f"{self.track}/x{self.scale}/{self.model}/{self.variant}/{bits}/s{self.seed}/i{self.iterations}"
        )


@dataclass
class StudyRun:
    """One training run of the grid.

    Attributes:
        run_id: its folder relative to the study's runs folder.
        kind: ``binary``, ``distill``, ``twin`` (full-precision twin), ``fp`` (a model without a binary
            switch) or ``plateau`` (a twin with one of ``plateau.factor`` x the iterations).
        config: the resolved training config (:func:`binsr.train.resolve_config`).
        records: the grid points it answers (several when identical twins are shared).
        teacher: ``run_id`` of the run whose final checkpoint is the distillation teacher.
        initialised_from: ``run_id`` of the run whose final checkpoint it starts from (``init: twin``).
        order: sort key of the execution order.
    """

    run_id: str
    kind: str
    config: dict[str, Any]
    records: list[RecordKey] = field(default_factory=list)
    teacher: str | None = None
    initialised_from: str | None = None
    order: tuple[Any, ...] = ()

    @property
    def needs(self) -> str | None:
        """The run whose final checkpoint it reads (its teacher or initialisation): it must finish first.
        With both, they are the same run (the variant's twin)."""
        return self.teacher or self.initialised_from

    @property
    def labels(self) -> list[str]:
        """The labels of its records."""
        return [record.label for record in self.records]

    @property
    def iterations(self) -> int:
        """Training iterations."""
        return int(self.config["train"]["iterations"])


@dataclass
class Study:
    """A loaded study: its runs in execution order, evaluation settings and output paths."""

    name: str
    path: Path
    tracks: dict[str, dict[str, Any]]
    runs: list[StudyRun]
    eval_sets: dict[str, str]
    convention: str
    input_size: tuple[int, int]
    runs_dir: Path
    results: Path
    report: Path
    kept_dir: Path | None = None
    shipped_dir: Path | None = None

    def run_dir(self, run: StudyRun | str) -> Path:
        """The folder of ``run`` (a run or its id)."""
        return self.runs_dir / (run if isinstance(run, str) else run.run_id)

    def by_id(self) -> dict[str, StudyRun]:
        """Runs by id."""
        return {run.run_id: run for run in self.runs}


# ------------------------------------------------------------------------------------------ checks


def _mapping(value: Any, where: str, *, allow_none: bool = True) -> dict[str, Any]:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise BinsrError(f"study key {where} must be a mapping with string keys, got {value!r}")
    return dict(value)


def _only_keys(value: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in value:
        if key not in known:
            raise BinsrError(f"unknown study key {where}.{key} (known keys here: {', '.join(known)})")


def _int_list(value: Any, where: str, *, minimum: int = 0) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) and i >= minimum for i in items):
        raise BinsrError(
            f"study key {where} must be a non-empty list of integers >= {minimum}, got {value!r}"
        )
    if len(set(items)) != len(items):
        raise BinsrError(f"study key {where} lists a value twice: {value!r}")
    return items


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/\\ \t") or value.startswith("."):
        raise BinsrError(f"study {where} name must be a non-empty word without '/' or spaces, got {value!r}")
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``over`` merged in (mappings recursively, other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def schedule_shape(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``recipe`` with its length taken out, for run digests: ``train.iterations`` dropped, the
    scheduler's ``warmup_iterations`` and ``milestones`` as fractions of it. Recipes that
    :func:`_scaled_schedule` maps onto each other have the same shape (``i / n`` is correctly rounded,
    so equal fractions are equal floats)."""
    out = copy.deepcopy(dict(recipe))
    train = dict(out.get("train") or {})
    iterations = train.pop("iterations")
    scheduler = dict(train.get("scheduler") or {})
    if scheduler.get("milestones"):
        scheduler["milestones"] = [int(m) / iterations for m in scheduler["milestones"]]
    if scheduler.get("warmup_iterations"):
        scheduler["warmup_iterations"] = int(scheduler["warmup_iterations"]) / iterations
    if scheduler:
        train["scheduler"] = scheduler
    out["train"] = train
    return out


def _accepts_binary(model: str) -> bool:
    from binsr.models import list_models, model_factory

    if model not in list_models():
        raise BinsrError(
            f"study model {model!r} is not a registered model; known: {', '.join(list_models())}"
        )
    return "binary" in inspect.signature(model_factory(model)).parameters


_ARCH_CACHE: dict[str, str] = {}

_BATCHNORM_BIAS = re.compile(r"(BatchNorm[123]d\([^()]*?), bias=True")
"""torch 2.13 gave BatchNorm a ``bias`` switch and prints ``bias=True`` in its ``repr``; torch 2.11 (the
lent GPUs' build) does not print it, though the module is the same. :func:`module_tree_text` drops it."""


def module_tree_text(net: torch.nn.Module) -> str:
    """``repr(net)`` without what differs between torch versions for the same network (BatchNorm's
    default ``bias=True``), so a run has one id on this machine and on a lent GPU."""
    return _BATCHNORM_BIAS.sub(r"\1", repr(net))


def architecture_digest(model: str, scale: int, kwargs: Mapping[str, Any]) -> str:
    """A digest of the network ``create_model(model, scale, **kwargs)`` builds under seed 0.

    It covers the module tree (``repr``), every module's plain attributes (e.g. BBCU's residual
    alignment factor) and the initial weights, so two specs with equal digests train identically.
    """
    from binsr.models import create_model

    key = _digest([model, scale, dict(kwargs)])
    if key not in _ARCH_CACHE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = create_model(model, scale=scale, **kwargs)
        hasher = hashlib.sha256(module_tree_text(net).encode("utf-8"))
        for name, module in net.named_modules():
            plain = {
                k: v
                for k, v in sorted(vars(module).items())
                if not k.startswith("_")
                and k not in ("config", "training")
                and isinstance(v, int | float | str)
            }
            hasher.update(f"{name}:{plain!r}".encode())
        for name, tensor in net.state_dict().items():
            hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        _ARCH_CACHE[key] = hasher.hexdigest()
    return _ARCH_CACHE[key]


# ------------------------------------------------------------------------------------------ loading


def load_study(path: str | Path, results_dir: str | Path | None = None) -> Study:
    """Read and expand the study file ``path``.

    ``results_dir`` replaces the ``output`` section: runs go to ``DIR/runs``, results to
    ``DIR/results/study.json`` and the report to ``DIR/RESULTS.md`` (the ``kept`` folder stays the
    study file's: it is where runs come from, not where they go).
    """
    path = Path(path)
    return parse_study(read_yaml_file(path, "study"), path, results_dir)


def parse_study(raw: Any, path: str | Path, results_dir: str | Path | None = None) -> Study:
    """Validate a parsed study mapping (from file ``path``) and expand it into runs."""
    path = Path(path).resolve()
    base_dir = path.parent
    top = _mapping(raw, "<top level>", allow_none=False)
    _only_keys(top, TOP_KEYS, "<top level>")
    for key in ("base", "tracks", "models"):
        if not top.get(key):
            raise BinsrError(f"study key {key} is required (see docs/STUDY.md)")
    name = _name(top.get("study", path.stem), "study")

    base = _mapping(top["base"], "base")
    for key in GRID_KEYS:
        if key in base:
            raise BinsrError(f"study key base.{key} is set by the grid; remove it from base")
    tracks = _parse_tracks(top["tracks"])
    scales = [check_scale(s) for s in _int_list(top.get("scales", [4]), "scales", minimum=1)]
    for track, tspec in tracks.items():
        unknown = sorted(set(tspec["length_factor"]) - set(scales))
        if unknown:
            raise BinsrError(f"study key tracks.{track}.length_factor names scales not in scales: {unknown}")
    seeds = _int_list(top.get("seeds", [0]), "seeds")
    models = _parse_models(top["models"], seeds)
    twins = top.get("twins", True)
    if not isinstance(twins, bool):
        raise BinsrError(f"study key twins must be true or false, got {twins!r}")
    plateau = _parse_plateau(top.get("plateau"), seeds, models, scales)
    distill = _mapping(top.get("distill"), "distill")
    _only_keys(distill, tuple(DEFAULT_DISTILL), "distill")
    distill = {**DEFAULT_DISTILL, **distill}

    evaluation = _mapping(top.get("eval"), "eval")
    _only_keys(evaluation, ("sets", "convention", "input_size"), "eval")
    sets = _mapping(evaluation.get("sets"), "eval.sets")
    if not sets or not all(isinstance(v, str) and v for v in sets.values()):
        raise BinsrError("study key eval.sets must map set names to folders, e.g. {Set5: ../data/Set5}")
    eval_sets = {key: str((base_dir / Path(folder).expanduser()).resolve()) for key, folder in sets.items()}
    convention = evaluation.get("convention", "matlab")
    if convention not in CONVENTIONS:
        raise BinsrError(
            f"study key eval.convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}"
        )
    size = evaluation.get("input_size", list(DEFAULT_INPUT))
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise BinsrError(f"study key eval.input_size must be [width, height] in pixels, got {size!r}")
    input_size = (int(size[0]), int(size[1]))

    output = _mapping(top.get("output"), "output")
    _only_keys(output, OUTPUT_KEYS, "output")
    kept, shipped = output.get("kept"), output.get("shipped")
    for key, folder in (("kept", kept), ("shipped", shipped)):
        if folder is not None and not (isinstance(folder, str) and folder):
            raise BinsrError(f"study key output.{key} must be a folder, got {folder!r}")
    if results_dir is not None:
        root = Path(results_dir).expanduser().resolve()
        paths = {
            "runs": root / "runs",
            "results": root / "results" / "study.json",
            "report": root / "RESULTS.md",
        }
    else:
        paths = {
            key: (base_dir / Path(str(output.get(key, default))).expanduser()).resolve()
            for key, default in DEFAULT_OUTPUT.items()
        }

    study = Study(
        name=name,
        path=path,
        tracks=tracks,
        runs=[],
        eval_sets=eval_sets,
        convention=str(convention),
        input_size=input_size,
        runs_dir=paths["runs"],
        results=paths["results"],
        report=paths["report"],
        kept_dir=(base_dir / Path(kept).expanduser()).resolve() if kept else None,
        shipped_dir=(base_dir / Path(shipped).expanduser()).resolve() if shipped else None,
    )
    study.runs = _expand(study, base, tracks, models, scales, seeds, twins, plateau, distill, base_dir)
    return study


def _parse_tracks(value: Any) -> dict[str, dict[str, Any]]:
    tracks = {}
    for track, spec in _mapping(value, "tracks").items():
        where = f"tracks.{_name(track, 'track')}"
        spec = _mapping(spec, where)
        _only_keys(spec, ("network", "config", "length_factor", "seconds_per_iteration"), where)
        config = _mapping(spec.get("config"), f"{where}.config")
        for key in GRID_KEYS:
            if key in config:
                raise BinsrError(f"study key {where}.config.{key} is set by the grid; remove it")
        seconds = spec.get("seconds_per_iteration")
        if seconds is not None and (
            not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0
        ):
            raise BinsrError(
                f"study key {where}.seconds_per_iteration must be a positive number, got {seconds!r}"
            )
        tracks[track] = {
            "network": _mapping(spec.get("network"), f"{where}.network"),
            "config": config,
            "length_factor": _length_factors(spec.get("length_factor"), f"{where}.length_factor"),
            "seconds_per_iteration": seconds,
        }
    return tracks


def _length_factors(value: Any, where: str) -> dict[int, int]:
    """``{scale: factor}``: the track's runs at that scale train ``factor`` x the recipe's iterations,
    warm-up and milestones (:func:`_scaled_schedule`), for a scale whose twins had not plateaued at the
    recipe's length while the others had."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BinsrError(f"study key {where} must map scales to integers >= 1, got {value!r}")
    factors = {}
    for scale, factor in value.items():
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise BinsrError(f"study key {where} must map scales to integers >= 1, got {factor!r}")
        factors[check_scale(scale)] = factor
    return factors


def _subset_seeds(value: Any, seeds: list[int], where: str) -> list[int]:
    """The seeds listed at ``where`` (a model or variant), which must be among the study's ``seeds``."""
    chosen = _int_list(value, where)
    missing = [s for s in chosen if s not in seeds]
    if missing:
        raise BinsrError(f"study key {where} lists seeds that are not in seeds: {missing}")
    return [s for s in seeds if s in chosen]  # the study's order (it orders the runs)


def _parse_models(value: Any, seeds: list[int]) -> dict[str, dict[str, Any]]:
    models = {}
    for model, spec in _mapping(value, "models").items():
        where = f"models.{model}"
        spec = _mapping(spec, where)
        _only_keys(spec, ("kwargs", "variants", "seeds"), where)
        kwargs = _mapping(spec.get("kwargs"), f"{where}.kwargs")
        model_seeds = _subset_seeds(spec["seeds"], seeds, f"{where}.seeds") if "seeds" in spec else seeds
        for key in ("binary", "scale", "name"):
            if key in kwargs:
                raise BinsrError(f"study key {where}.kwargs.{key} is set by the grid; remove it")
        variants = {}
        for variant, vspec in _mapping(spec.get("variants") or {"base": {}}, f"{where}.variants").items():
            vwhere = f"{where}.variants.{_name(variant, 'variant')}"
            vspec = _mapping(vspec, vwhere)
            distill = vspec.pop("distill", False)
            init = vspec.pop("init", None)
            if init is not None and init not in INIT_SOURCES:
                raise BinsrError(
                    f"study key {vwhere}.init must be one of {', '.join(INIT_SOURCES)} or null, got {init!r}"
                )
            variant_seeds = model_seeds
            if "seeds" in vspec:
                variant_seeds = _subset_seeds(vspec.pop("seeds"), seeds, f"{vwhere}.seeds")
            if distill is not False and distill is not True and not isinstance(distill, Mapping):
                raise BinsrError(
                    f"study key {vwhere}.distill must be true, false or a mapping, got {distill!r}"
                )
            if isinstance(distill, Mapping):
                _only_keys(distill, tuple(DEFAULT_DISTILL), f"{vwhere}.distill")
            for key in ("binary", "scale", "name"):
                if key in vspec:
                    raise BinsrError(f"study key {vwhere}.{key} is set by the grid; remove it")
            variants[variant] = {"kwargs": vspec, "distill": distill, "init": init, "seeds": variant_seeds}
        models[model] = {"binary": _accepts_binary(model), "kwargs": kwargs, "variants": variants}
    return models


def _parse_plateau(
    value: Any, seeds: list[int], models: dict[str, dict[str, Any]], scales: list[int]
) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    spec = _mapping(value, "plateau")
    _only_keys(spec, ("factor", "seeds", "models", "binary_scales"), "plateau")
    factor = spec.get("factor", 2)
    factors = factor if isinstance(factor, list) else [factor]
    if not factors or any(not isinstance(f, int) or isinstance(f, bool) or f < 2 for f in factors):
        raise BinsrError(
            f"study key plateau.factor must be an integer >= 2 or a list of them, got {factor!r}"
        )
    if len(set(factors)) != len(factors):
        raise BinsrError(f"study key plateau.factor lists a factor twice: {factor!r}")
    chosen = _int_list(spec.get("seeds", seeds[:1]), "plateau.seeds")
    missing = [s for s in chosen if s not in seeds]
    if missing:
        raise BinsrError(f"study key plateau.seeds lists seeds that are not in seeds: {missing}")
    checked = spec.get("models")
    if checked is not None:
        names = checked if isinstance(checked, list) else [checked]
        known = {f"{m}/{v}" for m, mspec in models.items() for v in mspec["variants"]} | set(models)
        if not names or any(not isinstance(n, str) or n not in known for n in names):
            raise BinsrError(
                "study key plateau.models must list models or model/variant names of the study, "
                f"got {checked!r}"
            )
        checked = set(names)
    listed = spec.get("binary_scales")
    binary_scales = [] if listed is None else _int_list(listed, "plateau.binary_scales")
    if any(scale not in scales for scale in binary_scales):
        raise BinsrError(f"study key plateau.binary_scales must list scales of scales, got {listed!r}")
    return {"factors": sorted(factors), "seeds": chosen, "models": checked, "binary_scales": binary_scales}


def _plateau_factors(plateau: dict[str, Any] | None, seed: int, model: str, variant: str) -> list[int]:
    """The plateau factors of the twin of (``model``, ``variant``) at ``seed`` (none if not checked)."""
    if not plateau or seed not in plateau["seeds"]:
        return []
    checked = plateau["models"]
    if checked is not None and model not in checked and f"{model}/{variant}" not in checked:
        return []
    return list(plateau["factors"])


# ---------------------------------------------------------------------------------------- expansion


def _scaled_schedule(raw: dict[str, Any], factor: int) -> dict[str, Any]:
    """``raw`` with iterations, milestones and warm-up multiplied by ``factor`` (same schedule shape)."""
    out = copy.deepcopy(raw)
    train = out["train"]
    train["iterations"] = int(train["iterations"]) * factor
    scheduler = train.get("scheduler") or {}
    if scheduler.get("milestones"):
        scheduler["milestones"] = [int(m) * factor for m in scheduler["milestones"]]
    if scheduler.get("warmup_iterations"):
        scheduler["warmup_iterations"] = int(scheduler["warmup_iterations"]) * factor
    return out


def _initialised(recipe: dict[str, Any], study: Study, source: str) -> dict[str, Any]:
    """``recipe`` starting from the final checkpoint of run ``source`` (``train.init_from``)."""
    return _merge(recipe, {"train": {"init_from": str(study.runs_dir / source / LAST_FILE)}})


def _run_raw(
    recipe: dict[str, Any], run_id: str, network: dict[str, Any], distill: dict[str, Any] | None
) -> dict[str, Any]:
    """The raw training config of one run: the recipe plus its name, network and distillation."""
    out = _merge(recipe, {"name": run_id.replace("/", "_"), "network": network})
    out.setdefault("train", {})["distill"] = distill
    return out


class _Grid:
    """Collects the runs of a study, merging runs with the same id (shared twins)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.runs: dict[str, StudyRun] = {}

    def add(
        self,
        kind: str,
        run_id: str,
        network: dict[str, Any],
        recipe: dict[str, Any],
        record: RecordKey | None,
        where: str,
        order: tuple[int, ...],
        distill: dict[str, Any] | None = None,
    ) -> StudyRun:
        """The run ``run_id`` (created on first sight from ``recipe``) with ``record`` added to it (none:
        a run only others need, such as the model an ``init: twin`` variant binarizes)."""
        if run_id not in self.runs:
            try:
                config = resolve_config(_run_raw(recipe, run_id, network, distill), base_dir=self.base_dir)
            except BinsrError as error:
                raise BinsrError(f"study {where}: {error}") from None
            self.runs[run_id] = StudyRun(run_id, kind, config, order=(*order, KIND_PHASE[kind]))
        run = self.runs[run_id]
        if record is not None and record not in run.records:
            run.records.append(record)
        return run

    def ordered(self) -> list[StudyRun]:
        """The runs in execution order (track, seed, scale, twins first, plateau runs last)."""
        ordered = sorted(self.runs.values(), key=lambda run: (run.order, run.run_id))
        for run in ordered:
            run.records.sort()
        return ordered


def _add_plateau_runs(
    grid: _Grid,
    plateau: dict[str, Any] | None,
    recipe: dict[str, Any],
    key: RecordKey,
    network: dict[str, Any],
    id_pattern: str,
    where: str,
    order: tuple[int, ...],
) -> None:
    """The plateau runs of the run answering ``key``: its network and recipe ``factor`` x as long (same
    schedule shape) for each plateau factor that applies to it, named ``id_pattern.format(n=length)``."""
    for factor in _plateau_factors(plateau, key.seed, key.model, key.variant):
        long = _scaled_schedule(recipe, factor)
        n = long["train"]["iterations"]
        long_key = replace(key, iterations=n)
        grid.add("plateau", id_pattern.format(n=n), network, long, long_key, where, order)


def _expand(
    study: Study,
    base: dict[str, Any],
    tracks: dict[str, dict[str, Any]],
    models: dict[str, dict[str, Any]],
    scales: list[int],
    seeds: list[int],
    twins: bool,
    plateau: dict[str, Any] | None,
    distill: dict[str, Any],
    base_dir: Path,
) -> list[StudyRun]:
    """Every run of the grid, shared twins merged, in execution order."""
    grid = _Grid(base_dir)
    for t_index, (track, tspec) in enumerate(tracks.items()):
        for s_index, scale in enumerate(scales):
            for seed_index, seed in enumerate(seeds):
                recipe = _merge(_merge(base, tspec["config"]), {"scale": scale, "seed": seed})
                iterations = (recipe.get("train") or {}).get("iterations")
                if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
                    raise BinsrError(
                        f"study track {track}: config key train.iterations must be a positive integer"
                    )
                if tspec["length_factor"].get(scale, 1) > 1:
                    recipe = _scaled_schedule(recipe, tspec["length_factor"][scale])
                    iterations = recipe["train"]["iterations"]
                view = schedule_shape({k: v for k, v in recipe.items() if k not in DIGEST_IGNORED})
                order = (t_index, seed_index, s_index)
                prefix = f"{track}/x{scale}"
                for model, mspec in models.items():
                    for variant, vspec in mspec["variants"].items():
                        if seed not in vspec["seeds"]:
                            continue
                        where = f"track {track}, x{scale}, seed {seed}, model {model}, variant {variant}"
                        kwargs = {**tspec["network"], **mspec["kwargs"], **vspec["kwargs"]}
                        has_binary, wants_distill = mspec["binary"], vspec["distill"] is not False
                        wants_init = vspec["init"] is not None
                        if has_binary and wants_distill and not twins:
                            raise BinsrError(f"study {where}: distillation needs twins: true")
                        if wants_init and not (has_binary and twins):
                            raise BinsrError(
                                f"study {where}: init: twin needs a binary model and twins: true"
                            )
                        fp_network = {"name": model, **kwargs, **({"binary": False} if has_binary else {})}
                        try:
                            arch = architecture_digest(
                                model, scale, {k: v for k, v in fp_network.items() if k != "name"}
                            )
                        except (BinsrError, TypeError, ValueError) as error:
                            raise BinsrError(f"study {where}: {error}") from None
                        twin_digest = _digest({"recipe": view, "arch": arch})[:10]
                        twin = None
                        if twins or not has_binary:
                            kind = "twin" if has_binary else "fp"
                            fp_id = f"{prefix}/twin-i{iterations}-{twin_digest}-s{seed}"
                            fp_key = RecordKey(track, scale, model, variant, False, seed, iterations)
                            # with init: twin, M answers for no record of this variant: its retrained
                            # copy below is the variant's twin
                            record = None if wants_init else fp_key
                            twin = grid.add(kind, fp_id, fp_network, recipe, record, where, order)
                            if wants_init:
                                again_digest = _digest({"recipe": view, "arch": arch, "init": twin.run_id})
                                again = grid.add(
                                    "init-twin",
                                    f"{prefix}/twin-i{iterations}-{again_digest[:10]}-s{seed}",
                                    fp_network,
                                    _initialised(recipe, study, twin.run_id),
                                    fp_key,
                                    where,
                                    order,
                                )
                                again.initialised_from = twin.run_id
                            else:
                                long_id = f"{prefix}/twin-i{{n}}-{twin_digest}-s{seed}"
                                _add_plateau_runs(
                                    grid, plateau, recipe, fp_key, fp_network, long_id, where, order
                                )
                        if not has_binary:
                            continue
                        network = {"name": model, **kwargs, "binary": True}
                        teacher, settings = None, None
                        if wants_distill and twin is not None:
                            teacher = twin.run_id
                            settings = {
                                **distill,
                                **(vspec["distill"] if isinstance(vspec["distill"], Mapping) else {}),
                            }
                        source = twin.run_id if wants_init and twin is not None else None
                        identity = {
                            "recipe": view,
                            "network": network,
                            "teacher": teacher,
                            "distill": settings,
                        }
                        if source is not None:  # only then, so the other runs keep their ids
                            identity["init"] = source
                        digest = _digest(identity)
                        run_id = f"{prefix}/{model}-{variant}-i{iterations}-s{seed}-{digest[:8]}"
                        train_distill = None
                        if settings is not None:
                            teacher_file = study.runs_dir / str(teacher) / LAST_FILE
                            train_distill = {**settings, "teacher": str(teacher_file)}
                        key = RecordKey(track, scale, model, variant, True, seed, iterations)
                        kind = "distill" if teacher else "init" if source else "binary"
                        binary_recipe = recipe if source is None else _initialised(recipe, study, source)
                        run = grid.add(kind, run_id, network, binary_recipe, key, where, order, train_distill)
                        run.teacher = teacher
                        run.initialised_from = source
                        if plateau and scale in plateau["binary_scales"] and kind == "binary":
                            # the binary network as long as its plateau twins: does it gain what they gain?
                            long_id = f"{prefix}/{model}-{variant}-i{{n}}-s{seed}-{digest[:8]}"
                            _add_plateau_runs(grid, plateau, recipe, key, network, long_id, where, order)
    return grid.ordered()

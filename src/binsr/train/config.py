"""Training configuration: load a YAML file, apply ``--set`` overrides, validate it and resolve it.

The layout follows BasicSR's option files, so SR users can read a config at a glance::

    name: bbcu_l_x4
    scale: 4
    seed: 0
    datasets:
      train: {hr_folders: [../data/T91], patch_size: 24, batch_size: 16, augment: {flip: true, rot90: true}}
      val: {folders: [../data/Set5], every: 1000}
    network: {name: bbcu_l, binary: true, n_feats: 32}     # every other key goes to create_model
    train:
      iterations: 100000
      optimizer: {type: Adam, lr: 2.0e-4, betas: [0.9, 0.99], weight_decay: 0}
      scheduler: {type: multistep, milestones: [50000], gamma: 0.5, warmup_iterations: 0, eta_min: 0}
      ema: 0.999            # or null
      grad_clip: null
      loss: l1
      distill: null         # or {teacher: fp.safetensors, output_weight: 1, feature_weight: 1}
      amp: false            # CUDA only
    path: {runs: ../runs}
    logging: {print_every: 100, checkpoint_every: 1000}

:data:`SCHEMA` is the single source of truth for keys, types and defaults. :func:`resolve_config` checks a
raw mapping against it and returns a new, complete mapping (defaults filled in, paths absolute); every
problem is a one-line :class:`~binsr.errors.BinsrError` naming the dotted key, e.g.
``config key train.optimizer.lr must be a number, got 'abc'``. Relative paths are resolved against the
folder of the config file (after expanding ``~`` and ``$VARS``). ``1e-4`` is read as a number
(plain YAML 1.1 would read it as a string).
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from binsr.errors import BinsrError

__all__ = [
    "SCHEMA",
    "Field",
    "apply_overrides",
    "dump_config",
    "load_config",
    "model_kwargs",
    "parse_yaml",
    "resolve_config",
]

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One leaf of the schema.

    ``kind`` is ``int``, ``number``, ``bool``, ``str``, ``path``, ``paths`` (a list of paths, a single
    path is accepted too), ``ints`` (a list of integers) or ``numbers`` (a list of numbers, ``length``
    long when given). ``default`` is :data:`_REQUIRED` for a required key. ``nullable`` allows ``null``.
    """

    kind: str
    default: Any = _REQUIRED
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    length: int | None = None


@dataclass(frozen=True)
class Section:
    """A mapping of named fields; ``nullable`` sections may be ``null`` (their default then)."""

    fields: Mapping[str, Field | Section]
    nullable: bool = False


SCHEMA = Section(
    {
        "name": Field("str"),
        "scale": Field("int", choices=(2, 3, 4)),
        "seed": Field("int", 0, minimum=0),
        "datasets": Section(
            {
                "train": Section(
                    {
                        "hr_folders": Field("paths", None, nullable=True),
                        "paired": Section({"hr": Field("path"), "lr": Field("path")}, nullable=True),
                        "patch_size": Field("int", minimum=1),
                        "batch_size": Field("int", 16, minimum=1),
                        "augment": Section({"flip": Field("bool", True), "rot90": Field("bool", True)}),
                    }
                ),
                "val": Section(
                    {"folders": Field("paths"), "every": Field("int", 1000, minimum=1)}, nullable=True
                ),
            }
        ),
        # Keys other than ``name`` and ``binary`` are passed to create_model (see _check_network).
        "network": Section({"name": Field("str"), "binary": Field("bool", None, nullable=True)}),
        "train": Section(
            {
                "iterations": Field("int", minimum=1),
                "optimizer": Section(
                    {
                        "type": Field("str", "Adam", choices=("Adam", "AdamW")),
                        "lr": Field("number", 1e-4, minimum=0.0),
                        "betas": Field("numbers", [0.9, 0.99], length=2),
                        "weight_decay": Field("number", 0.0, minimum=0.0),
                    }
                ),
                "scheduler": Section(
                    {
                        "type": Field("str", "multistep", choices=("cosine", "multistep", "constant")),
                        "milestones": Field("ints", []),
                        "gamma": Field("number", 0.5, minimum=0.0),
                        "warmup_iterations": Field("int", 0, minimum=0),
                        "eta_min": Field("number", 0.0, minimum=0.0),
                    }
                ),
                "ema": Field("number", None, nullable=True, minimum=0.0),
                "grad_clip": Field("number", None, nullable=True, minimum=0.0),
                "loss": Field("str", "l1", choices=("l1",)),
                "distill": Section(
                    {
                        "teacher": Field("path"),
                        "output_weight": Field("number", 1.0, minimum=0.0),
                        "feature_weight": Field("number", 0.0, minimum=0.0),
                        "features": Field("strs", ["body.*"]),
                    },
                    nullable=True,
                ),
                "amp": Field("bool", False),
                "init_from": Field("path", None, nullable=True),
            }
        ),
        "path": Section({"runs": Field("path", "runs")}),
        "logging": Section(
            {"print_every": Field("int", 100, minimum=1), "checkpoint_every": Field("int", 1000, minimum=1)}
        ),
    }
)
"""Every config key with its type and default (``network`` also takes the model's keyword arguments)."""

_OPEN_SECTIONS = ("network",)

# YAML 1.1 reads ``1e-4`` (no dot) as a string; accept the usual scientific notation as a float.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` and ``3e5`` as floats."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML ``text`` safely (``1e-4`` is a float); errors name ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise BinsrError(f"cannot parse YAML in {source}: {reason}") from None


def read_yaml_file(path: Path, kind: str) -> Any:
    """The parsed YAML file ``path``; a one-line BinsrError naming the ``kind`` of file otherwise."""
    if not path.is_file():
        raise BinsrError(f"{kind} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BinsrError(f"cannot read {kind} file {path}: {error}") from None
    return parse_yaml(text, str(path))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read config file ``path``, apply ``key=value`` ``overrides`` and return the resolved config."""
    path = Path(path)
    raw = read_yaml_file(path, "config")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BinsrError(f"config file {path} must hold a mapping at the top level")
    return resolve_config(apply_overrides(raw, overrides), base_dir=path.resolve().parent)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (the value is parsed as YAML).

    Missing or ``null`` intermediate sections are created; unknown keys are left for validation.
    """
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise BinsrError(f"--set expects key=value (e.g. train.iterations=100), got {item!r}")
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise BinsrError(f"--set {key}: config key {where} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def resolve_config(raw: Mapping[str, Any], base_dir: str | Path = ".") -> dict[str, Any]:
    """Validate ``raw`` against :data:`SCHEMA`; return a complete copy with absolute paths.

    Idempotent: resolving a resolved config gives the same config (paths are already absolute).
    """
    config = _resolve_section(SCHEMA, raw, "", Path(base_dir))
    _check_network(config["network"])
    _check_consistency(config)
    return config


def dump_config(config: Mapping[str, Any]) -> str:
    """YAML text of a resolved config (keys in schema order)."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=None, width=110)


def _plain(value: Any) -> Any:
    """Dicts and lists as plain builtins (for YAML dumping)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _deep_copy(value: Any) -> Any:
    """A copy of nested dicts and lists (leaves are shared)."""
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _resolve_section(section: Section, raw: Any, prefix: str, base_dir: Path) -> dict[str, Any] | None:
    """Check one section (``raw`` may be ``None`` for an absent section) and fill in its defaults."""
    if raw is None:
        if section.nullable:
            return None
        raw = {}
    if not isinstance(raw, Mapping):
        raise BinsrError(f"config key {prefix or '<top level>'} must be a mapping, got {raw!r}")
    open_section = prefix in _OPEN_SECTIONS
    for name in raw:
        if not isinstance(name, str):
            raise BinsrError(f"config key {_key(prefix, str(name))} must be a string key")
        if name not in section.fields and not open_section:
            known = ", ".join(section.fields)
            raise BinsrError(f"unknown config key {_key(prefix, name)} (known keys here: {known})")
    out: dict[str, Any] = {}
    for name, spec in section.fields.items():
        key = _key(prefix, name)
        if isinstance(spec, Section):
            out[name] = _resolve_section(spec, raw.get(name), key, base_dir)
        elif name not in raw or (raw[name] is None and not spec.nullable and spec.default is not _REQUIRED):
            if spec.default is _REQUIRED:
                raise BinsrError(f"config key {key} is required")
            out[name] = _resolve_value(spec, _deep_copy(spec.default), key, base_dir)
        else:
            out[name] = _resolve_value(spec, raw[name], key, base_dir)
    if open_section:
        out.update({name: value for name, value in raw.items() if name not in section.fields})
    return out


def _resolve_value(spec: Field, value: Any, key: str, base_dir: Path) -> Any:
    """Check and normalise one leaf value."""
    if value is None:
        if spec.nullable:
            return None
        raise BinsrError(f"config key {key} must not be null")
    kind = spec.kind
    if kind in ("paths", "ints", "numbers", "strs"):
        items = [value] if kind == "paths" and isinstance(value, str) else value
        if not isinstance(items, list):
            raise BinsrError(f"config key {key} must be a list, got {value!r}")
        if spec.length is not None and len(items) != spec.length:
            raise BinsrError(f"config key {key} must be a list of {spec.length} items, got {value!r}")
        item_spec = Field({"paths": "path", "ints": "int", "numbers": "number", "strs": "str"}[kind])
        return [_resolve_value(item_spec, item, f"{key}[{i}]", base_dir) for i, item in enumerate(items)]
    value = _check_scalar(kind, value, key)
    if kind == "path":
        value = str((base_dir / Path(os.path.expandvars(value)).expanduser()).resolve())
    if spec.choices is not None and value not in spec.choices:
        options = ", ".join(repr(choice) for choice in spec.choices)
        raise BinsrError(f"config key {key} must be one of {options}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise BinsrError(f"config key {key} must be >= {spec.minimum:g}, got {value!r}")
    return value


def _check_scalar(kind: str, value: Any, key: str) -> Any:
    """``value`` converted to ``kind`` (int, number, bool, str, path) or a one-line error."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise BinsrError(f"config key {key} must be true or false, got {value!r}")
        return value
    if kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            what = "a path" if kind == "path" else "a string"
            raise BinsrError(f"config key {key} must be {what}, got {value!r}")
        return value
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        if is_number and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise BinsrError(f"config key {key} must be an integer, got {value!r}")
    if kind == "number":
        if is_number and math.isfinite(value):
            return float(value)
        raise BinsrError(f"config key {key} must be a number, got {value!r}")
    raise AssertionError(f"unknown field kind {kind!r}")


def _check_network(network: dict[str, Any]) -> None:
    """Check the model name and that every extra ``network`` key is an argument of its entry function."""
    from binsr.models import model_factory

    if network.get("binary") is None:
        network.pop("binary", None)
    factory = model_factory(network["name"])
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for name in network:
        if name != "name" and (name not in params or name == "scale"):
            known = ", ".join(p for p in params if p != "scale")
            raise BinsrError(
                f"unknown config key network.{name}: not an argument of model {network['name']!r} "
                f"(its arguments: {known})"
            )


def model_kwargs(network: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``create_model`` in a resolved ``network`` section.

    Every key but ``name`` is passed as written, ``null`` included: ``attention: null`` switches the
    attention off, it does not fall back to the model's default (``binary: null`` is dropped when the
    section is checked)."""
    return {key: value for key, value in network.items() if key != "name"}


def _check_consistency(config: dict[str, Any]) -> None:
    """Rules that span several keys."""
    train_data = config["datasets"]["train"]
    if (train_data["hr_folders"] is None) == (train_data["paired"] is None):
        raise BinsrError("config key datasets.train needs exactly one of hr_folders or paired")
    if train_data["hr_folders"] == []:
        raise BinsrError("config key datasets.train.hr_folders must list at least one folder")
    if config["datasets"]["val"] is not None and not config["datasets"]["val"]["folders"]:
        raise BinsrError("config key datasets.val.folders must list at least one folder")
    train = config["train"]
    milestones = train["scheduler"]["milestones"]
    if any(b <= a for a, b in itertools.pairwise(milestones)):
        raise BinsrError(f"config key train.scheduler.milestones must be increasing, got {milestones}")
    ema = train["ema"]
    if ema is not None and not 0.0 <= ema < 1.0:
        raise BinsrError(f"config key train.ema must be in [0, 1) or null, got {ema!r}")
    if any(not 0.0 <= beta < 1.0 for beta in train["optimizer"]["betas"]):
        raise BinsrError(
            f"config key train.optimizer.betas must be in [0, 1), got {train['optimizer']['betas']}"
        )

"""Config loading and validation for ``binsr train`` (fast: no training)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from binsr.errors import BinsrError
from binsr.models import create_model
from binsr.train import SCHEMA, apply_overrides, dump_config, load_config, resolve_config
from binsr.train.config import model_kwargs, parse_yaml
from binsr.train.schedule import learning_rate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def minimal() -> dict:
    return {
        "name": "run",
        "scale": 4,
        "datasets": {"train": {"hr_folders": ["data/hr"], "patch_size": 16}},
        "network": {"name": "bbcu_l", "n_feats": 8, "n_blocks": 1},
        "train": {"iterations": 10},
    }


def test_defaults_are_filled_and_paths_resolved_against_the_config_folder(tmp_path: Path) -> None:
    config = resolve_config(minimal(), base_dir=tmp_path)
    assert config["datasets"]["train"]["hr_folders"] == [str(tmp_path / "data" / "hr")]
    assert config["path"]["runs"] == str(tmp_path / "runs")
    assert config["train"]["optimizer"] == {
        "type": "Adam",
        "lr": 1e-4,
        "betas": [0.9, 0.99],
        "weight_decay": 0.0,
    }
    assert config["train"]["ema"] is None and config["train"]["distill"] is None
    assert config["datasets"]["val"] is None
    assert config["network"] == {"name": "bbcu_l", "n_feats": 8, "n_blocks": 1}
    # Resolving a resolved config changes nothing, also after a YAML round trip.
    assert resolve_config(parse_yaml(dump_config(config)), base_dir="/elsewhere") == config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"train": {"iterations": 10, "optimizer": {"lr": "abc"}}},
            "config key train.optimizer.lr must be a number, got 'abc'",
        ),
        (
            {"train": {"iterations": 10, "optimizer": {"momentum": 0.9}}},
            "unknown config key train.optimizer.momentum",
        ),
        ({"trian": {}}, "unknown config key trian"),
        ({"train": {"iterations": 2.5}}, "config key train.iterations must be an integer, got 2.5"),
        ({"train": {"iterations": True}}, "config key train.iterations must be an integer, got True"),
        ({"train": {}}, "config key train.iterations is required"),
        ({"scale": 5}, "config key scale must be one of 2, 3, 4, got 5"),
        (
            {"train": {"iterations": 10, "optimizer": {"type": "SGD"}}},
            "config key train.optimizer.type must be one of",
        ),
        (
            {"train": {"iterations": 10, "optimizer": {"betas": [0.9]}}},
            "train.optimizer.betas must be a list of 2",
        ),
        (
            {"train": {"iterations": 10, "amp": "yes"}},
            "config key train.amp must be true or false, got 'yes'",
        ),
        ({"train": {"iterations": 10, "ema": 1.5}}, "config key train.ema must be in [0, 1)"),
        ({"train": {"iterations": 10, "scheduler": {"milestones": [5, 3]}}}, "milestones must be increasing"),
        (
            {"train": {"iterations": 10, "distill": {"output_weight": 1}}},
            "config key train.distill.teacher is required",
        ),
        ({"train": 3}, "config key train must be a mapping, got 3"),
        ({"network": {"name": "bbcu_l", "n_feets": 8}}, "unknown config key network.n_feets"),
        ({"network": {"name": "no_such_model"}}, "unknown model 'no_such_model'"),
        ({"datasets": {"train": {"patch_size": 16}}}, "exactly one of hr_folders or paired"),
        ({"logging": {"print_every": 0}}, "config key logging.print_every must be >= 1, got 0"),
    ],
)
def test_bad_configs_are_refused_with_one_line_naming_the_key(edit: dict, message: str) -> None:
    raw = minimal()
    raw.update(edit)
    with pytest.raises(BinsrError) as info:
        resolve_config(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_parse_yaml_values_and_create_sections() -> None:
    raw = apply_overrides(
        minimal(),
        [
            "train.iterations=100",
            "train.optimizer.lr=1e-3",
            "train.ema=null",
            "train.distill.teacher=t.safetensors",
        ],
    )
    assert raw["train"]["iterations"] == 100
    assert raw["train"]["optimizer"]["lr"] == pytest.approx(1e-3)
    assert raw["train"]["distill"] == {"teacher": "t.safetensors"}
    assert "ema" in raw["train"] and raw["train"]["ema"] is None
    with pytest.raises(BinsrError, match="--set expects key=value"):
        apply_overrides(minimal(), ["train.iterations"])
    with pytest.raises(BinsrError, match="config key scale is not a section"):
        apply_overrides(minimal(), ["scale.x=1"])


def test_a_null_network_key_reaches_the_model_as_none() -> None:
    """``attention: null`` means no attention, not the model's default (an ablation trained with the
    default attention under the name ``att-none`` before this was fixed)."""
    raw = minimal()
    raw["network"] = {"name": "ours", "n_feats": 8, "n_blocks": 1, "attention": None, "binary": None}
    network = resolve_config(raw)["network"]
    assert model_kwargs(network) == {"n_feats": 8, "n_blocks": 1, "attention": None}
    with_default = create_model("ours", scale=4, n_feats=8, n_blocks=1)
    without = create_model("ours", scale=4, **model_kwargs(network))
    assert any("attention" in name for name, _ in with_default.named_parameters())
    assert not any("attention" in name for name, _ in without.named_parameters())


def test_scientific_notation_is_a_number() -> None:
    assert parse_yaml("lr: 1e-4\nn: 3e5\nx: 1.5")["lr"] == pytest.approx(1e-4)
    assert resolve_config(apply_overrides(minimal(), ["train.iterations=3e2"]))["train"]["iterations"] == 300


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config["datasets"]["val"] is not None
    assert set(config) == set(SCHEMA.fields)
    distill = config["train"]["distill"]
    shipped = CONFIGS.parent / "docs"  # a teacher under runs/ comes from another recipe, trained first
    for starting_point in (config["train"]["init_from"], distill and distill["teacher"]):
        if starting_point and Path(starting_point).resolve().is_relative_to(shipped):
            assert Path(starting_point).is_file(), (
                f"{starting_point}: a shipped checkpoint renamed or removed"
            )


def test_missing_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(BinsrError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(BinsrError, match="cannot parse YAML"):
        load_config(tmp_path / "bad.yaml")


def test_schedules_warm_up_then_decay() -> None:
    multistep = {
        "type": "multistep",
        "milestones": [5, 8],
        "gamma": 0.5,
        "warmup_iterations": 2,
        "eta_min": 0.0,
    }
    rates = [learning_rate(1.0, multistep, 10, i) for i in range(10)]
    assert rates == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    cosine = {**multistep, "type": "cosine", "eta_min": 0.1}
    rates = [learning_rate(1.0, cosine, 10, i) for i in range(10)]
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0]) and rates[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))

"""Bit-aware complexity: BBCU Table 1 reproduced, counting rules, and the ``binsr summary`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from binsr.cli import main
from binsr.complexity import count_complexity
from binsr.layers import BinaryConv2d
from binsr.models import create_model

# BBCU (Xia et al., ICLR 2023) Table 1 at a 320x180 LR input: (model, scale, OPs in G, Params in K).
TABLE_1 = [
    ("srresnet", 4, 146.14, 1515),
    ("srresnet", 2, 85.43, 1367),
    ("bbcu_l", 4, 79.20, 372),
    ("bbcu_l", 2, 18.55, 225),
    ("bbcu_m", 4, 3.95, 51),
    ("bbcu_m", 2, 1.83, 46),
    ("reactnet", 2, 18.55, 225),
]


def summary_json(*argv: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["summary", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("name", "scale", "ops_g", "params_k"), TABLE_1)
def test_summary_reproduces_bbcu_table_1(
    name: str, scale: int, ops_g: float, params_k: int, capsys: pytest.CaptureFixture[str]
) -> None:
    result = summary_json(name, "--scale", str(scale), capsys=capsys)
    assert result["input"] == [320, 180]
    assert result["ops"] / 1e9 == pytest.approx(ops_g, rel=0.01)
    assert result["params"] / 1e3 == pytest.approx(params_k, rel=0.01)
    weights_only = count_complexity(create_model(name, scale=scale), include_bias=False)
    assert round(weights_only.params / 1e3) == params_k  # BBCU counts conv weights only


@pytest.mark.parametrize("name", ["bnn", "bireal", "irnet", "btm", "e2fif"])
def test_peers_share_bbcu_l_cost(name: str) -> None:
    result = count_complexity(create_model(name, scale=4))
    assert result.ops / 1e9 == pytest.approx(79.20, rel=0.01)
    assert result.params / 1e3 == pytest.approx(372, rel=0.01)


def test_counting_rules_on_a_hand_checked_model() -> None:
    model = nn.Sequential(
        BinaryConv2d(3, 4, 3, bias=True),  # binary input and weights
        BinaryConv2d(4, 4, 3, input_binarizer="identity", weight_binarizer="ma2019"),  # weights only
        nn.Conv2d(4, 2, 1),
        nn.Flatten(),
        nn.Linear(2 * 5 * 6, 7),
    )
    result = count_complexity(model, (6, 5))
    counts = [(x.params_binary, x.params_fp, x.macs_binary, x.macs_fp) for x in result.layers]
    assert counts[0] == (108, 4, 30 * 4 * 27, 0)  # 30 output pixels x 4 channels x 27 taps
    assert counts[1] == (144, 0, 0, 30 * 4 * 36)
    _, _, third, linear = result.layers
    assert (third.params_fp, third.macs_fp, third.output_shape) == (10, 30 * 2 * 4, [2, 5, 6])
    assert (linear.params_fp, linear.macs_fp) == (60 * 7 + 7, 60 * 7)
    assert result.params == 4 + 10 + 427 + (108 + 144) / 32
    assert result.ops == 30 * 4 * 36 + 240 + 420 + 30 * 4 * 27 / 64
    assert result.size_bytes == 4 * (4 + 10 + 427) + (108 + 144 + 7) // 8
    assert count_complexity(model, (6, 5), use_meta=False).to_dict() == result.to_dict()


def test_meta_and_cpu_runs_agree_and_model_is_untouched() -> None:
    model = create_model("ours", scale=3, n_feats=8, n_blocks=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = count_complexity(model, (7, 5))
    cpu = count_complexity(model, (7, 5), use_meta=False)
    assert meta.to_dict() == cpu.to_dict()
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "alpha" not in k)


def test_weight_only_binary_counts_fp_macs() -> None:
    result = count_complexity(create_model("ma2019", scale=4))
    assert result.macs_binary == 0 and result.params_binary == 32 * 64 * 64 * 9
    assert result.ops / 1e9 == pytest.approx(146.08, rel=1e-3)


def test_summary_json_fields_and_fp_twin(capsys: pytest.CaptureFixture[str]) -> None:
    result = summary_json("bbcu_l", "--scale", "2", "--input", "32x24", "--fp", capsys=capsys)
    for key in ("model", "scale", "input", "params_fp", "params_binary", "params", "macs_fp", "macs_binary"):
        assert key in result
    assert result["model"] == "bbcu_l" and result["scale"] == 2 and result["input"] == [32, 24]
    assert result["params_binary"] == 0 and result["macs_binary"] == 0 and result["size_bytes"] > 0
    assert len(result["layers"]) == 1 + 32 + 1 + 2 and result["layers"][0]["name"] == "conv_first"
    tiny = summary_json("ours", "--scale", "3", "--input", "8x8", "--set", "n_feats=8", capsys=capsys)
    assert tiny["macs_binary"] > 0 and tiny["scale"] == 3


def test_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "bbcu_m", "--scale", "4"]) == 0
    out = capsys.readouterr().out
    assert "upsampler.0.unit.conv" in out and "BinaryConv2d" in out
    assert "3.95 G" in out and "50.76 K" in out and "Binary MAC share" in out and "compression" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["nope"],
        ["bbcu_l", "--input", "12x"],
        ["bbcu_l", "--input", "0x5"],
        ["bbcu_l", "--scale", "5"],
        ["bbcu_l", "--set", "n_feets=3"],
        ["bbcu_l", "--set", "novalue"],
    ],
)
def test_summary_bad_input_is_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("binsr: error: ") and err.count("\n") == 1


def test_summary_into_a_closed_pipe_stops_quietly() -> None:
    """``binsr summary ... | head -1``: the reader leaves before the output is written. The command stops
    with exit code 1 and nothing on stderr (no BrokenPipeError traceback, no "Exception ignored")."""
    child = (
        "import sys\nfrom binsr.cli import main\nsys.stdin.read()\n"
        "sys.exit(main(['summary', 'bbcu_m', '--scale', '4']))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader is gone before the child writes (it waits for stdin to close)
    process.stdin.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=120) == 1
    assert stderr == ""

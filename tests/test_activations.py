"""Binarizer-input statistics (``binsr.activations``) and ``binsr activations``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from binsr.activations import binarizer_input_stats
from binsr.checkpoint import save_model
from binsr.cli import main
from binsr.data.io import to_rgb_batch, write_image
from binsr.errors import BinsrError
from binsr.layers import BinaryConv2d
from binsr.models import create_model


def test_statistics_match_a_direct_computation() -> None:
    conv = BinaryConv2d(3, 4, 3, input_binarizer="ste", learnable_threshold=True)
    with torch.no_grad():
        conv.threshold.bias.copy_(torch.tensor([0.5, -0.25, 2.0]))
    model = nn.Sequential(nn.Identity(), conv)
    torch.manual_seed(0)
    batches = [torch.randn(1, 3, 5, 6) * 1.5, torch.randn(2, 3, 4, 4)]
    (stats,) = binarizer_input_stats(model, batches)
    t = torch.cat([(b + conv.threshold.bias.view(1, -1, 1, 1)).flatten() for b in batches]).double()
    assert stats.layer == "1"
    assert stats.elements == t.numel() == 3 * 30 + 2 * 3 * 16
    assert stats.mean_abs == pytest.approx(t.abs().mean().item())
    assert stats.outside_unit == pytest.approx((t.abs() > 1).double().mean().item())
    assert stats.positive == pytest.approx((t >= 0).double().mean().item())
    assert stats.threshold_mean_abs == pytest.approx((0.5 + 0.25 + 2.0) / 3)
    per_filter = conv.weight.detach().abs().flatten(1).mean(1)  # XNOR (the default): α_o = mean|W_o|
    assert stats.weight_scale_min == pytest.approx(per_filter.min().item())
    assert stats.weight_scale_max == pytest.approx(per_filter.max().item())


def test_libra_pb_weight_scales_are_powers_of_two() -> None:
    """IR-Net's Libra-PB scales each filter by ``2^round(log2 mean|Ŵ|)`` of the standardised filter,
    whatever the latent weights' magnitude; the learnable scales of Ma et al. 2019 start at mean|W_o|."""
    torch.manual_seed(0)
    for binarizer, expected in (("libra_pb", {0.5, 1.0}), ("ma2019", None)):
        conv = BinaryConv2d(8, 16, 3, weight_binarizer=binarizer)
        with torch.no_grad():
            conv.weight.mul_(0.01)
        (stats,) = binarizer_input_stats(nn.Sequential(conv), [torch.randn(1, 8, 6, 6)])
        if expected is None:
            per_filter = conv.weight.detach().abs().flatten(1).mean(1)
            assert (stats.weight_scale_min, stats.weight_scale_max) == pytest.approx(
                (per_filter.min().item(), per_filter.max().item())
            )
        else:
            assert {stats.weight_scale_min, stats.weight_scale_max} <= expected


def test_no_threshold_reports_none_and_the_training_mode_is_restored() -> None:
    model = nn.Sequential(BinaryConv2d(3, 3, 3, learnable_threshold=False)).train()
    (stats,) = binarizer_input_stats(model, [torch.full((1, 3, 4, 4), 2.0)])
    assert stats.threshold_mean_abs is None
    assert (stats.mean_abs, stats.outside_unit, stats.positive) == (2.0, 1.0, 1.0)
    assert model.training
    assert not model[0]._forward_pre_hooks


def test_a_model_without_binary_inputs_or_without_images_is_refused() -> None:
    twin = create_model("ours", scale=2, n_feats=8, n_blocks=1, binary=False)
    with pytest.raises(BinsrError, match="no convolution with a binarized input"):
        binarizer_input_stats(twin, [torch.rand(1, 3, 8, 8)])
    with pytest.raises(BinsrError, match="no input images"):
        binarizer_input_stats(create_model("ours", scale=2, n_feats=8, n_blocks=1), [])


def test_a_gray_image_becomes_three_equal_channels() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    x = to_rgb_batch(gray)
    assert x.shape == (1, 3, 3, 4)
    assert torch.equal(x[0, 0], x[0, 2]) and x[0, 1, 2, 3].item() == pytest.approx(11 / 255)


def test_cli_reports_every_binary_convolution_over_a_folder(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "images"
    data.mkdir()
    write_image(data / "rgb.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    write_image(data / "gray.png", rng.integers(0, 256, (16, 18), dtype=np.uint8))
    torch.manual_seed(0)
    binary = create_model("ours", scale=2, n_feats=8, n_blocks=1)
    save_model(tmp_path / "binary.safetensors", binary)
    checkpoint = str(tmp_path / "binary.safetensors")
    code = main(
        ["activations", checkpoint, "--scale", "2", "--data", str(data), "--format", "json", "--no-progress"]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    payload = json.loads(out)
    rows = payload["models"][checkpoint]
    expected = [n for n, m in binary.named_modules() if isinstance(m, BinaryConv2d) and m.binary_input]
    assert [row["layer"] for row in rows] == expected and len(expected) == 2
    lr_pixels = 12 * 10 + 8 * 9  # the two LR images (modcrop, then /2)
    assert all(row["elements"] == 8 * lr_pixels for row in rows)
    assert all(0 <= row["outside_unit"] <= 1 and 0 <= row["positive"] <= 1 for row in rows)

    code = main(["activations", checkpoint, "--scale", "2", "--data", str(data)])
    table, _ = capsys.readouterr()
    assert code == 0 and table.splitlines()[1].split() == [
        "layer",
        "mean|t|",
        "|t|>1",
        "+1",
        "mean|b|",
        "|Wb|min",
        "|Wb|max",
    ]
    assert table.splitlines()[-1].startswith("mean")


def test_cli_refuses_a_full_precision_twin_in_one_line(tmp_path: Path, capsys) -> None:
    data = tmp_path / "images"
    data.mkdir()
    write_image(data / "a.png", np.zeros((16, 16, 3), dtype=np.uint8))
    save_model(
        tmp_path / "twin.safetensors", create_model("ours", scale=2, n_feats=8, n_blocks=1, binary=False)
    )
    code = main(["activations", str(tmp_path / "twin.safetensors"), "--scale", "2", "--data", str(data)])
    _, err = capsys.readouterr()
    assert code != 0
    assert err.count("\n") == 1 and "twin.safetensors" in err and "binarized input" in err

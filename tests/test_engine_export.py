"""The ``.binsr`` format and its packed CPU runtime: round trip, exactness on every binary zoo model,
refusals, ``binsr export``, ``.binsr`` files in ``upscale`` / ``eval``, and bench sections (b) and (c)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from binsr.checkpoint import save_model, save_safetensors_atomic
from binsr.cli import bench as bench_cli
from binsr.cli import main
from binsr.data.io import read_image, to_uint8, write_image
from binsr.engine.export import FORMAT, METADATA_KEY, export_model, read_packed, unpack_sign_bytes
from binsr.engine.runtime import PackedModel
from binsr.errors import BinsrError
from binsr.evaluate import resolve_upscaler
from binsr.inference import RESAMPLING_MARGIN, ModelUpscaler, receptive_field_radius
from binsr.layers import Attention, BinaryConv2d, RPReLU
from binsr.models import create_model

#: Every binary model of the zoo (``ours`` with each attention variant and BBCU-M's binary upsampler).
ZOO: list[tuple[str, dict[str, object]]] = [
    ("bbcu_l", {}),
    ("bbcu_m", {}),
    ("bnn", {}),
    ("bireal", {}),
    ("irnet", {}),
    ("reactnet", {}),
    ("btm", {}),
    ("ma2019", {}),
    ("e2fif", {}),
    ("ours", {"attention": "ir2net"}),
    ("ours", {"attention": "channel"}),
    ("ours", {"attention": "spatial"}),
    ("ours", {"attention": None, "binary_upsampler": True}),
]


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random thresholds, RPReLU/PReLU parameters, BN statistics, learnable scales and attention
    weights, so every sign and branch of the model is non-trivial. Returns ``model`` in eval mode."""
    g = torch.Generator().manual_seed(seed)

    def fill(t: torch.Tensor, scale: float, offset: float = 0.0, positive: bool = False) -> None:
        noise = torch.rand(t.shape, generator=g) if positive else torch.randn(t.shape, generator=g)
        t.copy_(offset + scale * noise)

    attention = {id(m) for a in model.modules() if isinstance(a, Attention) for m in a.modules()}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BinaryConv2d):
                if hasattr(module.threshold, "bias"):
                    fill(module.threshold.bias, 0.3)
                if hasattr(module.weight_binarizer, "alpha"):
                    fill(module.weight_binarizer.alpha, 0.1, 0.02, positive=True)
            elif isinstance(module, RPReLU):
                fill(module.gamma, 0.3)
                fill(module.zeta, 0.3)
                fill(module.slope, 0.5, positive=True)
            elif isinstance(module, nn.PReLU):
                fill(module.weight, 0.5, positive=True)
            elif isinstance(module, nn.BatchNorm2d):
                fill(module.running_mean, 0.2)
                fill(module.running_var, 1.0, 0.5, positive=True)
                fill(module.weight, 0.3, 1.0)
                fill(module.bias, 0.2)
            elif isinstance(module, nn.Conv2d) and id(module) in attention:
                fill(module.weight, 0.3)
                if module.bias is not None:
                    fill(module.bias, 0.3)
    return model.eval()


def _tiny(name: str, scale: int, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize(create_model(name, scale=scale, n_feats=16, n_blocks=2, **kwargs), seed)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("name", "kwargs"), ZOO, ids=[f"{n}-{k}" if k else n for n, k in ZOO])
def test_runtime_matches_pytorch(tmp_path: Path, name: str, kwargs: dict[str, object], scale: int) -> None:
    model = _tiny(name, scale, seed=scale, **kwargs)
    mixed: list[bool] = []  # every binary conv sees both signs (for binary activations)

    def record(conv: BinaryConv2d, inputs: tuple[torch.Tensor]) -> None:
        shifted = conv.threshold(inputs[0])
        mixed.append(not conv.binary_input or bool((shifted < 0).any() and (shifted >= 0).any()))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, BinaryConv2d)]
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(scale))
    with torch.no_grad():
        expected = model(x)
    for hook in hooks:
        hook.remove()
    assert mixed and all(mixed)
    path = tmp_path / "m.binsr"
    export_model(model, path)
    packed = PackedModel.load(path, threads=2)
    got = packed(x)
    assert got.shape == expected.shape == (2, 3, 9 * scale, 11 * scale)
    assert (got - expected).abs().max() <= 1e-4
    for i in range(x.shape[0]):
        assert np.array_equal(to_uint8(got[i]), to_uint8(expected[i]))


def test_round_trip_format_and_packing(tmp_path: Path) -> None:
    model = _tiny("bbcu_m", 4)
    path = tmp_path / "m.binsr"
    summary = export_model(model, path)
    header, tensors = read_packed(path)
    assert header["format"] == FORMAT and header["version"] == 1
    assert (header["model"], header["scale"]) == ("bbcu_m", 4) and summary["binary_convs"] == 7
    assert header["graph"][0]["op"] == "input" and header["graph"][-1]["op"] == "output"
    conv = model.body[0].unit1.conv
    bits = tensors["body.0.unit1.conv.weight_bits"]
    alpha, signs = conv.weight_binarizer.scale_and_sign(conv.weight)
    assert bits.dtype == torch.uint8 and bits.numel() * 8 == conv.weight.numel()  # 1 bit per weight
    assert torch.equal(unpack_sign_bytes(bits, conv.in_channels), signs)
    assert torch.equal(tensors["body.0.unit1.conv.alpha"], alpha)
    packed = PackedModel.load(path)
    assert packed.receptive_field_radius() + RESAMPLING_MARGIN == receptive_field_radius(model)
    # pooled buffers are reused across calls; thread counts agree bit for bit
    a, b = torch.rand(1, 3, 7, 8), torch.rand(1, 3, 7, 8)
    first = packed(a).clone()
    packed(b)
    assert torch.equal(packed(a), first)
    assert torch.equal(PackedModel.load(path, threads=1)(a), first)


def _fails_to_load(path: Path, fragment: str) -> None:
    with pytest.raises(BinsrError, match=fragment) as info:
        PackedModel.load(path)
    assert len(str(info.value).splitlines()) == 1


def test_refuses_corrupt_and_foreign_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.binsr"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _fails_to_load(garbage, "not a valid safetensors file")
    good = tmp_path / "good.binsr"
    export_model(_tiny("bbcu_l", 2), good)
    truncated = tmp_path / "truncated.binsr"
    truncated.write_bytes(good.read_bytes()[:-100])
    _fails_to_load(truncated, "truncated")
    header, tensors = read_packed(good)

    def rewrite(name: str, **changes: object) -> Path:
        path = tmp_path / name
        save_safetensors_atomic(path, tensors, {METADATA_KEY: json.dumps({**header, **changes})})
        return path

    _fails_to_load(rewrite("v2.binsr", version=2), "format version 2")
    _fails_to_load(rewrite("fmt.binsr", format="other"), "not a binsr packed model")
    bad_op = [
        *header["graph"][:-1],
        {"name": "evil", "op": "eval", "args": [], "kwargs": {}},
        header["graph"][-1],
    ]
    _fails_to_load(rewrite("op.binsr", graph=bad_op), "not a known op")
    dangling = [
        *header["graph"][:-1],
        {"name": "output", "op": "output", "args": [{"ref": "nope"}], "kwargs": {}},
    ]
    _fails_to_load(rewrite("ref.binsr", graph=dangling), "undefined value 'nope'")
    checkpoint = tmp_path / "train.binsr"
    save_model(checkpoint, create_model("bbcu_l", scale=2, n_feats=8, n_blocks=1))
    _fails_to_load(checkpoint, "run `binsr export`")


def test_export_cli_upscale_and_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny("bbcu_l", 2)
    ckpt = tmp_path / "bbcu.safetensors"
    save_model(ckpt, model)
    assert main(["export", str(ckpt)]) == 0
    packed_path = tmp_path / "bbcu.binsr"
    out = capsys.readouterr().out
    assert packed_path.is_file() and "matches the PyTorch model" in out
    assert main(["export", str(ckpt), "-o", str(tmp_path / "x.txt")]) == 2
    assert "must end with .binsr" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    args = ["export", "bnn", "--random-init", "--scale", "3", "--kwargs", '{"n_feats": 8, "n_blocks": 1}']
    assert main(args) == 0 and (tmp_path / "bnn_x3.binsr").is_file()
    # upscale: tiled packed runtime == untiled PyTorch model
    lr = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    write_image(tmp_path / "pic.png", lr)
    argv = ["upscale", str(tmp_path / "pic.png"), "--model", str(packed_path), "--tile", "6"]
    assert main(argv) == 0
    expected = ModelUpscaler(model, 2, tile=None)(lr, 2)
    assert np.array_equal(read_image(tmp_path / "pic_x2.png"), expected)
    # eval resolves .binsr files too, and refuses a scale the file was not exported for
    upscaler = resolve_upscaler(str(packed_path), 2)
    assert isinstance(upscaler.model, PackedModel) and np.array_equal(upscaler(lr, 2), expected)
    with pytest.raises(BinsrError, match="x2 model"):
        resolve_upscaler(str(packed_path), 4)


def test_bench_json_has_model_and_size_sections(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench_cli.register(parser.add_subparsers())
    argv = ["bench", "--input", "32x24", "--repeats", "1", "--model-repeats", "1", "--warmup", "0"]
    args = parser.parse_args([*argv, "--threads", "2", "--format", "json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("layer_speedup", "model_speedup", "size_ratio", "size_ratio_bbcu_l"):
        assert report[key] > 0, key
    assert report["model"]["model"] == "bbcu_m" and report["model"]["input"] == [32, 24]
    assert set(report["model"]["times_ms"]) == {"torch_fp32_twin", "packed"}
    sizes = report["size"]["models"]["bbcu_l"]
    assert sizes["packed_bytes"] < sizes["fp_twin_bytes"]
    with pytest.raises(BinsrError, match="WxH"):
        bench_cli.parse_size("32by24")

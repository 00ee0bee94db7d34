"""Exactness of the packed XNOR-popcount kernels against the pure-PyTorch reference, on every ISA path."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from binsr.cli import bench as bench_cli
from binsr.engine import (
    available_isas,
    binary_conv2d,
    binary_conv2d_packed,
    output_size,
    pack_activations,
    pack_weights,
    reference_binary_conv2d,
    reference_pack_activations,
    unpack_activations,
    unpack_weights,
)
from binsr.engine._backend import ISA_ENV_VAR, resolve_isa
from binsr.errors import BinsrError

ISAS = available_isas()
CHANNELS = (3, 32, 64, 65, 128)


def _inputs(
    seed: int, n: int, c: int, oc: int, h: int, w: int, k: tuple[int, int] = (3, 3)
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    x[0, 0, 0, :2] = 0.0  # exact zeros: sign(0) = +1
    threshold = 0.3 * torch.randn(c, generator=g)
    x[0, :, 1, 1] = -threshold  # x + b == 0 exactly: +1 as well
    return {
        "x": x,
        "threshold": threshold,
        "weight": torch.randn(oc, c, *k, generator=g),
        "alpha": torch.rand(oc, generator=g) + 0.05,
        "bias": torch.randn(oc, generator=g),
        "gamma": 0.5 * torch.randn(oc, generator=g),
        "slope": 0.25 * torch.rand(oc, generator=g),
        "zeta": 0.5 * torch.randn(oc, generator=g),
    }


def test_available_isas_lists_generic_last() -> None:
    assert ISAS[-1] == "generic"
    assert set(ISAS) <= {"avx512", "avx2", "generic"}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", CHANNELS)
def test_pack_matches_reference(isa: str, c: int) -> None:
    t = _inputs(c, 2, c, 4, 7, 19)
    packed = pack_activations(t["x"], t["threshold"], isa=isa, threads=2)
    ref = reference_pack_activations(t["x"], t["threshold"])
    assert packed.channels == c and tuple(packed.bits.shape) == (2, 7, 19, (c + 63) // 64)
    assert torch.equal(packed.bits, ref.bits)
    expected = torch.where(t["x"] + t["threshold"].view(1, -1, 1, 1) < 0, -1.0, 1.0)
    assert torch.equal(unpack_activations(packed), expected)
    if c % 64:
        high = packed.bits[..., -1].numpy().view(np.uint64) >> np.uint64(c % 64)
        assert not high.any(), "pad bits must be zero"


def test_pack_weights_round_trip() -> None:
    w = torch.randn(5, 70, 3, 3)
    packed = pack_weights(w)
    assert tuple(packed.bits.shape) == (5, 3, 3, 2) and packed.in_channels == 70
    assert torch.equal(unpack_weights(packed), torch.where(w < 0, -1.0, 1.0))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_matches_reference(isa: str, c: int, stride: int) -> None:
    oc = 64 if c != 65 else 19  # 19: a partial output-channel block on every path
    t = _inputs(100 + c + stride, 2, c, oc, 11, 23)
    ref = reference_binary_conv2d(t["x"], t["threshold"], t["weight"], t["alpha"], t["bias"], stride=stride)
    assert ref.shape == (2, oc, *output_size(11, 23, (3, 3), stride))
    pw = pack_weights(t["weight"])
    packed_in = binary_conv2d(
        pack_activations(t["x"], t["threshold"], isa=isa), pw, t["alpha"], t["bias"], stride=stride, isa=isa
    )
    torch.testing.assert_close(packed_in, ref, rtol=0, atol=1e-4)
    for threads in (1, 2, 3):  # float input, packing fused into the convolution
        fused = binary_conv2d(
            t["x"],
            pw,
            t["alpha"],
            t["bias"],
            threshold=t["threshold"],
            stride=stride,
            isa=isa,
            threads=threads,
        )
        assert torch.equal(fused, packed_in)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [((1, 1), 1, 0), ((5, 5), 1, None), ((3, 5), (2, 1), (0, 2)), ((3, 3), 1, 0), ((3, 3), 3, 2)],
)
def test_conv_general_geometry(isa: str, kernel: tuple[int, int], stride: object, padding: object) -> None:
    t = _inputs(7, 1, 40, 24, 9, 30, kernel)
    got = binary_conv2d(
        pack_activations(t["x"], t["threshold"], isa=isa),
        pack_weights(t["weight"]),
        t["alpha"],
        stride=stride,
        padding=padding,
        isa=isa,
    )
    ref = reference_binary_conv2d(
        t["x"], t["threshold"], t["weight"], t["alpha"], stride=stride, padding=padding
    )
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", [32, 64, 65])
def test_fused_rprelu_residual_and_rebinarize(isa: str, c: int) -> None:
    t = _inputs(300 + c, 2, c, c, 13, 37)
    rprelu = (t["gamma"], t["slope"], t["zeta"])
    residual = t["x"]
    next_threshold = 0.2 * torch.randn(c)
    px, pw = pack_activations(t["x"], t["threshold"], isa=isa), pack_weights(t["weight"])
    y, packed = binary_conv2d_packed(
        px,
        pw,
        t["alpha"],
        t["bias"],
        out_threshold=next_threshold,
        return_float=True,
        rprelu=rprelu,
        residual=residual,
        isa=isa,
    )
    ref = reference_binary_conv2d(
        t["x"], t["threshold"], t["weight"], t["alpha"], t["bias"], rprelu=rprelu, residual=residual
    )
    assert y is not None
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-4)
    # the fused re-binarization is exactly the packing of the float output
    assert torch.equal(packed.bits, reference_pack_activations(y, next_threshold).bits)
    unfused = binary_conv2d(px, pw, t["alpha"], t["bias"], rprelu=rprelu, residual=residual, isa=isa)
    assert torch.equal(unfused, y)
    y_none, packed_only = binary_conv2d_packed(
        t["x"],
        pw,
        t["alpha"],
        t["bias"],
        threshold=t["threshold"],
        out_threshold=next_threshold,
        rprelu=rprelu,
        residual=residual,
        isa=isa,
    )
    assert y_none is None and torch.equal(packed_only.bits, packed.bits)


def test_paths_and_thread_counts_are_bit_identical() -> None:
    t = _inputs(5, 1, 64, 64, 21, 45)
    rprelu = (t["gamma"], t["slope"], t["zeta"])
    outputs = []
    for isa in ISAS:
        for threads in (1, 2, 3):
            px = pack_activations(t["x"], t["threshold"], isa=isa, threads=threads)
            outputs.append(
                binary_conv2d(
                    px,
                    pack_weights(t["weight"]),
                    t["alpha"],
                    t["bias"],
                    rprelu=rprelu,
                    isa=isa,
                    threads=threads,
                )
            )
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


def test_large_output_streaming_path() -> None:
    """Outputs over 4 MiB take the non-temporal store path on AVX-512."""
    t = _inputs(9, 1, 64, 64, 67, 250)
    ref = reference_binary_conv2d(t["x"], t["threshold"], t["weight"], t["alpha"], t["bias"])
    for isa in [i for i in ISAS if i != "generic"]:
        px = pack_activations(t["x"], t["threshold"], isa=isa)
        got = binary_conv2d(px, pack_weights(t["weight"]), t["alpha"], t["bias"], isa=isa)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
        fused = binary_conv2d(
            t["x"], pack_weights(t["weight"]), t["alpha"], t["bias"], threshold=t["threshold"]
        )
        assert torch.equal(fused, got)


def test_isa_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ISA_ENV_VAR, "generic")
    assert resolve_isa() == 0
    monkeypatch.setenv(ISA_ENV_VAR, "auto")
    assert resolve_isa() == ("generic", "avx2", "avx512").index(ISAS[0])
    monkeypatch.setenv(ISA_ENV_VAR, "sse9")
    with pytest.raises(BinsrError, match="unknown engine ISA"):
        resolve_isa()
    for name in {"avx2", "avx512"} - set(ISAS):
        with pytest.raises(BinsrError, match="not supported"):
            resolve_isa(name)


def test_bad_inputs_raise() -> None:
    px = pack_activations(torch.randn(1, 8, 5, 5))
    with pytest.raises(BinsrError, match="channels"):
        binary_conv2d(px, pack_weights(torch.randn(4, 9, 3, 3)), torch.ones(4))
    with pytest.raises(BinsrError, match="residual"):
        binary_conv2d(
            px, pack_weights(torch.randn(4, 8, 3, 3)), torch.ones(4), residual=torch.zeros(1, 4, 5, 4)
        )
    with pytest.raises(BinsrError, match="threshold"):
        pack_activations(torch.randn(1, 8, 5, 5), torch.zeros(7))
    with pytest.raises(BinsrError, match="float input only"):
        binary_conv2d(px, pack_weights(torch.randn(4, 8, 3, 3)), torch.ones(4), threshold=torch.zeros(8))


@pytest.mark.parametrize("isa", ISAS)
def test_out_buffer_may_alias_residual(isa: str) -> None:
    t = _inputs(11, 1, 64, 64, 9, 40)
    ref = reference_binary_conv2d(t["x"], t["threshold"], t["weight"], t["alpha"], residual=t["x"])
    buffer = t["x"].clone()
    px = pack_activations(t["x"], t["threshold"], isa=isa)
    got = binary_conv2d(px, pack_weights(t["weight"]), t["alpha"], residual=buffer, out=buffer, isa=isa)
    assert got is buffer
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


def test_bench_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench_cli.register(parser.add_subparsers())
    argv = ["bench", "--repeats", "1", "--warmup", "0", "--format", "json", "--threads", "1"]
    args = parser.parse_args([*argv, "--sections", "layer"])  # (b) and (c): tests/test_engine_export.py
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layer_speedup"] > 0 and report["layer_speedup_packed"] > 0
    assert set(report["layer"]["times_ms"]) == {
        "torch_fp32",
        "binary_float_in",
        "binary_float_in_two_pass",
        "binary_packed_in",
        "pack",
    }
    assert "model" not in report and "size" not in report

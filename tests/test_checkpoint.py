"""binsr.checkpoint: safetensors round trip, atomic writes, and one-line refusals of bad files."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from binsr.checkpoint import (
    atomic_write_bytes,
    load_model,
    load_safetensors,
    read_model_header,
    save_model,
    save_safetensors_atomic,
)
from binsr.cli import main
from binsr.data.io import write_image
from binsr.errors import BinsrError
from tiny_models import LAUNCHER, NAME, tiny_model


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_x2.safetensors"
    save_model(path, tiny_model(scale=2), extra={"step": 7})
    return path


def test_round_trip_gives_identical_outputs(ckpt: Path) -> None:
    model = tiny_model(scale=2)
    loaded = load_model(ckpt)
    x = torch.rand(1, 3, 9, 11)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    header = read_model_header(ckpt)
    assert header["format"] == "binsr-model" and header["version"] == 1
    assert (header["model"], header["scale"], header["kwargs"], header["step"]) == (
        NAME,
        2,
        {"n_feats": 8},
        7,
    )


def test_atomic_writes_leave_no_temporaries(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"one")
    atomic_write_bytes(tmp_path / "a.bin", b"two")
    save_safetensors_atomic(tmp_path / "t.safetensors", {"w": torch.arange(6.0).view(2, 3).t()}, {"k": "v"})
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    tensors, metadata = load_safetensors(tmp_path / "t.safetensors")
    assert torch.equal(tensors["w"], torch.arange(6.0).view(2, 3).t()) and metadata == {"k": "v"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "t.safetensors"]


def _with_header(path: Path, src: Path, **changes: object) -> Path:
    """Copy checkpoint ``src`` to ``path`` with fields of its binsr header changed."""
    tensors, metadata = load_safetensors(src)
    header = json.loads(metadata["binsr"]) | changes
    save_file(tensors, str(path), metadata={"binsr": json.dumps(header)})
    return path


def _bad_files(tmp: Path, ckpt: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected message fragment)."""
    data = ckpt.read_bytes()
    (tmp / "trunc.safetensors").write_bytes(data[: len(data) - 10])
    (tmp / "short.safetensors").write_bytes(data[:5])
    (tmp / "garbage.safetensors").write_bytes(b"\x13\x00\x00\x00\x00\x00\x00\x00this is not json at all")
    torch.save(tiny_model().state_dict(), tmp / "model.pth")
    (tmp / "legacy.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    tensors, metadata = load_safetensors(ckpt)
    tensors["head.weight"] = torch.zeros(8, 3, 5, 5)
    save_file(tensors, str(tmp / "shape.safetensors"), metadata=metadata)
    del tensors["body.bias"]
    save_file(tensors, str(tmp / "missing.safetensors"), metadata=metadata)
    tensors = load_safetensors(ckpt)[0] | {"extra.weight": torch.zeros(1)}
    save_file(tensors, str(tmp / "unexpected.safetensors"), metadata=metadata)
    tensors = load_safetensors(ckpt)[0]
    tensors["head.bias"][0] = float("nan")
    save_file(tensors, str(tmp / "nan.safetensors"), metadata=metadata)
    save_file(tensors, str(tmp / "plain.safetensors"))
    return {
        "truncated": (tmp / "trunc.safetensors", "not a valid safetensors file"),
        "short": (tmp / "short.safetensors", "not a valid safetensors file"),
        "garbage": (tmp / "garbage.safetensors", "not a valid safetensors file"),
        "pickle": (tmp / "model.pth", "refusing to load pickle checkpoint"),
        "legacy": (tmp / "legacy.safetensors", "refusing to load pickle checkpoint"),
        "shape": (tmp / "shape.safetensors", "'head.weight' has shape (8, 3, 5, 5), expected (8, 3, 3, 3)"),
        "missing": (tmp / "missing.safetensors", "missing key 'body.bias'"),
        "unexpected": (tmp / "unexpected.safetensors", "unexpected key 'extra.weight'"),
        "nan": (tmp / "nan.safetensors", "non-finite values in 'head.bias'"),
        "plain": (tmp / "plain.safetensors", "not a binsr model"),
        "unknown": (_with_header(tmp / "unknown.safetensors", ckpt, model="no_such_model"), "unknown model"),
        "version": (_with_header(tmp / "version.safetensors", ckpt, version=99), "format version 99"),
        "scale": (_with_header(tmp / "scale.safetensors", ckpt, scale=5), "unsupported scale 5"),
        "absent": (tmp / "absent.safetensors", "does not exist"),
    }


def test_bad_files_are_refused_with_one_line_errors(tmp_path: Path, ckpt: Path) -> None:
    for name, (path, fragment) in _bad_files(tmp_path, ckpt).items():
        with pytest.raises(BinsrError) as info:
            load_model(path)
        message = str(info.value)
        assert fragment in message and str(path) in message and "\n" not in message, (name, message)


def test_cli_refuses_bad_checkpoints_without_traceback(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "in.png"
    write_image(image, np.zeros((6, 5, 3), np.uint8))
    bad = _bad_files(tmp_path, ckpt)
    for name in ("truncated", "garbage", "pickle", "shape", "unknown"):
        path, fragment = bad[name]
        argv = ["upscale", str(image), "--model", str(path), "-o", str(tmp_path / "o.png")]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("binsr: error: ") and fragment in err and len(err.splitlines()) == 1, (
            name,
            err,
        )
        if name in ("pickle", "shape"):  # the real console script: exit status 2, no traceback
            run = subprocess.run([*LAUNCHER, *argv], capture_output=True, text=True, timeout=60)
            assert run.returncode == 2 and run.stderr == err, (name, run.stderr)
    assert not (tmp_path / "o.png").exists()


def test_safetensors_whose_length_starts_with_0x80_is_not_mistaken_for_a_pickle(tmp_path: Path) -> None:
    # A safetensors file begins with its header length (8 bytes, little endian): a length of 128 mod 256
    # makes the first byte 0x80, the same as a pickle's. Such a file must still load.
    path = tmp_path / "x.safetensors"
    for pad in range(0, 300):
        save_safetensors_atomic(path, {"w": torch.zeros(2)}, {"note": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no header length with a leading 0x80 byte was produced")
    tensors, metadata = load_safetensors(path)
    assert torch.equal(tensors["w"], torch.zeros(2)) and metadata["note"].startswith("x")

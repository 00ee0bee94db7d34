"""``binsr train`` end to end on tiny data: run directory, kill-and-resume exactness, divergence, DDP.

Everything uses a BBCU-L with 8 channels and 1 block on 8x8 LR patches of three synthetic 48x40 images,
so a run of a dozen iterations takes about a second; the subprocess tests pay mostly for start-up.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from binsr.checkpoint import load_model, save_model
from binsr.errors import BinsrError
from binsr.hardware import UNRECORDED_DEVICE, device_name
from binsr.models import create_model
from binsr.train import dump_config, resolve_config, train
from binsr.train.data import PatchSampler, load_hr_folders, load_paired
from binsr.train.distill import match_module_names
from binsr.train.state import STATE_JSON, STATE_NEXT, STATE_TENSORS, load_state, save_state, state_is_whole

ITERATIONS = 12


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hr/`` with three 48x40 RGB images (one grayscale) and ``val/`` with two."""
    root = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(0)
    for folder, count in (("hr", 3), ("val", 2)):
        (root / folder).mkdir()
        for i in range(count):
            ramp = np.linspace(0, 200, 48)[None, :, None] + np.linspace(0, 50, 40)[:, None, None]
            img = (ramp + rng.integers(0, 56, (40, 48, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(img[..., 0] if i == 2 else img).save(root / folder / f"{i}.png")
    return root


def raw_config(data_dir: Path, runs: Path, **train_keys: object) -> dict:
    """A tiny x2 run with EMA, validation every 4 and checkpoints every 4 iterations."""
    train_section = {"iterations": ITERATIONS, "optimizer": {"lr": 1e-3}, "ema": 0.9, **train_keys}
    return {
        "name": "tiny",
        "scale": 2,
        "seed": 3,
        "datasets": {
            "train": {"hr_folders": [str(data_dir / "hr")], "patch_size": 8, "batch_size": 4},
            "val": {"folders": [str(data_dir / "val")], "every": 4},
        },
        "network": {"name": "bbcu_l", "n_feats": 8, "n_blocks": 1},
        "train": train_section,
        "path": {"runs": str(runs)},
        "logging": {"print_every": 2, "checkpoint_every": 4},
    }


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m binsr ARGS`` with the thread count of this process (for bit-identical CPU maths)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "binsr", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def full_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of ``ITERATIONS`` iterations (in this process)."""
    runs = tmp_path_factory.mktemp("runs")
    result = train(resolve_config(raw_config(data_dir, runs)), progress=False)
    assert result.iteration == ITERATIONS
    return runs / "tiny"


def test_run_directory_holds_config_metrics_plot_and_checkpoints(full_run: Path) -> None:
    names = {p.name for p in full_run.iterdir()}
    expected = {"config.yaml", "metrics.csv", "curves.png", "best.safetensors", "last.safetensors"}
    assert expected | {STATE_TENSORS, STATE_JSON} <= names
    assert not any(name.endswith(".tmp") for name in names) and STATE_NEXT not in names

    with (full_run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == list(range(2, ITERATIONS + 1, 2))
    assert list(rows[0]) == ["iteration", "loss", "lr", "time", "val_psnr", "val_ssim"]
    validated = [int(r["iteration"]) for r in rows if r["val_psnr"]]
    assert validated == [4, 8, 12]
    assert all(float(r["loss"]) > 0 for r in rows)

    config = yaml.safe_load((full_run / "config.yaml").read_text())
    assert resolve_config(config) == config and config["train"]["ema"] == 0.9
    assert (full_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # last.safetensors is the EMA model; the raw weights and optimizer live in the state.
    last = load_model(full_run / "last.safetensors")
    state, info = load_state(full_run)
    assert info["iteration"] == ITERATIONS and info["best_iteration"] in validated
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    assert tensors_equal(ema, last.state_dict())
    assert any(k.startswith("optimizer.") for k in state) and "rng.cpu" in state
    best = load_model(full_run / "best.safetensors")
    assert best.config == last.config and best.config["kwargs"]["n_feats"] == 8


def batchnorm_config(data_dir: Path, runs: Path) -> dict:
    """The tiny run on a BNN (BatchNorm after each binary conv), named ``tiny_bn``."""
    raw = raw_config(data_dir, runs)
    raw.update(name="tiny_bn", network={"name": "bnn", "n_feats": 8, "n_blocks": 1})
    return resolve_config(raw)


@pytest.fixture(scope="module")
def batchnorm_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of a network with BatchNorm, trained with EMA."""
    runs = tmp_path_factory.mktemp("bn_runs")
    train(batchnorm_config(data_dir, runs), progress=False)
    return runs / "tiny_bn"


def batchnorm_statistics(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k.endswith(("running_mean", "running_var"))}


def test_the_saved_ema_model_has_batchnorm_statistics_of_its_own_weights(
    data_dir: Path, batchnorm_run: Path
) -> None:
    """Not the trained model's copied statistics: those re-estimated for the EMA weights."""
    from binsr.checkpoint import read_model_header
    from binsr.train.batchnorm import CALIBRATION_BATCHES, calibration_batches, recalibrate_batchnorm

    last = load_model(batchnorm_run / "last.safetensors")
    assert read_model_header(batchnorm_run / "last.safetensors")["bn_recalibrated"] == CALIBRATION_BATCHES
    saved = batchnorm_statistics(last.state_dict())
    state, _ = load_state(batchnorm_run)
    trained = batchnorm_statistics({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    assert saved.keys() == trained.keys() and len(saved) == 4
    assert not any(torch.allclose(saved[k], trained[k]) for k in saved)
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    assert tensors_equal(saved, batchnorm_statistics(ema))

    config = batchnorm_config(data_dir, batchnorm_run.parent)
    sampler = PatchSampler(load_hr_folders([str(data_dir / "hr")], 2), 2, 8)
    recalibrate_batchnorm(last, calibration_batches(sampler, config["seed"], 4))
    for name, value in batchnorm_statistics(last.state_dict()).items():
        torch.testing.assert_close(value, saved[name])


def test_a_batchnorm_run_stopped_and_resumed_ends_identical(
    data_dir: Path, batchnorm_run: Path, tmp_path: Path
) -> None:
    """Re-estimating the EMA model's statistics at a checkpoint leaves the resumed run unchanged."""
    config = batchnorm_config(data_dir, tmp_path)
    assert train(config, progress=False, stop_at=6).iteration == 6
    assert train(config, progress=False, resume=True).iteration == ITERATIONS
    for name in ("last.safetensors", "best.safetensors", STATE_TENSORS):
        assert tensors_equal(load_file(batchnorm_run / name), load_file(tmp_path / "tiny_bn" / name)), name


def test_an_ema_checkpoint_with_copied_statistics_is_brought_up_to_date(
    data_dir: Path, batchnorm_run: Path, full_run: Path, tmp_path: Path
) -> None:
    """What the trainer saved before it re-estimated the statistics becomes what it saves now."""
    from binsr.checkpoint import read_model_header
    from binsr.train.batchnorm import recalibrate_checkpoint

    state, _ = load_state(batchnorm_run)
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    old = {**ema, **batchnorm_statistics({k[6:]: v for k, v in state.items() if k.startswith("model.")})}
    model = create_model("bnn", scale=2, n_feats=8, n_blocks=1)
    model.load_state_dict(old)
    path = tmp_path / "last.safetensors"
    save_model(path, model, extra={"ema": True, "iteration": ITERATIONS, "val_psnr": {"val": 20.0}})
    config = batchnorm_config(data_dir, batchnorm_run.parent)

    assert recalibrate_checkpoint(path, config)
    header = read_model_header(path)
    assert header["iteration"] == ITERATIONS and "val_psnr" not in header and header["bn_recalibrated"]
    now = load_model(path).state_dict()
    expected = load_model(batchnorm_run / "last.safetensors").state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(now[name], value)
    before = path.read_bytes()
    assert not recalibrate_checkpoint(path, config) and path.read_bytes() == before  # already done
    without_bn = (full_run / "last.safetensors").read_bytes()
    assert not recalibrate_checkpoint(full_run / "last.safetensors", config)  # bbcu_l: no BatchNorm
    assert (full_run / "last.safetensors").read_bytes() == without_bn


def test_curves_before_the_first_validation_plot_without_a_warning(tmp_path: Path) -> None:
    import warnings

    from binsr.train.logs import RunLog

    log = RunLog(tmp_path, ["Set5"])
    log.add(100, {"loss": 0.03, "lr": 1e-4, "time": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend with nothing to label
        log.plot()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_starting_over_an_existing_run_is_refused(full_run: Path) -> None:
    config = yaml.safe_load((full_run / "config.yaml").read_text())
    with pytest.raises(BinsrError, match="already holds a run; continue it with --resume"):
        train(config, full_run, progress=False)


@pytest.mark.parametrize("kill_at", ["step@6", "state-json@8"])
def test_killed_run_resumes_bit_identically(
    kill_at: str, data_dir: Path, full_run: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-interval (``step@6``) or between the state's JSON commit and the tensor rename."""
    config_path = write_config(tmp_path / "tiny.yaml", raw_config(data_dir, tmp_path / "runs"))
    killed = run_cli(["train", str(config_path), "--no-progress"], env={"BINSR_TEST_KILL": kill_at})
    assert killed.returncode == -9, killed.stderr
    run_dir = tmp_path / "runs" / "tiny"
    resumed = run_cli(["train", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained {ITERATIONS} iterations" in resumed.stdout
    assert "it/s" in resumed.stderr and "loss=" in resumed.stderr and "psnr=" in resumed.stderr  # tqdm bar

    for name in ("last.safetensors", "best.safetensors", STATE_TENSORS):
        assert tensors_equal(load_file(full_run / name), load_file(run_dir / name)), name
    with (full_run / "metrics.csv").open() as a, (run_dir / "metrics.csv").open() as b:
        rows_a, rows_b = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows_a] == [
        {k: v for k, v in r.items() if k != "time"} for r in rows_b
    ]


def test_stop_at_then_resume_equals_an_uninterrupted_run(
    data_dir: Path, full_run: Path, tmp_path: Path
) -> None:
    """``--stop-at 6`` (between the checkpoints every 4) keeps the schedule; --resume ends bit-identical."""
    config_path = write_config(tmp_path / "tiny.yaml", raw_config(data_dir, tmp_path / "runs"))
    stopped = run_cli(["train", str(config_path), "--stop-at", "6", "--no-progress"])
    assert stopped.returncode == 0, stopped.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert "trained 6 iterations" in stopped.stdout and f"binsr train --resume {run_dir}" in stopped.stdout
    assert load_state(run_dir)[1]["iteration"] == 6
    again = run_cli(["train", "--resume", str(run_dir), "--stop-at", "5"])
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        "binsr: error: the run is already at iteration 6; stop at a later one"
    ]
    resumed = run_cli(["train", "--resume", str(run_dir), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained {ITERATIONS} iterations" in resumed.stdout and "stopped early" not in resumed.stdout
    for name in ("last.safetensors", "best.safetensors", STATE_TENSORS):
        assert tensors_equal(load_file(full_run / name), load_file(run_dir / name)), name
    bad = run_cli(["train", str(config_path), "--stop-at", "0"])
    assert bad.returncode == 2 and "--stop-at must be a positive iteration, got 0" in bad.stderr


def test_the_state_keeps_the_iterations_and_seconds_trained_on_each_device(
    data_dir: Path, tmp_path: Path
) -> None:
    """Each process adds its steps to its device's tally in the state (``time_by_device``); a state
    saved before the tally was kept counts its iterations under an unrecorded device."""
    config = resolve_config(raw_config(data_dir, tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "tiny"
    here = device_name("cpu")
    train(config, progress=False, stop_at=4)
    tensors, info = load_state(run_dir)
    assert info["time_by_device"].keys() == {here} and info["time_by_device"][here]["iterations"] == 4
    del info["time_by_device"]  # as an older binsr saved it
    save_state(run_dir, tensors, info)
    train(config, resume=True, progress=False, stop_at=8)
    info = load_state(run_dir)[1]
    tally = info["time_by_device"]
    assert {name: t["iterations"] for name, t in tally.items()} == {UNRECORDED_DEVICE: 4, here: 4}
    assert sum(t["seconds"] for t in tally.values()) == pytest.approx(info["elapsed"])
    assert tally[UNRECORDED_DEVICE]["seconds"] > 0 and tally[here]["seconds"] > 0


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_training_with_a_checkpoint_and_resume_ends_identical(
    data_dir: Path, full_run: Path, tmp_path: Path, signal_name: str
) -> None:
    """SIGTERM / SIGINT after step 6 (between the checkpoints every 4): the step finishes, a checkpoint is
    written at 6, the CLI says so in one line and exits 130; --resume ends bit-identical."""
    config_path = write_config(tmp_path / "tiny.yaml", raw_config(data_dir, tmp_path / "runs"))
    stopped = run_cli(
        ["train", str(config_path), "--no-progress"], env={"BINSR_TEST_KILL": f"step@6:{signal_name}"}
    )
    run_dir = tmp_path / "runs" / "tiny"
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"binsr: interrupted: training stopped by {signal_name} at iteration 6 of {ITERATIONS}, its state "
        f"saved in {run_dir} (binsr train --resume continues it, or binsr study for a study run)"
    )
    assert load_state(run_dir)[1]["iteration"] == 6
    resumed = run_cli(["train", "--resume", str(run_dir), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last.safetensors", "best.safetensors", STATE_TENSORS):
        assert tensors_equal(load_file(full_run / name), load_file(run_dir / name)), name


def test_state_commit_survives_a_crash_in_each_phase(tmp_path: Path) -> None:
    old = {"w": torch.zeros(3)}
    save_state(tmp_path, old, {"iteration": 1})
    # Crash after phase 1: a new tensor file that no JSON names is discarded.
    (tmp_path / STATE_NEXT).write_bytes(b"half-written garbage")
    tensors, info = load_state(tmp_path)
    assert info["iteration"] == 1 and torch.equal(tensors["w"], old["w"])
    assert not (tmp_path / STATE_NEXT).exists()
    # Crash after phase 2: the JSON names the new file, which is then moved into place.
    save_state(tmp_path, {"w": torch.ones(3)}, {"iteration": 2})
    (tmp_path / STATE_TENSORS).rename(tmp_path / STATE_NEXT)
    save_state_json = json.loads((tmp_path / STATE_JSON).read_text())
    (tmp_path / STATE_TENSORS).write_bytes(b"stale")
    tensors, info = load_state(tmp_path)
    assert info == save_state_json and torch.equal(tensors["w"], torch.ones(3))
    assert (tmp_path / STATE_TENSORS).is_file() and not (tmp_path / STATE_NEXT).exists()
    # A tensor file that does not match its JSON is refused, not silently used.
    assert state_is_whole(tmp_path)
    (tmp_path / STATE_TENSORS).write_bytes(b"corrupt")
    assert not state_is_whole(tmp_path)
    with pytest.raises(BinsrError, match="incomplete"):
        load_state(tmp_path)


def test_diverging_run_stops_and_keeps_its_last_good_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    raw = raw_config(data_dir, tmp_path, optimizer={"lr": 1e30}, ema=None)
    raw["logging"]["checkpoint_every"] = 1
    with pytest.raises(BinsrError, match=r"training diverged at iteration \d+: loss is (nan|inf)") as info:
        train(resolve_config(raw), progress=False)
    assert "\n" not in str(info.value) and "last good checkpoint (iteration" in str(info.value)
    _, state = load_state(tmp_path / "tiny")
    assert f"(iteration {state['iteration']})" in str(info.value)
    model = load_model(tmp_path / "tiny" / "last.safetensors")  # refuses non-finite weights
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    # Losses are read only at log rows, validations and checkpoints (every 4 here): the error still
    # names the iteration whose loss was first non-finite, and nothing was written after it.
    diverged_at = re.search(r"iteration (\d+):", str(info.value)).group(1)
    raw = raw_config(data_dir, tmp_path / "sparse", optimizer={"lr": 1e30}, ema=None)
    raw["logging"] = {"print_every": 4, "checkpoint_every": 4}
    with pytest.raises(BinsrError, match=rf"training diverged at iteration {diverged_at}: loss is") as info:
        train(resolve_config(raw), progress=False)
    assert int(diverged_at) > 4 or "no checkpoint had been saved yet" in str(info.value)


def test_batches_are_pure_functions_of_seed_and_iteration(data_dir: Path) -> None:
    sampler = PatchSampler(load_hr_folders([data_dir / "hr"], 2), scale=2, patch_size=8)
    lr, hr = sampler.batch(seed=1, iteration=5, batch_size=4)
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 16, 16) and lr.dtype == torch.float32
    again = sampler.batch(seed=1, iteration=5, batch_size=4)
    assert torch.equal(lr, again[0]) and torch.equal(hr, again[1])
    assert not torch.equal(lr, sampler.batch(seed=1, iteration=6, batch_size=4)[0])
    halves = [sampler.batch(1, 5, 4, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), lr) and torch.equal(
        torch.cat([h[1] for h in halves]), hr
    )
    # LR patches are the protocol's bicubic downscale of the HR patches (up to border effects).
    centre = slice(2, 6)
    down = torch.nn.functional.avg_pool2d(hr, 2)[..., centre, centre]
    assert (down - lr[..., centre, centre]).abs().mean() < 0.05


def test_paired_folders_match_generated_lr(data_dir: Path, tmp_path: Path) -> None:
    generated = load_hr_folders([data_dir / "hr"], 2)
    (tmp_path / "lr").mkdir()
    for pair in generated:
        gray = bool((pair.lr == pair.lr[..., :1]).all())  # keep the gray image gray, as its HR
        Image.fromarray(pair.lr[..., 0] if gray else pair.lr).save(
            tmp_path / "lr" / f"{Path(pair.name).stem}x2.png"
        )
    paired = load_paired(data_dir / "hr", tmp_path / "lr", 2)
    assert [p.name for p in paired] == [p.name for p in generated]
    assert all(
        np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr)
        for a, b in zip(paired, generated, strict=True)
    )
    (tmp_path / "lr" / "0x2.png").unlink()
    with pytest.raises(BinsrError, match="no LR image for"):
        load_paired(data_dir / "hr", tmp_path / "lr", 2)


def test_distillation_hooks_modules_present_in_both_networks(data_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = create_model("bbcu_l", scale=2, binary=False, n_feats=8, n_blocks=1)
    save_model(tmp_path / "teacher.safetensors", teacher)
    assert match_module_names(teacher, ["body.*"]) == ["body.0"]
    distill = {"teacher": str(tmp_path / "teacher.safetensors"), "output_weight": 1.0, "feature_weight": 0.5}
    raw = raw_config(data_dir, tmp_path / "runs", iterations=2, distill=distill)
    result = train(resolve_config(raw), progress=False)
    assert result.iteration == 2
    raw["train"]["distill"]["features"] = ["no_such_module"]
    raw["name"] = "other"
    with pytest.raises(BinsrError, match="matches no module present in both"):
        train(resolve_config(raw), progress=False)


def test_init_from_starts_a_binary_model_at_a_trained_full_precision_one(
    data_dir: Path, tmp_path: Path
) -> None:
    """``train.init_from`` (the study's ``init: twin``): every tensor of the file whose name and shape
    match is copied; the learnable weight scales, absent from a full-precision model, start at
    ``mean|W_o|`` of the loaded latent weights, not of the random ones."""
    torch.manual_seed(11)
    source = create_model("ours", scale=2, binary=False, n_feats=8, n_blocks=1)
    with torch.no_grad():
        for tensor in source.parameters():
            tensor.add_(torch.randn_like(tensor))  # far from any fresh initialisation
    save_model(tmp_path / "fp.safetensors", source)
    raw = raw_config(data_dir, tmp_path / "runs", iterations=1, optimizer={"lr": 1e-12})
    raw["network"] = {"name": "ours", "n_feats": 8, "n_blocks": 1}
    raw["train"]["init_from"] = str(tmp_path / "fp.safetensors")
    train(resolve_config(raw), progress=False)
    started = load_file(str(tmp_path / "runs" / "tiny" / "last.safetensors"))
    expected = source.state_dict()
    shared = [name for name in started if name in expected]
    assert set(shared) == set(expected)  # latent weights, thresholds, attention, RPReLU, head and tail
    for name in shared:
        torch.testing.assert_close(started[name], expected[name], atol=1e-6, rtol=0)
    scales = [name for name in started if name.endswith("weight_binarizer.alpha")]
    assert scales
    for name in scales:
        weight = expected[name.replace("weight_binarizer.alpha", "weight")]
        torch.testing.assert_close(started[name], weight.abs().flatten(1).mean(1), atol=1e-5, rtol=0)


def test_two_process_gloo_ddp_matches_one_process(data_dir: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2`` on CPU (gloo) equals one process with the same global batch."""
    raw = raw_config(data_dir, tmp_path / "runs", iterations=4, ema=None)
    raw["datasets"]["val"] = None
    raw["network"]["binary"] = False  # a full-precision net: float noise cannot flip a sign
    single = train(resolve_config({**raw, "name": "single"}), progress=False)
    config_path = write_config(tmp_path / "ddp.yaml", {**raw, "name": "ddp"})
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "binsr"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *launcher, "train", str(config_path), "--no-progress", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 4 iterations") == 1  # only rank 0 reports
    a = load_file(single.run_dir / "last.safetensors")
    b = load_file(tmp_path / "runs" / "ddp" / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
    assert {p.name for p in (tmp_path / "runs" / "ddp").iterdir()} >= {
        "config.yaml",
        "metrics.csv",
        "last.safetensors",
    }


def test_config_is_saved_resolved_and_reloadable(data_dir: Path, tmp_path: Path) -> None:
    config = resolve_config(raw_config(data_dir, tmp_path))
    assert yaml.safe_load(dump_config(config)) == config


def test_compiled_run_matches_the_eager_run(data_dir: Path, tmp_path: Path) -> None:
    """``binsr train --compile`` trains the same model as an eager run (``ours``, every ingredient on):
    the same losses up to rounding, and checkpoints of the plain module, loadable without compilation.

    (Weights are not compared: Adam turns any rounding difference in a near-zero gradient into a
    step of the learning rate's size.)"""
    runs = {}
    for compiled in (False, True):
        raw = raw_config(data_dir, tmp_path / str(compiled), iterations=6)
        raw["network"] = {"name": "ours", "n_feats": 8, "n_blocks": 1}
        result = train(resolve_config(raw), progress=False, compile_model=compiled)
        assert result.iteration == 6
        runs[compiled] = result
    eager, compiled = (load_model(runs[c].run_dir / "last.safetensors").state_dict() for c in (False, True))
    assert eager.keys() == compiled.keys()
    losses = [
        [float(row["loss"]) for row in csv.DictReader((runs[c].run_dir / "metrics.csv").open())]
        for c in (False, True)
    ]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert runs[True].last_val["val"][0] == pytest.approx(runs[False].last_val["val"][0], abs=0.01)

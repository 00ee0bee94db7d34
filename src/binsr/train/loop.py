"""The training loop: one :class:`Trainer` per process, driven by a resolved config.

Step ``i`` (0-based) of ``N``:

1. set the learning rate to :func:`~binsr.train.schedule.learning_rate` of ``i`` and call
   ``model.set_progress(i / N)`` when the model has it;
2. take this rank's slice of global batch ``i`` (:meth:`~binsr.train.data.PatchSampler.batch`);
3. forward (under ``torch.autocast`` float16 on CUDA when ``train.amp``), L1 loss plus the optional
   distillation terms, averaged over ranks;
4. backward, optional gradient-norm clipping, optimizer step, EMA update;
5. after step ``i`` the run has done ``i + 1`` iterations: log every ``print_every``, validate every
   ``val.every`` and checkpoint every ``checkpoint_every`` iterations (and all three at the end).

The losses stay on the device until a log row, a validation or a checkpoint reads them all at once:
reading a GPU tensor every step would make the host wait for the GPU every step, and a small network
is bound by the host's kernel launches. Nothing else in a step reads a device value (the model's
forward traces without a graph break, ``tests/test_models.py``). A non-finite loss stops the run when
it is read, naming the iteration it came from, before anything is validated or written; so no
checkpoint ever holds weights that a non-finite loss has updated.

SIGINT (Ctrl-C) or SIGTERM during a run lets the current step finish, writes a checkpoint there and
raises :class:`~binsr.errors.TrainingStoppedError` (``binsr: interrupted: ...``, exit status 130), so a
stopped run loses nothing and ``--resume`` continues it; a second Ctrl-C interrupts at once. (Only in
a single process: ranks of a ``torchrun`` job keep the default handlers.)

A run may stop early at a chosen iteration (``stop_at``, ``binsr train --stop-at N``): the schedule
stays the configured one, a checkpoint is written there, and ``--resume`` continues it to the same
weights an uninterrupted run ends with (a long run in chunks, or a model taken at iteration N).

Only rank 0 writes files and validates. The validated and saved model is the EMA model when
``train.ema`` is set, its BatchNorm statistics (if it has any) re-estimated for its own weights first
(:mod:`binsr.train.batchnorm`). A checkpoint writes ``last.safetensors`` (the model, via
:func:`binsr.checkpoint.save_model`) and then commits the training state (:mod:`binsr.train.state`);
``best.safetensors`` is written whenever the mean validation PSNR improves.

The training state keeps the seconds spent in steps (``elapsed``) and, since a run may be resumed on
another machine, the iterations and seconds trained on each device (``time_by_device``, keyed by
:func:`binsr.hardware.device_name`; a state saved before it was kept counts its iterations under
:data:`UNRECORDED_DEVICE`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from binsr.checkpoint import load_safetensors, save_model
from binsr.data.datasets import open_eval_set
from binsr.errors import BinsrError, TrainingStoppedError
from binsr.hardware import UNRECORDED_DEVICE, device_name
from binsr.layers import settle_weight_scales
from binsr.models import create_model
from binsr.train.batchnorm import (
    CALIBRATION_BATCHES,
    calibration_batches,
    has_batchnorm,
    recalibrate_batchnorm,
)
from binsr.train.config import dump_config, model_kwargs
from binsr.train.data import sampler_from_config
from binsr.train.distill import Distiller
from binsr.train.distributed import DistInfo, all_mean, barrier, cleanup, init_distributed
from binsr.train.logs import RunLog
from binsr.train.schedule import learning_rate
from binsr.train.state import (
    STATE_JSON,
    get_rng_state,
    load_state,
    maybe_kill,
    optimizer_from_flat,
    optimizer_to_flat,
    save_state,
    set_rng_state,
)

__all__ = ["BEST_FILE", "CONFIG_FILE", "LAST_FILE", "TrainResult", "Trainer", "train"]

CONFIG_FILE = "config.yaml"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"


@dataclass
class TrainResult:
    """What a finished run reports: its folder, iterations done and the best / last validation scores."""

    run_dir: Path
    iteration: int
    best_psnr: float | None = None
    best_iteration: int | None = None
    last_val: dict[str, tuple[float, float]] = field(default_factory=dict)
    rank: int = 0


class _StopOnSignals:
    """While active, SIGINT and SIGTERM ask the training loop to stop after the current step
    (``signal_name`` says which came); a second SIGINT raises :class:`KeyboardInterrupt` at once.

    Handlers can only be set in the main thread; elsewhere, or when not ``enabled``, nothing changes."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignals:
        if self.enabled:
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: object) -> None:
        if self.signal_name is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        print(f"binsr: {self.signal_name}: stopping after this step (saving a checkpoint)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def val_set_names(folders: list[str]) -> list[str]:
    """Short unique names of the validation folders (their base names, numbered when they repeat)."""
    names: list[str] = []
    for folder in folders:
        base = Path(folder).name or "val"
        name, n = base, 2
        while name in names:
            name, n = f"{base}{n}", n + 1
        names.append(name)
    return names


def _set_progress(model: nn.Module, progress: float) -> None:
    setter = getattr(model, "set_progress", None)
    if callable(setter):
        setter(progress)


class Trainer:
    """Everything one training process holds: model, EMA, optimizer, data, distiller, logs.

    Args:
        config: a resolved config (:func:`binsr.train.config.resolve_config`).
        run_dir: the run directory (created by :func:`train`).
        resume: continue from the run directory's training state.
        dist: this process's place in the process group.
        progress: show a tqdm bar on rank 0.
        compile_model: train through ``torch.compile`` of the model (TorchInductor fuses the
            binarizers' and attention's element-wise operations into few kernels). The saved and
            validated models are the plain modules; only rounding differs from an eager run.
    """

    def __init__(
        self,
        config: dict[str, Any],
        run_dir: Path,
        *,
        resume: bool,
        dist: DistInfo,
        progress: bool = True,
        compile_model: bool = False,
    ) -> None:
        self.config, self.run_dir, self.dist, self.show_progress = config, run_dir, dist, progress
        train = config["train"]
        self.iterations: int = train["iterations"]
        self.batch_size: int = config["datasets"]["train"]["batch_size"]
        if self.batch_size % dist.world_size:
            raise BinsrError(
                f"config key datasets.train.batch_size ({self.batch_size}) must be divisible by the number "
                f"of processes ({dist.world_size})"
            )
        self.scale: int = config["scale"]
        self.seed: int = config["seed"]
        self.device = dist.device
        self.amp = bool(train["amp"]) and self.device.type == "cuda"

        torch.manual_seed(self.seed)
        network = config["network"]
        self.model = create_model(network["name"], scale=self.scale, **model_kwargs(network)).to(self.device)
        if train["init_from"] is not None:
            initialise_from(self.model, Path(train["init_from"]))
        settle_weight_scales(self.model)
        self.model.train()
        # The EMA copy is made before the distiller hooks the student, so it carries no hooks.
        self.ema_decay: float | None = train["ema"]
        self.ema = (
            copy.deepcopy(self.model).requires_grad_(False).eval() if self.ema_decay is not None else None
        )
        # Its BatchNorm statistics are re-estimated before it is validated or saved (binsr.train.batchnorm).
        self.calibrate_ema = self.ema is not None and has_batchnorm(self.ema)
        self.calibrated_iteration: int | None = None
        self.distiller = (
            Distiller(self.model, train["distill"], self.scale, self.device) if train["distill"] else None
        )
        opt = train["optimizer"]
        optimizer_class = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[opt["type"]]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = optimizer_class(
            self.params, lr=opt["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"]
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.sampler = sampler_from_config(config["datasets"]["train"], self.scale)

        val = config["datasets"]["val"]
        self.val_folders: list[str] = val["folders"] if val else []
        self.val_every: int = val["every"] if val else 0
        self.val_names = val_set_names(self.val_folders)
        if dist.is_main:
            for folder in self.val_folders:  # fail now, not at the first validation
                open_eval_set(folder, self.scale)

        self.iteration = 0
        self.best_psnr: float | None = None
        self.best_iteration: int | None = None
        self.last_val: dict[str, tuple[float, float]] = {}
        self.saved_iteration: int | None = None
        self.elapsed = 0.0
        self.device_label = device_name(self.device.type, torch.get_num_threads())
        if dist.world_size > 1:
            self.device_label = f"{dist.world_size}× {self.device_label}"
        self.time_by_device: dict[str, list[float]] = {}  # device -> [iterations, seconds] trained there
        self.window = [0.0, 0]  # loss sum and count since the last logged row
        self.pending_losses: list[torch.Tensor] = []  # this rank's mean losses not yet read, on the device
        self.last_loss: float | None = None
        if resume:
            self._load()
        self.log = (
            RunLog(run_dir, self.val_names, self.iteration if resume else None) if dist.is_main else None
        )

        self.net: nn.Module = self.model
        if dist.distributed:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if compile_model:
            # A schedule-dependent surrogate recompiles when its structure changes (FDA's n goes 9 → 18).
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
            self.net = torch.compile(self.net)

    # ------------------------------------------------------------------------------------ the model

    @property
    def eval_model(self) -> nn.Module:
        """The model that is validated and saved: the EMA model if there is one."""
        return self.ema if self.ema is not None else self.model

    def _calibrate_eval_model(self) -> None:
        """Re-estimate the EMA model's BatchNorm statistics for the current weights, once per iteration.

        The EMA update copies the trained model's statistics every step; they do not fit the averaged
        weights (:mod:`binsr.train.batchnorm`), so the model that is validated and saved gets its own,
        from the run's first :data:`~binsr.train.batchnorm.CALIBRATION_BATCHES` training batches.
        """
        if not self.calibrate_ema or self.ema is None or self.calibrated_iteration == self.iteration:
            return
        _set_progress(self.ema, self.iteration / self.iterations)
        recalibrate_batchnorm(self.ema, calibration_batches(self.sampler, self.seed, self.batch_size))
        self.calibrated_iteration = self.iteration

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        """``ema ← d·ema + (1 − d)·θ`` with ``d = min(decay, (1 + step) / (10 + step))``; buffers copied."""
        if self.ema is None or self.ema_decay is None:
            return
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        # Multi-tensor kernels: one launch for all parameters instead of one per tensor.
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1.0 - decay)
        buffers = list(self.ema.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(self.model.buffers()))

    # ------------------------------------------------------------------------------------- one step

    def step(self) -> None:
        """Run training step ``self.iteration``; its loss (averaged over ranks) joins ``pending_losses``."""
        i = self.iteration
        lr_value = learning_rate(
            self.config["train"]["optimizer"]["lr"], self.config["train"]["scheduler"], self.iterations, i
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr_value
        _set_progress(self.model, i / self.iterations)
        lr, hr = self.sampler.batch(self.seed, i, self.batch_size, self.dist.rank, self.dist.world_size)
        if self.device.type == "cuda":  # a copy from pageable memory would wait for the GPU queue
            lr, hr = lr.pin_memory(), hr.pin_memory()
        lr, hr = lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            sr = self.net(lr)
            loss = (sr.float() - hr).abs().mean()
            if self.distiller is not None:
                loss = loss + self.distiller.loss(lr, sr.float())
        self.pending_losses.append(all_mean(loss.detach().float(), self.dist))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config["train"]["grad_clip"] is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config["train"]["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._update_ema(i)
        self.iteration = i + 1

    def read_losses(self) -> None:
        """Read the pending losses (one wait for the device), add them to the log window, and stop the
        run at the first non-finite one."""
        if not self.pending_losses:
            return
        values = torch.stack(self.pending_losses).tolist()
        self.pending_losses = []
        first = self.iteration - len(values) + 1
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise self._divergence(f"loss is {value}", first + offset)
        self.window[0] += sum(values)
        self.window[1] += len(values)
        self.last_loss = values[-1]

    def _divergence(self, reason: str, iteration: int | None = None) -> BinsrError:
        kept = (
            f"the last good checkpoint (iteration {self.saved_iteration}) is kept in {self.run_dir}"
            if self.saved_iteration is not None
            else "no checkpoint had been saved yet"
        )
        at = self.iteration if iteration is None else iteration
        return BinsrError(f"training diverged at iteration {at}: {reason}; {kept}")

    # ------------------------------------------------------------------------------- the whole run

    def run(self, stop_at: int | None = None) -> TrainResult:
        """Train from the current iteration to the last one (or to ``stop_at``); returns the run's scores."""
        end = self.iterations if stop_at is None else min(stop_at, self.iterations)
        start = self.iteration
        if end <= start < self.iterations:
            if self.log is not None:
                self.log.close()
            raise BinsrError(f"the run is already at iteration {start}; stop at a later one")
        bar = tqdm(
            total=self.iterations,
            initial=self.iteration,
            file=sys.stderr,
            unit="it",
            dynamic_ncols=True,
            disable=not (self.dist.is_main and self.show_progress),
        )
        print_every = self.config["logging"]["print_every"]
        try:
            with _StopOnSignals(enabled=self.dist.world_size == 1) as stop:
                while self.iteration < end and stop.signal_name is None:
                    started = time.perf_counter()
                    self.step()
                    if self.iteration % print_every == 0 or self.iteration == self.iterations:
                        self.read_losses()  # waits for the device: training time, like the step itself
                    spent = time.perf_counter() - started
                    self.elapsed += spent
                    tally = self.time_by_device.setdefault(self.device_label, [0, 0.0])
                    tally[0] += 1
                    tally[1] += spent
                    maybe_kill("step", self.iteration)
                    self._after_step()
                    postfix = {"loss": f"{self.last_loss:.4g}"} if self.last_loss is not None else {}
                    if self.last_val:
                        postfix["psnr"] = f"{self._mean_psnr(self.last_val):.2f}"
                    bar.set_postfix(postfix, refresh=False)
                    bar.update(1)
            every = self.config["logging"]["checkpoint_every"]
            if start < self.iteration < self.iterations and self.iteration % every:  # stopped early
                self.checkpoint()
            if stop.signal_name is not None and self.iteration < end:
                raise TrainingStoppedError(
                    f"training stopped by {stop.signal_name} at iteration {self.iteration} of "
                    f"{self.iterations}, its state saved in {self.run_dir} "
                    "(binsr train --resume continues it, or binsr study for a study run)"
                )
        finally:
            bar.close()
            if self.log is not None:
                if self.log.rows:
                    self.log.plot()
                self.log.close()
        return TrainResult(
            self.run_dir, self.iteration, self.best_psnr, self.best_iteration, self.last_val, self.dist.rank
        )

    def _after_step(self) -> None:
        """Logging, validation and checkpointing due after the step that made ``self.iteration``."""
        it, last = self.iteration, self.iteration == self.iterations
        logging = self.config["logging"]
        if self.log is not None and (it % logging["print_every"] == 0 or last):
            self.log.add(it, self._row())
            self.window = [0.0, 0]
        if self.val_folders and (it % self.val_every == 0 or last):
            self.validate()
        if it % logging["checkpoint_every"] == 0 or last:
            self.checkpoint()

    def _row(self) -> dict[str, float]:
        total, count = self.window
        return {
            "loss": total / count if count else float("nan"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "time": self.elapsed,
        }

    @staticmethod
    def _mean_psnr(results: dict[str, tuple[float, float]]) -> float:
        return sum(psnr for psnr, _ in results.values()) / len(results)

    def validate(self) -> None:
        """Score the eval model on every validation folder (rank 0), log it and keep the best model."""
        self.read_losses()
        if self.dist.is_main:
            self._calibrate_eval_model()
            model = self.eval_model
            _set_progress(model, self.iteration / self.iterations)
            was_training = model.training
            results = validate_model(model, self.val_folders, self.val_names, self.scale)
            model.train(was_training)
            self.last_val = results
            values = {}
            for name, (psnr, ssim) in results.items():
                values.update({f"{name}_psnr": psnr, f"{name}_ssim": ssim})
            if self.log is not None:
                self.log.add(self.iteration, values)
                self.log.plot()
            scores = ", ".join(f"{name} {psnr:.2f} dB / {ssim:.4f}" for name, (psnr, ssim) in results.items())
            tqdm.write(f"[{self.iteration}/{self.iterations}] validation: {scores}", file=sys.stderr)
            mean = self._mean_psnr(results)
            if self.best_psnr is None or mean > self.best_psnr:
                self._check_finite()
                self.best_psnr, self.best_iteration = mean, self.iteration
                save_model(self.run_dir / BEST_FILE, model, extra=self._model_extra())
        barrier(self.dist)

    # ------------------------------------------------------------------------------- checkpoints

    def _model_extra(self) -> dict[str, Any]:
        return {
            "run": self.config["name"],
            "iteration": self.iteration,
            "ema": self.ema is not None,
            **({"bn_recalibrated": CALIBRATION_BATCHES} if self.calibrate_ema else {}),
            "val_psnr": {name: psnr for name, (psnr, _) in self.last_val.items()},
        }

    def _check_finite(self) -> None:
        for name, tensor in self.eval_model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise self._divergence(f"weight {name} is not finite")

    def checkpoint(self) -> None:
        """Write ``last.safetensors`` and commit the training state (rank 0), then sync the ranks."""
        self.read_losses()
        if self.dist.is_main:
            self._calibrate_eval_model()
            self._check_finite()
            save_model(self.run_dir / LAST_FILE, self.eval_model, extra=self._model_extra())
            tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            if self.ema is not None:
                tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
            optimizer_tensors, optimizer_info = optimizer_to_flat(self.optimizer, "optimizer")
            tensors.update(optimizer_tensors)
            tensors.update(get_rng_state())
            info = {
                "iteration": self.iteration,
                "iterations": self.iterations,
                "world_size": self.dist.world_size,
                "optimizer": optimizer_info,
                "scaler": self.scaler.state_dict() if self.amp else None,
                "best_psnr": self.best_psnr,
                "best_iteration": self.best_iteration,
                "last_val": self.last_val,
                "elapsed": self.elapsed,
                "time_by_device": {
                    name: {"iterations": int(n), "seconds": seconds}
                    for name, (n, seconds) in self.time_by_device.items()
                },
                "window": self.window,
            }
            save_state(self.run_dir, tensors, info)
            self.saved_iteration = self.iteration
            maybe_kill("checkpoint", self.iteration)
        barrier(self.dist)

    def _load(self) -> None:
        """Restore the committed training state of the run directory (rank 0 repairs it first)."""
        loaded = None
        if self.dist.is_main:
            loaded = load_state(self.run_dir)
        barrier(self.dist)
        if not self.dist.is_main:
            loaded = load_state(self.run_dir)
        if loaded is None:
            raise BinsrError(f"cannot resume: {self.run_dir} has no training state ({STATE_JSON})")
        tensors, info = loaded
        _load_prefixed(self.model, tensors, "model", self.run_dir)
        if self.ema is not None:
            if not any(name.startswith("ema.") for name in tensors):
                raise BinsrError(
                    f"cannot resume {self.run_dir} with train.ema set: it was trained without EMA"
                )
            _load_prefixed(self.ema, tensors, "ema", self.run_dir)
        try:
            optimizer_from_flat(self.optimizer, tensors, info["optimizer"], "optimizer")
        except (ValueError, KeyError) as error:
            raise BinsrError(
                f"cannot resume {self.run_dir}: optimizer state does not fit ({error})"
            ) from None
        if self.amp and info.get("scaler"):
            self.scaler.load_state_dict(info["scaler"])
        set_rng_state(tensors)
        self.iteration = int(info["iteration"])
        self.saved_iteration = self.iteration
        self.best_psnr, self.best_iteration = info["best_psnr"], info["best_iteration"]
        self.last_val = {name: (float(p), float(s)) for name, (p, s) in info["last_val"].items()}
        self.elapsed = float(info["elapsed"])
        if "time_by_device" in info:
            saved = info["time_by_device"]
            self.time_by_device = {n: [int(t["iterations"]), float(t["seconds"])] for n, t in saved.items()}
        elif self.iteration:  # saved before the devices were kept
            self.time_by_device = {UNRECORDED_DEVICE: [self.iteration, self.elapsed]}
        self.window = [float(info["window"][0]), int(info["window"][1])]


def _load_prefixed(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, run_dir: Path) -> None:
    """Load the ``prefix.*`` tensors into ``model`` strictly, with a one-line error on mismatch."""
    state = {name[len(prefix) + 1 :]: t for name, t in tensors.items() if name.startswith(prefix + ".")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise BinsrError(
            f"cannot resume {run_dir}: saved {prefix} weights do not fit the model ({first})"
        ) from None


def initialise_from(model: nn.Module, path: Path) -> list[str]:
    """Copy into ``model`` every tensor of the binsr model file ``path`` whose name and shape match.

    The rest keep their fresh initialisation, so a x2 model can start from a trained x4 model of the
    same family (BasicSR's ``pretrain_network_g`` with ``strict_load_g: false``): the second x2
    upsampling stage of the x4 model has no counterpart and is left out. Returns the names of the
    model's tensors that were *not* initialised from the file; refuses a file that matches nothing.
    """
    tensors, _ = load_safetensors(path)
    state = model.state_dict()
    matched = {k: v for k, v in tensors.items() if k in state and tuple(v.shape) == tuple(state[k].shape)}
    if not matched:
        raise BinsrError(f"config key train.init_from: no tensor of {path} matches the model")
    model.load_state_dict(matched, strict=False)
    return sorted(set(state) - set(matched))


def validate_model(
    model: nn.Module, folders: list[str], names: list[str], scale: int
) -> dict[str, tuple[float, float]]:
    """Mean ``(psnr, ssim)`` of ``model`` on each folder by the protocol (:func:`binsr.evaluate.evaluate`)."""
    from binsr.evaluate import evaluate
    from binsr.inference import ModelUpscaler

    upscaler = ModelUpscaler(model, scale, name="validation model")
    results = evaluate(upscaler, folders, [scale], progress=False)
    return {name: (r["psnr"], r["ssim"]) for name, r in zip(names, results, strict=True)}


def prepare_run_dir(config: dict[str, Any], run_dir: Path, resume: bool, dist: DistInfo) -> None:
    """Create a new run directory (refusing to overwrite a run) and write ``config.yaml`` (rank 0)."""
    if dist.is_main:
        if not resume and ((run_dir / STATE_JSON).exists() or (run_dir / LAST_FILE).exists()):
            raise BinsrError(
                f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
                "or choose another name"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BinsrError(f"cannot create run directory {run_dir}: {error.strerror or error}") from None
        from binsr.fileio import atomic_write_bytes

        atomic_write_bytes(run_dir / CONFIG_FILE, dump_config(config).encode("utf-8"))
    barrier(dist)


def train(
    config: dict[str, Any],
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    compile_model: bool = False,
) -> TrainResult:
    """Train as ``config`` says, in ``run_dir`` (default ``<path.runs>/<name>``); see the module doc.

    Joins the ``torchrun`` process group when launched by ``torchrun``. With ``resume`` the run continues
    from the run directory's last committed state. With ``stop_at`` it stops after that iteration (with a
    checkpoint), on the configured schedule. ``compile_model``: see :class:`Trainer`.
    """
    run_dir = Path(run_dir) if run_dir is not None else Path(config["path"]["runs"]) / config["name"]
    dist = init_distributed(device)
    try:
        if dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        prepare_run_dir(config, run_dir, resume, dist)
        trainer = Trainer(
            config, run_dir, resume=resume, dist=dist, progress=progress, compile_model=compile_model
        )
        return trainer.run(stop_at)
    finally:
        with contextlib.suppress(Exception):
            cleanup(dist)

"""What a run writes besides checkpoints: ``metrics.csv``, ``curves.png`` and optional TensorBoard events.

``metrics.csv`` has one row per logged or validated iteration: ``iteration, loss, lr, time`` (mean
training loss since the previous row, learning rate, training seconds so far) and ``<set>_psnr,
<set>_ssim`` for every validation folder (empty where the row was not validated). The file is rewritten
atomically at every update, and a resumed run first drops the rows written after its checkpoint, so the
file always matches the iterations the weights have seen.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from pathlib import Path
from typing import Any

from binsr.fileio import atomic_write_bytes

__all__ = ["METRICS_CSV", "PLOT_FILE", "RunLog"]

METRICS_CSV = "metrics.csv"
PLOT_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """The metrics table of a run, its CSV and plot files, and a TensorBoard writer when available.

    Args:
        run_dir: the run directory.
        val_names: names of the validation sets (CSV columns ``<name>_psnr``, ``<name>_ssim``).
        resume_from: on resume, the checkpoint's iteration: rows after it are dropped. ``None`` starts a
            new table.
    """

    def __init__(self, run_dir: Path, val_names: list[str], resume_from: int | None = None) -> None:
        self.run_dir = run_dir
        self.columns = ["iteration", "loss", "lr", "time"]
        self.columns += [f"{name}_{metric}" for name in val_names for metric in ("psnr", "ssim")]
        self.val_names = val_names
        self.rows: dict[int, dict[str, Any]] = {}
        if resume_from is not None:
            self.rows = {it: row for it, row in self._read().items() if it <= resume_from}
        self.tensorboard = _tensorboard_writer(run_dir / TENSORBOARD_DIR, resume_from)

    def _read(self) -> dict[int, dict[str, Any]]:
        """Rows of an existing ``metrics.csv`` (empty if there is none)."""
        path = self.run_dir / METRICS_CSV
        if not path.is_file():
            return {}
        rows = {}
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                with contextlib.suppress(KeyError, ValueError):
                    values = {
                        k: float(v) for k, v in row.items() if k in self.columns and v not in ("", None)
                    }
                    rows[int(values.pop("iteration"))] = values
        return rows

    def add(self, iteration: int, values: dict[str, float]) -> None:
        """Merge ``values`` into the row of ``iteration`` and rewrite the CSV (and TensorBoard scalars)."""
        self.rows.setdefault(iteration, {}).update(values)
        if self.tensorboard is not None:
            for key, value in values.items():
                if key in ("loss", "lr"):
                    self.tensorboard.add_scalar(f"train/{key}", value, iteration)
                elif key != "time":
                    self.tensorboard.add_scalar(f"val/{key}", value, iteration)
            self.tensorboard.flush()
        self._write_csv()

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for iteration in sorted(self.rows):
            row = {"iteration": iteration}
            row.update({key: f"{value:.6g}" for key, value in self.rows[iteration].items()})
            writer.writerow(row)
        atomic_write_bytes(self.run_dir / METRICS_CSV, buffer.getvalue().encode("utf-8"))

    def plot(self) -> None:
        """Write ``curves.png``: training loss and validation PSNR against the iteration."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        figure = Figure(figsize=(10, 4), dpi=100)
        loss_ax, psnr_ax = figure.subplots(1, 2)
        iterations = sorted(self.rows)
        points = [(it, self.rows[it]["loss"]) for it in iterations if _finite(self.rows[it].get("loss"))]
        if points:
            loss_ax.plot(*zip(*points, strict=True), lw=1)
            values = [v for _, v in points]
            if min(values) > 0 and max(values) > 10 * min(values):
                loss_ax.set_yscale("log")
        loss_ax.set(title="training loss", xlabel="iteration", ylabel="L1 loss")
        for name in self.val_names:
            key = f"{name}_psnr"
            points = [(it, self.rows[it][key]) for it in iterations if _finite(self.rows[it].get(key))]
            if points:
                psnr_ax.plot(*zip(*points, strict=True), marker="o", ms=3, lw=1, label=name)
        if psnr_ax.lines:  # none before the first validation
            psnr_ax.legend(loc="lower right")
        psnr_ax.set(title="validation PSNR (Y)", xlabel="iteration", ylabel="PSNR (dB)")
        for ax in (loss_ax, psnr_ax):
            ax.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        atomic_write_bytes(self.run_dir / PLOT_FILE, buffer.getvalue())

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.tensorboard is not None:
            self.tensorboard.close()


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _tensorboard_writer(folder: Path, resume_from: int | None) -> Any:
    """A ``SummaryWriter`` (events after ``resume_from`` purged), or ``None`` without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=None if resume_from is None else resume_from + 1)

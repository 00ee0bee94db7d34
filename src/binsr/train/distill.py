"""Distillation from a trained full-precision twin (ReActNet's second step, BBCU-style training).

The teacher is a binsr checkpoint (:func:`binsr.checkpoint.load_model`), usually the ``binary: false``
twin of the student: same family, same module names, identity binarizers. The loss added to the L1
reconstruction loss is::

    output_weight · mean|SR_student − SR_teacher|
      + feature_weight · mean over matched modules m of  mean|F_s(m) − F_t(m)| / mean|F_t(m)|

Features are the outputs of the modules whose names match ``distill.features`` in *both* networks,
recorded with forward hooks. A pattern is a dotted module name where ``*`` stands for one name
component (``body.*`` = every direct child of ``body``, i.e. every residual block of the ResNet-style
models). Each feature term is normalised by the teacher's mean magnitude, so BBCU's residual-alignment
factor ``k`` does not change the meaning of ``feature_weight``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from binsr.checkpoint import load_model
from binsr.errors import BinsrError

__all__ = ["Distiller", "FeatureTap", "match_module_names"]


def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("[^.]*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


def match_module_names(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of ``model``'s sub-modules matching any of ``patterns`` (``*`` = one name component)."""
    compiled = [_pattern(p) for p in patterns]
    return [name for name, _ in model.named_modules() if name and any(p.match(name) for p in compiled)]


class FeatureTap:
    """Forward hooks recording the outputs of the named sub-modules of ``model`` in :attr:`features`."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._recorder(name)) for name in names]

    def _recorder(self, name: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self.features[name] = output

        return record

    def pop(self) -> dict[str, torch.Tensor]:
        """The features recorded since the last call (and forget them)."""
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


class Distiller:
    """The distillation loss of a student against a frozen teacher checkpoint.

    Args:
        student: the model being trained (hooks are attached to it; wrap it in DDP afterwards).
        settings: a resolved ``train.distill`` section (``teacher``, ``output_weight``,
            ``feature_weight``, ``features``).
        scale: the run's scale; the teacher must have the same.
        device: where the teacher runs.
    """

    def __init__(
        self, student: nn.Module, settings: Mapping[str, Any], scale: int, device: torch.device
    ) -> None:
        self.teacher = load_model(settings["teacher"], map_location=device).requires_grad_(False).eval()
        teacher_scale = self.teacher.config["scale"]
        if teacher_scale != scale:
            raise BinsrError(
                f"distillation teacher {settings['teacher']} is x{teacher_scale}, the run is x{scale}"
            )
        self.output_weight = float(settings["output_weight"])
        self.feature_weight = float(settings["feature_weight"])
        self.student_tap: FeatureTap | None = None
        self.teacher_tap: FeatureTap | None = None
        if self.feature_weight > 0:
            names = match_module_names(student, settings["features"])
            teacher_names = set(match_module_names(self.teacher, settings["features"]))
            names = [name for name in names if name in teacher_names]
            if not names:
                raise BinsrError(
                    f"config key train.distill.features {settings['features']} matches no module present in "
                    "both the student and the teacher"
                )
            self.names = names
            self.student_tap = FeatureTap(student, names)
            self.teacher_tap = FeatureTap(self.teacher, names)

    def loss(self, lr: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
        """The distillation terms for the student's output ``sr`` on ``lr`` (call after its forward)."""
        with torch.no_grad():
            target = self.teacher(lr)
        total = self.output_weight * (sr - target).abs().mean()
        if self.student_tap is not None and self.teacher_tap is not None:
            student, teacher = self.student_tap.pop(), self.teacher_tap.pop()
            terms = []
            for name in self.names:
                if name not in student or name not in teacher:
                    continue
                fs, ft = student[name], teacher[name]
                if fs.shape != ft.shape:
                    raise BinsrError(
                        f"cannot distil module {name}: student output {tuple(fs.shape)}, "
                        f"teacher {tuple(ft.shape)}"
                    )
                terms.append((fs - ft).abs().mean() / ft.abs().mean().clamp_min(1e-8))
            if terms:
                total = total + self.feature_weight * torch.stack(terms).mean()
        return total

"""A tiny registered SR model for the checkpoint, inference and upscale tests (no dependency on the zoo).

Importing this module registers ``test_tiny_sr`` once; :data:`LAUNCHER` runs the ``binsr`` CLI in a
subprocess with the model registered, so command-line tests can load its checkpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from binsr.models import list_models, register_model

NAME = "test_tiny_sr"
TESTS_DIR = Path(__file__).resolve().parent
LAUNCHER = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import tiny_models; "
    "from binsr.cli import main; sys.exit(main(sys.argv[1:]))",
]


class TinySR(nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3 (dilation 2) -> pixel shuffle, plus a bilinear global skip."""

    def __init__(self, scale: int, n_feats: int = 8) -> None:
        super().__init__()
        self.scale = scale
        self.config = {"name": NAME, "scale": scale, "kwargs": {"n_feats": n_feats}}
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = nn.Conv2d(n_feats, 3 * scale * scale, 3, padding=2, dilation=2)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return skip + 0.1 * self.shuffle(self.body(torch.relu(self.head(x))))


if NAME not in list_models():

    @register_model(NAME)
    def test_tiny_sr(scale: int = 4, n_feats: int = 8) -> nn.Module:
        """The tiny test model."""
        return TinySR(scale, n_feats=n_feats)


def tiny_model(scale: int = 2, n_feats: int = 8, seed: int = 0) -> nn.Module:
    """A :class:`TinySR` with reproducible random weights, in eval mode."""
    torch.manual_seed(seed)
    model = TinySR(scale, n_feats=n_feats)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    return model.eval()

"""Re-estimating BatchNorm statistics (:mod:`binsr.train.batchnorm`): the cumulative average it keeps."""

from __future__ import annotations

import torch
from torch import nn

from binsr.train.batchnorm import has_batchnorm, recalibrate_batchnorm


def test_statistics_are_the_average_over_the_batches_and_the_mode_is_restored() -> None:
    torch.manual_seed(0)
    layer = nn.BatchNorm2d(3, momentum=0.1)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), layer).eval()
    layer.running_mean.fill_(5.0)  # stale statistics, as copied from another network
    batches = [torch.randn(4, 3, 5, 5) * (i + 1) + i for i in range(3)]

    assert recalibrate_batchnorm(model, batches)

    with torch.no_grad():
        features = [model[0](b) for b in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    expected_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]).mean(0)
    torch.testing.assert_close(layer.running_mean, expected_mean)
    torch.testing.assert_close(layer.running_var, expected_var)
    assert int(layer.num_batches_tracked) == 3
    assert layer.momentum == 0.1 and not model.training  # restored


def test_a_model_without_batchnorm_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not has_batchnorm(model)
    assert not recalibrate_batchnorm(model, [torch.randn(2, 3, 4, 4)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

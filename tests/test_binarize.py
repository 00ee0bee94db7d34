"""Tests for binsr.binarize: surrogate forwards and gradients, schedules, weight binarizers, registries."""

from __future__ import annotations

import math

import pytest
import torch

from binsr.binarize import (
    ActivationBinarizer,
    LearnableThreshold,
    WeightBinarizer,
    get_activation_binarizer,
    get_weight_binarizer,
    list_activation_binarizers,
    list_weight_binarizers,
    register_activation_binarizer,
)
from binsr.errors import BinsrError

EPS = 1e-6
# Kinks, clip edges (just inside/outside ±1), zero, and a dense grid, in float64.
POINTS = torch.cat(
    [
        torch.tensor([-2.0, -1 - EPS, -1.0, -1 + EPS, -0.5, -EPS, 0.0, EPS, 0.5, 1 - EPS, 1.0, 1 + EPS, 2.0]),
        torch.linspace(-3, 3, 241),
    ]
).double()


def _bump(x: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    return (x.abs() <= limit).double()


def _fda_formula(x: torch.Tensor, omega: float, n: int) -> torch.Tensor:
    total = torch.zeros_like(x)
    for i in range(n + 1):
        total += torch.cos((2 * i + 1) * omega * x)
    return 4 * omega / math.pi * total * _bump(x)


# name, constructor kwargs, expected derivative (written out independently of the implementation)
SURROGATES = [
    ("ste", {}, lambda x: torch.ones_like(x)),
    ("clipped_ste", {}, lambda x: _bump(x)),
    ("clipped_ste", {"clip_value": 0.5}, lambda x: _bump(x, 0.5)),
    ("approx_sign", {}, lambda x: torch.where(x.abs() <= 1, 2 - 2 * x.abs(), torch.zeros_like(x))),
    ("e2fif", {}, lambda x: torch.clamp(2 - (2 * x).abs(), min=0)),
    ("swish_sign", {}, lambda x: 5 * (2 - 5 * x * torch.tanh(5 * x / 2)) / (1 + torch.cosh(5 * x))),
    ("swish_sign", {"beta": 2.0}, lambda x: 2 * (2 - 2 * x * torch.tanh(x)) / (1 + torch.cosh(2 * x))),
    ("ede", {}, lambda x: 1000 * 1e-3 * (1 - torch.tanh(1e-3 * x) ** 2)),  # progress 0: t=1e-3, k=1000
    ("fda", {}, lambda x: _fda_formula(x, 0.1, 9)),
    ("fda", {"omega": math.pi / 2, "n_start": 3, "n_end": 3}, lambda x: _fda_formula(x, math.pi / 2, 3)),
]


@pytest.mark.parametrize(("name", "kwargs", "formula"), SURROGATES)
def test_surrogate_gradient_matches_formula(name, kwargs, formula):
    x = POINTS.clone().requires_grad_(True)
    get_activation_binarizer(name, **kwargs)(x).sum().backward()
    torch.testing.assert_close(x.grad, formula(POINTS), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(list_activation_binarizers()) - {"identity"}))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sign_forward_is_exactly_plus_minus_one(name, dtype):
    binarizer = get_activation_binarizer(name)
    x = torch.cat([POINTS, torch.tensor([0.0, -0.0, 1e-30, -1e-30])]).to(dtype)
    y = binarizer(x)
    assert y.dtype == dtype
    assert torch.equal(y, torch.where(x >= 0, 1.0, -1.0).to(dtype))
    assert binarizer(torch.zeros(3, dtype=dtype)).tolist() == [1.0, 1.0, 1.0]  # sign(0) = +1
    assert binarizer.precision == 1
    assert binarizer.pad_value == float(binarizer(torch.zeros((), dtype=dtype)))


def test_identity_activation():
    binarizer = get_activation_binarizer("identity")
    x = POINTS.clone().requires_grad_(True)
    y = binarizer(x)
    y.sum().backward()
    assert binarizer.precision == 32
    assert binarizer.pad_value == 0.0
    assert torch.equal(y, POINTS)
    assert torch.equal(x.grad, torch.ones_like(POINTS))


def test_ede_schedule():
    ede = get_activation_binarizer("ede")
    assert ede.t == pytest.approx(1e-3) and ede.k == pytest.approx(1e3)
    ede.set_progress(0.5)
    assert ede.t == pytest.approx(10 ** ((-3 + 1) / 2)) and ede.k == pytest.approx(10.0)
    ede.set_progress(1.0)
    assert ede.t == pytest.approx(10.0) and ede.k == 1.0
    x = POINTS.clone().requires_grad_(True)
    ede(x).sum().backward()
    torch.testing.assert_close(x.grad, 10 * (1 - torch.tanh(10 * POINTS) ** 2), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        ede.set_progress(1.5)


def test_fda_schedule_and_progress_noop():
    fda = get_activation_binarizer("fda")
    assert fda.n == 9
    fda.set_progress(0.5)
    assert fda.n == 13
    fda.set_progress(1.0)
    assert fda.n == 18
    approx = get_activation_binarizer("approx_sign")
    approx.set_progress(0.7)  # no schedule: a no-op
    x = POINTS.clone().requires_grad_(True)
    approx(x).sum().backward()
    assert x.grad.max() == 2.0


def test_learnable_threshold():
    threshold = LearnableThreshold(3)
    assert torch.equal(threshold.bias, torch.zeros(3))
    with torch.no_grad():
        threshold.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    x = torch.zeros(2, 3, 4, 5)
    y = threshold(x)
    assert torch.equal(y[:, 1], torch.full((2, 4, 5), -2.0))
    y.sum().backward()
    assert torch.equal(threshold.bias.grad, torch.full((3,), 40.0))


def test_unknown_names_raise_binsr_error():
    with pytest.raises(BinsrError, match="approx_sign") as info:
        get_activation_binarizer("nope")
    assert "\n" not in str(info.value)
    with pytest.raises(BinsrError, match="xnor"):
        get_weight_binarizer("nope", out_channels=4)


def test_instances_pass_through_and_registry_rejects_duplicates():
    binarizer = get_activation_binarizer("ste")
    assert get_activation_binarizer(binarizer) is binarizer
    weights = get_weight_binarizer("xnor", 4)
    assert get_weight_binarizer(weights, 4) is weights
    with pytest.raises(TypeError):
        get_weight_binarizer(weights, 5)
    with pytest.raises(ValueError, match="twice"):
        register_activation_binarizer("ste")(ActivationBinarizer)


BINARY_WEIGHTS = sorted(set(list_weight_binarizers()) - {"identity"})


def _weight(out: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(out, 5, 3, 3, generator=generator) * 0.7


@pytest.mark.parametrize("name", BINARY_WEIGHTS)
def test_weight_binarizer_two_values_per_channel_and_scale_and_sign(name):
    weight = _weight()
    binarizer = get_weight_binarizer(name, out_channels=6)
    assert isinstance(binarizer, WeightBinarizer) and binarizer.precision == 1
    effective = binarizer(weight)
    alpha, sign = binarizer.scale_and_sign(weight)
    assert alpha.shape == (6,) and sign.shape == weight.shape
    assert set(sign.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(effective, alpha.view(-1, 1, 1, 1) * sign)
    for o in range(6):
        assert set(effective[o].unique().tolist()) <= {alpha[o].item(), -alpha[o].item()}
    assert (alpha > 0).all()


@pytest.mark.parametrize("name", ["xnor", "xnor_learnable", "ma2019"])
def test_scale_starts_at_mean_abs_and_sign_of_weight(name):
    weight = _weight()
    alpha, sign = get_weight_binarizer(name, out_channels=6).scale_and_sign(weight)
    torch.testing.assert_close(alpha, weight.abs().mean((1, 2, 3)))
    assert torch.equal(sign, torch.where(weight >= 0, 1.0, -1.0))


def test_xnor_gradient_is_clipped_ste_and_scale_detached():
    weight = _weight()
    weight[0, 0, 0, 0] = 1.5
    weight[0, 0, 0, 1] = 1.0
    weight.requires_grad_(True)
    upstream = torch.randn(weight.shape)
    (get_weight_binarizer("xnor", 6)(weight) * upstream).sum().backward()
    torch.testing.assert_close(weight.grad, upstream * (weight.detach().abs() <= 1))
    assert weight.grad[0, 0, 0, 0] == 0 and weight.grad[0, 0, 0, 1] == upstream[0, 0, 0, 1]


@pytest.mark.parametrize(("name", "clipped"), [("xnor_learnable", True), ("ma2019", False)])
def test_learnable_scale_gradients(name, clipped):
    weight = (_weight() * 2).requires_grad_(True)
    binarizer = get_weight_binarizer(name, 6)
    upstream = torch.randn(weight.shape)
    (binarizer(weight) * upstream).sum().backward()
    sign = torch.where(weight.detach() >= 0, 1.0, -1.0)
    torch.testing.assert_close(binarizer.alpha.grad, (sign * upstream).sum((1, 2, 3)))
    mask = (weight.detach().abs() <= 1) if clipped else torch.ones_like(weight, dtype=torch.bool)
    torch.testing.assert_close(weight.grad, upstream * mask)


def test_learnable_scale_initialisation_is_remembered():
    weight = _weight()
    binarizer = get_weight_binarizer("xnor_learnable", 6, weight=weight)
    torch.testing.assert_close(binarizer.alpha.data, weight.abs().mean((1, 2, 3)))
    with torch.no_grad():
        binarizer.alpha.fill_(3.0)
    binarizer(weight * 10)  # already initialised: the scale is not reset
    assert torch.equal(binarizer.alpha.data, torch.full((6,), 3.0))
    restored = get_weight_binarizer("xnor_learnable", 6)
    restored.load_state_dict(binarizer.state_dict())
    restored(weight)
    assert torch.equal(restored.alpha.data, torch.full((6,), 3.0))


def test_libra_pb_balanced_power_of_two_scale():
    weight = (_weight() + 0.3).requires_grad_(True)
    binarizer = get_weight_binarizer("libra_pb", 6)
    alpha, sign = binarizer.scale_and_sign(weight)
    assert torch.equal(alpha, torch.exp2(torch.log2(alpha).round()))
    flat = weight.detach().flatten(1)
    standardised = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)
    assert torch.equal(sign.flatten(1), torch.where(standardised >= 0, 1.0, -1.0))
    expected = torch.exp2(torch.log2(standardised.abs().mean(1)).round())
    assert torch.equal(alpha, expected)
    binarizer(weight).pow(2).sum().backward()
    assert weight.grad.abs().sum() > 0


def test_identity_weight():
    weight = _weight().requires_grad_(True)
    binarizer = get_weight_binarizer("identity", 6)
    assert binarizer.precision == 32
    assert binarizer(weight) is weight

"""The model zoo: every model runs at x2/x3/x4, twins match, configs rebuild, BBCU's structure."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from binsr.errors import BinsrError
from binsr.layers import Attention, BinaryConv2d
from binsr.models import SRModel, create_model, list_models, model_factory

ZOO = [
    "bbcu_l",
    "bbcu_m",
    "bireal",
    "bnn",
    "btm",
    "e2fif",
    "edsr_baseline",
    "irnet",
    "ma2019",
    "ours",
    "reactnet",
    "srresnet",
]
BINARY = [name for name in ZOO if "binary" in inspect.signature(model_factory(name)).parameters]
TINY = {"n_feats": 8, "n_blocks": 2}


def conv_shapes(model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
    return [
        (n, type(m).__name__, tuple(m.weight.shape))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]


def test_zoo_is_registered() -> None:
    assert set(ZOO) <= set(list_models())
    assert set(BINARY) == set(ZOO) - {"srresnet", "edsr_baseline"}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ZOO)
def test_forward_backward_shape(name: str, scale: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, scale=scale, **TINY)
    x = torch.rand(2, 3, 12, 10, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 3, 12 * scale, 10 * scale)
    y.abs().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for n, p in model.named_parameters() if "conv_first" in n)


@pytest.mark.parametrize("name", BINARY)
def test_binary_twin_has_same_modules_and_no_binarizer(name: str) -> None:
    binary = create_model(name, scale=2, **TINY)
    twin = create_model(name, scale=2, binary=False, **TINY)
    assert conv_shapes(binary) == conv_shapes(twin)

    # Everything but what the binarizers own (e.g. Ma et al.'s learnable weight scales) is shared.
    def shapes(m: nn.Module) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in m.state_dict().items() if "_binarizer." not in k}

    assert shapes(binary) == shapes(twin)
    assert any(m.binary_weight for m in binary.modules() if isinstance(m, BinaryConv2d))
    for module in twin.modules():
        if isinstance(module, BinaryConv2d):
            assert module.input_precision == 32 and module.weight_precision == 32
    assert twin(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)


@pytest.mark.parametrize("name", ZOO)
def test_config_rebuilds_model(name: str) -> None:
    model = create_model(name, scale=3, **TINY)
    assert isinstance(model, SRModel) and model.scale == 3
    config = model.config
    assert config["name"] == name and config["scale"] == 3
    assert config["kwargs"]["n_feats"] == 8 and config["kwargs"]["n_blocks"] == 2
    rebuilt = create_model(config["name"], scale=config["scale"], **config["kwargs"])
    rebuilt.load_state_dict(model.state_dict())


def test_unknown_option_is_a_binsr_error() -> None:
    with pytest.raises(BinsrError, match="n_feets"):
        create_model("bbcu_l", scale=2, n_feets=8)
    with pytest.raises(BinsrError):
        create_model("srresnet", scale=2, binary=True)


def test_bbcu_structure_follows_released_code() -> None:
    """BBCU-L: 2 binary units per block, FP head/upsampler/tail; BBCU-M: binary upsampler and conv_hr."""
    large = create_model("bbcu_l", scale=4, n_feats=16, n_blocks=3)
    binary = [n for n, m in large.named_modules() if isinstance(m, BinaryConv2d) and m.binary]
    assert len(binary) == 6 and all(n.startswith("body.") for n in binary)
    assert large.alignment == pytest.approx(130 * 16 / 64)
    assert type(large.conv_hr) is nn.Conv2d and len(large.upsampler) == 2
    medium = create_model("bbcu_m", scale=4, n_feats=16, n_blocks=3)
    binary = [n for n, m in medium.named_modules() if isinstance(m, BinaryConv2d) and m.binary]
    assert len(binary) == 6 + 2 + 1
    assert medium.upsampler[0].unit.conv.weight.shape == (64, 16, 3, 3)
    assert type(medium.conv_first) is nn.Conv2d and type(medium.conv_last) is nn.Conv2d
    assert create_model("bbcu_l", scale=2, k=1.0).alignment == 1.0
    unit = large.body[0].unit1
    assert not isinstance(unit.conv.threshold, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in large.modules())


def test_bbcu_unit_is_rprelu_of_binconv_plus_identity() -> None:
    torch.manual_seed(0)
    unit = create_model("bbcu_l", scale=2, n_feats=8, n_blocks=1).body[0].unit1
    x = torch.randn(1, 8, 5, 5)
    assert torch.allclose(unit(x), unit.act(unit.conv(x)) + x)


def test_ours_switches() -> None:
    base = create_model("ours", scale=2, **TINY)
    assert any(isinstance(m, Attention) and type(m).__name__ != "NoAttention" for m in base.modules())
    assert base.body[0].unit1.conv.weight_binarizer.__class__.__name__ == "Ma2019Weight"
    plain = create_model(
        "ours", scale=2, attention=None, weight_binarizer="xnor", residual_alignment=None, **TINY
    )
    assert conv_shapes(plain) == conv_shapes(create_model("bbcu_l", scale=2, **TINY))
    variant = create_model(
        "ours",
        scale=2,
        surrogate="swish_sign",
        learnable_threshold=False,
        rprelu=False,
        attention="channel",
        residual_alignment=1.0,
        binary_upsampler=True,
        **TINY,
    )
    conv = variant.body[0].unit1.conv
    assert isinstance(conv.threshold, nn.Identity) and type(conv.input_binarizer).__name__ == "SwishSign"
    assert isinstance(variant.body[0].unit1.act, nn.Identity) and variant.alignment == 1.0
    assert variant.upsampler[0].unit.conv.binary
    assert variant(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)


def test_ma2019_binarizes_weights_only() -> None:
    model = create_model("ma2019", scale=2, **TINY)
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == 4 and all(c.binary_weight and not c.binary_input for c in convs)


def test_set_progress_reaches_every_binary_conv() -> None:
    model = create_model("irnet", scale=2, **TINY)
    model.set_progress(1.0)
    assert all(m.input_binarizer.t == pytest.approx(10.0) for m in model.binary_convs())


def _ours_ingredients() -> list[dict[str, str]]:
    from binsr.binarize import list_activation_binarizers, list_weight_binarizers
    from binsr.layers import list_attention

    return (
        [{"surrogate": name} for name in list_activation_binarizers() if name != "identity"]
        + [{"weight_binarizer": name} for name in list_weight_binarizers() if name != "identity"]
        + [{"attention": name} for name in list_attention()]
    )


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(name, {}) for name in ZOO] + [("ours", kwargs) for kwargs in _ours_ingredients()],
    ids=lambda value: value if isinstance(value, str) else "-".join(value.values()),
)
def test_forward_reads_no_tensor_value(name: str, kwargs: dict[str, str]) -> None:
    """After its first call a model's forward has no data-dependent Python branch: it traces as one
    graph. On a GPU a branch on a tensor's value waits for the device queue, every call."""
    import torch._dynamo as dynamo

    net = create_model(name, scale=2, **TINY, **kwargs)
    x = torch.rand(1, 3, 6, 6)
    net(x)  # lazy initialisations (e.g. learnable weight scales) happen here, once
    dynamo.reset()
    explained = dynamo.explain(net)(x)
    reasons = [reason.reason.splitlines()[0] for reason in explained.break_reasons]
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons

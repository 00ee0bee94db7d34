"""Tests for binsr.layers: BinaryConv2d (FP equivalence, packed XNOR-popcount exactness, training),
RPReLU and the attention modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from binsr.binarize import list_weight_binarizers
from binsr.errors import BinsrError
from binsr.layers import BinaryConv2d, RPReLU, create_attention, list_attention

BINARY_WEIGHTS = sorted(set(list_weight_binarizers()) - {"identity"})


def test_identity_binarizers_equal_nn_conv2d():
    torch.manual_seed(0)
    for kernel, stride in [(3, 1), (3, 2), (1, 1), (5, 1)]:
        conv = BinaryConv2d(
            7,
            5,
            kernel,
            stride,
            bias=True,
            input_binarizer="identity",
            weight_binarizer="identity",
            learnable_threshold=False,
        )
        reference = nn.Conv2d(7, 5, kernel, stride, padding=kernel // 2, bias=True)
        reference.load_state_dict(conv.state_dict())
        x = torch.randn(2, 7, 9, 11)
        torch.testing.assert_close(conv(x), reference(x))
        assert not conv.binary_input and not conv.binary_weight and not conv.binary
        assert (conv.input_precision, conv.weight_precision) == (32, 32)


def test_drop_in_attributes_and_properties():
    conv = BinaryConv2d(4, 6, 3, stride=2)
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.shape == (6, 4, 3, 3) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (4, 6)
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert conv.binary and conv.binary_input and conv.binary_weight
    assert (conv.input_precision, conv.weight_precision) == (1, 1)
    assert BinaryConv2d(4, 6, 5, padding=0).padding == (0, 0)
    half = BinaryConv2d(4, 6, 3, weight_binarizer="identity")
    assert half.binary_input and not half.binary_weight and not half.binary
    ede = BinaryConv2d(4, 6, 3, input_binarizer="ede")
    ede.set_progress(1.0)
    assert ede.input_binarizer.t == pytest.approx(10.0)


# --- the padding convention, checked against an integer XNOR-popcount convolution -------------------


def _pack_channels(bits: np.ndarray) -> np.ndarray:
    """Pack bools ``[..., C]`` into uint64 words ``[..., ceil(C / 64)]``.

    Channel c is bit c % 64 of word c // 64; unused high bits stay 0.
    """
    words = np.zeros((*bits.shape[:-1], -(-bits.shape[-1] // 64)), dtype=np.uint64)
    for c in range(bits.shape[-1]):
        words[..., c // 64] |= bits[..., c].astype(np.uint64) << np.uint64(c % 64)
    return words


def _xnor_popcount_conv(negative_input: np.ndarray, negative_weight: np.ndarray, stride: int) -> np.ndarray:
    """Integer ``Σ a·w`` for ``a, w ∈ {±1}`` from sign bits (1 = −1): input ``[N, C, H, W]``, weight
    ``[O, C, k, k]``, padding ``k // 2`` of zero bits (+1), ``dot = K − 2·popcount(a XOR w)``."""
    out, channels, k, _ = negative_weight.shape
    pad = k // 2
    a = _pack_channels(negative_input.transpose(0, 2, 3, 1))  # [N, H, W, words]
    a = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # zero words = +1 everywhere on the border
    w = _pack_channels(negative_weight.transpose(0, 2, 3, 1))  # [O, k, k, words]
    h_out = (negative_input.shape[2] + 2 * pad - k) // stride + 1
    w_out = (negative_input.shape[3] + 2 * pad - k) // stride + 1
    mismatches = np.zeros((a.shape[0], h_out, w_out, out), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            window = a[:, dy : dy + stride * h_out : stride, dx : dx + stride * w_out : stride]
            xor = window[:, :, :, None, :] ^ w[None, None, None, :, dy, dx, :]
            mismatches += np.bitwise_count(xor).sum(-1, dtype=np.int64)
    return (channels * k * k - 2 * mismatches).transpose(0, 3, 1, 2)  # [N, O, H', W']


@pytest.mark.parametrize("weight_binarizer", BINARY_WEIGHTS)
@pytest.mark.parametrize(
    ("channels", "stride", "size"), [(1, 1, (5, 7)), (3, 2, (7, 7)), (64, 1, (5, 3)), (130, 2, (9, 5))]
)
def test_padding_convention_matches_packed_xnor_popcount(weight_binarizer, channels, stride, size):
    torch.manual_seed(channels + stride)
    conv = BinaryConv2d(channels, 5, 3, stride, weight_binarizer=weight_binarizer)
    with torch.no_grad():
        conv.threshold.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, channels, *size)
    x[0, 0, 0, 0] = -conv.threshold.bias[0]  # x + b == 0 exactly: must binarize to +1
    y = conv(x).detach()

    alpha, sign = conv.weight_binarizer.scale_and_sign(conv.weight)
    negative_input = (x + conv.threshold.bias.detach().view(1, -1, 1, 1) < 0).numpy()
    dot = torch.from_numpy(_xnor_popcount_conv(negative_input, (sign < 0).numpy(), stride))
    ratio = y / alpha.view(1, -1, 1, 1)
    assert torch.equal(ratio.round().long(), dot)
    assert (ratio - dot).abs().max() < 1e-3
    if weight_binarizer == "libra_pb":  # power-of-two scale: float32 arithmetic is exact
        assert torch.equal(y, alpha.view(1, -1, 1, 1) * dot.float())


def test_padding_is_plus_one_for_sign_and_zero_for_identity():
    ones = torch.ones(1, 1, 3, 3)
    x = torch.full((1, 1, 1, 1), -2.0)
    binary = BinaryConv2d(1, 1, 3, weight_binarizer="identity", learnable_threshold=False)
    plain = BinaryConv2d(1, 1, 3, input_binarizer="identity", weight_binarizer="identity")
    with torch.no_grad():
        binary.weight.copy_(ones)
        plain.weight.copy_(ones)
    assert binary(x).item() == 8 * 1 - 1  # eight border taps of +1, the centre sign(−2) = −1
    assert plain(x).item() == -2.0  # zero padding


@pytest.mark.parametrize("weight_binarizer", BINARY_WEIGHTS)
def test_training_keeps_two_values_per_channel_and_reaches_all_parameters(weight_binarizer):
    torch.manual_seed(1)
    conv = BinaryConv2d(6, 4, 3, bias=True, weight_binarizer=weight_binarizer)
    target = nn.Conv2d(6, 4, 3, padding=1)
    optimizer = torch.optim.Adam(conv.parameters(), lr=1e-2)
    x = torch.randn(4, 6, 8, 8)
    with torch.no_grad():
        y_target = target(x)
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.mse_loss(conv(x), y_target)
        loss.backward()
        for name, parameter in conv.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        optimizer.step()
    effective = conv.effective_weight().detach()
    alpha, sign = conv.weight_binarizer.scale_and_sign(conv.weight)
    assert torch.equal(effective, alpha.view(-1, 1, 1, 1) * sign)
    for o in range(4):
        assert effective[o].abs().unique().numel() == 1
        assert effective[o].unique().numel() <= 2


def test_rprelu_formula():
    layer = RPReLU(3)
    assert torch.equal(layer.slope, torch.full((3,), 0.25))
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([0.5, -1.0, 0.0]))
        layer.zeta.copy_(torch.tensor([1.0, 2.0, -3.0]))
        layer.slope.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(2, 3, 4, 5)
    gamma, zeta, slope = (p.view(1, -1, 1, 1) for p in (layer.gamma, layer.zeta, layer.slope))
    shifted = x - gamma
    expected = torch.where(shifted > 0, shifted, slope * shifted) + zeta
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("name", [*list_attention(), None])
def test_attention_keeps_shape_and_is_full_precision_convs(name):
    torch.manual_seed(2)
    module = create_attention(name, 32)
    x, identity = torch.randn(2, 32, 7, 9), torch.randn(2, 32, 7, 9)
    assert module(x).shape == x.shape
    assert module(x, identity=identity).shape == x.shape
    conv_parameters = sum(
        p.numel() for m in module.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()
    )
    assert conv_parameters == sum(p.numel() for p in module.parameters())


def test_attention_factory_details():
    assert isinstance(create_attention("none", 8), nn.Identity)
    assert create_attention("channel", 64).squeeze.out_channels == 4
    assert create_attention("channel", 16).squeeze.out_channels == 4  # min 4 hidden
    with pytest.raises(BinsrError, match="channel"):
        create_attention("nope", 8)


def test_ir2net_restriction_and_recovery():
    module = create_attention("ir2net", 8)
    x, identity = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    keep = module.restriction_map(x)
    torch.testing.assert_close(keep, torch.full_like(keep, torch.sigmoid(torch.tensor(2.0)).item()))
    torch.testing.assert_close(module(x, identity=identity), x * keep)  # ghost starts at zero
    with torch.no_grad():
        module.ghost.weight.zero_()
        module.ghost.weight[:, 0, 1, 1] = 1.0  # ghost = identity map
    torch.testing.assert_close(module(x, identity=identity), x * keep + (1 - keep) * identity)
    x.requires_grad_(True)
    module(x).sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    assert x.grad is not None
    # Scale-invariant map: multiplying the features (BBCU's residual alignment k) changes nothing.
    torch.testing.assert_close(module.restriction_map(130 * x.detach()), module.restriction_map(x.detach()))

"""ASPP and DepthwiseSeparableConv2d: shapes, pooling window, parameter counts, names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.layers import ASPP, DepthwiseSeparableConv2d


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("norm", ["", "BN"])
def test_aspp_keeps_the_spatial_size(separable, norm):
    torch.manual_seed(0)
    aspp = ASPP(6, 4, [1, 2, 3], norm=norm, activation=nn.ReLU(),
                use_depthwise_separable_conv=separable).eval()
    for h, w in [(7, 9), (1, 1), (16, 5)]:
        out = aspp(torch.randn(2, 6, h, w))
        assert out.shape == (2, 4, h, w)
        assert torch.isfinite(out).all()


def test_aspp_state_dict_names_and_biases():
    aspp = ASPP(6, 4, [1, 2, 3], norm="BN", activation=nn.ReLU())
    names = set(aspp.state_dict())
    # 1x1 branch, 3 atrous branches and the projection have a norm and no bias; the pooled
    # branch's 1x1 conv has a bias and no norm.
    for i in range(4):
        assert f"convs.{i}.weight" in names and f"convs.{i}.norm.running_var" in names
        assert f"convs.{i}.bias" not in names
    assert {"convs.4.1.weight", "convs.4.1.bias", "project.weight", "project.norm.weight"} <= names
    assert aspp.project.weight.shape == (4, 20, 1, 1)
    assert [aspp.convs[i].dilation for i in (1, 2, 3)] == [(1, 1), (2, 2), (3, 3)]
    no_norm = ASPP(6, 4, [1, 2, 3], norm="", activation=nn.ReLU())
    assert no_norm.convs[0].bias is not None and no_norm.project.bias is not None
    separable = ASPP(6, 4, [1, 2, 3], norm="BN", activation=nn.ReLU(), use_depthwise_separable_conv=True)
    assert {"convs.1.depthwise.weight", "convs.1.pointwise.norm.weight"} <= set(separable.state_dict())
    assert separable.convs[2].depthwise.dilation == (2, 2) and separable.convs[2].depthwise.groups == 6


def test_global_pooling_branch_is_constant_over_the_map():
    aspp = ASPP(3, 2, [1, 2, 3], norm="", activation=nn.Identity())
    x = torch.randn(1, 3, 6, 8)
    pooled = aspp.convs[4](x)
    assert pooled.shape == (1, 2, 1, 1)
    expected = aspp.convs[4][1](x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(pooled, expected)


def test_pool_kernel_size_pools_a_window_and_must_divide_the_input():
    aspp = ASPP(3, 2, [1, 2, 3], norm="", activation=nn.Identity(), pool_kernel_size=(2, 4))
    assert isinstance(aspp.convs[4][0], nn.AvgPool2d)
    x = torch.randn(1, 3, 4, 8)
    # A (2, 4) window at stride 1 on a 4 x 8 map: (4-2+1) x (8-4+1) = 3 x 5 windows.
    pooled = aspp.convs[4](x)
    assert pooled.shape == (1, 2, 3, 5)
    # At the training size (the window is the whole map) it is global pooling.
    full = ASPP(3, 2, [1, 2, 3], norm="", activation=nn.Identity(), pool_kernel_size=(4, 8))
    full.load_state_dict(aspp.state_dict())
    glob = ASPP(3, 2, [1, 2, 3], norm="", activation=nn.Identity())
    glob.load_state_dict(aspp.state_dict())
    torch.testing.assert_close(full(x), glob(x))
    assert not torch.allclose(aspp(x), glob(x))
    assert aspp(x).shape == (1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"must divide the input size \(5, 8\)"):
        aspp(torch.randn(1, 3, 5, 8))


def test_dropout_only_in_training():
    aspp = ASPP(3, 4, [1, 2, 3], norm="", activation=nn.ReLU(), dropout=0.5)
    x = torch.randn(1, 3, 8, 8) + 3
    aspp.eval()
    torch.testing.assert_close(aspp(x), aspp(x))
    aspp.train()
    torch.manual_seed(0)
    a = aspp(x)
    aspp.eval()
    b = aspp(x)
    assert not torch.equal(a, b)
    nonzero = b != 0
    # Kept units are scaled by 1 / (1 - p), dropped ones are 0.
    kept = (a != 0) & nonzero
    torch.testing.assert_close(a[kept], 2 * b[kept])
    assert ((a == 0) & nonzero).any()


def test_aspp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="3 dilations, got 2"):
        ASPP(3, 2, [1, 2], norm="", activation=nn.ReLU())
    with pytest.raises(ValueError, match=r"\(kh, kw\)"):
        ASPP(3, 2, [1, 2, 3], norm="", activation=nn.ReLU(), pool_kernel_size=(2,))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ASPP(3, 2, [1, 2, 3], norm="", activation=nn.ReLU())(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("cin,cout,k", [(8, 16, 3), (5, 7, 5), (4, 4, 1)])
def test_depthwise_separable_parameter_count(cin, cout, k):
    conv = DepthwiseSeparableConv2d(cin, cout, kernel_size=k, padding=k // 2)
    # depthwise: C_in filters of k x k plus C_in biases; pointwise: C_in x C_out plus C_out.
    assert n_params(conv) == cin * k * k + cin + cin * cout + cout
    assert n_params(conv) < n_params(nn.Conv2d(cin, cout, k)) or k == 1
    with_norm = DepthwiseSeparableConv2d(cin, cout, kernel_size=k, padding=k // 2,
                                         norm1="BN", norm2="BN")
    # No conv biases; BN adds a weight and a bias per channel.
    assert n_params(with_norm) == cin * k * k + 2 * cin + cin * cout + 2 * cout
    assert with_norm.depthwise.bias is None and with_norm.pointwise.bias is None


def test_depthwise_separable_is_depthwise_then_pointwise():
    torch.manual_seed(0)
    conv = DepthwiseSeparableConv2d(3, 5, kernel_size=3, padding=2, dilation=2,
                                    activation1=torch.relu, activation2=torch.tanh)
    x = torch.randn(2, 3, 9, 7)
    out = conv(x)
    assert out.shape == (2, 5, 9, 7)
    assert conv.depthwise.weight.shape == (3, 1, 3, 3) and conv.pointwise.weight.shape == (5, 3, 1, 1)
    # Channel c of the depthwise stage sees only input channel c.
    mid = torch.stack([
        torch.nn.functional.conv2d(x[:, c:c + 1], conv.depthwise.weight[c:c + 1],
                                   conv.depthwise.bias[c:c + 1], padding=2, dilation=2)[:, 0]
        for c in range(3)], dim=1).relu()
    expected = torch.tanh(torch.nn.functional.conv2d(mid, conv.pointwise.weight, conv.pointwise.bias))
    torch.testing.assert_close(out, expected)
    # MSRA init: zero biases.
    assert not conv.depthwise.bias.any() and not conv.pointwise.bias.any()

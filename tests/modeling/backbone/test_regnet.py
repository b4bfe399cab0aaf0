"""RegNet / AnyNet backbones: the published stage widths and depths, shapes, freezing, gradients,
the SE block, and detectron2's state-dict layout.

Published numbers (RegNet paper, Radosavovic et al. 2020, and pycls' model zoo): RegNetX-200MF
widths [24, 56, 152, 368], depths [1, 1, 4, 7]; RegNetX-4.0GF [80, 240, 560, 1360],
[2, 5, 14, 2]; RegNetY-4.0GF [128, 192, 512, 1088], [2, 6, 12, 2]. Parameter counts (with BN and
the 1000-class head): 22.1M and 20.6M.
"""

import pytest
import torch
from torch import nn

from golden_outputs import check_golden, fill_deterministically  # same folder
from workbench.layers import FrozenBatchNorm2d
from workbench.modeling.backbone import FPN, Backbone, LastLevelMaxPool, RegNet
from workbench.modeling.backbone.regnet import (
    SE,
    AnyNet,
    ResBasicBlock,
    ResBottleneckBlock,
    ResStem,
    SimpleStem,
    VanillaBlock,
    adjust_block_compatibility,
    conv2d,
    generate_regnet_parameters,
)

# The LazyConfig arguments of detectron2's mask_rcnn_regnet{x,y}_4gf_dds_fpn_1x.py.
REGNETX_4GF = dict(stem_class=SimpleStem, stem_width=32, block_class=ResBottleneckBlock, depth=23,
                   w_a=38.65, w_0=96, w_m=2.43, group_width=40, freeze_at=2, norm="FrozenBN",
                   out_features=["s1", "s2", "s3", "s4"])
REGNETY_4GF = dict(stem_class=SimpleStem, stem_width=32, block_class=ResBottleneckBlock, depth=22,
                   w_a=31.41, w_0=96, w_m=2.24, group_width=64, se_ratio=0.25, freeze_at=2,
                   norm="FrozenBN", out_features=["s1", "s2", "s3", "s4"])
ALL = ["stem", "s1", "s2", "s3", "s4"]


def tiny(block_class=ResBottleneckBlock, stem_class=SimpleStem, **kwargs):
    # u_j = 8, 16, 24, 32, 40, 48 -> k = round(log2(u_j / 8)) = 0, 1, 2, 2, 2, 3
    # -> widths [8, 16, 32, 64], depths [1, 1, 3, 1].
    torch.manual_seed(0)
    args = dict(stem_class=stem_class, stem_width=8, block_class=block_class, depth=6, w_a=8,
                w_0=8, w_m=2.0, group_width=8, out_features=ALL)
    args.update(kwargs)
    return RegNet(**args)


@pytest.mark.parametrize("params, widths, depths", [
    ((36.44, 24, 2.49, 13, 8), [24, 56, 152, 368], [1, 1, 4, 7]),  # RegNetX-200MF
    ((38.65, 96, 2.43, 23, 40), [80, 240, 560, 1360], [2, 5, 14, 2]),  # RegNetX-4.0GF
    ((31.41, 96, 2.24, 22, 64), [128, 192, 512, 1088], [2, 6, 12, 2]),  # RegNetY-4.0GF
])
def test_published_widths_and_depths(params, widths, depths):
    w_a, w_0, w_m, d, g = params
    ws, ds, num_stages, total_stages, ws_all, ws_cont = generate_regnet_parameters(
        w_a, w_0, w_m, d)
    assert ds == depths and num_stages == 4 and total_stages == 4 and sum(ds) == d
    assert all(w % 8 == 0 for w in ws_all) and ws_all == sorted(ws_all)
    torch.testing.assert_close(torch.tensor(ws_cont, dtype=torch.float64),
                               w_0 + w_a * torch.arange(d, dtype=torch.float64))
    ws, bs, gs = adjust_block_compatibility(ws, [1.0] * 4, [g] * 4)
    assert ws == widths and gs == [g] * 4


@pytest.mark.parametrize("cfg, widths, depths, params", [
    (REGNETX_4GF, [80, 240, 560, 1360], [2, 5, 14, 2], 22.1e6),
    (REGNETY_4GF, [128, 192, 512, 1088], [2, 6, 12, 2], 20.6e6),
])
def test_detectron2_4gf_configs_build_the_published_networks(cfg, widths, depths, params):
    with torch.device("meta"):  # shapes only: skip allocating and initialising 20M weights
        model = RegNet(**cfg)
    shapes = model.output_shape()
    assert [shapes[f"s{i}"].channels for i in range(1, 5)] == widths
    assert [shapes[f"s{i}"].stride for i in range(1, 5)] == [4, 8, 16, 32]
    assert [len(list(getattr(model, f"s{i}").children())) for i in range(1, 5)] == depths
    # The published counts include BN affine parameters (buffers in FrozenBN) and the
    # 1000-class linear head.
    with torch.device("meta"):
        bn_model = RegNet(**dict(cfg, norm="BN", freeze_at=0))
    n = sum(p.numel() for p in bn_model.parameters()) + (widths[-1] + 1) * 1000
    assert abs(n - params) < 0.06e6, n
    has_se = model.s1.b1.f.se is not None
    assert has_se == ("se_ratio" in cfg)


def test_adjust_block_compatibility():
    # Group width capped at the bottleneck width, which is rounded to a multiple of it.
    ws, bs, gs = adjust_block_compatibility([96, 232], [0.25, 0.25], [16, 16])
    assert gs == [16, 16] and ws == [128, 256] and bs == [0.25, 0.25]  # 24 / 16 = 1.5 -> 2
    ws, bs, gs = adjust_block_compatibility([24, 56], [1.0, 1.0], [40, 40])
    assert gs == [24, 40] and ws == [24, 40]
    # Integer bottleneck ratios above 1: the bottleneck width is a multiple of lcm(g, b).
    ws, _, gs = adjust_block_compatibility([20], [3.0], [8])
    assert ws == [16] and 16 * 3 % 8 == 0
    with pytest.raises(ValueError, match="equal lengths"):
        adjust_block_compatibility([8, 16], [1.0], [8, 8])
    with pytest.raises(ValueError, match="integers"):
        adjust_block_compatibility([8], [1.5], [8])


@pytest.mark.parametrize("block_class, stem_class, se_ratio", [
    (ResBottleneckBlock, SimpleStem, 0.0),
    (ResBottleneckBlock, SimpleStem, 0.25),
    (ResBasicBlock, ResStem, 0.0),
    (VanillaBlock, SimpleStem, 0.0),
])
def test_output_shapes_match_output_shape(block_class, stem_class, se_ratio):
    model = tiny(block_class, stem_class, se_ratio=se_ratio, norm="BN").eval()
    assert isinstance(model, Backbone)
    shapes = model.output_shape()
    stem_stride = 4 if stem_class is ResStem else 2
    assert [shapes[k].stride for k in ALL] == [stem_stride * 2 ** i for i in range(5)]
    assert [shapes[k].channels for k in ALL] == [8, 8, 16, 32, 64]
    x = torch.randn(2, 3, 64, 128)  # multiples of the largest stride (64 with ResStem)
    with torch.no_grad():
        out = model(x)
    assert list(out) == ALL
    for name, spec in shapes.items():
        assert tuple(out[name].shape) == (2, spec.channels, 64 // spec.stride, 128 // spec.stride)
        assert torch.isfinite(out[name]).all()


def test_default_out_features_is_the_last_stage():
    model = tiny(out_features=None).eval()
    assert list(model.output_shape()) == ["s4"]
    assert list(model(torch.randn(1, 3, 32, 32))) == ["s4"]


@pytest.mark.parametrize("block_class", [ResBottleneckBlock, ResBasicBlock, VanillaBlock])
def test_gradient_reaches_every_parameter(block_class):
    # SiLU rather than ReLU: the 2-channel SE bottleneck of s1 can be all-dead under ReLU.
    model = tiny(block_class, se_ratio=0.25, norm="BN", activation_class=nn.SiLU).train()
    out = model(torch.randn(2, 3, 64, 64))
    sum((o * torch.randn_like(o)).sum() for o in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 4])
def test_freeze_at(freeze_at):
    model = tiny(freeze_at=freeze_at, norm="BN")
    frozen_names = ALL[:freeze_at]
    for name, child in model.named_children():
        params = list(child.parameters())
        assert all(p.requires_grad != (name in frozen_names) for p in params), name
        norms = [m for m in child.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        want = FrozenBatchNorm2d if name in frozen_names else nn.BatchNorm2d
        assert norms and all(type(m) is want for m in norms), name


def test_se_block_math():
    torch.manual_seed(0)
    se = SE(6, 2, lambda: nn.ReLU(inplace=True))
    x = torch.randn(2, 6, 5, 4)
    w1, b1 = se.f_ex[0].weight[:, :, 0, 0], se.f_ex[0].bias
    w2, b2 = se.f_ex[2].weight[:, :, 0, 0], se.f_ex[2].bias
    gate = torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)  # (N, C)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_bottleneck_block_widths_groups_and_se():
    blk = ResBottleneckBlock(16, 32, 2, "BN", nn.ReLU, {"bot_mul": 0.5, "group_w": 4,
                                                         "se_r": 0.25})
    assert blk.f.a.out_channels == 16 and blk.f.b.groups == 4 and blk.f.b.stride == (2, 2)
    assert blk.f.se.f_ex[0].out_channels == 4  # round(w_in * se_r), as pycls
    assert blk.proj.stride == (2, 2) and blk.f.c_bn.final_bn
    same = ResBottleneckBlock(32, 32, 1, "BN", nn.ReLU, {"bot_mul": 1.0, "group_w": 8,
                                                          "se_r": 0.0})
    assert same.proj is None and same.bn is None and same.f.se is None


def _detectron2_keys(stem_width_present, stages, se):
    """State-dict keys of detectron2's RegNet with BN norms, from its module tree.

    ``stages``: per stage, whether each block has a projection shortcut.
    """
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["stem.conv.weight"] + [f"stem.bn.{k}" for k in bn] if stem_width_present else []
    for i, projections in enumerate(stages, start=1):
        for j, has_proj in enumerate(projections, start=1):
            b = f"s{i}.b{j}."
            if has_proj:
                keys += [b + "proj.weight"] + [b + f"bn.{k}" for k in bn]
            for conv in ("a", "b", "c"):
                keys += [b + f"f.{conv}.weight"] + [b + f"f.{conv}_bn.{k}" for k in bn]
            if se:
                keys += [b + f"f.se.f_ex.{m}.{p}" for m in (0, 2) for p in ("weight", "bias")]
    return keys


def test_state_dict_matches_detectron2_layout_and_loads_strictly():
    # u_j = 8, 12, 16, 20 -> k = 0, 1, 1, 1 -> widths [8, 16], depths [1, 3].
    kwargs = dict(stem_class=SimpleStem, stem_width=8, block_class=ResBottleneckBlock, depth=4,
                  w_a=4, w_0=8, w_m=2.0, group_width=8, se_ratio=0.25, norm="BN",
                  out_features=["s1", "s2"])
    torch.manual_seed(0)
    src = RegNet(**kwargs).eval()
    sd = src.state_dict()
    expected = _detectron2_keys(True, [[True], [True, False, False]], se=True)
    assert sorted(sd) == sorted(expected)
    assert sd["s2.b2.f.b.weight"].shape == (16, 8, 3, 3)  # 2 groups of 8 channels
    assert sd["s2.b1.f.se.f_ex.0.weight"].shape == (2, 16, 1, 1)  # round(8 * 0.25) = 2
    torch.manual_seed(1)
    dst = RegNet(**kwargs).eval()
    result = dst.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for name, value in src(x).items():
            torch.testing.assert_close(dst(x)[name], value, rtol=0, atol=0)


def test_anynet_with_explicit_stages():
    torch.manual_seed(0)
    model = AnyNet(stem_class=ResStem, stem_width=8, block_class=ResBasicBlock, depths=[1, 2],
                   widths=[8, 24], group_widths=[8, 8], strides=[1, 2],
                   bottleneck_ratios=[1.0, 1.0], se_ratio=0.0, activation_class=nn.ReLU,
                   out_features=["s1", "s2"])
    assert model.s1.b1.proj is None  # same width, stride 1: identity shortcut
    shapes = model.output_shape()
    assert (shapes["s1"].stride, shapes["s2"].stride, shapes["s2"].channels) == (4, 8, 24)
    assert model(torch.randn(1, 3, 32, 32))["s2"].shape == (1, 24, 4, 4)


def test_with_fpn():
    fpn = FPN(bottom_up=tiny(out_features=["s1", "s2", "s3", "s4"]),
              in_features=["s1", "s2", "s3", "s4"], out_channels=16, top_block=LastLevelMaxPool())
    out = fpn(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 16, 16, 16), "p3": (1, 16, 8, 8), "p4": (1, 16, 4, 4), "p5": (1, 16, 2, 2),
        "p6": (1, 16, 1, 1)}


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="w_m"):
        generate_regnet_parameters(8.0, 96, 1.0, 10)
    with pytest.raises(ValueError, match="w_0"):
        generate_regnet_parameters(8.0, 20, 2.0, 10)
    with pytest.raises(ValueError, match="out_features entry 's9'"):
        tiny(out_features=["s9"])
    with pytest.raises(ValueError, match="equal lengths"):
        AnyNet(stem_class=SimpleStem, stem_width=8, block_class=VanillaBlock, depths=[1, 1],
               widths=[8], group_widths=[8, 8], strides=[2, 2], bottleneck_ratios=[1.0, 1.0],
               se_ratio=0.0, activation_class=nn.ReLU)
    with pytest.raises(ValueError, match="odd"):
        conv2d(3, 8, 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tiny()(torch.randn(3, 32, 32))


def test_golden_outputs_computed_with_detectron2():
    # Golden values: detectron2's regnet.py given the same state dict and input,
    # {name: (sum, mean |x|)}. Regenerate from the failure message if the math changes on purpose.
    model = fill_deterministically(tiny(se_ratio=0.25, norm="FrozenBN")).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    check_golden(out, {"stem": (1458.4414, 0.178032), "s1": (322.6405, 0.157539),
                        "s2": (111.4346, 0.108823), "s3": (97.8562, 0.191125),
                        "s4": (33.2429, 0.129855)})

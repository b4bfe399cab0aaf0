"""DeformBottleneckBlock, DEFORM_* config keys, and the random stream of a seeded ResNet build.

detectron2's ``build_resnet_backbone`` builds res2..res5 and lets ``ResNet`` drop the stages
after the last output feature, so a seeded build draws the random numbers of all four stages
whatever OUT_FEATURES says; every module built afterwards (RPN, ROI heads) depends on it.
"""

import pytest
import torch

from workbench.config import get_cfg
from workbench.layers import Conv2d, DeformConv, FrozenBatchNorm2d, ModulatedDeformConv, ShapeSpec
from workbench.layers import get_norm
from workbench.layers.weight_init import c2_msra_fill
from workbench.modeling.backbone import FPN, LastLevelMaxPool, build_resnet_backbone
from workbench.modeling.backbone.fpn import build_resnet_fpn_backbone
from workbench.modeling.backbone.resnet import BottleneckBlock, DeformBottleneckBlock

ALL_STAGES = ["res2", "res3", "res4", "res5"]


def tiny_cfg(out_features=ALL_STAGES, deform=(False, False, False, False), modulated=False,
             deform_groups=1, norm="FrozenBN"):
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH = 50
    r.OUT_FEATURES = list(out_features)
    r.NORM = norm
    r.STEM_OUT_CHANNELS = 8
    r.RES2_OUT_CHANNELS = 16
    r.WIDTH_PER_GROUP = 4
    r.DEFORM_ON_PER_STAGE = list(deform)
    r.DEFORM_MODULATED = modulated
    r.DEFORM_NUM_GROUPS = deform_groups
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return cfg


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


# --------------------------------------------------------------------------- random stream

@pytest.mark.parametrize("out_features", [["res4"], ["res2"], ["stem"], ["res3", "res4"]])
@pytest.mark.parametrize("deform", [(False,) * 4, (False, True, True, True)])
def test_seeded_build_draws_the_numbers_of_all_four_stages(out_features, deform):
    short = build(tiny_cfg(out_features, deform))
    after_short = torch.get_rng_state()
    full = build(tiny_cfg(ALL_STAGES, deform))
    after_full = torch.get_rng_state()
    assert torch.equal(after_short, after_full), (
        "building a ResNet with OUT_FEATURES=%s must consume the random numbers of res2..res5, "
        "as detectron2 does" % out_features)
    # Dropped stages are not kept; the kept ones are identical to the full network's.
    last = max([ALL_STAGES.index(f) + 1 for f in out_features if f != "stem"] or [0])
    assert short.stage_names == ALL_STAGES[:last]
    full_sd = full.state_dict()
    for k, v in short.state_dict().items():
        assert torch.equal(v, full_sd[k]), k


def test_seeded_fpn_on_three_stages_draws_like_detectron2():
    cfg = tiny_cfg(["res2", "res3", "res4"])
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.FPN.OUT_CHANNELS = 8
    torch.manual_seed(3)
    fpn = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    after = torch.get_rng_state()
    # detectron2's order: stem, res2..res5 (res5 dropped), then the FPN's convs.
    bottom_up = build(tiny_cfg(ALL_STAGES), seed=3)
    expected = FPN(bottom_up=bottom_up, in_features=["res2", "res3", "res4"], out_channels=8,
                   norm="", top_block=LastLevelMaxPool(), fuse_type="sum")
    assert torch.equal(after, torch.get_rng_state())
    want = {k: v for k, v in expected.state_dict().items() if not k.startswith("bottom_up.res5")}
    got = fpn.state_dict()
    assert set(got) == set(want)
    for k in got:
        assert torch.equal(got[k], want[k]), k


def test_resnet_drops_stages_after_last_out_feature_with_classifier():
    from workbench.modeling.backbone import BasicStem, ResNet

    stages = ResNet.make_default_stages(18)
    model = ResNet(BasicStem(3, 64), stages, num_classes=4, out_features=["res3", "linear"])
    assert model.stage_names == ["res2", "res3"] and model.linear.in_features == 128
    out = model(torch.randn(1, 3, 32, 32))
    assert out["linear"].shape == (1, 4) and out["res3"].shape == (1, 128, 4, 4)
    # Naming no stage keeps them all (detectron2 fails here).
    model = ResNet(BasicStem(3, 64), ResNet.make_default_stages(18), num_classes=4,
                   out_features=["linear"])
    assert model.stage_names == ALL_STAGES and model.linear.in_features == 512


# --------------------------------------------------------------------------- the block

def _block(modulated, deform_groups=1, seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(bottleneck_channels=8, stride=2, num_groups=2, norm="BN",
                deform_modulated=modulated, deform_num_groups=deform_groups)
    args.update(kwargs)
    return DeformBottleneckBlock(16, 32, **args)


@pytest.mark.parametrize("modulated", [False, True])
def test_block_names_and_init_order_like_detectron2(modulated):
    block = _block(modulated, deform_groups=2, stride_in_1x1=True, dilation=2)
    # Rebuild by hand in detectron2's order: shortcut, conv1, conv2_offset, conv2, conv3,
    # then MSRA fill conv1, conv2, conv3, shortcut, then zero the offset conv.
    torch.manual_seed(0)
    shortcut = Conv2d(16, 32, 1, stride=2, bias=False, norm=get_norm("BN", 32))
    conv1 = Conv2d(16, 8, 1, stride=2, bias=False, norm=get_norm("BN", 8))
    offset = Conv2d(8, (27 if modulated else 18) * 2, 3, stride=1, padding=2, dilation=2)
    op = ModulatedDeformConv if modulated else DeformConv
    conv2 = op(8, 8, 3, stride=1, padding=2, bias=False, groups=2, dilation=2,
               deformable_groups=2, norm=get_norm("BN", 8))
    conv3 = Conv2d(8, 32, 1, bias=False, norm=get_norm("BN", 32))
    for layer in (conv1, conv2, conv3, shortcut):
        c2_msra_fill(layer)
    want = {}
    for name, m in [("shortcut", shortcut), ("conv1", conv1), ("conv2_offset", offset),
                    ("conv2", conv2), ("conv3", conv3)]:
        want.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    want["conv2_offset.weight"] = torch.zeros_like(want["conv2_offset.weight"])
    want["conv2_offset.bias"] = torch.zeros_like(want["conv2_offset.bias"])
    got = block.state_dict()
    assert set(got) == set(want)
    assert "conv2.bias" not in got and "conv2.norm.weight" in got
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert isinstance(block.conv2, op) and block.conv2.deformable_groups == 2


@pytest.mark.parametrize("modulated", [False, True])
def test_fresh_block_equals_bottleneck(modulated):
    """Zero offsets (and a mask of sigmoid(0) = 1/2) make it a BottleneckBlock."""
    block = _block(modulated).eval()
    plain = BottleneckBlock(16, 32, bottleneck_channels=8, stride=2, num_groups=2,
                            norm="BN").eval()
    sd = {k: v for k, v in block.state_dict().items() if not k.startswith("conv2_offset")}
    if modulated:
        sd["conv2.weight"] = sd["conv2.weight"] * 0.5
    plain.load_state_dict(sd)
    x = torch.randn(2, 16, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(block(x), plain(x))


@pytest.mark.parametrize("modulated", [False, True])
def test_block_offsets_change_output_and_get_gradients(modulated):
    block = _block(modulated, deform_groups=2).train()
    with torch.no_grad():
        block.conv2_offset.weight.normal_(std=0.3)
        block.conv2_offset.bias.normal_()
    x = torch.randn(2, 16, 9, 10, requires_grad=True)
    out = block(x)
    assert out.shape == (2, 32, 5, 5)
    out.square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    # The offsets matter: zeroing them changes the output.
    before = block.eval()(x).detach()
    with torch.no_grad():
        block.conv2_offset.weight.zero_()
        block.conv2_offset.bias.zero_()
    assert not torch.allclose(block(x), before)


def test_block_empty_batch_and_freeze():
    block = _block(True)
    block.freeze()
    assert isinstance(block.conv2.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in block.parameters())
    assert block(torch.zeros(0, 16, 9, 10)).shape == (0, 32, 5, 5)


# --------------------------------------------------------------------------- from the config

def test_build_with_deform_stages():
    cfg = tiny_cfg(deform=(False, True, False, True), modulated=True, deform_groups=2,
                   norm="BN")
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    model = build(cfg)
    kinds = {name: {type(b) for b in stage} for name, stage in zip(model.stage_names,
                                                                   model.stages)}
    assert kinds == {"res2": {BottleneckBlock}, "res3": {DeformBottleneckBlock},
                     "res4": {BottleneckBlock}, "res5": {DeformBottleneckBlock}}
    b = model.res5[0]
    assert b.deform_modulated and b.conv2.dilation == 2 and b.conv2.padding == 2
    assert b.conv2_offset.out_channels == 54 and isinstance(b.conv2, ModulatedDeformConv)
    assert "res3.0.conv2_offset.weight" in model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    out = model(x)
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "res2": (16, 16, 16), "res3": (32, 8, 8), "res4": (64, 4, 4), "res5": (128, 4, 4)}
    sum(v.sum() for v in out.values()).backward()
    assert model.res3[0].conv2_offset.weight.grad.abs().sum() > 0

    cfg = tiny_cfg(deform=(False, False, True, True))
    model = build(cfg)
    assert isinstance(model.res4[0].conv2, DeformConv)
    assert model.res4[0].conv2_offset.out_channels == 18
    assert torch.isfinite(model(x)["res5"]).all()


def test_deform_num_groups_must_divide_channels():
    cfg = tiny_cfg(deform=(True, False, False, False), deform_groups=3)
    with pytest.raises(ValueError, match="deformable_groups"):
        build(cfg)


def test_mask_is_sigmoid_of_last_third_of_offset_conv():
    """The mask is the sigmoid of the last third of conv2_offset's channels, as in detectron2."""
    block = _block(True).eval()
    with torch.no_grad():
        block.conv2_offset.bias[18:] = 50.0  # mask -> 1: a plain 3x3 conv
    plain = BottleneckBlock(16, 32, bottleneck_channels=8, stride=2, num_groups=2,
                            norm="BN").eval()
    plain.load_state_dict({k: v for k, v in block.state_dict().items()
                           if not k.startswith("conv2_offset")})
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), plain(x))

"""ResNet backbone: shapes, strides, freezing, init, cfg checks, and parity with detectron2.

Synthetic tests use tiny widths (stem 8, res2 16) so the whole file runs in a few seconds.
The parity test runs the C4 backbone of the ``faster_rcnn_R_50_C4`` fixture on its stored
normalised input and compares stem/res2..res4 with detectron2's maps.
"""

import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from workbench.config import get_cfg
from workbench.layers import FrozenBatchNorm2d, ShapeSpec
from workbench.modeling.backbone import (
    BACKBONE_REGISTRY,
    Backbone,
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    ResNet,
    build_backbone,
    build_resnet_backbone,
)
from fixture_paths import FIXTURES


ALL_STAGES = ["res2", "res3", "res4", "res5"]


def tiny_cfg(depth=50, out_features=ALL_STAGES, norm="FrozenBN", freeze_at=0):
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH = depth
    r.OUT_FEATURES = list(out_features)
    r.NORM = norm
    r.STEM_OUT_CHANNELS = 8
    # R18/R34 require 64 channels in res2; the bottleneck nets can be much narrower.
    r.RES2_OUT_CHANNELS = 64 if depth in (18, 34) else 16
    r.WIDTH_PER_GROUP = 4
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    return cfg


def build(cfg):
    torch.manual_seed(0)
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_shapes_strides_channels(depth):
    model = build(tiny_cfg(depth))
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    res2 = 64 if depth in (18, 34) else 16
    expected = {f"res{k}": (res2 * 2 ** (k - 2), 2 ** k) for k in range(2, 6)}
    assert list(out) == ALL_STAGES
    shapes = model.output_shape()
    for name, (channels, stride) in expected.items():
        assert shapes[name].channels == channels and shapes[name].stride == stride, name
        assert tuple(out[name].shape) == (2, channels, 64 // stride, 96 // stride), name
        assert torch.isfinite(out[name]).all()
    blocks = dict(zip(ALL_STAGES, ([2] * 4 if depth == 18 else
                                   [3, 4, 23, 3] if depth == 101 else [3, 4, 6, 3])))
    for name, n in blocks.items():
        assert len(getattr(model, name)) == n
    block_type = BasicBlock if depth in (18, 34) else BottleneckBlock
    assert all(isinstance(b, block_type) for s in model.stages for b in s)
    assert isinstance(model, Backbone) and model.size_divisibility == 0
    assert model.padding_constraints == {}


def test_gradient_reaches_every_parameter():
    model = build(tiny_cfg(50, norm="BN"))
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_only_needed_stages_are_built():
    model = build(tiny_cfg(50, out_features=["res3"]))
    names = [n for n, _ in model.named_children()]
    assert names == ["stem", "res2", "res3"]
    out = model(torch.randn(1, 3, 32, 32))
    assert list(out) == ["res3"] and out["res3"].shape == (1, 32, 4, 4)
    stem_only = build(tiny_cfg(50, out_features=["stem"]))
    assert [n for n, _ in stem_only.named_children()] == ["stem"]
    assert stem_only(torch.randn(1, 3, 32, 32))["stem"].shape == (1, 8, 8, 8)


def test_state_dict_names_follow_detectron2():
    keys = set(build(tiny_cfg(50)).state_dict())
    for k in ["stem.conv1.weight", "stem.conv1.norm.running_mean", "res2.0.shortcut.weight",
              "res2.0.shortcut.norm.bias", "res2.0.conv1.norm.weight", "res3.3.conv3.weight",
              "res5.2.conv2.norm.running_var"]:
        assert k in keys, k
    # Identity shortcuts when the channel count is kept.
    assert not any(k.startswith("res2.1.shortcut") for k in keys)
    # R18 with a 64-channel stem: res2 keeps 64 channels, so no projection at all there.
    cfg = tiny_cfg(18)
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
    keys18 = set(build(cfg).state_dict())
    assert not any(k.startswith("res2.0.shortcut") for k in keys18)
    assert "res3.0.shortcut.weight" in keys18 and "res3.0.conv2.norm.weight" in keys18


def test_resnext_groups_and_width():
    cfg = tiny_cfg(50)
    cfg.MODEL.RESNETS.NUM_GROUPS = 4
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 2
    model = build(cfg)
    for k, name in enumerate(ALL_STAGES):
        block = getattr(model, name)[0]
        assert block.conv2.groups == 4
        assert block.conv2.out_channels == 8 * 2 ** k  # groups * width, doubling each stage
        assert block.conv2.weight.shape == (8 * 2 ** k, 2 * 2 ** k, 3, 3)
    out = model(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 128, 2, 2)


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_stride_placement(stride_in_1x1):
    cfg = tiny_cfg(50)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    block = build(cfg).res3[0]
    assert block.conv1.stride == ((2, 2) if stride_in_1x1 else (1, 1))
    assert block.conv2.stride == ((1, 1) if stride_in_1x1 else (2, 2))
    assert block.shortcut.stride == (2, 2)


def test_res5_dilation():
    cfg = tiny_cfg(50)
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    model = build(cfg)
    assert model.output_shape()["res5"].stride == 16
    for i, block in enumerate(model.res5):
        assert block.stride == 1
        assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
    assert model.res4[1].conv2.dilation == (1, 1)
    out = model(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 128, 4, 4) and out["res4"].shape[-2:] == (4, 4)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at(freeze_at):
    model = build(tiny_cfg(50, norm="BN", freeze_at=freeze_at))
    for idx, name in enumerate(["stem"] + ALL_STAGES, start=1):
        module = getattr(model, name)
        frozen = freeze_at >= idx
        norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert norms, name
        for m in norms:
            assert isinstance(m, FrozenBatchNorm2d) == frozen, (name, m)
        for pname, p in module.named_parameters():
            assert p.requires_grad == (not frozen), (name, pname)
    # Frozen stems still pass gradients to later, trainable stages.
    if freeze_at < 5:
        model(torch.randn(1, 3, 64, 64))["res5"].sum().backward()
        assert model.res5[0].conv1.weight.grad is not None


def test_weight_init_like_detectron2():
    torch.manual_seed(0)
    stem = BasicStem(3, 64, norm="BN")
    w = stem.conv1.weight
    expected_std = math.sqrt(2.0 / (64 * 7 * 7))  # kaiming normal, fan_out, relu gain
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert stem.conv1.bias is None
    block = BottleneckBlock(64, 256, bottleneck_channels=64, norm="BN")
    # The last norm of the residual branch keeps weight 1 (detectron2 disables zero-gamma).
    assert torch.equal(block.conv3.norm.weight, torch.ones(256))
    assert torch.equal(block.conv3.norm.bias, torch.zeros(256))
    assert abs(block.conv1.weight.std().item() / math.sqrt(2.0 / 64) - 1) < 0.05


def test_make_stage_and_default_stages():
    blocks = ResNet.make_stage(BottleneckBlock, 3, in_channels=16, out_channels=64,
                               bottleneck_channels=16, stride_per_block=[2, 1, 1],
                               dilation_per_block=[1, 1, 2])
    assert [b.stride for b in blocks] == [2, 1, 1]
    assert [b.in_channels for b in blocks] == [16, 64, 64]
    assert blocks[2].conv2.dilation == (2, 2)
    with pytest.raises(ValueError, match="stride_per_block"):
        ResNet.make_stage(BasicBlock, 2, in_channels=8, out_channels=8, stride_per_block=[1])

    stages = ResNet.make_default_stages(18, norm="BN")
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert [s[-1].out_channels for s in stages] == [64, 128, 256, 512]
    stages50 = ResNet.make_default_stages(50)
    assert [s[0].conv1.out_channels for s in stages50] == [64, 128, 256, 512]
    assert [s[-1].out_channels for s in stages50] == [256, 512, 1024, 2048]
    model = ResNet(BasicStem(3, 64), stages, out_features=["res4", "res5"])
    assert {k: (v.channels, v.stride) for k, v in model.output_shape().items()} == {
        "res4": (256, 16), "res5": (512, 32)}


def test_classifier_head():
    stages = [ResNet.make_stage(BasicBlock, 1, in_channels=8, out_channels=8, stride=1)]
    model = ResNet(BasicStem(3, 8), stages, num_classes=5, out_features=["res2", "linear"])
    out = model(torch.randn(2, 3, 16, 16))
    assert out["linear"].shape == (2, 5) and out["res2"].shape == (2, 8, 4, 4)


def test_cfg_checks():
    cfg = tiny_cfg(18)
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        build(cfg)
    cfg = tiny_cfg(34)
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    with pytest.raises(ValueError, match="RES5_DILATION"):
        build(cfg)
    cfg = tiny_cfg(50)
    cfg.MODEL.RESNETS.RES5_DILATION = 4
    with pytest.raises(ValueError, match="1 or 2"):
        build(cfg)
    cfg = tiny_cfg(77)
    with pytest.raises(ValueError, match="DEPTH"):
        build(cfg)
    cfg = tiny_cfg(50, out_features=["res6"])
    with pytest.raises(ValueError, match="res6"):
        build(cfg)
    cfg = tiny_cfg(18)
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    with pytest.raises(ValueError, match="DEFORM_ON_PER_STAGE"):
        build(cfg)
    cfg = tiny_cfg(50)
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True]
    with pytest.raises(ValueError, match="one entry per stage"):
        build(cfg)


def test_input_checks():
    model = build(tiny_cfg(50))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 4, 32, 32))


def test_build_backbone_uses_registry():
    assert {"build_resnet_backbone", "build_resnet_fpn_backbone",
            "build_retinanet_resnet_fpn_backbone"} <= set(BACKBONE_REGISTRY.keys())
    cfg = tiny_cfg(50)
    cfg.MODEL.PIXEL_MEAN = [0.0, 0.0, 0.0, 0.0]  # default input shape: one channel per mean
    cfg.MODEL.PIXEL_STD = [1.0, 1.0, 1.0, 1.0]
    model = build_backbone(cfg)
    assert isinstance(model, ResNet) and model.stem.conv1.in_channels == 4

    @BACKBONE_REGISTRY.register(name="_test_resnet_not_a_backbone")
    def _not_a_backbone(cfg, input_shape):
        return nn.Identity()

    cfg.MODEL.BACKBONE.NAME = "_test_resnet_not_a_backbone"
    with pytest.raises(TypeError, match="_test_resnet_not_a_backbone"):
        build_backbone(cfg)


# --------------------------------------------------------------------------- parity

def load_fixture(name):
    """The fixture's cfg, its backbone weights (prefix stripped) and its outputs.npz."""

    folder = os.path.join(FIXTURES, name)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(folder, "config.yaml"))
    with open(os.path.join(folder, "model_final.pkl"), "rb") as f:
        weights = pickle.load(f)["model"]
    state = {k[len("backbone."):]: torch.from_numpy(np.asarray(v))
             for k, v in weights.items() if k.startswith("backbone.")}
    return cfg, state, np.load(os.path.join(folder, "outputs.npz"))


def run_resnet_all(resnet, x):
    """Every intermediate of a ResNet: stem, then each built stage."""
    feats = {"stem": resnet.stem(x)}
    y = feats["stem"]
    for name, stage in zip(resnet.stage_names, resnet.stages):
        y = stage(y)
        feats[name] = y
    return feats


def compare(name, ours, ref, tol=1e-4):
    """Check max |diff| <= tol * max |ref| (README tolerance); return the relative error."""
    ref = torch.from_numpy(ref)
    assert tuple(ours.shape) == (1,) + tuple(ref.shape), (name, tuple(ours.shape), ref.shape)
    scale = ref.abs().max().item()
    rel = (ours[0] - ref).abs().max().item() / scale
    print(f"  {name:28s} max|ref|={scale:9.4f}  max|diff|/max|ref|={rel:.2e}")
    assert rel <= tol, f"{name}: relative error {rel:.3e} > {tol}"
    return rel


def test_parity_faster_rcnn_R_50_C4():
    cfg, state, outputs = load_fixture("faster_rcnn_R_50_C4")
    model = build_backbone(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.from_numpy(outputs["features_input/image0_normalized_padded"])[None]
    with torch.no_grad():
        feats = model(x)
        all_feats = run_resnet_all(model, x)
    assert list(feats) == ["res4"]
    print("\nfaster_rcnn_R_50_C4 backbone parity:")
    worst = compare("features/res4", feats["res4"], outputs["features/res4"])
    for name in ["stem", "res2", "res3", "res4"]:
        worst = max(worst, compare(f"features_bottom_up/{name}", all_feats[name],
                                   outputs[f"features_bottom_up/{name}"]))
    print(f"  worst relative error: {worst:.2e}")

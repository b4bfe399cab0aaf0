"""FPN backbones: levels, strides, top blocks, fusion, init, checks, and parity with detectron2.

Synthetic tests use tiny widths. Parity runs the ``mask_rcnn_R_50_FPN`` (bottom-up stem,
res2..res5 and p2..p6) and ``retinanet_R_50_FPN`` (p3..p7) fixtures' backbones on their stored
normalised inputs.
"""

import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import get_cfg
from workbench.layers import ShapeSpec
from workbench.modeling.backbone import (
    FPN,
    Backbone,
    LastLevelMaxPool,
    LastLevelP6P7,
    build_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from workbench.modeling.backbone.fpn import _assert_strides_are_log2_contiguous
from fixture_paths import FIXTURES


def tiny_cfg(in_features=("res2", "res3", "res4", "res5"), name="build_resnet_fpn_backbone",
             norm=""):
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    r.STEM_OUT_CHANNELS = 8
    r.RES2_OUT_CHANNELS = 16
    r.WIDTH_PER_GROUP = 4
    cfg.MODEL.FPN.IN_FEATURES = list(in_features)
    cfg.MODEL.FPN.OUT_CHANNELS = 32 if norm == "GN" else 12
    cfg.MODEL.FPN.NORM = norm
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return cfg


def build(cfg):
    torch.manual_seed(0)
    return build_backbone(cfg)


def test_resnet_fpn_levels():
    model = build(tiny_cfg())
    assert isinstance(model, Backbone)
    assert model.size_divisibility == 32
    assert model.padding_constraints == {"square_size": 0}
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    shapes = model.output_shape()
    assert list(shapes) == list(out)
    for k, name in enumerate(out, start=2):
        assert shapes[name].channels == 12 and shapes[name].stride == 2 ** k
        # (ceil: p6 subsamples a 3-pixel-wide p5 to 2 pixels)
        assert tuple(out[name].shape) == (2, 12, -(-64 // 2 ** k), -(-96 // 2 ** k)), name
        assert torch.isfinite(out[name]).all()
    # p6 is p5 subsampled: a 1x1 max pool of stride 2 just picks every other pixel.
    assert torch.equal(out["p6"], out["p5"][:, :, ::2, ::2])


def test_retinanet_fpn_levels():
    model = build(tiny_cfg(("res3", "res4", "res5"), "build_retinanet_resnet_fpn_backbone"))
    out = model(torch.randn(1, 3, 128, 128))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    sizes = {"p3": 16, "p4": 8, "p5": 4, "p6": 2, "p7": 1}
    for name, s in sizes.items():
        assert tuple(out[name].shape) == (1, 12, s, s)
        assert model.output_shape()[name].stride == 128 // s
    # P6 comes from res5 (128 channels here), not from p5.
    assert isinstance(model.top_block, LastLevelP6P7)
    assert model.top_block.in_feature == "res5" and model.top_block.p6.in_channels == 128
    assert model.bottom_up.output_shape()["res5"].channels == 128


def test_state_dict_names_follow_detectron2():
    keys = set(build(tiny_cfg()).state_dict())
    for k in ["fpn_lateral2.weight", "fpn_lateral2.bias", "fpn_output5.weight",
              "bottom_up.stem.conv1.weight", "bottom_up.res5.2.conv3.norm.running_var"]:
        assert k in keys, k
    assert not any(k.startswith("top_block") for k in keys)  # max pool has no weights
    retina = set(build(tiny_cfg(("res3", "res4", "res5"),
                                "build_retinanet_resnet_fpn_backbone")).state_dict())
    assert {"top_block.p6.weight", "top_block.p6.bias", "top_block.p7.weight",
            "fpn_lateral3.weight"} <= retina
    assert "fpn_lateral2.weight" not in retina


def reference_fpn(model, x):
    """The FPN computation written out level by level from the model's own modules."""
    bottom_up = model.bottom_up(x)
    c = {k: bottom_up[f"res{k}"] for k in (2, 3, 4, 5)}
    lat = {k: getattr(model, f"fpn_lateral{k}")(c[k]) for k in c}
    inner = {5: lat[5]}
    for k in (4, 3, 2):
        up = inner[k + 1].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        inner[k] = lat[k] + up
        if model._fuse_type == "avg":
            inner[k] = inner[k] / 2
    out = {f"p{k}": getattr(model, f"fpn_output{k}")(inner[k]) for k in (2, 3, 4, 5)}
    out["p6"] = out["p5"][:, :, ::2, ::2]
    return out


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
def test_top_down_pathway(fuse_type):
    cfg = tiny_cfg()
    cfg.MODEL.FPN.FUSE_TYPE = fuse_type
    model = build(cfg)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out, ref = model(x), reference_fpn(model, x)
    for name in ref:
        torch.testing.assert_close(out[name], ref[name], rtol=1e-5, atol=1e-5)


def test_p6p7_from_p5():
    torch.manual_seed(0)
    bottom_up = build_resnet_backbone(tiny_cfg(), ShapeSpec(channels=3))
    model = FPN(bottom_up, ["res3", "res4", "res5"], 12,
                top_block=LastLevelP6P7(12, 12, in_feature="p5"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        p6 = model.top_block.p6(out["p5"])
        p7 = model.top_block.p7(F.relu(p6))
    torch.testing.assert_close(out["p6"], p6)
    torch.testing.assert_close(out["p7"], p7)
    assert list(model.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]


def test_norm_and_bias():
    plain = build(tiny_cfg())
    assert plain.fpn_lateral2.bias is not None and plain.fpn_lateral2.norm is None
    gn = build(tiny_cfg(norm="GN"))
    assert gn.fpn_lateral2.bias is None and isinstance(gn.fpn_output3.norm, nn.GroupNorm)
    out = gn(torch.randn(1, 3, 64, 64))
    assert out["p2"].shape == (1, 32, 16, 16)


def test_weight_init_like_detectron2():
    torch.manual_seed(0)
    model = build(tiny_cfg())
    conv = model.fpn_output2  # 12 -> 12, 3x3: fan_in 108
    bound = math.sqrt(3.0 / (12 * 9))  # kaiming_uniform(a=1) = U(-sqrt(3/fan_in), +)
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound
    for name, p in model.named_parameters():
        if name.startswith("fpn_") and name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
    p6 = LastLevelP6P7(128, 12).p6
    assert p6.weight.abs().max() <= math.sqrt(3.0 / (128 * 9))
    assert torch.equal(p6.bias, torch.zeros(12))


def test_gradient_reaches_every_parameter():
    model = build(tiny_cfg(("res3", "res4", "res5"), "build_retinanet_resnet_fpn_backbone"))
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_checks():
    with pytest.raises(ValueError, match="log2 contiguous"):
        _assert_strides_are_log2_contiguous([4, 8, 32])
    bottom_up = build_resnet_backbone(tiny_cfg(), ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="log2 contiguous"):
        FPN(bottom_up, ["res2", "res4"], 8)
    with pytest.raises(ValueError, match="res6"):
        FPN(bottom_up, ["res5", "res6"], 8)
    with pytest.raises(ValueError, match="fuse_type"):
        FPN(bottom_up, ["res4", "res5"], 8, fuse_type="max")
    with pytest.raises(TypeError, match="Backbone"):
        FPN(nn.Identity(), ["res4", "res5"], 8)
    model = FPN(bottom_up, ["res2", "res3", "res4", "res5"], 8, top_block=LastLevelMaxPool(),
                square_pad=1024)
    assert model.padding_constraints == {"square_size": 1024}
    with pytest.raises(ValueError, match="size_divisibility=32"):
        model(torch.randn(1, 3, 100, 64))
    cfg = tiny_cfg(("res3", "res4"), "build_retinanet_resnet_fpn_backbone")
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4"]
    with pytest.raises(ValueError, match="res5"):
        build(cfg)


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


def compare(name, ours, ref, tol=1e-4):
    """Check max |diff| <= tol * max |ref| (README tolerance); return the relative error."""
    ref = torch.from_numpy(ref)
    assert tuple(ours.shape) == (1,) + tuple(ref.shape), (name, tuple(ours.shape), ref.shape)
    scale = ref.abs().max().item()
    rel = (ours[0] - ref).abs().max().item() / scale
    print(f"  {name:28s} max|ref|={scale:9.4f}  max|diff|/max|ref|={rel:.2e}")
    assert rel <= tol, f"{name}: relative error {rel:.3e} > {tol}"
    return rel


@pytest.mark.parametrize("fixture,levels,builder", [
    ("mask_rcnn_R_50_FPN", ["p2", "p3", "p4", "p5", "p6"], build_resnet_fpn_backbone),
    ("retinanet_R_50_FPN", ["p3", "p4", "p5", "p6", "p7"], build_retinanet_resnet_fpn_backbone),
])
def test_parity(fixture, levels, builder):
    cfg, state, outputs = load_fixture(fixture)
    assert cfg.MODEL.BACKBONE.NAME == builder.__name__
    model = build_backbone(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.from_numpy(outputs["features_input/image0_normalized_padded"])[None]
    with torch.no_grad():
        feats = model(x)
        resnet = model.bottom_up
        bottom_up = {"stem": resnet.stem(x)}
        y = bottom_up["stem"]
        for name, stage in zip(resnet.stage_names, resnet.stages):
            y = stage(y)
            bottom_up[name] = y
    assert list(feats) == levels
    print(f"\n{fixture} backbone parity:")
    worst = 0.0
    for name in levels:
        worst = max(worst, compare(f"features/{name}", feats[name], outputs[f"features/{name}"]))
    for key in outputs.files:
        if key.startswith("features_bottom_up/"):
            name = key.split("/", 1)[1]
            worst = max(worst, compare(key, bottom_up[name], outputs[key]))
    print(f"  worst relative error: {worst:.2e}")

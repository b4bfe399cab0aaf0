"""detectron2's four model-zoo YAML configs with deformable convolutions build and run.

All four turn on ``DeformBottleneckBlock`` in res3..res5 (DCN v1, one deformable group). They
are built small (narrow channels, same depth, groups and structure) and run on a 64x64 image;
one is also run at full size, unchanged.
"""

from __future__ import annotations

import pytest
import torch

from workbench import model_zoo
from workbench.layers import DeformConv
from workbench.modeling import build_model
from workbench.modeling.backbone.resnet import BottleneckBlock, DeformBottleneckBlock

# config -> (DEPTH, NUM_GROUPS, backbone NORM, meta-architecture)
DCONV = {
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml": (50, 1, "FrozenBN", "GeneralizedRCNN"),
    "Misc/mask_rcnn_R_50_FPN_3x_dconv_c3-c5.yaml": (50, 1, "FrozenBN", "GeneralizedRCNN"),
    "Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml": (152, 32, "FrozenBN",
                                                                  "GeneralizedRCNN"),
    "Misc/panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml": (101, 1, "GN", "PanopticFPN"),
}

# Narrow but GN-compatible (32 groups); depth, groups and head structure are kept.
SMALL = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 32, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]


def _image():
    return torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0)).float()


def _check_backbone(model, num_groups):
    resnet = model.backbone.bottom_up
    assert all(type(b) is BottleneckBlock for b in resnet.res2)
    for name in ("res3", "res4", "res5"):
        for block in getattr(resnet, name):
            assert type(block) is DeformBottleneckBlock, name
            assert type(block.conv2) is DeformConv and not block.deform_modulated
            assert block.conv2.groups == num_groups and block.conv2.deformable_groups == 1
            assert block.conv2_offset.out_channels == 18
    keys = set(model.state_dict())
    assert "backbone.bottom_up.res3.0.conv2_offset.weight" in keys
    assert "backbone.bottom_up.res5.2.conv2_offset.bias" in keys
    assert not any(k.startswith("backbone.bottom_up.res2.0.conv2_offset") for k in keys)


def _check_outputs(cfg, out):
    inst = out["instances"]
    assert inst.image_size == (64, 64) and len(inst) > 0
    assert torch.isfinite(inst.pred_boxes.tensor).all()
    assert inst.pred_masks.shape[1:] == (64, 64)
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        assert out["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 64)
        assert torch.isfinite(out["sem_seg"]).all()
        assert out["panoptic_seg"][0].shape == (64, 64)


@pytest.mark.parametrize("config_path", sorted(DCONV))
def test_config_keeps_detectron2_values(config_path):
    depth, num_groups, norm, arch = DCONV[config_path]
    cfg = model_zoo.get_config(config_path)
    r = cfg.MODEL.RESNETS
    assert list(r.DEFORM_ON_PER_STAGE) == [False, True, True, True]
    assert r.DEFORM_MODULATED is False and r.DEFORM_NUM_GROUPS == 1
    assert (r.DEPTH, r.NUM_GROUPS, r.NORM) == (depth, num_groups, norm)
    assert cfg.MODEL.META_ARCHITECTURE == arch and cfg.MODEL.MASK_ON


@pytest.mark.parametrize("config_path", sorted(DCONV))
def test_builds_small_and_runs_in_eval(config_path):
    depth, num_groups, _, _ = DCONV[config_path]
    cfg = model_zoo.get_config(config_path)
    # One channel per group in res2's bottleneck: the same grouped convs, far fewer weights.
    cfg.merge_from_list(SMALL + ["MODEL.RESNETS.WIDTH_PER_GROUP", 32 // num_groups])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _check_backbone(model, num_groups)
    assert sum(len(s) for s in model.backbone.bottom_up.stages) == {
        50: 16, 101: 33, 152: 50}[depth]
    with torch.no_grad():
        (out,) = model([{"image": _image(), "height": 64, "width": 64}])
    _check_outputs(cfg, out)


def test_full_size_r50_dconv_runs_unchanged():
    cfg = model_zoo.get_config("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _check_backbone(model, 1)
    assert model.backbone.bottom_up.res5[0].conv2.weight.shape == (512, 512, 3, 3)
    with torch.no_grad():
        (out,) = model([{"image": _image(), "height": 64, "width": 64}])
    _check_outputs(cfg, out)

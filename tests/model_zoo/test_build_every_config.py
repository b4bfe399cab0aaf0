"""Every YAML config of the model zoo builds, and a few of every kind run a forward.

The zoo ships all of detectron2's ``configs/*.yaml`` (and workbench's own). Building a full-size
model on the CPU takes seconds each, so every config is built on the ``meta`` device (every
constructor runs, no memory is filled); a handful, one per kind of architecture, are then built
small on the CPU and run on a 64x64 image.
"""

from __future__ import annotations

import pytest
import torch

from workbench import model_zoo
from workbench.modeling import build_model

YAML_CONFIGS = [p for p in model_zoo.list_configs() if p.endswith(".yaml")]
MODEL_CONFIGS = [p for p in YAML_CONFIGS if not p.rsplit("/", 1)[-1].startswith("Base-")]


def test_the_zoo_has_detectrons_yaml_configs():
    # detectron2's configs/ holds 92 YAML files; workbench ships all of them plus its own.
    detectron2_ones = [p for p in YAML_CONFIGS if not p.startswith("Shapes/")]
    assert len(detectron2_ones) == 92, len(detectron2_ones)
    for folder in ["Cityscapes", "Detectron1-Comparisons", "LVISv0.5-InstanceSegmentation",
                   "LVISv1-InstanceSegmentation", "Misc", "PascalVOC-Detection",
                   "quick_schedules"]:
        assert any(p.startswith(folder + "/") for p in YAML_CONFIGS), folder


@pytest.mark.parametrize("config_path", MODEL_CONFIGS)
def test_every_yaml_config_builds(config_path):
    cfg = model_zoo.get_config(config_path)
    cfg.MODEL.DEVICE = "meta"  # every module constructed, no weights filled in
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 1_000_000, f"{config_path}: {n_params} parameters"
    assert all(p.device.type == "meta" for p in model.parameters())


# Channel counts are multiples of 32: the GN configs normalise in 32 groups.
SMALL = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 32, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 32, "MODEL.RESNETS.NUM_GROUPS", 1,
    "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [32, 32], "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]

# One of each kind detectron2's YAML zoo has: GN + cascade + panoptic, class-agnostic boxes,
# GIoU loss, LVIS (1230 classes, federated), semantic FPN, Cityscapes, VOC on C4, SyncBN.
FORWARD = [
    "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
    "Misc/mask_rcnn_R_50_FPN_1x_cls_agnostic.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_giou.yaml",
    "LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "Misc/semantic_R_50_FPN_1x.yaml",
    "Cityscapes/mask_rcnn_R_50_FPN.yaml",
    "PascalVOC-Detection/faster_rcnn_R_50_C4.yaml",
    "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml",
    "Detectron1-Comparisons/keypoint_rcnn_R_50_FPN_1x.yaml",
]


@pytest.mark.parametrize("config_path", FORWARD)
def test_forward_on_a_small_image(config_path):
    cfg = model_zoo.get_config(config_path)
    cfg.merge_from_list(SMALL)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 64}])
    assert out, config_path
    if "instances" in out:
        inst = out["instances"]
        assert inst.image_size == (64, 64)
        assert torch.isfinite(inst.pred_boxes.tensor).all()
        if len(inst):
            assert int(inst.pred_classes.max()) < cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if "sem_seg" in out:
        assert out["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 64)
        assert torch.isfinite(out["sem_seg"]).all()

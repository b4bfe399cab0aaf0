"""End to end on tiny models of every registered architecture: train, infer, edge cases.

Each meta-architecture in ``META_ARCH_REGISTRY`` (and each ROI-heads variant) must have a tiny
config here: a newly registered architecture makes ``test_every_architecture_has_a_tiny_config``
fail until it gets one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.model_zoo import get_config
from workbench.modeling import META_ARCH_REGISTRY, ROI_HEADS_REGISTRY, build_model
from workbench.structures import Boxes, Instances, Keypoints, PolygonMasks, RotatedBoxes
from workbench.utils.events import EventStorage

SMALL = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16], "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.RETINANET.NUM_CLASSES", 3,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]

# name -> (model-zoo config, extra overrides)
TINY = {
    "faster_rcnn_fpn": ("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", []),
    "faster_rcnn_c4": ("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml", []),
    "mask_rcnn_fpn": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", []),
    "mask_rcnn_c4": ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", []),
    "keypoint_rcnn": ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml",
                      ["MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 4, "MODEL.ROI_HEADS.NUM_CLASSES", 1]),
    "rpn_only": ("COCO-Detection/rpn_R_50_FPN_1x.yaml", []),
    "retinanet": ("COCO-Detection/retinanet_R_50_FPN_1x.yaml", []),
    "panoptic_fpn": ("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", []),
    "cascade": ("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", []),
    "semantic": ("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
                 ["MODEL.META_ARCHITECTURE", "SemanticSegmentor"]),
    # Rotated Faster R-CNN (RRPN + RROIHeads); make_inputs gives it RotatedBoxes ground truth.
    "rotated_faster_rcnn": ("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", [
        "MODEL.PROPOSAL_GENERATOR.NAME", "RRPN", "MODEL.ANCHOR_GENERATOR.NAME",
        "RotatedAnchorGenerator", "MODEL.RPN.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0, 1.0, 1.0),
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
        "MODEL.ROI_HEADS.NAME", "RROIHeads", "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignRotated",
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2,
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0, 1.0)]),
}


def tiny_cfg(name: str):
    path, extra = TINY[name]
    cfg = get_config(path)
    cfg.merge_from_list(SMALL + extra)
    return cfg


def _square_polygon(x0, y0, x1, y1):
    return [np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]


def make_inputs(cfg, with_gt=True, empty_gt=False):
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g).float()}
        if with_gt:
            boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]])[: 0 if empty_gt else 2]
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = torch.tensor([0, 1])[: len(boxes)] % cfg.MODEL.ROI_HEADS.NUM_CLASSES
            inst.gt_masks = PolygonMasks([_square_polygon(*b.tolist()) for b in boxes])
            k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
            kp = torch.zeros(len(boxes), k, 3)
            for i, b in enumerate(boxes):
                kp[i, :, 0] = torch.linspace(b[0] + 2, b[2] - 2, k)
                kp[i, :, 1] = torch.linspace(b[1] + 2, b[3] - 2, k)
                kp[i, :, 2] = 2
            inst.gt_keypoints = Keypoints(kp)
            if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RRPN":  # (xc, yc, w, h, angle) boxes
                xywha = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2],
                                   torch.tensor([30.0, -60.0])[: len(boxes), None]], dim=1)
                inst = Instances((h, w), gt_boxes=RotatedBoxes(xywha), gt_classes=inst.gt_classes)
            d["instances"] = inst
            d["sem_seg"] = torch.randint(0, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, (h, w), generator=g)
        batch.append(d)
    return batch


def test_every_architecture_has_a_tiny_config():
    covered_archs, covered_heads = set(), set()
    for name in TINY:
        cfg = tiny_cfg(name)
        covered_archs.add(cfg.MODEL.META_ARCHITECTURE)
        covered_heads.add(cfg.MODEL.ROI_HEADS.NAME)
    missing = set(META_ARCH_REGISTRY.keys()) - covered_archs
    assert not missing, f"registered meta-architectures without a tiny config in TINY: {missing}"
    missing_heads = set(ROI_HEADS_REGISTRY.keys()) - covered_heads
    assert not missing_heads, f"registered ROI heads without a tiny config in TINY: {missing_heads}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_trains_two_steps_with_gradient_everywhere(name):
    torch.manual_seed(0)
    cfg = tiny_cfg(name)
    if cfg.MODEL.META_ARCHITECTURE not in META_ARCH_REGISTRY:
        pytest.fail(f"{cfg.MODEL.META_ARCHITECTURE} is not registered")
    model = build_model(cfg)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs = make_inputs(cfg)
    for step in range(2):
        with EventStorage(step):
            losses = model(inputs)
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        opt.zero_grad()
        sum(losses.values()).backward()
        if step == 0:
            no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not no_grad, f"{name}: parameters without gradient: {no_grad[:10]}"
        opt.step()


@pytest.mark.parametrize("name", sorted(TINY))
def test_inference_output_kinds(name):
    cfg = tiny_cfg(name)
    model = build_model(cfg).eval()
    inputs = make_inputs(cfg, with_gt=False)
    inputs[0].update(height=128, width=192)  # outputs at twice the input size
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    arch = cfg.MODEL.META_ARCHITECTURE
    for out, size in zip(outputs, [(128, 192), (80, 64)]):
        if arch == "ProposalNetwork":
            assert out["proposals"].image_size == size
            continue
        if arch in ("SemanticSegmentor", "PanopticFPN"):
            assert out["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, *size)
        if arch == "SemanticSegmentor":
            continue
        inst = out["instances"]
        assert inst.image_size == size
        if cfg.MODEL.MASK_ON and len(inst):
            assert inst.pred_masks.shape[1:] == size and inst.pred_masks.dtype == torch.bool
        if cfg.MODEL.KEYPOINT_ON:
            assert inst.pred_keypoints.shape[1:] == (cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS, 3)
        if arch == "PanopticFPN":
            seg, info = out["panoptic_seg"]
            assert seg.shape == size
            assert all({"id", "isthing", "category_id"} <= set(s) for s in info)


@pytest.mark.parametrize("name", ["faster_rcnn_fpn", "mask_rcnn_c4", "keypoint_rcnn", "retinanet",
                                  "cascade", "panoptic_fpn"])
def test_training_with_empty_ground_truth(name):
    cfg = tiny_cfg(name)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(make_inputs(cfg, empty_gt=True))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()


def test_inference_without_detections_returns_empty_instances():
    cfg = tiny_cfg("mask_rcnn_fpn")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 1.0  # nothing can pass
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(make_inputs(cfg, with_gt=False))
    for o in out:
        inst = o["instances"]
        assert len(inst) == 0
        assert inst.pred_boxes.tensor.shape == (0, 4)
        assert inst.pred_masks.shape[0] == 0


def test_training_outside_event_storage_is_a_clear_error():
    cfg = tiny_cfg("faster_rcnn_fpn")
    model = build_model(cfg).train()
    with pytest.raises(RuntimeError, match="EventStorage"):
        model(make_inputs(cfg))


def test_bad_inputs_name_the_culprit():
    cfg = tiny_cfg("faster_rcnn_fpn")
    model = build_model(cfg).eval()
    with pytest.raises(KeyError, match="'image'"):
        model([{"img": torch.zeros(3, 32, 32)}])
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\]"):
        model([{"image": torch.zeros(3, 32, 32)}, {"image": torch.zeros(32, 32)}])
    with pytest.raises(TypeError, match="list\\[dict\\]"):
        model({"image": torch.zeros(3, 32, 32)})


def test_build_model_puts_model_on_cfg_device():
    cfg = tiny_cfg("faster_rcnn_fpn")
    model = build_model(cfg)
    assert model.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_precomputed_proposals_replace_the_rpn():
    cfg = tiny_cfg("faster_rcnn_fpn")
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    cfg.MODEL.LOAD_PROPOSALS = True
    model = build_model(cfg).eval()
    assert model.proposal_generator is None
    inputs = make_inputs(cfg, with_gt=False)
    for d in inputs:
        p = Instances(tuple(d["image"].shape[1:]))
        p.proposal_boxes = Boxes(torch.tensor([[2.0, 2.0, 30.0, 30.0], [10.0, 5.0, 50.0, 40.0]]))
        p.objectness_logits = torch.tensor([1.0, 0.5])
        d["proposals"] = p
    with torch.no_grad():
        out = model(inputs)
    assert len(out) == 2
    with pytest.raises(KeyError, match="proposals"):
        model([{"image": torch.zeros(3, 32, 32)}])

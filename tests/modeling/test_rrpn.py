"""RRPN + RROIHeads (rotated Faster R-CNN): a tiny model trains, infers rotated boxes, records."""

from __future__ import annotations

import pytest
import torch

from workbench.model_zoo import get_config
from workbench.modeling import (Box2BoxTransformRotated, RotatedAnchorGenerator, RRPN, RROIHeads,
                                build_model)
from workbench.modeling.recording import record_stages
from workbench.structures import Instances, RotatedBoxes
from workbench.utils.events import EventStorage

ROTATED = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.PROPOSAL_GENERATOR.NAME", "RRPN", "MODEL.ANCHOR_GENERATOR.NAME", "RotatedAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.ANGLES", [[-60, 0, 60]],
    "MODEL.RPN.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0, 1.0, 1.0),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 32,
    "MODEL.ROI_HEADS.NAME", "RROIHeads", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignRotated", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0, 1.0),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
]


def rotated_cfg():
    cfg = get_config("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(ROTATED)
    return cfg


def make_inputs(with_gt=True):
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g).float()}
        if with_gt:
            d["instances"] = Instances((h, w), gt_boxes=RotatedBoxes(torch.tensor(
                [[22.0, 28.0, 36.0, 20.0, 30.0], [40.0, 25.0, 30.0, 12.0, -70.0]])),
                gt_classes=torch.tensor([0, 2]))
        batch.append(d)
    return batch


def test_builds_the_rotated_parts_from_the_cfg():
    model = build_model(rotated_cfg())
    assert isinstance(model.proposal_generator, RRPN)
    assert isinstance(model.proposal_generator.anchor_generator, RotatedAnchorGenerator)
    assert model.proposal_generator.anchor_generator.num_anchors == [3 * 3] * 5  # ratios x angles
    assert isinstance(model.proposal_generator.box2box_transform, Box2BoxTransformRotated)
    assert isinstance(model.roi_heads, RROIHeads)
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 3 * 5


def test_trains_two_steps_then_infers_rotated_boxes():
    torch.manual_seed(0)
    model = build_model(rotated_cfg()).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    inputs = make_inputs()
    for step in range(2):
        with EventStorage(step):
            losses = model(inputs)
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
        assert all(torch.isfinite(v) for v in losses.values()), losses
        opt.zero_grad()
        sum(losses.values()).backward()
        if step == 0:
            no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not no_grad, no_grad[:5]
        opt.step()
    model.eval()
    inputs = make_inputs(with_gt=False)
    inputs[0].update(height=128, width=192)
    with torch.no_grad():
        outputs = model(inputs)
    for out, size in zip(outputs, [(128, 192), (80, 64)]):
        inst = out["instances"]
        assert inst.image_size == size and len(inst) > 0
        assert isinstance(inst.pred_boxes, RotatedBoxes) and inst.pred_boxes.tensor.shape[1] == 5
        assert ((inst.pred_boxes.tensor[:, 4] >= -180) & (inst.pred_boxes.tensor[:, 4] < 180)).all()


def test_training_with_an_image_without_ground_truth():
    model = build_model(rotated_cfg()).train()
    inputs = make_inputs()
    inputs[1]["instances"] = inputs[1]["instances"][:0]
    with EventStorage():
        losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values()), losses


def test_stage_records_hold_the_rotated_selections():
    model = build_model(rotated_cfg()).eval()
    with torch.no_grad(), record_stages() as rec:
        results = model.inference(make_inputs(with_gt=False), do_postprocess=False)
    rpn = rec.last("rpn")
    assert rpn is not None and rpn.selection is not None
    assert rpn.deltas[0].shape[-1] == 5 and isinstance(rpn.anchors[0], RotatedBoxes)
    for i, props in enumerate(rpn.proposals):
        sel = rpn.selection.selections[i]
        # The recorded indices point at exactly the proposals the RRPN returned.
        assert torch.equal(sel.candidates.proposal_boxes.tensor[sel.proposal_candidate],
                           props.proposal_boxes.tensor)
        assert sel.nms_kept[sel.proposal_candidate].all()
    box = rec.last("box")
    assert box is not None and box.selection is not None
    for i, inst in enumerate(results):
        assert torch.equal(box.instances[i].pred_boxes.tensor, inst.pred_boxes.tensor)
        assert len(box.roi_index[i]) == len(inst)
        assert box.boxes[i].shape[1] == 3 * 5  # decoded class-specific rotated boxes


def test_a_trace_of_the_rotated_model_is_its_own_forward():
    # The whole forward under the stage recorder, detector_postprocess included (it rescales
    # RotatedBoxes, not Boxes), gives model(inputs) exactly.
    from workbench import inspect as wi

    torch.manual_seed(0)
    model = build_model(rotated_cfg()).eval()
    inputs = [dict(d, height=2 * d["image"].shape[1], width=2 * d["image"].shape[2])
              for d in make_inputs(with_gt=False)]
    with torch.no_grad():
        plain = model(inputs)
        tr = wi.trace(model, inputs)
    for got, want in zip(tr.outputs, plain):
        assert isinstance(got["instances"].pred_boxes, RotatedBoxes)
        assert torch.equal(got["instances"].pred_boxes.tensor, want["instances"].pred_boxes.tensor)
        assert torch.equal(got["instances"].scores, want["instances"].scores)
    assert len(plain[0]["instances"]) > 0


def test_misconfigured_rotated_models_name_the_cfg_key():
    cfg = rotated_cfg()
    cfg.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="MODEL.RPN.BBOX_REG_WEIGHTS"):
        build_model(cfg)
    cfg = rotated_cfg()
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
    with pytest.raises(ValueError, match="POOLER_TYPE"):
        build_model(cfg)
    cfg = rotated_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    with pytest.raises(ValueError, match="RotatedAnchorGenerator"):
        build_model(cfg)

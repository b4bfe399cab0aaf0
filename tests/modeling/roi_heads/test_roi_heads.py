"""ROI heads: proposal labelling and sampling, StandardROIHeads and Res5ROIHeads end to end.

Small synthetic features; the fixture parity tests (tests/parity) compare with detectron2's
numbers on real weights.
"""

import math

import pytest
import torch

from workbench.config import get_cfg
from workbench.layers import ShapeSpec
from workbench.modeling.matcher import Matcher
from workbench.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    FastRCNNConvFCHead,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_box_head,
    build_roi_heads,
    select_foreground_proposals,
    select_proposals_with_visible_keypoints,
)
from workbench.structures import BitMasks, Boxes, Instances, Keypoints
from workbench.utils.events import EventStorage

IMAGE_HW = (64, 96)


def _proposals(boxes, image_size=IMAGE_HW):
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    p = Instances(image_size)
    p.proposal_boxes = Boxes(boxes)
    p.objectness_logits = torch.linspace(1.0, -1.0, len(boxes))
    return p


def _targets(boxes, classes, image_size=IMAGE_HW, masks=False, keypoints=False):
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    t = Instances(image_size)
    t.gt_boxes = Boxes(boxes)
    t.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
    if masks:
        m = torch.zeros(len(boxes), *image_size, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            m[i, y0:y1, x0:x1] = True
        t.gt_masks = BitMasks(m)
    if keypoints:
        kp = torch.zeros(len(boxes), 17, 3)
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            kp[i, :, 0] = torch.linspace(x0 + 1, x1 - 1, 17)
            kp[i, :, 1] = torch.linspace(y0 + 1, y1 - 1, 17)
            kp[i, :, 2] = 2
        t.gt_keypoints = Keypoints(kp)
    return t


def _base_heads(batch_size_per_image=100, positive_fraction=0.5, append_gt=True):
    return ROIHeads(num_classes=3, batch_size_per_image=batch_size_per_image,
                    positive_fraction=positive_fraction,
                    proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
                    proposal_append_gt=append_gt)


# --------------------------------------------------------------------------- labelling
def test_label_and_sample_proposals_by_hand():
    heads = _base_heads()
    gt = _targets([[0, 0, 10, 10]], [2])
    gt.gt_ids = torch.tensor([7])
    # Proposal 0: IoU 90 / 100 = 0.9 -> class 2; proposal 1: IoU 0 -> background (3).
    props = _proposals([[0, 0, 10, 9], [20, 20, 30, 30]])
    empty_gt = _targets(torch.zeros(0, 4), [])
    with EventStorage() as storage:
        out = heads.label_and_sample_proposals([props, _proposals([[1, 1, 5, 5]] * 2)],
                                               [gt, empty_gt])
    # Image 0: the gt box is appended (3 proposals), foreground first.
    p = out[0]
    assert len(p) == 3
    assert sorted(p.gt_classes.tolist()[:2]) == [2, 2] and p.gt_classes.tolist()[2] == 3
    by_box = {tuple(b.tolist()): c for b, c in zip(p.proposal_boxes.tensor, p.gt_classes.tolist())}
    assert by_box == {(0.0, 0.0, 10.0, 9.0): 2, (0.0, 0.0, 10.0, 10.0): 2,
                      (20.0, 20.0, 30.0, 30.0): 3}
    # Every gt_* field is copied from the matched gt (the only one, also for background).
    assert p.gt_ids.tolist() == [7, 7, 7]
    assert p.gt_boxes.tensor.tolist() == [[0.0, 0.0, 10.0, 10.0]] * 3
    # The appended gt proposal carries detectron2's objectness logit log((1 - 1e-10) / 1e-10).
    assert p.objectness_logits.max().item() == pytest.approx(math.log((1 - 1e-10) / 1e-10))
    # Image 1 has no gt: all background, and no gt_* field besides gt_classes.
    q = out[1]
    assert q.gt_classes.tolist() == [3, 3]
    assert not q.has("gt_boxes")
    latest = storage.latest()
    assert latest["roi_head/num_fg_samples"][0] == pytest.approx((2 + 0) / 2)
    assert latest["roi_head/num_bg_samples"][0] == pytest.approx((1 + 2) / 2)


def test_sampling_respects_batch_size_and_fraction():
    torch.manual_seed(0)
    heads = _base_heads(batch_size_per_image=4, positive_fraction=0.25, append_gt=False)
    gt = _targets([[0, 0, 20, 20]], [1])
    fg = [[0, 0, 20, 19 - i] for i in range(5)]  # IoU >= 0.75
    bg = [[40, 40, 50, 50 + i] for i in range(5)]
    with EventStorage():
        (p,) = heads.label_and_sample_proposals([_proposals(fg + bg)], [gt])
    assert p.gt_classes.tolist() == [1, 3, 3, 3]


def test_select_foreground_and_visible_keypoints():
    p = _proposals([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    p.gt_classes = torch.tensor([0, 3, -1])
    fg, masks = select_foreground_proposals([p], bg_label=3)
    assert len(fg[0]) == 1 and masks[0].tolist() == [True, False, False]

    q = _proposals([[0, 0, 10, 10], [30, 30, 40, 40]])
    kp = torch.zeros(2, 17, 3)
    kp[:, 0] = torch.tensor([5.0, 5.0, 2.0])  # visible, inside proposal 0 only
    q.gt_keypoints = Keypoints(kp)
    with EventStorage() as storage:
        (kept, empty) = select_proposals_with_visible_keypoints([q, q[:0]])
    assert len(kept) == 1 and len(empty) == 0
    assert storage.latest()["keypoint_head/num_fg_samples"][0] == 1


# --------------------------------------------------------------------------- StandardROIHeads
def _fpn_cfg(mask=False, keypoint=False):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.MASK_ON = mask
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.KEYPOINT_ON = keypoint
    cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = (8,)
    cfg.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 4
    return cfg


FPN_SHAPE = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def _fpn_features(n=2):
    h, w = IMAGE_HW
    return {"p2": torch.rand(n, 8, h // 4, w // 4), "p3": torch.rand(n, 8, h // 8, w // 8)}


def test_standard_heads_build_and_state_dict_names():
    torch.manual_seed(0)
    heads = build_roi_heads(_fpn_cfg(mask=True, keypoint=True), FPN_SHAPE)
    assert isinstance(heads, StandardROIHeads)
    assert isinstance(heads.box_head, FastRCNNConvFCHead)
    keys = set(heads.state_dict())
    for k in ["box_head.fc1.weight", "box_head.fc2.bias", "box_predictor.cls_score.weight",
              "box_predictor.bbox_pred.weight", "mask_head.mask_fcn1.weight",
              "keypoint_head.conv_fcn1.weight"]:
        assert k in keys, k
    # 8 channels x 4 x 4 pooled -> fc1 (16); predictor on 16 -> 3 + 1 classes, 3 * 4 deltas.
    assert heads.box_head.fc1.in_features == 128
    assert heads.box_head.output_shape == ShapeSpec(channels=16)
    assert heads.box_predictor.cls_score.out_features == 4
    assert heads.box_predictor.bbox_pred.out_features == 12
    assert ROI_HEADS_REGISTRY.get("StandardROIHeads") is StandardROIHeads


def test_box_head_conv_fc_layout():
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 2, 6
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC, cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 1, 10
    head = build_box_head(cfg, ShapeSpec(channels=4, height=5, width=5))
    assert [name for name, _ in head.named_children()] == [
        "conv1", "conv2", "flatten", "fc1", "fc_relu1"]
    assert head.fc1.in_features == 6 * 5 * 5
    assert head.conv1.bias is not None and float(head.conv1.bias.detach().abs().sum()) == 0.0
    out = head(torch.rand(3, 4, 5, 5))
    assert out.shape == (3, 10) and (out >= 0).all()
    conv_only = FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[6],
                                   fc_dims=[])
    assert conv_only.output_shape == ShapeSpec(channels=6, height=5, width=5)
    with pytest.raises(ValueError, match="at least one"):
        FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[], fc_dims=[])


def test_standard_heads_train_with_empty_gt():
    torch.manual_seed(0)
    heads = build_roi_heads(_fpn_cfg(mask=True, keypoint=True), FPN_SHAPE).train()
    features = _fpn_features()
    proposals = [_proposals([[0, 0, 20, 20], [10, 10, 60, 50]]), _proposals([[5, 5, 30, 40]])]
    targets = [_targets(torch.zeros(0, 4), [], masks=True, keypoints=True)] * 2
    with EventStorage() as storage:
        sampled, losses = heads(None, features, proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_keypoint"}
    assert losses["loss_box_reg"].item() == 0.0
    assert losses["loss_mask"].item() == 0.0
    assert losses["loss_keypoint"].item() == 0.0
    assert math.isfinite(losses["loss_cls"].item()) and losses["loss_cls"].item() > 0
    assert [p.gt_classes.tolist() for p in sampled] == [[3, 3], [3]]
    sum(losses.values()).backward()
    assert heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert storage.latest()["roi_head/num_fg_samples"][0] == 0
    # No image has a foreground proposal: detectron2 records the mean of nothing, NaN.
    assert math.isnan(storage.latest()["keypoint_head/num_fg_samples"][0])


def test_standard_heads_train_with_gt_reaches_every_head():
    torch.manual_seed(0)
    heads = build_roi_heads(_fpn_cfg(mask=True, keypoint=True), FPN_SHAPE).train()
    features = _fpn_features()
    proposals = [_proposals([[0, 0, 20, 20], [10, 10, 60, 50]]), _proposals([[5, 5, 30, 40]])]
    targets = [_targets([[2, 2, 22, 22]], [1], masks=True, keypoints=True),
               _targets([[4, 6, 30, 40], [50, 10, 90, 60]], [0, 2], masks=True, keypoints=True)]
    with EventStorage():
        _, losses = heads(None, features, proposals, targets)
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_box_reg"].item() > 0 and losses["loss_mask"].item() > 0
    sum(losses.values()).backward()
    no_grad = [n for n, p in heads.named_parameters() if p.grad is None]
    assert no_grad == []
    with pytest.raises(ValueError, match="targets"):
        heads(None, features, proposals, None)


def test_standard_heads_inference_with_zero_proposals():
    torch.manual_seed(0)
    heads = build_roi_heads(_fpn_cfg(mask=True, keypoint=True), FPN_SHAPE).eval()
    features = _fpn_features()
    with torch.no_grad():
        instances, losses = heads(None, features, [_proposals(torch.zeros(0, 4))] * 2)
    assert losses == {}
    assert [len(i) for i in instances] == [0, 0]
    assert instances[0].pred_boxes.tensor.shape == (0, 4)
    assert instances[0].has("pred_masks") and instances[0].has("pred_keypoints")


def test_standard_heads_inference_and_partial_execution():
    torch.manual_seed(0)
    cfg = _fpn_cfg(mask=True)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    heads = build_roi_heads(cfg, FPN_SHAPE).eval()
    features = _fpn_features()
    proposals = [_proposals([[0, 0, 20, 20], [10, 10, 60, 50], [0, 0, 96, 64]]),
                 _proposals([[5, 5, 30, 40]])]
    with torch.no_grad():
        instances, losses = heads(None, features, proposals)
        boxes_only = heads._forward_box(features, proposals)
    assert losses == {}
    assert isinstance(boxes_only, list) and all(isinstance(i, Instances) for i in boxes_only)
    assert [len(i) for i in instances] == [len(i) for i in boxes_only]
    assert len(instances[0]) > 0
    for full, box in zip(instances, boxes_only):
        assert torch.equal(full.scores, box.scores)
        assert torch.equal(full.pred_classes, box.pred_classes)
        assert full.pred_masks.shape == (len(full), 1, 8, 8)  # 2 x pooler resolution 4
        assert not box.has("pred_masks")
        # Scores come out sorted, boxes clipped to the image.
        assert torch.all(full.scores[:-1] >= full.scores[1:])
        b = full.pred_boxes.tensor
        assert (b[:, 0::2] <= IMAGE_HW[1]).all() and (b[:, 1::2] <= IMAGE_HW[0]).all()
    heads.train()
    with pytest.raises(RuntimeError, match="inference"):
        heads.forward_with_given_boxes(features, instances)


# --------------------------------------------------------------------------- Res5ROIHeads
def _c4_cfg(mask=True):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.MASK_ON = mask
    return cfg


C4_SHAPE = {"res4": ShapeSpec(channels=64, stride=16)}


def _c4_features(n=2):
    return {"res4": torch.rand(n, 64, IMAGE_HW[0] // 16, IMAGE_HW[1] // 16)}


def test_res5_heads_build():
    torch.manual_seed(0)
    heads = build_roi_heads(_c4_cfg(), C4_SHAPE)
    assert isinstance(heads, Res5ROIHeads)
    keys = set(heads.state_dict())
    # res5: 3 bottleneck blocks, 64 -> 128 channels (8 x RES2_OUT_CHANNELS), bottleneck 32.
    for k in ["res5.0.shortcut.weight", "res5.0.conv1.weight", "res5.2.conv3.norm.running_var",
              "box_predictor.cls_score.weight", "mask_head.deconv.weight"]:
        assert k in keys, k
    assert tuple(heads.res5[0].conv1.weight.shape) == (32, 64, 1, 1)
    assert tuple(heads.res5[0].conv1.stride) == (2, 2)  # STRIDE_IN_1X1 (MSRA weights)
    assert heads.box_predictor.cls_score.in_features == 128
    assert heads.pooler.level_poolers[0].spatial_scale == 1 / 16
    assert ROI_HEADS_REGISTRY.get("Res5ROIHeads") is Res5ROIHeads
    bad = _c4_cfg()
    bad.MODEL.ROI_HEADS.IN_FEATURES = ["res3", "res4"]
    with pytest.raises(ValueError, match="exactly one"):
        build_roi_heads(bad, {"res3": ShapeSpec(channels=32, stride=8), **C4_SHAPE})


def test_res5_heads_train_and_infer():
    torch.manual_seed(0)
    heads = build_roi_heads(_c4_cfg(), C4_SHAPE).train()
    features = _c4_features()
    proposals = [_proposals([[0, 0, 20, 20], [10, 10, 60, 50]]), _proposals([[5, 5, 30, 40]])]
    targets = [_targets([[2, 2, 22, 22]], [1], masks=True),
               _targets(torch.zeros(0, 4), [], masks=True)]
    with EventStorage():
        out, losses = heads(None, features, proposals, targets)
    assert out == []
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert heads.mask_head.predictor.weight.grad.abs().sum() > 0
    assert heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0

    heads.eval()
    with torch.no_grad():
        instances, losses = heads(None, features, proposals)
        boxes_only = heads._forward_box(features, proposals)
        empty, _ = heads(None, features, [_proposals(torch.zeros(0, 4))] * 2)
    assert losses == {}
    assert [len(i) for i in instances] == [len(i) for i in boxes_only]
    assert len(instances[0]) > 0
    torch.testing.assert_close(instances[0].scores, boxes_only[0].scores)
    # Mask head on res5 features (pooler 4 -> res5 2 -> deconv 4).
    assert instances[0].pred_masks.shape == (len(instances[0]), 1, 4, 4)
    assert [len(i) for i in empty] == [0, 0]

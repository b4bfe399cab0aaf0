"""FastRCNNOutputLayers and fast_rcnn_inference on hand-made numbers.

Expected detections and losses are worked out by hand (comments) or with plain torch formulas,
independently of the code under test.
"""

import math

import pytest
import torch
from torch.nn import functional as F

from workbench.layers import ShapeSpec
from workbench.modeling.box_regression import Box2BoxTransform
from workbench.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    fast_rcnn_inference,
    fast_rcnn_inference_single_image,
)
from workbench.structures import Boxes, Instances
from workbench.utils.events import EventStorage

NAN = float("nan")


def _inference_case():
    """4 ROIs, K = 2 classes, class-specific boxes, image (h, w) = (20, 30)."""
    box_a = [0.0, 0.0, 10.0, 10.0]
    box_b = [1.0, 1.0, 11.0, 11.0]  # IoU with box_a = 81 / 119 = 0.68
    box_far = [20.0, 10.0, 40.0, 25.0]  # clipped to [20, 10, 30, 20]
    boxes = torch.tensor([
        box_a + box_a,       # ROI 0: class 0, class 1
        box_b + box_far,     # ROI 1
        box_a + box_a,       # ROI 2
        box_a + [NAN] * 4,   # ROI 3: non-finite, dropped
    ])
    scores = torch.tensor([
        [0.60, 0.30, 0.10],  # columns: class 0, class 1, background
        [0.50, 0.40, 0.10],
        [0.05, 0.70, 0.25],  # 0.05 is not > 0.05: dropped
        [0.90, 0.05, 0.05],
    ])
    return boxes, scores, (20, 30)


def test_inference_threshold_nms_order_and_kept_indices():
    boxes, scores, shape = _inference_case()
    # Candidates above 0.05: (ROI0,c0,.6) (ROI0,c1,.3) (ROI1,c0,.5) (ROI1,c1,.4) (ROI2,c1,.7).
    # Class 0: .5 (box_b) is suppressed by .6 (box_a), IoU 0.68 > 0.5.
    # Class 1: .3 (ROI0, box_a) is suppressed by .7 (ROI2, same box); .4 (far box) stays.
    inst, kept = fast_rcnn_inference_single_image(boxes, scores, shape, 0.05, 0.5, 100)
    assert inst.image_size == (20, 30)
    assert kept.tolist() == [2, 0, 1]
    assert inst.pred_classes.tolist() == [1, 0, 1]
    assert inst.pred_classes.dtype == torch.int64
    torch.testing.assert_close(inst.scores, torch.tensor([0.70, 0.60, 0.40]))
    torch.testing.assert_close(
        inst.pred_boxes.tensor,
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 10.0, 30.0, 20.0]]),
    )


def test_inference_topk_and_batch():
    boxes, scores, shape = _inference_case()
    insts, kept = fast_rcnn_inference([boxes, boxes[:2]], [scores, scores[:2]], [shape, shape],
                                      0.05, 0.5, 2)
    assert [len(i) for i in insts] == [2, 2]
    assert kept[0].tolist() == [2, 0]
    # Image 1 (ROIs 0, 1 only): c0 .6 keeps, .5 suppressed; c1 .4 and .3 (no overlap) both stay;
    # the top 2 are .6 then .4.
    assert kept[1].tolist() == [0, 1]
    assert insts[1].pred_classes.tolist() == [0, 1]
    # topk < 0 keeps everything; nms_thresh 1.0 suppresses nothing (IoU is never > 1).
    inst, kept = fast_rcnn_inference_single_image(boxes, scores, shape, 0.05, 1.0, -1)
    assert kept.tolist() == [2, 0, 1, 1, 0]
    torch.testing.assert_close(inst.scores, torch.tensor([0.7, 0.6, 0.5, 0.4, 0.3]))


def test_inference_class_agnostic_boxes_and_no_detection():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    scores = torch.tensor([[0.8, 0.6, 0.0], [0.7, 0.1, 0.2]])
    # Same box for both classes of ROI 0: NMS runs per class, so both stay; ROI 1 class 0
    # (IoU 0.9 with ROI 0) is suppressed, its class 1 (0.1) is below 0.3.
    inst, kept = fast_rcnn_inference_single_image(boxes, scores, (50, 50), 0.3, 0.5, 100)
    assert kept.tolist() == [0, 0]
    assert inst.pred_classes.tolist() == [0, 1]
    inst, kept = fast_rcnn_inference_single_image(boxes, scores, (50, 50), 0.9, 0.5, 100)
    assert len(inst) == 0 and kept.numel() == 0
    assert inst.pred_boxes.tensor.shape == (0, 4)
    inst, kept = fast_rcnn_inference_single_image(
        torch.zeros(0, 8), torch.zeros(0, 3), (50, 50), 0.05, 0.5, 100
    )
    assert len(inst) == 0


def _predictor(**kwargs):
    return FastRCNNOutputLayers(ShapeSpec(channels=3), box2box_transform=Box2BoxTransform(
        (10.0, 10.0, 5.0, 5.0)), num_classes=2, **kwargs)


def _loss_case():
    proposals = Instances((40, 40))
    proposals.proposal_boxes = Boxes(torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0], [0.0, 0.0, 4.0, 4.0]]))
    proposals.gt_boxes = Boxes(torch.tensor(
        [[1.0, 1.0, 11.0, 11.0], [4.0, 6.0, 16.0, 24.0], [0.0, 0.0, 1.0, 1.0]]))
    proposals.gt_classes = torch.tensor([1, 0, 2])  # 2 = background
    scores = torch.tensor([[0.1, 2.0, -1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 3.0]])
    deltas = torch.tensor([
        [0.3, -0.2, 0.1, 0.0, 0.5, 1.5, -0.1, 0.2],
        [0.1, 0.4, 0.6, -0.4, 9.0, 9.0, 9.0, 9.0],
        [7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0],
    ])
    # Regression targets (dx, dy, dw, dh) = (10 dx_c / w, 10 dy_c / h, 5 log(gw / w),
    # 5 log(gh / h)): ROI 0 centre moves by (1, 1) on a 10 x 10 box; ROI 1 keeps its centre
    # (10, 15) and goes from 10 x 20 to 12 x 18.
    targets = {0: torch.tensor([1.0, 1.0, 0.0, 0.0]),
               1: torch.tensor([0.0, 0.0, 5 * math.log(1.2), 5 * math.log(0.9)])}
    # ROI 0 is class 1 -> columns 4:8; ROI 1 is class 0 -> columns 0:4; ROI 2 is background.
    fg_pred = {0: deltas[0, 4:8], 1: deltas[1, 0:4]}
    return proposals, scores, deltas, targets, fg_pred


def test_losses_match_hand_formulas_and_log_stats():
    proposals, scores, deltas, targets, fg_pred = _loss_case()
    scores.requires_grad_(True)
    deltas.requires_grad_(True)
    with EventStorage() as storage:
        losses = _predictor().losses((scores, deltas), [proposals])
    gt = proposals.gt_classes
    expected_cls = -(scores - torch.logsumexp(scores, dim=1, keepdim=True))[torch.arange(3), gt]
    torch.testing.assert_close(losses["loss_cls"], expected_cls.mean())
    # L1 (beta 0) summed over foreground ROIs, divided by all 3 sampled ROIs.
    expected_reg = sum((fg_pred[i] - targets[i]).abs().sum() for i in (0, 1)) / 3
    torch.testing.assert_close(losses["loss_box_reg"], expected_reg)
    # argmax: ROI 0 -> 1 (right), ROI 1 -> 2 = background (a false negative), ROI 2 -> 2 (right).
    latest = storage.latest()
    assert latest["fast_rcnn/cls_accuracy"][0] == pytest.approx(2 / 3)
    assert latest["fast_rcnn/fg_cls_accuracy"][0] == pytest.approx(1 / 2)
    assert latest["fast_rcnn/false_negative"][0] == pytest.approx(1 / 2)
    sum(losses.values()).backward()
    assert deltas.grad[2].abs().sum() == 0  # background ROI: no regression gradient
    assert deltas.grad[1, 4:].abs().sum() == 0  # non-gt class columns: none either


def test_smooth_l1_beta_and_loss_weight():
    proposals, scores, deltas, targets, fg_pred = _loss_case()
    beta = 0.5
    with EventStorage():
        losses = _predictor(smooth_l1_beta=beta, loss_weight={"loss_box_reg": 2.0}).losses(
            (scores, deltas), [proposals])
    total = 0.0
    for i in (0, 1):
        n = (fg_pred[i] - targets[i]).abs()
        total = total + torch.where(n < beta, 0.5 * n ** 2 / beta, n - 0.5 * beta).sum()
    torch.testing.assert_close(losses["loss_box_reg"], 2.0 * total / 3)


def test_giou_loss_on_undeformed_proposals():
    proposals, scores, _, _, _ = _loss_case()
    deltas = torch.zeros(3, 8)  # predicted boxes = proposals
    with EventStorage():
        loss = _predictor(box_reg_loss_type="giou").losses((scores, deltas), [proposals])
    # ROI 0: inter 81, union 119, hull 11 x 11 = 121. ROI 1: inter 10 x 18 = 180,
    # union 200 + 216 - 180 = 236, hull 12 x 20 = 240.
    giou0 = 81 / 119 - (121 - 119) / 121
    giou1 = 180 / 236 - (240 - 236) / 240
    assert loss["loss_box_reg"].item() == pytest.approx(((1 - giou0) + (1 - giou1)) / 3, rel=1e-5)


def test_sigmoid_ce_matches_formula():
    proposals, scores, deltas, _, _ = _loss_case()
    with EventStorage():
        loss = _predictor(use_sigmoid_ce=True).losses((scores, deltas), [proposals])["loss_cls"]
    # One-hot on the 2 foreground columns; the background ROI has all-zero targets.
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    x = scores[:, :2]
    bce = torch.clamp(x, min=0) - x * target + torch.log1p(torch.exp(-x.abs()))
    torch.testing.assert_close(loss, bce.sum() / 3)


def test_losses_without_gt_boxes_and_without_proposals():
    proposals = Instances((40, 40))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    proposals.gt_classes = torch.tensor([2])  # background only, no gt_boxes field
    scores = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    deltas = torch.ones(1, 8, requires_grad=True)
    with EventStorage():
        losses = _predictor().losses((scores, deltas), [proposals])
    assert losses["loss_box_reg"].item() == 0.0
    torch.testing.assert_close(losses["loss_cls"], -F.log_softmax(scores, dim=1)[0, 2])

    empty = Instances((40, 40))
    empty.proposal_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    scores = torch.zeros(0, 3, requires_grad=True)
    deltas = torch.zeros(0, 8, requires_grad=True)
    with EventStorage() as storage:
        losses = _predictor().losses((scores, deltas), [empty])
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()  # still differentiable
    assert "fast_rcnn/cls_accuracy" not in storage.latest()
    with EventStorage():  # a batch of no image at all
        losses = _predictor().losses((scores, deltas), [])
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0


def test_predict_boxes_for_gt_classes_and_shapes():
    proposals, _, _, _, _ = _loss_case()
    deltas = torch.zeros(3, 8)
    deltas[:, 4] = 1.0  # class 1: shift right by w / 10
    scores = torch.zeros(3, 3)
    predictor = _predictor()
    (per_gt,) = predictor.predict_boxes_for_gt_classes((scores, deltas), [proposals])
    # ROI 0 (class 1) and ROI 2 (background, clamped to class 1) move by 1 px and 0.4 px.
    torch.testing.assert_close(per_gt, torch.tensor(
        [[1.0, 0.0, 11.0, 10.0], [5.0, 5.0, 15.0, 25.0], [0.4, 0.0, 4.4, 4.0]]))
    (all_boxes,) = predictor.predict_boxes((scores, deltas), [proposals])
    assert all_boxes.shape == (3, 8)
    (probs,) = predictor.predict_probs((scores, deltas), [proposals])
    torch.testing.assert_close(probs, torch.full((3, 3), 1 / 3))
    assert predictor.predict_boxes((scores, deltas), []) == []


def test_module_layout_forward_and_inference():
    torch.manual_seed(0)
    predictor = _predictor(test_score_thresh=0.2, test_topk_per_image=3)
    assert set(predictor.state_dict()) == {
        "cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"}
    assert predictor.cls_score.out_features == 3 and predictor.bbox_pred.out_features == 8
    agnostic = _predictor(cls_agnostic_bbox_reg=True)
    assert agnostic.bbox_pred.out_features == 4

    proposals = Instances((40, 40))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 35.0]]))
    x = torch.randn(2, 3, 1, 1)  # flattened to (2, 3)
    scores, deltas = predictor(x)
    assert scores.shape == (2, 3) and deltas.shape == (2, 8)
    insts, kept = predictor.inference((scores, deltas), [proposals])
    ref, ref_kept = fast_rcnn_inference(
        [predictor.box2box_transform.apply_deltas(deltas, proposals.proposal_boxes.tensor)],
        [F.softmax(scores, dim=1)], [(40, 40)], 0.2, 0.5, 3)
    assert torch.equal(kept[0], ref_kept[0])
    torch.testing.assert_close(insts[0].scores, ref[0].scores)
    assert len(insts[0]) <= 3


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="box_reg_loss_type"):
        _predictor(box_reg_loss_type="l2")
    with pytest.raises(ValueError, match="use_sigmoid_ce"):
        _predictor(use_fed_loss=True, get_fed_loss_cls_weights=lambda: torch.ones(2))
    with pytest.raises(ValueError, match=r"\(R, K\*4\)"):
        fast_rcnn_inference_single_image(torch.zeros(2, 5), torch.zeros(2, 3), (5, 5), 0.1, 0.5, 1)


def test_fed_loss_only_counts_kept_classes():
    # K = 2 and fed_loss_num_classes = 1: only the gt classes present are counted.
    proposals, scores, deltas, _, _ = _loss_case()
    proposals.gt_classes = torch.tensor([1, 1, 2])
    predictor = _predictor(use_sigmoid_ce=True, use_fed_loss=True, fed_loss_num_classes=1,
                           get_fed_loss_cls_weights=lambda: torch.ones(2))
    with EventStorage():
        loss = predictor.losses((scores, deltas), [proposals])["loss_cls"]
    x = scores[:, 1]
    target = torch.tensor([1.0, 1.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(x, target, reduction="sum") / 3
    torch.testing.assert_close(loss, expected)

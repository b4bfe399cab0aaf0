"""why_missed on hand-built ground truth: an object no anchor covers, one whose (ROI, class) lost
the per-class NMS, one scored below the threshold; and the bad-input checks of the trace."""

from __future__ import annotations

import pytest
import torch

from inspect_fixtures import fixture, tiny, tiny_cfg, tiny_inputs, traced
from workbench import inspect as wi
from workbench.modeling import build_model
from workbench.structures import Boxes, Instances, pairwise_iou

NAME = "mask_rcnn_R_50_FPN"


def _with_gt(inputs, image, boxes, classes):
    """Inputs whose image ``image`` carries ground truth (input px)."""
    out = [dict(x) for x in inputs]
    h, w = out[image]["image"].shape[1:]
    out[image]["instances"] = Instances((h, w), gt_boxes=Boxes(torch.stack(boxes)),
                                        gt_classes=torch.tensor(classes))
    return out


def _nms_lost_case(tr):
    """(image, ROI, class) whose candidate the per-class NMS suppressed, where that ROI is
    also the best-scoring proposal for the class around its own box, and no detection of the
    class overlaps the proposal at IoU >= 0.5 (so a GT there is missed because of the NMS)."""
    sel = tr.box.selection
    for img in range(tr.num_images):
        props = tr.box.proposals[img].proposal_boxes
        cand, kept = sel.candidates[img], sel.nms_kept[img]
        det = sel.instances[img]
        for k in (~kept).nonzero()[:, 0].tolist():
            j, c = cand[k].tolist()
            ious = pairwise_iou(props[[j]], props)[0]
            over = (ious >= 0.5).nonzero()[:, 0]
            if int(over[sel.scores[img][over, c].argmax()]) != j:
                continue
            same = det.pred_classes == c
            if same.any() and float(pairwise_iou(props[[j]], det.pred_boxes[same]).max()) >= 0.5:
                continue
            return img, j, c
    raise AssertionError("no NMS-lost case in the fixture")


def test_why_missed_follows_each_object_to_the_stage_that_lost_it():
    model, inputs, _ = fixture(NAME)
    tr = traced(NAME)
    img, roi, cls = _nms_lost_case(tr)
    props = tr.box.proposals[img].proposal_boxes.tensor
    scores = tr.box.scores[img]
    # A (ROI, class) pair below the threshold, away from every detection of that class.
    low = None
    for j in range(len(props)):
        for c in range(scores.shape[1] - 1):
            ious = pairwise_iou(Boxes(props[[j]]), Boxes(props))[0]
            if float(scores[ious >= 0.5, c].max()) < tr.box.score_thresh:
                low = (j, c)
                break
        if low:
            break
    assert low is not None
    h, w = tr.preprocess.image_sizes[img]
    thin = torch.tensor([w / 2, 4.0, w / 2 + 2.0, h - 4.0])  # 2 px wide: no anchor covers it
    gt_inputs = _with_gt(inputs, img, [thin, props[roi], props[low[0]]], [0, cls, low[1]])
    gtr = wi.trace(model, gt_inputs)
    assert gtr.missed(img) == [0, 1, 2]

    w0 = gtr.why_missed(0, image=img)
    assert w0.lost_at == "anchors" and max(a["iou"] for a in w0.anchors) < 0.5
    assert [a["level"] for a in w0.anchors] == ["p2", "p3", "p4", "p5", "p6"]
    w1 = gtr.why_missed(1, image=img)
    assert w1.lost_at == "nms" and w1.proposal["row"] == roi
    assert w1.proposal["iou"] == pytest.approx(1.0, abs=1e-5)  # the GT is that proposal
    assert "raw detection" in w1.reason
    torch.testing.assert_close(w1.class_scores, scores[roi])
    w2 = gtr.why_missed(2, image=img)
    assert w2.lost_at == "score_thresh"
    assert float(w2.class_scores[low[1]]) < tr.box.score_thresh
    text = repr(w1)
    assert "lost at nms" in text and "best anchor on p2" in text and "proposal" in text
    with pytest.raises(IndexError, match="3 ground-truth objects"):
        gtr.why_missed(3, image=img)
    with pytest.raises(ValueError, match="no ground truth"):
        tr.why_missed(0)


def test_a_detected_object_is_not_missed():
    model, inputs, _ = fixture(NAME)
    tr = traced(NAME)
    out = tr.outputs[0]["instances"]
    box = tr.preprocess.to_input(out.pred_boxes.tensor[:1], 0)[0]
    gtr = wi.trace(model, _with_gt(inputs, 0, [box], [int(out.pred_classes[0])]))
    assert gtr.matches(0)[0].kind == "tp" and gtr.missed(0) == []
    assert gtr.why_missed(0).detected_by == 0


def test_zero_detections_give_empty_results_not_errors():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("faster_rcnn_fpn", ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.0])).eval()
    inputs = tiny_inputs(with_gt=True)
    tr = wi.trace(model, inputs)
    assert all(len(o["instances"]) == 0 for o in tr.outputs)
    p = tr.provenance(0)
    assert len(p) == 0 and p.embeddings.shape[0] == 0 and p.class_boxes.shape[0] == 0
    assert tr.matches(0) == [] and tr.missed(0) == [0, 1]
    assert tr.why_missed(0).lost_at is not None
    with pytest.raises(IndexError, match="has 0 detections"):
        tr.detection(0)


@pytest.mark.parametrize("kwargs, message", [
    ({"score_thresh": 1.5}, "score_thresh must be a number in"),
    ({"score_thresh": float("nan")}, "score_thresh"),
    ({"score_thresh": -0.1}, "score_thresh"),
    ({"nms_thresh": 2.0}, "nms_thresh must be a number in"),
    ({"nms_thresh": "0.5"}, "nms_thresh"),
    ({"topk": 0}, "topk must be a positive int"),
    ({"topk": 2.5}, "topk"),
    ({"topk_candidates": 10}, "topk_candidates does not apply"),
])
def test_rethreshold_refuses_impossible_settings(kwargs, message):
    model, _, _ = tiny("faster_rcnn_fpn")
    with pytest.raises(ValueError, match=message):
        wi.rethreshold(model, traced("tiny:faster_rcnn_fpn"), **kwargs)


@pytest.mark.parametrize("box, message", [
    ([10.0, 10.0, 5.0, 20.0], r"boxes\[0\]\[1\]"),
    ([float("nan"), 0.0, 5.0, 5.0], "finite"),
])
def test_roi_features_refuses_bad_boxes(box, message):
    model, _, _ = tiny("faster_rcnn_fpn")
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], box])
    with pytest.raises(ValueError, match=message):
        wi.roi_features(model, traced("tiny:faster_rcnn_fpn"), [boxes, boxes[:1]])


def test_trace_refuses_a_bad_iou_thresh_and_wrong_proposals():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    with pytest.raises(ValueError, match="iou_thresh"):
        wi.trace(model, inputs, iou_thresh=0.0)
    with pytest.raises(TypeError, match="one Instances per image"):
        wi.trace(model, inputs, proposals=[torch.zeros(2, 4)] * 2)

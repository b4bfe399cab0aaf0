"""Provenance: every final detection points at the proposal, anchor and features it came from.

The checks decode the recorded deltas from the recorded proposal / anchor and compare with the
detection, so a wrong index cannot pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inspect_fixtures import fixture, tiny, traced
from workbench.structures import Boxes

RCNN = ["mask_rcnn_R_50_FPN", "keypoint_rcnn_R_50_FPN", "faster_rcnn_R_50_C4", "panoptic_fpn_R_50",
        "tiny:cascade"]


def _model(name):
    return (tiny(name[5:]) if name.startswith("tiny:") else fixture(name))[0]


def _clip(boxes, size):
    b = Boxes(boxes.clone())
    b.clip(size)
    return b.tensor


def _check_anchor_to_proposal(model, tr, img, p, proposal_boxes):
    rpn, gen = tr.rpn, model.proposal_generator
    assert (p.level >= 0).all() and (p.anchor_index >= 0).all(), "every proposal has an anchor"
    for j in range(len(p)):
        lvl, a = int(p.level[j]), int(p.anchor_index[j])
        anchor = rpn.anchors[lvl].tensor[a]
        assert torch.equal(p.anchor_boxes[j], anchor)
        decoded = gen.box2box_transform.apply_deltas(rpn.deltas[lvl][img, a][None], anchor[None])
        size = tr.preprocess.image_sizes[img]
        torch.testing.assert_close(_clip(decoded, size)[0], proposal_boxes[j], rtol=0, atol=1e-3)
        assert torch.equal(p.objectness[j], rpn.objectness[lvl][img, a])
        # The (y, x, a) cell is consistent with the anchor row.
        y, x, c = p.anchor_yxa[j].tolist()
        W = tr.backbone.features[rpn.in_features[lvl]].shape[-1]
        A = len(rpn.anchors[lvl]) // (W * tr.backbone.features[rpn.in_features[lvl]].shape[-2])
        assert (y * W + x) * A + c == a


@pytest.mark.parametrize("name", RCNN)
def test_rcnn_detections_decode_from_their_proposal_and_anchor(name):
    model = _model(name)
    tr = traced(name)
    heads = model.roi_heads
    last = tr.box.stages[-1]
    predictor = heads.box_predictor[-1] if isinstance(heads.box_predictor, torch.nn.ModuleList) \
        else heads.box_predictor
    total = 0
    for img in range(tr.num_images):
        p = tr.provenance(img)
        out = tr.outputs[img]["instances"]
        total += len(p)
        assert len(p) == len(out) and torch.equal(p.boxes, out.pred_boxes.tensor)
        assert torch.equal(p.scores, out.scores) and torch.equal(p.classes, out.pred_classes)
        offset = sum(len(x) for x in tr.box.proposals[:img])
        g = p.roi_index + offset
        # Detection <- its ROI (for a cascade: the ROI as refined by the previous stages).
        rois = last.proposals[img].proposal_boxes.tensor[p.roi_index]
        decoded = predictor.box2box_transform.apply_deltas(last.deltas[g], rois)
        decoded = decoded.view(len(p), -1, 4)
        cols = p.classes if decoded.shape[1] > 1 else torch.zeros_like(p.classes)
        chosen = decoded[torch.arange(len(p)), cols]
        size = tr.preprocess.image_sizes[img]
        torch.testing.assert_close(_clip(chosen, size), p.boxes_input, rtol=0, atol=1e-3)
        # Exact by construction: the selection's decoded box of the detection's class, clipped,
        # is the detection; the RPN's decoded anchor, clipped, is its proposal.
        cols_exact = p.classes if p.class_boxes.shape[1] > 1 else torch.zeros_like(p.classes)
        assert torch.equal(_clip(p.class_boxes[torch.arange(len(p)), cols_exact], size), p.boxes_input)
        if tr.rpn is not None and tr.rpn.decoded is not None:
            for j in range(len(p)):
                lvl, a = int(p.level[j]), int(p.anchor_index[j])
                assert torch.equal(_clip(tr.rpn.decoded[lvl][img, a][None], size)[0], p.proposal_boxes[j])
        # The class-score vector before NMS gives the detection's score.
        assert torch.equal(p.probs[torch.arange(len(p)), p.classes], p.scores)
        if len(tr.box.stages) == 1:
            torch.testing.assert_close(F.softmax(p.logits, dim=-1), p.probs)
        # Its ROI <- the anchor.
        assert torch.equal(p.proposal_boxes, tr.proposals[img].proposal_boxes.tensor[p.roi_index])
        _check_anchor_to_proposal(model, tr, img, p, p.proposal_boxes)
        # Pooled feature and embedding are those of the ROI; recomputing them agrees.
        assert torch.equal(p.pooled, last.pooled[g]) and torch.equal(p.embeddings, last.embeddings[g])
        with torch.no_grad():
            def maps(names):
                return [tr.backbone.features[f][img:img + 1] for f in names]

            if hasattr(heads, "res5"):
                pooled = heads.pooler(maps(heads.in_features), [Boxes(rois)])
                emb = heads.res5(pooled).mean(dim=[2, 3])
            else:
                pooled = heads.box_pooler(maps(heads.box_in_features), [Boxes(rois)])
                box_head = heads.box_head
                if isinstance(box_head, torch.nn.ModuleList):
                    box_head = box_head[-1]
                emb = box_head(pooled)
        torch.testing.assert_close(pooled, p.pooled)
        torch.testing.assert_close(emb, p.embeddings, rtol=1e-4, atol=1e-5)
        if tr.mask is not None:
            assert p.mask_logits.shape == (len(p), heads.num_classes, 28, 28)
    assert total > 0


def test_detection_record_matches_provenance_row():
    tr = traced("mask_rcnn_R_50_FPN")
    p = tr.provenance(1)
    d = tr.detection(2, image=1)
    assert d.roi_index == int(p.roi_index[2]) and d.level_name == tr.rpn.in_features[int(p.level[2])]
    assert torch.equal(d.embedding, p.embeddings[2]) and d.embedding.shape == (128,)
    assert d.logits.shape == (9,) and d.pooled.shape == (64, 7, 7)
    assert d.score == pytest.approx(float(p.scores[2]))
    assert "from proposal" in repr(d) and "from anchor" in repr(d)
    assert tr.detection(-1, image=1).index == len(p) - 1
    with pytest.raises(IndexError):
        tr.detection(len(p), image=1)


def test_keypoint_provenance_carries_heatmaps():
    tr = traced("keypoint_rcnn_R_50_FPN")
    p = tr.provenance(0)
    assert torch.equal(p.keypoint_heatmaps, tr.instances[0].pred_keypoint_heatmaps[p.rows])


def test_retinanet_detections_decode_from_their_anchor():
    model = _model("retinanet_R_50_FPN")
    tr = traced("retinanet_R_50_FPN")
    for img in range(tr.num_images):
        p = tr.provenance(img)
        assert len(p) > 0 and (p.anchor_index >= 0).all()
        for j in range(len(p)):
            lvl, a = int(p.level[j]), int(p.anchor_index[j])
            deltas = tr.dense.deltas[lvl][img, a]
            decoded = model.box2box_transform.apply_deltas(deltas[None], p.anchor_boxes[j][None])
            torch.testing.assert_close(decoded[0], p.boxes_input[j], rtol=0, atol=1e-3)
            assert torch.equal(p.logits[j], tr.dense.logits[lvl][img, a])
            y, x, _ = p.anchor_yxa[j].tolist()
            assert torch.equal(p.embeddings[j], tr.dense.head_features[lvl][img, :, y, x])
        assert torch.equal(p.probs[torch.arange(len(p)), p.classes], p.scores)


def test_rpn_only_proposals_decode_from_their_anchor():
    model = _model("rpn_R_50_FPN")
    tr = traced("rpn_R_50_FPN")
    p = tr.provenance(0)
    assert len(p) == len(tr.outputs[0]["proposals"])
    sel = torch.arange(0, len(p), 37)  # a spread-out sample keeps this fast
    sub = type(p)(**{**p.__dict__})
    for f in ("level", "anchor_index", "anchor_boxes", "anchor_yxa", "objectness", "boxes_input"):
        setattr(sub, f, getattr(p, f)[sel])
    sub.rows = p.rows[sel]
    _check_anchor_to_proposal(model, tr, 0, sub, sub.boxes_input)


def test_detection_repr_names_the_class_and_keeps_its_id():
    from workbench.inspect.provenance import Provenance, detection_of

    box = torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]])
    p = Provenance(image=0, rows=torch.tensor([0, 1]), boxes=box, boxes_input=box,
                   scores=torch.tensor([0.9, 0.5]), classes=torch.tensor([5, 7]), level_names=[])
    names = ["a", "b", "c", "d", "e", "pentagon"]
    first = repr(detection_of(p, 0, names)).splitlines()[0]
    assert first == "Detection(image=0, index=0, class=pentagon (5), score=0.9000)"
    # An id the names do not cover, and a trace without names: the id alone.
    assert "class=class 7," in repr(detection_of(p, 1, names))
    assert "class=class 5," in repr(detection_of(p, 0))

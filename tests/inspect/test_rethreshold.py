"""rethreshold(): other test settings from a trace equal a fresh model run with those settings."""

from __future__ import annotations

import contextlib

import pytest
import torch

from inspect_fixtures import assert_same, fixture, tiny, traced
from workbench import inspect as wi


@contextlib.contextmanager
def settings(obj, **values):
    """Temporarily set attributes (the model is shared between tests)."""
    old = {k: getattr(obj, k) for k in values}
    try:
        for k, v in values.items():
            setattr(obj, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)


def _fresh(model, inputs, obj, **values):
    with settings(obj, **values), torch.no_grad():
        return model(inputs)


@pytest.mark.parametrize("score, nms, topk", [(0.3, 0.3, 10), (0.02, 0.7, 120)])
def test_rcnn_rethreshold_equals_a_rerun(score, nms, topk):
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN")
    tr = traced("mask_rcnn_R_50_FPN")
    with wi.capture(model, ["backbone", "proposal_generator", "roi_heads.box_head"]) as cap:
        new = wi.rethreshold(model, tr, score_thresh=score, nms_thresh=nms, topk=topk)
    assert not any(cap.outputs.values()), "rethreshold must not run the backbone, RPN or box head"
    expected = _fresh(model, inputs, model.roi_heads.box_predictor, test_score_thresh=score,
                      test_nms_thresh=nms, test_topk_per_image=topk)
    assert_same(new.outputs, expected)
    assert [len(x) for x in new.instances] != [len(x) for x in tr.instances]
    assert new.box.score_thresh == score and tr.box.score_thresh == 0.05
    new.detection(0, image=0)  # provenance works on the new detections


def test_cascade_rethreshold_equals_a_rerun():
    model, inputs, _ = tiny("cascade")
    tr = traced("tiny:cascade")
    new = wi.rethreshold(model, tr, score_thresh=0.26, nms_thresh=0.4, topk=7)
    expected = _fresh(model, inputs, model.roi_heads.box_predictor[-1], test_score_thresh=0.26,
                      test_nms_thresh=0.4, test_topk_per_image=7)
    assert_same(new.outputs, expected)


def test_panoptic_rethreshold_recombines_the_segments():
    model, inputs, _ = fixture("panoptic_fpn_R_50")
    tr = traced("panoptic_fpn_R_50")
    new = wi.rethreshold(model, tr, score_thresh=0.6)
    expected = _fresh(model, inputs, model.roi_heads.box_predictor, test_score_thresh=0.6)
    assert_same(new.outputs, expected)
    assert new.sem_seg.logits is tr.sem_seg.logits  # the semantic head is not run again


def test_retinanet_rethreshold_equals_a_rerun():
    model, inputs, _ = fixture("retinanet_R_50_FPN")
    tr = traced("retinanet_R_50_FPN")
    new = wi.rethreshold(model, tr, score_thresh=0.2, nms_thresh=0.3, topk=20, topk_candidates=50)
    expected = _fresh(model, inputs, model, test_score_thresh=0.2, test_nms_thresh=0.3,
                      max_detections_per_image=20, test_topk_candidates=50)
    assert_same(new.outputs, expected)


def test_rpn_only_rethreshold_equals_a_rerun():
    model, inputs, _ = fixture("rpn_R_50_FPN")
    tr = traced("rpn_R_50_FPN")
    new = wi.rethreshold(model, tr, nms_thresh=0.5, topk=100)
    gen = model.proposal_generator
    expected = _fresh(model, inputs, gen, nms_thresh=0.5,
                      post_nms_topk={True: gen.post_nms_topk[True], False: 100})
    assert_same(new.outputs, expected)
    with pytest.raises(ValueError, match="score_thresh does not apply"):
        wi.rethreshold(model, tr, score_thresh=0.5)

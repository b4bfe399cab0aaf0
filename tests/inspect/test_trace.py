"""trace(): every architecture's outputs equal model(inputs) bit for bit; stages run one at a time."""

from __future__ import annotations

import pytest
import torch

from inspect_fixtures import FIXTURES, assert_same, fixture, tiny, tiny_cfg, tiny_inputs, traced
from workbench import inspect as wi
from workbench.inspect import stages as S
from workbench.modeling import build_model
from workbench.modeling.meta_arch.rcnn import GeneralizedRCNN
from workbench.structures import Boxes, Instances
from workbench.utils.events import EventStorage


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_trace_outputs_equal_model_on_fixtures(name):
    model, inputs, expected = fixture(name)
    tr = traced(name)
    assert_same(tr.outputs, expected)
    assert any(len(o.get("instances", o.get("proposals", []))) for o in tr.outputs), \
        "the fixture should produce detections"


@pytest.mark.parametrize("name", ["cascade", "semantic"])
def test_trace_outputs_equal_model_on_tiny_models(name):
    model, inputs, expected = tiny(name)
    tr = traced("tiny:" + name)
    assert_same(tr.outputs, expected)


def test_trace_stages_have_the_documented_shapes():
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN")
    tr = traced("mask_rcnn_R_50_FPN")
    N = len(inputs)
    pre = tr.preprocess
    assert pre.images.tensor.shape[0] == N and pre.images.tensor.shape[-1] % 32 == 0
    for (h, w), (oh, ow), (sx, sy) in zip(pre.image_sizes, pre.original_sizes, pre.scales):
        assert (sx, sy) == (w / ow, h / oh)
    assert set(tr.backbone.bottom_up) == {"res2", "res3", "res4", "res5"}
    rpn = tr.rpn
    A = model.proposal_generator.anchor_generator.num_anchors[0]
    for f, anchors, obj, deltas in zip(rpn.in_features, rpn.anchors, rpn.objectness, rpn.deltas):
        H, W = tr.backbone.features[f].shape[-2:]
        assert len(anchors) == H * W * A
        assert obj.shape == (N, H * W * A) and deltas.shape == (N, H * W * A, 4)
    for cand, props in zip(rpn.candidates, rpn.proposals):
        assert len(props) <= rpn.post_nms_topk and len(props) <= len(cand)
        assert set(cand.get_fields()) == {"proposal_boxes", "objectness_logits", "level", "anchor_index"}
    stage = tr.box.stages[0]
    R = sum(len(p) for p in tr.proposals)
    K = model.roi_heads.num_classes
    assert stage.pooled.shape == (R, 64, 7, 7) and stage.embeddings.shape == (R, 128)
    assert stage.logits.shape == (R, K + 1) and stage.deltas.shape == (R, 4 * K)
    D = sum(len(x) for x in tr.instances)
    assert tr.mask.logits.shape == (D, K, 28, 28)
    for i in range(N):
        report = tr.box.nms_report(i)
        assert int(report["kept"].sum()) >= len(tr.box.instances[i])
        assert (report["score"] > tr.box.score_thresh).all()
    text = repr(tr)
    for word in ("preprocess", "backbone", "rpn", "box", "mask", "outputs"):
        assert word in text


def test_stage_functions_one_at_a_time_reproduce_the_model():
    model, inputs, expected = fixture("keypoint_rcnn_R_50_FPN")
    with torch.no_grad():
        pre = S.preprocess(model, inputs)
        feats = S.backbone(model, pre)
        props = S.rpn(model, pre, feats)
        box = S.box_head(model, pre, feats, props.proposals)
        heads = S.given_boxes(model, feats, box.instances)
        outputs = GeneralizedRCNN._postprocess(heads.instances, inputs, pre.image_sizes)
    assert_same(outputs, expected)
    assert heads.keypoint.heatmaps.shape[1:] == (17, 56, 56)
    assert not box.instances[0].has("pred_keypoints"), "stages must not modify their inputs"
    with pytest.raises(ValueError, match=r"proposals\[0\] must be an Instances"):
        S.box_head(model, pre, feats, [p.proposal_boxes for p in props.proposals])


def test_hand_made_proposals_continue_from_there():
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN")
    tr = traced("mask_rcnn_R_50_FPN")
    mine = [p[:20] for p in tr.proposals]
    mine[0] = Instances(mine[0].image_size,
                        proposal_boxes=Boxes(torch.tensor([[10.0, 20.0, 200.0, 240.0]])),
                        objectness_logits=torch.tensor([1.0]))
    tr2 = wi.resume(model, tr, proposals=mine)
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        results, _ = model.roi_heads(images, features, mine, None)
        expected = GeneralizedRCNN._postprocess(results, inputs, images.image_sizes)
    assert_same(tr2.outputs, expected)
    assert tr2.rpn is None and tr2.box.proposals[0] is not tr.proposals[0]
    assert_same(tr.outputs, fixture("mask_rcnn_R_50_FPN")[2])  # the original trace is untouched


def test_given_detections_match_model_inference_with_detected_instances():
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN")
    dets = []
    for inp in inputs:
        h, w = inp["image"].shape[1:]
        boxes = torch.tensor([[5.0, 5.0, w / 2, h / 2], [0.0, 10.0, w - 1.0, h - 3.0]])
        dets.append(Instances((h, w), pred_boxes=Boxes(boxes), pred_classes=torch.tensor([1, 3]),
                              scores=torch.tensor([0.9, 0.8])))
    tr = wi.trace(model, inputs, detections=dets)
    with torch.no_grad():
        expected = model.inference(inputs, detected_instances=dets)
    assert_same(tr.outputs, expected)
    assert tr.box is None and tr.mask.logits.shape[0] == 2 * len(inputs)


def test_manual_execution_cannot_skip_normalisation():
    model, inputs, _ = fixture("mask_rcnn_R_50_FPN")
    with pytest.raises(TypeError, match="normalisation and padding"):
        S.backbone(model, inputs[0]["image"][None])


def test_trace_needs_eval_mode_and_restores_nothing_it_did_not_touch():
    model = build_model(tiny_cfg("faster_rcnn_fpn"))
    model.train()
    with pytest.raises(RuntimeError, match="model.eval"):
        wi.trace(model, tiny_inputs())


def test_predictions_and_losses_from_one_call():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("faster_rcnn_fpn")).eval()
    inputs = tiny_inputs(with_gt=True)
    torch.manual_seed(1)
    tr = wi.trace(model, inputs, losses=True)
    assert not model.training, "the model's mode must be restored"
    with torch.no_grad():
        assert_same(tr.outputs, model(inputs))
    torch.manual_seed(1)
    model.train()
    with EventStorage(), torch.no_grad():
        expected = model(inputs)
    model.eval()
    assert set(tr.losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    for k, v in expected.items():
        assert torch.equal(tr.losses[k], v), k
    assert "roi_head/num_fg_samples" in tr.loss_scalars
    with pytest.raises(ValueError, match="ground truth"):
        wi.trace(model, tiny_inputs(), losses=True)


def test_cascade_trace_keeps_every_stage():
    model, inputs, _ = tiny("cascade")
    tr = traced("tiny:cascade")
    stages = tr.box.stages
    assert len(stages) == model.roi_heads.num_cascade_stages == 3
    for prev, cur in zip(stages, stages[1:]):
        for i, props in enumerate(cur.proposals):
            expected = Boxes(prev.boxes[i].clone())
            expected.clip(props.image_size)
            assert torch.equal(props.proposal_boxes.tensor, expected.tensor)
    mean = sum(s.probs[0] for s in stages) / 3
    assert torch.allclose(tr.box.scores[0], mean, atol=1e-6)
    d = tr.detection(0, image=0)
    assert len(d.stage_embeddings) == 3 and torch.equal(d.embedding, d.stage_embeddings[-1])


def test_trace_with_grad_keeps_the_graph():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    tr = wi.trace(model, inputs[:1], grad=True)
    emb = tr.box.stages[0].embeddings
    assert emb.requires_grad
    (g,) = torch.autograd.grad(emb.sum(), tr.backbone.features["p2"])
    assert g.shape == tr.backbone.features["p2"].shape


def test_trace_capture_collects_requested_modules():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    tr = wi.trace(model, inputs, capture=["backbone.bottom_up.res*", "roi_heads.box_head"])
    assert tr.captured["roi_heads.box_head"].shape == tr.box.stages[0].embeddings.shape
    assert torch.equal(tr.captured["backbone.bottom_up.res4"], tr.backbone.bottom_up["res4"])
    assert all(not m._forward_hooks for m in model.modules())


def test_detections_only_stops_after_the_box_branch():
    model, inputs, expected = fixture("panoptic_fpn_R_50")
    tr = wi.trace(model, inputs, detections_only=True)
    assert tr.mask is None and tr.sem_seg is None and tr.box is not None
    for got, want in zip(tr.outputs, expected):
        assert list(got) == ["instances"]
        g, w = got["instances"], want["instances"]
        for f in ("pred_boxes", "scores", "pred_classes"):
            assert_same(g.get(f), w.get(f), f)
        assert not g.has("pred_masks")
    assert torch.equal(tr.provenance(0).embeddings, traced("panoptic_fpn_R_50").provenance(0).embeddings)
    strict = wi.rethreshold(model, tr, score_thresh=0.5)
    assert strict.detections_only and strict.mask is None
    assert torch.equal(strict.outputs[0]["instances"].scores,
                       tr.outputs[0]["instances"].scores[tr.outputs[0]["instances"].scores > 0.5])


def test_pooled_features_recomputed_on_demand_are_the_models():
    model, inputs, _ = fixture("keypoint_rcnn_R_50_FPN")
    tr = wi.trace(model, inputs)
    stage = tr.box.stages[0]
    assert not stage.pool.computed and "on demand" in repr(tr.box)
    heads = model.roi_heads
    with torch.no_grad():
        expected = heads.box_pooler([tr.backbone.features[f] for f in heads.box_in_features],
                                    [p.proposal_boxes for p in tr.proposals])
    rois = torch.tensor([5, 0, 999, 17])
    assert torch.equal(stage.pooled_rows(1, rois), expected[rois + len(tr.proposals[0])])
    assert torch.equal(stage.pooled, expected) and stage.pool.computed
    kp = tr.keypoint.pooled
    assert kp.shape == (sum(len(x) for x in tr.instances), 64, 14, 14)
    with torch.no_grad():
        maps = [tr.backbone.features[f] for f in heads.keypoint_in_features]
        assert torch.equal(kp, heads.keypoint_pooler(maps, [x.pred_boxes for x in tr.instances]))
    # With autograd on, the pooled features are the very tensors the head consumed.
    model2, inputs2, _ = tiny("faster_rcnn_fpn")
    assert wi.trace(model2, inputs2, grad=True).box.stages[0].pool.computed


def test_resume_from_edited_features():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    tr = wi.trace(model, inputs)
    edited = dict(tr.backbone.features)
    edited["p3"] = edited["p3"] * 0.5
    tr2 = wi.resume(model, tr, features=edited)
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        proposals, _ = model.proposal_generator(images, edited, None)
        results, _ = model.roi_heads(images, edited, proposals, None)
        expected = GeneralizedRCNN._postprocess(results, inputs, images.image_sizes)
    assert_same(tr2.outputs, expected)
    assert tr2.backbone.features["p3"] is edited["p3"] and tr.backbone.features["p3"] is not edited["p3"]
    with pytest.raises(ValueError, match="exactly one"):
        wi.resume(model, tr)

"""The trace is the model's own forward, also for a user's subclasses and custom parts.

Each case overrides one of the methods detectron2 projects customise (``_forward_box``,
``predict_proposals``, ``forward_with_given_boxes``, ``_forward_mask``, ``_forward_keypoint``,
the backbone, a registered ROI head, a meta-architecture), so that the model's detections
change; ``trace(...).outputs`` must still equal ``model(inputs)`` bit for bit, its records
must describe what the override did, and what it cannot show is said in ``tr.unavailable``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from inspect_fixtures import SMALL, assert_same, tiny_inputs
from workbench import inspect as wi
from workbench.model_zoo import get_config
from workbench.modeling import build_model
from workbench.modeling.meta_arch.build import META_ARCH_REGISTRY
from workbench.modeling.meta_arch.rcnn import GeneralizedRCNN
from workbench.modeling.proposal_generator.rpn import RPN
from workbench.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from workbench.modeling.roi_heads.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from workbench.structures import Boxes

_names = itertools.count()


def _cfg(**extra):
    cfg = get_config("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(SMALL + ["MODEL.MASK_ON", True, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                                 "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 5])
    for k, v in extra.items():
        cfg.merge_from_list([k, v])
    return cfg


def _model(cfg=None, roi_heads_cls=None, rpn_cls=None):
    torch.manual_seed(0)
    model = build_model(cfg or _cfg()).eval()
    if roi_heads_cls is not None:
        model.roi_heads.__class__ = roi_heads_cls
    if rpn_cls is not None:
        model.proposal_generator.__class__ = rpn_cls
    return model


def _check(model, inputs=None, stock=None):
    """trace == model(inputs) bit for bit (and differs from the stock model when given)."""
    inputs = inputs or tiny_inputs()
    with torch.no_grad():
        expected = model(inputs)
        tr = wi.trace(model, inputs)
    assert_same(tr.outputs, expected)
    if stock is not None:
        with torch.no_grad():
            plain = stock(inputs)
        assert [len(o["instances"]) for o in plain] != [len(o["instances"]) for o in expected], \
            "the override should change the detections"
    return tr


class TopProposalsHeads(StandardROIHeads):
    """Box branch on the 7 best proposals only (then the stock code)."""

    def _forward_box(self, features, proposals):
        return super()._forward_box(features, [p[:7] for p in proposals])


def test_forward_box_override_is_what_the_trace_shows():
    tr = _check(_model(roi_heads_cls=TopProposalsHeads), stock=_model())
    assert [len(p) for p in tr.box.proposals] == [7, 7]
    for img in range(tr.num_images):
        p = tr.provenance(img)
        assert len(p) and (p.roi_index < 7).all()
        # Exact: the detection's box is its ROI's decoded box for its class, clipped.
        chosen = Boxes(p.class_boxes[torch.arange(len(p)), p.classes].clone())
        chosen.clip(tr.preprocess.image_sizes[img])
        assert torch.equal(chosen.tensor, p.boxes_input)
    assert not tr.unavailable


class ReplacedBoxBranch(StandardROIHeads):
    """A box branch written from scratch, recording nothing, keeping the 3 best per image."""

    def _forward_box(self, features, proposals):
        maps = [features[f] for f in self.box_in_features]
        x = self.box_head(self.box_pooler(maps, [p.proposal_boxes for p in proposals]))
        predictions = self.box_predictor(x)
        boxes = self.box_predictor.predict_boxes(predictions, proposals)
        scores = self.box_predictor.predict_probs(predictions, proposals)
        return fast_rcnn_inference(boxes, scores, [p.image_size for p in proposals], 0.0, 0.5, 3)[0]


def test_unrecorded_box_branch_still_runs_and_says_what_it_cannot_show():
    tr = _check(_model(roi_heads_cls=ReplacedBoxBranch), stock=_model())
    assert tr.box is None and "box" in tr.unavailable and "_forward_box" in tr.unavailable["box"]
    assert "no box" in repr(tr)
    p = tr.provenance(0)  # what is known is still there; the ROI history is not
    assert len(p) == len(tr.outputs[0]["instances"]) <= 3
    assert p.roi_index is None and p.embeddings is None
    assert tr.mask is not None and tr.mask.logits.shape[0] == sum(len(x) for x in tr.instances)


class FilteredAfterSelection(StandardROIHeads):
    """The stock box branch, then a score filter: the rows no longer match the selection's."""

    def _forward_box(self, features, proposals):
        return [x[x.scores > x.scores.median()] for x in super()._forward_box(features, proposals)]


def test_detections_changed_after_the_selection_lose_their_roi_not_their_truth():
    tr = _check(_model(roi_heads_cls=FilteredAfterSelection), stock=_model())
    assert "provenance" in tr.unavailable
    assert tr.provenance(0).roi_index is None  # never a wrong ROI


class FirstProposalsRPN(RPN):
    def predict_proposals(self, anchors, logits, deltas, image_sizes):
        return [p[:11] for p in super().predict_proposals(anchors, logits, deltas, image_sizes)]


class ReversedRPN(RPN):
    """predict_proposals reversed: the selection's own order no longer holds."""

    def predict_proposals(self, anchors, logits, deltas, image_sizes):
        return [p[torch.arange(len(p) - 1, -1, -1)]
                for p in super().predict_proposals(anchors, logits, deltas, image_sizes)]


@pytest.mark.parametrize("rpn_cls", [FirstProposalsRPN, ReversedRPN])
def test_predict_proposals_override(rpn_cls):
    tr = _check(_model(rpn_cls=rpn_cls), stock=_model() if rpn_cls is FirstProposalsRPN else None)
    assert tr.rpn.proposals[0] is tr.box.proposals[0]
    if rpn_cls is FirstProposalsRPN:
        assert [len(p) for p in tr.rpn.proposals] == [11, 11]
    # The selection's proposals are not the ones returned: anchors unknown, never wrong.
    assert tr.rpn.selection is None and "rpn.selection" in tr.unavailable
    p = tr.provenance(0)
    assert p.roi_index is not None and p.level is not None and (p.level == -1).all()


class MasksOnlyForConfident(StandardROIHeads):
    def forward_with_given_boxes(self, features, instances):
        instances = [x[x.scores > 0.3] for x in instances]
        return super().forward_with_given_boxes(features, instances)


class HalfMasks(StandardROIHeads):
    def _forward_mask(self, features, instances):
        out = super()._forward_mask(features, instances)
        for x in out:
            x.pred_masks = x.pred_masks * 0.5
        return out


class ShiftedKeypoints(StandardROIHeads):
    def _forward_keypoint(self, features, instances):
        out = super()._forward_keypoint(features, instances)
        for x in out:
            x.pred_keypoints = x.pred_keypoints + 1.0
        return out


@pytest.mark.parametrize("cls", [MasksOnlyForConfident, HalfMasks, ShiftedKeypoints])
def test_mask_and_keypoint_overrides(cls):
    tr = _check(_model(roi_heads_cls=cls))
    assert tr.mask is not None and tr.keypoint is not None
    assert tr.mask.logits.shape[0] == sum(len(x) for x in tr.instances)
    if cls is MasksOnlyForConfident:
        assert all((x.scores > 0.3).all() for x in tr.instances)
        assert "provenance" in tr.unavailable
    else:
        p = tr.provenance(0)
        assert p.mask_logits.shape[0] == len(p) and p.keypoint_heatmaps.shape[0] == len(p)


def test_backbone_override_is_what_the_heads_saw():
    model = _model()
    inner = model.backbone

    class Dimmed(type(inner)):
        def forward(self, x):
            return {k: v * 0.5 for k, v in super().forward(x).items()}

    inner.__class__ = Dimmed
    tr = _check(model)
    with torch.no_grad():
        direct = model.backbone(tr.preprocess.images.tensor)
    assert all(torch.equal(direct[k], tr.backbone.features[k]) for k in direct)


def _register(registry, name, cls, request):
    """Register ``cls`` as a user would, and take it out again after the test (other tests check
    that every registered architecture is covered)."""
    registry.register(type(name, (cls,), {}))
    request.addfinalizer(lambda: registry._obj_map.pop(name, None))


def test_registered_custom_roi_head_and_meta_architecture(request):
    heads_name, arch_name = f"TopProposalsHeads{next(_names)}", f"NotedRCNN{next(_names)}"
    _register(ROI_HEADS_REGISTRY, heads_name, TopProposalsHeads, request)

    class NotedRCNN(GeneralizedRCNN):
        """A meta-architecture subclass: dimmer input, and a note on every output."""

        def preprocess_image(self, batched_inputs):
            images = super().preprocess_image(batched_inputs)
            images.tensor.mul_(0.9)
            return images

        def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
            outputs = super().inference(batched_inputs, detected_instances, do_postprocess)
            for o in outputs:
                o["note"] = "noted"
            return outputs

    _register(META_ARCH_REGISTRY, arch_name, NotedRCNN, request)
    cfg = _cfg(**{"MODEL.ROI_HEADS.NAME": heads_name, "MODEL.META_ARCHITECTURE": arch_name})
    tr = _check(_model(cfg), stock=_model())
    assert all(o["note"] == "noted" for o in tr.outputs)
    assert [len(p) for p in tr.box.proposals] == [7, 7]
    assert len(tr.provenance(1)) == len(tr.outputs[1]["instances"])


def test_a_forward_without_stage_points_still_traces_its_outputs():
    class OpaqueRCNN(GeneralizedRCNN):
        def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
            images = self.preprocess_image(batched_inputs)
            features = self.backbone(images.tensor)
            proposals, _ = self.proposal_generator(images, features, None)
            results, _ = self.roi_heads(images, features, proposals, None)
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)

    model = _model()
    model.__class__ = OpaqueRCNN
    tr = _check(model)
    assert tr.preprocess is None and "preprocess/backbone" in tr.unavailable
    assert tr.rpn is not None and tr.box is not None  # the parts still record
    with pytest.raises(ValueError, match="never reached the stage point 'proposals'"):
        wi.trace(model, tiny_inputs(), proposals=[p[:5] for p in tr.rpn.proposals])


class OwnInference(StandardROIHeads):
    """A predictor whose inference is replaced: no box selection is recorded."""

    def _forward_box(self, features, proposals):
        maps = [features[f] for f in self.box_in_features]
        predictions = self.box_predictor(self.box_head(
            self.box_pooler(maps, [p.proposal_boxes for p in proposals])))
        boxes = self.box_predictor.predict_boxes(predictions, proposals)
        scores = self.box_predictor.predict_probs(predictions, proposals)
        return fast_rcnn_inference(boxes, scores, [p.image_size for p in proposals], 0.0, 0.5, 50)[0]


def test_rethreshold_never_falls_back_to_another_selection():
    model = _model(roi_heads_cls=OwnInference)
    tr = _check(model)
    with pytest.raises(ValueError, match="no recorded selection"):
        wi.rethreshold(model, tr, nms_thresh=0.1)
    assert model.proposal_generator.nms_thresh == 0.7  # untouched


def test_resume_keeps_what_the_trace_was_given():
    model, inputs = _model(), tiny_inputs()
    with torch.no_grad():
        tr = wi.trace(model, inputs)
        given = wi.trace(model, inputs, proposals=[p[:3] for p in tr.proposals])
        dets = wi.trace(model, inputs, detections=[x[:2] for x in tr.box.instances])
    again = wi.resume(model, given, features=dict(given.backbone.features))
    assert [len(p) for p in again.proposals] == [3, 3] and again.rpn is None
    assert_same(again.outputs, given.outputs)
    again = wi.resume(model, dets, features=dict(dets.backbone.features))
    assert_same(again.outputs, dets.outputs)


def test_a_wrapper_running_the_model_per_image_is_refused_not_mixed_up():
    model = _model()

    class PerImage(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batch):
            return [o for b in batch for o in self.inner([b])]

    with pytest.raises(ValueError, match="ran 2 times"):
        wi.trace(PerImage(model).eval(), tiny_inputs())


def test_a_cascade_stage_that_records_nothing_leaves_the_box_branch_out():
    from inspect_fixtures import tiny_cfg
    from workbench.modeling.roi_heads.cascade_rcnn import CascadeROIHeads

    class QuietStages(CascadeROIHeads):
        def _run_stage(self, features, proposals, stage):
            x = self.box_pooler(features, [p.proposal_boxes for p in proposals])
            return self.box_predictor[stage](self.box_head[stage](x))

    torch.manual_seed(0)
    model = build_model(tiny_cfg("cascade")).eval()
    model.roi_heads.__class__ = QuietStages
    tr = _check(model)
    assert tr.box is None and "box" in tr.unavailable


def test_training_mode_records_and_substitutes_nothing():
    from workbench.modeling.recording import record_stages
    from workbench.utils.events import EventStorage

    from inspect_fixtures import tiny_cfg

    torch.manual_seed(0)
    model = build_model(tiny_cfg("faster_rcnn_fpn")).train()
    try:
        with record_stages(substitutes={"backbone": None}) as rec, EventStorage():
            losses = model(tiny_inputs(with_gt=True))
    finally:
        model.eval()
    assert rec.entries == [] and not rec.used and all(torch.isfinite(v) for v in losses.values())


def test_rethreshold_and_resume_refuse_another_model():
    a, b = _model(), _model()
    tr = wi.trace(a, tiny_inputs())
    with pytest.raises(ValueError, match="another model"):
        wi.rethreshold(b, tr, score_thresh=0.3)
    with pytest.raises(ValueError, match="another model"):
        wi.resume(b, tr, features=dict(tr.backbone.features))

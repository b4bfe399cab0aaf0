"""FCOS: structure, point assignment and targets by hand, losses by hand, tiny end to end, trace."""

from __future__ import annotations

import math

import pytest
import torch

from workbench import inspect as wi
from workbench.layers import ShapeSpec
from workbench.modeling import FCOS as ExportedFCOS
from workbench.modeling.backbone import FPN, BasicStem, ResNet
from workbench.modeling.backbone.fpn import LastLevelP6P7
from workbench.modeling.backbone.resnet import BasicBlock
from workbench.modeling.box_regression import Box2BoxTransformLinear
from workbench.modeling.meta_arch import META_ARCH_REGISTRY
from workbench.modeling.meta_arch.fcos import FCOS, FCOSHead
from workbench.structures import Boxes, Instances
from workbench.utils.events import EventStorage

K = 3  # classes
C = 32  # FPN width (GroupNorm needs a multiple of 32)
LEVELS = ["p3", "p4", "p5", "p6", "p7"]


def tiny_fcos(num_classes: int = K) -> FCOS:
    """ResNet (4 one-block stages) + FPN with P6/P7 from P5 + a GN head of two convs."""
    stages = [ResNet.make_stage(BasicBlock, 1, in_channels=ci, out_channels=co, stride_per_block=[s],
                                norm="FrozenBN")
              for ci, co, s in [(8, 8, 1), (8, 16, 2), (16, 24, 2), (24, 32, 2)]]
    bottom_up = ResNet(BasicStem(3, 8, norm="FrozenBN"), stages, out_features=["res3", "res4", "res5"])
    backbone = FPN(bottom_up, ["res3", "res4", "res5"], C, top_block=LastLevelP6P7(C, C, "p5"))
    head = FCOSHead(input_shape=[ShapeSpec(channels=C)] * 5, conv_dims=[C, C],
                    num_classes=num_classes, norm="GN")
    return FCOS(backbone=backbone, head=head, head_in_features=LEVELS, num_classes=num_classes,
                pixel_mean=[103.53, 116.28, 123.675], pixel_std=[1.0, 1.0, 1.0])


def make_inputs(num_gt: int = 2, with_size: bool = False):
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]])[:num_gt])
        inst.gt_classes = torch.tensor([0, 2])[:num_gt]
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g).float(), "instances": inst}
        if with_size:
            d.update(height=2 * h, width=2 * w)
        batch.append(d)
    return batch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = tiny_fcos().eval()
    m.test_score_thresh = 0.0  # a random head scores ~0.07: keep candidates
    return m


def point_boxes(stride, centers):
    """Square point boxes of side ``stride`` centred on ``centers``."""
    c = torch.tensor(centers, dtype=torch.float32)
    return Boxes(torch.cat([c - stride / 2, c + stride / 2], dim=1))


# -- structure -------------------------------------------------------------------------------

def test_structure_names_and_defaults(model):
    assert ExportedFCOS is FCOS
    assert "FCOS" not in META_ARCH_REGISTRY  # as detectron2: built from a LazyConfig only
    names = {k for k in model.state_dict() if k.startswith("head.")}
    # (conv, GN, ReLU) x 2 per tower, then the three predictors: detectron2's names.
    assert names == {f"head.{t}.{i}.{p}" for t in ("cls_subnet", "bbox_subnet") for i in (0, 1, 3, 4)
                     for p in ("weight", "bias")} | {
        f"head.{n}.{p}" for n in ("cls_score", "bbox_pred", "ctrness") for p in ("weight", "bias")}
    h = model.head
    assert h.cls_score.weight.shape == (K, C, 3, 3) and h.bbox_pred.weight.shape == (4, C, 3, 3)
    assert h.ctrness.weight.shape == (1, C, 3, 3) and not h.ctrness.bias.any()
    assert torch.allclose(h.cls_score.bias, torch.full((K,), -math.log(99.0)))
    assert isinstance(model.box2box_transform, Box2BoxTransformLinear)
    assert model.box2box_transform.normalize_by_size
    ag = model.anchor_generator
    assert ag.num_cell_anchors == [1] * 5 and ag.strides == [8, 16, 32, 64, 128] and ag.offset == 0.5
    fresh = tiny_fcos()
    assert (fresh.test_score_thresh, fresh.test_nms_thresh, fresh.test_topk_candidates,
            fresh.max_detections_per_image, fresh.center_sampling_radius) == (0.2, 0.6, 1000, 100, 1.5)
    assert fresh.loss_normalizer == 300


def test_points_are_stride_squares_centred_on_the_cells(model):
    feats = [torch.zeros(1, C, 3, 5), torch.zeros(1, C, 2, 3)]
    anchors = model.anchor_generator(feats + [torch.zeros(1, C, 1, 1)] * 3)
    assert [len(a) for a in anchors] == [15, 6, 1, 1, 1]
    y, x = 2, 3
    # Row y*W + x is cell (y, x): a stride-8 square centred on ((x + .5) * 8, (y + .5) * 8).
    assert anchors[0].tensor[y * 5 + x].tolist() == [24.0, 16.0, 32.0, 24.0]
    assert anchors[1].tensor[4].tolist() == [16.0, 16.0, 32.0, 32.0]


def test_clear_errors(model):
    with pytest.raises(ValueError, match="built for 5 levels, got 2"):
        model.head([torch.zeros(1, C, 4, 4)] * 2)
    with pytest.raises(ValueError, match="num_classes > 0"):
        FCOS(backbone=model.backbone, head=model.head, num_classes=0, pixel_mean=[0.0] * 3,
             pixel_std=[1.0] * 3)
    with pytest.raises(KeyError, match="not backbone outputs"):
        FCOS(backbone=model.backbone, head=model.head, head_in_features=["p2"], num_classes=K,
             pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)


# -- training targets by hand ----------------------------------------------------------------

# Ground truth of the hand case: box, class.
GT = {
    "A": ([0.0, 0.0, 40.0, 40.0], 0),  # centre (20, 20), area 1600
    "B": ([100.0, 100.0, 104.0, 140.0], 1),  # thin: a point beside it passes centre sampling
    "C": ([200.0, 200.0, 400.0, 400.0], 2),  # max distance 100 from its centre: level 1's range
    "D": ([0.0, 0.0, 60.0, 60.0], 1),  # contains A, larger
    "E": ([0.0, 0.0, 2000.0, 2000.0], 0),  # huge: only the last level (no upper bound)
    "F": ([500.0, 500.0, 502.0, 502.0], 2),  # tiny: only the first level (no lower bound)
}


def hand_case():
    anchors = [
        point_boxes(8, [[20, 20], [4, 4], [28, 20], [108, 120], [300, 300], [24, 24], [501, 501]]),
        point_boxes(16, [[300, 300], [330, 300]]),
        point_boxes(32, [[300, 300], [1000, 1000]]),
    ]
    gt = Instances((2000, 2000))
    gt.gt_boxes = Boxes(torch.tensor([GT[n][0] for n in GT]))
    gt.gt_classes = torch.tensor([GT[n][1] for n in GT])
    return anchors, gt


def test_label_anchors_by_hand(model):
    anchors, gt = hand_case()
    empty = Instances((100, 100))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    labels, boxes = model.label_anchors(anchors, [gt, empty])
    # Level 0 (stride 8, range (0, 64), radius 12 px):
    #   (20,20) A and D qualify, A is smaller; (4,4) 16 px from A's centre: outside the radius;
    #   (28,20) A; (108,120) near B's centre but outside B; (300,300) C's max distance 100 > 64;
    #   (24,24) A over D; (501,501) F, max distance 1 (above the first level's lower bound 0).
    # Level 1 (stride 16, range (64, 128), radius 24): (300,300) C; (330,300) 30 px off C's centre.
    # Level 2 (stride 32, range (128, inf)): (300,300) C's 100 < 128; (1000,1000) E's 1000.
    bg = K
    assert labels[0].tolist() == [0, bg, 0, bg, bg, 0, 2] + [2, bg] + [bg, 0]
    expected_box = {0: "A", 2: "A", 5: "A", 6: "F", 7: "C", 10: "E"}
    for row, name in expected_box.items():
        assert boxes[0][row].tolist() == GT[name][0], row
    assert labels[1].tolist() == [bg] * 11 and boxes[1].shape == (11, 4) and not boxes[1].any()


def test_center_sampling_radius_widens_the_positives(model):
    anchors, gt = hand_case()
    try:
        model.center_sampling_radius = 3.5  # 28 px at stride 8: (4, 4) is now near enough to A
        labels, boxes = model.label_anchors(anchors, [gt])
    finally:
        model.center_sampling_radius = 1.5
    assert labels[0][1] == 0 and boxes[0][1].tolist() == GT["A"][0]


def test_match_quality_prefers_the_smallest_box(model):
    anchors, gt = hand_case()
    q = model._match_anchors(gt.gt_boxes, anchors)  # (M, R)
    assert q.shape == (6, 11)
    # Point (20, 20) qualifies for A and D; the score is 1e8 - area.
    assert q[0, 0] == pytest.approx(1e8 - 1600) and q[3, 0] == pytest.approx(1e8 - 3600)
    assert q[:, 3].eq(0).all()


def test_label_anchors_needs_gt_fields(model):
    anchors, _ = hand_case()
    with pytest.raises(KeyError, match="gt_classes"):
        bad = Instances((10, 10))
        bad.gt_boxes = Boxes(torch.zeros(1, 4))
        model.label_anchors(anchors, [bad])


def test_centerness_targets_by_hand(model):
    anchors = [point_boxes(8, [[20, 30], [20, 20], [5, 20]])]
    gt = torch.tensor([[0.0, 10.0, 40.0, 50.0]] * 3)
    # (l, t, r, b): (20, 20, 20, 20) at the centre -> 1; (20, 10, 20, 30) -> sqrt(1 * 1/3);
    # (5, 10, 35, 30) -> sqrt(5/35 * 10/30) = sqrt(1/21). Dividing by the stride cancels out.
    t = model.compute_ctrness_targets(anchors, [gt, gt.flip(0)])
    assert t.shape == (2, 3)
    expected = torch.tensor([1.0, math.sqrt(1 / 3), math.sqrt(1 / 21)])
    torch.testing.assert_close(t[0], expected)
    torch.testing.assert_close(t[1, 1], expected[1])  # each image uses its own boxes
    assert model.compute_ctrness_targets(anchors, []).shape == (0, 3)


def test_losses_by_hand():
    """Zero logits and deltas; centerness logit 1 at the positive point."""
    m = tiny_fcos()
    anchors = [point_boxes(8, [[20, 20], [60, 60]])]
    gt_labels = [torch.tensor([1, K])]
    gt_boxes = [torch.tensor([[0.0, 10.0, 40.0, 50.0], [0.0, 0.0, 0.0, 0.0]])]
    pred_logits = [torch.zeros(1, 2, K)]
    pred_deltas = [torch.zeros(1, 2, 4)]
    pred_ctr = [torch.tensor([[[1.0], [-3.0]]])]
    with EventStorage() as storage:
        losses = m.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_ctr)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert storage.latest()["num_pos_anchors"][0] == 1.0
    normalizer = 0.9 * 300 + 0.1 * 1
    # Focal, zero logits: each (point, class) term is alpha_t * (1/2)^2 * ln 2; alpha_t is 0.25
    # for the positive's class and 0.75 for the other 5 pairs (no point is ignored).
    focal = (0.25 + 5 * 0.75) * 0.25 * math.log(2)
    assert losses["loss_fcos_cls"].item() == pytest.approx(focal / normalizer, rel=1e-6)
    # Zero distances decode to the point itself: no overlap, and the enclosing box is the
    # ground truth, so GIoU = 0 and the loss is 1.
    assert losses["loss_fcos_loc"].item() == pytest.approx(1 / normalizer, rel=1e-6)
    # BCE with logits at z = 1 against the centerness target t = sqrt(1/3): log(1 + e) - t.
    ctr = math.log(1 + math.e) - math.sqrt(1 / 3)
    assert losses["loss_fcos_ctr"].item() == pytest.approx(ctr / normalizer, rel=1e-6)
    assert m.loss_normalizer == pytest.approx(normalizer)


# -- end to end ------------------------------------------------------------------------------

def test_tiny_fcos_trains_two_steps_with_gradient_everywhere():
    torch.manual_seed(0)
    m = tiny_fcos().train()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    inputs = make_inputs()
    for step in range(2):
        with EventStorage(step) as storage:
            losses = m(inputs)
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
        assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
        assert storage.latest()["num_pos_anchors"][0] > 0
        opt.zero_grad()
        sum(losses.values()).backward()
        missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        assert all(torch.isfinite(p.grad).all() for p in params)
        opt.step()
    assert m.loss_normalizer != 300


def test_training_with_images_without_ground_truth():
    torch.manual_seed(0)
    m = tiny_fcos().train()
    with EventStorage() as storage:
        losses = m(make_inputs(num_gt=0))
    assert losses["loss_fcos_loc"].item() == 0.0 and losses["loss_fcos_ctr"].item() == 0.0
    assert torch.isfinite(losses["loss_fcos_cls"]) and losses["loss_fcos_cls"] > 0
    assert storage.latest()["num_pos_anchors"][0] == 0
    sum(losses.values()).backward()
    assert torch.isfinite(m.head.cls_score.weight.grad).all()


def test_inference_outputs(model):
    m = model
    m.max_detections_per_image = 7
    try:
        with torch.no_grad():
            out = m(make_inputs(with_size=True))
    finally:
        m.max_detections_per_image = 100
    for o, size in zip(out, [(128, 192), (160, 128)]):
        inst = o["instances"]
        assert inst.image_size == size and 0 < len(inst) <= 7
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
        assert (inst.scores[:-1] >= inst.scores[1:]).all() and (inst.scores <= 1).all()
        assert inst.pred_classes.max() < K


def test_score_threshold_applies_to_the_geometric_mean(model):
    with torch.no_grad():
        tr = wi.trace(model, make_inputs())
    s = torch.cat([x[0].flatten() for x in tr.dense.scores])
    thresh = float(s.quantile(0.99))
    try:
        model.test_score_thresh = thresh
        with torch.no_grad():
            out = model(make_inputs())
    finally:
        model.test_score_thresh = 0.0
    scores = out[0]["instances"].scores
    assert len(scores) > 0 and (scores > thresh).all()


# -- trace and provenance --------------------------------------------------------------------

def assert_same_instances(a: Instances, b: Instances):
    assert a.image_size == b.image_size and list(a.get_fields()) == list(b.get_fields())
    for k, v in b.get_fields().items():
        va = a.get(k)
        va, v = (va.tensor, v.tensor) if isinstance(v, Boxes) else (va, v)
        assert va.dtype == v.dtype and torch.equal(va, v), k


def test_trace_outputs_are_the_model_outputs_bit_for_bit(model):
    inputs = make_inputs(with_size=True)
    with torch.no_grad():
        want = model(inputs)
    tr = wi.trace(model, inputs)
    assert tr.architecture == "retinanet"  # trace's name for any dense detector
    assert len(tr.outputs) == len(want)
    for got, exp in zip(tr.outputs, want):
        assert list(got) == ["instances"]
        assert_same_instances(got["instances"], exp["instances"])
    d = tr.dense
    # The batch is padded to 96 x 96 (FPN size divisibility 32): 12 x 12 points on p3, ...
    assert d.in_features == LEVELS and [len(a) for a in d.anchors] == [144, 36, 9, 4, 1]
    assert [tuple(x.shape) for x in d.extra["centerness"]][:2] == [(2, 144, 1), (2, 36, 1)]
    assert [tuple(x.shape) for x in d.scores][:2] == [(2, 144, K), (2, 36, K)]
    assert len(d.selections) == 2 and d.topk == 100 and d.score_thresh == 0.0


def test_detection_provenance_gives_its_level_and_location(model):
    tr = wi.trace(model, make_inputs())
    d = tr.dense
    p = tr.provenance(0)
    assert len(p) > 0 and (p.anchor_index >= 0).all() and (p.level >= 0).all()
    for j in range(min(len(p), 10)):
        lvl, a = int(p.level[j]), int(p.anchor_index[j])
        stride = 8 * 2 ** lvl
        y, x, cell = p.anchor_yxa[j].tolist()
        W = tr.backbone.features[LEVELS[lvl]].shape[-1]
        assert cell == 0 and a == y * W + x
        assert p.anchor_boxes[j].tolist() == [x * stride, y * stride, (x + 1) * stride, (y + 1) * stride]
        decoded = model.box2box_transform.apply_deltas(d.deltas[lvl][0, a][None], p.anchor_boxes[j][None])
        torch.testing.assert_close(decoded[0], p.boxes_input[j], rtol=0, atol=1e-4)
        cls = int(p.classes[j])
        logit, ctr = d.logits[lvl][0, a, cls], d.extra["centerness"][lvl][0, a, 0]
        torch.testing.assert_close(p.scores[j], torch.sqrt(logit.sigmoid() * ctr.sigmoid()))
        assert torch.equal(p.logits[j], d.logits[lvl][0, a])
        assert torch.equal(p.embeddings[j], d.head_features[lvl][0, :, y, x])
    # probs are the scores the selection ranked, so the detection's score is exactly its entry.
    assert torch.equal(p.probs[torch.arange(len(p)), p.classes], p.scores)
    det = tr.detection(0)
    assert det.level_name == LEVELS[det.level] and det.anchor_yxa is not None
    with pytest.raises(ValueError, match="need the centerness"):
        d.scores_of(d.logits[0][0])


def test_rethreshold_and_why_missed_run_the_fcos_selection(model):
    inputs = make_inputs()
    tr = wi.trace(model, inputs)
    loose = wi.rethreshold(model, tr, score_thresh=0.06, topk=5)
    try:
        model.test_score_thresh, model.max_detections_per_image = 0.06, 5
        with torch.no_grad():
            want = model(inputs)
    finally:
        model.test_score_thresh, model.max_detections_per_image = 0.0, 100
    for got, exp in zip(loose.outputs, want):
        assert_same_instances(got["instances"], exp["instances"])
    w = tr.why_missed(0, image=0)
    # The class scores are read at the assigned point that scores the object's class best.
    assert w.assigned, w
    top = max(w.assigned, key=lambda p: p["score"])
    lvl = LEVELS.index(top["level"])
    assert torch.equal(w.class_scores, tr.dense.scores[lvl][0][top["anchor"]])


def _gt_inputs(box, cls):
    g = torch.Generator().manual_seed(0)
    inst = Instances((96, 96), gt_boxes=Boxes(torch.tensor([box])), gt_classes=torch.tensor([cls]))
    return [{"image": torch.randint(0, 256, (3, 96, 96), generator=g).float(), "instances": inst}
            for _ in range(2)]


def test_why_missed_judges_fcos_by_its_own_point_assignment(model):
    # A wide, flat object: no point's box reaches IoU 0.5, yet FCOS's centre sampling and scale
    # ranges give it positive points, so "no anchor reaches IoU" would be the wrong verdict.
    inputs = _gt_inputs([10.0, 40.0, 90.0, 50.0], 1)
    tr = wi.trace(model, inputs)
    w = tr.why_missed(0, image=0)
    assert max(a["iou"] for a in w.anchors) < 0.5  # the IoU view would blame the anchors
    anchors = model.anchor_generator([tr.backbone.features[f] for f in LEVELS])
    labels = model.label_anchors(anchors, [inputs[0]["instances"]])[0][0]
    want = (labels == 1).nonzero()[:, 0]
    assert len(want) == 3
    offsets = [0]
    for a in anchors:
        offsets.append(offsets[-1] + len(a))
    got = sorted(offsets[LEVELS.index(p["level"])] + p["anchor"] for p in w.assigned)
    assert got == want.tolist()
    assert w.lost_at != "anchors" and "no anchor reaches IoU" not in w.reason
    assert "3 assigned anchors" in w.reason and "assigned by the model: 3 anchors" in repr(w)


def test_why_missed_follows_a_user_override_of_label_anchors(model):
    class NoPoints(FCOS):  # a subclass whose assignment gives this object nothing
        def label_anchors(self, anchors, gt_instances):
            labels, boxes = super().label_anchors(anchors, gt_instances)
            return [torch.full_like(x, self.num_classes) for x in labels], boxes

    sub = NoPoints(backbone=model.backbone, head=model.head, head_in_features=LEVELS,
                   num_classes=K, pixel_mean=[103.53, 116.28, 123.675],
                   pixel_std=[1.0, 1.0, 1.0]).eval()
    sub.test_score_thresh = 0.0
    tr = wi.trace(sub, _gt_inputs([10.0, 40.0, 90.0, 50.0], 1))
    w = tr.why_missed(0, image=0)
    assert w.assigned == [] and w.lost_at == "anchors"
    assert "NoPoints.label_anchors assigns it no anchor" in w.reason


def test_scores_at_refuses_out_of_range_levels_and_anchors(model):
    tr = wi.trace(model, make_inputs())
    d = tr.dense
    R0 = d.scores[0].shape[1]
    assert torch.equal(d.scores_at(0, 0, 5), d.scores[0][0][5])
    assert d.scores_at(0, 0, -1).isnan().all() and d.scores_at(0, -1, 3).isnan().all()
    rows = d.scores_at(0, torch.tensor([0, -1, 1]), torch.tensor([2, 4, -1]))
    assert torch.equal(rows[0], d.scores[0][0][2]) and rows[1:].isnan().all()
    with pytest.raises(IndexError, match="level 5"):
        d.scores_at(0, 5, 0)
    with pytest.raises(IndexError, match="level 7 \\(entry 1\\)"):
        d.scores_at(0, torch.tensor([0, 7]), torch.tensor([0, 0]))
    with pytest.raises(IndexError, match=f"anchor {R0}"):
        d.scores_at(0, 0, R0)
    with pytest.raises(IndexError, match="anchor -2"):
        d.scores_at(0, torch.tensor([0]), torch.tensor([-2]))
    with pytest.raises(IndexError, match="image 2"):
        d.scores_at(2, 0, 0)

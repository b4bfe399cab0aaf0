"""CascadeROIHeads: per-stage construction, matching by hand, stage averaging, tiny end to end."""

from __future__ import annotations

import pytest
import torch

from workbench.config import get_cfg
from workbench.layers import ShapeSpec
from workbench.model_zoo import get_config
from workbench.modeling import build_model
from workbench.modeling.roi_heads import build_roi_heads, fast_rcnn_inference
from workbench.modeling.roi_heads.cascade_rcnn import CascadeROIHeads, _ScaleGradient
from workbench.structures import BitMasks, Boxes, Instances
from workbench.utils.events import EventStorage

IMAGE_HW = (64, 96)
SHAPES = {f"p{i}": ShapeSpec(channels=8, stride=2 ** i) for i in range(2, 6)}


def heads_cfg():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
    return cfg


def features(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, 8, IMAGE_HW[0] // s.stride, IMAGE_HW[1] // s.stride, generator=g)
            for k, s in SHAPES.items()}


def proposals(n=2):
    out = []
    for i in range(n):
        p = Instances(IMAGE_HW)
        boxes = torch.tensor([[2.0, 2.0, 30.0, 40.0], [10.0, 5.0, 60.0, 50.0], [40.0, 20.0, 90.0, 60.0],
                              [0.0, 0.0, 95.0, 63.0], [5.0 + i, 8.0, 36.0, 44.0]])
        p.proposal_boxes = Boxes(boxes)
        p.objectness_logits = torch.linspace(2.0, -2.0, len(boxes))
        out.append(p)
    return out


def targets(empty=False):
    t = Instances(IMAGE_HW)
    boxes = torch.tensor([[4.0, 6.0, 32.0, 42.0], [38.0, 18.0, 88.0, 58.0]])[: 0 if empty else 2]
    t.gt_boxes = Boxes(boxes)
    t.gt_classes = torch.tensor([0, 2])[: len(boxes)]
    masks = torch.zeros(len(boxes), *IMAGE_HW, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        m[y0:y1, x0:x1] = True
    t.gt_masks = BitMasks(masks)
    return t


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(0)
    return build_roi_heads(heads_cfg(), SHAPES)


def test_one_head_predictor_matcher_and_transform_per_stage(heads):
    assert isinstance(heads, CascadeROIHeads) and heads.num_cascade_stages == 3
    assert len(heads.box_head) == len(heads.box_predictor) == len(heads.proposal_matchers) == 3
    assert [p.box2box_transform.weights for p in heads.box_predictor] == [
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
    assert [m.thresholds[1:-1] for m in heads.proposal_matchers] == [[0.5], [0.6], [0.7]]
    assert heads.proposal_matcher is heads.proposal_matchers[0]
    # Class-agnostic regression: 4 deltas per ROI.
    assert heads.box_predictor[2].bbox_pred.weight.shape == (4, 16)
    names = set(heads.state_dict())
    assert {"box_head.0.fc1.weight", "box_head.2.fc2.bias", "box_predictor.1.cls_score.weight",
            "mask_head.predictor.weight"} <= names
    assert not any(n.startswith("box_head.fc") for n in names)


def test_config_errors_name_the_key():
    cfg = heads_cfg()
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        build_roi_heads(cfg, SHAPES)
    cfg = heads_cfg()
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = [0.4, 0.6, 0.7]
    with pytest.raises(ValueError, match="IOU_THRESHOLDS"):
        build_roi_heads(cfg, SHAPES)
    cfg = heads_cfg()
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = [0.5, 0.6]
    with pytest.raises(ValueError, match="BBOX_REG_WEIGHTS"):
        build_roi_heads(cfg, SHAPES)
    with pytest.raises(TypeError, match="proposal_matchers"):
        CascadeROIHeads(**{**CascadeROIHeads.from_config(heads_cfg(), SHAPES), "proposal_matcher": None})


def test_scale_gradient():
    x = torch.ones(3, requires_grad=True)
    y = _ScaleGradient.apply(x, 0.25)
    assert torch.equal(y, x)
    (2 * y).sum().backward()
    assert x.grad.tolist() == [0.5, 0.5, 0.5]


def test_create_proposals_from_boxes(heads):
    boxes = [torch.tensor([[-5.0, 2.0, 20.0, 30.0], [100.0, 10.0, 120.0, 20.0], [1.0, 1.0, 2.0, 2.0]],
                          requires_grad=True)]
    logits = [torch.tensor([0.3, 0.2, 0.1])]
    heads.eval()
    p = heads._create_proposals_from_boxes(boxes, [IMAGE_HW], logits)[0]
    # Clipped to (64, 96); the empty box is kept at inference so stages stay aligned.
    assert p.proposal_boxes.tensor.tolist() == [[0, 2, 20, 30], [96, 10, 96, 20], [1, 1, 2, 2]]
    assert not p.proposal_boxes.tensor.requires_grad
    heads.train()
    p = heads._create_proposals_from_boxes(boxes, [IMAGE_HW], logits)[0]
    assert p.proposal_boxes.tensor.tolist() == [[0, 2, 20, 30], [1, 1, 2, 2]]
    assert p.objectness_logits.tolist() == pytest.approx([0.3, 0.1])


def test_match_and_label_boxes_by_hand(heads):
    t = Instances(IMAGE_HW, gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])), gt_classes=torch.tensor([2]))
    empty = Instances(IMAGE_HW, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.5], [0.0, 0.0, 10.0, 5.0]])  # IoU 1, 0.65, 0.5
    with EventStorage() as storage:
        for stage, want in [(1, [2, 2, 3]), (2, [2, 3, 3])]:  # thresholds 0.6, 0.7; 3 = background
            props = [Instances(IMAGE_HW, proposal_boxes=Boxes(boxes.clone())) for _ in range(2)]
            out = heads._match_and_label_boxes(props, stage, [t, empty])
            assert out[0].gt_classes.tolist() == want
            assert torch.equal(out[0].gt_boxes.tensor, t.gt_boxes.tensor.expand(3, 4))
            assert out[1].gt_classes.tolist() == [3, 3, 3] and not out[1].gt_boxes.tensor.any()
            latest = storage.latest()
            assert latest[f"stage{stage}/roi_head/num_fg_samples"][0] == sum(c < 3 for c in want) / 2
            assert latest[f"stage{stage}/roi_head/num_bg_samples"][0] == (3 + sum(c == 3 for c in want)) / 2


def test_inference_averages_stage_scores_and_keeps_last_stage_boxes(heads):
    heads.eval()
    feats = features()
    props = proposals()
    for p in heads.box_predictor:
        p.test_score_thresh = 0.0
    try:
        with torch.no_grad():
            got = heads._forward_box(feats, [p[:] for p in props])
            # The same computation spelled out stage by stage.
            levels = [feats[f] for f in heads.box_in_features]
            stage_props, probs = props, []
            for k in range(3):
                if k > 0:
                    stage_props = heads._create_proposals_from_boxes(
                        boxes, [IMAGE_HW] * 2, [p.objectness_logits for p in stage_props])
                preds = heads._run_stage(levels, stage_props, k)
                boxes = heads.box_predictor[k].predict_boxes(preds, stage_props)
                probs.append(heads.box_predictor[k].predict_probs(preds, stage_props))
            mean = [(a + b + c) / 3 for a, b, c in zip(*probs)]
            want, _ = fast_rcnn_inference(boxes, mean, [IMAGE_HW] * 2, 0.0, 0.5, 100)
    finally:
        for p in heads.box_predictor:
            p.test_score_thresh = 0.05
    for g, w in zip(got, want):
        assert len(g) == len(w) > 0
        assert torch.allclose(g.scores, w.scores) and torch.equal(g.pred_classes, w.pred_classes)
        assert torch.allclose(g.pred_boxes.tensor, w.pred_boxes.tensor)
    # A single stage's probabilities would differ.
    assert not torch.allclose(probs[0][0], mean[0])


def test_heads_train_two_steps_with_gradient_everywhere():
    torch.manual_seed(0)
    heads = build_roi_heads(heads_cfg(), SHAPES).train()
    opt = torch.optim.SGD(heads.parameters(), lr=1e-2)
    feats = {k: v.requires_grad_() for k, v in features().items()}
    for step in range(2):
        with EventStorage(step) as storage:
            _, losses = heads(None, feats, proposals(), [targets(), targets(empty=True)])
        assert set(losses) == {f"{n}_stage{k}" for n in ("loss_cls", "loss_box_reg") for k in range(3)} | {"loss_mask"}
        assert all(torch.isfinite(v) for v in losses.values()), losses
        latest = storage.latest()
        assert {"stage0/fast_rcnn/cls_accuracy", "stage2/fast_rcnn/cls_accuracy",
                "stage1/roi_head/num_fg_samples", "roi_head/num_fg_samples"} <= set(latest)
        opt.zero_grad()
        sum(losses.values()).backward()
        missing = [n for n, p in heads.named_parameters() if p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        assert all(torch.isfinite(p.grad).all() for p in heads.parameters())
        opt.step()
    assert feats["p2"].grad is not None


def test_tiny_cascade_mask_rcnn_end_to_end():
    cfg = get_config("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list([
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
        "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
        "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
        "MODEL.RPN.POST_NMS_TOPK_TEST", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    ])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    # A random tiny R-50 has large activations: a larger step makes the next forward non-finite.
    opt = torch.optim.SGD(params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    inputs = [{"image": torch.randint(0, 256, (3, *IMAGE_HW), generator=g).float(), "instances": targets()},
              {"image": torch.randint(0, 256, (3, *IMAGE_HW), generator=g).float(), "instances": targets(empty=True)}]
    for step in range(2):
        with EventStorage(step):
            losses = model(inputs)
        assert "loss_cls_stage2" in losses and "loss_rpn_cls" in losses
        opt.zero_grad()
        sum(losses.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        opt.step()

    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.full((3, *IMAGE_HW), 128.0), "height": 32, "width": 48}])
    inst = out[0]["instances"]
    assert inst.image_size == (32, 48) and len(inst) > 0
    assert inst.pred_masks.shape[1:] == (32, 48) and inst.pred_masks.dtype == torch.bool
    assert (inst.scores <= 1).all() and inst.pred_classes.max() < 3

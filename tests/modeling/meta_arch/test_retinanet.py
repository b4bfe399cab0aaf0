"""RetinaNet and the DenseDetector base: layouts, anchor labels, losses by hand, tiny end to end."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from workbench.layers import ShapeSpec
from workbench.model_zoo import get_config
from workbench.modeling import build_model
from workbench.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from workbench.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead
from workbench.structures import Boxes, Instances
from workbench.utils.events import EventStorage

# The reference fixtures (see tests/parity/reference.py): $WORKBENCH_FIXTURES or <repo>/../shared/fixtures.
FIXTURES = Path(os.environ.get("WORKBENCH_FIXTURES",
                               Path(__file__).resolve().parents[3].parent / "shared" / "fixtures"))
FIXTURE_WEIGHTS = FIXTURES / "retinanet_R_50_FPN" / "model_final.pkl"

TINY = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.RETINANET.NUM_CLASSES", 3, "MODEL.RETINANET.NUM_CONVS", 2,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]


def tiny_cfg():
    cfg = get_config("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    cfg.merge_from_list(TINY)
    return cfg


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def make_inputs(num_gt=2):
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]])[:num_gt])
        inst.gt_classes = torch.tensor([0, 2])[:num_gt]
        batch.append({"image": torch.randint(0, 256, (3, h, w), generator=g).float(), "instances": inst})
    return batch


def test_transpose_puts_anchor_k_of_location_yx_at_row_yx_a():
    N, A, K, H, W = 2, 3, 5, 4, 6
    x = torch.randn(N, A * K, H, W)
    out = permute_to_N_HWA_K(x, K)
    assert out.shape == (N, H * W * A, K)
    n, a, k, y, xx = 1, 2, 3, 2, 5
    assert out[n, (y * W + xx) * A + a, k] == x[n, a * K + k, y, xx]


def test_transpose_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, A\*K, Hi, Wi\)"):
        permute_to_N_HWA_K(torch.zeros(2, 6, 4), 3)
    with pytest.raises(ValueError, match="multiple of K=4"):
        permute_to_N_HWA_K(torch.zeros(1, 6, 2, 2), 4)


def test_model_structure_and_from_config(tiny_model):
    m = tiny_model
    assert isinstance(m, RetinaNet)
    assert m.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert m.anchor_matcher.thresholds[1:-1] == [0.4, 0.5] and m.anchor_matcher.labels == [0, -1, 1]
    assert m.anchor_matcher.allow_low_quality_matches
    assert m.loss_normalizer == 100
    # (conv, ReLU) x 2 per tower; 9 anchors x 3 classes.
    names = {k for k in m.state_dict() if k.startswith("head.")}
    assert "head.cls_subnet.2.weight" in names and "head.bbox_subnet.2.bias" in names
    assert m.head.cls_score.weight.shape == (27, 16, 3, 3) and m.head.bbox_pred.weight.shape == (36, 16, 3, 3)
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(m.head.cls_score.bias, torch.full((27,), prior))


def test_head_loads_the_reference_weights_by_name():
    with open(FIXTURE_WEIGHTS, "rb") as f:
        sd = pickle.load(f)["model"]
    head_sd = {k[len("head."):]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("head.")}
    head = RetinaNetHead(input_shape=[ShapeSpec(channels=64)] * 5, num_classes=8, num_anchors=9,
                         conv_dims=[64] * 4)
    head.load_state_dict(head_sd, strict=True)
    logits, deltas = head([torch.zeros(1, 64, 4, 4), torch.zeros(1, 64, 2, 2)] + [torch.zeros(1, 64, 1, 1)] * 3)
    assert [tuple(x.shape) for x in logits[:2]] == [(1, 72, 4, 4), (1, 72, 2, 2)]
    assert tuple(deltas[0].shape) == (1, 36, 4, 4)


def test_head_norms():
    shapes = [ShapeSpec(channels=8)] * 3
    head = RetinaNetHead(input_shape=shapes, num_classes=2, num_anchors=1, conv_dims=[8], norm="BN")
    # conv, per-level BN with shared affine, ReLU.
    assert "cls_subnet.1.2.running_mean" in head.state_dict() and "cls_subnet.1.weight" in head.state_dict()
    head.train()
    head([torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2) + 5, torch.randn(2, 8, 1, 1)])
    bn = head.cls_subnet[1]
    assert len(bn) == 3 and bn._pos == 0  # used once per level, back at the start
    gn = RetinaNetHead(input_shape=shapes, num_classes=2, num_anchors=1, conv_dims=[32], norm="GN")
    assert isinstance(gn.cls_subnet[1], torch.nn.GroupNorm)
    with pytest.raises(ValueError, match="share the channel count"):
        RetinaNetHead(input_shape=[ShapeSpec(channels=8), ShapeSpec(channels=4)], num_classes=2,
                      num_anchors=1, conv_dims=[8])


def test_label_anchors_by_hand(tiny_model):
    # IoU with the gt [0, 0, 10, 10]: 1.0, 0.45 (ignored), 0.25 (background), 0.0; and a second
    # gt whose best anchor has IoU 0.3 only: kept positive (low-quality match).
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.5],
                                   [0.0, 0.0, 5.0, 5.0], [50.0, 50.0, 60.0, 60.0]])),
               Boxes(torch.tensor([[100.0, 100.0, 103.0, 110.0]]))]
    gt = Instances((200, 200))
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]]))
    gt.gt_classes = torch.tensor([1, 2])
    empty = Instances((200, 200))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    labels, boxes = tiny_model.label_anchors(anchors, [gt, empty])
    K = tiny_model.num_classes
    assert labels[0].tolist() == [1, -1, K, K, 2]
    assert torch.equal(boxes[0][4], gt.gt_boxes.tensor[1]) and torch.equal(boxes[0][0], gt.gt_boxes.tensor[0])
    assert labels[1].tolist() == [K] * 5 and boxes[1].shape == (5, 4) and not boxes[1].any()


def test_focal_and_box_losses_by_hand(tiny_model):
    """Zero logits: every (anchor, class) term is alpha_t * (1/2)^2 * ln 2."""
    model = RetinaNet(
        backbone=tiny_model.backbone, head=tiny_model.head, head_in_features=tiny_model.head_in_features,
        anchor_generator=tiny_model.anchor_generator, box2box_transform=tiny_model.box2box_transform,
        anchor_matcher=tiny_model.anchor_matcher, num_classes=3, smooth_l1_beta=0.1,
        pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0],
    )
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]]))]
    pred_logits = [torch.zeros(1, 3, 3)]
    pred_deltas = [torch.zeros(1, 3, 4)]
    gt_labels = [torch.tensor([0, 3, -1])]  # class 0, background, ignored
    gt_boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])]
    with EventStorage() as storage:
        losses = model.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)
        # Positive anchor: alpha_t = 0.25 (its class) + 0.75 + 0.75; background: 3 x 0.75.
        # Sum of alpha_t = 4, so the focal sum is 4 * 0.25 * ln 2 = ln 2.
        normalizer = 0.9 * 100 + 0.1 * 1
        assert losses["loss_cls"].item() == pytest.approx(math.log(2) / normalizer, rel=1e-6)
        # Anchor (0,0,10,10) -> gt (0,0,20,20): deltas (0.5, 0.5, ln 2, ln 2); smooth L1 with
        # beta 0.1 is |x| - 0.05 above beta.
        box_sum = 2 * (0.5 - 0.05) + 2 * (math.log(2) - 0.05)
        assert losses["loss_box_reg"].item() == pytest.approx(box_sum / normalizer, rel=1e-6)
        assert storage.latest()["num_pos_anchors"][0] == 1.0
        # The normaliser is an EMA that persists across calls.
        losses = model.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)
        assert model.loss_normalizer == pytest.approx(0.9 * normalizer + 0.1)
        assert losses["loss_cls"].item() == pytest.approx(math.log(2) / (0.9 * normalizer + 0.1), rel=1e-6)


def test_decode_keeps_scores_above_threshold_then_topk(tiny_model):
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 30.0]]))
    scores = torch.tensor([[0.9, 0.04, 0.5], [0.05, 0.7, 0.06]])  # 0.05 is not strictly above
    deltas = torch.zeros(2, 4)
    inst = tiny_model._decode_per_level_predictions(anchors, scores, deltas, 0.05, 3, (40, 40))
    assert inst.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert inst.pred_classes.tolist() == [0, 1, 2]
    assert inst.pred_boxes.tensor.tolist() == [[0, 0, 10, 10], [10, 10, 30, 30], [0, 0, 10, 10]]
    inst = tiny_model._decode_per_level_predictions(anchors, scores, deltas, 0.95, 3, (40, 40))
    assert len(inst) == 0 and inst.pred_boxes.tensor.shape == (0, 4)


def test_ema_update(tiny_model):
    m = tiny_model
    try:
        assert m._ema_update("_test_ema", 10, initial_value=100) == pytest.approx(91.0)
        assert m._test_ema == pytest.approx(91.0)
        assert m._ema_update("_test_ema", 10, initial_value=100, momentum=0.5) == pytest.approx(50.5)
    finally:
        del m._test_ema


def test_tiny_retinanet_trains_two_steps_with_gradient_everywhere():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    inputs = make_inputs()
    for step in range(2):
        with EventStorage(step) as storage:
            losses = model(inputs)
        assert set(losses) == {"loss_cls", "loss_box_reg"}
        assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
        assert storage.latest()["num_pos_anchors"][0] > 0
        opt.zero_grad()
        sum(losses.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        assert all(torch.isfinite(p.grad).all() for p in params)
        opt.step()
    assert model.loss_normalizer != 100


def test_training_with_an_image_without_ground_truth():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    with EventStorage():
        losses = model(make_inputs(num_gt=0))
    assert losses["loss_box_reg"].item() == 0.0 and torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()


def test_inference_on_a_blank_image(tiny_model):
    model = tiny_model.eval()
    model.test_score_thresh = 0.0  # keep candidates so the NMS and the cap are exercised
    model.max_detections_per_image = 7
    model.test_topk_candidates = 50
    inputs = [{"image": torch.full((3, 64, 96), 128.0), "height": 128, "width": 192},
              {"image": torch.full((3, 40, 40), 128.0)}]
    with torch.no_grad():
        out = model(inputs)
    for o, size in zip(out, [(128, 192), (40, 40)]):
        inst = o["instances"]
        assert inst.image_size == size and 0 < len(inst) <= 7
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
        assert inst.pred_classes.max() < 3
    model.test_score_thresh, model.max_detections_per_image, model.test_topk_candidates = 0.05, 100, 1000


def test_missing_instances_in_training_is_a_clear_error():
    model = build_model(tiny_cfg()).train()
    with EventStorage(), pytest.raises(KeyError, match="instances"):
        model([{"image": torch.zeros(3, 32, 32)}])


def test_visualization_every_vis_period_iterations():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    model.vis_period = 2
    inputs = make_inputs()
    for it, expected in [(0, 1), (1, 0)]:
        with EventStorage(it) as storage:
            model(inputs)
        assert len(storage.vis_data) == expected
    with EventStorage(2) as storage:
        model(inputs)
    name, img, _ = storage.vis_data[0]
    assert "GT bounding boxes" in name and img.shape == (3, 2 * 64, 96) and img.dtype == "uint8"

"""Box2BoxTransform, Box2BoxTransformLinear and the dense box regression loss."""

import math

import pytest
import torch

from workbench.layers import giou_loss
from workbench.modeling.box_regression import (
    Box2BoxTransform,
    Box2BoxTransformLinear,
    _dense_box_regression_loss,
)
from workbench.structures import Boxes


def _random_boxes(n, seed=0, max_coord=200.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * max_coord
    wh = torch.rand(n, 2, generator=g) * max_coord / 2 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def test_get_deltas_by_hand():
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    target = torch.tensor([[5.0, 5.0, 25.0, 45.0]])  # centre (15, 25), 20 x 40
    deltas = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)).get_deltas(src, target)
    torch.testing.assert_close(deltas, torch.tensor([[1.0, 0.75, math.log(2), math.log(2)]]))
    deltas = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)).get_deltas(src, target)
    torch.testing.assert_close(
        deltas, torch.tensor([[10.0, 7.5, 5 * math.log(2), 5 * math.log(2)]]))


def test_round_trip_with_weights():
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    src = _random_boxes(50, seed=1)
    target = _random_boxes(50, seed=2)
    decoded = t.apply_deltas(t.get_deltas(src, target), src)
    torch.testing.assert_close(decoded, target, rtol=0, atol=1e-3)


def test_apply_deltas_clamps_scale():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 50.0, 1.0]]), boxes)
    # dw is clamped to log(1000 / 16): the 16 px box becomes 1000 px wide around x = 8.
    torch.testing.assert_close(out, torch.tensor(
        [[8.0 - 500.0, 8.0 - 8.0 * math.e, 8.0 + 500.0, 8.0 + 8.0 * math.e]]))
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=0.0)
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 3.0, -math.log(2)]]), boxes)
    torch.testing.assert_close(out, torch.tensor([[0.0, 4.0, 16.0, 12.0]]))


def test_apply_deltas_several_per_box_and_float32_output():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 20.0]])
    deltas = torch.tensor([
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(3)],
    ], dtype=torch.float64)
    out = t.apply_deltas(deltas, boxes)
    assert out.dtype == torch.float32 and out.shape == (2, 8)
    torch.testing.assert_close(out, torch.tensor([
        [0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 20.0, 10.0],
        [20.0, 10.0, 40.0, 20.0, 10.0, 0.0, 30.0, 30.0],
    ]))


def test_bad_shapes_are_loud():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        t.get_deltas(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(N, k\*4\)"):
        t.apply_deltas(torch.zeros(3, 6), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="positive width"):
        t.get_deltas(torch.tensor([[5.0, 0.0, 5.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_linear_transform_round_trip_and_values():
    t = Box2BoxTransformLinear(normalize_by_size=True)
    anchors = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # centre (4, 4), stride 8
    target = torch.tensor([[-4.0, 2.0, 12.0, 20.0]])
    deltas = t.get_deltas(anchors, target)
    torch.testing.assert_close(deltas, torch.tensor([[1.0, 0.25, 1.0, 2.0]]))
    torch.testing.assert_close(t.apply_deltas(deltas, anchors), target)
    # Negative distances are clamped to 0 when decoding.
    out = t.apply_deltas(torch.tensor([[-1.0, 0.0, 0.0, 0.0]]), anchors)
    torch.testing.assert_close(out, torch.tensor([[4.0, 4.0, 4.0, 4.0]]))


def _loss_inputs():
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0]])),
               Boxes(torch.tensor([[5.0, 5.0, 15.0, 25.0]]))]
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0], [2.0, 2.0, 22.0, 22.0], [5.0, 5.0, 15.0, 25.0]])
    pred = [torch.zeros(1, 2, 4), torch.full((1, 1, 4), 0.5)]
    fg_mask = torch.tensor([[True, True, False]])
    return anchors, pred, [gt], fg_mask


def test_dense_loss_smooth_l1_by_hand():
    anchors, pred, gt, fg_mask = _loss_inputs()
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    loss = _dense_box_regression_loss(anchors, t, pred, gt, fg_mask, "smooth_l1", 0.0)
    # anchor 0 -> gt 0: dx = 0.5, dw = log 2; anchor 1 -> gt 1: dx = dy = 0.1. Predictions are 0.
    torch.testing.assert_close(loss, torch.tensor(0.5 + math.log(2) + 0.2))
    # Same with plain tensors as anchors.
    loss_t = _dense_box_regression_loss([a.tensor for a in anchors], t, pred, gt, fg_mask)
    torch.testing.assert_close(loss_t, loss)
    # beta = 1: 0.5 x^2 below 1.
    loss = _dense_box_regression_loss(anchors, t, pred, gt, fg_mask, "smooth_l1", 1.0)
    torch.testing.assert_close(loss, torch.tensor(
        0.5 * (0.25 + math.log(2) ** 2 + 0.01 + 0.01)))


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_dense_loss_iou_types(loss_type):
    anchors, pred, gt, fg_mask = _loss_inputs()
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    loss = _dense_box_regression_loss(anchors, t, pred, gt, fg_mask, loss_type)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    if loss_type == "giou":
        # Zero deltas decode to the anchors themselves.
        expected = giou_loss(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0]]),
                             gt[0][:2], reduction="sum")
        torch.testing.assert_close(loss, expected)
    # Perfect predictions give zero loss.
    fg_last = torch.tensor([[False, False, True]])
    zero = _dense_box_regression_loss(anchors, t, [torch.zeros(1, 2, 4), torch.zeros(1, 1, 4)],
                                      gt, fg_last, loss_type)
    torch.testing.assert_close(zero, torch.tensor(0.0), atol=1e-6, rtol=0)


def test_dense_loss_unknown_type():
    anchors, pred, gt, fg_mask = _loss_inputs()
    with pytest.raises(ValueError, match="smooth_l2"):
        _dense_box_regression_loss(anchors, Box2BoxTransform((1.0, 1.0, 1.0, 1.0)), pred, gt,
                                   fg_mask, "smooth_l2")

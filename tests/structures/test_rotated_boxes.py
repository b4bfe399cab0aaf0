"""RotatedBoxes: detectron2's structure tests (clip, normalize_angles, pairwise_iou, cat, ...)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.structures import Boxes, Instances, RotatedBoxes, pairwise_iou_rotated


def _random_boxes(n, g, angle_range=0.0):
    b = torch.zeros(n, 5)
    b[:, 0] = torch.rand(n, generator=g) * 600 - 100
    b[:, 1] = torch.rand(n, generator=g) * 600 - 100
    b[:, 2] = torch.rand(n, generator=g) * 500
    b[:, 3] = torch.rand(n, generator=g) * 500
    b[:, 4] = (torch.rand(n, generator=g) * 2 - 1) * angle_range
    return b


def test_clip_at_0_degrees_matches_upright_boxes():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        b5 = _random_boxes(100, g)
        b4 = torch.cat([b5[:, :2] - b5[:, 2:4] / 2, b5[:, :2] + b5[:, 2:4] / 2], 1)
        upright, rotated = Boxes(b4), RotatedBoxes(b5)
        assert torch.allclose(upright.area(), rotated.area(), atol=1e-1, rtol=1e-5)
        upright.clip((500, 600))
        rotated.clip((500, 600))
        assert torch.allclose(upright.area(), rotated.area(), atol=1e-1, rtol=1e-5)


def test_clip_only_shrinks_nearly_upright_boxes():
    g = torch.Generator().manual_seed(1)
    boxes = RotatedBoxes(_random_boxes(200, g, angle_range=1800))
    before = boxes.area()
    boxes.clip((500, 600), clip_angle_threshold=20.0)
    diff = boxes.area() - before
    assert (diff <= 0).all() and (diff < 0).any()
    assert (boxes.tensor[diff < 0, 4].abs() <= 20.0).all()


def test_normalize_angles_keeps_the_geometry():
    g = torch.Generator().manual_seed(2)
    b = _random_boxes(100, g, angle_range=1800)
    r = RotatedBoxes(b).clone()
    r.normalize_angles()
    a = r.tensor[:, 4]
    assert ((a >= -180) & (a < 180)).all()
    assert torch.equal(r.tensor[:, :4], b[:, :4])
    rad, rad0 = a * math.pi / 180, b[:, 4] * math.pi / 180
    assert torch.allclose(torch.cos(rad), torch.cos(rad0), atol=1e-4)
    assert torch.allclose(torch.sin(rad), torch.sin(rad0), atol=1e-4)


def test_pairwise_iou_0_degrees_and_many_boxes():
    b1 = torch.tensor([[0.5, 0.5, 1.0, 1.0, 0.0]] * 2)
    b2 = torch.tensor([[0.5, 0.5, 1.0, 1.0, 0.0], [0.25, 0.5, 0.5, 1.0, 0.0], [0.5, 0.25, 1.0, 0.5, 0.0],
                       [0.25, 0.25, 0.5, 0.5, 0.0], [0.75, 0.75, 0.5, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0]])
    expected = torch.tensor([[1.0, 0.5, 0.5, 0.25, 0.25, 0.25 / (2 - 0.25)]] * 2)
    assert torch.allclose(pairwise_iou_rotated(RotatedBoxes(b1), RotatedBoxes(b2)), expected)

    n1, n2 = 100, 200
    b1 = torch.tensor([[5 + 20 * i, 5 + 20 * i, 10, 10, 0] for i in range(n1)], dtype=torch.float32)
    b2 = torch.tensor([[5 + 20 * i, 5 + 20 * i, 10, 1 + 9 * i / n2, 0] for i in range(n2)],
                      dtype=torch.float32)
    expected = torch.zeros(n1, n2)
    for i in range(n1):
        expected[i, i] = (1 + 9 * i / n2) / 10.0
    assert torch.allclose(pairwise_iou_rotated(RotatedBoxes(b1), RotatedBoxes(b2)), expected)


def test_pairwise_iou_refuses_upright_boxes():
    with pytest.raises(TypeError, match="boxes2"):
        pairwise_iou_rotated(RotatedBoxes(torch.zeros(1, 5)), Boxes(torch.zeros(1, 4)))


def test_upright_iou_functions_refuse_rotated_boxes():
    from workbench.structures import matched_pairwise_iou, pairwise_ioa, pairwise_iou

    r, b = RotatedBoxes(torch.tensor([[5.0, 5, 2, 2, 30]])), Boxes(torch.tensor([[0.0, 0, 4, 4]]))
    for fn in (pairwise_iou, pairwise_ioa, matched_pairwise_iou):
        with pytest.raises(TypeError, match="boxes1 is RotatedBoxes.*pairwise_iou_rotated"):
            fn(r, b)
        with pytest.raises(TypeError, match="boxes2 is RotatedBoxes"):
            fn(b, r)
    assert pairwise_iou(b, b).item() == 1.0


def test_container_behaves_like_boxes():
    t = torch.tensor([[5.0, 3.0, 4.0, 2.0, 90.0], [1.0, 1.0, 0.0, 2.0, 0.0], [9.0, 9.0, 2.0, 2.0, 45.0]])
    b = RotatedBoxes(t)
    assert isinstance(b, Boxes) and len(b) == 3 and b.device.type == "cpu"
    assert torch.equal(b.area(), torch.tensor([8.0, 0.0, 4.0]))
    assert b.nonempty().tolist() == [True, False, True]
    assert b[1].tensor.shape == (1, 5) and len(b[torch.tensor([True, False, True])]) == 2
    assert torch.equal(b.get_centers(), t[:, :2])
    assert [r.shape for r in b] == [(5,)] * 3
    c = b.clone()
    c.tensor[0, 0] = -1
    assert b.tensor[0, 0] == 5
    assert RotatedBoxes.cat([]).tensor.shape == (0, 5)
    assert torch.equal(RotatedBoxes.cat([b, b[0]]).tensor, torch.cat([t, t[:1]]))
    with pytest.raises(TypeError, match="element 1"):
        RotatedBoxes.cat([b, Boxes(torch.zeros(1, 4))])
    with pytest.raises(ValueError, match="\\(N, 5\\)"):
        RotatedBoxes(torch.zeros(3, 4))
    assert RotatedBoxes(np.zeros((0,))).tensor.shape == (0, 5)
    inst = Instances((10, 10), boxes=b)
    assert Instances.cat([inst, inst]).boxes.tensor.shape == (6, 5)


def test_inside_box_uses_the_enclosing_rectangle():
    b = RotatedBoxes(torch.tensor([[10.0, 10.0, 16.0, 2.0, 0.0], [10.0, 10.0, 16.0, 2.0, 45.0],
                                   [10.0, 10.0, 28.0, 2.0, 45.0]]))
    # Upright: x in [2, 18]; at 45 degrees the extent is (16 + 2) / sqrt(2) / 2 = 6.36 per side.
    assert b.inside_box((20, 20)).tolist() == [True, True, False]
    assert b.inside_box((20, 20), boundary_threshold=5).tolist() == [True, True, True]


def test_scale_keeps_angle_for_equal_factors_and_swaps_for_90_degrees():
    b = RotatedBoxes(torch.tensor([[10.0, 20.0, 4.0, 2.0, 30.0], [10.0, 20.0, 4.0, 2.0, 90.0]]))
    c = b.clone()
    c.scale(2.0, 2.0)
    assert torch.allclose(c.tensor, torch.tensor([[20.0, 40.0, 8.0, 4.0, 30.0], [20.0, 40.0, 8.0, 4.0, 90.0]]),
                          atol=1e-4)
    b.scale(3.0, 0.5)
    # At 90 degrees the width lies along y (scaled by 0.5) and the height along x (by 3).
    assert torch.allclose(b.tensor[1], torch.tensor([30.0, 10.0, 2.0, 6.0, 90.0]), atol=1e-4)
    assert b.tensor[0, 4] != 30.0  # shear changes the angle of a tilted box


def test_transforms_move_rotated_boxes_like_the_structure():
    from workbench.data.transforms import HFlipTransform, ResizeTransform, TransformList

    boxes = np.array([[10.0, 20.0, 4.0, 2.0, 30.0], [50.0, 5.0, 8.0, 3.0, -100.0]])
    resized = ResizeTransform(100, 200, 50, 600).apply_rotated_box(boxes)
    ref = RotatedBoxes(torch.tensor(boxes))
    ref.scale(3.0, 0.5)
    assert np.allclose(resized, ref.tensor.numpy(), atol=1e-4)
    flipped = HFlipTransform(200).apply_rotated_box(boxes)
    assert np.allclose(flipped[:, [0, 4]], [[190.0, -30.0], [150.0, 100.0]])
    both = TransformList([HFlipTransform(200), HFlipTransform(200)]).apply_rotated_box(boxes)
    assert np.allclose(both, boxes) and boxes[0, 0] == 10.0  # the input is left unchanged


def test_visualizer_draws_rotated_boxes_with_their_corners():
    from workbench.vis.visualizer import Visualizer

    vis = Visualizer(np.zeros((40, 60, 3), dtype=np.uint8))
    vis.overlay_instances(boxes=RotatedBoxes(torch.tensor([[30.0, 20.0, 20.0, 10.0, 90.0]])),
                          labels=["a"])
    corners = vis.drawn["rotated_corners"][0]
    assert np.allclose(corners.min(0), [25.0, 10.0]) and np.allclose(corners.max(0), [35.0, 30.0])
    assert vis.get_output().get_image().sum() > 0

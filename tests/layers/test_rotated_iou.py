"""pairwise_iou_rotated: exact hand cases, detectron2's regression cases, and a rasterised check."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.layers import pairwise_iou_rotated
from workbench.layers.rotated_boxes import paired_iou_rotated, rotated_box_corners
from workbench.structures import Boxes, pairwise_iou


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def _raster_iou(b1, b2, step=0.02):
    """Independent slow IoU: count grid points inside each rectangle (box-frame test)."""
    xs = torch.arange(-20, 20, step, dtype=torch.float64) + step / 2
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")

    def inside(b):
        xc, yc, w, h, a = [float(v) for v in b]
        t = math.radians(a)
        dx, dy = gx - xc, gy - yc
        u = math.cos(t) * dx - math.sin(t) * dy  # inverse of x = xc + cos u + sin v, y = yc - sin u + cos v
        v = math.sin(t) * dx + math.cos(t) * dy
        return (u.abs() <= w / 2) & (v.abs() <= h / 2)

    m1, m2 = inside(b1), inside(b2)
    union = (m1 | m2).sum().item()
    return (m1 & m2).sum().item() / union if union else 0.0


def test_empty_inputs_give_empty_matrices():
    assert pairwise_iou_rotated(torch.rand(0, 5), torch.rand(10, 5)).shape == (0, 10)
    assert pairwise_iou_rotated(torch.rand(10, 5), torch.rand(0, 5)).shape == (10, 0)


def test_hand_cases():
    assert pairwise_iou_rotated(_t([0.5, 0.5, 1, 1, 0]), _t([0.25, 0.5, 0.5, 1, 0])).item() == \
        pytest.approx(0.5, abs=1e-6)
    # detectron2's test_pairwise_iou_45_degrees and test_pairwise_iou_orthogonal
    ious = pairwise_iou_rotated(_t([1, 1, math.sqrt(2), math.sqrt(2), 45],
                                   [1, 1, 2 * math.sqrt(2), 2 * math.sqrt(2), -45]), _t([1, 1, 2, 2, 0]))
    assert torch.allclose(ious, torch.tensor([[0.5], [0.5]]))
    iou = pairwise_iou_rotated(_t([5, 5, 10, 6, 55]), _t([5, 5, 10, 6, -35])).item()
    assert iou == pytest.approx(36.0 / (36 + 24 + 24), abs=1e-6)
    # Same region, opposite orientation: IoU 1.
    assert pairwise_iou_rotated(_t([5, 3, 4, 2, 90]), _t([5, 3, 4, 2, -90])).item() == \
        pytest.approx(1.0, abs=1e-6)


def test_identical_touching_and_zero_area_boxes():
    b = _t([10, 10, 6, 3, 33], [0, 0, 1, 1, 0])
    assert torch.allclose(pairwise_iou_rotated(b, b).diagonal(), torch.ones(2))
    # Touching along an edge (detectron2 issue 1207, simplified) and at a corner: exactly 0.
    assert pairwise_iou_rotated(_t([3, 3, 8, 2, -45.0]), _t([6, 0, 8, 2, -45.0])).item() == 0
    assert pairwise_iou_rotated(_t([160.0, 153.0, 230.0, 23.0, -37.0]),
                                _t([190.0, 127.0, 80.0, 21.0, -46.0])).item() == pytest.approx(0, abs=1e-8)
    assert pairwise_iou_rotated(_t([0, 0, 2, 2, 0]), _t([2, 2, 2, 2, 0])).item() == 0
    assert pairwise_iou_rotated(_t([0, 0, 2, 2, 0]), _t([2, 0, 2, 2, 0])).item() == 0
    # Zero area: 0, never NaN.
    assert pairwise_iou_rotated(_t([0, 0, 0, 5, 0]), _t([0, 0, 0, 5, 0])).item() == 0
    assert pairwise_iou_rotated(_t([0, 0, 0, 0, 0]), _t([0, 0, 1, 1, 0])).item() == 0


def test_zero_area_boxes_are_pruned_before_the_pairs():
    # detectron2's "too many boxes" case (5 x 1,289,035 all-zero boxes), smaller: every box has
    # zero area, so no pair is computed and the answer is all zeros, at once.
    import time

    start = time.perf_counter()
    iou = pairwise_iou_rotated(torch.zeros(5, 5), torch.zeros(200_000, 5))
    assert iou.shape == (5, 200_000) and not iou.any()
    assert time.perf_counter() - start < 5.0
    # Zero-area boxes among real ones: only the real pairs get an IoU.
    a = _t([0, 0, 0, 0, 0], [5, 5, 2, 2, 0], [5, 5, 2, 0, 30])
    b = _t([5, 5, 2, 2, 0], [0, 0, 0, 0, 0], [5, 5, 2, 2, 45])
    iou = pairwise_iou_rotated(a, b)
    assert iou[0].tolist() == [0, 0, 0] and iou[2].tolist() == [0, 0, 0] and iou[:, 1].eq(0).all()
    assert iou[1, 0] == pytest.approx(1.0) and 0 < iou[1, 2] < 1


def test_precision_cases_of_detectron2():
    assert pairwise_iou_rotated(_t([565, 565, 10, 10, 0]), _t([565, 565, 10, 8.3, 0])).item() == \
        pytest.approx(0.83, rel=1e-5)
    far = pairwise_iou_rotated(_t([160.0, 153.0, 230.0, 23.0, -37.0]),
                               _t([-1.117407639806935e17, 1.3858420478349148e18, 1000.0000610351562,
                                   1000.0000610351562, 1612.0]))
    assert far.item() == 0
    near = pairwise_iou_rotated(
        _t([296.6620178222656, 458.73883056640625, 23.515729904174805, 47.677001953125,
            0.08795166015625]),
        _t([296.66201, 458.73882000000003, 23.51573, 47.67702, 0.087951]))
    assert near.item() == pytest.approx(1.0, abs=1e-5)
    big = pairwise_iou_rotated(
        _t([2563.74462890625, 1436.7901611328125, 2174.703369140625, 214.09500122070312,
            115.11834716796875]),
        _t([2563.74462890625, 1436.790283203125, 2174.702880859375, 214.09495544433594,
            115.11835479736328]))
    assert big.item() == pytest.approx(1.0, abs=1e-5)
    close = pairwise_iou_rotated(_t([299.5, 417.370422, 600.0, 364.259186, 27.1828]),
                                 _t([299.5, 417.370422, 600.0, 364.259155, 27.1828]))
    assert close.item() == pytest.approx(364.259155 / 364.259186, rel=1e-5)


def test_very_small_and_very_large_boxes():
    small = _t([1e-3, 1e-3, 1e-3, 1e-3, 30.0])
    shifted = _t([1e-3 + 5e-4, 1e-3, 1e-3, 1e-3, 30.0])
    # A pair of 1e-3 px boxes half overlapping along their own axis after rotation: exact value
    # by scaling the same configuration up by 1000.
    ref = pairwise_iou_rotated(small * torch.tensor([1e3, 1e3, 1e3, 1e3, 1]),
                               shifted * torch.tensor([1e3, 1e3, 1e3, 1e3, 1]))
    assert pairwise_iou_rotated(small, shifted).item() == pytest.approx(ref.item(), rel=1e-4)
    large = _t([1e6, 2e6, 4e5, 3e5, 10.0])
    assert pairwise_iou_rotated(large, large).item() == pytest.approx(1.0, abs=1e-6)


def test_axis_aligned_boxes_match_the_upright_iou():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 50
    wh = torch.rand(40, 2, generator=g) * 30 + 0.5
    upright = Boxes(torch.cat([xy, xy + wh], 1))
    for angle in (0.0, 180.0, -180.0, 360.0):
        rot = torch.cat([xy + wh / 2, wh, torch.full((40, 1), angle)], 1)
        assert torch.allclose(pairwise_iou_rotated(rot, rot[:25]), pairwise_iou(upright, upright[:25]),
                              atol=1e-5)
    swapped = torch.cat([xy + wh / 2, wh.flip(1), torch.full((40, 1), 90.0)], 1)
    assert torch.allclose(pairwise_iou_rotated(swapped, swapped[:25]),
                          pairwise_iou(upright, upright[:25]), atol=1e-5)


def test_random_rotated_pairs_match_a_rasterised_iou():
    g = torch.Generator().manual_seed(1)
    b1 = torch.cat([torch.rand(12, 2, generator=g) * 8 - 4, torch.rand(12, 2, generator=g) * 10 + 2,
                    torch.rand(12, 1, generator=g) * 360 - 180], 1)
    b2 = torch.cat([torch.rand(12, 2, generator=g) * 8 - 4, torch.rand(12, 2, generator=g) * 10 + 2,
                    torch.rand(12, 1, generator=g) * 360 - 180], 1)
    ious = paired_iou_rotated(b1, b2)
    assert ious.dtype == torch.float64 and (ious > 0.05).sum() >= 6  # the check is not vacuous
    for i in range(12):
        assert ious[i].item() == pytest.approx(_raster_iou(b1[i], b2[i]), abs=0.01), i
    assert torch.allclose(pairwise_iou_rotated(b1, b2).diagonal().double(), ious, atol=1e-6)


def test_corners_follow_the_angle_convention():
    c = rotated_box_corners(_t([5, 3, 4, 2, 90]))[0]
    # detectron2's docstring: (5, 3, 4, 2, 90) spans x in [4, 6], y in [1, 5].
    assert torch.allclose(c.min(0).values, torch.tensor([4.0, 1.0]), atol=1e-5)
    assert torch.allclose(c.max(0).values, torch.tensor([6.0, 5.0]), atol=1e-5)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="boxes2 of shape \\(N, 5\\)"):
        pairwise_iou_rotated(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="boxes1"):
        pairwise_iou_rotated(torch.zeros(5), torch.zeros(2, 5))

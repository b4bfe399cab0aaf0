"""Tests for workbench.structures.keypoints: Keypoints, heatmap targets and decoding."""

import math

import pytest
import torch

from workbench.structures import Boxes, Keypoints, _keypoints_to_heatmap, heatmaps_to_keypoints


def _kpts():
    return Keypoints(
        [
            [[1.0, 2.0, 2.0], [3.0, 4.0, 0.0]],
            [[5.0, 6.0, 1.0], [7.0, 8.0, 2.0]],
            [[9.0, 9.0, 2.0], [0.0, 0.0, 0.0]],
        ]
    )


def test_keypoints_basics():
    k = _kpts()
    assert k.tensor.shape == (3, 2, 3) and k.tensor.dtype == torch.float32
    assert len(k) == 3 and repr(k) == "Keypoints(num_instances=3)"
    assert k[1].tensor.tolist() == [[[5.0, 6.0, 1.0], [7.0, 8.0, 2.0]]]
    assert k[1:].tensor.shape == (2, 2, 3)
    assert k[torch.tensor([True, False, True])].tensor[:, 0, 0].tolist() == [1.0, 9.0]
    # Keypoints are always float32 (as in detectron2): to(dtype) goes through the constructor.
    assert k.to(torch.float64).tensor.dtype == torch.float32
    assert k.to(k.device).device == k.device
    c = Keypoints.cat([k, k[0]])
    assert c.tensor.shape == (4, 2, 3)
    assert Keypoints(torch.zeros(0, 17, 3)).tensor.shape == (0, 17, 3)
    with pytest.raises(ValueError, match=r"\(N, K, 3\), got \(3, 2\)"):
        Keypoints(torch.zeros(3, 2))
    with pytest.raises(ValueError):
        Keypoints.cat([])


def test_keypoints_to_heatmap_hand_computed():
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 20.0, 30.0, 30.0]])
    kp = torch.tensor(
        [
            # heatmap 5 over a 10-px box: cell = floor(coord / 2)
            [
                [1.0, 1.0, 2.0],  # cell (0, 0)
                [9.9, 4.0, 2.0],  # x: floor(4.95) = 4, y: 2
                [10.0, 10.0, 2.0],  # on the right/bottom edge -> last cell (4, 4)
                [5.0, 5.0, 0.0],  # not labelled
                [-1.0, 3.0, 2.0],  # x cell -1: outside
                [11.0, 3.0, 2.0],  # x cell 5: outside
            ],
            # box 20 wide, 10 high: x cell = floor((x - 10) / 4), y cell = floor((y - 20) / 2)
            [
                [14.0, 21.0, 1.0],  # x: floor(1.0) = 1, y: floor(0.5) = 0 (v = 1 counts)
                [29.99, 29.99, 2.0],  # (4, 4)
                [30.0, 25.0, 2.0],  # x on the edge -> 4, y: floor(2.5) = 2
                [10.0, 20.0, 2.0],  # the corner: cell 0, valid
                [9.9, 20.0, 2.0],  # just left of the box
                [20.0, 30.5, 2.0],  # below the box
            ],
        ]
    )
    heatmaps, valid = _keypoints_to_heatmap(kp, rois, 5)
    assert valid.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    # row-major index y * 5 + x; invalid entries are 0
    assert heatmaps.tolist() == [[0, 2 * 5 + 4, 24, 0, 0, 0], [0 * 5 + 1, 24, 2 * 5 + 4, 0, 0, 0]]
    assert heatmaps.dtype == torch.int64 and valid.dtype == torch.int64

    h2, v2 = Keypoints(kp).to_heatmap(Boxes(rois), 5)
    assert torch.equal(h2, heatmaps) and torch.equal(v2, valid)


def test_keypoints_to_heatmap_no_rois():
    h, v = _keypoints_to_heatmap(torch.zeros(0, 17, 3), torch.zeros(0, 4), 56)
    assert h.numel() == 0 and v.numel() == 0 and h.dtype == torch.int64


def _peak_maps(h, w, peaks, value=5.0):
    """(1, K, h, w) zeros with maps[0, k, r, c] = value for each (k, r, c) in peaks."""
    maps = torch.zeros(1, len(peaks), h, w)
    for k, r, c in peaks:
        maps[0, k, r, c] = value
    return maps


def test_heatmaps_to_keypoints_integer_box():
    # Box side 4 = map side 4: the bicubic resize to (4, 4) is the identity.
    maps = _peak_maps(4, 4, [(0, 1, 2), (1, 3, 0)])
    out = heatmaps_to_keypoints(maps, torch.tensor([[10.0, 20.0, 14.0, 24.0]]))
    assert out.shape == (1, 2, 4)
    # x = offset + (col + 0.5), y = offset + (row + 0.5)
    torch.testing.assert_close(out[0, :, :2], torch.tensor([[12.5, 21.5], [10.5, 23.5]]))
    torch.testing.assert_close(out[0, :, 2], torch.tensor([5.0, 5.0]))  # raw logit
    score = 1.0 / (1.0 + 15.0 * math.exp(-5.0))  # exp(0) / sum(exp(maps - 5))
    torch.testing.assert_close(out[0, :, 3], torch.tensor([score, score]))


def test_heatmaps_to_keypoints_fractional_box_corrections():
    # 3.5 x 2.5 box -> map resized to ceil sizes (3, 4), identity for a (3, 4) map; positions
    # are scaled back by 3.5 / 4 and 2.5 / 3.
    maps = _peak_maps(3, 4, [(0, 2, 3)])
    out = heatmaps_to_keypoints(maps, torch.tensor([[1.0, 2.0, 4.5, 4.5]]))
    torch.testing.assert_close(
        out[0, 0, :2], torch.tensor([1.0 + 3.5 * 3.5 / 4, 2.0 + 2.5 * 2.5 / 3])
    )


def test_heatmaps_to_keypoints_tiny_box_and_ties():
    # Sides are clamped to 1 pixel: a 0.3-px box still decodes at corner + 0.5.
    out = heatmaps_to_keypoints(torch.ones(1, 1, 1, 1), torch.tensor([[5.0, 5.0, 5.3, 5.3]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([5.5, 5.5, 1.0, 1.0]))
    # A constant map: arg-max takes the first cell (row-major).
    out = heatmaps_to_keypoints(torch.zeros(1, 1, 2, 2), torch.tensor([[0.0, 0.0, 2.0, 2.0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.5, 0.5, 0.0, 0.25]))


def test_heatmaps_to_keypoints_empty_and_detached():
    out = heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4))
    assert out.shape == (0, 17, 4)
    maps = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = heatmaps_to_keypoints(maps, torch.tensor([[0.0, 0.0, 16.0, 12.0], [4.0, 4.0, 9.0, 30.0]]))
    assert out.shape == (2, 3, 4) and not out.requires_grad
    # decoded points lie inside their boxes
    assert ((out[1, :, 0] >= 4.0) & (out[1, :, 0] <= 9.0)).all()
    with pytest.raises(ValueError, match=r"\(N, K, Hm, Wm\)"):
        heatmaps_to_keypoints(torch.zeros(2, 3, 8), torch.zeros(2, 4))

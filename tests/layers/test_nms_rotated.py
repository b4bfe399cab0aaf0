"""nms_rotated / batched_nms_rotated against a slow greedy loop and torchvision's upright nms."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import batched_nms, nms

from workbench.layers import batched_nms_rotated, nms_rotated, pairwise_iou_rotated


def _boxes(n, seed, angles=False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    upright = torch.cat([xy, xy + wh], 1)
    angle = (torch.rand(n, 1, generator=g) * 360 - 180) if angles else torch.zeros(n, 1)
    return upright, torch.cat([xy + wh / 2, wh, angle], 1), torch.rand(n, generator=g)


def _slow_greedy(boxes, scores, thresh, idxs=None):
    """One box at a time, each IoU on its own (no shared matrix, no pruning)."""
    order = scores.argsort(descending=True, stable=True).tolist()
    kept = []
    for i in order:
        ok = True
        for j in kept:
            if idxs is not None and idxs[i] != idxs[j]:
                continue
            if pairwise_iou_rotated(boxes[i:i + 1], boxes[j:j + 1]).item() >= thresh:
                ok = False
                break
        if ok:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)


@pytest.mark.parametrize("thresh", [0.2, 0.5, 0.8])
def test_angle_0_equals_torchvision_nms(thresh):
    upright, rotated, scores = _boxes(600, 0)
    keep = nms_rotated(rotated, scores, thresh)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, nms(upright, scores, thresh))
    # 90 degrees with width and height swapped covers the same pixels.
    swapped = torch.cat([rotated[:, :2], rotated[:, 3:4], rotated[:, 2:3],
                         torch.full((600, 1), 90.0)], 1)
    assert torch.equal(nms_rotated(swapped, scores, thresh), keep)


def test_batched_angle_0_equals_torchvision_batched_nms():
    upright, rotated, scores = _boxes(800, 1)
    idxs = torch.randint(0, 7, (800,), generator=torch.Generator().manual_seed(1))
    before = rotated.clone()
    keep = batched_nms_rotated(rotated, scores, idxs, 0.5)
    assert torch.equal(rotated, before), "the input boxes were modified"
    assert torch.equal(keep, batched_nms(upright, scores, idxs, 0.5))


def test_rotated_boxes_match_a_slow_greedy_loop():
    _, rotated, scores = _boxes(120, 2, angles=True)
    for thresh in (0.1, 0.3):
        keep = nms_rotated(rotated, scores, thresh)
        assert 10 < len(keep) < 110  # suppression happens, and not everywhere
        assert torch.equal(keep, _slow_greedy(rotated, scores, thresh))
    idxs = torch.arange(120) % 3
    assert torch.equal(batched_nms_rotated(rotated, scores, idxs, 0.3),
                       _slow_greedy(rotated, scores, 0.3, idxs))


def test_threshold_is_inclusive_and_classes_never_suppress_each_other():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0, 0.0], [0.5, 0.0, 2.0, 2.0, 0.0]])  # IoU 1.5/2.5 = 0.6
    scores = torch.tensor([0.9, 0.8])
    assert nms_rotated(boxes, scores, 0.6).tolist() == [0]  # >= suppresses (detectron2)
    assert nms_rotated(boxes, scores, 0.61).tolist() == [0, 1]
    assert batched_nms_rotated(boxes, scores, torch.tensor([0, 1]), 0.1).tolist() == [0, 1]
    # Very far apart classes with huge coordinates: still independent.
    far = torch.tensor([[1e7, 1e7, 4.0, 4.0, 30.0], [1e7 + 1, 1e7, 4.0, 4.0, 30.0]])
    assert batched_nms_rotated(far, scores, torch.tensor([3, 3]), 0.5).tolist() == [0]


def test_empty_and_bad_inputs():
    assert nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms_rotated(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0), 0.5).shape == (0,)
    with pytest.raises(ValueError, match="boxes of shape \\(N, 5\\)"):
        nms_rotated(torch.zeros(3, 4), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores of shape \\(3,\\)"):
        nms_rotated(torch.zeros(3, 5), torch.zeros(2), 0.5)

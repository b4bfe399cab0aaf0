"""Non-maximum suppression of rotated boxes, in plain PyTorch.

Shape legend:
    N: number of boxes.
    K: number of box pairs that may overlap (their enclosing upright rectangles overlap).

Boxes are Tensor[N, 5] rows (xc, yc, w, h, angle in degrees counter-clockwise). As in
detectron2's ``nms_rotated``, a box is suppressed when its IoU with a kept, higher-scoring box is
at least ``iou_threshold`` (torchvision's upright ``nms`` needs strictly more). The IoU ignores
orientation: (5, 3, 4, 2, 90) and (5, 3, 4, 2, -90) cover the same pixels and suppress each other.

Pairs whose enclosing upright rectangles cannot give the threshold are dropped first; the IoU of
the others is computed in vectorised blocks (:func:`paired_iou_rotated`), block by block of
better boxes, so that the pairs of boxes already suppressed are never computed. Only resolving
a block, which is sequential by nature, loops over its suppressing boxes (on CPU copies).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .rotated_boxes import _candidate_pairs, _upright_bounds, paired_iou_rotated

# Pairs computed together in the greedy pass (a block of better boxes and their partners).
_PAIRS_PER_BLOCK = 1 << 14

__all__ = ["nms_rotated", "batched_nms_rotated"]


def _check(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"Expected boxes of shape (N, 5) as (xc, yc, w, h, angle), got "
                         f"{tuple(boxes.shape)}.")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"Expected scores of shape ({boxes.shape[0]},), got "
                         f"{tuple(scores.shape)}.")


def _iou_upper_bound(boxes: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(K,) an upper bound of the IoU of each pair: the overlap of the enclosing upright
    rectangles, capped by the smaller area, over the union that overlap would leave."""
    up = _upright_bounds(boxes)  # (N, 4) float64
    a, b = up[pairs[:, 0]], up[pairs[:, 1]]
    inter = ((torch.min(a[:, 2], b[:, 2]) - torch.max(a[:, 0], b[:, 0])).clamp(min=0)
             * (torch.min(a[:, 3], b[:, 3]) - torch.max(a[:, 1], b[:, 1])).clamp(min=0))
    area = boxes[:, 2].double() * boxes[:, 3].double()
    area1, area2 = area[pairs[:, 0]], area[pairs[:, 1]]
    inter = torch.min(inter, torch.min(area1, area2))
    return inter / (area1 + area2 - inter).clamp(min=1e-300)


def _nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                 idxs: Optional[torch.Tensor]) -> torch.Tensor:
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    sorted_boxes = boxes[order]
    num = len(order)
    pairs = _candidate_pairs(sorted_boxes, sorted_boxes)  # (K, 2) in sorted positions
    pairs = pairs[pairs[:, 0] < pairs[:, 1]]  # each pair once, the better box first
    if idxs is not None:
        sorted_idxs = idxs[order]
        pairs = pairs[sorted_idxs[pairs[:, 0]] == sorted_idxs[pairs[:, 1]]]
    # Pairs that cannot reach the threshold are never computed exactly (1e-6: rounding slack).
    pairs = pairs[_iou_upper_bound(sorted_boxes, pairs) >= iou_threshold - 1e-6]
    pairs = pairs[torch.argsort(pairs[:, 0], stable=True)]  # by the better box

    # Greedy pass in blocks of better boxes: a block's pairs are computed at once (vectorised),
    # leaving out the pairs of boxes already suppressed by earlier blocks; then the block is
    # resolved box by box. Only boxes that may suppress something are visited.
    removed = np.zeros(num, dtype=bool)
    first_all = pairs[:, 0].cpu().numpy()
    start = 0
    while start < len(pairs):
        stop = min(start + _PAIRS_PER_BLOCK, len(pairs))
        stop = int(np.searchsorted(first_all, first_all[stop - 1], side="right"))  # whole rows
        block = pairs[start:stop]
        first_np, second_np = first_all[start:stop], block[:, 1].cpu().numpy()
        live = ~removed[first_np] & ~removed[second_np]
        if live.any():
            live_t = torch.as_tensor(live, device=block.device)
            block, first_np, second_np = block[live_t], first_np[live], second_np[live]
            iou = paired_iou_rotated(sorted_boxes[block[:, 0]], sorted_boxes[block[:, 1]])
            hits = (iou >= iou_threshold).cpu().numpy()
            first_np, second_np = first_np[hits], second_np[hits]
            bounds = np.flatnonzero(np.diff(first_np)) + 1
            for rows in np.split(np.arange(len(first_np)), bounds):
                if len(rows) and not removed[first_np[rows[0]]]:
                    removed[second_np[rows]] = True
        start = stop
    kept = np.flatnonzero(~removed)
    return order[torch.as_tensor(kept, dtype=torch.int64, device=order.device)]


def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of rotated boxes.

    Args:
        boxes: (N, 5) rotated boxes.
        scores: (N,) their scores.
        iou_threshold: a box whose IoU with a kept, higher-scoring box is >= this is dropped.

    Returns:
        int64 (Nk,) indices of the kept boxes, by decreasing score (ties keep input order).
    """
    _check(boxes, scores)
    return _nms_rotated(boxes, scores, iou_threshold, None)


def batched_nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                        iou_threshold: float) -> torch.Tensor:
    """:func:`nms_rotated` within each category of ``idxs``: boxes of different categories never
    suppress each other.

    detectron2 shifts each category's boxes by ``idx * (coordinate span + 1)`` so that they
    cannot overlap and runs one NMS; here pairs of different categories are simply never
    compared, which is the same result without the float32 rounding of large shifted
    coordinates (and also holds for tilted boxes reaching past ``max(w, h) / 2``, which that
    span does not cover).

    Args:
        boxes: (N, 5) rotated boxes.
        scores: (N,) their scores.
        idxs: (N,) integer category of each box.
        iou_threshold: as for :func:`nms_rotated`.

    Returns:
        int64 (Nk,) indices of the kept boxes, by decreasing score.
    """
    _check(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"Expected idxs of shape ({boxes.shape[0]},), got {tuple(idxs.shape)}.")
    return _nms_rotated(boxes.float(), scores, iou_threshold, idxs)

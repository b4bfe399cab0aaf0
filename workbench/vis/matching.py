"""Ground truth against predictions: pairwise IoU and greedy one-to-one matching (for
``Visualizer.compare``).

Shape legend: G ground-truth boxes; P predictions.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .inputs import _fields, _np, _xyxy

__all__ = ["box_iou_matrix", "match_by_iou"]


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of XYXY boxes ``a`` (n, 4) and ``b`` (m, 4), as float64 numpy: the project's
    :func:`workbench.structures.pairwise_iou` (which computes on float32 ``Boxes``)."""
    from workbench.structures import Boxes, pairwise_iou

    a = Boxes(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = Boxes(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return pairwise_iou(a, b).numpy().astype(np.float64)


def match_by_iou(gt_boxes, pred_boxes, pred_scores=None, gt_classes=None, pred_classes=None,
                 iou_thresh: float = 0.5) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one matching, predictions in descending score: each takes the unmatched
    ground truth (of its class, when classes are given) with the highest IoU >= ``iou_thresh``.

    Returns:
        ``[(gt_index, pred_index, iou), ...]`` in the order the predictions were matched.
    """
    iou = box_iou_matrix(gt_boxes, pred_boxes)  # (G, P)
    n_gt, n_pred = iou.shape
    order = np.arange(n_pred) if pred_scores is None else np.argsort(-np.asarray(pred_scores), kind="stable")
    if gt_classes is not None and pred_classes is not None:
        same = np.asarray(gt_classes)[:, None] == np.asarray(pred_classes)[None, :]
        iou = np.where(same, iou, -1.0)
    taken = np.zeros(n_gt, dtype=bool)
    out = []
    for j in order:
        if n_gt == 0:
            break
        col = np.where(taken, -1.0, iou[:, j])
        g = int(np.argmax(col))
        if col[g] >= iou_thresh:
            taken[g] = True
            out.append((g, int(j), float(iou[g, j])))
    return out


def _match_gt_pred(gt, pred, *, iou_thresh: float, score_thresh: float,
                   classes: Optional[Sequence[int]], match_classes: bool, box_scale: float):
    """The boxes, classes and scores of ``gt`` and ``pred`` and their matches, for
    ``Visualizer.compare`` (see there for the arguments).

    Returns:
        ``(g_boxes (G, 4), g_cls (G,), p_boxes (P, 4), p_scores (P,) or None, p_cls (P,) or
        None, rows, matches)``: ``rows`` the predictions kept (by ``score_thresh`` and
        ``classes``), ``matches`` ``[(gt_index, pred_index, iou)]`` with pred_index a row of
        ``pred``.
    """
    if isinstance(gt, dict):
        annos = [a for a in gt.get("annotations", []) if not a.get("iscrowd", 0)]
        g_boxes = np.asarray([_xyxy(a) for a in annos], dtype=np.float64).reshape(-1, 4)
        g_cls = np.asarray([a.get("category_id", 0) for a in annos], dtype=np.int64)
    else:
        f = _fields(gt)
        g_boxes = _np(f["gt_boxes"]).astype(np.float64).reshape(-1, 4) * box_scale
        g_cls = _np(f.get("gt_classes")) if f.get("gt_classes") is not None else np.zeros(len(g_boxes), np.int64)
    f = _fields(pred)
    p_boxes = _np(f["pred_boxes"]).astype(np.float64).reshape(-1, 4) * box_scale
    p_scores = _np(f.get("scores"))
    p_cls = _np(f.get("pred_classes"))
    keep = np.ones(len(p_boxes), dtype=bool)
    if p_scores is not None and score_thresh > 0:
        keep &= p_scores > score_thresh
    if classes is not None:
        keep &= np.isin(p_cls, list(classes))
        g_keep = np.isin(g_cls, list(classes))
        g_boxes, g_cls = g_boxes[g_keep], g_cls[g_keep]
    rows = np.nonzero(keep)[0]
    matches = match_by_iou(g_boxes, p_boxes[rows], None if p_scores is None else p_scores[rows],
                           g_cls if match_classes else None,
                           p_cls[rows] if match_classes and p_cls is not None else None, iou_thresh)
    matches = [(g, int(rows[j]), iou) for g, j, iou in matches]
    return g_boxes, g_cls, p_boxes, p_scores, p_cls, rows, matches

"""Ground truth against predictions: pairwise IoU, and the trace's greedy matching
(:func:`workbench.inspect.ground_truth.match_detections`) on numpy boxes, for
``Visualizer.compare``.

Shape legend: G ground-truth boxes; P predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .inputs import _fields, _np, _xyxy

__all__ = ["box_iou_matrix", "match_by_iou", "classify_predictions", "Comparison"]


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of XYXY boxes ``a`` (n, 4) and ``b`` (m, 4), as float64 numpy: the project's
    :func:`workbench.structures.pairwise_iou` (which computes on float32 ``Boxes``)."""
    from workbench.structures import Boxes, pairwise_iou

    a = Boxes(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = Boxes(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return pairwise_iou(a, b).numpy().astype(np.float64)


def classify_predictions(gt_boxes, pred_boxes, pred_scores=None, gt_classes=None,
                         pred_classes=None, iou_thresh: float = 0.5) -> list:
    """What each prediction is with respect to the ground truth: one
    :class:`workbench.inspect.Match` per prediction, in the predictions' order (``kind`` "tp",
    "duplicate", "mislabel", "localisation", "both" or "background", with the object it refers
    to and the IoU). It is the trace's matcher (:func:`workbench.inspect.ground_truth.match_detections`):
    predictions in descending score (the given order without scores), each taking the untaken
    object of its class with the highest IoU >= ``iou_thresh``. Without both ``gt_classes`` and
    ``pred_classes`` every box counts as one class (so there is no "mislabel").
    """
    import torch

    from workbench.inspect.ground_truth import GroundTruth, match_detections

    g = torch.as_tensor(np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4))
    p = torch.as_tensor(np.asarray(pred_boxes, dtype=np.float32).reshape(-1, 4))
    use_classes = gt_classes is not None and pred_classes is not None
    g_cls = torch.as_tensor(np.asarray(gt_classes, dtype=np.int64).reshape(-1)) if use_classes \
        else torch.zeros(len(g), dtype=torch.int64)
    p_cls = torch.as_tensor(np.asarray(pred_classes, dtype=np.int64).reshape(-1)) if use_classes \
        else torch.zeros(len(p), dtype=torch.int64)
    scores = -torch.arange(len(p), dtype=torch.float64) if pred_scores is None \
        else torch.as_tensor(np.asarray(pred_scores, dtype=np.float64).reshape(-1))
    for name, got, want, what in (("gt_classes", len(g_cls), len(g), "ground-truth boxes"),
                                  ("pred_classes", len(p_cls), len(p), "predictions"),
                                  ("pred_scores", len(scores), len(p), "predictions")):
        if got != want:
            raise ValueError(f"{name} has {got} entries but there are {want} {what}.")
    gt = GroundTruth(g, g_cls, torch.zeros(len(g), dtype=torch.bool))
    matches, _ = match_detections(p, scores, p_cls, gt, iou_thresh=iou_thresh)
    return matches


def match_by_iou(gt_boxes, pred_boxes, pred_scores=None, gt_classes=None, pred_classes=None,
                 iou_thresh: float = 0.5) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one matching, predictions in descending score: each takes the unmatched
    ground truth (of its class, when classes are given) with the highest IoU >= ``iou_thresh``
    (the true positives of :func:`classify_predictions`).

    Returns:
        ``[(gt_index, pred_index, iou), ...]`` in the order the predictions were matched.
    """
    kinds = classify_predictions(gt_boxes, pred_boxes, pred_scores, gt_classes, pred_classes,
                                 iou_thresh)
    order = range(len(kinds)) if pred_scores is None else \
        np.argsort(-np.asarray(pred_scores, dtype=np.float64).reshape(-1), kind="stable")
    return [(m.gt, int(j), m.iou) for j in order for m in (kinds[j],) if m.kind == "tp"]


@dataclass
class Comparison:
    """Ground truth against predictions, for ``Visualizer.compare``.

    Attributes:
        g_boxes, g_cls: (G, 4), (G,) the ground truth (crowd regions left out).
        p_boxes, p_scores, p_cls: (P, 4), (P,) or None, (P,) or None all predictions.
        rows: the predictions kept (by ``score_thresh`` and ``classes``), rows of ``pred``.
        matches: ``[(gt_index, pred_row, iou)]`` true positives, in descending score.
        mislabels: ``[(gt_index, pred_row, iou)]`` predictions that are not true positives
            but overlap (IoU >= t) an object of another class, in descending score.
        kinds: pred_row -> its :class:`workbench.inspect.Match` (for the kept rows).
    """

    g_boxes: np.ndarray
    g_cls: np.ndarray
    p_boxes: np.ndarray
    p_scores: Optional[np.ndarray]
    p_cls: Optional[np.ndarray]
    rows: np.ndarray
    matches: List[Tuple[int, int, float]]
    mislabels: List[Tuple[int, int, float]]
    kinds: Dict[int, Any] = field(default_factory=dict)


def _match_gt_pred(gt, pred, *, iou_thresh: float, score_thresh: float,
                   classes: Optional[Sequence[int]], match_classes: bool,
                   box_scale: float) -> Comparison:
    """The boxes, classes and scores of ``gt`` and ``pred`` and what each kept prediction is
    (:func:`classify_predictions`), for ``Visualizer.compare`` (see there for the arguments)."""
    if isinstance(gt, dict):
        annos = [a for a in gt.get("annotations", []) if not a.get("iscrowd", 0)]
        g_boxes = np.asarray([_xyxy(a) for a in annos], dtype=np.float64).reshape(-1, 4)
        g_cls = np.asarray([a.get("category_id", 0) for a in annos], dtype=np.int64)
    else:
        f = _fields(gt)
        if f.get("gt_boxes") is None:
            raise KeyError(f"gt needs 'gt_boxes' (an Instances) or 'annotations' (a dataset dict); "
                           f"got fields {sorted(f)}.")
        g_boxes = _np(f["gt_boxes"]).astype(np.float64).reshape(-1, 4) * box_scale
        g_cls = _np(f.get("gt_classes")) if f.get("gt_classes") is not None else np.zeros(len(g_boxes), np.int64)
    f = _fields(pred)
    if f.get("pred_boxes") is None:
        raise KeyError(f"pred needs 'pred_boxes'; got fields {sorted(f)}.")
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
    with_classes = match_classes and p_cls is not None
    kinds = classify_predictions(g_boxes, p_boxes[rows], None if p_scores is None else p_scores[rows],
                                 g_cls if with_classes else None,
                                 p_cls[rows] if with_classes else None, iou_thresh)
    order = range(len(rows)) if p_scores is None else np.argsort(-p_scores[rows], kind="stable")
    matches = [(kinds[j].gt, int(rows[j]), kinds[j].iou) for j in order if kinds[j].kind == "tp"]
    mislabels = [(kinds[j].gt, int(rows[j]), kinds[j].iou) for j in order
                 if kinds[j].kind == "mislabel"]
    return Comparison(g_boxes, g_cls, p_boxes, p_scores, p_cls, rows, matches, mislabels,
                      {int(r): k for r, k in zip(rows, kinds)})

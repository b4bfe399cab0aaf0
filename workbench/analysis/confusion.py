"""Confusion matrix with a background row and column, and per-class precision-recall curves.

Both read the evaluation's per-image matching (:func:`~workbench.analysis.per_image.per_image_results`)
at its IoU threshold ``t``. K classes; row / column K is background.

Confusion: every object of class c is counted once in row c: in column c when a true positive
took it, in column d when a detection of class d (score >= ``score_thresh``) lies on it at
IoU >= t and no true positive took it, else in the background column (missed). Every other
detection above the score threshold (duplicates, localisation, background errors, and detections
on an object already counted) is counted in the background row, in its class's column. Crowd
regions and the detections on them are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .errors import _ious, coco_ap, geometry_of
from .per_image import ImageResult

__all__ = ["ConfusionMatrix", "confusion_matrix", "PRCurve", "pr_curves", "plot_pr_curves"]


@dataclass
class ConfusionMatrix:
    """Attributes:
        counts: (K+1, K+1) int: row = true class (K: no object), column = predicted class
            (K: not detected).
        class_names: K names (background added by :attr:`labels`).
        score_thresh, iou_thresh: the settings.
    """

    counts: np.ndarray
    class_names: Optional[List[str]]
    score_thresh: float
    iou_thresh: float

    @property
    def labels(self) -> List[str]:
        k = self.counts.shape[0] - 1
        names = self.class_names if self.class_names and len(self.class_names) == k \
            else [str(i) for i in range(k)]
        return list(names) + ["background"]

    def normalized(self) -> np.ndarray:
        """Row-normalised (each true class sums to 1; rows without objects stay 0)."""
        rows = self.counts.sum(axis=1, keepdims=True).astype(np.float64)
        return np.divide(self.counts, rows, out=np.zeros(self.counts.shape), where=rows > 0)

    def __repr__(self) -> str:
        labels = self.labels
        w = max(len(s) for s in labels) + 1
        head = " " * w + "".join(f"{s[:6]:>7}" for s in labels)
        rows = [f"{labels[i]:<{w}}" + "".join(f"{v:7d}" for v in row) for i, row in enumerate(self.counts)]
        return (f"ConfusionMatrix(true x predicted, IoU {self.iou_thresh}, score >= "
                f"{self.score_thresh})\n" + "\n".join([head] + rows))

    def plot(self, normalize: bool = True):
        """The matrix as a PlotImage (rows: true class, columns: predicted)."""
        from workbench.vis import PlotImage

        m = self.normalized() if normalize else self.counts
        k = m.shape[0]
        fig = PlotImage(1, 1, panel=max(3.0, 0.45 * k))
        ax = fig.axes[0]
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, int(m.max())))
        ax.set_xticks(range(k), self.labels, rotation=60, fontsize=7)
        ax.set_yticks(range(k), self.labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        for i in range(k):
            for j in range(k):
                if self.counts[i, j]:
                    ax.text(j, i, f"{m[i, j]:.2f}" if normalize else str(int(m[i, j])),
                            ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.6 * (m.max() or 1) else "black")
        return fig


def confusion_matrix(results: Dict[object, ImageResult], num_classes: int, *,
                     score_thresh: float = 0.0, class_names: Optional[List[str]] = None,
                     coco_eval=None) -> ConfusionMatrix:
    """The confusion matrix of per-image results (see the module docstring).

    Example::

        cm = confusion_matrix(evaluator.per_image("bbox", 0.5), 7, score_thresh=0.5)
        cm.counts[:7].sum(1)        # == the number of objects of each class

    Args:
        coco_eval: for mask results, the segm ``COCOeval`` they come from (mask IoUs).
    """
    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}.")
    K = int(num_classes)
    m = np.zeros((K + 1, K + 1), dtype=np.int64)
    t = next(iter(results.values())).iou_thresh if results else 0.5
    geometry = geometry_of(results, coco_eval)
    for r in results.values():
        bad = [int(c) for c in np.concatenate([r.categories, r.gt_categories]) if not 0 <= c < K]
        if bad:
            raise ValueError(f"image {r.image_id}: class {bad[0]} is outside [0, {K}) "
                             f"(num_classes={K}).")
        iou = _ious(r, geometry)
        # Objects taken by a true positive above the score threshold (below it, not detected).
        keep_tp = r.tp & (r.scores >= score_thresh)
        used = {int(np.nonzero(r.gt_ids == g)[0][0]) for g in r.matched_gt[keep_tp]}
        for d in range(len(r.dt_ids)):  # decreasing score
            if r.ignored[d] or r.scores[d] < score_thresh:
                continue
            c = int(r.categories[d])
            if r.tp[d]:
                m[c, c] += 1
                continue
            row = iou[d] if iou.shape[1] else np.zeros(0)
            other = (r.gt_categories != c) & (row >= t)
            free = [j for j in np.nonzero(other)[0][np.argsort(-row[other], kind="stable")]
                    if int(j) not in used]
            if free:
                used.add(int(free[0]))
                m[int(r.gt_categories[free[0]]), c] += 1
            else:
                m[K, c] += 1
        for j in np.nonzero(~r.gt_ignored)[0]:
            if int(j) not in used:
                m[int(r.gt_categories[j]), K] += 1
    return ConfusionMatrix(m, class_names, float(score_thresh), float(t))


@dataclass
class PRCurve:
    """One class's precision-recall curve (COCO's rule, at the matching IoU).

    Attributes:
        cls: the class; ``num_gt`` its objects.
        scores, precision, recall: (M,) along the detections in decreasing score.
        ap: AP (percent, 101 points; NaN without objects).
        best_f1, best_f1_score: the highest F1 and the score threshold that gives it.
    """

    cls: int
    num_gt: int
    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap: float
    best_f1: float
    best_f1_score: float
    class_name: Optional[str] = field(default=None, repr=False)


def pr_curves(results: Dict[object, ImageResult], num_classes: int,
              class_names: Optional[List[str]] = None) -> List[PRCurve]:
    """Per class, the precision-recall curve, AP and the score threshold of the best F1."""
    curves = []
    for c in range(int(num_classes)):
        scores, tp, num_gt = [], [], 0
        for r in results.values():
            num_gt += int(((r.gt_categories == c) & ~r.gt_ignored).sum())
            sel = (r.categories == c) & ~r.ignored
            scores.append(r.scores[sel])
            tp.append(r.tp[sel])
        s = np.concatenate(scores) if scores else np.zeros(0)
        k = np.concatenate(tp) if tp else np.zeros(0, bool)
        order = np.argsort(-s, kind="mergesort")
        s, k = s[order], k[order].astype(np.float64)
        tps, fps = np.cumsum(k), np.cumsum(1.0 - k)
        precision = tps / np.maximum(tps + fps, 1e-12)
        recall = tps / num_gt if num_gt else np.zeros_like(tps)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        best = int(f1.argmax()) if len(f1) and num_gt else -1
        ap = coco_ap(s, k.astype(bool), num_gt)
        name = class_names[c] if class_names and c < len(class_names) else None
        curves.append(PRCurve(c, num_gt, s, precision, recall,
                              100.0 * ap if ap >= 0 else float("nan"),
                              float(f1[best]) if best >= 0 else 0.0,
                              float(s[best]) if best >= 0 else float("nan"), name))
    return curves



def plot_pr_curves(curves: List[PRCurve], *, ncols: int = 4):
    """One panel per class: precision against recall, the best-F1 point marked, AP in the title
    (a PlotImage)."""
    from workbench.vis import PlotImage

    n = max(len(curves), 1)
    nrows, ncols = -(-n // ncols), min(ncols, n)
    fig = PlotImage(nrows, ncols, panel=2.0)
    for ax in fig.axes:
        ax.set_axis_off()
    for ax, c in zip(fig.axes, curves):
        ax.set_axis_on()
        ax.plot(c.recall, c.precision, linewidth=1)
        if len(c.scores):
            f1 = np.where(c.precision + c.recall > 0,
                          2 * c.precision * c.recall / np.maximum(c.precision + c.recall, 1e-12), 0)
            b = int(f1.argmax())
            ax.plot([c.recall[b]], [c.precision[b]], "o", markersize=3)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        name = c.class_name or f"class {c.cls}"
        ax.set_title(f"{name}: AP {c.ap:.1f}, F1 {c.best_f1:.2f} @ {c.best_f1_score:.2f}", fontsize=6)
        ax.tick_params(labelsize=5)
    return fig

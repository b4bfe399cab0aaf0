"""Open-set metrics (the OWOD setting: some classes held out as "unknown").

A model trained on the known classes meets objects of classes it never saw. Its detections are
either of a known class, or flagged unknown (e.g. by the energy score of
:mod:`workbench.inspect.openworld`: ``EnergyThreshold.is_unknown``). With ground truth for both:

* **A-OSE** (absolute open-set error, Miller et al. / Joseph et al. 2021): known-class
  detections lying on an unknown object (IoU >= t) and on no known one.
* **WI** (wilderness impact, Dhamija et al. 2020): ``P_K / P_{K u U} - 1`` at a recall level
  (0.8 by default) of each known class, i.e. the known-class false positives on unknown objects
  over the true and false positives of the closed set, summed over classes.
* **unknown recall / AP**: the detections flagged unknown against the unknown objects (one
  detection per object, greedily by score; AP by COCO's 101-point rule).

Boxes are XYXY in one frame per image (e.g. original px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from workbench.structures import Boxes, pairwise_iou

from .errors import coco_ap

__all__ = ["OpenSetImage", "OpenSetMetrics", "open_set_metrics", "energy_histogram"]


@dataclass
class OpenSetImage:
    """One image: D detections (``boxes`` (D, 4), ``classes``, ``scores``, ``unknown`` (D,) bool:
    flagged unknown) and G objects (``gt_boxes`` (G, 4), ``gt_classes``)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    unknown: np.ndarray
    gt_boxes: np.ndarray
    gt_classes: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.gt_boxes = np.asarray(self.gt_boxes, dtype=np.float64).reshape(-1, 4)
        n, g = len(self.boxes), len(self.gt_boxes)
        for name, length in (("classes", n), ("scores", n), ("unknown", n), ("gt_classes", g)):
            v = np.asarray(getattr(self, name)).reshape(-1)
            if len(v) != length:
                raise ValueError(f"OpenSetImage.{name} has {len(v)} entries, expected {length}.")
            setattr(self, name, v.astype(bool) if name == "unknown" else v)
        if not (np.isfinite(self.boxes).all() and np.isfinite(self.scores.astype(np.float64)).all()):
            raise ValueError("OpenSetImage: non-finite detection boxes or scores.")


@dataclass
class OpenSetMetrics:
    """Attributes: ``a_ose`` (count), ``wi`` (ratio), ``unknown_recall`` (0..1),
    ``unknown_ap`` (percent), ``recall_level``, ``iou_thresh``, and the counts behind them:
    ``num_unknown_objects``, ``wi_open_fp``, ``wi_closed_tp_fp``."""

    a_ose: int
    wi: float
    unknown_recall: float
    unknown_ap: float
    num_unknown_objects: int
    wi_open_fp: int
    wi_closed_tp_fp: int
    recall_level: float
    iou_thresh: float

    def __repr__(self) -> str:
        return (f"OpenSetMetrics(A-OSE {self.a_ose}, WI {self.wi:.4f} at recall {self.recall_level}, "
                f"unknown recall {self.unknown_recall:.3f}, unknown AP {self.unknown_ap:.2f}, "
                f"{self.num_unknown_objects} unknown objects)")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return pairwise_iou(Boxes(torch.as_tensor(a, dtype=torch.float32)),
                        Boxes(torch.as_tensor(b, dtype=torch.float32))).numpy().astype(np.float64)


def _greedy(scores: np.ndarray, iou: np.ndarray, t: float) -> np.ndarray:
    """(D,) bool: detections matched one-to-one to objects, by decreasing score, best IoU >= t."""
    tp = np.zeros(len(scores), bool)
    taken = np.zeros(iou.shape[1], bool)
    for d in np.argsort(-scores, kind="stable"):
        if iou.shape[1] == 0:
            break
        cand = np.where(taken, -1.0, iou[d])
        j = int(cand.argmax())
        if cand[j] >= t:
            taken[j], tp[d] = True, True
    return tp


def open_set_metrics(images: Iterable[OpenSetImage], unknown_classes: Sequence[int], *,
                     iou_thresh: float = 0.5, recall_level: float = 0.8) -> OpenSetMetrics:
    """A-OSE, WI, unknown recall and AP of a set of images (see the module docstring)."""
    images = list(images)
    unknown_classes = {int(c) for c in unknown_classes}
    if not 0 < recall_level <= 1:
        raise ValueError(f"recall_level must be in (0, 1], got {recall_level}.")
    known_classes = sorted({int(c) for im in images for c in im.gt_classes} - unknown_classes)
    a_ose, unk_scores, unk_tp, num_unknown = 0, [], [], 0
    per_class = {c: ([], [], [], 0) for c in known_classes}  # scores, tp, on-unknown, num_gt
    for im in images:
        is_unk_gt = np.isin(im.gt_classes, list(unknown_classes))
        num_unknown += int(is_unk_gt.sum())
        iou = _iou(im.boxes, im.gt_boxes)  # (D, G)
        known_det = ~im.unknown
        on_unknown = (iou[:, is_unk_gt] >= iou_thresh).any(axis=1) if is_unk_gt.any() \
            else np.zeros(len(im.boxes), bool)
        on_known = (iou[:, ~is_unk_gt] >= iou_thresh).any(axis=1) if (~is_unk_gt).any() \
            else np.zeros(len(im.boxes), bool)
        a_ose += int((known_det & on_unknown & ~on_known).sum())
        u = np.nonzero(im.unknown)[0]
        unk_scores.append(im.scores[u].astype(np.float64))
        unk_tp.append(_greedy(im.scores[u].astype(np.float64), iou[u][:, is_unk_gt], iou_thresh))
        for c in known_classes:
            sel = np.nonzero(known_det & (im.classes == c))[0]
            gt_c = im.gt_classes == c
            tp = _greedy(im.scores[sel].astype(np.float64), iou[sel][:, gt_c], iou_thresh)
            s, t_, o, n = per_class[c]
            per_class[c] = (s + [im.scores[sel].astype(np.float64)], t_ + [tp],
                            o + [on_unknown[sel] & ~on_known[sel]], n + int(gt_c.sum()))
    open_fp = closed = 0
    for c, (s, tp, onu, n) in per_class.items():
        if n == 0:
            continue
        s, tp, onu = np.concatenate(s), np.concatenate(tp), np.concatenate(onu)
        order = np.argsort(-s, kind="stable")
        tp, onu = tp[order], onu[order]
        reach = np.nonzero(np.cumsum(tp) / n >= recall_level)[0]
        k = int(reach[0]) + 1 if len(reach) else len(tp)  # the top-k reaching the recall level
        open_fp += int((onu[:k] & ~tp[:k]).sum())
        closed += int(k - (onu[:k] & ~tp[:k]).sum())
    us, ut = np.concatenate(unk_scores) if unk_scores else np.zeros(0), \
        np.concatenate(unk_tp) if unk_tp else np.zeros(0, bool)
    ap = coco_ap(us, ut, num_unknown)
    return OpenSetMetrics(
        a_ose=a_ose, wi=open_fp / closed if closed else 0.0,
        unknown_recall=float(ut.sum()) / num_unknown if num_unknown else float("nan"),
        unknown_ap=100.0 * ap if ap >= 0 else float("nan"), num_unknown_objects=num_unknown,
        wi_open_fp=open_fp, wi_closed_tp_fp=closed, recall_level=recall_level,
        iou_thresh=iou_thresh)


def energy_histogram(known: Sequence[float], unknown: Sequence[float], *,
                     threshold: Optional[float] = None, bins: int = 40):
    """Histograms of the energies of detections on known vs unknown objects (a PlotImage),
    with the threshold that separates them when given. ``drawn["counts"]``: (known, unknown)."""
    from workbench.vis import PlotImage

    k, u = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    both = np.concatenate([k, u]) if len(k) + len(u) else np.zeros(1)
    edges = np.linspace(both.min(), both.max() + 1e-9, bins + 1)
    fig = PlotImage(1, 1, panel=3.2)
    ax = fig.axes[0]
    ax.hist(k, bins=edges, alpha=0.6, label=f"known ({len(k)})", color="#1f77b4")
    ax.hist(u, bins=edges, alpha=0.6, label=f"unknown ({len(u)})", color="#d62728")
    if threshold is not None:
        ax.axvline(threshold, color="black", linewidth=1, linestyle="--", label="threshold")
    ax.set_xlabel("energy (higher: more unknown)", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.drawn["counts"] = (len(k), len(u))
    return fig

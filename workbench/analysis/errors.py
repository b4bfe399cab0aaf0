"""TIDE-style error breakdown: what kind of mistake each false positive and each miss is, and
how much AP fixing each kind would give back.

Built on the evaluation's own matching (:func:`~workbench.analysis.per_image.per_image_results`,
pycocotools at IoU ``t`` = 0.5 by default), so "nothing fixed" is the evaluator's AP at ``t``.
Every detection that is not a true positive gets one type (first rule that holds), from its IoU
with the image's objects of any class (crowd regions excluded):

    duplicate     IoU >= t with an object of its class that a higher-scoring detection took
    cls           IoU >= t with an object of another class (classification error)
    loc           its class, 0.1 <= IoU < t (localisation error)
    both          another class, 0.1 <= IoU < t
    bkg           IoU < 0.1 with every object (background)

and an object no true positive took is ``miss`` unless a ``cls`` or ``loc`` error lies on it
(that error is charged instead, as TIDE does). The oracle fix of a type (Bolya et al., TIDE,
ECCV 2020) changes only those errors, in score order, and AP is recomputed: ``cls`` and ``loc``
become true positives of their object when it is still free (else they are suppressed as
duplicates), ``both`` / ``duplicate`` / ``bkg`` are suppressed, ``miss`` objects leave the
ground truth. dAP = AP(fixed) - AP. ``FP`` suppresses every false positive, ``FN`` removes every
object no true positive took (the misses and the objects under a ``cls`` / ``loc`` error).
Fixing everything gives AP 100.

Shape legend: D detections of one image, G objects; AP in percent (COCO's 101-point rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util

from .per_image import ImageResult

__all__ = ["ERROR_TYPES", "ErrorBreakdown", "error_breakdown", "coco_ap"]

ERROR_TYPES = ("cls", "loc", "both", "duplicate", "bkg", "miss")
BACKGROUND_IOU = 0.1
_RECALLS = np.linspace(0.0, 1.00, 101)  # COCO's recall thresholds


def coco_ap(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """AP (0..1) of one class as pycocotools' ``accumulate`` computes it: detections in
    decreasing score (stable), the precision envelope sampled at 101 recall points; -1 when
    the class has no object (excluded from means)."""
    if num_gt == 0:
        return -1.0
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    tp_sum, fp_sum = np.cumsum(tp), np.cumsum(1.0 - tp)
    if len(tp) == 0:
        return 0.0
    rc = tp_sum / num_gt
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1]  # the envelope: max precision at recall >= r
    inds = np.searchsorted(rc, _RECALLS, side="left")
    q = np.where(inds < len(pr), pr[np.minimum(inds, len(pr) - 1)], 0.0)
    return float(q.mean())


@dataclass
class _Det:
    image: object
    index: int  # row in its ImageResult
    score: float
    cls: int
    tp: bool
    kind: Optional[str]  # error type of a non-tp
    target: int  # object (row in the image's gt arrays) the error lies on, -1 for none
    target_cls: int


@dataclass
class ErrorBreakdown:
    """The result of :func:`error_breakdown`.

    Attributes:
        ap: AP (percent) at the matching threshold, averaged over classes with objects.
        dap: error type (``ERROR_TYPES`` + "FP", "FN") -> dAP (percent points).
        counts: error type -> how many errors of that type.
        per_class_ap: class -> AP; ``per_class_dap``: class -> {type: dAP}.
        errors: per image id, per detection row its type (None for a tp); ``missed`` per image
            the rows of the objects charged as ``miss``.
        iou_thresh: the matching threshold.
    """

    ap: float
    dap: Dict[str, float]
    counts: Dict[str, int]
    per_class_ap: Dict[int, float]
    per_class_dap: Dict[int, Dict[str, float]]
    errors: Dict[object, List[Optional[str]]]
    missed: Dict[object, List[int]]
    iou_thresh: float
    class_names: Optional[List[str]] = field(default=None, repr=False)
    _state: tuple = field(default=(), repr=False)  # (dets, num_gt, missed, classes)

    def ap_if_fixed(self, *types: str) -> float:
        """AP (percent) with the oracle fixes of ``types`` applied together (any of
        ``ERROR_TYPES``; ``ap_if_fixed(*ERROR_TYPES)`` is 100)."""
        unknown = [t for t in types if t not in ERROR_TYPES]
        if unknown:
            raise ValueError(f"Unknown error type {unknown[0]!r}; one of {ERROR_TYPES}.")
        dets, num_gt, missed, classes = self._state
        fixed, gt = _fix(dets, num_gt, missed, set(types))
        return _mean(_ap(fixed, gt, classes))

    def summary(self) -> str:
        names = list(ERROR_TYPES) + ["FP", "FN"]
        lines = [f"AP{int(round(self.iou_thresh * 100))} {self.ap:.2f}; dAP if fixed:"]
        lines += [f"  {n:<9} {self.dap[n]:6.2f}  ({self.counts.get(n, 0)} errors)" if n in self.counts
                  else f"  {n:<9} {self.dap[n]:6.2f}" for n in names]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "ErrorBreakdown(" + self.summary().replace("\n", ";") + ")"

    def plot(self):
        """A bar chart of dAP per error type (like TIDE's summary), as a PlotImage."""
        from workbench.vis import PlotImage

        names = list(ERROR_TYPES) + ["FP", "FN"]
        fig = PlotImage(1, 1, panel=3.2)
        ax = fig.axes[0]
        ax.barh(range(len(names))[::-1], [self.dap[n] for n in names],
                color=["#d62728", "#ff7f0e", "#bcbd22", "#9467bd", "#8c564b", "#1f77b4", "#555555",
                       "#999999"])
        ax.set_yticks(range(len(names))[::-1], names, fontsize=8)
        ax.set_xlabel("dAP (AP points regained if fixed)", fontsize=8)
        ax.set_title(f"AP{int(round(self.iou_thresh * 100))} {self.ap:.1f}", fontsize=9)
        ax.tick_params(labelsize=7)
        return fig


def _ious(r: ImageResult, geometry) -> np.ndarray:
    """(D, G) IoU of every detection with every object (crowd columns -1)."""
    D, G = len(r.dt_ids), len(r.gt_ids)
    if D == 0 or G == 0:
        return np.zeros((D, G))
    iou = np.asarray(mask_util.iou(geometry(r, "dt"), geometry(r, "gt"), [0] * G), dtype=np.float64)
    iou[:, r.gt_ignored] = -1.0
    return iou.reshape(D, G)


def geometry_of(results: Dict[object, ImageResult], coco_eval=None):
    """How to read the detections' and objects' geometry for IoUs: boxes, or (for mask results)
    the RLEs of the ``COCOeval`` they came from (required then)."""
    segm = any(r.iou_type == "segm" for r in results.values())
    if segm and (coco_eval is None or coco_eval.params.iouType != "segm"):
        raise ValueError("These are mask results: pass the segm COCOeval they come from "
                         "(coco_eval=evaluator.coco_evals['segm']) so IoUs are mask IoUs.")

    def geometry(r: ImageResult, which: str):
        if segm:
            if which == "dt":
                return [coco_eval.cocoDt.anns[int(i)]["segmentation"] for i in r.dt_ids]
            return [coco_eval.cocoGt.annToRLE(coco_eval.cocoGt.anns[int(i)]) for i in r.gt_ids]
        return (r.boxes if which == "dt" else r.gt_boxes).tolist()
    return geometry


def _classify(results: Dict[object, ImageResult], geometry, t: float) -> List[_Det]:
    dets: List[_Det] = []
    for img, r in results.items():
        iou = _ious(r, geometry)
        taken = {int(g) for g in r.matched_gt[r.tp]}
        for d in range(len(r.dt_ids)):
            if r.ignored[d]:
                continue
            c = int(r.categories[d])
            if r.tp[d]:
                g = int(np.nonzero(r.gt_ids == r.matched_gt[d])[0][0])
                dets.append(_Det(img, d, float(r.scores[d]), c, True, None, g, c))
                continue
            same = r.gt_categories == c
            row = iou[d] if iou.shape[1] else np.zeros(0)

            def best(mask):
                if not mask.any():
                    return -1, -1.0
                vals = np.where(mask, row, -1.0)
                j = int(vals.argmax())
                return j, float(vals[j])

            js, vs = best(same)
            jo, vo = best(~same)
            if vs >= t and int(r.gt_ids[js]) in taken:
                kind, g = "duplicate", js
            elif vo >= t:
                kind, g = "cls", jo
            elif vs >= BACKGROUND_IOU:
                kind, g = "loc", js
            elif vo >= BACKGROUND_IOU:
                kind, g = "both", jo
            else:
                kind, g = "bkg", -1
            dets.append(_Det(img, d, float(r.scores[d]), c, False, kind, g,
                             int(r.gt_categories[g]) if g >= 0 else -1))
    return dets


def _ap(dets: List[_Det], num_gt: Dict[int, int], classes: Sequence[int]) -> Dict[int, float]:
    by_cls: Dict[int, List[_Det]] = {c: [] for c in classes}
    for x in dets:
        by_cls.setdefault(x.cls, []).append(x)
    out = {}
    for c in classes:
        xs = by_cls.get(c, [])
        out[c] = coco_ap(np.array([x.score for x in xs]), np.array([x.tp for x in xs], bool),
                         num_gt.get(c, 0))
    return out


def _fix(dets: List[_Det], num_gt: Dict[int, int], missed, types: set):
    """The detections and object counts after the oracle fixes of ``types``."""
    gt = dict(num_gt)
    if "miss" in types:
        for (img, g), c in missed.items():
            gt[c] -= 1
    used = {(x.image, x.target) for x in dets if x.tp}
    fixed: List[_Det] = []
    for x in sorted(dets, key=lambda x: -x.score):
        if x.tp or x.kind not in types:
            fixed.append(x)
        elif x.kind in ("cls", "loc") and (x.image, x.target) not in used:
            used.add((x.image, x.target))
            fixed.append(_Det(x.image, x.index, x.score, x.target_cls, True, None, x.target,
                              x.target_cls))
        # else: suppressed (both, duplicate, bkg, or a cls / loc whose object is taken)
    return fixed, gt


def _mean(aps: Dict[int, float]) -> float:
    vals = [v for v in aps.values() if v >= 0]
    return 100.0 * float(np.mean(vals)) if vals else float("nan")


def error_breakdown(results: Dict[object, ImageResult], *, coco_eval=None,
                    class_names: Optional[List[str]] = None) -> ErrorBreakdown:
    """The TIDE breakdown of one evaluation's per-image results (see the module docstring).

    Example::

        b = evaluator.error_breakdown("bbox")      # or error_breakdown(evaluator.per_image(...))
        print(b.summary()); b.plot()

    Args:
        results: image id -> :class:`ImageResult` (``COCOEvaluator.per_image(task, t)``).
        coco_eval: the ``COCOeval`` they come from; needed for masks ("segm"), whose IoUs are
            computed from its detections' and objects' RLEs. Boxes are in ``results``.
    """
    if not results:
        raise ValueError("error_breakdown needs per-image results of at least one image.")
    t = next(iter(results.values())).iou_thresh
    geometry = geometry_of(results, coco_eval)

    dets = _classify(results, geometry, t)
    num_gt: Dict[int, int] = {}
    for r in results.values():
        for c in r.gt_categories[~r.gt_ignored]:
            num_gt[int(c)] = num_gt.get(int(c), 0) + 1
    classes = sorted(set(num_gt) | {x.cls for x in dets})
    # Objects no tp took, and those a cls / loc error is charged for instead.
    covered = {(x.image, x.target) for x in dets if x.kind in ("cls", "loc")}
    taken = {(x.image, x.target) for x in dets if x.tp}
    missed = {}
    for img, r in results.items():
        for g in np.nonzero(~r.gt_ignored)[0].tolist():
            if (img, g) not in taken and (img, g) not in covered:
                missed[(img, g)] = int(r.gt_categories[g])
    base = _ap(dets, num_gt, classes)
    dap: Dict[str, float] = {}
    per_class_dap: Dict[int, Dict[str, float]] = {c: {} for c in classes}
    fixes = {k: {k} for k in ERROR_TYPES}
    fixes["FP"] = {"cls", "loc", "both", "duplicate", "bkg"}
    for name, types in fixes.items():
        fixed, gt = _fix(dets, num_gt, missed, types)
        aps = _ap(fixed, gt, classes)
        dap[name] = _mean(aps) - _mean(base)
        for c in classes:
            per_class_dap[c][name] = 100.0 * (max(aps[c], 0) - max(base[c], 0)) \
                if base[c] >= 0 or aps[c] >= 0 else 0.0
    # FN: every object no tp took leaves the ground truth (misses and the objects under a
    # cls / loc error alike); the detections stay as they are.
    gt_fn = {c: n for c, n in num_gt.items()}
    for (img, g) in set(missed) | (covered - taken):
        gt_fn[int(results[img].gt_categories[g])] -= 1
    dap["FN"] = _mean(_ap(dets, gt_fn, classes)) - _mean(base)
    counts = {k: sum(1 for x in dets if x.kind == k) for k in ERROR_TYPES if k != "miss"}
    counts["miss"] = len(missed)
    errors = {img: [None] * len(r.dt_ids) for img, r in results.items()}
    for x in dets:
        errors[x.image][x.index] = x.kind
    missed_rows: Dict[object, List[int]] = {img: [] for img in results}
    for (img, g) in sorted(missed, key=lambda k: (str(k[0]), k[1])):
        missed_rows[img].append(g)
    return ErrorBreakdown(ap=_mean(base), dap=dap, counts=counts,
                          per_class_ap={c: 100.0 * v for c, v in base.items()},
                          per_class_dap=per_class_dap, errors=errors, missed=missed_rows,
                          iou_thresh=t, class_names=class_names,
                          _state=(dets, num_gt, missed, classes))

"""The images to look at: ranked by their errors or their AP, each explained through its trace.

::

    ranked = rank_images(evaluator.per_image("bbox"), evaluator.error_breakdown("bbox"))
    ex = explain_image(evaluator, predictor, ranked[0].image_id)
    ex.false_positives[0]          # (error type, Detection: proposal, anchor, level, scores...)
    ex.misses[0]                   # WhyMissed: anchors, RPN candidate, proposal, class scores

The explanation traces the image through the evaluator's test-time input (``trace(predictor,
dataset_dict)``), the very pass that was scored, so every evaluated detection is a row of the
trace's outputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from workbench.inspect.provenance import class_name

from .errors import ErrorBreakdown, coco_ap
from .per_image import ImageResult

__all__ = ["ImageSummary", "rank_images", "ImageExplanation", "explain_image"]


@dataclass
class ImageSummary:
    """One image's errors: ``num_fp`` false positives, ``num_missed`` objects no true positive
    took, ``ap`` (percent, mean over the classes it has objects of), ``errors`` (TIDE type ->
    count; an object under a ``cls`` / ``loc`` error is charged to that error, not to ``miss``)."""

    image_id: Any
    num_fp: int
    num_missed: int
    ap: float
    errors: Dict[str, int] = field(default_factory=dict)

    @property
    def num_errors(self) -> int:
        return self.num_fp + self.num_missed


def _image_ap(r: ImageResult) -> float:
    classes = sorted({int(c) for c in r.gt_categories[~r.gt_ignored]})
    if not classes:
        return float("nan")
    aps = []
    for c in classes:
        sel = (r.categories == c) & ~r.ignored
        aps.append(coco_ap(r.scores[sel], r.tp[sel],
                           int(((r.gt_categories == c) & ~r.gt_ignored).sum())))
    return 100.0 * float(np.mean(aps))


def rank_images(results: Dict[Any, ImageResult], breakdown: Optional[ErrorBreakdown] = None, *,
                by: str = "errors", k: Optional[int] = None) -> List[ImageSummary]:
    """Images from worst to best: ``by="errors"`` (false positives + misses, more first) or
    ``by="ap"`` (per-image AP, lower first; images without objects last)."""
    if by not in ("errors", "ap"):
        raise ValueError(f"by must be 'errors' or 'ap', got {by!r}.")
    out = []
    for img, r in results.items():
        kinds = Counter(x for x in (breakdown.errors.get(img, []) if breakdown else []) if x)
        if breakdown is not None:
            kinds["miss"] = len(breakdown.missed.get(img, []))
        out.append(ImageSummary(img, int(r.fp.sum()), int(r.missed.sum()), _image_ap(r), dict(kinds)))
    if by == "errors":
        out.sort(key=lambda s: -s.num_errors)
    else:
        out.sort(key=lambda s: (np.isnan(s.ap), s.ap))
    return out[:k] if k is not None else out


@dataclass
class ImageExplanation:
    """Attributes:
        trace: the image's trace (the scored pass, ground truth joined).
        result: its :class:`ImageResult`.
        false_positives: (error type or "fp", Detection) per false positive, by score.
        misses: (object row of ``result``, WhyMissed) per missed object.
    """

    trace: Any
    result: ImageResult
    false_positives: List[Tuple[str, Any]]
    misses: List[Tuple[int, Any]]

    def __repr__(self) -> str:
        lines = [f"ImageExplanation(image {self.result.image_id}: {len(self.false_positives)} "
                 f"false positives, {len(self.misses)} misses)"]
        for kind, d in self.false_positives:
            lines.append(f"  {kind:<10} {d.class_name} {d.score:.3f} from proposal {d.roi_index}")
        for _, w in self.misses:
            lines.append(f"  miss       object {w.gt} {class_name(w.class_names, w.cls)}: "
                         f"lost at {w.lost_at}")
        return "\n".join(lines)


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def explain_image(evaluator, predictor, image_id: Any, *, task: str = "bbox",
                  iou_thresh: float = 0.5, breakdown: Optional[ErrorBreakdown] = None
                  ) -> ImageExplanation:
    """Trace one evaluated image and tie each of its errors to the model's stages.

    Args:
        evaluator: the ``COCOEvaluator`` that evaluated it.
        predictor: the ``DefaultPredictor`` (its cfg gives the test-time input).
        breakdown: the evaluation's :class:`ErrorBreakdown` (for the error types).
    """
    from workbench import inspect as wi
    from workbench.data import DatasetCatalog

    if breakdown is not None and abs(breakdown.iou_thresh - iou_thresh) > 1e-9:
        raise ValueError(f"The breakdown is at IoU {breakdown.iou_thresh}, the explanation asked for "
                         f"{iou_thresh}: give the same threshold.")
    results = evaluator.per_image(task, iou_thresh)
    if image_id not in results:
        raise KeyError(f"image id {image_id!r} was not evaluated ({len(results)} images were).")
    r = results[image_id]
    dicts = [d for d in DatasetCatalog.get(evaluator.dataset_name) if d.get("image_id") == image_id]
    if len(dicts) != 1:
        raise KeyError(f"dataset {evaluator.dataset_name!r} has {len(dicts)} dicts with image id "
                       f"{image_id!r}; expected one.")
    tr = wi.trace(predictor, dicts[0])
    kinds = breakdown.errors.get(image_id) if breakdown is not None else None
    fps = []
    for d in np.nonzero(r.fp)[0].tolist():
        _, row = evaluator.output_row(int(r.dt_ids[d]))
        fps.append((kinds[d] if kinds else "fp", tr.detection(row)))
    misses = []
    gt = tr.ground_truth[0]
    boxes = _xyxy(r.gt_boxes)
    for j in np.nonzero(r.missed)[0].tolist():
        hit = np.nonzero(np.all(np.isclose(gt.boxes.numpy(), boxes[j], atol=1e-3), axis=1))[0]
        if not len(hit):
            raise ValueError(f"Object {int(r.gt_ids[j])} of image {image_id!r} (box {boxes[j].tolist()}) "
                             "is not in the dataset dict's annotations: the evaluation's json and "
                             f"the dataset {evaluator.dataset_name!r} disagree.")
        misses.append((j, tr.why_missed(int(hit[0]))))
    return ImageExplanation(tr, r, fps, misses)

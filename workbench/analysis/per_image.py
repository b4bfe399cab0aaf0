"""Per-image results of a COCO evaluation: which detection matched which object, at what IoU.

pycocotools' ``COCOeval.evaluate()`` matches every image's detections to its ground truth, class
by class, at every IoU threshold, and keeps the result in ``evalImgs``; :func:`per_image_results`
reads it back, so no second model run and no second matcher is needed::

    evaluator = COCOEvaluator("shapes_val")
    inference_on_dataset(model, loader, evaluator)
    results = evaluator.per_image("bbox", iou_thresh=0.5)     # image id -> ImageResult
    r = results[image_id]
    r.tp, r.matched_gt, r.iou          # per detection: true positive, object id, IoU
    r.gt_matched                       # per object: the detection that took it, or -1

Detections are those of the evaluation: per image and class, the ``maxDets`` best (pycocotools'
rule). Boxes are XYWH in the dataset's pixels (the COCO json), categories contiguous ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["ImageResult", "per_image_results"]


@dataclass
class ImageResult:
    """One image's matching at one IoU threshold (D detections, G objects).

    Attributes:
        image_id: the dataset's image id.
        dt_ids: (D,) ids of the detections in the evaluation's results (``cocoDt``).
        scores, categories: (D,) score and contiguous class of each detection.
        boxes: (D, 4) XYWH boxes of the detections.
        matched_gt: (D,) annotation id of the object each detection matched, -1 for none.
        iou: (D,) IoU with that object (0 for none).
        tp: (D,) bool, matched an object that counts; ``ignored`` (D,) matched a crowd /
            out-of-range object, or is out of range itself (neither TP nor FP).
        gt_ids, gt_categories: (G,) the objects; ``gt_boxes`` (G, 4) XYWH.
        gt_matched: (G,) detection id that took each object, -1 if it was missed.
        gt_ignored: (G,) bool, crowd (or out of the area range): never missed.
        iou_thresh: the threshold of this matching.
    """

    image_id: Any
    dt_ids: np.ndarray
    scores: np.ndarray
    categories: np.ndarray
    boxes: np.ndarray
    matched_gt: np.ndarray
    iou: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    gt_ids: np.ndarray
    gt_categories: np.ndarray
    gt_boxes: np.ndarray
    gt_matched: np.ndarray
    gt_ignored: np.ndarray
    iou_thresh: float
    class_names: Optional[List[str]] = field(default=None, repr=False)
    iou_type: str = "bbox"  # what was matched: "bbox" or "segm"

    @property
    def fp(self) -> np.ndarray:
        """(D,) bool, false positives (not matched, not ignored)."""
        return ~self.tp & ~self.ignored

    @property
    def missed(self) -> np.ndarray:
        """(G,) bool, objects no detection took (crowd excluded)."""
        return (self.gt_matched < 0) & ~self.gt_ignored

    def __repr__(self) -> str:
        return (f"ImageResult(image {self.image_id}, IoU {self.iou_thresh}: {int(self.tp.sum())} tp, "
                f"{int(self.fp.sum())} fp, {int(self.missed.sum())} missed of "
                f"{int((~self.gt_ignored).sum())} objects)")


def _geometry(ann: Dict[str, Any], iou_type: str):
    return ann["segmentation"] if iou_type == "segm" else ann["bbox"]


def per_image_results(coco_eval, iou_thresh: float = 0.5, *, area: str = "all",
                      contiguous_id: Optional[Dict[int, int]] = None,
                      class_names: Optional[List[str]] = None) -> Dict[Any, ImageResult]:
    """Read a ``COCOeval``'s per-image matching (after ``evaluate()``) at ``iou_thresh``.

    Args:
        coco_eval: a pycocotools ``COCOeval`` on "bbox" or "segm" that has run ``evaluate()``.
        iou_thresh: one of its ``params.iouThrs`` (0.5, 0.55, ..., 0.95 by default).
        area: one of its ``params.areaRngLbl`` ("all", "small", "medium", "large").
        contiguous_id: dataset category id -> contiguous class id (the metadata's
            ``thing_dataset_id_to_contiguous_id``); identity when None.

    Returns:
        image id -> :class:`ImageResult`, for every evaluated image.
    """
    p = coco_eval.params
    if not p.useCats:
        raise ValueError("per_image_results needs a per-category evaluation (params.useCats=1); "
                         "with useCats=0 pycocotools matches across classes.")
    if p.iouType not in ("bbox", "segm"):
        raise ValueError(f"per_image_results reads box or mask matchings, got iouType={p.iouType!r}.")
    if not coco_eval.evalImgs:
        raise ValueError("The COCOeval has not been evaluated: call evaluate() first.")
    t = np.where(np.isclose(p.iouThrs, iou_thresh))[0]
    if len(t) == 0:
        raise ValueError(f"iou_thresh must be one of the evaluation's thresholds "
                         f"{[round(float(x), 2) for x in p.iouThrs]}, got {iou_thresh}.")
    if area not in p.areaRngLbl:
        raise ValueError(f"area must be one of {list(p.areaRngLbl)}, got {area!r}.")
    t, a = int(t[0]), p.areaRngLbl.index(area)
    to_contig = (lambda c: contiguous_id[c]) if contiguous_id else (lambda c: c)
    cat_ids = p.catIds if p.useCats else [-1]
    num_areas, num_imgs = len(p.areaRng), len(p.imgIds)
    gt_api, dt_api = coco_eval.cocoGt, coco_eval.cocoDt
    per_img: Dict[Any, Dict[str, list]] = {i: {k: [] for k in (
        "dt", "score", "cat", "box", "mgt", "iou", "tp", "ign", "gt", "gcat", "gbox", "gm", "gign")}
        for i in p.imgIds}
    for k in range(len(cat_ids)):
        for i, img_id in enumerate(p.imgIds):
            e = coco_eval.evalImgs[(k * num_areas + a) * num_imgs + i]  # (cat, area, image) order
            if e is None:
                continue
            acc = per_img[img_id]
            gts = {g: gt_api.anns[g] for g in e["gtIds"]}
            for j, g in enumerate(e["gtIds"]):
                acc["gt"].append(g)
                acc["gcat"].append(to_contig(gts[g]["category_id"]))
                acc["gbox"].append(gts[g]["bbox"])
                acc["gm"].append(int(e["gtMatches"][t, j]) or -1)
                acc["gign"].append(bool(e["gtIgnore"][j]))
            for d, dt_id in enumerate(e["dtIds"]):
                det = dt_api.anns[dt_id]
                m = int(e["dtMatches"][t, d]) or -1
                ignored = bool(e["dtIgnore"][t, d])
                iou = 0.0
                if m > 0:
                    g = gts[m]
                    iou = float(mask_util.iou([_geometry(det, p.iouType)], [_geometry(g, p.iouType)],
                                              [int(g.get("iscrowd", 0))])[0, 0])
                acc["dt"].append(dt_id)
                acc["score"].append(float(det["score"]))
                acc["cat"].append(to_contig(det["category_id"]))
                acc["box"].append(det["bbox"])
                acc["mgt"].append(m)
                acc["iou"].append(iou)
                acc["tp"].append(m > 0 and not ignored)
                acc["ign"].append(ignored)
    out: Dict[Any, ImageResult] = {}
    for img_id, acc in per_img.items():
        img_id = int(img_id) if isinstance(img_id, np.integer) else img_id  # pycocotools: np.int64
        order = np.argsort(-np.asarray(acc["score"], dtype=np.float64), kind="stable")

        def arr(key, dtype, shape=None):
            x = np.asarray(acc[key], dtype=dtype)
            return x.reshape(shape) if shape is not None else x

        out[img_id] = ImageResult(
            image_id=img_id, dt_ids=arr("dt", np.int64)[order], scores=arr("score", np.float64)[order],
            categories=arr("cat", np.int64)[order], boxes=arr("box", np.float64, (-1, 4))[order],
            matched_gt=arr("mgt", np.int64)[order], iou=arr("iou", np.float64)[order],
            tp=arr("tp", bool)[order], ignored=arr("ign", bool)[order],
            gt_ids=arr("gt", np.int64), gt_categories=arr("gcat", np.int64),
            gt_boxes=arr("gbox", np.float64, (-1, 4)), gt_matched=arr("gm", np.int64),
            gt_ignored=arr("gign", bool), iou_thresh=float(p.iouThrs[t]), class_names=class_names,
            iou_type=p.iouType)
    return out

"""Panoptic quality (PQ), computed from its definition (Kirillov et al., 2019), with the
conventions of the COCO panoptic API (``panopticapi.evaluation.pq_compute``):

- a predicted and a ground-truth segment *match* if they have the same category and
  IoU > 0.5, where the union leaves out the predicted pixels that fall on void (matches are
  then unique);
- per category: TP = matches, FN = unmatched non-crowd gt segments, FP = unmatched predicted
  segments, except those lying more than half on void or on a crowd region of their category;
- ``PQ_c = sum(IoU of matches) / (TP + FP/2 + FN/2)``, ``SQ_c = sum(IoU) / TP``,
  ``RQ_c = TP / (TP + FP/2 + FN/2)`` (so ``PQ_c = SQ_c * RQ_c``);
- PQ, SQ, RQ are the means over categories that have any TP, FP or FN; also over things
  only (``PQ_th``) and stuff only (``PQ_st``).

Segment maps are (H, W) integer ids, 0 = void.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict, defaultdict
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate

from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.datasets.coco_panoptic import rgb2id
from workbench.utils import comm

from .evaluator import DatasetEvaluator

__all__ = ["PQStat", "pq_compute_single_image", "COCOPanopticEvaluator"]

VOID = 0
_OFFSET = 1 << 32  # > any segment id: gt_id * OFFSET + pred_id encodes a pair


class PQStat:
    """Per-category sums: IoU of matches, TP, FP, FN. Add two with ``+=``."""

    def __init__(self) -> None:
        self.iou: Dict[Hashable, float] = defaultdict(float)
        self.tp: Dict[Hashable, int] = defaultdict(int)
        self.fp: Dict[Hashable, int] = defaultdict(int)
        self.fn: Dict[Hashable, int] = defaultdict(int)

    def __iadd__(self, other: "PQStat") -> "PQStat":
        for name in ("iou", "tp", "fp", "fn"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for k, v in theirs.items():
                mine[k] += v
        return self

    def categories_seen(self) -> set:
        return set(self.iou) | set(self.tp) | set(self.fp) | set(self.fn)

    def pq_average(self, categories: Iterable[Hashable]) -> Tuple[Dict[str, float], Dict[Hashable, Dict[str, float]]]:
        """Mean PQ / SQ / RQ over the given categories (those with TP + FP + FN > 0).

        Returns:
            ``({"pq", "sq", "rq", "n"}, {category: {"pq", "sq", "rq"}})``; the means are NaN if
            no category counts.
        """
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for c in categories:
            tp, fp, fn, iou = self.tp.get(c, 0), self.fp.get(c, 0), self.fn.get(c, 0), self.iou.get(c, 0.0)
            if tp + fp + fn == 0:
                per_class[c] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            pq_c, sq_c, rq_c = iou / denom, (iou / tp if tp else 0.0), tp / denom
            per_class[c] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq, sq, rq = pq + pq_c, sq + sq_c, rq + rq_c
        if n == 0:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_compute_single_image(gt_pan: np.ndarray, gt_segments: Sequence[Mapping[str, Any]],
                            pred_pan: np.ndarray, pred_segments: Sequence[Mapping[str, Any]],
                            categories: Optional[Iterable[Hashable]] = None) -> PQStat:
    """PQ statistics of one image.

    Args:
        gt_pan: (H, W) ground-truth segment ids, 0 = void.
        gt_segments: ``{"id", "category_id", "iscrowd" (optional)}`` per gt segment. Ids in
            ``gt_pan`` without an entry count as void.
        pred_pan: (H, W) predicted segment ids, 0 = void.
        pred_segments: ``{"id", "category_id"}`` per predicted segment; each must appear in
            ``pred_pan`` and vice versa (except 0).
        categories: Known category ids; a predicted category outside them is an error.

    Returns:
        The image's :class:`PQStat`.
    """
    gt_pan = np.asarray(gt_pan)
    pred_pan = np.asarray(pred_pan)
    if gt_pan.shape != pred_pan.shape:
        raise ValueError(f"Prediction of shape {pred_pan.shape} does not match the ground truth's {gt_pan.shape}.")
    stat = PQStat()
    gt_segms = {int(s["id"]): dict(s) for s in gt_segments}
    pred_segms = {int(s["id"]): dict(s) for s in pred_segments}
    known = set(categories) if categories is not None else None

    # Areas from the maps.
    gt_ids, gt_counts = np.unique(gt_pan, return_counts=True)
    for gid, cnt in zip(gt_ids.tolist(), gt_counts.tolist()):
        if gid in gt_segms:
            gt_segms[gid]["area"] = cnt
    for s in gt_segms.values():
        s.setdefault("area", 0)
    pred_labels = set(pred_segms)
    pred_ids, pred_counts = np.unique(pred_pan, return_counts=True)
    for pid, cnt in zip(pred_ids.tolist(), pred_counts.tolist()):
        if pid not in pred_segms:
            if pid == VOID:
                continue
            raise KeyError(f"Segment with ID {pid} is present in the predicted map but not in its segments_info.")
        pred_segms[pid]["area"] = cnt
        pred_labels.discard(pid)
        if known is not None and pred_segms[pid]["category_id"] not in known:
            raise KeyError(f"Segment with ID {pid} has unknown category_id {pred_segms[pid]['category_id']}.")
    if pred_labels:
        raise KeyError(f"Segments {sorted(pred_labels)} are in segments_info but not in the predicted map.")

    # Intersections of every (gt id, pred id) pair; ids without a gt entry count as void.
    gt_keyed = np.where(np.isin(gt_pan, list(gt_segms)), gt_pan, VOID).astype(np.int64)
    pairs = gt_keyed.reshape(-1) * _OFFSET + pred_pan.reshape(-1).astype(np.int64)
    labels, inter = np.unique(pairs, return_counts=True)
    gt_pred_map = {(int(lab // _OFFSET), int(lab % _OFFSET)): int(c) for lab, c in zip(labels, inter)}

    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in gt_pred_map.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt_s, pred_s = gt_segms[gt_label], pred_segms[pred_label]
        if gt_s.get("iscrowd", 0) == 1 or gt_s["category_id"] != pred_s["category_id"]:
            continue
        union = pred_s["area"] + gt_s["area"] - intersection - gt_pred_map.get((VOID, pred_label), 0)
        iou = intersection / union
        if iou > 0.5:
            stat.tp[gt_s["category_id"]] += 1
            stat.iou[gt_s["category_id"]] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    crowd_labels: Dict[Hashable, int] = {}
    for gt_label, gt_s in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_s.get("iscrowd", 0) == 1:  # crowd regions are not to be detected
            crowd_labels[gt_s["category_id"]] = gt_label
            continue
        stat.fn[gt_s["category_id"]] += 1

    for pred_label, pred_s in pred_segms.items():
        if pred_label in pred_matched:
            continue
        # Not a false positive if it lies mostly on void or on a crowd region of its category.
        intersection = gt_pred_map.get((VOID, pred_label), 0)
        if pred_s["category_id"] in crowd_labels:
            intersection += gt_pred_map.get((crowd_labels[pred_s["category_id"]], pred_label), 0)
        if intersection / pred_s["area"] > 0.5:
            continue
        stat.fp[pred_s["category_id"]] += 1
    return stat


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ of "panoptic_seg" outputs.

    Categories are keyed ``(isthing, contiguous id)``, so thing and stuff ids may overlap.
    The ground truth is read per image, from either

    - the COCO panoptic json and PNG folder of the metadata (``panoptic_json``,
      ``panoptic_root``, category ids mapped through ``thing_dataset_id_to_contiguous_id`` /
      ``stuff_dataset_id_to_contiguous_id``), as in detectron2; or, without them,
    - the dataset dicts: ``"pan_seg_file_name"`` (RGB-encoded PNG, or a single-channel id map)
      and ``"segments_info"`` (``{"id", "category_id" (contiguous), "isthing", "iscrowd"}``),
      matched by ``image_id``.

    Predictions: ``output["panoptic_seg"] = (ids (H, W), segments_info)`` with
    ``{"id", "category_id", "isthing"}`` per segment (what PanopticFPN returns; 0 = void), or
    ``(ids, None)`` with ids = ``category * label_divisor + instance`` and -1 = void.

    Args:
        dataset_name: Registered dataset.
        output_dir: If given, ``panoptic_results.json`` (per-category PQ) is written there.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None) -> None:
        self._logger = logging.getLogger(__name__)
        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        thing_classes = list(self._metadata.get("thing_classes", []) or [])
        stuff_classes = list(self._metadata.get("stuff_classes", []) or [])
        self._thing_d2c = dict(self._metadata.get("thing_dataset_id_to_contiguous_id", {}) or {})
        self._stuff_d2c = dict(self._metadata.get("stuff_dataset_id_to_contiguous_id", {}) or {})
        # Every category that can be scored, with a printable name.
        self._names: Dict[Tuple[bool, int], str] = {}
        for i, n in enumerate(thing_classes):
            self._names[(True, i)] = n
        for i, n in enumerate(stuff_classes):
            self._names[(False, i)] = n
        self._gt = self._load_gt_index(dataset_name)
        self._stat = PQStat()

    # ----------------------------------------------------------------------------- ground truth
    def _load_gt_index(self, dataset_name: str) -> Dict[Any, Tuple[str, List[Dict[str, Any]]]]:
        """``{image_id: (png path, [segment dicts keyed (isthing, contiguous id)])}``."""
        index = {}
        panoptic_json = self._metadata.get("panoptic_json")
        panoptic_root = self._metadata.get("panoptic_root")
        if panoptic_json and panoptic_root and os.path.exists(panoptic_json):
            with open(panoptic_json) as f:
                data = json.load(f)
            for ann in data["annotations"]:
                segs = [self._from_dataset_id(s) for s in ann["segments_info"]]
                index[ann["image_id"]] = (os.path.join(panoptic_root, ann["file_name"]), segs)
            return index
        for d in DatasetCatalog.get(dataset_name):
            if "pan_seg_file_name" not in d or "segments_info" not in d:
                raise KeyError(
                    f"COCOPanopticEvaluator needs the metadata's panoptic_json/panoptic_root or dataset "
                    f"dicts with 'pan_seg_file_name' and 'segments_info'; '{dataset_name}' has neither "
                    f"(dict keys: {sorted(d)})."
                )
            segs = []
            for s in d["segments_info"]:
                s = dict(s)
                s["category_id"] = (bool(s.get("isthing", True)), int(s["category_id"]))
                segs.append(s)
            index[d["image_id"]] = (d["pan_seg_file_name"], segs)
        return index

    def _from_dataset_id(self, segment: Mapping[str, Any]) -> Dict[str, Any]:
        s = dict(segment)
        cid = s["category_id"]
        if cid in self._thing_d2c:
            s["category_id"] = (True, self._thing_d2c[cid])
        elif cid in self._stuff_d2c:
            s["category_id"] = (False, self._stuff_d2c[cid])
        else:
            raise KeyError(f"Category id {cid} of the panoptic json is in neither thing_dataset_id_to_contiguous_id "
                           "nor stuff_dataset_id_to_contiguous_id of the metadata.")
        return s

    @staticmethod
    def _read_ids(path: str) -> np.ndarray:
        with open(path, "rb") as f:
            arr = np.asarray(Image.open(f))
        return rgb2id(arr) if arr.ndim == 3 else arr.astype(np.int64)

    # ------------------------------------------------------------------------------- predictions
    def _convert_prediction(self, panoptic_img: np.ndarray, segments_info: Optional[List[Dict[str, Any]]]
                            ) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
        if segments_info is None:
            # ids = category * label_divisor + instance; -1 = void. Shift so that void is 0.
            label_divisor = self._metadata.label_divisor
            thing_ids = set(self._thing_d2c.values()) if self._thing_d2c else {c for t, c in self._names if t}
            segments_info = []
            for label in np.unique(panoptic_img).tolist():
                if label == -1:
                    continue
                pred_class = label // label_divisor
                segments_info.append({"id": int(label) + 1, "category_id": int(pred_class),
                                      "isthing": pred_class in thing_ids})
            panoptic_img = panoptic_img.astype(np.int64) + 1
        segs = []
        for s in segments_info:
            isthing = s.get("isthing")
            if isthing is None:
                # Already a dataset id.
                segs.append(self._from_dataset_id(s))
            else:
                segs.append({"id": int(s["id"]), "category_id": (bool(isthing), int(s["category_id"]))})
        return panoptic_img.astype(np.int64), segs

    # ----------------------------------------------------------------------------- evaluator API
    def reset(self) -> None:
        self._stat = PQStat()

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for input, output in zip(inputs, outputs):
            panoptic_img, segments_info = output["panoptic_seg"]
            if isinstance(panoptic_img, torch.Tensor):
                panoptic_img = panoptic_img.cpu().numpy()
            pred_pan, pred_segs = self._convert_prediction(np.asarray(panoptic_img), segments_info)
            image_id = input["image_id"]
            if image_id not in self._gt:
                raise KeyError(f"No panoptic ground truth for image_id {image_id}.")
            gt_path, gt_segs = self._gt[image_id]
            gt_pan = self._read_ids(gt_path)
            try:
                self._stat += pq_compute_single_image(gt_pan, gt_segs, pred_pan, pred_segs)
            except (KeyError, ValueError) as e:
                raise type(e)(f"Image {image_id} ({input.get('file_name', '?')}): {e}") from e

    def evaluate(self) -> Optional[Dict[str, Any]]:
        """Returns ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st",
        "SQ_st", "RQ_st"}}`` in percent (rank 0; None elsewhere)."""
        comm.synchronize()
        stats = comm.gather(self._stat)
        if not comm.is_main_process():
            return None
        total = PQStat()
        for s in stats:
            total += s
        categories = set(self._names) | total.categories_seen()
        things = [c for c in categories if c[0]]
        stuff = [c for c in categories if not c[0]]
        results = {}
        per_class: Dict[Any, Dict[str, float]] = {}
        for name, cats in (("All", categories), ("Things", things), ("Stuff", stuff)):
            results[name], pc = total.pq_average(cats)
            if name == "All":
                per_class = pc
        res = {
            "PQ": 100 * results["All"]["pq"], "SQ": 100 * results["All"]["sq"], "RQ": 100 * results["All"]["rq"],
            "PQ_th": 100 * results["Things"]["pq"], "SQ_th": 100 * results["Things"]["sq"],
            "RQ_th": 100 * results["Things"]["rq"],
            "PQ_st": 100 * results["Stuff"]["pq"], "SQ_st": 100 * results["Stuff"]["sq"],
            "RQ_st": 100 * results["Stuff"]["rq"],
        }
        table = tabulate(
            [[name, 100 * results[name]["pq"], 100 * results[name]["sq"], 100 * results[name]["rq"], results[name]["n"]]
             for name in ("All", "Things", "Stuff")],
            headers=["", "PQ", "SQ", "RQ", "#categories"], tablefmt="pipe", floatfmt=".3f",
            stralign="center", numalign="center")
        self._logger.info("Panoptic Evaluation Results:\n%s", table)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            per_cat = {f"{'thing' if c[0] else 'stuff'}:{self._names.get(c, c[1])}": v for c, v in per_class.items()}
            with open(os.path.join(self._output_dir, "panoptic_results.json"), "w") as f:
                json.dump({"summary": res, "per_category": per_cat}, f, indent=1)
        return OrderedDict({"panoptic_seg": res})

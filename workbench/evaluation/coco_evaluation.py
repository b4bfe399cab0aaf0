"""COCO-style AP for boxes, masks and keypoints (pycocotools' ``COCOeval``), and AR for
proposals.

The ground truth is the dataset's COCO json (``metadata.json_file``), or, for datasets
registered another way, the dataset dicts converted to COCO json in ``output_dir``. Results
are percentages, as in detectron2: ``{"bbox": {"AP": 100.0, "AP50": ..., "AP-<class>": ...}}``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
import pickle
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from workbench.config import CfgNode
from workbench.data import MetadataCatalog
from workbench.data.datasets.coco import convert_to_coco_json
from workbench.structures import Boxes, BoxMode, Instances, pairwise_iou
from workbench.utils import comm
from workbench.utils.logger import create_small_table

from .evaluator import DatasetEvaluator

__all__ = ["COCOEvaluator", "instances_to_coco_json"]


class COCOEvaluator(DatasetEvaluator):
    """AP of "instances" outputs (boxes, and masks / keypoints if predicted) and AR of
    "proposals" outputs, with pycocotools.

    Each input must have "image_id" (the COCO image id). Predicted classes are contiguous ids,
    mapped back through ``metadata.thing_dataset_id_to_contiguous_id`` when present.

    Args:
        dataset_name: A registered dataset. With ``metadata.json_file`` that json is the
            ground truth; otherwise the dataset dicts are converted to
            ``output_dir/<name>_coco_format.json``.
        tasks: Subset of ("bbox", "segm", "keypoints"); default: what the predictions have.
        distributed: Gather predictions from all ranks (results on rank 0).
        output_dir: Where to write ``coco_instances_results.json`` (and the converted gt).
        max_dets_per_image: Detections kept per image for AP (default 100).
        kpt_oks_sigmas: Per-keypoint OKS sigmas, one per keypoint (any number K); default:
            pycocotools' 17 COCO person sigmas. ``cfg.TEST.KEYPOINT_OKS_SIGMAS``.
        allow_cached_coco: Reuse an existing converted json.
    """

    def __init__(self, dataset_name: str, tasks: Optional[Sequence[str]] = None, distributed: bool = True,
                 output_dir: Optional[str] = None, *, max_dets_per_image: Optional[int] = None,
                 use_fast_impl: bool = False, kpt_oks_sigmas: Sequence[float] = (),
                 allow_cached_coco: bool = True) -> None:
        self._logger = logging.getLogger(__name__)
        self._distributed = distributed
        self._output_dir = output_dir
        # detectron2's C++ COCOeval_opt is not available: pycocotools' COCOeval gives the same
        # numbers, more slowly. use_fast_impl is accepted for API compatibility.
        self._use_fast_impl = False
        self._max_dets_per_image = [1, 10, 100 if max_dets_per_image is None else int(max_dets_per_image)]
        if tasks is not None and isinstance(tasks, CfgNode):
            kpt_oks_sigmas = tasks.TEST.KEYPOINT_OKS_SIGMAS if not kpt_oks_sigmas else kpt_oks_sigmas
            self._logger.warning("COCO Evaluator instantiated using config, this is deprecated behavior. "
                                 "Please pass in explicit arguments instead.")
            self._tasks = None
        else:
            self._tasks = tuple(tasks) if tasks is not None else None
        self._cpu_device = torch.device("cpu")
        self._metadata = MetadataCatalog.get(dataset_name)
        if not hasattr(self._metadata, "json_file") or self._metadata.json_file is None:
            if output_dir is None:
                raise ValueError("output_dir must be provided to COCOEvaluator for datasets not in COCO format.")
            self._logger.info("Trying to convert '%s' to COCO format ...", dataset_name)
            cache_path = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            convert_to_coco_json(dataset_name, cache_path, allow_cached=allow_cached_coco)
            self._metadata.json_file = cache_path
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_api = COCO(self._metadata.json_file)
        # Test-set jsons have no annotations: predictions are only written out.
        self._do_evaluation = "annotations" in self._coco_api.dataset
        if self._do_evaluation and not self._coco_api.dataset["annotations"]:
            self._logger.warning("Dataset '%s' has no annotations: nothing to evaluate against, no AP "
                                 "is computed (the predictions are still saved).", dataset_name)
            self._do_evaluation = False
        self._kpt_oks_sigmas = list(kpt_oks_sigmas) if kpt_oks_sigmas is not None else []
        self._predictions: List[Dict[str, Any]] = []
        self.coco_evals: Dict[str, COCOeval] = {}

    def reset(self) -> None:
        self._predictions = []
        self.coco_evals = {}
        self._result_rows = None

    def _contiguous_id(self) -> Optional[Dict[int, int]]:
        """Dataset category id -> contiguous class id: the metadata's, or, for a dataset that
        was registered but never loaded (its metadata has no mapping yet), the one
        ``load_coco_json`` makes from the json's categories (sorted ids -> 0..K-1). Without it,
        predictions of class 0 would be compared with category 0 of the json and AP would
        silently be 0."""
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if mapping is not None:
            return mapping
        cat_ids = sorted(self._coco_api.getCatIds())
        if cat_ids == list(range(len(cat_ids))):
            return None  # contiguous already
        if not getattr(self, "_warned_mapping", False):
            self._logger.warning(
                "Dataset '%s' has no thing_dataset_id_to_contiguous_id (it was never loaded); "
                "mapping its json's category ids %s to 0..%d as load_coco_json does.",
                self._metadata.name, cat_ids[:10], len(cat_ids) - 1)
            self._warned_mapping = True
        return {v: i for i, v in enumerate(cat_ids)}

    @property
    def dataset_name(self) -> str:
        return self._metadata.name

    def output_row(self, dt_id: int) -> Tuple[Any, int]:
        """(image id, row of that image's output instances) of detection ``dt_id`` of the last
        evaluation (the id in its COCO results, as in ``ImageResult.dt_ids``)."""
        rows = getattr(self, "_result_rows", None)
        if rows is None:
            raise ValueError("No evaluation yet: call evaluate() first.")
        if not 1 <= dt_id <= len(rows):
            raise KeyError(f"No detection with id {dt_id} in the last evaluation ({len(rows)}).")
        return rows[dt_id - 1]

    @property
    def predictions(self) -> List[Dict[str, Any]]:
        """What :meth:`process` kept: per image ``{"image_id", "instances": [COCO result
        dicts, contiguous class ids], ...}`` (this process's share when distributed)."""
        return self._predictions

    def per_image(self, task: str = "bbox", iou_thresh: float = 0.5, area: str = "all"):
        """Per-image matching of the last :meth:`evaluate` (no second model run).

        Example::

            inference_on_dataset(model, loader, evaluator)
            results = evaluator.per_image("bbox", 0.5)   # image id -> ImageResult
            worst = sorted(results.values(), key=lambda r: -(r.fp.sum() + r.missed.sum()))[:5]

        Args:
            task: "bbox" or "segm" (one that was evaluated).
            iou_thresh: one of COCO's thresholds 0.5, 0.55, ..., 0.95.
            area: "all", "small", "medium" or "large".

        Returns:
            image id -> :class:`workbench.analysis.ImageResult`.
        """
        from workbench.analysis.per_image import per_image_results

        if task not in self.coco_evals:
            raise ValueError(f"No {task!r} evaluation to read (evaluated: {sorted(self.coco_evals)}); "
                             "run evaluate() first.")
        return per_image_results(self.coco_evals[task], iou_thresh, area=area,
                                 contiguous_id=self._contiguous_id(),
                                 class_names=self._metadata.get("thing_classes"))

    def error_breakdown(self, task: str = "bbox", iou_thresh: float = 0.5, area: str = "all"):
        """The TIDE-style error breakdown of the last :meth:`evaluate` (see
        :mod:`workbench.analysis.errors`): error types, their counts and the dAP of each fix."""
        from workbench.analysis.errors import error_breakdown

        return error_breakdown(self.per_image(task, iou_thresh, area), coco_eval=self.coco_evals[task],
                               class_names=self._metadata.get("thing_classes"))

    def confusion_matrix(self, task: str = "bbox", iou_thresh: float = 0.5, score_thresh: float = 0.0):
        """The confusion matrix of the last :meth:`evaluate` (see
        :func:`workbench.analysis.confusion_matrix`), with the dataset's class names."""
        from workbench.analysis.confusion import confusion_matrix

        names = self._metadata.get("thing_classes")
        results = self.per_image(task, iou_thresh)
        k = len(names) if names else 1 + max((int(c) for r in results.values()
                                                for c in np.concatenate([r.categories, r.gt_categories])),
                                               default=0)
        return confusion_matrix(results, k, score_thresh=score_thresh, class_names=names,
                                coco_eval=self.coco_evals[task])

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for input, output in zip(inputs, outputs):
            prediction: Dict[str, Any] = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = output["instances"].to(self._cpu_device)
                _check_finite(instances, input["image_id"])
                prediction["instances"] = instances_to_coco_json(instances, input["image_id"])
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to(self._cpu_device)
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """Args: img_ids: evaluate only these images (default: all in the gt json)."""
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            self._logger.warning("[COCOEvaluator] Did not receive valid predictions.")
            return {}
        self._results: Dict[str, Any] = OrderedDict()
        if "proposals" in predictions[0]:
            self._eval_box_proposals(predictions)
        if "instances" in predictions[0]:
            self._eval_predictions(predictions, img_ids=img_ids)
        return copy.deepcopy(self._results)

    def _tasks_from_predictions(self, predictions: List[Dict[str, Any]]) -> Tuple[str, ...]:
        tasks = {"bbox"}
        for pred in predictions:
            if "segmentation" in pred:
                tasks.add("segm")
            if "keypoints" in pred:
                tasks.add("keypoints")
        return tuple(sorted(tasks))

    def _eval_predictions(self, predictions: List[Dict[str, Any]], img_ids: Optional[Sequence[int]] = None) -> None:
        self._logger.info("Preparing results for COCO format ...")
        # Copies: the category ids are mapped to the dataset's below, and the stored predictions
        # keep their contiguous ids (so evaluate() can run again, e.g. with img_ids).
        coco_results = [dict(r) for r in itertools.chain(*[x["instances"] for x in predictions])]
        # COCO.loadRes numbers the results 1, 2, ... in this order: id -> (image, output row).
        self._result_rows = [(x["image_id"], j) for x in predictions for j in range(len(x["instances"]))]
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        dataset_id_to_contiguous_id = self._contiguous_id()
        if dataset_id_to_contiguous_id is not None:
            all_contiguous_ids = list(dataset_id_to_contiguous_id.values())
            num_classes = len(all_contiguous_ids)
            if not (min(all_contiguous_ids) == 0 and max(all_contiguous_ids) == num_classes - 1):
                raise ValueError("thing_dataset_id_to_contiguous_id must map onto [0, #classes).")
            reverse_id_mapping = {v: k for k, v in dataset_id_to_contiguous_id.items()}
            for result in coco_results:
                category_id = result["category_id"]
                if not 0 <= category_id < num_classes:
                    raise ValueError(
                        f"A prediction has class={category_id}, but the dataset only has {num_classes} "
                        f"classes and predicted class id should be in [0, {num_classes - 1}]."
                    )
                result["category_id"] = reverse_id_mapping[category_id]

        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to %s", file_path)
            with open(file_path, "w") as f:
                json.dump(coco_results, f)

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        known = set(self._coco_api.getImgIds())
        unknown = sorted({r["image_id"] for r in coco_results} - known, key=str)
        if unknown:
            raise ValueError(f"Predictions for image id(s) {unknown[:5]} that the dataset "
                             f"{self._metadata.name!r} does not have ({len(known)} images).")

        self._logger.info("Evaluating predictions with official COCO API ...")
        for task in sorted(tasks):
            if task not in ("bbox", "segm", "keypoints"):
                raise ValueError(f"Got unknown task: {task}!")
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api, coco_results, task, kpt_oks_sigmas=self._kpt_oks_sigmas,
                    img_ids=img_ids, max_dets_per_image=self._max_dets_per_image)
                if len(coco_results) > 0 else None  # cocoapi does not handle empty results very well
            )
            res = self._derive_coco_results(coco_eval, task, class_names=self._metadata.get("thing_classes"))
            self._results[task] = res
            if coco_eval is not None:
                self.coco_evals[task] = coco_eval

    def _eval_box_proposals(self, predictions: List[Dict[str, Any]]) -> None:
        if self._output_dir:
            ids, boxes, objectness_logits = [], [], []
            for prediction in predictions:
                ids.append(prediction["image_id"])
                boxes.append(prediction["proposals"].proposal_boxes.tensor.numpy())
                objectness_logits.append(prediction["proposals"].objectness_logits.numpy())
            proposal_data = {"boxes": boxes, "objectness_logits": objectness_logits, "ids": ids,
                             "bbox_mode": BoxMode.XYXY_ABS.value}
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "box_proposals.pkl"), "wb") as f:
                pickle.dump(proposal_data, f)
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        self._logger.info("Evaluating bbox proposals ...")
        res = {}
        areas = {"all": "", "small": "s", "medium": "m", "large": "l"}
        for limit in [100, 1000]:
            for area, suffix in areas.items():
                stats = _evaluate_box_proposals(predictions, self._coco_api, area=area, limit=limit)
                res[f"AR{suffix}@{limit:d}"] = float(stats["ar"].item() * 100)
        self._logger.info("Proposal metrics: \n%s", create_small_table(res))
        self._results["box_proposals"] = res

    def _derive_coco_results(self, coco_eval: Optional[COCOeval], iou_type: str,
                             class_names: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """COCOeval's summary stats as percentages (NaN where undefined), plus per-class AP."""
        metrics = {
            "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
            "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
            "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
        }[iou_type]
        if coco_eval is None:
            self._logger.warning("No predictions from the model!")
            return {metric: float("nan") for metric in metrics}
        results = {
            metric: float(coco_eval.stats[idx] * 100 if coco_eval.stats[idx] >= 0 else "nan")
            for idx, metric in enumerate(metrics)
        }
        self._logger.info("Evaluation results for %s: \n%s", iou_type, create_small_table(results))
        if not np.isfinite(sum(results.values())):
            self._logger.info("Some metrics cannot be computed and is shown as NaN.")
        if class_names is None or len(class_names) <= 1:
            return results

        # precision: (iou thresholds, recall thresholds, classes, area ranges, max dets)
        precisions = coco_eval.eval["precision"]
        if len(class_names) != precisions.shape[2]:
            raise ValueError(f"{len(class_names)} class names but COCOeval has {precisions.shape[2]} classes.")
        results_per_category = []
        for idx, name in enumerate(class_names):
            precision = precisions[:, :, idx, 0, -1]  # area "all", the largest max-dets
            precision = precision[precision > -1]
            ap = np.mean(precision) if precision.size else float("nan")
            results_per_category.append((f"{name}", float(ap * 100)))
        n_cols = min(6, len(results_per_category) * 2)
        flat = list(itertools.chain(*results_per_category))
        rows = itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)])
        table = tabulate(rows, tablefmt="pipe", floatfmt=".3f", headers=["category", "AP"] * (n_cols // 2),
                         numalign="left")
        self._logger.info("Per-category %s AP: \n%s", iou_type, table)
        results.update({"AP-" + name: ap for name, ap in results_per_category})
        return results


def _check_finite(instances: Instances, image_id: Any) -> None:
    """Refuse non-finite boxes or scores, naming the image (pycocotools would score a NaN box
    as a perfect match)."""
    for name in ("pred_boxes", "scores"):
        if not instances.has(name):
            continue
        v = instances.get(name)
        v = v.tensor if hasattr(v, "tensor") else v
        bad = ~torch.isfinite(v.reshape(len(v), -1)).all(dim=1) if len(v) else v.new_zeros(0, dtype=torch.bool)
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise ValueError(f"Prediction {j} of image {image_id!r} has a non-finite {name} "
                             f"({v[j].tolist()}); refusing to evaluate it.")


def instances_to_coco_json(instances: Instances, img_id: Union[int, str]) -> List[Dict[str, Any]]:
    """One image's predicted ``Instances`` -> COCO result dicts.

    Boxes become XYWH; masks become compressed RLE (counts as str); keypoints get 0.5
    subtracted (continuous coordinates -> COCO pixel indices, the inverse of the loader).
    """
    num_instance = len(instances)
    if num_instance == 0:
        return []
    boxes = instances.pred_boxes.tensor.numpy()
    boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS).tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()

    has_mask = instances.has("pred_masks")
    if has_mask:
        # (N, H, W) masks; pycocotools wants Fortran-ordered (H, W, 1) uint8.
        rles = [mask_util.encode(np.array(np.asarray(mask)[:, :, None], order="F", dtype="uint8"))[0]
                for mask in instances.pred_masks]
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")  # json-serializable
    has_keypoints = instances.has("pred_keypoints")
    if has_keypoints:
        keypoints = instances.pred_keypoints.clone()  # (N, K, 3); don't modify the outputs
        keypoints[:, :, :2] -= 0.5

    results = []
    for k in range(num_instance):
        result = {"image_id": img_id, "category_id": classes[k], "bbox": boxes[k], "score": scores[k]}
        if has_mask:
            result["segmentation"] = rles[k]
        if has_keypoints:
            result["keypoints"] = keypoints[k].flatten().tolist()
        results.append(result)
    return results


def _evaluate_box_proposals(dataset_predictions: List[Dict[str, Any]], coco_api: COCO,
                            thresholds: Optional[torch.Tensor] = None, area: str = "all",
                            limit: Optional[int] = None) -> Dict[str, Any]:
    """Average recall of proposals over IoU thresholds 0.5:0.05:0.95 (greedy one-to-one
    matching, best-covered ground truth first), for gt boxes in an area range."""
    areas = {"all": 0, "small": 1, "medium": 2, "large": 3, "96-128": 4, "128-256": 5, "256-512": 6, "512-inf": 7}
    area_ranges = [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2],
                   [96 ** 2, 128 ** 2], [128 ** 2, 256 ** 2], [256 ** 2, 512 ** 2], [512 ** 2, 1e5 ** 2]]
    if area not in areas:
        raise ValueError(f"Unknown area range: {area}")
    area_range = area_ranges[areas[area]]
    gt_overlaps = []
    num_pos = 0
    for prediction_dict in dataset_predictions:
        predictions = prediction_dict["proposals"]
        inds = predictions.objectness_logits.sort(descending=True)[1]
        predictions = predictions[inds]
        anno = coco_api.loadAnns(coco_api.getAnnIds(imgIds=prediction_dict["image_id"]))
        gt_boxes = [BoxMode.convert(obj["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for obj in anno if obj["iscrowd"] == 0]
        gt_boxes = Boxes(torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4))
        gt_areas = torch.as_tensor([obj["area"] for obj in anno if obj["iscrowd"] == 0])
        if len(gt_boxes) == 0 or len(predictions) == 0:
            continue
        valid_gt_inds = (gt_areas >= area_range[0]) & (gt_areas <= area_range[1])
        gt_boxes = gt_boxes[valid_gt_inds]
        num_pos += len(gt_boxes)
        if len(gt_boxes) == 0:
            continue
        if limit is not None and len(predictions) > limit:
            predictions = predictions[:limit]
        overlaps = pairwise_iou(predictions.proposal_boxes, gt_boxes)
        _gt_overlaps = torch.zeros(len(gt_boxes))
        for j in range(min(len(predictions), len(gt_boxes))):
            max_overlaps, argmax_overlaps = overlaps.max(dim=0)  # best proposal per gt
            gt_ovr, gt_ind = max_overlaps.max(dim=0)  # the best-covered gt
            box_ind = argmax_overlaps[gt_ind]
            _gt_overlaps[j] = overlaps[box_ind, gt_ind]
            overlaps[box_ind, :] = -1  # both are used up
            overlaps[:, gt_ind] = -1
        gt_overlaps.append(_gt_overlaps)
    gt_overlaps = torch.cat(gt_overlaps, dim=0) if gt_overlaps else torch.zeros(0, dtype=torch.float32)
    gt_overlaps, _ = torch.sort(gt_overlaps)
    if thresholds is None:
        thresholds = torch.arange(0.5, 0.95 + 1e-5, 0.05, dtype=torch.float32)
    recalls = torch.zeros_like(thresholds)
    for i, t in enumerate(thresholds):
        recalls[i] = (gt_overlaps >= t).float().sum() / float(max(num_pos, 1))
    return {"ar": recalls.mean(), "recalls": recalls, "thresholds": thresholds,
            "gt_overlaps": gt_overlaps, "num_pos": num_pos}


class COCOevalMaxDets(COCOeval):
    """``COCOeval`` whose summary uses the last ``maxDets`` entry instead of a fixed 100."""

    def summarize(self) -> None:
        def _summarize(ap: int = 1, iouThr: Optional[float] = None, areaRng: str = "all",
                       maxDets: int = 100) -> float:
            p = self.params
            aind = [i for i, a in enumerate(p.areaRngLbl) if a == areaRng]
            mind = [i for i, m in enumerate(p.maxDets) if m == maxDets]
            if ap == 1:
                s = self.eval["precision"]  # (T, R, K, A, M)
                if iouThr is not None:
                    s = s[np.where(np.isclose(p.iouThrs, iouThr))[0]]
                s = s[:, :, :, aind, mind]
            else:
                s = self.eval["recall"]  # (T, K, A, M)
                if iouThr is not None:
                    s = s[np.where(np.isclose(p.iouThrs, iouThr))[0]]
                s = s[:, :, aind, mind]
            return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

        if not self.eval:
            raise RuntimeError("Please run accumulate() first")
        if self.params.iouType == "keypoints":
            return super().summarize()
        m = self.params.maxDets
        stats = np.zeros((12,))
        stats[0] = _summarize(1, maxDets=m[2])
        stats[1] = _summarize(1, iouThr=0.5, maxDets=m[2])
        stats[2] = _summarize(1, iouThr=0.75, maxDets=m[2])
        stats[3] = _summarize(1, areaRng="small", maxDets=m[2])
        stats[4] = _summarize(1, areaRng="medium", maxDets=m[2])
        stats[5] = _summarize(1, areaRng="large", maxDets=m[2])
        stats[6] = _summarize(0, maxDets=m[0])
        stats[7] = _summarize(0, maxDets=m[1])
        stats[8] = _summarize(0, maxDets=m[2])
        stats[9] = _summarize(0, areaRng="small", maxDets=m[2])
        stats[10] = _summarize(0, areaRng="medium", maxDets=m[2])
        stats[11] = _summarize(0, areaRng="large", maxDets=m[2])
        self.stats = stats


def _evaluate_predictions_on_coco(coco_gt: COCO, coco_results: List[Dict[str, Any]], iou_type: str,
                                  kpt_oks_sigmas: Optional[Sequence[float]] = None,
                                  img_ids: Optional[Sequence[int]] = None,
                                  max_dets_per_image: Optional[Sequence[int]] = None) -> COCOeval:
    """Runs pycocotools' evaluate / accumulate / summarize on one task."""
    if len(coco_results) == 0:
        raise ValueError("No predictions to evaluate.")
    if iou_type == "segm":
        coco_results = copy.deepcopy(coco_results)
        # With a "bbox" in the results, cocoapi would use the box area as the instance area
        # (for small / medium / large); drop it so that mask AP uses the mask area.
        for c in coco_results:
            c.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(coco_results)
    if max_dets_per_image is None:
        max_dets_per_image = [1, 10, 100]
    elif len(max_dets_per_image) < 3:
        raise ValueError(f"max_dets_per_image needs 3 entries, got {max_dets_per_image}.")
    eval_cls = COCOevalMaxDets if max_dets_per_image[2] != 100 else COCOeval
    coco_eval = eval_cls(coco_gt, coco_dt, iou_type)
    if iou_type != "keypoints":
        coco_eval.params.maxDets = list(max_dets_per_image)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)

    if iou_type == "keypoints":
        if kpt_oks_sigmas:
            coco_eval.params.kpt_oks_sigmas = np.array(kpt_oks_sigmas, dtype=np.float64)
        # cocoapi needs every detection and every gt to have the same number of keypoints.
        num_keypoints_dt = len(coco_results[0]["keypoints"]) // 3
        gt_with_kp = [a for a in coco_gt.anns.values() if "keypoints" in a]
        num_keypoints_gt = len(gt_with_kp[0]["keypoints"]) // 3 if gt_with_kp else 0
        num_keypoints_oks = len(coco_eval.params.kpt_oks_sigmas)
        if not num_keypoints_oks == num_keypoints_dt == num_keypoints_gt:
            raise ValueError(
                f"[COCOEvaluator] Prediction contain {num_keypoints_dt} keypoints. Ground truth contains "
                f"{num_keypoints_gt} keypoints. The length of cfg.TEST.KEYPOINT_OKS_SIGMAS is "
                f"{num_keypoints_oks}. They have to agree with each other. For meaning of OKS, please "
                "refer to http://cocodataset.org/#keypoints-eval."
            )

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logging.getLogger(__name__).info("COCOeval (%s):\n%s", iou_type, buf.getvalue())
    return coco_eval

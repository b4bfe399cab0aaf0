"""LVIS AP (federated: per image only its verified categories count; 300 detections per image;
AP of rare / common / frequent classes) with the LVIS API, and AR of proposals.

LVIS's federated protocol is implemented by the ``lvis`` package (``pip install lvis``), as in
detectron2; workbench does not re-implement it, and the evaluator says so when the package is
missing. Results are percentages: ``{"bbox": {"AP": ..., "APr": ..., "APc": ..., "APf": ...}}``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from workbench.data import MetadataCatalog
from workbench.utils import comm
from workbench.utils.atomic_files import atomic_write
from workbench.utils.file_io import PathManager
from workbench.utils.logger import create_small_table

from .coco_evaluation import _evaluate_box_proposals, instances_to_coco_json
from .evaluator import DatasetEvaluator

__all__ = ["LVISEvaluator"]

_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


def _lvis_module():
    try:
        import lvis
    except ImportError as e:
        raise ImportError(
            "LVISEvaluator needs the LVIS API, which implements LVIS's federated evaluation: "
            "`pip install lvis`. (COCOEvaluator scores LVIS-style json without the federated "
            "rules.)") from e
    return lvis


class _ProposalGroundTruth:
    """The two COCO-API calls the proposal recall reads, answered from an LVIS API object
    (LVIS annotations have no ``iscrowd``: none are crowds)."""

    def __init__(self, lvis_api: Any) -> None:
        self._api = lvis_api

    def getAnnIds(self, imgIds: Any) -> List[int]:  # noqa: N802, N803 (COCO API names)
        return self._api.get_ann_ids(img_ids=[imgIds])

    def loadAnns(self, ids: Sequence[int]) -> List[Dict[str, Any]]:  # noqa: N802
        return [{"iscrowd": 0, **a} for a in self._api.load_anns(ids)]


class LVISEvaluator(DatasetEvaluator):
    """AP of "instances" outputs (boxes, and masks if predicted) and AR of "proposals" outputs,
    with LVIS's federated rules.

    Args:
        dataset_name: a registered dataset whose metadata has ``json_file`` (LVIS format).
        tasks: subset of ("bbox", "segm"); default: what the predictions have.
        distributed: gather predictions from all ranks (results on rank 0).
        output_dir: where to write ``lvis_instances_results.json``.
        max_dets_per_image: detections kept per image for AP (LVIS's default 300).
    """

    def __init__(self, dataset_name: str, tasks: Optional[Sequence[str]] = None,
                 distributed: bool = True, output_dir: Optional[str] = None, *,
                 max_dets_per_image: Optional[int] = None) -> None:
        lvis = _lvis_module()
        self._logger = logging.getLogger(__name__)
        self._tasks = tuple(tasks) if tasks is not None and not hasattr(tasks, "MODEL") else None
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets_per_image = 300 if max_dets_per_image is None else max_dets_per_image
        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = getattr(self._metadata, "json_file", None)
        if json_file is None:
            raise ValueError(f"LVISEvaluator: dataset '{dataset_name}' has no metadata.json_file "
                             "(the LVIS-format json the predictions are scored against).")
        self._lvis_api = lvis.LVIS(PathManager.get_local_path(json_file))
        # Test-set jsons have no annotations (scored by the LVIS server).
        self._do_evaluation = len(self._lvis_api.get_ann_ids()) > 0
        self.reset()

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            prediction: Dict[str, Any] = {"image_id": inp["image_id"]}
            if "instances" in out:
                instances = out["instances"].to("cpu")
                prediction["instances"] = instances_to_coco_json(instances, inp["image_id"])
            if "proposals" in out:
                prediction["proposals"] = out["proposals"].to("cpu")
            self._predictions.append(prediction)

    def evaluate(self) -> Optional[Dict[str, Any]]:
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return None
        if not predictions:
            self._logger.warning("[LVISEvaluator] Did not receive valid predictions.")
            return {}
        self._results: Dict[str, Any] = OrderedDict()
        if "proposals" in predictions[0]:
            self._eval_box_proposals(predictions)
        if "instances" in predictions[0]:
            self._eval_predictions(predictions)
        return copy.deepcopy(self._results)

    def _eval_predictions(self, predictions: List[Dict[str, Any]]) -> None:
        results = list(itertools.chain(*[p["instances"] for p in predictions]))
        tasks = self._tasks or (("bbox", "segm") if any("segmentation" in r for r in results)
                                else ("bbox",))
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is not None:  # COCO categories scored with the LVIS API
            reverse = {v: k for k, v in mapping.items()}
            for r in results:
                r["category_id"] = reverse[r["category_id"]]
        else:  # LVIS category ids are the contiguous ids + 1
            for r in results:
                r["category_id"] += 1
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "lvis_instances_results.json")
            atomic_write(path, lambda f: json.dump(results, f), binary=False)
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        for task in sorted(tasks):
            self._results[task] = self._evaluate_task(results, task)

    def _evaluate_task(self, results: List[Dict[str, Any]], iou_type: str) -> Dict[str, float]:
        if not results:
            self._logger.warning("No predictions from the model: %s AP is undefined.", iou_type)
            return {m: float("nan") for m in _METRICS}
        if iou_type == "segm":
            # Without boxes the LVIS API takes each instance's area from its mask (as it should
            # for the small / medium / large split of mask AP).
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        lvis = _lvis_module()
        dt = lvis.LVISResults(self._lvis_api, results, max_dets=self._max_dets_per_image)
        ev = lvis.LVISEval(self._lvis_api, dt, iou_type)
        ev.run()
        ev.print_results()
        stats = ev.get_results()
        out = {m: float(stats[m] * 100) for m in _METRICS}
        self._logger.info("Evaluation results for %s:\n%s", iou_type, create_small_table(out))
        return out

    def _eval_box_proposals(self, predictions: List[Dict[str, Any]]) -> None:
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        gt = _ProposalGroundTruth(self._lvis_api)
        res = {}
        for limit in [100, 1000]:
            for area, suffix in {"all": "", "small": "s", "medium": "m", "large": "l"}.items():
                stats = _evaluate_box_proposals(predictions, gt, area=area, limit=limit)
                res[f"AR{suffix}@{limit}"] = float(stats["ar"].item() * 100)
        self._logger.info("Proposal metrics:\n%s", create_small_table(res))
        self._results["box_proposals"] = res


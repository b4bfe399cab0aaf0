"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC) from a confusion matrix.

K classes; the matrix is (K + 1) x (K + 1), indexed [predicted, ground truth], the last
row / column collecting ignored pixels (which are left out of every metric).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.utils.comm import all_gather, is_main_process, synchronize

from .evaluator import DatasetEvaluator

__all__ = ["SemSegEvaluator", "load_image_into_numpy_array"]


def load_image_into_numpy_array(filename: str, copy: bool = False, dtype: Any = None) -> np.ndarray:
    """A label image as stored (no mode conversion) -> numpy array."""
    with open(filename, "rb") as f:
        arr = np.asarray(Image.open(f), dtype=dtype)
        return arr.copy() if copy else arr


class SemSegEvaluator(DatasetEvaluator):
    """mIoU and friends of "sem_seg" outputs ((K, H, W) scores at the original image size)
    against each image's ``sem_seg_file_name`` label map (read as stored).

    Args:
        dataset_name: Registered dataset whose dicts have "file_name" and "sem_seg_file_name",
            and whose metadata has ``stuff_classes`` (and ``ignore_label``, default 255).
        distributed: Sum the confusion matrices of all ranks (results on rank 0).
        output_dir: Write ``sem_seg_predictions.json`` (per-class RLE) there.
        sem_seg_loading_fn: Reads a label file (``fn(path, dtype=...)``).
        num_classes, ignore_label: Override / check the metadata.
    """

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None, *,
                 sem_seg_loading_fn: Callable[..., np.ndarray] = load_image_into_numpy_array,
                 num_classes: Optional[int] = None, ignore_label: Optional[int] = None) -> None:
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._cpu_device = torch.device("cpu")
        self.input_file_to_gt_file = {
            record["file_name"]: record["sem_seg_file_name"] for record in DatasetCatalog.get(dataset_name)
        }
        meta = MetadataCatalog.get(dataset_name)
        try:
            c2d = meta.stuff_dataset_id_to_contiguous_id
            self._contiguous_id_to_dataset_id = {v: k for k, v in c2d.items()}
        except AttributeError:
            self._contiguous_id_to_dataset_id = None
        self._class_names = list(meta.stuff_classes)
        self.sem_seg_loading_fn = sem_seg_loading_fn
        self._num_classes = len(self._class_names)
        if num_classes is not None and num_classes != self._num_classes:
            raise ValueError(f"num_classes={num_classes} but the metadata has {self._num_classes} stuff_classes.")
        self._ignore_label = ignore_label if ignore_label is not None else meta.get("ignore_label", 255)
        self._conf_matrix = np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)
        self._predictions: List[Dict[str, Any]] = []

    def reset(self) -> None:
        self._conf_matrix = np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)
        self._predictions = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for input, output in zip(inputs, outputs):
            pred = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)  # (K, H, W) -> (H, W)
            gt = self.sem_seg_loading_fn(self.input_file_to_gt_file[input["file_name"]], dtype=np.int64)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"Prediction of shape {pred.shape} for {input['file_name']} does not match its "
                    f"label map's {gt.shape}."
                )
            gt = gt.copy()
            gt[gt == self._ignore_label] = self._num_classes
            invalid = (gt < 0) | (gt > self._num_classes)
            if invalid.any():
                raise ValueError(
                    f"Label map of {input['file_name']} has labels {np.unique(gt[invalid]).tolist()} outside "
                    f"[0, {self._num_classes}) and not the ignore label {self._ignore_label}."
                )
            # index (K + 1) * pred + gt  ->  conf[pred, gt]
            self._conf_matrix += np.bincount(
                (self._num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                minlength=self._conf_matrix.size,
            ).reshape(self._conf_matrix.shape)
            if self._output_dir:
                self._predictions.extend(self.encode_json_sem_seg(pred, input["file_name"]))

    def evaluate(self) -> Optional[Dict[str, Any]]:
        """Returns ``{"sem_seg": {"mIoU", "fwIoU", "IoU-<class>", "mACC", "pACC", "ACC-<class>"}}``
        in percent.

        As in detectron2: per-class IoU / accuracy are computed for classes present in the
        ground truth (NaN otherwise); mIoU divides their sum by the number of classes present
        in the ground truth or the predictions.
        """
        if self._distributed:
            synchronize()
            conf_matrix_list = all_gather(self._conf_matrix)
            self._predictions = list(itertools.chain(*all_gather(self._predictions)))
            if not is_main_process():
                return None
            self._conf_matrix = np.zeros_like(self._conf_matrix)
            for conf_matrix in conf_matrix_list:
                self._conf_matrix += conf_matrix

        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "sem_seg_predictions.json"), "w") as f:
                json.dump(self._predictions, f)

        acc = np.full(self._num_classes, np.nan, dtype=np.float64)
        iou = np.full(self._num_classes, np.nan, dtype=np.float64)
        tp = self._conf_matrix.diagonal()[:-1].astype(np.float64)
        pos_gt = np.sum(self._conf_matrix[:-1, :-1], axis=0).astype(np.float64)
        class_weights = pos_gt / max(np.sum(pos_gt), 1)
        pos_pred = np.sum(self._conf_matrix[:-1, :-1], axis=1).astype(np.float64)
        acc_valid = pos_gt > 0
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        iou_valid = (pos_gt + pos_pred) > 0
        union = pos_gt + pos_pred - tp
        iou[acc_valid] = tp[acc_valid] / union[acc_valid]
        macc = np.sum(acc[acc_valid]) / np.sum(acc_valid) if acc_valid.any() else np.nan
        miou = np.sum(iou[acc_valid]) / np.sum(iou_valid) if iou_valid.any() else np.nan
        fiou = np.sum(iou[acc_valid] * class_weights[acc_valid])
        pacc = np.sum(tp) / np.sum(pos_gt) if np.sum(pos_gt) > 0 else np.nan

        res: Dict[str, float] = {"mIoU": 100 * miou, "fwIoU": 100 * fiou}
        for i, name in enumerate(self._class_names):
            res[f"IoU-{name}"] = 100 * iou[i]
        res["mACC"] = 100 * macc
        res["pACC"] = 100 * pacc
        for i, name in enumerate(self._class_names):
            res[f"ACC-{name}"] = 100 * acc[i]
        results = OrderedDict({"sem_seg": res})
        self._logger.info(results)
        return results

    def encode_json_sem_seg(self, sem_seg: np.ndarray, input_file_name: str) -> List[Dict[str, Any]]:
        """One RLE per predicted class, COCO-stuff result style."""
        json_list = []
        for label in np.unique(sem_seg):
            if self._contiguous_id_to_dataset_id is not None:
                if label not in self._contiguous_id_to_dataset_id:
                    raise ValueError(f"Label {label} is not in the metadata info for {self._dataset_name}")
                dataset_id = self._contiguous_id_to_dataset_id[label]
            else:
                dataset_id = int(label)
            mask = (sem_seg == label).astype(np.uint8)
            mask_rle = mask_util.encode(np.array(mask[:, :, None], order="F"))[0]
            mask_rle["counts"] = mask_rle["counts"].decode("utf-8")
            json_list.append({"file_name": input_file_name, "category_id": dataset_id, "segmentation": mask_rle})
        return json_list

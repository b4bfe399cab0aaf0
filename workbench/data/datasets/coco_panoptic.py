"""COCO panoptic datasets: a panoptic json + PNG folder, registered as one dataset, or
"separated" into instance annotations + semantic label maps for Panoptic FPN training.

A panoptic PNG stores each pixel's segment id as RGB (``id = R + 256 G + 256^2 B``, 0 = void);
its json lists per image the ``segments_info`` (``id``, ``category_id``, ``iscrowd``, ...).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json, load_sem_seg

__all__ = [
    "load_coco_panoptic_json", "register_coco_panoptic", "register_coco_panoptic_separated",
    "rgb2id", "id2rgb",
]


def rgb2id(color: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 panoptic PNG -> (H, W) int64 segment ids."""
    if color.ndim == 3 and color.dtype == np.uint8:
        color = color.astype(np.int64)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return np.asarray(color, dtype=np.int64)


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 RGB, the inverse of :func:`rgb2id`."""
    id_map = np.asarray(id_map, dtype=np.int64).copy()
    rgb = np.zeros(id_map.shape + (3,), dtype=np.uint8)
    for i in range(3):
        rgb[..., i] = id_map % 256
        id_map //= 256
    return rgb


def load_coco_panoptic_json(json_file: str, image_dir: str, gt_dir: str,
                            meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Reads a COCO panoptic json into dataset dicts.

    Args:
        json_file: The panoptic json.
        image_dir: Folder of the images (``.jpg`` with the PNG's stem).
        gt_dir: Folder of the panoptic PNGs.
        meta: Needs ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id``.

    Returns:
        Dicts with "file_name", "image_id", "pan_seg_file_name" and "segments_info" (each with
        contiguous "category_id" and "isthing").
    """
    def _convert_category_id(segment_info: Dict[str, Any]) -> Dict[str, Any]:
        if segment_info["category_id"] in meta["thing_dataset_id_to_contiguous_id"]:
            segment_info["category_id"] = meta["thing_dataset_id_to_contiguous_id"][segment_info["category_id"]]
            segment_info["isthing"] = True
        else:
            segment_info["category_id"] = meta["stuff_dataset_id_to_contiguous_id"][segment_info["category_id"]]
            segment_info["isthing"] = False
        return segment_info

    with open(json_file) as f:
        json_info = json.load(f)
    ret = []
    for ann in json_info["annotations"]:
        image_id = int(ann["image_id"])
        image_file = os.path.join(image_dir, os.path.splitext(ann["file_name"])[0] + ".jpg")
        label_file = os.path.join(gt_dir, ann["file_name"])
        segments_info = [_convert_category_id(dict(x)) for x in ann["segments_info"]]
        ret.append({
            "file_name": image_file,
            "image_id": image_id,
            "pan_seg_file_name": label_file,
            "segments_info": segments_info,
        })
    if not ret:
        raise ValueError(f"No images found in {image_dir}!")
    return ret


def register_coco_panoptic(name: str, metadata: Dict[str, Any], image_root: str,
                           panoptic_root: str, panoptic_json: str,
                           instances_json: Optional[str] = None) -> None:
    """Registers a panoptic dataset (evaluated by ``COCOPanopticEvaluator``)."""
    DatasetCatalog.register(name, lambda: load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, metadata))
    MetadataCatalog.get(name).set(
        panoptic_root=panoptic_root, image_root=image_root, panoptic_json=panoptic_json,
        json_file=instances_json, evaluator_type="coco_panoptic_seg", ignore_label=255,
        label_divisor=1000, **metadata)


def register_coco_panoptic_separated(name: str, metadata: Dict[str, Any], image_root: str,
                                     panoptic_root: str, panoptic_json: str, sem_seg_root: str,
                                     instances_json: str) -> None:
    """Registers ``name + "_separated"``: instance annotations (from ``instances_json``) merged
    with semantic label maps (from ``sem_seg_root``; all things one class 0, stuff 1...) per
    image, the input Panoptic FPN trains on; and ``name + "_stuffonly"`` (label maps only)."""
    panoptic_name = name + "_separated"

    def load() -> List[Dict[str, Any]]:
        return merge_to_panoptic(load_coco_json(instances_json, image_root, panoptic_name),
                                 load_sem_seg(sem_seg_root, image_root))

    DatasetCatalog.register(panoptic_name, load)
    MetadataCatalog.get(panoptic_name).set(
        panoptic_root=panoptic_root, image_root=image_root, panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root, json_file=instances_json, evaluator_type="coco_panoptic_seg",
        ignore_label=255, **metadata)

    semantic_name = name + "_stuffonly"
    DatasetCatalog.register(semantic_name, lambda: load_sem_seg(sem_seg_root, image_root))
    MetadataCatalog.get(semantic_name).set(
        sem_seg_root=sem_seg_root, image_root=image_root, evaluator_type="sem_seg",
        ignore_label=255, **metadata)


def merge_to_panoptic(detection_dicts: List[Dict[str, Any]], sem_seg_dicts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Adds each image's "sem_seg_file_name" (matched by "file_name") to its detection dict."""
    by_file = {x["file_name"]: x for x in sem_seg_dicts}
    results = []
    for det in detection_dicts:
        if det["file_name"] not in by_file:
            raise KeyError(f"No semantic label map for image {det['file_name']}.")
        d = copy.copy(det)
        d.update(by_file[det["file_name"]])
        results.append(d)
    return results

"""Cityscapes ("gtFine") datasets: instance segmentation and semantic segmentation.

Files are found as ``<image_dir>/<city>/<base>leftImg8bit.png`` with annotations
``<gt_dir>/<city>/<base>gtFine_{instanceIds,labelIds,labelTrainIds}.png`` and
``gtFine_polygons.json``.

Instances are read from the ``instanceIds`` png and kept as RLE masks (``from_json=False,
to_polygons=False`` in detectron2's terms). detectron2's default, polygons from the json made
disjoint with shapely, needs shapely (and its png polygon path needs OpenCV); neither is a
workbench dependency, so those two modes raise :class:`NotImplementedError`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from workbench.structures import BoxMode

__all__ = ["load_cityscapes_instances", "load_cityscapes_semantic"]

logger = logging.getLogger(__name__)

# Cityscapes label ids of the classes with instances that are evaluated, in contiguous order
# (person, rider, car, truck, bus, train, motorcycle, bicycle; caravan 29 and trailer 30 are
# not evaluated). Ids >= 1000 in instanceIds pngs are label_id * 1000 + instance number.
_INSTANCE_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)


def _get_cityscapes_files(image_dir: str, gt_dir: str) -> List[Tuple[str, str, str, str]]:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image folder not found: {image_dir}")
    files = []
    cities = sorted(os.listdir(image_dir))
    logger.info("%d cities found in '%s'.", len(cities), image_dir)
    suffix = "leftImg8bit.png"
    for city in cities:
        for basename in sorted(os.listdir(os.path.join(image_dir, city))):
            if not basename.endswith(suffix):
                raise ValueError(f"Unexpected file {basename!r} in {os.path.join(image_dir, city)}.")
            base = os.path.join(gt_dir, city, basename[: -len(suffix)])
            files.append((os.path.join(image_dir, city, basename), base + "gtFine_instanceIds.png",
                          base + "gtFine_labelIds.png", base + "gtFine_polygons.json"))
    if not files:
        raise FileNotFoundError(f"No images found in {image_dir}.")
    for f in files[0]:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"Cityscapes file not found: {f}")
    return files


def load_cityscapes_instances(image_dir: str, gt_dir: str, from_json: bool = False,
                              to_polygons: bool = False) -> List[Dict[str, Any]]:
    """Instance dicts of one Cityscapes split.

    Args:
        image_dir: e.g. "datasets/cityscapes/leftImg8bit/train".
        gt_dir: e.g. "datasets/cityscapes/gtFine/train".
        from_json, to_polygons: Must be False (see the module docstring).

    Returns:
        One dict per image: "file_name", "image_id" (the file's base name), "height",
        "width", "annotations" (``iscrowd`` for group regions, contiguous ``category_id`` in
        [0, 8), XYXY_ABS ``bbox`` of pixel indices, RLE ``segmentation``).
    """
    if from_json or to_polygons:
        raise NotImplementedError(
            "load_cityscapes_instances(from_json=True / to_polygons=True) needs shapely / OpenCV, "
            "which workbench does not use; call it with from_json=False, to_polygons=False "
            "(instances from the gtFine_instanceIds.png files, as RLE masks).")
    contiguous = {label_id: i for i, label_id in enumerate(_INSTANCE_LABEL_IDS)}
    ret = []
    for image_file, instance_file, _, _ in _get_cityscapes_files(image_dir, gt_dir):
        inst_image = np.asarray(Image.open(instance_file), order="F")
        record: Dict[str, Any] = {"file_name": image_file, "image_id": os.path.basename(image_file),
                                  "height": inst_image.shape[0], "width": inst_image.shape[1]}
        annos = []
        for instance_id in np.unique(inst_image[inst_image >= 24]).tolist():
            label_id = instance_id // 1000 if instance_id >= 1000 else instance_id
            if label_id not in contiguous:
                continue
            mask = np.asarray(inst_image == instance_id, dtype=np.uint8, order="F")
            ys, xs = np.nonzero(mask)
            xmin, xmax, ymin, ymax = xs.min(), xs.max(), ys.min(), ys.max()
            if xmax <= xmin or ymax <= ymin:
                continue
            annos.append({
                "iscrowd": instance_id < 1000,  # a bare label id marks a group (crowd) region
                "category_id": contiguous[label_id],
                "bbox": (int(xmin), int(ymin), int(xmax), int(ymax)),
                "bbox_mode": BoxMode.XYXY_ABS,
                "segmentation": mask_util.encode(mask[:, :, None])[0],
            })
        record["annotations"] = annos
        ret.append(record)
    logger.info("Loaded %d images from %s", len(ret), image_dir)
    return ret


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> List[Dict[str, Any]]:
    """Semantic dicts: "file_name", "sem_seg_file_name" (the ``labelTrainIds`` png, made by
    cityscapesscripts' ``createTrainIdLabelImgs.py``), "height", "width"."""
    ret = []
    for image_file, _, label_file, json_file in _get_cityscapes_files(image_dir, gt_dir):
        with open(json_file) as f:
            jsonobj = json.load(f)
        ret.append({"file_name": image_file, "sem_seg_file_name": label_file.replace("labelIds", "labelTrainIds"),
                    "height": jsonobj["imgHeight"], "width": jsonobj["imgWidth"]})
    if not os.path.isfile(ret[0]["sem_seg_file_name"]):
        raise FileNotFoundError(
            f"{ret[0]['sem_seg_file_name']} not found: generate the labelTrainIds.png files with "
            "cityscapesscripts/preparation/createTrainIdLabelImgs.py.")
    return ret

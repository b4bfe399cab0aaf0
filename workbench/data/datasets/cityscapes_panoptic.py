"""Cityscapes panoptic segmentation ("gtFine" panoptic pngs + json made by cityscapesscripts'
``createPanopticImgs.py``), as detectron2's ``cityscapes_panoptic.py``.

Files: images ``<image_dir>/<city>/<base>_leftImg8bit.png``; the json (``annotations``: per
image ``image_id`` (the base name), ``file_name`` (png under ``gt_dir``) and ``segments_info``);
semantic labels ``<base>_gtFine_labelTrainIds.png`` next to the gtFine annotations.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Tuple

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import CITYSCAPES_CATEGORIES

__all__ = ["get_cityscapes_panoptic_files", "get_cityscapes_panoptic_meta", "load_cityscapes_panoptic",
           "register_all_cityscapes_panoptic"]

logger = logging.getLogger(__name__)


def get_cityscapes_panoptic_meta() -> Dict[str, Any]:
    """detectron2's metadata of ``cityscapes_fine_panoptic_*``: the 19 train classes as both
    things and stuff (for the visualizer), and dataset id -> train id maps for things / stuff."""
    names = [k["name"] for k in CITYSCAPES_CATEGORIES]
    colors = [k["color"] for k in CITYSCAPES_CATEGORIES]
    return {
        "thing_classes": names, "thing_colors": colors, "stuff_classes": list(names), "stuff_colors": list(colors),
        "thing_dataset_id_to_contiguous_id": {k["id"]: k["trainId"] for k in CITYSCAPES_CATEGORIES if k["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {
            k["id"]: k["trainId"] for k in CITYSCAPES_CATEGORIES if not k["isthing"]},
    }


def get_cityscapes_panoptic_files(image_dir: str, gt_dir: str, json_info: Dict[str, Any],
                                  json_file: str = "the panoptic json") -> List[Tuple[str, str, List[Dict[str, Any]]]]:
    """(image file, panoptic png, segments_info) of each annotation in ``json_info`` (the loaded
    json, named ``json_file`` in errors)."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image folder not found: {image_dir}")
    suffix = "_leftImg8bit.png"
    image_dict = {}
    for city in sorted(os.listdir(image_dir)):
        for basename in sorted(os.listdir(os.path.join(image_dir, city))):
            if not basename.endswith(suffix):
                raise ValueError(f"Unexpected file {basename!r} in {os.path.join(image_dir, city)}: "
                                 f"expected names ending in {suffix!r}.")
            image_dict[basename[: -len(suffix)]] = os.path.join(image_dir, city, basename)
    if "annotations" not in json_info:
        raise ValueError(f"{json_file} has no 'annotations' list; expected cityscapesscripts' panoptic json.")
    files = []
    for i, ann in enumerate(json_info["annotations"]):
        try:
            image_id, file_name, segments_info = ann["image_id"], ann["file_name"], ann["segments_info"]
        except KeyError as e:
            raise ValueError(f"{json_file}: annotations[{i}] has no {e.args[0]!r} key.") from None
        if image_id not in image_dict:
            raise FileNotFoundError(f"{json_file}: no image '{image_id}{suffix}' in {image_dir} for annotation "
                                    f"{file_name!r} (annotations[{i}]).")
        files.append((image_dict[image_id], os.path.join(gt_dir, file_name), segments_info))
    if not files:
        raise FileNotFoundError(f"No annotated images found: {json_file} lists no annotations.")
    return files


def load_cityscapes_panoptic(image_dir: str, gt_dir: str, gt_json: str, meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Panoptic dicts of one Cityscapes split.

    Args:
        image_dir: e.g. "datasets/cityscapes/leftImg8bit/train".
        gt_dir: e.g. "datasets/cityscapes/gtFine/cityscapes_panoptic_train".
        gt_json: e.g. "datasets/cityscapes/gtFine/cityscapes_panoptic_train.json".
        meta: Needs "thing_dataset_id_to_contiguous_id" and "stuff_dataset_id_to_contiguous_id".

    Returns:
        Dicts with "file_name", "image_id" (``city_seq_frame``), "sem_seg_file_name" (the
        labelTrainIds png), "pan_seg_file_name" and "segments_info" (contiguous
        "category_id"; workbench also adds "isthing", as for COCO panoptic).
    """
    if not os.path.isfile(gt_json):
        raise FileNotFoundError(f"{gt_json} not found: generate it with "
                                "`python cityscapesscripts/preparation/createPanopticImgs.py`.")
    with open(gt_json) as f:
        json_info = json.load(f)
    things, stuff = meta["thing_dataset_id_to_contiguous_id"], meta["stuff_dataset_id_to_contiguous_id"]
    ret = []
    for image_file, label_file, segments_info in get_cityscapes_panoptic_files(image_dir, gt_dir, json_info, gt_json):
        segments = []
        for seg in segments_info:
            cat = seg["category_id"]
            if cat not in things and cat not in stuff:
                raise ValueError(f"{gt_json}: segment {seg.get('id')} of {os.path.basename(label_file)} has "
                                 f"category_id {cat}, not a Cityscapes train class id "
                                 f"(expected one of {sorted([*things, *stuff])}).")
            segments.append({**seg, "category_id": things[cat] if cat in things else stuff[cat],
                             "isthing": cat in things})
        # detectron2 uses .split(".")[0], which breaks on a path with a dot (./datasets).
        sem_seg_file = os.path.splitext(image_file.replace("leftImg8bit", "gtFine"))[0] + "_labelTrainIds.png"
        ret.append({
            "file_name": image_file,
            "image_id": "_".join(os.path.splitext(os.path.basename(image_file))[0].split("_")[:3]),
            "sem_seg_file_name": sem_seg_file,
            "pan_seg_file_name": label_file,
            "segments_info": segments,
        })
    if not os.path.isfile(ret[0]["sem_seg_file_name"]):
        raise FileNotFoundError(f"{ret[0]['sem_seg_file_name']} not found: generate the labelTrainIds.png files "
                                "with cityscapesscripts/preparation/createTrainIdLabelImgs.py.")
    if not os.path.isfile(ret[0]["pan_seg_file_name"]):
        raise FileNotFoundError(f"{ret[0]['pan_seg_file_name']} not found: generate the panoptic pngs with "
                                "`python cityscapesscripts/preparation/createPanopticImgs.py`.")
    logger.info("Loaded %d images from %s", len(ret), image_dir)
    return ret


# name: (image folder, panoptic png folder, panoptic json); there is no panoptic test split.
_RAW_CITYSCAPES_PANOPTIC_SPLITS = {
    "cityscapes_fine_panoptic_train": ("cityscapes/leftImg8bit/train", "cityscapes/gtFine/cityscapes_panoptic_train",
                                       "cityscapes/gtFine/cityscapes_panoptic_train.json"),
    "cityscapes_fine_panoptic_val": ("cityscapes/leftImg8bit/val", "cityscapes/gtFine/cityscapes_panoptic_val",
                                     "cityscapes/gtFine/cityscapes_panoptic_val.json"),
}


def register_all_cityscapes_panoptic(root: str) -> None:
    """Registers ``cityscapes_fine_panoptic_{train,val}`` with files under ``root`` (reads
    nothing now), as detectron2's function of that name."""
    meta = get_cityscapes_panoptic_meta()
    for key, (image_dir, gt_dir, gt_json) in _RAW_CITYSCAPES_PANOPTIC_SPLITS.items():
        image_dir, gt_dir, gt_json = (os.path.join(root, p) for p in (image_dir, gt_dir, gt_json))
        DatasetCatalog.register(key, lambda x=image_dir, y=gt_dir, z=gt_json: load_cityscapes_panoptic(x, y, z, meta))
        MetadataCatalog.get(key).set(panoptic_root=gt_dir, image_root=image_dir, panoptic_json=gt_json,
                                     gt_dir=gt_dir.replace("cityscapes_panoptic_", ""),
                                     evaluator_type="cityscapes_panoptic_seg", ignore_label=255,
                                     label_divisor=1000, **meta)

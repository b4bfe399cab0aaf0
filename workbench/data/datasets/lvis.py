"""LVIS datasets: reading an LVIS json (COCO-like: "images", "annotations", "categories") into
dataset dicts, with the built-in LVIS v0.5 / v1 class names.

Read with the standard :mod:`json` module (detectron2 uses the ``lvis`` package for the same
thing). Differences from COCO: images are found through their ``coco_url``
(``<image_root>/<split folder>/<file>``), category ids are 1..K and become 0..K-1, every
annotation has polygons, and images carry ``not_exhaustive_category_ids`` /
``neg_category_ids`` for the federated evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional

from workbench.structures import BoxMode

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import _get_coco_instances_meta
from .lvis_v0_5_categories import LVIS_CATEGORIES as LVIS_V0_5_CATEGORIES
from .lvis_v1_categories import LVIS_CATEGORIES as LVIS_V1_CATEGORIES
from .lvis_v1_category_image_count import LVIS_CATEGORY_IMAGE_COUNT as LVIS_V1_CATEGORY_IMAGE_COUNT

__all__ = ["load_lvis_json", "register_lvis_instances", "get_lvis_instances_meta"]

logger = logging.getLogger(__name__)


def register_lvis_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Registers an LVIS-format json under ``name`` (read on ``DatasetCatalog.get``); the
    metadata gets ``json_file``, ``image_root``, ``evaluator_type="lvis"`` and ``metadata``."""
    DatasetCatalog.register(name, lambda: load_lvis_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis", **metadata)


def load_lvis_json(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                   extra_annotation_keys: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Reads an LVIS json into dataset dicts, one per image sorted by image id.

    Args:
        json_file: The LVIS json.
        image_root: Folder holding the COCO image folders (``train2017/``, ``val2017/``).
        dataset_name: If given (e.g. "lvis_v1_val"), its metadata gets the built-in LVIS
            ``thing_classes`` for that version, and category ids go through
            ``thing_dataset_id_to_contiguous_id`` when the metadata has one ("cocofied").
        extra_annotation_keys: Annotation keys copied as they are, besides "bbox",
            "category_id" and "segmentation".

    Returns:
        Dicts with "file_name", "height", "width", "image_id", "not_exhaustive_category_ids",
        "neg_category_ids" and "annotations" (XYWH_ABS boxes, polygons, 0-based categories).
    """
    start = time.perf_counter()
    with open(os.fspath(json_file)) as f:
        data = json.load(f)
    if time.perf_counter() - start > 1:
        logger.info("Loading %s takes %.2f seconds.", json_file, time.perf_counter() - start)

    meta: Dict[str, Any] = {}
    if dataset_name is not None:
        meta = get_lvis_instances_meta(dataset_name)
        MetadataCatalog.get(dataset_name).set(**meta)

    def field(obj: Dict[str, Any], key: str, where: str) -> Any:
        try:
            return obj[key]
        except KeyError:
            raise ValueError(f"{where} in '{json_file}' has no {key!r} key (LVIS json format).") from None

    if "images" not in data:
        raise ValueError(f"'{json_file}' has no 'images' list (LVIS json format).")
    anns_per_image: Dict[Any, List[Dict[str, Any]]] = defaultdict(list)
    for i, ann in enumerate(data.get("annotations", [])):
        anns_per_image[field(ann, "image_id", f"Annotation {ann.get('id', f'#{i}')}")].append(ann)
    ann_ids = [field(ann, "id", f"Annotation #{i} (of image {ann['image_id']})")
               for i, ann in enumerate(data.get("annotations", []))]
    if len(set(ann_ids)) != len(ann_ids):
        raise ValueError(f"Annotation ids in '{json_file}' are not unique.")
    images = sorted(data["images"], key=lambda im: field(im, "id", f"An image (keys {sorted(im)})"))
    logger.info("Loaded %d images in the LVIS format from %s", len(images), json_file)

    id_map = meta.get("thing_dataset_id_to_contiguous_id")
    extra_annotation_keys = list(extra_annotation_keys or [])
    dataset_dicts = []
    for img in images:
        image_id = img["id"]
        where = f"Image {image_id}"
        coco_url = field(img, "coco_url", where)
        if not isinstance(coco_url, str) or coco_url.count("/") < 1:
            raise ValueError(f"Image {image_id} in '{json_file}' has coco_url {coco_url!r}; expected a URL ending "
                             "in '<split folder>/<file name>' (e.g. http://images.cocodataset.org/val2017/x.jpg).")
        split_folder, file_name = coco_url.split("/")[-2:]
        record = {
            "file_name": os.path.join(image_root, split_folder, file_name),
            "height": field(img, "height", where),
            "width": field(img, "width", where),
            "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
            "neg_category_ids": img.get("neg_category_ids", []),
            "image_id": image_id,
        }
        objs = []
        for anno in anns_per_image.get(image_id, []):
            where = f"Annotation {anno['id']} of image {image_id}"
            segm = field(anno, "segmentation", where)
            if not segm or any(len(poly) % 2 or len(poly) < 6 for poly in segm):
                raise ValueError(
                    f"Annotation {anno.get('id')} of image {image_id} in '{json_file}' has no polygon "
                    "or a polygon with fewer than 3 points.")
            category_id = field(anno, "category_id", where)
            if id_map and category_id not in id_map:
                raise ValueError(f"{where} in '{json_file}' has category_id {category_id}, which is not in the "
                                 f"metadata of {dataset_name!r} ({len(id_map)} categories).")
            obj = {
                "bbox": field(anno, "bbox", where),
                "bbox_mode": BoxMode.XYWH_ABS,
                # LVIS ids are 1..K; a "cocofied" dataset maps them through the COCO metadata.
                "category_id": id_map[category_id] if id_map else category_id - 1,
                "segmentation": segm,
            }
            for key in extra_annotation_keys:
                obj[key] = field(anno, key, where)
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)
    return dataset_dicts


def get_lvis_instances_meta(dataset_name: str) -> Dict[str, Any]:
    """Built-in metadata for "lvis_v0.5*" (1230 classes), "lvis_v1*" (1203 classes, plus
    ``class_image_count``) or "*cocofied*" (COCO's 80 classes).

    Raises:
        ValueError: for a name matching none of them.
    """
    if "cocofied" in dataset_name:
        return _get_coco_instances_meta()
    if "v0.5" in dataset_name:
        return {"thing_classes": _class_names(LVIS_V0_5_CATEGORIES, 1230)}
    if "v1" in dataset_name:
        return {"thing_classes": _class_names(LVIS_V1_CATEGORIES, 1203),
                "class_image_count": LVIS_V1_CATEGORY_IMAGE_COUNT}
    raise ValueError(f"No built-in LVIS metadata for dataset {dataset_name!r} (expected 'v0.5', 'v1' or 'cocofied' in it).")


def _class_names(categories: List[Dict[str, Any]], expected: int) -> List[str]:
    ids = [k["id"] for k in categories]
    if len(ids) != expected or min(ids) != 1 or max(ids) != len(ids):
        raise AssertionError(f"Expected category ids 1..{expected}, got {len(ids)} ids in [{min(ids)}, {max(ids)}].")
    return [k["synonyms"][0] for k in sorted(categories, key=lambda k: k["id"])]

"""COCO-format datasets: reading a COCO json into dataset dicts (through pycocotools),
registering it by name, and writing dataset dicts back as COCO json (for evaluation).

Conventions of the dataset dicts (detectron2's):

- ``bbox`` stays as in the file, XYWH absolute, with ``bbox_mode = BoxMode.XYWH_ABS``;
- ``category_id`` is contiguous in ``[0, #categories)``, in the order of the json's sorted
  category ids (``metadata.thing_dataset_id_to_contiguous_id`` holds the mapping);
- ``segmentation``: polygons (list of flat ``[x, y, ...]``, invalid ones < 3 points dropped)
  or compressed RLE (uncompressed RLE is compressed on load);
- ``keypoints``: flat ``[x, y, v] * K``, with 0.5 added to x and y: COCO keypoints are integer
  pixel indices, dataset dicts use continuous coordinates where pixel (i, j) spans
  [i, i + 1) x [j, j + 1). :func:`convert_to_coco_dict` subtracts it again.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import shutil
import time
from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util

from workbench.structures import Boxes, BoxMode, PolygonMasks

from ..annotation_checks import bbox_problem, keypoints_problem, polygon_problem, rle_problem
from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "CocoJsonError", "load_coco_json", "load_sem_seg", "convert_to_coco_dict", "convert_to_coco_json",
    "register_coco_instances",
]

logger = logging.getLogger(__name__)


class CocoJsonError(ValueError):
    """A COCO json that breaks the format; the message names the file, and the annotation id
    and image id (or the image / category entry) at fault."""


def _read_coco_json(json_file: str, need_categories: bool) -> Dict[str, Any]:
    """Reads a COCO json and checks what :func:`load_coco_json` relies on.

    Legal, as in detectron2: no "annotations" (a test-set json), zero-area boxes, crowd
    annotations, polygons of < 3 points (dropped by the loader; COCO has a few), annotations
    of an image_id not in "images" (left out here, with a warning: a subset json made by
    filtering "images"). "categories" is needed with a dataset name (``need_categories``);
    without one, unknown category ids are kept, with a warning.

    Returns:
        The json's dict; "annotations" without those of unknown images.
    """
    path = os.fspath(json_file)
    try:
        with open(path) as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoJsonError(f"COCO json '{path}' is not valid JSON: {e}") from e
    where = f"COCO json '{path}'"
    if not isinstance(dataset, dict):
        raise CocoJsonError(f"{where} holds a {type(dataset).__name__}; expected an object with "
                            "'images', 'annotations' and 'categories'.")
    images, anns = dataset.get("images"), dataset.get("annotations", [])
    if not isinstance(images, list):
        raise CocoJsonError(f"{where} has no 'images' list; expected 'images': [{{'id', "
                            "'file_name', 'height', 'width'}, ...].")
    if not isinstance(anns, list):
        raise CocoJsonError(f"{where}: 'annotations' is a {type(anns).__name__}; expected a list "
                            "(or no 'annotations' key, for a test set).")
    if "categories" not in dataset and need_categories:
        raise CocoJsonError(f"{where} has no 'categories'; expected 'categories': [{{'id', 'name'}}, "
                            "...] (a dataset name needs them for thing_classes and the category "
                            "id mapping).")
    cats = dataset.get("categories", [])
    if not isinstance(cats, list):
        raise CocoJsonError(f"{where}: 'categories' is a {type(cats).__name__}; expected a list.")

    image_hw: Dict[Any, Any] = {}
    for i, img in enumerate(images):
        missing = [k for k in ("id", "file_name", "height", "width") if not isinstance(img, dict) or k not in img]
        if missing:
            raise CocoJsonError(f"{where}: images[{i}] lacks {missing}; expected 'id', "
                                "'file_name', 'height', 'width'.")
        if img["id"] in image_hw:
            raise CocoJsonError(f"{where}: image id={img['id']} appears more than once in 'images'.")
        image_hw[img["id"]] = (img["height"], img["width"])
    cat_ids = set()
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or "id" not in cat or (need_categories and "name" not in cat):
            raise CocoJsonError(f"{where}: categories[{i}] = {cat!r}; expected {{'id', 'name'}}.")
        cat_ids.add(cat["id"])

    kept, orphans, unknown_cats = [], [], []
    for i, ann in enumerate(anns):
        missing = [k for k in ("id", "image_id", "category_id") if not isinstance(ann, dict) or k not in ann]
        if missing:
            ident = f"id={ann['id']}" if isinstance(ann, dict) and "id" in ann else f"[{i}]"
            raise CocoJsonError(f"{where}: annotation {ident} lacks {missing}; expected 'id', "
                                "'image_id', 'category_id' (and 'bbox').")
        if ann["image_id"] not in image_hw:
            # A subset json made by filtering only "images": detectron2 warns and leaves these
            # annotations out (they match no image), so do we.
            orphans.append(ann)
            continue
        kept.append(ann)
        at = f"{where}, annotation id={ann['id']} of image id={ann['image_id']}"
        if ann["category_id"] not in cat_ids:
            if need_categories:  # detectron2 fails later with a bare KeyError of the id map
                raise CocoJsonError(f"{at}: category_id={ann['category_id']} is not the id of any "
                                    f"entry of 'categories' (ids {sorted(cat_ids)[:20]}).")
            unknown_cats.append(ann)  # without a dataset name, ids are kept as they are
        problem = None
        if "bbox" in ann:
            problem = bbox_problem(ann["bbox"], xywh=True)
        segm = ann.get("segmentation")
        if problem is None and segm:
            if isinstance(segm, dict):
                problem = rle_problem(segm, image_hw[ann["image_id"]])
            elif isinstance(segm, list):
                problem = next(filter(None, map(polygon_problem, segm)), None)
            else:
                problem = (f"segmentation is a {type(segm).__name__}; expected a list of polygons "
                           "or an RLE dict.")
        if problem is None and ann.get("keypoints"):
            problem = keypoints_problem(ann["keypoints"])
        if problem is not None:
            raise CocoJsonError(f"{at}: {problem}")
    if orphans:
        ids = sorted({a["image_id"] for a in orphans}, key=repr)
        logger.warning(
            "%s contains %d annotations, but only %d of them match to images in the file: "
            "annotation ids %s%s (image ids %s%s, not in 'images') are left out.", path, len(anns),
            len(kept), [a["id"] for a in orphans[:10]], " ..." if len(orphans) > 10 else "",
            ids[:10], " ..." if len(ids) > 10 else "")
        dataset = dict(dataset, annotations=kept)
    if unknown_cats and "categories" in dataset:
        ids = sorted({a["category_id"] for a in unknown_cats}, key=repr)
        logger.warning(
            "%s: %d annotations have a category_id that is not in 'categories' (ids %s%s, e.g. "
            "annotation id=%s); without a dataset name they are kept as they are.", path,
            len(unknown_cats), ids[:10], " ..." if len(ids) > 10 else "", unknown_cats[0]["id"])
    return dataset


def load_coco_json(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                   extra_annotation_keys: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Reads a COCO instances / keypoints json into dataset dicts.

    Args:
        json_file: The COCO json.
        image_root: Folder that the json's ``file_name`` entries are relative to.
        dataset_name: If given, its metadata gets ``thing_classes`` and
            ``thing_dataset_id_to_contiguous_id`` from the json's categories, and category ids
            are mapped to contiguous ids. Without it, ids are kept as they are.
        extra_annotation_keys: Annotation keys to keep besides "iscrowd", "bbox", "keypoints",
            "category_id", "segmentation".

    Returns:
        One dict per image, sorted by image id.

    Raises:
        CocoJsonError: The json breaks the COCO format: no "images" (or no "categories" while
            ``dataset_name`` is given), with ``dataset_name``, an annotation whose category_id
            is not in "categories", a bbox that is not 4 finite numbers
            with width, height >= 0, a polygon of odd length, an RLE whose run lengths do not
            sum to H x W or whose size is not the image's, keypoints not ``[x, y, v] * K``.
            The message names the file, the annotation id and the image id. Legal as in
            detectron2: no "annotations" (test sets), zero-area boxes, crowd annotations;
            polygons of < 3 points are dropped with a warning, and so are annotations whose
            image_id is not in "images" (a subset json); without ``dataset_name``, "categories"
            may be missing and unknown category ids are kept (with a warning).
    """
    from pycocotools.coco import COCO

    timer = time.perf_counter()
    dataset = _read_coco_json(json_file, need_categories=dataset_name is not None)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_api = COCO()
        coco_api.dataset = dataset
        coco_api.createIndex()
    if time.perf_counter() - timer > 1:
        logger.info("Loading %s takes %.2f seconds.", json_file, time.perf_counter() - timer)

    id_map = None
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        cat_ids = sorted(coco_api.getCatIds())
        cats = coco_api.loadCats(cat_ids)
        meta.thing_classes = [c["name"] for c in sorted(cats, key=lambda x: x["id"])]
        if cat_ids and not (min(cat_ids) == 1 and max(cat_ids) == len(cat_ids)) and "coco" not in dataset_name:
            logger.warning("Category ids in annotations are not in [1, #categories]! We'll apply a mapping for you.")
        id_map = {v: i for i, v in enumerate(cat_ids)}
        meta.thing_dataset_id_to_contiguous_id = id_map

    img_ids = sorted(coco_api.imgs.keys())  # sorted for reproducibility
    imgs = coco_api.loadImgs(img_ids)
    anns = [coco_api.imgToAnns[img_id] for img_id in img_ids]
    if "minival" not in os.fspath(json_file):
        # COCO2014's minival files reuse annotation ids across images; others must not.
        ann_ids = [ann["id"] for anns_per_image in anns for ann in anns_per_image]
        if len(set(ann_ids)) != len(ann_ids):
            raise ValueError(f"Annotation ids in '{json_file}' are not unique!")

    logger.info("Loaded %d images in COCO format from %s", len(imgs), json_file)
    ann_keys = ["iscrowd", "bbox", "keypoints", "category_id"] + (extra_annotation_keys or [])
    dropped_ann_ids = []
    dataset_dicts = []
    for img_dict, anno_dict_list in zip(imgs, anns):
        record = {
            "file_name": os.path.join(image_root, img_dict["file_name"]),
            "height": img_dict["height"],
            "width": img_dict["width"],
            "image_id": img_dict["id"],
        }
        objs = []
        for anno in anno_dict_list:
            if anno.get("ignore", 0) != 0:
                raise ValueError('"ignore" in COCO json file is not supported.')
            obj = {key: anno[key] for key in ann_keys if key in anno}
            segm = anno.get("segmentation", None)
            if segm:  # polygons (list) or RLE (dict)
                if isinstance(segm, dict):
                    if isinstance(segm["counts"], list):
                        segm = mask_util.frPyObjects(segm, *segm["size"])  # -> compressed RLE
                else:
                    # detectron2 drops degenerate polygons (< 3 points; COCO has a few).
                    segm = [poly for poly in segm if len(poly) % 2 == 0 and len(poly) >= 6]
                    if len(segm) == 0:
                        dropped_ann_ids.append(anno["id"])
                        continue  # an instance without a valid polygon is dropped
                obj["segmentation"] = segm
            keypts = anno.get("keypoints", None)
            if keypts:
                # Integer pixel indices -> continuous coordinates (pixel centre).
                obj["keypoints"] = [v + 0.5 if idx % 3 != 2 else v for idx, v in enumerate(keypts)]
            obj["bbox_mode"] = BoxMode.XYWH_ABS
            if id_map:
                obj["category_id"] = id_map[obj["category_id"]]  # checked by _read_coco_json
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)

    if dropped_ann_ids:
        logger.warning(
            "Filtered out %d instances of %s without a valid polygon (all of their polygons have "
            "< 3 points), annotation ids %s%s. There might be issues in your dataset generation "
            "process.", len(dropped_ann_ids), json_file, dropped_ann_ids[:10],
            " ..." if len(dropped_ann_ids) > 10 else "")
    return dataset_dicts


def load_sem_seg(gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg") -> List[Dict[str, Any]]:
    """Pairs images and label maps that share a file name stem (relative to their roots).

    Returns:
        ``[{"file_name": image path, "sem_seg_file_name": label path}, ...]``, sorted.
    """
    def files(root: str, ext: str) -> Dict[str, str]:
        out = {}
        for dirpath, _, names in os.walk(root):
            for n in names:
                if n.endswith(ext):
                    full = os.path.join(dirpath, n)
                    out[os.path.relpath(full, root)[: -len(ext)]] = full
        return out

    gt_ext = "." + gt_ext.lstrip(".")
    image_ext = "." + image_ext.lstrip(".")
    input_files = files(image_root, image_ext)
    gt_files = files(gt_root, gt_ext)
    common = sorted(set(input_files) & set(gt_files))
    if len(common) != len(input_files) or len(common) != len(gt_files):
        logger.warn("Directory %s and %s has %d and %d files, respectively.", image_root, gt_root,
                    len(input_files), len(gt_files))
        logger.warn("Will use their intersection of %d files.", len(common))
    logger.info("Loaded %d images with semantic segmentation from %s", len(common), image_root)
    return [{"file_name": input_files[k], "sem_seg_file_name": gt_files[k]} for k in common]


def convert_to_coco_dict(dataset_name: str) -> Dict[str, Any]:
    """The registered dataset as a COCO json dict (for pycocotools-based evaluation).

    Category ids are mapped back through ``thing_dataset_id_to_contiguous_id`` if the metadata
    has it; keypoints get the 0.5 offset removed; ``area`` is the polygon / RLE area, or the
    box area without segmentation; annotation ids start at 1.
    """
    dataset_dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    if hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        reverse_id_mapping = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}

        def reverse_id_mapper(contiguous_id: int) -> int:
            return reverse_id_mapping[contiguous_id]
    else:
        def reverse_id_mapper(contiguous_id: int) -> int:
            return contiguous_id

    categories = [{"id": reverse_id_mapper(i), "name": name} for i, name in enumerate(metadata.thing_classes)]
    logger.info("Converting dataset dicts into COCO format")
    coco_images, coco_annotations = [], []
    for image_id, image_dict in enumerate(dataset_dicts):
        coco_image = {
            "id": image_dict.get("image_id", image_id),
            "width": int(image_dict["width"]),
            "height": int(image_dict["height"]),
            "file_name": str(image_dict["file_name"]),
        }
        coco_images.append(coco_image)
        for annotation in image_dict.get("annotations", []):
            bbox = annotation["bbox"]
            if isinstance(bbox, np.ndarray):
                if bbox.ndim != 1:
                    raise ValueError(f"bbox has to be 1-dimensional. Got shape={bbox.shape}.")
                bbox = bbox.tolist()
            if len(bbox) != 4:
                raise ValueError(f"bbox has to have length 4 (rotated boxes are not supported). Got {bbox}.")
            bbox = BoxMode.convert(list(bbox), annotation["bbox_mode"], BoxMode.XYWH_ABS)

            segmentation = annotation.get("segmentation")
            if segmentation is not None:
                if isinstance(segmentation, list):
                    area = PolygonMasks([segmentation]).area()[0].item()
                elif isinstance(segmentation, dict):
                    segmentation = dict(segmentation)
                    if isinstance(segmentation["counts"], list):
                        segmentation = mask_util.frPyObjects(segmentation, *segmentation["size"])
                    area = float(mask_util.area(segmentation))
                else:
                    raise TypeError(f"Unknown segmentation type {type(segmentation)}!")
            else:
                bbox_xy = BoxMode.convert(bbox, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
                area = Boxes([bbox_xy]).area()[0].item()

            coco_annotation: Dict[str, Any] = {
                "id": len(coco_annotations) + 1,  # COCO ids start at 1
                "image_id": coco_image["id"],
                "bbox": [round(float(x), 3) for x in bbox],
                "area": float(area),
                "iscrowd": int(annotation.get("iscrowd", 0)),
                "category_id": int(reverse_id_mapper(annotation["category_id"])),
            }
            if "keypoints" in annotation:
                keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1).tolist()
                keypoints = [v - 0.5 if idx % 3 != 2 else v for idx, v in enumerate(keypoints)]
                coco_annotation["keypoints"] = keypoints
                coco_annotation["num_keypoints"] = int(sum(kp > 0 for kp in keypoints[2::3]))
            if segmentation is not None:
                if isinstance(segmentation, dict):
                    counts = segmentation["counts"]
                    if not isinstance(counts, str):
                        segmentation["counts"] = counts.decode("ascii")  # json-serializable
                else:
                    segmentation = [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in segmentation]
                coco_annotation["segmentation"] = segmentation
            coco_annotations.append(coco_annotation)

    logger.info("Conversion finished, #images: %d, #annotations: %d", len(coco_images), len(coco_annotations))
    info = {
        "date_created": str(datetime.datetime.now()),
        "description": "Automatically generated COCO json file for workbench.",
    }
    coco_dict: Dict[str, Any] = {"info": info, "images": coco_images, "categories": categories, "licenses": None}
    if len(coco_annotations) > 0:
        coco_dict["annotations"] = coco_annotations
    return coco_dict


def convert_to_coco_json(dataset_name: str, output_file: str, allow_cached: bool = True) -> None:
    """Writes :func:`convert_to_coco_dict` of the dataset to ``output_file``.

    Args:
        allow_cached: Reuse an existing ``output_file`` (delete it if the dataset changed).
    """
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    if os.path.exists(output_file) and allow_cached:
        logger.warning(
            "Using previously cached COCO format annotations at '%s'. You need to clear the cache "
            "file if your dataset has been modified.", output_file)
        return
    logger.info("Converting annotations of dataset '%s' to COCO format ...", dataset_name)
    coco_dict = convert_to_coco_dict(dataset_name)
    logger.info("Caching COCO format annotations at '%s' ...", output_file)
    tmp_file = f"{output_file}.tmp.{os.getpid()}"
    with open(tmp_file, "w") as f:
        json.dump(coco_dict, f)
    shutil.move(tmp_file, output_file)


def register_coco_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Registers a COCO instances / keypoints json under ``name``.

    The data is read on ``DatasetCatalog.get(name)``; the metadata gets ``json_file``,
    ``image_root``, ``evaluator_type="coco"`` and ``metadata`` (e.g. ``keypoint_names`` and
    ``keypoint_flip_map`` for keypoint datasets; ``thing_classes`` is filled from the json).
    """
    if not isinstance(name, str):
        raise TypeError(f"Dataset name must be a str, got {type(name).__name__}.")
    if not isinstance(json_file, (str, os.PathLike)) or not isinstance(image_root, (str, os.PathLike)):
        raise TypeError("json_file and image_root must be paths.")
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=os.fspath(json_file), image_root=os.fspath(image_root),
                                  evaluator_type="coco", **metadata)

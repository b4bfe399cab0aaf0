"""Procedural "shapes" dataset: coloured shapes over sky / ground / water, with full ground truth.

Every image is a pure function of ``(split, seed, index)``, so the dataset needs no download and
two machines produce the same arrays. One image holds up to 7 shapes of
``len(THING_CLASSES)`` classes, of random size (circumradius 15 px to 17% of the short side),
rotation and colour; later shapes may cover earlier ones, never so much that less than half
of a shape stays visible, and always in a colour that differs from what they cover. The
background is split into 2-3 textured "stuff" regions. Ground truth, per image:

* instances: box and mask of the *visible* part of each shape, the mask as polygons (holes
  are joined to their outer ring by a zero-width cut, which pycocotools and detectron2
  rasterise exactly) or as RLE, and 5 keypoints;
* a semantic label image for Panoptic FPN: 0 for "things", ``1..S`` for the stuff classes
  (detectron2's ``*_panoptic_separated`` convention, whose ``stuff_classes[0]`` is "things");
* a panoptic segmentation (COCO panoptic PNG + json), for the PQ evaluator.

Keypoints are defined the same way for every class: where the horizontal and vertical axes
through the shape's centre leave the shape ("top", "right", "bottom", "left"), and the centre.
Unlike the top-most vertex, these points move continuously with the rotation, so a model can
learn them without guessing which of two almost level corners is meant. A horizontal flip
swaps "left" and "right". Visibility: 2 if no later shape covers the point, 1 if one does
(labelled, not visible); every shape lies inside the image, so no point is outside it.

The drawing is :mod:`.shapes_render`; this module caches its images on disk as splits,
writes their dataset dicts and registers them.

Coordinates, the shape legend and how images are drawn: see :mod:`.shapes_render`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zlib
from typing import Any, Dict, List, Optional

import numpy as np
from PIL import Image

# The drawing (classes, geometry, textures, polygons, one image) lives in .shapes_render;
# its names stay importable from here.
from .shapes_render import (  # noqa: F401
    STUFF_CLASSES, THING_CLASSES, generate_shapes_image, mask_to_polygons,
    _CROSS_HALF_WIDTH, _GENERATOR_VERSION, _GROUND, _IMAGE_SIDES, _KEYPOINT_DIRECTIONS,
    _MIN_COLOR_DISTANCE, _MIN_RADIUS, _MIN_VISIBLE_FRACTION, _MIN_VISIBLE_PIXELS, _RING_INNER,
    _SKY, _STAR_INNER, _WATER, _as_rng, _axis_keypoints, _hsv_to_rgb, _inside, _join_holes,
    _mask_to_rle, _outer_radius, _shape_vertices, _signed_area, _simplify_chain, _simplify_ring,
    _smooth_noise, _stuff_layout, _stuff_textures, _wavy_curve,
)

__all__ = [
    "THING_CLASSES",
    "STUFF_CLASSES",
    "KEYPOINT_NAMES",
    "KEYPOINT_FLIP_MAP",
    "KEYPOINT_CONNECTION_RULES",
    "KEYPOINT_OKS_SIGMAS",
    "generate_shapes_image",
    "get_shapes_dicts",
    "get_shapes_metadata",
    "register_shapes",
    "register_all_shapes",
    "shapes_cache_dir",
]

# Colours of the classes in THING_CLASSES / STUFF_CLASSES (which .shapes_render defines).
THING_COLORS = [
    [220, 20, 60], [255, 140, 0], [65, 105, 225], [50, 205, 50],
    [255, 215, 0], [186, 85, 211], [0, 206, 209],
]
STUFF_COLORS = [[82, 18, 128], [135, 206, 235], [139, 105, 20], [30, 80, 200]]

KEYPOINT_NAMES = ["top", "right", "bottom", "left", "center"]
KEYPOINT_FLIP_MAP = [("left", "right")]
KEYPOINT_CONNECTION_RULES = [
    ("top", "right", (255, 128, 0)),
    ("right", "bottom", (255, 128, 0)),
    ("bottom", "left", (0, 160, 255)),
    ("left", "top", (0, 160, 255)),
    ("center", "top", (255, 255, 255)),
    ("center", "bottom", (255, 255, 255)),
]
# Per-keypoint OKS sigmas (COCO's definition: the spread of a keypoint relative to the object's
# scale sqrt(area)). Our points are exact, so the spread is that of pixel rendering; 0.05 puts
# OKS = 0.5 at about 2.4 px for a 30 px shape, between COCO's eyes (0.025) and hips (0.107).
KEYPOINT_OKS_SIGMAS = [0.05, 0.05, 0.05, 0.05, 0.05]

IGNORE_LABEL = 255
# Caches of an older drawing are not read as new images (see _GENERATOR_VERSION).
_CACHE_VERSION = f"v{_GENERATOR_VERSION}"


# --------------------------------------------------------------------------------------------
# Cached splits
# --------------------------------------------------------------------------------------------
def _image_seed(split: str, seed: int, index: int) -> List[int]:
    """Seed of image ``index`` of a split (crc32, not hash(): Python salts str hashes)."""
    return [_GENERATOR_VERSION, int(seed), zlib.crc32(split.encode("utf-8")), int(index)]


def shapes_cache_dir(split: str, seed: int, cache_dir: Optional[str] = None) -> str:
    """Folder of the cached files of one split: ``<cache>/shapes-v1/<split>-<seed>``, where
    ``<cache>`` is ``cache_dir``, else ``$WORKBENCH_CACHE``, else ``~/.cache/workbench``."""
    from workbench.checkpoint.catalog import get_cache_dir

    return os.path.join(get_cache_dir(cache_dir), f"shapes-{_CACHE_VERSION}", f"{split}-{int(seed)}")


def _write_atomic(path: str, data: bytes) -> None:
    """Write through a temporary file in the same folder, so readers never see half a file."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # speed over size
    return buf.getvalue()


def _id2rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG encoding: id = R + 256 G + 256^2 B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _ensure_image(folder: str, split: str, seed: int, index: int) -> Dict[str, Any]:
    """Generate and cache image ``index`` unless its files exist; return its json record."""
    stem = os.path.join(folder, f"{index:06d}")
    json_path = stem + ".json"  # written last: its presence marks a complete entry
    if os.path.exists(json_path):
        with open(json_path) as f:
            return json.load(f)
    image, rec = generate_shapes_image(_image_seed(split, seed, index))
    _write_atomic(stem + ".png", _png_bytes(image))
    _write_atomic(stem + "_sem.png", _png_bytes(rec["sem_seg"]))
    _write_atomic(stem + "_panoptic.png", _png_bytes(_id2rgb(rec["pan_seg"])))
    anns = rec["annotations"]
    for ann, rle_ann in zip(anns, _rle_annotations(rec)):
        ann["segmentation_rle"] = rle_ann
        ann["bbox_mode"] = int(ann["bbox_mode"])
    out = {"height": rec["height"], "width": rec["width"], "annotations": anns,
           "segments_info": rec["segments_info"]}
    _write_atomic(json_path, json.dumps(out).encode("utf-8"))
    return out


def _rle_annotations(rec: Dict[str, Any]) -> List[Dict[str, Any]]:
    pan = rec["pan_seg"]
    return [_mask_to_rle(pan == s["id"]) for s in rec["segments_info"] if s["isthing"]]


def get_shapes_dicts(split: str, num_images: int, seed: int = 0, *, mask_format: str = "polygon",
                     cache_dir: Optional[str] = None, num_workers: Optional[int] = None
                     ) -> List[Dict[str, Any]]:
    """detectron2 dataset dicts of one split, generating (and caching) missing images.

    Image ``i`` depends on ``(split, seed, i)`` only, so a larger ``num_images`` extends a
    smaller one. Files go to :func:`shapes_cache_dir`: ``{i:06d}.png`` (RGB),
    ``{i:06d}_sem.png`` (semantic labels), ``{i:06d}_panoptic.png`` (COCO panoptic ids) and
    ``{i:06d}.json`` (annotations); ``panoptic_{num_images}.json`` holds the COCO panoptic
    ground truth of the first ``num_images`` images (for the PQ evaluator).

    Args:
        mask_format: "polygon" (COCO polygons, for ``INPUT.MASK_FORMAT: polygon``) or
            "bitmask" (COCO RLE dicts, for ``INPUT.MASK_FORMAT: bitmask``).
        num_workers: processes drawing missing images (default: one per CPU, up to 4, when
            at least 200 are missing; the images do not depend on it).

    Returns:
        One dict per image: ``file_name``, ``sem_seg_file_name``, ``pan_seg_file_name``,
        ``image_id`` (= i), ``height``, ``width``, ``annotations`` and ``segments_info``
        (see :func:`generate_shapes_image`).
    """
    from workbench.structures import BoxMode

    if mask_format not in ("polygon", "bitmask"):
        raise ValueError(f"Expected mask_format 'polygon' or 'bitmask', got {mask_format!r}.")
    if num_images < 0:
        raise ValueError(f"Expected num_images >= 0, got {num_images}.")
    folder = shapes_cache_dir(split, seed, cache_dir)
    os.makedirs(folder, exist_ok=True)
    missing = [i for i in range(num_images) if not os.path.exists(os.path.join(folder, f"{i:06d}.json"))]
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 4) if len(missing) >= 200 else 1
    if num_workers > 1 and len(missing) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # "spawn": the caller may hold torch threads, which do not survive a fork safely.
        with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_ensure_image, [folder] * len(missing), [split] * len(missing),
                          [seed] * len(missing), missing, chunksize=16))
    dicts = []
    for i in range(num_images):
        rec = _ensure_image(folder, split, seed, i)
        stem = os.path.join(folder, f"{i:06d}")
        anns = []
        for ann in rec["annotations"]:
            ann = dict(ann)
            rle = ann.pop("segmentation_rle")
            if mask_format == "bitmask":
                ann["segmentation"] = rle
            ann["bbox_mode"] = BoxMode(ann["bbox_mode"])
            anns.append(ann)
        dicts.append({
            "file_name": stem + ".png",
            "sem_seg_file_name": stem + "_sem.png",
            "pan_seg_file_name": stem + "_panoptic.png",
            "image_id": i,
            "height": rec["height"],
            "width": rec["width"],
            "annotations": anns,
            "segments_info": rec["segments_info"],
        })
    pan_json = os.path.join(folder, f"panoptic_{num_images}.json")
    if not os.path.exists(pan_json):
        _write_atomic(pan_json, json.dumps(_panoptic_json(dicts)).encode("utf-8"))
    return dicts


def _panoptic_json(dicts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """COCO panoptic ground truth: dataset category ids are 1..T for things, T+1..T+S for stuff."""
    n_things = len(THING_CLASSES)
    categories = [{"id": i + 1, "name": n, "isthing": 1, "color": THING_COLORS[i]}
                  for i, n in enumerate(THING_CLASSES)]
    categories += [{"id": n_things + s, "name": STUFF_CLASSES[s], "isthing": 0, "color": STUFF_COLORS[s]}
                   for s in range(1, len(STUFF_CLASSES))]
    images, annotations = [], []
    for d in dicts:
        images.append({"id": d["image_id"], "file_name": os.path.basename(d["file_name"]),
                       "height": d["height"], "width": d["width"]})
        segs = []
        for s in d["segments_info"]:
            cat = s["category_id"] + 1 if s["isthing"] else n_things + s["category_id"]
            segs.append({"id": s["id"], "category_id": cat, "iscrowd": 0, "area": s["area"],
                         "bbox": s["bbox"]})
        annotations.append({"image_id": d["image_id"],
                            "file_name": os.path.basename(d["pan_seg_file_name"]),
                            "segments_info": segs})
    return {"images": images, "annotations": annotations, "categories": categories}


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def get_shapes_metadata() -> Dict[str, Any]:
    """Metadata shared by every shapes split, in detectron2's ``*_panoptic_separated`` form."""
    n_things = len(THING_CLASSES)
    return {
        "thing_classes": list(THING_CLASSES),
        "thing_colors": [list(c) for c in THING_COLORS],
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(n_things)},
        "stuff_classes": list(STUFF_CLASSES),
        "stuff_colors": [list(c) for c in STUFF_COLORS],
        # Contiguous stuff id s (the sem_seg label) has dataset id T+s; 0 stands for "things".
        "stuff_dataset_id_to_contiguous_id": {
            **{0: 0}, **{n_things + s: s for s in range(1, len(STUFF_CLASSES))}},
        "keypoint_names": list(KEYPOINT_NAMES),
        "keypoint_flip_map": list(KEYPOINT_FLIP_MAP),
        "keypoint_connection_rules": list(KEYPOINT_CONNECTION_RULES),
        "keypoint_oks_sigmas": list(KEYPOINT_OKS_SIGMAS),
        "ignore_label": IGNORE_LABEL,
        "evaluator_type": "coco_panoptic_seg",
    }


def register_shapes(name: str, split: str, num_images: int, seed: int = 0, *,
                    mask_format: str = "polygon", cache_dir: Optional[str] = None) -> None:
    """Register a shapes split into ``DatasetCatalog`` (lazily: nothing is drawn until the
    dataset is requested) and fill its ``MetadataCatalog`` entry.

    Besides :func:`get_shapes_metadata`, the metadata holds ``image_root``/``sem_seg_root``/
    ``panoptic_root`` (the cache folder) and ``panoptic_json`` (written on first request).
    """
    from workbench.checkpoint.catalog import get_cache_dir
    from workbench.data.catalog import DatasetCatalog, MetadataCatalog

    # Resolve the cache now, so that the files and the metadata paths always agree.
    root = get_cache_dir(cache_dir)
    folder = shapes_cache_dir(split, seed, root)
    DatasetCatalog.register(
        name,
        lambda: get_shapes_dicts(split, num_images, seed, mask_format=mask_format, cache_dir=root),
    )
    MetadataCatalog.get(name).set(
        image_root=folder,
        sem_seg_root=folder,
        panoptic_root=folder,
        panoptic_json=os.path.join(folder, f"panoptic_{num_images}.json"),
        split=split,
        seed=int(seed),
        num_images=int(num_images),
        **get_shapes_metadata(),
    )


# name -> (split, num_images, seed)
_DEFAULT_SPLITS = {
    "shapes_train": ("train", 4000, 0),
    "shapes_val": ("val", 500, 0),
    "shapes_val_100": ("val", 100, 0),
}


def register_all_shapes() -> None:
    """Register the default splits (``shapes_train``, ``shapes_val``, ``shapes_val_100``)."""
    from workbench.data.catalog import DatasetCatalog

    for name, (split, n, seed) in _DEFAULT_SPLITS.items():
        if name not in DatasetCatalog.list():
            register_shapes(name, split, n, seed)


# Registering is cheap (nothing is drawn until a split is requested), so importing this module,
# which ``workbench.data.datasets`` does, makes the default names available, like detectron2's
# builtin datasets.
register_all_shapes()

"""A tiny COCO-style dataset written to disk: images, a COCO json with polygons, RLE, crowd and
keypoints, and semantic label maps."""

from __future__ import annotations

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

KEYPOINT_NAMES = ["left_top", "right_top", "left_bottom", "right_bottom"]
KEYPOINT_FLIP_MAP = [("left_top", "right_top"), ("left_bottom", "right_bottom")]
# Deliberately non-contiguous category ids: the loader must map them to 0, 1.
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "blob"}]


def _corner_keypoints(x0, y0, x1, y1):
    """COCO keypoints (integer pixel indices) at the four corners, all visible."""
    return [x0, y0, 2, x1 - 1, y0, 2, x0, y1 - 1, 2, x1 - 1, y1 - 1, 2]


def write_coco_dataset(root, sizes=((40, 60), (50, 30), (36, 48), (44, 44)), seed=0):
    """Writes images (H, W) from ``sizes`` with a polygon "square" and an RLE "blob" each (plus
    a crowd annotation in image 0 and an invalid polygon in image 1) and label maps.

    Returns:
        (json path, image dir, label dir, the json dict).
    """
    rng = np.random.RandomState(seed)
    img_dir = os.path.join(root, "images")
    seg_dir = os.path.join(root, "labels")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(seg_dir, exist_ok=True)
    images, annotations = [], []
    for i, (h, w) in enumerate(sizes):
        img = rng.randint(0, 60, size=(h, w, 3)).astype(np.uint8)
        label = np.zeros((h, w), dtype=np.uint8)
        # A square (polygon): pixels [x0, x1) x [y0, y1).
        x0, y0 = 2 + i, 3
        x1, y1 = x0 + 12, y0 + 10
        img[y0:y1, x0:x1] = (200, 30, 30)
        label[y0:y1, x0:x1] = 1
        poly = [x0, y0, x1, y0, x1, y1, x0, y1]
        ann = {"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 3, "iscrowd": 0,
               "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
               "segmentation": [poly], "keypoints": _corner_keypoints(x0, y0, x1, y1), "num_keypoints": 4}
        if i == 1:
            ann["segmentation"].append([1, 1, 2, 2])  # invalid (< 3 points): dropped by the loader
        annotations.append(ann)
        # A blob (RLE): an L-shaped mask in the lower right.
        mask = np.zeros((h, w), dtype=np.uint8)
        bx0, by0 = w - 14, h - 12
        mask[by0:by0 + 10, bx0:bx0 + 4] = 1
        mask[by0 + 6:by0 + 10, bx0:bx0 + 12] = 1
        img[mask.astype(bool)] = (30, 200, 30)
        label[mask.astype(bool)] = 2
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append({
            "id": len(annotations) + 1, "image_id": 100 + i, "category_id": 7, "iscrowd": 0,
            "bbox": [bx0, by0, 12, 10], "area": float(mask.sum()), "segmentation": rle,
            "keypoints": _corner_keypoints(bx0, by0, bx0 + 12, by0 + 10), "num_keypoints": 4,
        })
        if i == 0:
            crowd = mask_util.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((h - 4, 0), (0, w - 4)))))
            crowd["counts"] = crowd["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 3, "iscrowd": 1,
                                "bbox": [0, h - 4, 4, 4], "area": 16.0, "segmentation": crowd,
                                "keypoints": [0] * 12, "num_keypoints": 0})
        name = f"img{i}.png"
        Image.fromarray(img).save(os.path.join(img_dir, name))
        Image.fromarray(label).save(os.path.join(seg_dir, f"img{i}.png"))
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    json_path = os.path.join(root, "instances.json")
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path, img_dir, seg_dir, data


@pytest.fixture
def coco_dataset(tmp_path):
    """Registers the tiny dataset as "tiny_coco_<tmp>" (with label maps) and removes it after."""
    from workbench.data import DatasetCatalog, MetadataCatalog
    from workbench.data.datasets import load_coco_json

    json_path, img_dir, seg_dir, data = write_coco_dataset(str(tmp_path))
    name = f"tiny_coco_{tmp_path.name}"

    def load():
        dicts = load_coco_json(json_path, img_dir, name)
        for d in dicts:
            d["sem_seg_file_name"] = os.path.join(seg_dir, os.path.basename(d["file_name"]))
        return dicts

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=json_path, image_root=img_dir, evaluator_type="coco",
                                  keypoint_names=KEYPOINT_NAMES, keypoint_flip_map=KEYPOINT_FLIP_MAP,
                                  stuff_classes=["background", "square", "blob"], ignore_label=255)
    yield {"name": name, "json": json_path, "image_dir": img_dir, "label_dir": seg_dir, "data": data}
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


# Tiny models, after tests/modeling/test_model_e2e.py's tiny_cfg.
SMALL = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16], "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 32,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 4,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 128, "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2,
]


def tiny_cfg(zoo_config: str, *extra):
    from workbench.model_zoo import get_config

    cfg = get_config(zoo_config)
    cfg.merge_from_list(SMALL + list(extra))
    return cfg


@pytest.fixture
def make_tiny_cfg():
    """``make_tiny_cfg(zoo_config, *KEY_VALUE)`` -> a tiny cfg (fixtures can't be imported)."""
    return tiny_cfg


@pytest.fixture
def keypoint_meta():
    return {"keypoint_names": KEYPOINT_NAMES, "keypoint_flip_map": KEYPOINT_FLIP_MAP}


@pytest.fixture
def empty_catalogs():
    """Empties DatasetCatalog and MetadataCatalog for the test (to register built-in names
    again), then puts everything back."""
    from workbench.data import DatasetCatalog, MetadataCatalog

    saved_d, saved_m = dict(DatasetCatalog.data), dict(MetadataCatalog.data)
    DatasetCatalog.data.clear()
    MetadataCatalog.data.clear()
    try:
        yield
    finally:
        DatasetCatalog.data.clear()
        DatasetCatalog.data.update(saved_d)
        MetadataCatalog.data.clear()
        MetadataCatalog.data.update(saved_m)

"""A tiny registered detection dataset (rectangles with polygon masks) and tiny model configs
for the training tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

# Tiny models, after tests/modeling/test_model_e2e.py's tiny_cfg; caffe-style PIXEL_STD = 1
# makes training from scratch diverge, so the inputs are scaled to unit variance.
SMALL = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.PIXEL_STD", [57.375, 57.12, 58.395], "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 128, "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.BASE_LR", 0.005, "SOLVER.WARMUP_ITERS", 0, "SEED", 0, "DATASETS.TEST", (),
]


def tiny_cfg(*extra):
    from workbench.model_zoo import get_config

    cfg = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(SMALL + list(extra))
    return cfg


def write_rectangles(root, n=4, seed=0):
    """n images of (48..64) x (48..64) pixels with 1-2 coloured rectangles each."""
    rng = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    dicts = []
    for i in range(n):
        h, w = rng.randint(48, 65, size=2)
        img = rng.randint(0, 50, size=(h, w, 3)).astype(np.uint8)
        annos = []
        for k in range(1 + i % 2):
            cls = (i + k) % 2
            bw, bh = (int(v) for v in rng.randint(12, 24, size=2))
            x0, y0 = int(rng.randint(0, w - bw)), int(rng.randint(0, h - bh))
            img[y0:y0 + bh, x0:x0 + bw] = (220, 40, 40) if cls == 0 else (40, 40, 220)
            annos.append({"bbox": [float(x0), float(y0), float(bw), float(bh)], "bbox_mode": 1,
                          "category_id": cls, "iscrowd": 0,
                          "segmentation": [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]]})
        path = os.path.join(root, f"{i}.png")
        Image.fromarray(img).save(path)
        dicts.append({"file_name": path, "height": int(h), "width": int(w), "image_id": i, "annotations": annos})
    return dicts


@pytest.fixture
def rect_dataset(tmp_path):
    """Registers the rectangles as "rects_<tmp>" (train and test) and removes them after."""
    from workbench.data import DatasetCatalog, MetadataCatalog

    dicts = write_rectangles(str(tmp_path / "images"))
    name = f"rects_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["red", "blue"], evaluator_type="coco")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.fixture
def make_tiny_cfg():
    """``make_tiny_cfg(*KEY_VALUE)``: a tiny Mask R-CNN cfg."""
    return tiny_cfg

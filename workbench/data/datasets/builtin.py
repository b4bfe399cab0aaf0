"""Registers the datasets detectron2 knows by name, at their standard paths under
``$DETECTRON2_DATASETS`` (default ``./datasets``), with their metadata.

Registering reads nothing from disk: a user without the files can still use the names'
metadata (class names, colours) to show a model's predictions. ``DatasetCatalog.get(name)``
first checks that the files are there and otherwise raises a :class:`FileNotFoundError`
naming the missing path and the environment variable. The expected layout is detectron2's
``datasets/README.md``: ``coco/{train,val}2017``, ``coco/annotations/*.json``, ``lvis/*.json``,
``cityscapes/{leftImg8bit,gtFine}`` (instances as RLE masks: use ``INPUT.MASK_FORMAT bitmask``),
``VOC20{07,12}``, ``ADEChallengeData2016``.

Imported by :mod:`workbench.data.datasets`, so ``import workbench.data`` registers them.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import ADE20K_SEM_SEG_CATEGORIES, _get_builtin_metadata
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .cityscapes_panoptic import _RAW_CITYSCAPES_PANOPTIC_SPLITS
from .cityscapes_panoptic import register_all_cityscapes_panoptic as _register_cityscapes_panoptic
from .coco import load_sem_seg, register_coco_instances
from .coco_panoptic import register_coco_panoptic, register_coco_panoptic_separated
from .lvis import get_lvis_instances_meta, register_lvis_instances
from .pascal_voc import register_pascal_voc

__all__ = ["register_all", "register_all_coco", "register_all_lvis", "register_all_cityscapes",
           "register_all_cityscapes_panoptic", "register_all_pascal_voc", "register_all_ade20k"]

ENV_VAR = "DETECTRON2_DATASETS"

# name: (image folder, annotation json), relative to the datasets root.
_PREDEFINED_SPLITS_COCO: Dict[str, Dict[str, tuple]] = {
    "coco": {
        "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
        "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
        "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
        "coco_2014_valminusminival": ("coco/val2014", "coco/annotations/instances_valminusminival2014.json"),
        "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
        "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
        "coco_2017_test": ("coco/test2017", "coco/annotations/image_info_test2017.json"),
        "coco_2017_test-dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
        "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
    },
    "coco_person": {
        "keypoints_coco_2014_train": ("coco/train2014", "coco/annotations/person_keypoints_train2014.json"),
        "keypoints_coco_2014_val": ("coco/val2014", "coco/annotations/person_keypoints_val2014.json"),
        "keypoints_coco_2014_minival": ("coco/val2014", "coco/annotations/person_keypoints_minival2014.json"),
        "keypoints_coco_2014_valminusminival": (
            "coco/val2014", "coco/annotations/person_keypoints_valminusminival2014.json"),
        "keypoints_coco_2017_train": ("coco/train2017", "coco/annotations/person_keypoints_train2017.json"),
        "keypoints_coco_2017_val": ("coco/val2017", "coco/annotations/person_keypoints_val2017.json"),
        "keypoints_coco_2017_val_100": ("coco/val2017", "coco/annotations/person_keypoints_val2017_100.json"),
    },
}

# name: (panoptic png folder, panoptic json, semantic png folder made by prepare_panoptic_fpn.py).
_PREDEFINED_SPLITS_COCO_PANOPTIC = {
    "coco_2017_train_panoptic": ("coco/panoptic_train2017", "coco/annotations/panoptic_train2017.json",
                                 "coco/panoptic_stuff_train2017"),
    "coco_2017_val_panoptic": ("coco/panoptic_val2017", "coco/annotations/panoptic_val2017.json",
                               "coco/panoptic_stuff_val2017"),
    "coco_2017_val_100_panoptic": ("coco/panoptic_val2017_100", "coco/annotations/panoptic_val2017_100.json",
                                   "coco/panoptic_stuff_val2017_100"),
}

_PREDEFINED_SPLITS_LVIS = {
    "lvis_v1": {
        "lvis_v1_train": ("coco/", "lvis/lvis_v1_train.json"),
        "lvis_v1_val": ("coco/", "lvis/lvis_v1_val.json"),
        "lvis_v1_test_dev": ("coco/", "lvis/lvis_v1_image_info_test_dev.json"),
        "lvis_v1_test_challenge": ("coco/", "lvis/lvis_v1_image_info_test_challenge.json"),
    },
    "lvis_v0.5": {
        "lvis_v0.5_train": ("coco/", "lvis/lvis_v0.5_train.json"),
        "lvis_v0.5_val": ("coco/", "lvis/lvis_v0.5_val.json"),
        "lvis_v0.5_val_rand_100": ("coco/", "lvis/lvis_v0.5_val_rand_100.json"),
        "lvis_v0.5_test": ("coco/", "lvis/lvis_v0.5_image_info_test.json"),
    },
    "lvis_v0.5_cocofied": {
        "lvis_v0.5_train_cocofied": ("coco/", "lvis/lvis_v0.5_train_cocofied.json"),
        "lvis_v0.5_val_cocofied": ("coco/", "lvis/lvis_v0.5_val_cocofied.json"),
    },
}

_RAW_CITYSCAPES_SPLITS = {
    "cityscapes_fine_{task}_train": ("cityscapes/leftImg8bit/train/", "cityscapes/gtFine/train/"),
    "cityscapes_fine_{task}_val": ("cityscapes/leftImg8bit/val/", "cityscapes/gtFine/val/"),
    "cityscapes_fine_{task}_test": ("cityscapes/leftImg8bit/test/", "cityscapes/gtFine/test/"),
}

_VOC_SPLITS = [
    ("voc_2007_trainval", "VOC2007", "trainval"), ("voc_2007_train", "VOC2007", "train"),
    ("voc_2007_val", "VOC2007", "val"), ("voc_2007_test", "VOC2007", "test"),
    ("voc_2012_trainval", "VOC2012", "trainval"), ("voc_2012_train", "VOC2012", "train"),
    ("voc_2012_val", "VOC2012", "val"),
]


def _require_files(name: str, paths: Sequence[str]) -> None:
    """Wraps the registered loader of ``name``: it first checks that ``paths`` exist."""
    load = DatasetCatalog[name]

    def checked_load() -> List[Dict[str, Any]]:
        for path in paths:
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(
                    f"Dataset '{name}' needs {path}, which does not exist. Built-in datasets are read "
                    f"from ${ENV_VAR} (now {os.getenv(ENV_VAR, 'unset: ./datasets')}); download the "
                    "dataset there (layout of detectron2's datasets/README.md) or set the variable.")
        return load()

    DatasetCatalog[name] = checked_load


def register_all_coco(root: str) -> None:
    """COCO 2014 / 2017 instances and person keypoints, and COCO panoptic (separated and
    standard)."""
    for family, splits in _PREDEFINED_SPLITS_COCO.items():
        for key, (image_root, json_file) in splits.items():
            json_path = os.path.join(root, json_file) if "://" not in json_file else json_file
            register_coco_instances(key, _get_builtin_metadata(family), json_path, os.path.join(root, image_root))
            _require_files(key, [json_path, os.path.join(root, image_root)])

    for prefix, (panoptic_root, panoptic_json, semantic_root) in _PREDEFINED_SPLITS_COCO_PANOPTIC.items():
        instances_meta = MetadataCatalog.get(prefix[: -len("_panoptic")])
        image_root, instances_json = instances_meta.image_root, instances_meta.json_file
        panoptic_root, panoptic_json = os.path.join(root, panoptic_root), os.path.join(root, panoptic_json)
        semantic_root = os.path.join(root, semantic_root)
        # "Separated" (Panoptic FPN): instances + a things-merged semantic map.
        register_coco_panoptic_separated(prefix, _get_builtin_metadata("coco_panoptic_separated"), image_root,
                                         panoptic_root, panoptic_json, semantic_root, instances_json)
        _require_files(prefix + "_separated", [instances_json, image_root, semantic_root])
        _require_files(prefix + "_stuffonly", [image_root, semantic_root])
        # "Standard" (Panoptic-DeepLab): the panoptic pngs and json.
        register_coco_panoptic(prefix, _get_builtin_metadata("coco_panoptic_standard"), image_root,
                               panoptic_root, panoptic_json, instances_json)
        _require_files(prefix, [panoptic_json, panoptic_root, image_root])


def register_all_lvis(root: str) -> None:
    """LVIS v1, v0.5 and v0.5 "cocofied" (images are COCO's, under ``coco/``)."""
    for family, splits in _PREDEFINED_SPLITS_LVIS.items():
        for key, (image_root, json_file) in splits.items():
            json_path = os.path.join(root, json_file) if "://" not in json_file else json_file
            register_lvis_instances(key, get_lvis_instances_meta(family), json_path, os.path.join(root, image_root))
            _require_files(key, [json_path, os.path.join(root, image_root)])


def register_all_cityscapes(root: str) -> None:
    """Cityscapes fine instance segmentation and semantic segmentation.

    Unlike detectron2, the instance datasets give **RLE masks** (read from the
    ``gtFine_instanceIds.png`` files; detectron2 makes polygons from the json with shapely,
    which workbench does not depend on), so train them with ``INPUT.MASK_FORMAT bitmask``
    (detectron2's ``Cityscapes/mask_rcnn_R_50_FPN.yaml`` sets ``polygon``). Their metadata
    says so: ``mask_format="bitmask"``.
    """
    for key, (image_dir, gt_dir) in _RAW_CITYSCAPES_SPLITS.items():
        meta = _get_builtin_metadata("cityscapes")
        image_dir, gt_dir = os.path.join(root, image_dir), os.path.join(root, gt_dir)
        inst_key = key.format(task="instance_seg")
        DatasetCatalog.register(inst_key, lambda x=image_dir, y=gt_dir: load_cityscapes_instances(x, y))
        MetadataCatalog.get(inst_key).set(image_dir=image_dir, gt_dir=gt_dir,
                                          evaluator_type="cityscapes_instance", mask_format="bitmask", **meta)
        _require_files(inst_key, [image_dir, gt_dir])
        sem_key = key.format(task="sem_seg")
        DatasetCatalog.register(sem_key, lambda x=image_dir, y=gt_dir: load_cityscapes_semantic(x, y))
        MetadataCatalog.get(sem_key).set(image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_sem_seg",
                                         ignore_label=255, **meta)
        _require_files(sem_key, [image_dir, gt_dir])


def register_all_cityscapes_panoptic(root: str) -> None:
    """Cityscapes fine panoptic segmentation (train / val), as detectron2's
    ``register_all_cityscapes_panoptic`` (see :mod:`.cityscapes_panoptic`)."""
    _register_cityscapes_panoptic(root)
    for key, (image_dir, _, gt_json) in _RAW_CITYSCAPES_PANOPTIC_SPLITS.items():
        _require_files(key, [os.path.join(root, image_dir), os.path.join(root, gt_json)])


def register_all_pascal_voc(root: str) -> None:
    """Pascal VOC 2007 / 2012 detection splits."""
    for name, dirname, split in _VOC_SPLITS:
        year = 2007 if "2007" in name else 2012
        dirname = os.path.join(root, dirname)
        register_pascal_voc(name, dirname, split, year)
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"
        _require_files(name, [os.path.join(dirname, "ImageSets", "Main", split + ".txt")])


def register_all_ade20k(root: str) -> None:
    """ADE20K SceneParsing (150 classes), with detectron2's converted label pngs."""
    root = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in (("train", "training"), ("val", "validation")):
        image_dir = os.path.join(root, "images", dirname)
        gt_dir = os.path.join(root, "annotations_detectron2", dirname)
        name = f"ade20k_sem_seg_{split}"
        DatasetCatalog.register(name, lambda x=image_dir, y=gt_dir: load_sem_seg(y, x, gt_ext="png", image_ext="jpg"))
        MetadataCatalog.get(name).set(stuff_classes=ADE20K_SEM_SEG_CATEGORIES[:], image_root=image_dir,
                                      sem_seg_root=gt_dir, evaluator_type="sem_seg", ignore_label=255)
        _require_files(name, [image_dir, gt_dir])


def _datasets_root() -> str:
    return os.path.expanduser(os.getenv(ENV_VAR, "datasets"))


def register_all(root: str) -> None:
    """Registers every built-in dataset with files under ``root``."""
    register_all_coco(root)
    register_all_lvis(root)
    register_all_cityscapes(root)
    register_all_cityscapes_panoptic(root)
    register_all_pascal_voc(root)
    register_all_ade20k(root)


if "coco_2017_train" not in DatasetCatalog:  # a module reload must not register twice
    register_all(_datasets_root())

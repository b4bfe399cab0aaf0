"""Dataset readers and registration helpers (COCO instances / keypoints / panoptic, label maps,
LVIS, Pascal VOC, Cityscapes), the procedural "shapes" dataset, and detectron2's built-in
dataset names (``coco_2017_train``, ``lvis_v1_val``, ``voc_2007_trainval``, ...): all
registered on import, without reading any file."""

from .coco import (
    CocoJsonError,
    convert_to_coco_dict,
    convert_to_coco_json,
    load_coco_json,
    load_sem_seg,
    register_coco_instances,
)
from .coco_panoptic import (
    load_coco_panoptic_json,
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .lvis import get_lvis_instances_meta, load_lvis_json, register_lvis_instances
from .pascal_voc import load_voc_instances, register_pascal_voc
from . import shapes  # registers shapes_train / shapes_val / shapes_val_100 (lazily)
from . import builtin  # registers detectron2's built-in names under $DETECTRON2_DATASETS (lazily)

__all__ = [
    "CocoJsonError", "convert_to_coco_dict", "convert_to_coco_json", "load_coco_json", "load_coco_panoptic_json",
    "load_sem_seg", "register_coco_instances", "register_coco_panoptic",
    "register_coco_panoptic_separated", "shapes",
    "builtin", "get_lvis_instances_meta", "load_cityscapes_instances", "load_cityscapes_semantic",
    "load_lvis_json", "load_voc_instances", "register_lvis_instances", "register_pascal_voc",
]

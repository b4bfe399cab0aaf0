"""Dataset readers and registration helpers (COCO instances / keypoints / panoptic, label maps),
and the procedural "shapes" dataset, whose default splits are registered on import."""

from .coco import (
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
from . import shapes  # registers shapes_train / shapes_val / shapes_val_100 (lazily)

__all__ = [
    "convert_to_coco_dict", "convert_to_coco_json", "load_coco_json", "load_coco_panoptic_json",
    "load_sem_seg", "register_coco_instances", "register_coco_panoptic",
    "register_coco_panoptic_separated", "shapes",
]

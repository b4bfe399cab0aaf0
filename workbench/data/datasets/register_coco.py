"""detectron2's path ``detectron2/data/datasets/register_coco.py``: re-exports of the COCO
registration functions, implemented in :mod:`workbench.data.datasets.coco` and
:mod:`workbench.data.datasets.coco_panoptic`."""

from .coco import register_coco_instances
from .coco_panoptic import register_coco_panoptic_separated

__all__ = ["register_coco_instances", "register_coco_panoptic_separated"]

"""Data structures passed between workbench components: boxes, instances, batched images, masks
and keypoints, with detectron2 0.6's names and semantics (``detectron2.structures``).

``paste_masks_in_image`` lives in ``workbench.structures.mask_ops`` (detectron2 keeps it in
``detectron2.layers.mask_ops``) and is re-exported here.
"""

from .boxes import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)
from .image_list import ImageList
from .instances import Instances
from .keypoints import Keypoints, _keypoints_to_heatmap, heatmaps_to_keypoints
from .mask_ops import paste_masks_in_image
from .masks import (
    BitMasks,
    PolygonMasks,
    ROIMasks,
    polygon_area,
    polygons_to_bitmask,
    rasterize_polygons_within_box,
)
from .rotated_boxes import RotatedBoxes
from .rotated_boxes import pairwise_iou as pairwise_iou_rotated

__all__ = [
    "Boxes",
    "BoxMode",
    "pairwise_intersection",
    "pairwise_iou",
    "pairwise_ioa",
    "pairwise_point_box_distance",
    "matched_pairwise_iou",
    "ImageList",
    "Instances",
    "Keypoints",
    "heatmaps_to_keypoints",
    "_keypoints_to_heatmap",
    "BitMasks",
    "PolygonMasks",
    "ROIMasks",
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
    "paste_masks_in_image",
    "RotatedBoxes",
    "pairwise_iou_rotated",
]

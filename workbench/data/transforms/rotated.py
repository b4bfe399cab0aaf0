"""``apply_rotated_box`` of the transforms: how each one moves rotated boxes.

Shape legend: N boxes; a rotated box is a row (xc, yc, w, h, angle) in absolute pixels, angle in
degrees counter-clockwise (``BoxMode.XYWHA_ABS``).

detectron2 registers these on fvcore's transforms (``HFlipTransform``, ``ResizeTransform``,
``NoOpTransform``); here each becomes the class's ``apply_rotated_box`` method when this module is
imported (the transforms package imports it). ``VFlipTransform``, ``CropTransform`` and
``TransformList`` get one too, since the rule for them is exact. Other transforms have none
(``Transform.apply_rotated_box`` raises, naming the transform). Every function returns a new
float64 array and leaves its input unchanged (detectron2's edit the array in place).
"""

from __future__ import annotations

import numpy as np

from .transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = ["hflip_rotated_box", "vflip_rotated_box", "resize_rotated_box", "crop_rotated_box"]


def _as_rotated(rotated_boxes) -> np.ndarray:
    boxes = np.array(rotated_boxes, dtype=np.float64).reshape(-1, 5) if np.size(rotated_boxes) \
        else np.zeros((0, 5))
    return boxes


def _unsupported(self: Transform, rotated_boxes) -> np.ndarray:
    raise NotImplementedError(f"{type(self).__name__} has no apply_rotated_box: how it moves "
                              "rotated boxes is not defined.")


def hflip_rotated_box(transform: HFlipTransform, rotated_boxes) -> np.ndarray:
    """Mirror left-right: xc -> width - xc, angle -> -angle."""
    boxes = _as_rotated(rotated_boxes)
    boxes[:, 0] = transform.width - boxes[:, 0]
    boxes[:, 4] = -boxes[:, 4]
    return boxes


def vflip_rotated_box(transform: VFlipTransform, rotated_boxes) -> np.ndarray:
    """Mirror top-bottom: yc -> height - yc, angle -> -angle."""
    boxes = _as_rotated(rotated_boxes)
    boxes[:, 1] = transform.height - boxes[:, 1]
    boxes[:, 4] = -boxes[:, 4]
    return boxes


def resize_rotated_box(transform: ResizeTransform, rotated_boxes) -> np.ndarray:
    """Scale by (new_w / w, new_h / h); with unequal factors the sheared box is approximated by a
    rectangle, with the formulas of ``RotatedBoxes.scale``."""
    boxes = _as_rotated(rotated_boxes)
    sx, sy = transform.new_w / transform.w, transform.new_h / transform.h
    theta = boxes[:, 4] * np.pi / 180.0
    c, s = np.cos(theta), np.sin(theta)
    boxes[:, 0] *= sx
    boxes[:, 1] *= sy
    boxes[:, 2] *= np.sqrt(np.square(sx * c) + np.square(sy * s))
    boxes[:, 3] *= np.sqrt(np.square(sx * s) + np.square(sy * c))
    boxes[:, 4] = np.arctan2(sx * s, sy * c) * 180 / np.pi
    return boxes


def crop_rotated_box(transform: CropTransform, rotated_boxes) -> np.ndarray:
    """Shift the centres by (-x0, -y0); boxes are not clipped (as ``RotatedBoxes.clip`` would not
    clip tilted ones either)."""
    boxes = _as_rotated(rotated_boxes)
    boxes[:, 0] -= transform.x0
    boxes[:, 1] -= transform.y0
    return boxes


def _list_rotated_box(transform: TransformList, rotated_boxes) -> np.ndarray:
    boxes = _as_rotated(rotated_boxes)
    for t in transform.transforms:
        boxes = t.apply_rotated_box(boxes)
    return boxes


Transform.apply_rotated_box = _unsupported
NoOpTransform.apply_rotated_box = lambda self, rotated_boxes: _as_rotated(rotated_boxes)
HFlipTransform.apply_rotated_box = hflip_rotated_box
VFlipTransform.apply_rotated_box = vflip_rotated_box
ResizeTransform.apply_rotated_box = resize_rotated_box
CropTransform.apply_rotated_box = crop_rotated_box
TransformList.apply_rotated_box = _list_rotated_box

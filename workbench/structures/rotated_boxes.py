"""Rotated boxes: the ``RotatedBoxes`` container and their pairwise IoU.

Shape legend:
    N, M: number of boxes in the first / second set.

A ``RotatedBoxes`` holds a float32 ``Tensor[N, 5]`` of rows (xc, yc, w, h, angle): the centre and
size in absolute pixels, the angle in degrees counter-clockwise (detectron2's ``XYWHA_ABS``).
Angle 0 is the upright box (w along x, h along y); a positive angle turns it counter-clockwise
on screen about its centre (y points down), a negative one clockwise. (5, 3, 4, 2, 90) and
(5, 3, 4, 2, -90) cover the same pixels (IoU 1) but are different boxes to ROI pooling, which
reads them in opposite directions. Any angle is accepted; [-180, 180) is the principal range
(:meth:`RotatedBoxes.normalize_angles`). Semantics follow detectron2
(``detectron2/structures/rotated_boxes.py``).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence, Tuple, Union

import numpy as np
import torch

from workbench.layers.rotated_boxes import pairwise_iou_rotated

from .boxes import Boxes

__all__ = ["RotatedBoxes", "pairwise_iou"]


class RotatedBoxes(Boxes):
    """A list of N rotated boxes stored as one float32 ``Tensor[N, 5]`` (xc, yc, w, h, angle).

    A subclass of :class:`Boxes` as in detectron2 (so ``isinstance(b, Boxes)`` holds), with every
    method redefined for the 5-column layout.

    Attributes:
        tensor: ``Tensor[N, 5]`` float32, rows (xc, yc, w, h, angle in degrees ccw).
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]):
        """
        Args:
            tensor: (N, 5) boxes; anything ``torch.as_tensor`` accepts. A tensor keeps its
                device; any empty input becomes shape (0, 5).

        Raises:
            ValueError: if the input is not empty and not of shape (N, 5).
        """
        if isinstance(tensor, torch.Tensor):
            t = tensor.to(torch.float32)
        else:
            t = torch.as_tensor(tensor, dtype=torch.float32)
        if t.numel() == 0:
            t = t.reshape((-1, 5))  # keeps the result tied to the input (tracing)
        if t.dim() != 2 or t.shape[-1] != 5:
            raise ValueError(f"Expected rotated boxes of shape (N, 5) as (xc, yc, w, h, angle), "
                             f"got {tuple(t.shape)}")
        self.tensor = t

    def clone(self) -> "RotatedBoxes":
        """A copy that does not share storage."""
        return RotatedBoxes(self.tensor.clone())

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "RotatedBoxes":
        """Move to ``device``; boxes stay float32."""
        return RotatedBoxes(self.tensor.to(device=device, non_blocking=non_blocking))

    def area(self) -> torch.Tensor:
        """Areas ``w * h``, shape (N,)."""
        return self.tensor[:, 2] * self.tensor[:, 3]

    def normalize_angles(self) -> None:
        """Bring every angle into [-180, 180) degrees (replaces ``self.tensor``)."""
        angle = (self.tensor[:, 4] + 180.0) % 360.0 - 180.0
        self.tensor = torch.cat((self.tensor[:, :4], angle[:, None]), dim=1)

    def clip(self, box_size: Tuple[int, int], clip_angle_threshold: float = 1.0) -> None:
        """Clip the nearly upright boxes to [0, width] x [0, height], in place.

        Angles are normalised first. Only boxes with ``|angle| <= clip_angle_threshold`` are
        clipped, as upright boxes; the others are left as they are (there is no single way to
        clip a tilted box, and ROIAlignRotated copes with boxes outside the image), as in
        detectron2's RRPN. Widths and heights never grow through rounding.

        Args:
            box_size: (height, width) of the clipping region.
            clip_angle_threshold: in degrees.
        """
        h, w = box_size
        self.normalize_angles()
        idx = torch.where(torch.abs(self.tensor[:, 4]) <= clip_angle_threshold)[0]
        t = self.tensor[idx]
        x1 = (t[:, 0] - t[:, 2] / 2.0).clamp(min=0, max=w)
        y1 = (t[:, 1] - t[:, 3] / 2.0).clamp(min=0, max=h)
        x2 = (t[:, 0] + t[:, 2] / 2.0).clamp(min=0, max=w)
        y2 = (t[:, 1] + t[:, 3] / 2.0).clamp(min=0, max=h)
        self.tensor[idx, 0] = (x1 + x2) / 2.0
        self.tensor[idx, 1] = (y1 + y2) / 2.0
        self.tensor[idx, 2] = torch.min(t[:, 2], x2 - x1)
        self.tensor[idx, 3] = torch.min(t[:, 3], y2 - y1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Bool mask (N,), True where both w and h are strictly above ``threshold``."""
        return (self.tensor[:, 2] > threshold) & (self.tensor[:, 3] > threshold)

    def __getitem__(self, item) -> "RotatedBoxes":
        """Select boxes (int, slice, bool mask or indices); always a 2-D ``RotatedBoxes``."""
        if isinstance(item, (int, np.integer)):
            return RotatedBoxes(self.tensor[item].view(1, -1))  # (5,) -> (1, 5)
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(f"Indexing RotatedBoxes with {item!r} gave a tensor of shape "
                             f"{tuple(b.shape)}, expected (n, 5)")
        return RotatedBoxes(b)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return "RotatedBoxes(" + str(self.tensor) + ")"

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Which boxes (their enclosing upright rectangles) lie inside [0, width] x [0, height].

        Args:
            box_size: (height, width) of the reference box.
            boundary_threshold: how far (pixels) a box may stick out and still count as inside.

        Returns:
            Bool mask (N,); right / bottom tests are strict, as for :class:`Boxes`.
        """
        height, width = box_size
        cx, cy = self.tensor[..., 0], self.tensor[..., 1]
        half_w, half_h = self.tensor[..., 2] / 2.0, self.tensor[..., 3] / 2.0
        theta = self.tensor[..., 4] * math.pi / 180.0
        c, s = torch.abs(torch.cos(theta)), torch.abs(torch.sin(theta))
        dx = c * half_w + s * half_h  # half extents of the enclosing upright rectangle
        dy = c * half_h + s * half_w
        return ((cx - dx >= -boundary_threshold) & (cy - dy >= -boundary_threshold)
                & (cx + dx < width + boundary_threshold) & (cy + dy < height + boundary_threshold))

    def get_centers(self) -> torch.Tensor:
        """Box centres, shape (N, 2), rows (x, y)."""
        return self.tensor[:, :2]

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Resize by (scale_x, scale_y) in place.

        With unequal factors a tilted rectangle becomes a parallelogram; as in detectron2 it is
        approximated by the rectangle whose side midpoints are the scaled side midpoints: the
        width is scaled by ``sqrt((sx cos)^2 + (sy sin)^2)``, the height by
        ``sqrt((sx sin)^2 + (sy cos)^2)`` and the angle becomes ``atan2(sx sin, sy cos)``.
        """
        self.tensor[:, 0] *= scale_x
        self.tensor[:, 1] *= scale_y
        theta = self.tensor[:, 4] * math.pi / 180.0
        c, s = torch.cos(theta), torch.sin(theta)
        self.tensor[:, 2] *= torch.sqrt((scale_x * c) ** 2 + (scale_y * s) ** 2)
        self.tensor[:, 3] *= torch.sqrt((scale_x * s) ** 2 + (scale_y * c) ** 2)
        self.tensor[:, 4] = torch.atan2(scale_x * s, scale_y * c) * 180 / math.pi

    @classmethod
    def cat(cls, boxes_list: Sequence["RotatedBoxes"]) -> "RotatedBoxes":
        """Concatenate; the result never shares storage. An empty list gives shape (0, 5)."""
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"RotatedBoxes.cat expects a list or tuple, got "
                            f"{type(boxes_list).__name__}")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        for i, b in enumerate(boxes_list):
            if not isinstance(b, RotatedBoxes):
                raise TypeError(f"RotatedBoxes.cat: element {i} is a {type(b).__name__}, "
                                "not RotatedBoxes")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each box as a (5,) tensor."""
        yield from self.tensor


def pairwise_iou(boxes1: RotatedBoxes, boxes2: RotatedBoxes) -> torch.Tensor:
    """IoU of every pair of rotated boxes (exported as ``pairwise_iou_rotated`` too).

    Args:
        boxes1: N boxes.
        boxes2: M boxes.

    Returns:
        Tensor (N, M), float32.
    """
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if not isinstance(b, RotatedBoxes):
            raise TypeError(f"pairwise_iou (rotated) expects {name} to be RotatedBoxes, got "
                            f"{type(b).__name__}.")
    return pairwise_iou_rotated(boxes1.tensor, boxes2.tensor)

"""Axis-aligned boxes: the ``BoxMode`` conversions, the ``Boxes`` container and pairwise box maths.

Shape legend:
    N, M: number of boxes in the first / second set.
    K:    coordinates per box, 4 (XYXY / XYWH) or 5 (XYWHA: centre, size, angle in degrees ccw).

Every ``Boxes`` holds a float32 ``Tensor[N, 4]`` in XYXY order (x0, y0, x1, y1), absolute pixel
coordinates, with the pixel grid convention of detectron2: a box covering pixel columns 0..9
entirely is (0, 0, 10, ...), so width = x1 - x0 with no "+1".
Semantics and method names follow detectron2 0.6 (``detectron2/structures/boxes.py``).
"""

from __future__ import annotations

import math
from enum import IntEnum, unique
from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "BoxMode",
    "Boxes",
    "pairwise_intersection",
    "pairwise_iou",
    "pairwise_ioa",
    "pairwise_point_box_distance",
    "matched_pairwise_iou",
]

RawBoxType = Union[List[float], Tuple[float, ...], torch.Tensor, np.ndarray]

_RELATIVE_MODES = (2, 3)  # XYXY_REL, XYWH_REL (the enum is not defined yet at this point)


@unique
class BoxMode(IntEnum):
    """The ways a box can be written down.

    ``XYXY_ABS``: (x0, y0, x1, y1), absolute pixels, the format of ``Boxes``.
    ``XYWH_ABS``: (x0, y0, w, h), absolute pixels, the COCO json format.
    ``XYXY_REL`` / ``XYWH_REL``: same in [0, 1] relative to the image; declared for
    compatibility only, :meth:`convert` refuses them (as detectron2 does).
    ``XYWHA_ABS``: (xc, yc, w, h, angle) of a rotated box, angle in degrees counter-clockwise.
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3
    XYWHA_ABS = 4

    @staticmethod
    def convert(box: RawBoxType, from_mode: "BoxMode", to_mode: "BoxMode") -> RawBoxType:
        """Convert one box or a batch of boxes between modes, keeping the container type.

        Supported conversions: XYXY_ABS <-> XYWH_ABS, XYWHA_ABS -> XYXY_ABS (the upright
        rectangle enclosing the rotated box) and XYWH_ABS -> XYWHA_ABS (angle 0).

        Args:
            box: a k-list / k-tuple (one box), or a ``np.ndarray`` / ``Tensor`` of shape (k,) or
                (N, k), k = 4 or 5. The input is never modified.
            from_mode: mode ``box`` is written in.
            to_mode: mode to return.

        Returns:
            The converted box(es), same type as ``box``; arrays and tensors keep their dtype and
            number of dimensions. A list / tuple goes through a default-dtype tensor, as in
            detectron2, so float coordinates come back rounded to float32.

        Raises:
            NotImplementedError: for relative modes or an unsupported pair of modes.
            ValueError: if the box does not have 4 or 5 coordinates.
        """
        if from_mode == to_mode:
            return box

        original_type = type(box)
        is_numpy = isinstance(box, np.ndarray)
        single_box = isinstance(box, (list, tuple))
        if single_box:
            if len(box) not in (4, 5):
                raise ValueError(
                    "BoxMode.convert takes a k-list/k-tuple or an (N, k) array/tensor with k = 4 "
                    f"or 5, got a {original_type.__name__} of length {len(box)}"
                )
            arr = torch.tensor(box)[None, :]  # (1, k)
        elif is_numpy:
            arr = torch.from_numpy(np.asarray(box)).clone()  # clone: never modify the input
        elif isinstance(box, torch.Tensor):
            arr = box.clone()
        else:
            raise TypeError(
                "BoxMode.convert expects a list, tuple, np.ndarray or Tensor, "
                f"got {original_type.__name__}"
            )

        one_dim = arr.dim() == 1  # a single box given as a (k,) array / tensor
        if one_dim:
            arr = arr[None, :]  # (k,) -> (1, k)
        if arr.dim() != 2 or arr.shape[-1] not in (4, 5):
            raise ValueError(
                f"Expected boxes of shape (k,) or (N, k) with k = 4 or 5, got {tuple(arr.shape)}"
            )

        if int(from_mode) in _RELATIVE_MODES or int(to_mode) in _RELATIVE_MODES:
            raise NotImplementedError(
                "Relative box modes (XYXY_REL, XYWH_REL) are not supported; "
                f"got from_mode={BoxMode(from_mode).name}, to_mode={BoxMode(to_mode).name}"
            )

        if from_mode == BoxMode.XYWHA_ABS and to_mode == BoxMode.XYXY_ABS:
            if arr.shape[-1] != 5:
                raise ValueError(
                    f"XYWHA_ABS boxes need 5 coordinates, got boxes of shape {tuple(arr.shape)}"
                )
            original_dtype = arr.dtype
            arr = arr.double()
            w, h, angle = arr[:, 2], arr[:, 3], arr[:, 4]
            c = torch.abs(torch.cos(angle * math.pi / 180.0))
            s = torch.abs(torch.sin(angle * math.pi / 180.0))
            # Size of the upright rectangle that encloses the rotated one.
            new_w = c * w + s * h
            new_h = c * h + s * w
            arr[:, 0] -= new_w / 2.0
            arr[:, 1] -= new_h / 2.0
            arr[:, 2] = arr[:, 0] + new_w
            arr[:, 3] = arr[:, 1] + new_h
            arr = arr[:, :4].to(dtype=original_dtype)  # (N, 5) -> (N, 4)
        elif from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYWHA_ABS:
            original_dtype = arr.dtype
            arr = arr.double()
            arr[:, 0] += arr[:, 2] / 2.0
            arr[:, 1] += arr[:, 3] / 2.0
            angles = torch.zeros((arr.shape[0], 1), dtype=arr.dtype, device=arr.device)
            arr = torch.cat((arr, angles), dim=1).to(dtype=original_dtype)  # (N, 4) -> (N, 5)
        elif from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYXY_ABS:
            arr[:, 2] += arr[:, 0]
            arr[:, 3] += arr[:, 1]
        elif from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWH_ABS:
            arr[:, 2] -= arr[:, 0]
            arr[:, 3] -= arr[:, 1]
        else:
            raise NotImplementedError(
                f"Conversion from BoxMode {BoxMode(from_mode).name} to "
                f"{BoxMode(to_mode).name} is not supported"
            )

        if single_box:
            return original_type(arr.flatten().tolist())
        if one_dim:
            arr = arr[0]  # (1, k) -> (k,)
        if is_numpy:
            return arr.numpy()
        return arr


class Boxes:
    """A list of N axis-aligned boxes stored as one float32 ``Tensor[N, 4]`` (XYXY, pixels).

    Behaves like a tensor where that is useful: indexing, ``len``, iteration over rows,
    ``to(device)`` and ``.device``. Results of indexing may share storage with the original,
    following PyTorch's indexing rules.

    Attributes:
        tensor: ``Tensor[N, 4]`` float32, rows (x0, y0, x1, y1).
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]):
        """
        Args:
            tensor: (N, 4) boxes in XYXY absolute coordinates; anything ``torch.as_tensor``
                accepts. A tensor keeps its device; any empty input becomes shape (0, 4).

        Raises:
            ValueError: if the input is not empty and not of shape (N, 4).
        """
        if isinstance(tensor, torch.Tensor):
            t = tensor.to(torch.float32)
        else:
            t = torch.as_tensor(tensor, dtype=torch.float32)
        if t.numel() == 0:
            # reshape (rather than a new tensor) keeps the result tied to the input, like
            # detectron2, which matters for tracing.
            t = t.reshape((-1, 4))
        if t.dim() != 2 or t.shape[-1] != 4:
            raise ValueError(f"Expected boxes of shape (N, 4), got {tuple(t.shape)}")
        self.tensor = t

    def clone(self) -> "Boxes":
        """A copy that does not share storage."""
        return Boxes(self.tensor.clone())

    def to(self, device: Union[str, torch.device]) -> "Boxes":
        """Move to ``device``. Boxes stay float32, so there is no dtype argument."""
        return Boxes(self.tensor.to(device=device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> torch.Tensor:
        """Areas ``(x1 - x0) * (y1 - y0)``, shape (N,). Inverted boxes give negative areas."""
        box = self.tensor
        return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])

    def clip(self, box_size: Tuple[int, int]) -> None:
        """Clamp x to [0, width] and y to [0, height]; replaces ``self.tensor``.

        Args:
            box_size: (height, width) of the clipping region, usually the image.

        Raises:
            ValueError: if any coordinate is NaN or infinite (clipping would hide the bug).
        """
        if not torch.isfinite(self.tensor).all():
            raise ValueError("Box tensor contains infinite or NaN values; cannot clip")
        h, w = box_size
        x0 = self.tensor[:, 0].clamp(min=0, max=w)
        y0 = self.tensor[:, 1].clamp(min=0, max=h)
        x1 = self.tensor[:, 2].clamp(min=0, max=w)
        y1 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x0, y0, x1, y1), dim=-1)  # 4 x (N,) -> (N, 4)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Bool mask (N,), True where both width and height are strictly above ``threshold``."""
        box = self.tensor
        widths = box[:, 2] - box[:, 0]
        heights = box[:, 3] - box[:, 1]
        return (widths > threshold) & (heights > threshold)

    def __getitem__(self, item: Union[int, slice, torch.Tensor, Sequence[int]]) -> "Boxes":
        """Select boxes; the result is always a ``Boxes`` with a 2-D tensor.

        Args:
            item: an int (gives one box), a slice, a bool mask of length N, or integer indices.

        Raises:
            IndexError: if the indexing does not produce an (n, 4) matrix.
        """
        if isinstance(item, (int, np.integer)):
            return Boxes(self.tensor[item].view(1, -1))  # (4,) -> (1, 4)
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(
                f"Indexing Boxes with {item!r} gave a tensor of shape {tuple(b.shape)}, "
                "expected (n, 4)"
            )
        return Boxes(b)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return "Boxes(" + str(self.tensor) + ")"

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Which boxes lie inside a reference box anchored at the origin.

        Args:
            box_size: (height, width) of the reference box.
            boundary_threshold: how far (pixels) a box may stick out and still count as inside.

        Returns:
            Bool mask (N,). The right / bottom tests are strict (``x1 < width + threshold``),
            as in detectron2.
        """
        height, width = box_size
        return (
            (self.tensor[..., 0] >= -boundary_threshold)
            & (self.tensor[..., 1] >= -boundary_threshold)
            & (self.tensor[..., 2] < width + boundary_threshold)
            & (self.tensor[..., 3] < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Box centres, shape (N, 2), rows (x, y)."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Multiply x coordinates by ``scale_x`` and y by ``scale_y``, in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    def cat(cls, boxes_list: Sequence["Boxes"]) -> "Boxes":
        """Concatenate; the result never shares storage with the inputs.

        An empty list gives an empty ``Boxes`` of shape (0, 4) on the default device.
        """
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"Boxes.cat expects a list or tuple, got {type(boxes_list).__name__}")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        for i, b in enumerate(boxes_list):
            if not isinstance(b, Boxes):
                raise TypeError(f"Boxes.cat: element {i} is a {type(b).__name__}, not Boxes")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each box as a (4,) tensor."""
        yield from self.tensor


def _check_upright(fn: str, boxes1: Boxes, boxes2: Boxes) -> None:
    """Refuse RotatedBoxes (a Boxes subclass) in the upright-box functions."""
    from .rotated_boxes import RotatedBoxes

    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if isinstance(b, RotatedBoxes):
            raise TypeError(f"{fn} takes upright Boxes, but {name} is RotatedBoxes: use "
                            "workbench.structures.pairwise_iou_rotated for rotated boxes.")


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection areas between every pair of boxes.

    Args:
        boxes1: N boxes.
        boxes2: M boxes.

    Returns:
        Tensor (N, M); 0 where boxes do not overlap.
    """
    _check_upright("pairwise_intersection", boxes1, boxes2)
    b1, b2 = boxes1.tensor, boxes2.tensor
    # (N, 1, 2) against (M, 2) -> (N, M, 2) widths and heights of the overlaps
    width_height = torch.min(b1[:, None, 2:], b2[:, 2:]) - torch.max(b1[:, None, :2], b2[:, :2])
    width_height.clamp_(min=0)
    return width_height.prod(dim=2)  # (N, M, 2) -> (N, M)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over union between every pair of boxes.

    Args:
        boxes1: N boxes.
        boxes2: M boxes.

    Returns:
        Tensor (N, M). Pairs with no intersection are exactly 0, which also keeps degenerate
        (zero-area) boxes from producing 0 / 0.
    """
    _check_upright("pairwise_iou", boxes1, boxes2)
    area1 = boxes1.area()  # (N,)
    area2 = boxes2.area()  # (M,)
    inter = pairwise_intersection(boxes1, boxes2)  # (N, M)
    return torch.where(
        inter > 0,
        inter / (area1[:, None] + area2 - inter),
        torch.zeros(1, dtype=inter.dtype, device=inter.device),
    )


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over the area of the *second* box, for every pair.

    Args:
        boxes1: N boxes.
        boxes2: M boxes; their areas are the denominators.

    Returns:
        Tensor (N, M), 0 where boxes do not intersect.
    """
    _check_upright("pairwise_ioa", boxes1, boxes2)
    area2 = boxes2.area()  # (M,)
    inter = pairwise_intersection(boxes1, boxes2)  # (N, M)
    return torch.where(
        inter > 0, inter / area2, torch.zeros(1, dtype=inter.dtype, device=inter.device)
    )


def pairwise_point_box_distance(points: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Signed distances from every point to the four edges of every box.

    Args:
        points: Tensor (N, 2), rows (x, y).
        boxes: M boxes.

    Returns:
        Tensor (N, M, 4): distances to the left, top, right and bottom edges. All four are
        positive exactly when the point is strictly inside the box (as used by FCOS targets).
    """
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"Expected points of shape (N, 2), got {tuple(points.shape)}")
    x, y = points.unsqueeze(dim=2).unbind(dim=1)  # (N, 2) -> 2 x (N, 1)
    x0, y0, x1, y1 = boxes.tensor.unsqueeze(dim=0).unbind(dim=2)  # (M, 4) -> 4 x (1, M)
    return torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # 4 x (N, M) -> (N, M, 4)


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of box i in ``boxes1`` with box i in ``boxes2`` (the diagonal of ``pairwise_iou``).

    Unlike :func:`pairwise_iou` this does not special-case empty intersections, so two
    zero-area boxes give NaN, as in detectron2.

    Args:
        boxes1: N boxes.
        boxes2: N boxes.

    Returns:
        Tensor (N,).
    """
    _check_upright("matched_pairwise_iou", boxes1, boxes2)
    if len(boxes1) != len(boxes2):
        raise ValueError(
            "matched_pairwise_iou needs the same number of boxes on both sides, "
            f"got {len(boxes1)} and {len(boxes2)}"
        )
    area1 = boxes1.area()  # (N,)
    area2 = boxes2.area()  # (N,)
    b1, b2 = boxes1.tensor, boxes2.tensor
    lt = torch.max(b1[:, :2], b2[:, :2])  # (N, 2)
    rb = torch.min(b1[:, 2:], b2[:, 2:])  # (N, 2)
    wh = (rb - lt).clamp(min=0)  # (N, 2)
    inter = wh[:, 0] * wh[:, 1]  # (N,)
    return inter / (area1 + area2 - inter)

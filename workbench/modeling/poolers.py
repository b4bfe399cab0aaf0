"""Crop fixed-size feature maps for boxes out of one feature map or a feature pyramid.

Shapes used below:
    N        images in the batch
    L        feature levels given to the pooler (one per scale)
    C        channels, the same on every level
    Hl, Wl   height and width of level l
    R        boxes of all images, concatenated image after image (Ri in image i)
    P        pooled side, ``output_size`` (P x P; a (Ph, Pw) pair is accepted too)

Boxes are XYXY in absolute pixels of the (padded) input image; each level's op multiplies them by
its scale (1 / stride). With several levels, each box is pooled from the single level its size
picks, following Eqn. (1) of the FPN paper (Lin et al. 2017)::

    level = floor(canonical_level + log2(sqrt(box area) / canonical_box_size))

clamped to the levels present, so a 224 x 224 box is pooled from stride 16 by default.
"""

from __future__ import annotations

import math
import sys
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torchvision.ops import RoIPool

from workbench.layers import ROIAlign, ROIAlignRotated, cat, nonzero_tuple
from workbench.structures import Boxes
from workbench.utils import perf

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"]


def assign_boxes_to_levels(
    box_lists: List[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> torch.Tensor:
    """Pick the pyramid level each box is pooled from.

    Args:
        box_lists: N Boxes, one per image.
        min_level: level of the first (finest) feature map, as log2 of its stride (P2 -> 2).
        max_level: level of the last (coarsest) feature map.
        canonical_box_size: box side sqrt(area), in pixels, that maps to ``canonical_level``.
        canonical_level: level a canonically sized box is pooled from.

    Returns:
        Tensor[R] of int64: the level of each box, as an offset from ``min_level`` (0 means the
        first feature map), in the order of the concatenated boxes.
    """
    # detectron2 adds the machine epsilon of a Python float (2.2e-16), which keeps log2 finite
    # for zero-area boxes; kept identical so that the floor() lands on the same level.
    eps = sys.float_info.epsilon
    box_sizes = torch.sqrt(cat([boxes.area() for boxes in box_lists]))  # (R,)
    level_assignments = torch.floor(
        canonical_level + torch.log2(box_sizes / canonical_box_size + eps)
    )
    # Boxes too small or too large for the levels present go to the nearest one.
    level_assignments = torch.clamp(level_assignments, min=min_level, max=max_level)
    return level_assignments.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: List[Boxes]) -> torch.Tensor:
    """Concatenate per-image boxes into the (R, 5) layout that ROI ops take.

    Returns:
        Tensor[R, 5]: rows (batch index, x0, y0, x1, y1), image 0's boxes first.
    """
    rows = []
    for batch_index, boxes in enumerate(box_lists):
        box_tensor = boxes.tensor  # (Ri, 4)
        index_column = torch.full(
            (box_tensor.shape[0], 1), batch_index, dtype=box_tensor.dtype,
            device=box_tensor.device,
        )
        rows.append(torch.cat([index_column, box_tensor], dim=1))  # (Ri, 5)
    return cat(rows, dim=0)


class ROIPooler(nn.Module):
    """Pool a P x P feature map for every box, from one feature map or from a pyramid.

    Args:
        output_size: P, or (Ph, Pw).
        scales: 1 / stride of each feature map, finest first. Strides must be powers of 2 and,
            when there are several, consecutive (a pyramid with factor 2 between levels).
        sampling_ratio: samples per bin along each axis for the ROIAlign ops (0: adaptive).
            Ignored by "ROIPool".
        pooler_type: "ROIAlign" (the original Mask R-CNN op, no half-pixel shift),
            "ROIAlignV2" (``aligned=True``), "ROIPool" (max pooling, quantised bins) or
            "ROIAlignRotated" (``RotatedBoxes``, see ``workbench.layers.ROIAlignRotated``).
        canonical_box_size: box side sqrt(area), in pixels, pooled from ``canonical_level``;
            224 (the ImageNet crop) in the FPN paper.
        canonical_level: level (log2 stride) a canonically sized box is pooled from; 4
            (stride 16) in the FPN paper. A box with 4x that area goes one level up.
    """

    def __init__(
        self,
        output_size: Union[int, Tuple[int, int], List[int]],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        output_size = tuple(output_size)
        if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size):
            raise ValueError(
                f"ROIPooler expects output_size to be an int or a pair of ints, got {output_size}."
            )
        self.output_size = output_size
        scales = list(scales)
        if not scales:
            raise ValueError("ROIPooler needs at least one scale, got an empty list.")

        if pooler_type == "ROIAlign":
            poolers = [ROIAlign(output_size, spatial_scale=s, sampling_ratio=sampling_ratio,
                                aligned=False) for s in scales]
        elif pooler_type == "ROIAlignV2":
            poolers = [ROIAlign(output_size, spatial_scale=s, sampling_ratio=sampling_ratio,
                                aligned=True) for s in scales]
        elif pooler_type == "ROIPool":
            poolers = [RoIPool(output_size, spatial_scale=s) for s in scales]
        elif pooler_type == "ROIAlignRotated":
            # Rotated boxes (RotatedBoxes): rows (batch index, xc, yc, w, h, angle).
            poolers = [ROIAlignRotated(output_size, spatial_scale=s, sampling_ratio=sampling_ratio)
                       for s in scales]
        else:
            raise ValueError(
                f"Unknown pooler_type {pooler_type!r}; expected 'ROIAlign', 'ROIAlignV2', "
                "'ROIPool' or 'ROIAlignRotated'."
            )
        self.pooler_type = pooler_type
        self.level_poolers = nn.ModuleList(poolers)

        # Level = log2(stride); scales are 1 / stride.
        min_level = -math.log2(scales[0])
        max_level = -math.log2(scales[-1])
        if not (math.isclose(min_level, round(min_level)) and
                math.isclose(max_level, round(max_level))):
            raise ValueError(f"ROIPooler expects feature strides that are powers of 2, got "
                             f"scales {scales}.")
        self.min_level = int(round(min_level))
        self.max_level = int(round(max_level))
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError(f"ROIPooler scales {scales} do not form a pyramid with one level per "
                             "power of 2.")
        if not 0 <= self.min_level <= self.max_level:
            raise ValueError(f"ROIPooler expects scales <= 1 ordered finest first, got {scales}.")
        if canonical_box_size <= 0:
            raise ValueError(f"canonical_box_size must be positive, got {canonical_box_size}.")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """Pool every box from its level.

        Args:
            x: L feature maps (N, C, Hl, Wl), in the order of ``scales``.
            box_lists: N Boxes, one per image, in input-image pixels.

        Returns:
            Tensor[R, C, Ph, Pw]: row r is the r-th box of the concatenation of ``box_lists``.
        """
        num_levels = len(self.level_poolers)
        if not isinstance(x, list) or not isinstance(box_lists, list):
            raise TypeError(f"ROIPooler expects lists of feature maps and of Boxes, got "
                            f"{type(x).__name__} and {type(box_lists).__name__}.")
        if len(x) != num_levels:
            raise ValueError(f"ROIPooler was built for {num_levels} feature maps, got {len(x)}.")
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"ROIPooler got {len(box_lists)} Boxes for a batch of "
                             f"{x[0].size(0)} images (feature map of shape {tuple(x[0].shape)}).")

        num_channels = x[0].shape[1]
        if len(box_lists) == 0:
            return x[0].new_zeros((0, num_channels) + self.output_size)

        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)  # (R, 5); (R, 6) rotated
        want = 6 if self.pooler_type == "ROIAlignRotated" else 5
        if pooler_fmt_boxes.shape[1] != want:
            raise ValueError(f"ROIPooler({self.pooler_type!r}) needs boxes of {want - 1} columns "
                             f"({'RotatedBoxes' if want == 6 else 'Boxes'}), got "
                             f"{pooler_fmt_boxes.shape[1] - 1}.")
        fast = perf.get_inference_options().fast_pooler and not (
            torch.is_grad_enabled() and any(t.requires_grad for t in x))
        if num_levels == 1:
            if fast:
                return _pool_in_threads(self.level_poolers[0], x[0], pooler_fmt_boxes)
            return self.level_poolers[0](x[0], pooler_fmt_boxes)

        level_assignments = self.level_of(box_lists)  # (R,)
        if fast:
            output = self._pool_levels_into(x, pooler_fmt_boxes, level_assignments)
            if output is not None:
                return output
        output = x[0].new_zeros((len(pooler_fmt_boxes), num_channels) + self.output_size)
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(level_assignments == level)[0]
            # Scatter back so that the output keeps the order of the boxes.
            output[inds] = pooler(x[level], pooler_fmt_boxes[inds])
        return output

    def level_of(self, box_lists: List[Boxes]) -> Optional[torch.Tensor]:
        """(R,) index of the feature map each box is pooled from; None with one map."""
        if len(self.level_poolers) == 1:
            return None
        if sum(len(b) for b in box_lists) == 0:
            device = box_lists[0].tensor.device if box_lists else None
            return torch.zeros(0, dtype=torch.int64, device=device)
        return assign_boxes_to_levels(box_lists, self.min_level, self.max_level,
                                      self.canonical_box_size, self.canonical_level)

    def _pool_levels_into(self, x: List[torch.Tensor], pooler_fmt_boxes: torch.Tensor,
                          level_assignments: torch.Tensor) -> Optional[torch.Tensor]:
        """``forward``'s multi-level pooling without autograd (``perf`` switch ``fast_pooler``).

        One stable sort of the level ids groups every level's boxes (in their original order);
        each level's pooled block is copied once into an uninitialised output with
        ``index_copy_``, instead of a zero-filled output written by masked scatter, and each
        level's boxes are pooled by several threads (see :func:`_pool_in_threads`). Returns None
        (use the general path) if some box has no level (a NaN box size).
        """
        num_levels = len(self.level_poolers)
        num_boxes = len(pooler_fmt_boxes)
        # Boxes per level, with the out-of-range ones counted in two extra bins (first, last):
        # one read of the device for both the check and the counts.
        counts = torch.bincount(level_assignments.clamp(-1, num_levels) + 1,
                                minlength=num_levels + 2).tolist()
        if counts[0] or counts[-1]:
            return None
        counts = counts[1:-1]
        order = torch.sort(level_assignments, stable=True).indices
        output = x[0].new_empty((num_boxes, x[0].shape[1]) + self.output_size)
        start = 0
        for level, pooler in enumerate(self.level_poolers):
            n = counts[level]
            if n == 0:
                continue
            inds = order[start:start + n]
            start += n
            output.index_copy_(0, inds, _pool_in_threads(pooler, x[level], pooler_fmt_boxes[inds]))
        return output

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, levels={self.min_level}..{self.max_level}, "
                f"canonical_box_size={self.canonical_box_size}, "
                f"canonical_level={self.canonical_level}")


# -- pooling many boxes on several threads ----------------------------------------------------

# torchvision's CPU roi_align / roi_pool kernels run on one thread whatever
# torch.get_num_threads() says; every box is computed on its own, so splitting the boxes over
# threads gives the same numbers. Fewer boxes than this per thread are not worth a thread.
_MIN_BOXES_PER_THREAD = 32


def _pool_in_threads(pooler: nn.Module, feature: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``pooler(feature, boxes)``, with the boxes split over ``torch.get_num_threads()`` threads
    when ``perf``'s ``threaded_box_ops`` is on. CPU only; the callers ensure no autograd."""
    workers = min(torch.get_num_threads(), len(boxes) // _MIN_BOXES_PER_THREAD)
    if workers < 2 or feature.device.type != "cpu" or not perf.get_inference_options().threaded_box_ops:
        return pooler(feature, boxes)
    return torch.cat(perf.map_in_threads(lambda b: pooler(feature, b), boxes.chunk(workers)), dim=0)

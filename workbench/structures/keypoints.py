"""Keypoint annotations and the heatmap <-> coordinate conversions of Keypoint R-CNN.

Shape legend:
    N: number of instances (or ROIs).
    K: keypoints per instance (17 for COCO people).
    S: side of the square training heatmap (``heatmap_size``, 56 in Keypoint R-CNN).
    Hm, Wm: predicted heatmap size (the keypoint head's output, usually 56 x 56).

Coordinates are continuous image pixels. Discrete heatmap cells and continuous positions are
related as in Heckbert 1990 ("What is the coordinate of a pixel?"): cell d covers [d, d + 1)
so d = floor(c) and the cell centre is c = d + 0.5. Semantics follow detectron2 0.6
(``detectron2/structures/keypoints.py``).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

from workbench.utils import perf

from .boxes import Boxes

__all__ = ["Keypoints", "heatmaps_to_keypoints"]


class Keypoints:
    """Keypoint annotations of N instances: (x, y, visibility) per keypoint.

    Visibility follows COCO: 0 = not labelled (x = y = 0), 1 = labelled but occluded,
    2 = labelled and visible. Only v > 0 produce training targets.

    Attributes:
        tensor: (N, K, 3) float32.
    """

    def __init__(self, keypoints: Union[torch.Tensor, np.ndarray, List[List[List[float]]]]):
        """
        Args:
            keypoints: (N, K, 3) values, anything ``torch.as_tensor`` accepts. A tensor keeps
                its device.

        Raises:
            ValueError: if the shape is not (N, K, 3).
        """
        t = torch.as_tensor(keypoints, dtype=torch.float32)
        if t.dim() != 3 or t.shape[2] != 3:
            raise ValueError(f"Expected keypoints of shape (N, K, 3), got {tuple(t.shape)}")
        self.tensor = t

    def __len__(self) -> int:
        return self.tensor.size(0)

    def to(self, *args: Any, **kwargs: Any) -> "Keypoints":
        """Apply ``Tensor.to``; the result is cast back to float32 by the constructor, as in
        detectron2, so only the device effectively changes."""
        return type(self)(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to_heatmap(
        self, boxes: Union[Boxes, torch.Tensor], heatmap_size: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One-hot training targets: the heatmap cell of each keypoint inside its box.

        Args:
            boxes: N boxes (``Boxes`` or (N, 4) tensor), XYXY, one per instance.
            heatmap_size: S.

        Returns:
            (heatmaps, valid), both (N, K) int64; see :func:`_keypoints_to_heatmap`.
        """
        rois = boxes.tensor if isinstance(boxes, Boxes) else boxes
        return _keypoints_to_heatmap(self.tensor, rois, heatmap_size)

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Keypoints":
        """Select instances by int (gives one instance), slice, bool mask or integer indices.

        The result may share storage with this object.
        """
        if isinstance(item, (int, np.integer)):
            return Keypoints(self.tensor[item].unsqueeze(0))  # (K, 3) -> (1, K, 3)
        return Keypoints(self.tensor[item])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_instances={len(self.tensor)})"

    @staticmethod
    def cat(keypoints_list: Sequence["Keypoints"]) -> "Keypoints":
        """Concatenate along N; all inputs must have the same K.

        Raises:
            ValueError: for an empty list.
            TypeError: for a non-Keypoints element.
        """
        if not isinstance(keypoints_list, (list, tuple)) or len(keypoints_list) == 0:
            raise ValueError("Keypoints.cat needs a non-empty list of Keypoints")
        for i, k in enumerate(keypoints_list):
            if not isinstance(k, Keypoints):
                raise TypeError(f"Keypoints.cat: element {i} is a {type(k).__name__}")
        return type(keypoints_list[0])(torch.cat([k.tensor for k in keypoints_list], dim=0))


def _keypoints_to_heatmap(
    keypoints: torch.Tensor, rois: torch.Tensor, heatmap_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encode keypoints as cell indices of an S x S heatmap over each ROI.

    The half-open box [x0, x1) is divided into S cells and a keypoint goes to cell
    ``floor((x - x0) * S / (x1 - x0))``. A keypoint exactly on the right (bottom) edge would
    land in cell S; it is put in the last cell S - 1 instead, so the box behaves as closed.

    Args:
        keypoints: (N, K, 3) keypoints (x, y, v) in image pixels.
        rois: (N, 4) boxes, XYXY.
        heatmap_size: S.

    Returns:
        heatmaps: (N, K) int64, the flat cell index ``y * S + x`` in [0, S * S - 1], and 0
            where not valid.
        valid: (N, K) int64, 1 where the keypoint is labelled (v > 0) and falls inside the
            ROI.
        With no ROIs, both are empty 1-D tensors, as in detectron2.
    """
    if rois.numel() == 0:
        return rois.new_zeros(0, dtype=torch.long), rois.new_zeros(0, dtype=torch.long)
    if rois.dim() != 2 or rois.shape[1] != 4:
        raise ValueError(f"Expected rois of shape (N, 4), got {tuple(rois.shape)}")
    if keypoints.dim() != 3 or keypoints.shape[0] != rois.shape[0] or keypoints.shape[2] != 3:
        raise ValueError(
            f"Expected keypoints of shape ({rois.shape[0]}, K, 3) to match rois "
            f"{tuple(rois.shape)}, got {tuple(keypoints.shape)}"
        )
    offset_x = rois[:, 0][:, None]  # (N, 1)
    offset_y = rois[:, 1][:, None]  # (N, 1)
    scale_x = (heatmap_size / (rois[:, 2] - rois[:, 0]))[:, None]  # (N, 1)
    scale_y = (heatmap_size / (rois[:, 3] - rois[:, 1]))[:, None]  # (N, 1)

    x = keypoints[..., 0]  # (N, K)
    y = keypoints[..., 1]  # (N, K)

    # Compared before any arithmetic, with the raw coordinates, exactly like detectron2.
    x_boundary_inds = x == rois[:, 2][:, None]
    y_boundary_inds = y == rois[:, 3][:, None]

    x = ((x - offset_x) * scale_x).floor().long()
    y = ((y - offset_y) * scale_y).floor().long()

    x[x_boundary_inds] = heatmap_size - 1
    y[y_boundary_inds] = heatmap_size - 1

    valid_loc = (x >= 0) & (y >= 0) & (x < heatmap_size) & (y < heatmap_size)
    vis = keypoints[..., 2] > 0
    valid = (valid_loc & vis).long()

    lin_ind = y * heatmap_size + x
    heatmaps = lin_ind * valid
    return heatmaps, valid


def heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Decode predicted heatmaps into keypoint positions and scores.

    For each ROI, the K heatmaps are resized with bicubic interpolation
    (``align_corners=False``) to (ceil(h), ceil(w)) of the box, the box sides clamped to >= 1
    pixel. The arg-max cell (row-major, first on ties) gives the position, its centre
    (+0.5) scaled back by ``side / ceil(side)`` and offset by the box corner.

    Args:
        maps: (N, K, Hm, Wm) heatmap logits. Not differentiated through (detached).
        rois: (N, 4) boxes, XYXY image pixels.

    Returns:
        (N, K, 4): (x, y, logit, score). ``logit`` is the resized heatmap value at the
        maximum; ``score`` is ``exp(logit - max) / sum(exp(maps - max))`` where the sum runs
        over the *unresized* Hm x Wm map, so scores of small and large boxes are comparable
        (this is a softmax value only up to that normalisation). Keypoint R-CNN inference keeps
        channels [0, 1, 3].
    """
    maps = maps.detach()
    rois = rois.detach()
    if maps.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 4 or len(maps) != len(rois):
        raise ValueError(
            "Expected maps of shape (N, K, Hm, Wm) and rois of shape (N, 4), got "
            f"{tuple(maps.shape)} and {tuple(rois.shape)}"
        )

    if perf.get_inference_options().fast_keypoints:
        return _decode_heatmaps_fast(maps, rois)
    return _decode_heatmaps(maps, rois)


def _decode_heatmaps(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """The general decoder: a softmax over each resized map, read at its arg-max."""
    offset_x = rois[:, 0]
    offset_y = rois[:, 1]

    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil = widths.ceil()
    heights_ceil = heights.ceil()

    num_rois, num_keypoints = maps.shape[:2]
    xy_preds = maps.new_zeros(rois.shape[0], num_keypoints, 4)

    # The resized map has ceil(side) cells for a side of `side` pixels.
    width_corrections = widths / widths_ceil
    height_corrections = heights / heights_ceil

    keypoints_idx = torch.arange(num_keypoints, device=maps.device)

    for i in range(num_rois):
        outsize = (int(heights_ceil[i]), int(widths_ceil[i]))
        roi_map = F.interpolate(maps[[i]], size=outsize, mode="bicubic", align_corners=False)
        roi_map = roi_map.reshape(roi_map.shape[1:])  # (1, K, h, w) -> (K, h, w)

        # Spatial "softmax", normalised over the original-resolution map.
        max_score, _ = roi_map.view(num_keypoints, -1).max(1)  # (K,)
        max_score = max_score.view(num_keypoints, 1, 1)
        tmp_full_resolution = (roi_map - max_score).exp_()  # (K, h, w)
        tmp_pool_resolution = (maps[i] - max_score).exp_()  # (K, Hm, Wm)
        roi_map_scores = tmp_full_resolution / tmp_pool_resolution.sum((1, 2), keepdim=True)

        w = roi_map.shape[2]
        pos = roi_map.view(num_keypoints, -1).argmax(1)  # (K,) flat index into h * w
        x_int = pos % w
        y_int = (pos - x_int) // w

        x = (x_int.float() + 0.5) * width_corrections[i]
        y = (y_int.float() + 0.5) * height_corrections[i]

        xy_preds[i, :, 0] = x + offset_x[i]
        xy_preds[i, :, 1] = y + offset_y[i]
        xy_preds[i, :, 2] = roi_map[keypoints_idx, y_int, x_int]
        xy_preds[i, :, 3] = roi_map_scores[keypoints_idx, y_int, x_int]

    return xy_preds


def _decode_heatmaps_fast(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """:func:`_decode_heatmaps`, bit for bit, with less work (``perf`` switch ``fast_keypoints``).

    The per-ROI bicubic resize stays (each box has its own size, and the arg-max must be that
    of the resized map). What goes: the softmax over the full-resolution map. At the arg-max
    the resized value *is* the maximum, so its numerator is exp(0) = 1 and the score is
    ``1 / sum(exp(maps - max))`` over the unresized map (the same sum, per ROI); the logit
    channel is the maximum itself. The maximum and its first index come from one ``max``;
    positions are computed for all ROIs at once after the loop.
    """
    num_rois, num_keypoints = maps.shape[:2]
    if num_rois == 0:
        return maps.new_zeros(0, num_keypoints, 4)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil = widths.ceil()
    heights_ceil = heights.ceil()
    sizes_t = torch.stack([heights_ceil, widths_ceil], dim=1).to(torch.int64)  # (R, 2)
    sizes = sizes_t.tolist()  # the resize sizes must be host ints: the one sync of the decoder
    max_scores, positions, denominators = [], [], []
    for i, (h, w) in enumerate(sizes):
        # (1, K, Hm, Wm) -> (1, K, h, w) -> (K, h * w)
        roi_map = F.interpolate(maps[i:i + 1], size=(h, w), mode="bicubic", align_corners=False)
        value, pos = roi_map.view(num_keypoints, -1).max(1)  # (K,), (K,): first maximum
        # Softmax normaliser over the unresized map: (K,)
        denominators.append((maps[i] - value.view(num_keypoints, 1, 1)).exp_().sum((1, 2)))
        max_scores.append(value)
        positions.append(pos)
    pos = torch.stack(positions)  # (R, K)
    w = sizes_t[:, 1:2]  # (R, 1): each resized map's width, already on the device
    x_int = pos % w
    y_int = (pos - x_int) // w
    xy_preds = maps.new_empty(num_rois, num_keypoints, 4)
    xy_preds[:, :, 0] = (x_int.float() + 0.5) * (widths / widths_ceil)[:, None] + rois[:, 0:1]
    xy_preds[:, :, 1] = (y_int.float() + 0.5) * (heights / heights_ceil)[:, None] + rois[:, 1:2]
    xy_preds[:, :, 2] = torch.stack(max_scores)
    xy_preds[:, :, 3] = 1.0 / torch.stack(denominators)
    return xy_preds

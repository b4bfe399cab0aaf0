"""Mask helpers of the visualiser: colour modes, mask inputs in any form, connected components.

``ColorMode`` picks how :class:`~.visualizer.Visualizer` colours instances (detectron2's
``instance_mode``). :func:`masks_to_array` turns what detectron2 accepts as instance masks
(arrays, ``BitMasks``, ``PolygonMasks``, per-instance polygon lists, RLE dicts) into one (n, H, W)
bool array. :func:`connected_components` labels a mask's 8-connected parts without OpenCV.

Shape legend: H x W the image; n instances.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, List, Optional, Tuple

import numpy as np

from . import colors as C
from .inputs import _decode_segmentation, _np

__all__ = ["ColorMode", "binary_mask_overlay", "check_mask", "connected_components",
           "grayscale_outside", "mask_color", "mask_texts", "masks_to_array",
           "soft_mask_overlay", "text_anchors"]

# detectron2 also labels every connected component larger than this (pixels) of a mask.
LARGE_MASK_AREA_THRESH = 120000


class ColorMode(Enum):
    """How instances are coloured (``Visualizer(..., instance_mode=...)``)."""

    IMAGE = 0
    """One colour per instance (per class here), masks drawn with low opacity (0.5)."""
    SEGMENTATION = 1
    """Instances of one class share ``metadata.thing_colors``, with high opacity (0.8), to draw
    attention to the quality of the segmentation."""
    IMAGE_BW = 2
    """As ``IMAGE`` (opacity 0.3), with everything outside the instance masks turned grey. Only
    used for instance predictions (and panoptic segments)."""


def _is_polygon_list(x: Any) -> bool:
    """One instance given as polygons: a list / tuple of flat coordinate sequences."""
    if not isinstance(x, (list, tuple)):
        return False
    return all(np.ndim(p) >= 1 and not isinstance(p, (str, dict)) for p in x)


def _polygons_to_mask(polygons: List[Any], height: int, width: int) -> np.ndarray:
    # detectron2's GenericMask: coordinates flattened, polygons of fewer than 3 points dropped.
    flat = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polygons]
    flat = [p for p in flat if len(p) >= 6]
    return _decode_segmentation([p.tolist() for p in flat], height, width)


def masks_to_array(masks: Any, height: int, width: int) -> Optional[np.ndarray]:
    """Instance masks as an (n, H, W) bool array.

    Args:
        masks: an (n, H, W) array or tensor, ``BitMasks``, ``PolygonMasks``, or a list with one
            entry per instance: an (H, W) array, a list of polygons (each a flat
            ``[x0, y0, x1, y1, ...]`` list or an (N, 2) array) or a COCO RLE dict.
        height, width: the image size, for polygons and RLE.

    Raises:
        ValueError: an entry that is none of these, or an array of another size; the message
            names the instance.
    """
    if masks is None:
        return None
    if hasattr(masks, "polygons"):  # PolygonMasks
        masks = masks.polygons
    if not isinstance(masks, (list, tuple)):
        arr = _np(masks)
        if arr.ndim != 3:
            raise ValueError(f"Expected instance masks of shape (n, H, W), got {arr.shape}.")
        return arr > 0.5 if arr.dtype != bool else arr
    out = np.zeros((len(masks), height, width), dtype=bool)
    for i, m in enumerate(masks):
        if isinstance(m, dict) or _is_polygon_list(m):
            out[i] = _polygons_to_mask(m, height, width) if not isinstance(m, dict) else \
                _decode_segmentation(m, height, width)
            continue
        arr = _np(m)
        if arr is None or arr.shape != (height, width):
            shape = None if arr is None else arr.shape
            raise ValueError(
                f"Instance mask {i}: expected an ({height}, {width}) array, a list of polygons or "
                f"an RLE dict, got {type(m).__name__} of shape {shape}."
            )
        out[i] = arr > 0.5 if arr.dtype != bool else arr
    return out


def connected_components(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """8-connected components of an (H, W) mask.

    Returns:
        ``(labels, areas)``: ``labels`` (H, W) int32, 0 outside the mask and 1..k for the k
        components; ``areas`` (k + 1,) pixel counts, ``areas[0]`` the background's.
    """
    mask = np.asarray(mask, dtype=bool)
    H, W = mask.shape
    parent: List[int] = [0]

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    # Runs of each row, (start, end) with end exclusive; a run touches a run of the row above
    # when their column ranges overlap with one column of slack (diagonal neighbours).
    run_rows: List[Tuple[np.ndarray, np.ndarray, List[int]]] = []
    prev: Optional[Tuple[np.ndarray, np.ndarray, List[int]]] = None
    for y in range(H):
        row = np.concatenate([[False], mask[y], [False]]).astype(np.int8)
        d = np.diff(row)
        starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
        ids = []
        for s, e in zip(starts, ends):
            new = len(parent)
            parent.append(new)
            if prev is not None:
                ps, pe, pids = prev
                for j in np.nonzero((ps <= e) & (pe >= s))[0]:  # overlap incl. diagonals
                    ra, rb = find(new), find(pids[j])
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
            ids.append(new)
        prev = (starts, ends, ids)
        run_rows.append(prev)

    roots = {}
    labels = np.zeros((H, W), dtype=np.int32)
    for y, (starts, ends, ids) in enumerate(run_rows):
        for s, e, i in zip(starts, ends, ids):
            labels[y, s:e] = roots.setdefault(find(i), len(roots) + 1)
    areas = np.bincount(labels.ravel(), minlength=len(roots) + 1)
    return labels, areas


def grayscale_outside(img: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
    """``img`` (H, W, 3) with each pixel outside ``keep`` (H, W) replaced by its channel mean."""
    grey = np.repeat(img.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)
    if keep is not None:
        grey[keep] = img[keep]
    return grey


def check_mask(mask: Any, height: int, width: int, name: str) -> np.ndarray:
    """``mask`` as an (H, W) numpy array of the image's size, or a ValueError naming it."""
    arr = _np(mask)
    if arr is None or arr.shape != (height, width):
        shape = None if arr is None else arr.shape
        raise ValueError(f"Expected {name} of shape ({height}, {width}) matching the image, "
                         f"got {shape}.")
    return arr


def binary_mask_overlay(mask: np.ndarray, color: np.ndarray, edge_color: Optional[np.ndarray],
                        alpha: float, area_threshold: Optional[float]
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """The (H, W, 4) overlay of one binary mask, and the mask minus its small components.

    Components of fewer than ``area_threshold`` pixels are left out. The filled part has
    ``color`` at ``alpha``; its boundary pixels ``edge_color`` (default: ``color``, or a darker
    shade when ``alpha > 0.8``, as detectron2's polygon edges) fully opaque.
    """
    labels, areas = connected_components(mask > 0)
    big = areas >= (area_threshold or 0)
    big[0] = False
    kept = big[labels]
    if edge_color is None:
        edge_color = color * 0.3 if alpha > 0.8 else color
    rgba = np.zeros(mask.shape + (4,), dtype=np.float32)
    rgba[kept, :3], rgba[kept, 3] = color, alpha
    padded = np.pad(kept, 1)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    edge = kept & ~interior
    rgba[edge, :3], rgba[edge, 3] = edge_color, 1.0
    return rgba, kept


def text_anchors(mask: np.ndarray) -> np.ndarray:
    """(k, 4) degenerate XYXY boxes where a mask's label goes: the median pixel of its largest
    component, and of every other component above ``LARGE_MASK_AREA_THRESH`` pixels."""
    labels, areas = connected_components(mask)
    if len(areas) < 2:
        return np.zeros((0, 4))
    largest = int(np.argmax(areas[1:])) + 1
    anchors = []
    for cid in range(1, len(areas)):
        if cid == largest or areas[cid] > LARGE_MASK_AREA_THRESH:
            # The median pixel is inside the component, unlike its centroid.
            ys, xs = np.nonzero(labels == cid)
            cx, cy = float(np.median(xs)), float(np.median(ys))
            anchors.append([cx, cy, cx, cy])
    return np.asarray(anchors)


def mask_color(color: Any, num_drawn: int) -> np.ndarray:
    """A matplotlib colour as RGB in [0, 1]; None picks palette colour ``num_drawn``.

    detectron2 picks a random colour for None; the palette keeps pictures reproducible.
    """
    from matplotlib.colors import to_rgb

    return C.palette(num_drawn + 1)[-1] if color is None else np.asarray(to_rgb(color))


def soft_mask_overlay(soft: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 4) overlay of ``color`` with opacity ``soft * alpha`` (``soft`` clipped to [0, 1])."""
    rgba = np.zeros(soft.shape + (4,), dtype=np.float32)
    rgba[..., :3], rgba[..., 3] = color, np.clip(soft, 0.0, 1.0) * alpha
    return rgba


def mask_texts(text: str, mask: np.ndarray, color: np.ndarray):
    """``(texts, anchor boxes, colours)`` for ``Visualizer._draw_labels``: ``text`` on the
    parts of ``mask`` that :func:`text_anchors` picks."""
    anchors = text_anchors(mask)  # (k, 4)
    return [text] * len(anchors), anchors, np.tile(color, (len(anchors), 1))

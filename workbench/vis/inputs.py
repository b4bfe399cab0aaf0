"""What is to be drawn, as numpy: tensors, ``Boxes`` / ``Keypoints`` and ``Instances`` fields,
and the boxes and segmentations (polygons, RLE, arrays) of dataset-dict annotations.

Shape legend: H x W the image; n instances.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np


def _np(x: Any) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "tensor"):  # Boxes, Keypoints
        x = x.tensor
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _fields(x) -> Dict[str, Any]:
    if isinstance(x, dict):
        return x
    if hasattr(x, "get_fields"):
        return x.get_fields()
    raise TypeError(f"Expected Instances or a dict of fields, got {type(x).__name__}.")


def _erode(m: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (4-neighbourhood) of an (H, W) bool mask."""
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out & m


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m > 0.5)
        if len(xs):
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return boxes


def _xyxy(anno: Dict[str, Any]) -> List[float]:
    from workbench.structures import BoxMode

    mode = anno.get("bbox_mode", BoxMode.XYWH_ABS)
    return list(BoxMode.convert(list(anno["bbox"]), mode, BoxMode.XYXY_ABS))


def _decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a polygon list, an RLE dict or an (H, W) array."""
    from pycocotools import mask as mask_util

    if isinstance(seg, list):
        if not seg:
            return np.zeros((height, width), dtype=bool)
        rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64).tolist() for p in seg], height, width)
        return mask_util.decode(mask_util.merge(rles)).astype(bool)
    if isinstance(seg, dict):
        if isinstance(seg.get("counts"), list):
            seg = mask_util.frPyObjects(seg, *seg["size"])
        return mask_util.decode(seg).astype(bool)
    arr = np.asarray(seg)
    if arr.shape != (height, width):
        raise ValueError(f"Expected a segmentation mask of shape {(height, width)}, got {arr.shape}.")
    return arr.astype(bool)

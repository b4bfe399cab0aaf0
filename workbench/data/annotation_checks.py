"""Checks of single annotations (box, polygon, RLE, keypoints) shared by the COCO json loader
and :func:`~workbench.data.detection_utils.transform_instance_annotations`.

Each check returns ``None`` for a valid value and otherwise a sentence saying what is wrong
and what was expected; the caller prefixes where the value came from (json file, annotation
id, image id) and raises. Values detectron2 accepts stay accepted: zero-area boxes, crowd
annotations, compressed or uncompressed RLE.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional, Sequence, Union

import numpy as np

__all__ = ["AnnotationError", "bbox_problem", "polygon_problem", "rle_problem", "keypoints_problem",
           "rle_string_counts"]


class AnnotationError(ValueError):
    """An annotation of a dataset dict that breaks the format (box, polygon, RLE, keypoints).

    :class:`~workbench.data.DatasetMapper` adds the image's file name and id to the message.
    """


def _all_finite(values: List[Any]) -> bool:
    """All finite real numbers (one ``sum``: fast on the long polygon lists of COCO)."""
    try:
        total = sum(values)
    except TypeError:  # a string, None, a nested list, ...
        return False
    return isinstance(total, numbers.Real) and math.isfinite(total)


def _flat(value: Any) -> Optional[List[Any]]:
    """A list / tuple / 1-D array or tensor (anything with ``ndim`` <= 1 and ``tolist``, as
    numpy arrays and torch tensors: detectron2's BoxMode.convert takes both) as a list, else None."""
    if isinstance(value, (list, tuple)):
        return list(value)
    ndim = getattr(value, "ndim", None)
    if isinstance(ndim, int) and hasattr(value, "tolist") and hasattr(value, "reshape"):
        return value.reshape(-1).tolist() if ndim <= 1 else None
    return None


def bbox_problem(bbox: Any, xywh: bool) -> Optional[str]:
    """4 finite numbers; width, height >= 0 (``xywh``) or x1 >= x0, y1 >= y0 (XYXY)."""
    values = _flat(bbox)
    form = "[x, y, width, height]" if xywh else "[x0, y0, x1, y1]"
    if values is None or len(values) != 4 or not _all_finite(values):
        return f"bbox {bbox!r} is not 4 finite numbers; expected {form}."
    if xywh and (values[2] < 0 or values[3] < 0):
        return (f"bbox {values} has a negative width or height; expected {form} with "
                "width, height >= 0 (zero-area boxes are allowed).")
    if not xywh and (values[2] < values[0] or values[3] < values[1]):
        return f"bbox {values} has x1 < x0 or y1 < y0; expected {form} with x1 >= x0, y1 >= y0."
    return None


def polygon_problem(polygon: Any) -> Optional[str]:
    """A flat ``[x0, y0, x1, y1, ...]`` of finite numbers, of even length."""
    values = _flat(polygon)
    if values is None or not _all_finite(values):
        return (f"polygon {_short(polygon)} is not a flat list of finite numbers; expected "
                "[x0, y0, x1, y1, ...].")
    if len(values) % 2 != 0:
        return (f"polygon {_short(values)} has an odd number ({len(values)}) of coordinates; "
                "expected [x0, y0, x1, y1, ...] pairs.")
    return None


def rle_string_counts(counts: Union[str, bytes]) -> np.ndarray:
    """The run lengths (int64) of a compressed RLE string, as pycocotools' ``rleFrString``
    reads them, vectorised with numpy.

    Each run length is 1 or more characters ``c - 48``; a character's 0x20 bit says another
    follows; their low 5 bits are the number's 5-bit groups, least significant first; the 0x10
    bit of the last group is the sign. From the fourth run on, a number is the difference to
    the run two before.

    Raises:
        ValueError: the string ends in the middle of a number, or a number is longer than 7
            characters (35 bits: pycocotools writes differences of 32-bit counts, at most 7).
    """
    raw = counts.encode() if isinstance(counts, str) else bytes(counts)
    if not raw:
        return np.zeros(0, np.int64)
    c = (np.frombuffer(raw, np.uint8).astype(np.int64) - 48) & 0x3F  # pycocotools keeps 6 bits
    ends = np.flatnonzero((c & 0x20) == 0)  # last character of each number
    if len(ends) == 0 or ends[-1] != len(c) - 1:
        raise ValueError("the compressed counts string ends in the middle of a run length")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise ValueError(f"a run length is {int(lengths.max())} characters long (at most 7 encode "
                         "a 32-bit count)")
    k = np.arange(len(c), dtype=np.int64) - np.repeat(starts, lengths)  # group index in its number
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    x -= np.where(c[ends] & 0x10, np.left_shift(1, 5 * lengths), 0)  # sign of the last group
    x[1::2] = np.cumsum(x[1::2])  # x[i] += x[i - 2] for i > 2: a running sum per parity ...
    x[2::2] = np.cumsum(x[2::2])  # ... that starts at index 1 for odd, 2 for even indices
    return x


def rle_problem(rle: Any, image_hw: Optional[Sequence[int]] = None) -> Optional[str]:
    """``{"size": [H, W], "counts": ...}`` with run lengths >= 0 summing to H x W (and, if
    ``image_hw`` is given, [H, W] equal to it)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        return f"RLE segmentation must be a dict with 'size' and 'counts', got {_short(rle)}."
    size = _flat(rle["size"])
    if (size is None or len(size) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in size)):
        return f"RLE 'size' {rle['size']!r} is not [height, width] (two integers >= 0)."
    h, w = int(size[0]), int(size[1])
    if image_hw is not None and (h, w) != tuple(int(x) for x in image_hw):
        return (f"RLE 'size' [{h}, {w}] differs from the image's [height, width] "
                f"{[int(x) for x in image_hw]}.")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "RLE 'counts' bytes are not an ASCII compressed RLE string."
    if isinstance(counts, str):
        try:
            runs = rle_string_counts(counts)
        except ValueError as e:
            return f"RLE 'counts' string is corrupt: {e}."
        negative = bool(len(runs)) and int(runs.min()) < 0
        total = int(runs.sum())
    else:
        runs = _flat(counts)
        if runs is None or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in runs):
            return (f"RLE 'counts' {_short(counts)} is neither a compressed RLE string nor a list "
                    "of integer run lengths.")
        negative = any(v < 0 for v in runs)
        total = int(sum(runs))
    if negative:
        return "RLE 'counts' has a negative run length."
    if total != h * w:
        return (f"RLE run lengths sum to {total}, but 'size' [{h}, {w}] needs H x W = {h * w}.")
    return None


def keypoints_problem(keypoints: Any) -> Optional[str]:
    """A flat ``[x, y, v] * K`` of finite numbers."""
    values = _flat(keypoints)
    if values is None or not _all_finite(values):
        return f"keypoints {_short(keypoints)} are not a flat list of finite numbers."
    if len(values) % 3 != 0:
        return (f"keypoints have {len(values)} numbers, not a multiple of 3; expected "
                "[x, y, visibility] per keypoint.")
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

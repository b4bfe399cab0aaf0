"""Augmentations used at inference: ``ResizeShortestEdge``."""

from __future__ import annotations

import sys
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .augmentation import Augmentation
from .transform import NoOpTransform, ResizeTransform, Transform

__all__ = ["ResizeShortestEdge"]


class ResizeShortestEdge(Augmentation):
    """Resizes so that the shorter side has a given length, capping the longer side.

    The aspect ratio is kept. At test time detectron2 uses
    ``ResizeShortestEdge([MIN_SIZE_TEST] * 2, MAX_SIZE_TEST)``; in training the length is
    drawn per image.

    Args:
        short_edge_length: Target length of the shorter side. With ``sample_style="range"`` a
            pair ``(lo, hi)``, the length being drawn uniformly from ``[lo, hi]``; with
            ``"choice"`` a list of lengths to draw from. An int means exactly that length. A
            drawn length of 0 means "do not resize".
        max_size: Cap on the longer side after resizing.
        sample_style: ``"range"`` or ``"choice"``.
        interp: PIL resampling filter.
    """

    def __init__(self, short_edge_length: Union[int, Sequence[int]], max_size: int = sys.maxsize,
                 sample_style: str = "range", interp: int = Image.BILINEAR) -> None:
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}.")
        self.is_range = sample_style == "range"
        if isinstance(short_edge_length, (int, np.integer)):
            short_edge_length = (int(short_edge_length), int(short_edge_length))
        short_edge_length = tuple(short_edge_length)
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(
                "short_edge_length must be two values (min, max) when sample_style='range', "
                f"got {short_edge_length}."
            )
        if not short_edge_length:
            raise ValueError("short_edge_length must not be empty.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """Draws the short-edge length and returns the resize for this (H, W, ...) image.

        Draws from numpy's global random state (``np.random.randint`` / ``np.random.choice``),
        as detectron2 does, so a seeded numpy gives detectron2's sizes.
        """
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        new_h, new_w = self.get_output_shape(h, w, int(size), self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int) -> Tuple[int, int]:
        """The (new_h, new_w) for an (oldh, oldw) image, with detectron2's rounding.

        The shorter side becomes ``short_edge_length``, the other scales with it; if the longer
        side then exceeds ``max_size`` both are scaled down to fit; finally each is rounded
        half up (``int(x + 0.5)``). Example: (512, 512), 320, 533 -> (320, 320);
        (300, 451), 320, 533 -> (320, 481).
        """
        size = short_edge_length * 1.0
        scale = size / min(oldh, oldw)
        if oldh < oldw:
            newh, neww = size, scale * oldw
        else:
            newh, neww = scale * oldh, size
        if max(newh, neww) > max_size:
            scale = max_size * 1.0 / max(newh, neww)
            newh = newh * scale
            neww = neww * scale
        return int(newh + 0.5), int(neww + 0.5)

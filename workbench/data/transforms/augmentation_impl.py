"""Augmentations: ``ResizeShortestEdge`` (training and inference), ``RandomFlip``, ``RandomCrop``,
``Resize``."""

from __future__ import annotations

import sys
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .augmentation import Augmentation
from .transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    ResizeTransform,
    Transform,
    VFlipTransform,
)

__all__ = [
    "FixedSizeCrop", "MinIoURandomCrop", "RandomApply", "RandomBrightness", "RandomContrast",
    "RandomCrop", "RandomCrop_CategoryAreaConstraint", "RandomExtent", "RandomFlip",
    "RandomLighting", "RandomResize", "RandomRotation", "RandomSaturation", "Resize", "ResizeScale",
    "ResizeShortestEdge",
]


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


class RandomFlip(Augmentation):
    """Flips the image horizontally or vertically with probability ``prob``.

    Draws from numpy's global generator (``np.random.uniform``), as detectron2 does. A
    horizontal flip swaps left and right keypoints only if the caller passes flip indices to
    :func:`~workbench.data.detection_utils.transform_keypoint_annotations`.

    Args:
        prob: Probability of flipping.
        horizontal: Flip left-right.
        vertical: Flip top-bottom. Exactly one of the two must be True.
    """

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False) -> None:
        super().__init__()
        if horizontal and vertical:
            raise ValueError("RandomFlip cannot flip both horizontally and vertically; use two RandomFlips.")
        if not horizontal and not vertical:
            raise ValueError("RandomFlip needs horizontal=True or vertical=True.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip probability must be in [0, 1], got {prob}.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        do = self._rand_range() < self.prob
        if not do:
            return NoOpTransform()
        return HFlipTransform(w) if self.horizontal else VFlipTransform(h)


class Resize(Augmentation):
    """Resizes every image to a fixed (h, w).

    Args:
        shape: ``(h, w)``, or an int for a square.
        interp: PIL resampling filter.
    """

    def __init__(self, shape: Union[int, Tuple[int, int]], interp: int = Image.BILINEAR) -> None:
        super().__init__()
        if isinstance(shape, int):
            shape = (shape, shape)
        self.shape = tuple(shape)
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        return ResizeTransform(image.shape[0], image.shape[1], self.shape[0], self.shape[1], self.interp)


class RandomCrop(Augmentation):
    """Crops a random window, sized per ``crop_type`` (detectron2's ``INPUT.CROP``).

    Args:
        crop_type: ``"relative"`` (``crop_size`` = fractions (h, w) of the image),
            ``"relative_range"`` (fractions drawn uniformly in ``[crop_size, 1]``),
            ``"absolute"`` (pixels, capped by the image size) or ``"absolute_range"``
            (pixels drawn in ``[crop_size[0], crop_size[1]]`` for each side).
        crop_size: See ``crop_type``.
    """

    def __init__(self, crop_type: str, crop_size: Sequence[float]) -> None:
        super().__init__()
        if crop_type not in ("relative_range", "relative", "absolute", "absolute_range"):
            raise ValueError(f"Unknown crop type {crop_type!r}.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        croph, cropw = self.get_crop_size((h, w))
        if h < croph or w < cropw:
            raise ValueError(f"Crop size {(croph, cropw)} is larger than the image {(h, w)}.")
        h0 = np.random.randint(h - croph + 1)
        w0 = np.random.randint(w - cropw + 1)
        return CropTransform(w0, h0, cropw, croph)

    def get_crop_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """The (h, w) of the window for an image of (h, w) ``image_size``."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            crop_size = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = crop_size + np.random.rand(2) * (1 - crop_size)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        lo, hi = int(self.crop_size[0]), int(self.crop_size[1])
        if lo > hi:
            raise ValueError(f"absolute_range crop needs crop_size[0] <= crop_size[1], got {self.crop_size}.")
        ch = np.random.randint(min(h, lo), min(h, hi) + 1)
        cw = np.random.randint(min(w, lo), min(w, hi) + 1)
        return ch, cw


# The rest of detectron2's augmentations live in their own file (to keep this one short) and are
# re-exported here so that detectron2's module paths keep working.
from .augmentation_extra import (  # noqa: E402
    FixedSizeCrop,
    MinIoURandomCrop,
    RandomApply,
    RandomBrightness,
    RandomContrast,
    RandomCrop_CategoryAreaConstraint,
    RandomExtent,
    RandomLighting,
    RandomResize,
    RandomRotation,
    RandomSaturation,
    ResizeScale,
)

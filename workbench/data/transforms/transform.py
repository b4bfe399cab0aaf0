"""Deterministic transforms: each applies one fixed change to an image and everything on it.

Conventions: images are numpy arrays of shape (H, W) or (H, W, C), uint8 or float;
coordinates are float arrays of shape (N, 2) holding (x, y) in absolute pixels; boxes are
(N, 4) XYXY in absolute pixels.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["NoOpTransform", "ResizeTransform", "Transform"]


class Transform(metaclass=ABCMeta):
    """A fixed change to an image and its annotations (fvcore's ``Transform`` interface).

    Subclasses implement :meth:`apply_image` and :meth:`apply_coords`; boxes, polygons and
    segmentation maps are derived from those unless a subclass knows better.
    """

    @abstractmethod
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Returns the transformed (H', W') or (H', W', C) image."""

    @abstractmethod
    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Returns the transformed (N, 2) array of (x, y) points."""

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Returns the transformed (H, W) label map (same as the image by default)."""
        return self.apply_image(segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        """Returns the (N, 4) XYXY boxes enclosing the transformed corners of ``box``."""
        corners = np.asarray(box).reshape(-1, 4)[:, [0, 1, 2, 1, 0, 3, 2, 3]]  # (N, 4) -> (N, 8)
        coords = self.apply_coords(corners.reshape(-1, 2)).reshape(-1, 4, 2)  # (N*4, 2) -> (N, 4, 2)
        return np.concatenate([coords.min(axis=1), coords.max(axis=1)], axis=1)

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        """Returns each (K, 2) polygon transformed by :meth:`apply_coords`."""
        return [self.apply_coords(np.asarray(p, dtype=np.float64)) for p in polygons]

    def inverse(self) -> "Transform":
        """The transform that undoes this one."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse.")


class NoOpTransform(Transform):
    """Leaves everything unchanged."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def inverse(self) -> "Transform":
        return self

    def __repr__(self) -> str:
        return "NoOpTransform()"


# PIL resampling filter -> torch.nn.functional.interpolate mode, for non-uint8 images.
_PIL_TO_TORCH_MODE = {
    Image.NEAREST: "nearest",
    Image.BILINEAR: "bilinear",
    Image.BICUBIC: "bicubic",
}


class ResizeTransform(Transform):
    """Resizes an (h, w) image to (new_h, new_w), as detectron2 does.

    uint8 images go through PIL (``Image.fromarray(img).resize((new_w, new_h), interp)``,
    single-channel images as mode "L"); other dtypes through ``F.interpolate`` with the
    matching mode and ``align_corners=False``. The two give different numbers: PIL's bilinear
    filter widens its support when shrinking (antialiasing), interpolate's does not.

    Args:
        h, w: Size of the input image.
        new_h, new_w: Size of the output image.
        interp: PIL resampling filter (``Image.NEAREST``, ``Image.BILINEAR`` (default),
            ``Image.BICUBIC``, ...).
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: Optional[int] = None) -> None:
        if min(h, w, new_h, new_w) <= 0:
            raise ValueError(f"Resize sizes must be positive, got {(h, w)} -> {(new_h, new_w)}.")
        self.h, self.w, self.new_h, self.new_w = int(h), int(w), int(new_h), int(new_w)
        self.interp = Image.BILINEAR if interp is None else interp

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        """Resizes an (h, w) or (h, w, C) image.

        Args:
            img: The image; uint8 or any dtype torch can interpolate.
            interp: Overrides the transform's resampling filter.
        """
        if img.ndim not in (2, 3) or img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"Expected an image of shape ({self.h}, {self.w}) or ({self.h}, {self.w}, C), "
                f"got {img.shape}."
            )
        interp = self.interp if interp is None else interp
        single_channel = img.ndim == 3 and img.shape[2] == 1
        if img.dtype == np.uint8:
            pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if single_channel else img))
            out = np.asarray(pil.resize((self.new_w, self.new_h), interp))
            return out[:, :, None] if single_channel else out

        if interp not in _PIL_TO_TORCH_MODE:
            raise ValueError(f"Resampling filter {interp} is only supported for uint8 images.")
        mode = _PIL_TO_TORCH_MODE[interp]
        t = torch.from_numpy(np.ascontiguousarray(img))
        t = t[:, :, None] if t.dim() == 2 else t
        t = t.permute(2, 0, 1)[None]  # (h, w, C) -> (1, C, h, w)
        t = F.interpolate(t, (self.new_h, self.new_w), mode=mode,
                          align_corners=None if mode == "nearest" else False)
        out = t[0].permute(1, 2, 0).numpy()  # (1, C, new_h, new_w) -> (new_h, new_w, C)
        return out[:, :, 0] if img.ndim == 2 else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Scales x by ``new_w / w`` and y by ``new_h / h`` (returns a new array)."""
        coords = np.array(coords, copy=True)
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Resizes a label map with nearest-neighbour sampling, so labels stay labels."""
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> "ResizeTransform":
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)

    def __repr__(self) -> str:
        return (f"ResizeTransform(h={self.h}, w={self.w}, new_h={self.new_h}, "
                f"new_w={self.new_w}, interp={self.interp})")

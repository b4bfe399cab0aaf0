"""Deterministic transforms: each applies one fixed change to an image and everything on it.

Conventions: images are numpy arrays of shape (H, W) or (H, W, C), uint8 or float;
coordinates are float arrays of shape (N, 2) holding (x, y) in absolute pixels; boxes are
(N, 4) XYXY in absolute pixels.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "BlendTransform", "ColorTransform", "ExtentTransform", "GridSampleTransform",
    "PILColorTransform", "PadTransform", "RotationTransform", "ScaleTransform",
    "CropTransform", "HFlipTransform", "NoOpTransform", "ResizeTransform", "Transform",
    "TransformList", "VFlipTransform",
]


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


class HFlipTransform(Transform):
    """Mirrors left-right an image of width ``width``: x -> width - x."""

    def __init__(self, width: int) -> None:
        self.width = int(width)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Flips an (H, W) or (H, W, C) image (or an (N, H, W, C) batch) along W."""
        return np.flip(img, axis=1 if img.ndim <= 3 else 2)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if np.asarray(coords).dtype.kind in "iub" else None, copy=True)
        coords[:, 0] = self.width - coords[:, 0]
        return coords

    def inverse(self) -> "HFlipTransform":
        return self

    def __repr__(self) -> str:
        return f"HFlipTransform(width={self.width})"


class VFlipTransform(Transform):
    """Mirrors top-bottom an image of height ``height``: y -> height - y."""

    def __init__(self, height: int) -> None:
        self.height = int(height)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Flips an (H, W) or (H, W, C) image (or an (N, H, W, C) batch) along H."""
        return np.flip(img, axis=0 if img.ndim <= 3 else 1)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if np.asarray(coords).dtype.kind in "iub" else None, copy=True)
        coords[:, 1] = self.height - coords[:, 1]
        return coords

    def inverse(self) -> "VFlipTransform":
        return self

    def __repr__(self) -> str:
        return f"VFlipTransform(height={self.height})"


class CropTransform(Transform):
    """Keeps the ``h`` x ``w`` window whose top-left corner is (``x0``, ``y0``).

    Polygons are clipped to the window (Sutherland-Hodgman against its four sides); polygons
    left with fewer than 3 points are dropped, so an instance may end up with no polygon.
    """

    def __init__(self, x0: int, y0: int, w: int, h: int, orig_w: Optional[int] = None,
                 orig_h: Optional[int] = None) -> None:
        if min(w, h) <= 0 or min(x0, y0) < 0:
            raise ValueError(f"Invalid crop window x0={x0}, y0={y0}, w={w}, h={h}.")
        self.x0, self.y0, self.w, self.h = int(x0), int(y0), int(w), int(h)
        # Size of the uncropped image: only needed by inverse() (fvcore's signature).
        self.orig_w = None if orig_w is None else int(orig_w)
        self.orig_h = None if orig_h is None else int(orig_h)

    def inverse(self) -> "Transform":
        """Pads the crop back to the original size (needs ``orig_w`` and ``orig_h``)."""
        if self.orig_w is None or self.orig_h is None:
            raise NotImplementedError("CropTransform.inverse() needs orig_w and orig_h.")
        from .transform_extra import PadTransform

        if self.x0 + self.w > self.orig_w or self.y0 + self.h > self.orig_h:
            raise ValueError(
                f"CropTransform.inverse(): the crop window (x0={self.x0}, y0={self.y0}, w={self.w}, h={self.h}) "
                f"was larger than the image (w={self.orig_w}, h={self.orig_h}), so padding back would need "
                f"negative padding (e.g. FixedSizeCrop on an image smaller than crop_size).")
        return PadTransform(self.x0, self.y0, self.orig_w - self.x0 - self.w,
                            self.orig_h - self.y0 - self.h, orig_w=self.w, orig_h=self.h)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.ndim <= 3:
            return img[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]
        return img[..., self.y0:self.y0 + self.h, self.x0:self.x0 + self.w, :]

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if np.asarray(coords).dtype.kind in "iub" else None, copy=True)
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        out = []
        for p in polygons:
            clipped = _clip_polygon(self.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)),
                                    0.0, 0.0, float(self.w), float(self.h))
            if len(clipped) >= 3:
                out.append(clipped)
        return out

    def __repr__(self) -> str:
        return f"CropTransform(x0={self.x0}, y0={self.y0}, w={self.w}, h={self.h})"


def _clip_polygon(poly: np.ndarray, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of a (K, 2) polygon to a rectangle; returns (K', 2)."""
    # Each edge: (axis, bound, keep_if_greater)
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_greater in ((0, xmin, True), (0, xmax, False), (1, ymin, True), (1, ymax, False)):
        if not pts:
            break

        def inside(p):
            return p[axis] >= bound if keep_greater else p[axis] <= bound

        new_pts = []
        prev = pts[-1]
        for cur in pts:
            if inside(cur):
                if not inside(prev):
                    new_pts.append(_intersect(prev, cur, axis, bound))
                new_pts.append(cur)
            elif inside(prev):
                new_pts.append(_intersect(prev, cur, axis, bound))
            prev = cur
        pts = new_pts
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _intersect(p, q, axis: int, bound: float):
    t = (bound - p[axis]) / (q[axis] - p[axis])
    x = p[0] + t * (q[0] - p[0])
    y = p[1] + t * (q[1] - p[1])
    return (bound, y) if axis == 0 else (x, bound)


class TransformList(Transform):
    """Several transforms applied in order (fvcore's ``TransformList``).

    Nested lists are flattened and ``NoOpTransform`` entries dropped, so ``transforms`` holds
    the effective transforms (e.g. to check whether a flip happened).
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        flat: List[Transform] = []
        for t in transforms:
            if isinstance(t, TransformList):
                flat.extend(t.transforms)
            elif isinstance(t, Transform):
                if not isinstance(t, NoOpTransform):
                    flat.append(t)
            else:
                raise TypeError(f"TransformList takes Transform objects, got {type(t).__name__}.")
        self.transforms = flat

    def _apply(self, method: str, x):
        for t in self.transforms:
            x = getattr(t, method)(x)
        return x

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._apply("apply_image", img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return self._apply("apply_coords", coords)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._apply("apply_segmentation", segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        return self._apply("apply_box", box)

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        return self._apply("apply_polygons", polygons)

    def inverse(self) -> "TransformList":
        return TransformList([t.inverse() for t in reversed(self.transforms)])

    def __add__(self, other: Union[Transform, "TransformList"]) -> "TransformList":
        return TransformList([self, other])

    def __radd__(self, other: Union[Transform, "TransformList"]) -> "TransformList":
        return TransformList([other, self])

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, idx: int) -> Transform:
        return self.transforms[idx]

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __repr__(self) -> str:
        return f"TransformList[{', '.join(repr(t) for t in self.transforms)}]"


# Defined in their own file to keep this one short; re-exported so that detectron2's module
# paths (``transforms.transform.RotationTransform``) work. Imported last: it imports from here.
from .transform_extra import (  # noqa: E402
    BlendTransform,
    ColorTransform,
    ExtentTransform,
    GridSampleTransform,
    PadTransform,
    PILColorTransform,
    RotationTransform,
    ScaleTransform,
)

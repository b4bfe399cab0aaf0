"""More deterministic transforms: padding, blending, scaling, grid sampling (fvcore's), and
detectron2's extent, rotation and colour transforms.

Same conventions as :mod:`workbench.data.transforms.transform`: images are (H, W) or
(H, W, C) numpy arrays, coordinates (N, 2) (x, y) in absolute pixels. Rotation is done with
``torch.nn.functional.grid_sample`` instead of OpenCV; the geometry is OpenCV's
(``getRotationMatrix2D`` / ``warpAffine``), uint8 results may differ from OpenCV's fixed-point
interpolation by one grey level.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .transform import CropTransform, NoOpTransform, Transform, TransformList

__all__ = [
    "BlendTransform", "ColorTransform", "ExtentTransform", "GridSampleTransform",
    "PILColorTransform", "PadTransform", "RotationTransform", "ScaleTransform",
]


def _to_float_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W), (H, W, C) or (N, H, W, C) array -> (N, C, H, W) float tensor."""
    if img.ndim not in (2, 3, 4):
        raise ValueError(f"Expected an image of 2, 3 or 4 dimensions, got shape {img.shape}.")
    t = torch.from_numpy(np.ascontiguousarray(img))
    if not t.is_floating_point():
        t = t.float()
    if img.ndim == 2:
        return t[None, None]  # (H, W) -> (1, 1, H, W)
    if img.ndim == 3:
        return t.permute(2, 0, 1)[None]  # (H, W, C) -> (1, C, H, W)
    return t.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


def _to_numpy(t: torch.Tensor, ndim: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_to_float_tensor`; uint8 results are rounded and clipped."""
    if ndim == 2:
        t = t[0, 0]
    elif ndim == 3:
        t = t[0].permute(1, 2, 0)  # (1, C, H, W) -> (H, W, C)
    else:
        t = t.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if dtype == np.uint8:
        return t.round().clamp(0, 255).to(torch.uint8).numpy()
    return t.numpy().astype(dtype, copy=False)


def _check_size(img: np.ndarray, h: int, w: int, name: str) -> None:
    got = img.shape[1:3] if img.ndim == 4 else img.shape[:2]
    if tuple(got) != (h, w):
        raise ValueError(f"{name} was built for images of (h, w) = {(h, w)}, got an image of shape {img.shape}.")


class BlendTransform(Transform):
    """``src_weight * src_image + dst_weight * image``: a photometric blend (coordinates and
    segmentation are unchanged). uint8 images are computed in float and clipped to [0, 255].

    Args:
        src_image: Array broadcastable to the image (or a scalar) to blend in.
        src_weight: Weight of ``src_image``.
        dst_weight: Weight of the input image.
    """

    def __init__(self, src_image: Union[np.ndarray, float], src_weight: float, dst_weight: float) -> None:
        self.src_image = src_image
        self.src_weight = src_weight
        self.dst_weight = dst_weight

    def apply_image(self, img: np.ndarray, interp: Any = None) -> np.ndarray:
        if img.dtype == np.uint8:
            out = self.src_weight * self.src_image + self.dst_weight * img.astype(np.float32)
            return np.clip(out, 0, 255).astype(np.uint8)
        return self.src_weight * self.src_image + self.dst_weight * img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()

    def __repr__(self) -> str:
        src = self.src_image if np.isscalar(self.src_image) else f"array{np.shape(self.src_image)}"
        return f"BlendTransform(src_image={src}, src_weight={self.src_weight}, dst_weight={self.dst_weight})"


class PadTransform(Transform):
    """Pads ``x0`` / ``x1`` columns left / right and ``y0`` / ``y1`` rows top / bottom.

    Args:
        x0, y0, x1, y1: Padding widths in pixels.
        orig_w, orig_h: Size of the unpadded image; needed only for :meth:`inverse`.
        pad_value: Value of the padded image pixels.
        seg_pad_value: Value of the padded segmentation pixels.
    """

    def __init__(self, x0: int, y0: int, x1: int, y1: int, orig_w: Optional[int] = None,
                 orig_h: Optional[int] = None, pad_value: float = 0, seg_pad_value: int = 0) -> None:
        if min(x0, y0, x1, y1) < 0:
            raise ValueError(f"PadTransform needs non-negative padding, got {(x0, y0, x1, y1)}.")
        self.x0, self.y0, self.x1, self.y1 = int(x0), int(y0), int(x1), int(y1)
        self.orig_w = None if orig_w is None else int(orig_w)
        self.orig_h = None if orig_h is None else int(orig_h)
        self.pad_value = pad_value
        self.seg_pad_value = seg_pad_value

    def _pad(self, img: np.ndarray, value: float) -> np.ndarray:
        padding = [(self.y0, self.y1), (self.x0, self.x1)] + [(0, 0)] * (img.ndim - 2)
        return np.pad(img, padding, mode="constant", constant_values=value)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._pad(img, self.pad_value)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._pad(segmentation, self.seg_pad_value)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if np.asarray(coords).dtype.kind in "iub" else None, copy=True)
        coords[:, 0] += self.x0
        coords[:, 1] += self.y0
        return coords

    def inverse(self) -> Transform:
        if self.orig_w is None or self.orig_h is None:
            raise NotImplementedError("PadTransform.inverse() needs orig_w and orig_h.")
        return CropTransform(self.x0, self.y0, self.orig_w, self.orig_h,
                             self.orig_w + self.x0 + self.x1, self.orig_h + self.y0 + self.y1)

    def __repr__(self) -> str:
        return (f"PadTransform(x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1}, "
                f"orig_w={self.orig_w}, orig_h={self.orig_h}, pad_value={self.pad_value}, "
                f"seg_pad_value={self.seg_pad_value})")


class ScaleTransform(Transform):
    """Resizes (h, w) images to (new_h, new_w) with ``F.interpolate`` for every dtype (fvcore's;
    :class:`ResizeTransform` uses PIL for uint8 images instead).

    Args:
        h, w: Input size.
        new_h, new_w: Output size.
        interp: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (interpolate's modes).
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: str = "bilinear") -> None:
        if min(h, w, new_h, new_w) <= 0:
            raise ValueError(f"ScaleTransform sizes must be positive, got {(h, w)} -> {(new_h, new_w)}.")
        self.h, self.w, self.new_h, self.new_w = int(h), int(w), int(new_h), int(new_w)
        self.interp = interp

    def apply_image(self, img: np.ndarray, interp: Optional[str] = None) -> np.ndarray:
        _check_size(img, self.h, self.w, "ScaleTransform")
        mode = self.interp if interp is None else interp
        align_corners = False if mode in ("linear", "bilinear", "bicubic") else None
        out = F.interpolate(_to_float_tensor(img), size=(self.new_h, self.new_w), mode=mode,
                            align_corners=align_corners)
        return _to_numpy(out, img.ndim, img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if np.asarray(coords).dtype.kind in "iub" else None, copy=True)
        coords[:, 0] *= self.new_w * 1.0 / self.w
        coords[:, 1] *= self.new_h * 1.0 / self.h
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp="nearest")

    def inverse(self) -> "ScaleTransform":
        return ScaleTransform(self.new_h, self.new_w, self.h, self.w, self.interp)

    def __repr__(self) -> str:
        return (f"ScaleTransform(h={self.h}, w={self.w}, new_h={self.new_h}, new_w={self.new_w}, "
                f"interp={self.interp!r})")


class GridSampleTransform(Transform):
    """Resamples images at a fixed grid (``F.grid_sample``, border padding, align_corners=False).

    Args:
        grid: (N, H_out, W_out, 2) float array of (x, y) in [-1, 1].
        interp: ``"nearest"`` or ``"bilinear"``.
    """

    def __init__(self, grid: np.ndarray, interp: str) -> None:
        self.grid = grid
        self.interp = interp

    def apply_image(self, img: np.ndarray, interp: Optional[str] = None) -> np.ndarray:
        out = F.grid_sample(_to_float_tensor(img), torch.from_numpy(np.asarray(self.grid, dtype=np.float32)),
                            mode=self.interp if interp is None else interp, padding_mode="border",
                            align_corners=False)
        return _to_numpy(out, img.ndim, img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        raise NotImplementedError("GridSampleTransform cannot map coordinates (the grid is not invertible in general).")

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp="nearest")


class ExtentTransform(Transform):
    """Takes the source rectangle ``src_rect`` (which may reach outside the image, filled with
    ``fill``) and scales it to ``output_size``, with PIL's ``Image.EXTENT`` transform.

    Args:
        src_rect: (x0, y0, x1, y1) in source pixels.
        output_size: (h, w) of the output.
        interp: PIL resampling filter.
        fill: Value of pixels from outside the source image.
    """

    def __init__(self, src_rect: Tuple[float, float, float, float], output_size: Tuple[int, int],
                 interp: int = Image.BILINEAR, fill: float = 0) -> None:
        self.src_rect = tuple(src_rect)
        self.output_size = tuple(output_size)
        self.interp = interp
        self.fill = fill

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        h, w = self.output_size
        single_channel = img.ndim == 3 and img.shape[2] == 1
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if single_channel else img))
        # ``is not None`` on purpose: Image.NEAREST == 0, so detectron2's ``interp if interp else
        # self.interp`` silently bilinearly interpolates segmentation labels. We deliberately
        # differ from detectron2 here (which has that bug).
        resample = interp if interp is not None else self.interp
        pil = pil.transform(size=(w, h), method=Image.EXTENT, data=self.src_rect,
                            resample=resample, fill=self.fill)
        out = np.asarray(pil)
        return out[:, :, None] if single_channel else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        h, w = self.output_size
        x0, y0, x1, y1 = self.src_rect
        out = np.asarray(coords).astype(np.float32)
        # Centre on the source rectangle, scale to the output size, re-centre on the output.
        out[:, 0] = (out[:, 0] - 0.5 * (x0 + x1)) * (w / (x1 - x0)) + 0.5 * w
        out[:, 1] = (out[:, 1] - 0.5 * (y0 + y1)) * (h / (y1 - y0)) + 0.5 * h
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def __repr__(self) -> str:
        return f"ExtentTransform(src_rect={self.src_rect}, output_size={self.output_size})"


# OpenCV interpolation flags (cv2.INTER_NEAREST / INTER_LINEAR / INTER_CUBIC) -> grid_sample mode.
_CV2_TO_MODE = {0: "nearest", 1: "bilinear", 2: "bicubic"}
INTER_NEAREST, INTER_LINEAR, INTER_CUBIC = 0, 1, 2


def _rotation_matrix_2d(center: Tuple[float, float], angle: float) -> np.ndarray:
    """OpenCV's ``getRotationMatrix2D(center, angle, 1)``: (2, 3), counter-clockwise degrees."""
    a = np.deg2rad(angle)
    alpha, beta = np.cos(a), np.sin(a)
    cx, cy = center
    return np.array([[alpha, beta, (1 - alpha) * cx - beta * cy],
                     [-beta, alpha, beta * cx + (1 - alpha) * cy]], dtype=np.float64)


class RotationTransform(Transform):
    """Rotates by ``angle`` degrees counter-clockwise around ``center``.

    Args:
        h, w: Input size.
        angle: Degrees, counter-clockwise.
        expand: Grow the output to hold the whole rotated image (then ``center`` has no effect
            on the result); otherwise keep (h, w) and cut the corners.
        center: (x, y) rotation centre in pixels; default the image centre (w / 2, h / 2).
        interp: OpenCV flag (0 nearest, 1 bilinear (default), 2 bicubic) or a mode string.

    The geometry is OpenCV's ``warpAffine`` (pixel centres at integer indices, zeros outside the
    image); bilinear uint8 results match OpenCV to about one grey level. Nearest-neighbour
    results (used for segmentation) can differ from OpenCV where a source coordinate falls
    exactly on a .5 tie between two pixels (``grid_sample`` rounds half to even, OpenCV's
    fixed-point arithmetic rounds differently).
    """

    def __init__(self, h: int, w: int, angle: float, expand: bool = True,
                 center: Optional[Tuple[float, float]] = None, interp: Union[int, str, None] = None) -> None:
        self.h, self.w, self.angle, self.expand = int(h), int(w), angle, expand
        self.image_center = np.array((w / 2, h / 2))
        self.center = self.image_center if center is None else np.asarray(center, dtype=np.float64)
        self.interp = INTER_LINEAR if interp is None else interp
        abs_cos, abs_sin = abs(np.cos(np.deg2rad(angle))), abs(np.sin(np.deg2rad(angle)))
        if expand:
            self.bound_w, self.bound_h = np.rint(
                [h * abs_sin + w * abs_cos, h * abs_cos + w * abs_sin]).astype(int).tolist()
        else:
            self.bound_w, self.bound_h = self.w, self.h
        self.rm_coords = self.create_rotation_matrix()
        self.rm_image = self.create_rotation_matrix(offset=-0.5)

    def create_rotation_matrix(self, offset: float = 0) -> np.ndarray:
        """The (2, 3) affine matrix; ``offset=-0.5`` gives the one for pixel indices."""
        rm = _rotation_matrix_2d((self.center[0] + offset, self.center[1] + offset), self.angle)
        if self.expand:
            # Move the rotated image centre to the centre of the enlarged canvas.
            rot_im_center = rm[:, :2] @ (self.image_center + offset) + rm[:, 2]
            rm[:, 2] += np.array([self.bound_w / 2, self.bound_h / 2]) + offset - rot_im_center
        return rm

    def apply_image(self, img: np.ndarray, interp: Union[int, str, None] = None) -> np.ndarray:
        if img.size == 0 or self.angle % 360 == 0:
            # detectron2 returns empty images unchanged (it checks only len(img), i.e. H == 0; an
            # empty width is treated the same here instead of failing inside grid_sample).
            return img
        _check_size(img, self.h, self.w, "RotationTransform")
        interp = self.interp if interp is None else interp
        mode = _CV2_TO_MODE.get(interp, interp) if isinstance(interp, int) else interp
        # Output pixel (x, y) reads input pixel M^-1 (x, y) (OpenCV's warpAffine).
        full = np.vstack([self.rm_image, [0.0, 0.0, 1.0]])
        inv = np.linalg.inv(full)[:2]
        ys, xs = np.meshgrid(np.arange(self.bound_h), np.arange(self.bound_w), indexing="ij")
        src = np.stack([xs, ys, np.ones_like(xs)], axis=-1).astype(np.float64) @ inv.T  # (bh, bw, 2)
        # Pixel index -> [-1, 1] with align_corners=False: -1 / 1 are the outer edges of the first /
        # last pixel, so pixel centre i is (2 * i + 1) / size - 1. (align_corners=True maps index
        # n-1 to 1 and breaks down for 1-pixel-high or -wide images.)
        grid = np.empty_like(src)
        grid[..., 0] = (2 * src[..., 0] + 1) / self.w - 1
        grid[..., 1] = (2 * src[..., 1] + 1) / self.h - 1
        t = _to_float_tensor(img)
        out = F.grid_sample(t, torch.from_numpy(grid).to(t.dtype)[None].expand(t.shape[0], -1, -1, -1),
                            mode=mode, padding_mode="zeros", align_corners=False)
        return _to_numpy(out, img.ndim, img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=float)
        if len(coords) == 0 or self.angle % 360 == 0:
            return coords
        return coords @ self.rm_coords[:, :2].T + self.rm_coords[:, 2]

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=INTER_NEAREST)

    def inverse(self) -> Transform:
        """Rotates back (with expand) and crops the original size out of the centre."""
        if not self.expand:
            raise NotImplementedError("RotationTransform(expand=False) lost the corners and has no inverse.")
        rotation = RotationTransform(self.bound_h, self.bound_w, -self.angle, True, None, self.interp)
        crop = CropTransform((rotation.bound_w - self.w) // 2, (rotation.bound_h - self.h) // 2, self.w, self.h)
        return TransformList([rotation, crop])

    def __repr__(self) -> str:
        return (f"RotationTransform(h={self.h}, w={self.w}, angle={self.angle}, expand={self.expand}, "
                f"center={tuple(self.center.tolist())}, interp={self.interp})")


class ColorTransform(Transform):
    """Any photometric change ``op(image) -> image``; coordinates and segmentation unchanged.

    Args:
        op: Callable on the numpy image.
    """

    def __init__(self, op: Callable[[np.ndarray], np.ndarray]) -> None:
        if not callable(op):
            raise ValueError(f"ColorTransform(op=) must be callable, got {type(op).__name__}.")
        self.op = op

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self.op(img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(op={self.op!r})"


class PILColorTransform(ColorTransform):
    """A :class:`ColorTransform` whose ``op`` takes and returns a PIL image (e.g.
    ``lambda im: ImageEnhance.Contrast(im).enhance(1.5)``)."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.asarray(super().apply_image(Image.fromarray(img)))

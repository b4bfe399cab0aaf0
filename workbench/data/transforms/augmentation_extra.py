"""More augmentations, as detectron2's: ``RandomApply``, large-scale-jitter resizing
(``ResizeScale`` + ``FixedSizeCrop``), rotation, extent, photometric jitter
(brightness / contrast / saturation / lighting), ``RandomResize``, category-area-constrained and
min-IoU crops.

All draw from numpy's global generator (``MinIoURandomCrop``: Python's ``random``), as
detectron2 does, so seeding those gives detectron2's choices.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .augmentation import Augmentation, AugInput, _as_augmentation
from .transform import CropTransform, NoOpTransform, ResizeTransform, Transform, TransformList
from .transform_extra import BlendTransform, ExtentTransform, PadTransform, RotationTransform

__all__ = [
    "FixedSizeCrop", "MinIoURandomCrop", "RandomApply", "RandomBrightness", "RandomContrast",
    "RandomCrop_CategoryAreaConstraint", "RandomExtent", "RandomLighting", "RandomResize",
    "RandomRotation", "RandomSaturation", "ResizeScale",
]


class RandomApply(Augmentation):
    """Applies ``tfm_or_aug`` with probability ``prob``, else nothing.

    Args:
        tfm_or_aug: A :class:`Transform` or an :class:`Augmentation`.
        prob: Probability in [0, 1].
    """

    def __init__(self, tfm_or_aug: Union[Transform, Augmentation], prob: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply probability must be in [0, 1], got {prob}.")
        self.aug = _as_augmentation(tfm_or_aug)
        self.prob = prob

    def get_transform(self, *args) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input: AugInput) -> Transform:
        # One draw, then the wrapped augmentation reads the inputs it needs.
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()


class ResizeScale(Augmentation):
    """Draws a scale in ``[min_scale, max_scale]`` and resizes the image, keeping its aspect
    ratio, to fit in ``scale * (target_height, target_width)`` (the resize half of large-scale
    jitter; follow it with :class:`FixedSizeCrop`).

    Args:
        min_scale, max_scale: Range of the scale.
        target_height, target_width: Size of the box scaled.
        interp: PIL resampling filter.
    """

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int,
                 interp: int = Image.BILINEAR) -> None:
        super().__init__()
        self._init(locals())

    def _get_resize(self, image: np.ndarray, scale: float) -> Transform:
        input_size = image.shape[:2]
        target_scale_size = np.multiply((self.target_height, self.target_width), scale)
        output_scale = min(target_scale_size[0] / input_size[0], target_scale_size[1] / input_size[1])
        output_size = np.round(np.multiply(input_size, output_scale)).astype(int)
        return ResizeTransform(input_size[0], input_size[1], int(output_size[0]), int(output_size[1]), self.interp)

    def get_transform(self, image: np.ndarray) -> Transform:
        return self._get_resize(image, np.random.uniform(self.min_scale, self.max_scale))


class FixedSizeCrop(Augmentation):
    """Crops a random ``crop_size`` window when the image is larger, and (``pad=True``) pads
    right and bottom up to ``crop_size`` when it is smaller.

    Args:
        crop_size: (height, width) of the output.
        pad: Pad images smaller than ``crop_size``.
        pad_value: Image padding value.
        seg_pad_value: Segmentation padding value (255: detectron2's ignore label).
    """

    def __init__(self, crop_size: Tuple[int, int], pad: bool = True, pad_value: float = 128.0,
                 seg_pad_value: int = 255) -> None:
        super().__init__()
        if (not isinstance(crop_size, (tuple, list)) or len(crop_size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                           for v in crop_size)):
            raise ValueError(f"FixedSizeCrop(crop_size=) must be (height, width), two positive ints, "
                             f"got {crop_size!r}.")
        crop_size = (int(crop_size[0]), int(crop_size[1]))
        self._init(locals())

    def _get_crop(self, image: np.ndarray) -> Transform:
        input_size = image.shape[:2]
        max_offset = np.maximum(np.subtract(input_size, self.crop_size), 0)
        offset = np.round(np.multiply(max_offset, np.random.uniform(0.0, 1.0))).astype(int)
        return CropTransform(offset[1], offset[0], self.crop_size[1], self.crop_size[0],
                             input_size[1], input_size[0])

    def _get_pad(self, image: np.ndarray) -> Transform:
        input_size = image.shape[:2]
        pad_size = np.maximum(np.subtract(self.crop_size, input_size), 0)
        original_size = np.minimum(input_size, self.crop_size)
        return PadTransform(0, 0, pad_size[1], pad_size[0], original_size[1], original_size[0],
                            self.pad_value, self.seg_pad_value)

    def get_transform(self, image: np.ndarray) -> TransformList:
        transforms = [self._get_crop(image)]
        if self.pad:
            transforms.append(self._get_pad(image))
        return TransformList(transforms)


class RandomRotation(Augmentation):
    """Rotates by a random angle (degrees, counter-clockwise).

    Args:
        angle: ``[min, max]`` with ``sample_style="range"``, angles to choose from with
            ``"choice"``; a number means that angle.
        expand: Enlarge the output to keep the whole image.
        center: Relative centre(s): ``[[minx, miny], [maxx, maxy]]`` for "range", a list of
            ``[x, y]`` for "choice" ((0, 0) top-left, (1, 1) bottom-right); None: image centre.
        sample_style: ``"range"`` or ``"choice"``.
        interp: See :class:`RotationTransform`.
    """

    def __init__(self, angle, expand: bool = True, center=None, sample_style: str = "range", interp=None) -> None:
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}.")
        self.is_range = sample_style == "range"
        if isinstance(angle, (float, int)):
            angle = (angle, angle)
        if center is not None and isinstance(center[0], (float, int)):
            center = (center, center)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        center = None
        if self.is_range:
            angle = np.random.uniform(self.angle[0], self.angle[1])
            if self.center is not None:
                center = (np.random.uniform(self.center[0][0], self.center[1][0]),
                          np.random.uniform(self.center[0][1], self.center[1][1]))
        else:
            angle = np.random.choice(self.angle)
            if self.center is not None:
                center = self.center[np.random.choice(len(self.center))]
        if center is not None:
            center = (w * center[0], h * center[1])  # relative -> absolute
        if angle % 360 == 0:
            return NoOpTransform()
        return RotationTransform(h, w, angle, expand=self.expand, center=center, interp=self.interp)


class RandomCrop_CategoryAreaConstraint(Augmentation):  # noqa: N801 (detectron2's name)
    """A :class:`RandomCrop` that retries (up to 10 times) until no single category covers more
    than ``single_category_max_area`` of the window in the semantic labels.

    Args:
        crop_type, crop_size: As :class:`RandomCrop`.
        single_category_max_area: Maximum area fraction of one category; 1.0 disables the check.
        ignored_category: Label left out of the check (e.g. the ignore label).
    """

    def __init__(self, crop_type: str, crop_size, single_category_max_area: float = 1.0,
                 ignored_category: Optional[int] = None) -> None:
        from .augmentation_impl import RandomCrop  # imported here: augmentation_impl re-exports us

        self.crop_aug = RandomCrop(crop_type, crop_size)
        self._init(locals())

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        h, w = sem_seg.shape
        for _ in range(10):
            crop_size = self.crop_aug.get_crop_size((h, w))
            y0 = np.random.randint(h - crop_size[0] + 1)
            x0 = np.random.randint(w - crop_size[1] + 1)
            labels, cnt = np.unique(sem_seg[y0:y0 + crop_size[0], x0:x0 + crop_size[1]], return_counts=True)
            if self.ignored_category is not None:
                cnt = cnt[labels != self.ignored_category]
            if len(cnt) > 1 and np.max(cnt) < np.sum(cnt) * self.single_category_max_area:
                break
        return CropTransform(x0, y0, crop_size[1], crop_size[0])


class RandomExtent(Augmentation):
    """Crops a random rectangle, scaled and shifted around the image centre; parts outside the
    image are black. The output has the rectangle's size.

    Args:
        scale_range: (lo, hi) range of the rectangle size relative to the image.
        shift_range: (x, y): the rectangle moves by ``w * x * U(-0.5, 0.5)`` and
            ``h * y * U(-0.5, 0.5)``; 0 keeps it centred.
    """

    def __init__(self, scale_range: Tuple[float, float], shift_range: Tuple[float, float]) -> None:
        super().__init__()
        for name, value in (("scale_range", scale_range), ("shift_range", shift_range)):
            if (not isinstance(value, (tuple, list, np.ndarray)) or len(value) != 2
                    or not all(isinstance(v, (int, float, np.number)) for v in value)):
                raise ValueError(f"RandomExtent({name}=) must be two numbers, got {value!r}.")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"RandomExtent(scale_range=) must be (lo, hi) with 0 < lo <= hi, got {scale_range!r}.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        img_h, img_w = image.shape[:2]
        src_rect = np.array([-0.5 * img_w, -0.5 * img_h, 0.5 * img_w, 0.5 * img_h])  # centred
        scale = np.random.uniform(self.scale_range[0], self.scale_range[1])
        src_rect *= scale
        src_rect[0::2] += self.shift_range[0] * img_w * (np.random.rand() - 0.5)
        src_rect[1::2] += self.shift_range[1] * img_h * (np.random.rand() - 0.5)
        src_rect[0::2] += 0.5 * img_w
        src_rect[1::2] += 0.5 * img_h
        out_h, out_w = int(src_rect[3] - src_rect[1]), int(src_rect[2] - src_rect[0])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"RandomExtent(scale_range={tuple(self.scale_range)}) drew scale {scale:.4g}, which "
                             f"turns the {img_h}x{img_w} (h x w) image into a {out_h}x{out_w} output; the "
                             f"output must be at least 1x1, raise scale_range's lower bound.")
        return ExtentTransform(src_rect=tuple(float(v) for v in src_rect), output_size=(out_h, out_w))


class RandomContrast(Augmentation):
    """Blends with the image mean, intensity ``w ~ U(intensity_min, intensity_max)``
    (< 1 less contrast, 1 unchanged, > 1 more)."""

    def __init__(self, intensity_min: float, intensity_max: float) -> None:
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=image.mean(), src_weight=1 - w, dst_weight=w)


class RandomBrightness(Augmentation):
    """Scales intensities by ``w ~ U(intensity_min, intensity_max)`` (a blend with black)."""

    def __init__(self, intensity_min: float, intensity_max: float) -> None:
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=0, src_weight=1 - w, dst_weight=w)


class RandomSaturation(Augmentation):
    """Blends an RGB image with its grey version, weight ``w ~ U(intensity_min, intensity_max)``
    on the image (< 1 greyer, > 1 more saturated)."""

    def __init__(self, intensity_min: float, intensity_max: float) -> None:
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.shape[-1] != 3:
            raise ValueError(f"RandomSaturation needs an RGB (H, W, 3) image, got shape {image.shape}.")
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        grayscale = image.dot([0.299, 0.587, 0.114])[:, :, np.newaxis]
        return BlendTransform(src_image=grayscale, src_weight=1 - w, dst_weight=w)


class RandomLighting(Augmentation):
    """AlexNet's PCA lighting noise (ImageNet eigenvectors) on an RGB image.

    Args:
        scale: Standard deviation of the weights of the principal components.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self._init(locals())
        self.eigen_vecs = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                                    [-0.5836, -0.6948, 0.4203]])
        self.eigen_vals = np.array([0.2175, 0.0188, 0.0045])

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.shape[-1] != 3:
            raise ValueError(f"RandomLighting needs an RGB (H, W, 3) image, got shape {image.shape}.")
        weights = np.random.normal(scale=self.scale, size=3)
        return BlendTransform(src_image=self.eigen_vecs.dot(weights * self.eigen_vals),
                              src_weight=1.0, dst_weight=1.0)


class RandomResize(Augmentation):
    """Resizes to an (h, w) drawn from ``shape_list``."""

    def __init__(self, shape_list: Sequence[Tuple[int, int]], interp: int = Image.BILINEAR) -> None:
        self.shape_list = shape_list
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = self.shape_list[np.random.randint(low=0, high=len(self.shape_list))]
        return ResizeTransform(image.shape[0], image.shape[1], h, w, self.interp)


class MinIoURandomCrop(Augmentation):
    """SSD-style crop: draws a minimum IoU from ``min_ious`` (or 1: no crop), then a window of
    sides >= ``min_crop_size`` of the image, aspect ratio in [0.5, 2], whose IoU with every box
    is at least that minimum and which contains at least one box centre.

    Draws from Python's ``random``. (detectron2 calls ``random.uniform(w - new_w)`` with one
    argument, which raises; here the window origin is ``random.uniform(0, w - new_w)``.)

    Args:
        min_ious: Candidate minimum IoUs.
        min_crop_size: Minimum window side, relative to the image.
        mode_trials: Draws of the minimum IoU.
        crop_trials: Windows tried per minimum IoU.
    """

    def __init__(self, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size: float = 0.3,
                 mode_trials: int = 1000, crop_trials: int = 50) -> None:
        self.min_ious = min_ious
        self.sample_mode = (1, *min_ious, 0)
        self.min_crop_size = min_crop_size
        self.mode_trials = mode_trials
        self.crop_trials = crop_trials

    def get_transform(self, image: np.ndarray, boxes: Optional[np.ndarray]) -> Transform:
        """``boxes``: (N, 4) XYXY absolute boxes of the image, or None (then no crop)."""
        if boxes is None:
            return NoOpTransform()
        from workbench.structures import Boxes, pairwise_iou

        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        h, w = image.shape[:2]
        for _ in range(self.mode_trials):
            mode = random.choice(self.sample_mode)
            self.mode = mode
            if mode == 1:
                return NoOpTransform()
            for _ in range(self.crop_trials):
                new_w = random.uniform(self.min_crop_size * w, w)
                new_h = random.uniform(self.min_crop_size * h, h)
                if new_h / new_w < 0.5 or new_h / new_w > 2:
                    continue
                left = random.uniform(0, w - new_w)
                top = random.uniform(0, h - new_h)
                patch = np.array((int(left), int(top), int(left + new_w), int(top + new_h)))
                if patch[2] == patch[0] or patch[3] == patch[1]:
                    continue


                overlaps = pairwise_iou(Boxes(torch.as_tensor(patch.reshape(-1, 4), dtype=torch.float32)),
                                        Boxes(torch.as_tensor(boxes, dtype=torch.float32))).reshape(-1)
                if len(overlaps) > 0 and overlaps.min() < mode:
                    continue
                if len(overlaps) > 0:
                    center = (boxes[:, :2] + boxes[:, 2:]) / 2
                    inside = ((center[:, 0] > patch[0]) & (center[:, 1] > patch[1])
                              & (center[:, 0] < patch[2]) & (center[:, 1] < patch[3]))
                    if not inside.any():
                        continue
                return CropTransform(int(left), int(top), int(new_w), int(new_h))
        return NoOpTransform()



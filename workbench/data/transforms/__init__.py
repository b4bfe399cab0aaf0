"""Deterministic image transforms and the augmentations that choose them.

An :class:`Augmentation` looks at an input and returns a :class:`Transform`; the transform
then applies the same geometric change to the image, its coordinates and its segmentation::

    tfm = ResizeShortestEdge(800, 1333).get_transform(image)   # ResizeTransform(h, w, newh, neww)
    image = tfm.apply_image(image)
    boxes = tfm.apply_box(boxes)

Several augmentations run on an :class:`AugInput` (image + boxes + label map), returning the
:class:`TransformList` they chose, to apply to the rest of the annotations::

    aug_input = AugInput(image, sem_seg=labels)
    tfms = AugmentationList([ResizeShortestEdge(800, 1333), RandomFlip()])(aug_input)
    polygons = tfms.apply_polygons(polygons)
"""

from .augmentation import (
    Augmentation,
    AugInput,
    AugmentationList,
    StandardAugInput,
    TransformGen,
    apply_augmentations,
    apply_transform_gens,
)
from .augmentation_impl import RandomCrop, RandomFlip, Resize, ResizeShortestEdge
from .augmentation_impl import (  # the rest of detectron2's augmentations
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
from .transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from .transform import (  # the rest of detectron2's (and fvcore's) transforms
    BlendTransform,
    ColorTransform,
    ExtentTransform,
    GridSampleTransform,
    PadTransform,
    PILColorTransform,
    RotationTransform,
    ScaleTransform,
)

from . import rotated  # noqa: F401  (adds Transform.apply_rotated_box)

__all__ = [
    "AugInput", "Augmentation", "AugmentationList", "CropTransform", "HFlipTransform",
    "NoOpTransform", "RandomCrop", "RandomFlip", "Resize", "ResizeShortestEdge", "ResizeTransform",
    "StandardAugInput", "Transform", "TransformList", "VFlipTransform", "apply_augmentations",
    "apply_transform_gens",
    # detectron2's remaining transforms / augmentations
    "BlendTransform", "ColorTransform", "ExtentTransform", "FixedSizeCrop", "GridSampleTransform",
    "MinIoURandomCrop", "PILColorTransform", "PadTransform", "RandomApply", "RandomBrightness",
    "RandomContrast", "RandomCrop_CategoryAreaConstraint", "RandomExtent", "RandomLighting",
    "RandomResize", "RandomRotation", "RandomSaturation", "ResizeScale", "RotationTransform",
    "ScaleTransform", "TransformGen",
]

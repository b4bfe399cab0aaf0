"""Deterministic image transforms and the augmentations that choose them.

An :class:`Augmentation` looks at an input and returns a :class:`Transform`; the transform
then applies the same geometric change to the image, its coordinates and its segmentation::

    tfm = ResizeShortestEdge(800, 1333).get_transform(image)   # ResizeTransform(h, w, newh, neww)
    image = tfm.apply_image(image)
    boxes = tfm.apply_box(boxes)
"""

from .augmentation import Augmentation
from .augmentation_impl import ResizeShortestEdge
from .transform import NoOpTransform, ResizeTransform, Transform

__all__ = ["Augmentation", "NoOpTransform", "ResizeShortestEdge", "ResizeTransform", "Transform"]

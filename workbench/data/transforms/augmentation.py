"""The base class of augmentations: objects that choose a :class:`Transform` for an input.

An :class:`AugInput` carries an image and what must move with it (boxes, a segmentation map);
an augmentation called on it picks a transform, applies it in place and returns it, so that the
caller can apply the same transform to annotations it keeps elsewhere (polygons, keypoints)::

    aug_input = AugInput(image, sem_seg=labels)
    transforms = AugmentationList([ResizeShortestEdge(...), RandomFlip()])(aug_input)
    image, labels = aug_input.image, aug_input.sem_seg
    boxes = transforms.apply_box(boxes)
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .transform import Transform, TransformList

__all__ = [
    "Augmentation", "AugInput", "AugmentationList", "StandardAugInput", "TransformGen",
    "apply_augmentations", "apply_transform_gens",
]


class Augmentation:
    """Chooses a (possibly random) :class:`Transform` for an input.

    Subclasses implement :meth:`get_transform`, which must not modify its inputs; the returned
    transform is then applied to the image and to its annotations alike.
    """

    def _init(self, params: Optional[Dict[str, Any]] = None) -> None:
        """Stores the constructor's arguments as attributes (pass ``locals()``)."""
        for k, v in (params or {}).items():
            if k != "self" and not k.startswith("_"):
                setattr(self, k, v)

    #: Names of the :class:`AugInput` attributes passed to :meth:`get_transform`, in order.
    #: None (the default): read from ``get_transform``'s signature on first call, as detectron2
    #: does: one parameter means ``("image",)``, several mean their names (``(image, sem_seg)``
    #: -> ``("image", "sem_seg")``).
    input_args: Optional[Tuple[str, ...]] = None

    def get_transform(self, *args: Any) -> Transform:
        """Returns the transform to apply, given the inputs named by :attr:`input_args`
        (by default the (H, W) or (H, W, C) numpy image)."""
        raise NotImplementedError

    def __call__(self, aug_input: "AugInput") -> Transform:
        """Picks a transform for ``aug_input``, applies it to it in place and returns it."""
        args = []
        for name in self._get_input_args():
            if not hasattr(aug_input, name):
                raise AttributeError(
                    f"{type(self).__name__}.get_transform needs input '{name}', which "
                    f"{type(aug_input).__name__} does not have."
                )
            args.append(getattr(aug_input, name))
        tfm = self.get_transform(*args)
        if not isinstance(tfm, Transform):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform, got {type(tfm).__name__}."
            )
        aug_input.transform(tfm)
        return tfm

    def _get_input_args(self) -> Tuple[str, ...]:
        """:attr:`input_args`, first filled from ``get_transform``'s parameter names if None."""
        if self.input_args is None:
            params = list(inspect.signature(self.get_transform).parameters.values())
            if len(params) == 1:
                names: Tuple[str, ...] = ("image",)
            else:
                for p in params:
                    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                        raise TypeError(
                            f"{type(self).__name__}.get_transform takes *args or **kwargs, so its inputs "
                            "cannot be read from its signature: set `input_args` or override __call__."
                        )
                names = tuple(p.name for p in params)
            self.input_args = names
        return self.input_args

    @staticmethod
    def _rand_range(low: float = 1.0, high: Optional[float] = None, size: Any = None) -> Any:
        """Uniform in [low, high) (or [0, low) with one argument), from numpy's global generator."""
        if high is None:
            low, high = 0.0, low
        if size is None:
            size = []
        return np.random.uniform(low, high, size)

    def __repr__(self) -> str:
        try:
            sig = inspect.signature(self.__init__)
            args = []
            for name, param in sig.parameters.items():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(self, name):
                    continue
                value = getattr(self, name)
                if param.default is not param.empty and value is param.default:
                    continue
                args.append(f"{name}={value!r}")
            return f"{type(self).__name__}({', '.join(args)})"
        except (TypeError, ValueError):
            return super().__repr__()


class AugInput:
    """An image with the boxes and segmentation map that transform along with it.

    Args:
        image: (H, W) or (H, W, C) numpy array, uint8 or float.
        boxes: (N, 4) XYXY absolute boxes, or None.
        sem_seg: (H, W) integer label map, or None.
    """

    def __init__(self, image: np.ndarray, *, boxes: Optional[np.ndarray] = None,
                 sem_seg: Optional[np.ndarray] = None) -> None:
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            got = image.shape if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"AugInput expects an (H, W) or (H, W, C) numpy image, got {got}.")
        if sem_seg is not None and tuple(sem_seg.shape) != tuple(image.shape[:2]):
            raise ValueError(
                f"AugInput: sem_seg of shape {tuple(sem_seg.shape)} does not match the image's "
                f"(H, W) = {tuple(image.shape[:2])}."
            )
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Applies ``tfm`` to the image, boxes and segmentation in place."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(self, augmentations: Sequence[Augmentation]) -> TransformList:
        """Applies the augmentations in order; returns the transforms they chose."""
        return AugmentationList(augmentations)(self)


StandardAugInput = AugInput  # detectron2's older name


class AugmentationList(Augmentation):
    """Applies augmentations in order, each seeing the output of the previous ones."""

    def __init__(self, augs: Sequence[Union[Augmentation, Transform]]) -> None:
        super().__init__()
        self.augs: List[Augmentation] = [_as_augmentation(x) for x in augs]

    def __call__(self, aug_input: AugInput) -> TransformList:
        return TransformList([x(aug_input) for x in self.augs])

    def __repr__(self) -> str:
        return f"AugmentationList[{', '.join(repr(x) for x in self.augs)}]"


class _TransformToAug(Augmentation):
    """A fixed transform used where an augmentation is expected."""

    def __init__(self, tfm: Transform) -> None:
        self.tfm = tfm

    def get_transform(self, *args: Any) -> Transform:
        return self.tfm

    def __repr__(self) -> str:
        return repr(self.tfm)


def _as_augmentation(x: Union[Augmentation, Transform]) -> Augmentation:
    if isinstance(x, Augmentation):
        return x
    if isinstance(x, Transform):
        return _TransformToAug(x)
    raise TypeError(f"Expected an Augmentation or a Transform, got {type(x).__name__}.")


def apply_augmentations(augmentations: Sequence[Union[Augmentation, Transform]],
                        inputs: Union[np.ndarray, AugInput]
                        ) -> Tuple[Union[np.ndarray, AugInput], TransformList]:
    """Applies augmentations to an image or an :class:`AugInput`.

    Returns:
        ``(image, transforms)`` when given an image, ``(aug_input, transforms)`` otherwise.
    """
    image_only = isinstance(inputs, np.ndarray)
    aug_input = AugInput(inputs) if image_only else inputs
    tfms = AugmentationList(augmentations)(aug_input)
    return (aug_input.image if image_only else aug_input), tfms


apply_transform_gens = apply_augmentations  # detectron2's older name
TransformGen = Augmentation  # detectron2's older name
_transform_to_aug = _as_augmentation  # detectron2's private name, used by RandomApply

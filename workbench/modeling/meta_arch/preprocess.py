"""What every meta-architecture does before its backbone and after its heads.

Before: check the ``list[dict]`` inputs, move each "image" (C, H, W) to the model's device,
normalise it with ``PIXEL_MEAN`` / ``PIXEL_STD`` and pad the batch into an ``ImageList``
(N, C, Hp, Wp) whose sizes honour the backbone's ``size_divisibility`` (in channels-last
memory format for a CUDA inference with ``workbench.utils.perf``'s ``channels_last`` on).
After: rescale each image's results to its requested "height" / "width".
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from workbench.layers import move_device_like
from workbench.structures import ImageList, Instances
from workbench.utils import perf

from .postprocessing import detector_postprocess

__all__ = ["PixelNormalizer", "check_batched_inputs", "output_size", "postprocess_per_image"]


def _check_image(img, i: int, input_channels: int) -> None:
    """A (C, H, W) real-valued tensor with C = ``input_channels`` and H, W >= 1."""
    where = f"batched_inputs[{i}]['image']"
    expected = (
        f"expected a ({input_channels}, H, W) tensor with H, W >= 1: {input_channels} channels, one "
        "per value of cfg.MODEL.PIXEL_MEAN, in cfg.INPUT.FORMAT order, 0-255 values"
    )
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{where} is a {type(img).__name__}; {expected} (torch.as_tensor(np_image"
                        ".transpose(2, 0, 1)) for an (H, W, C) array).")
    got = f"got shape {tuple(img.shape)}, dtype {img.dtype}"
    if img.dtype == torch.bool or img.is_complex():
        raise TypeError(f"{where}: {expected}, in uint8 or a floating dtype; {got}.")
    if img.dim() != 3 or img.shape[0] != input_channels:
        if img.dim() == 2:
            hint = " A 2-D image has no channel dimension: use image[None] for a 1-channel model"
            if input_channels == 3:
                hint += ", or image.expand(3, -1, -1) for a grayscale image in this 3-channel one"
            hint += "."
        elif img.dim() == 3 and img.shape[-1] == input_channels:
            hint = " It looks channels-last (H, W, C): use image.permute(2, 0, 1)."
        else:
            hint = ""
        raise ValueError(f"{where}: {expected}; {got}.{hint}")
    if img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"{where} is empty: {expected}; {got}.")


def check_batched_inputs(batched_inputs: List[Dict], input_channels: int) -> None:
    """Fail with a message naming the culprit unless inputs are ``list[dict]`` with (C, H, W) images.

    Images may be uint8 or any real dtype; see :meth:`PixelNormalizer.preprocess_image` for how a
    dtype other than the model's is treated.
    """
    if not isinstance(batched_inputs, (list, tuple)):
        raise TypeError(
            "The model takes a list[dict], one dict per image with at least an 'image' key; got "
            f"{type(batched_inputs).__name__}."
        )
    for i, x in enumerate(batched_inputs):
        if not isinstance(x, dict) or "image" not in x:
            keys = list(x) if isinstance(x, dict) else type(x).__name__
            raise KeyError(f"batched_inputs[{i}] must be a dict with an 'image' key; got {keys}.")
        img = x["image"]
        _check_image(img, i, input_channels)
        if img.is_floating_point() and not bool(torch.isfinite(img).all()):
            bad = (~torch.isfinite(img)).nonzero()[0].tolist()
            raise ValueError(
                f"batched_inputs[{i}]['image'] has a non-finite value ({img[tuple(bad)].item()}) at "
                f"(channel, y, x) = {tuple(bad)}; images must hold finite 0-255 values."
            )
        for key in ("height", "width"):
            if key in x:
                _size_value(x[key], i, key)


def _size_value(v, i: int, key: str) -> int:
    """The int an input's "height" / "width" stands for, or a ValueError naming it.

    Accepted, as detectron2 does: a positive int (Python or numpy), an integral float such as
    480.0 (COCO jsons may store sizes as floats) and a one-element tensor holding either.
    """
    value = v
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool \
            and not value.is_complex():
        value = value.item()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"batched_inputs[{i}]['{key}'] must be a positive int (the output size in pixels); "
            f"got {v!r}."
        )
    return int(value)


def output_size(input_per_image: Dict, image_size: Tuple[int, int], i: int = 0) -> Tuple[int, int]:
    """The (height, width) to rescale an image's results to: its "height" / "width" as ints
    (see :func:`_size_value`), else ``image_size``. While tracing, tensor sizes are kept as they
    are so that the trace records them."""
    size = []
    for key, default in (("height", image_size[0]), ("width", image_size[1])):
        v = input_per_image.get(key, default)
        if key in input_per_image and not (isinstance(v, torch.Tensor) and torch.jit.is_tracing()):
            v = _size_value(v, i, key)
        size.append(v)
    return size[0], size[1]


class PixelNormalizer:
    """Mixin for an ``nn.Module`` with a ``backbone``: pixel statistics, device, preprocessing.

    Call :meth:`_register_pixel_stats` in ``__init__``. ``pixel_mean`` / ``pixel_std`` are
    non-persistent buffers (checkpoints' copies are ignored, as in detectron2), and they decide
    the model's ``device``.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def _register_pixel_stats(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        # (C,) -> (C, 1, 1), to broadcast over an image
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(
                f"PIXEL_MEAN {tuple(pixel_mean)} and PIXEL_STD {tuple(pixel_std)} must have the same "
                "length (one value per input channel)."
            )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _move_to_current_device(self, x: torch.Tensor) -> torch.Tensor:
        return move_device_like(x, self.pixel_mean)

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise, pad and batch the input images: (N, C, Hp, Wp).

        Each image is normalised in the promoted dtype of it and the model (uint8 and float32
        images: float32; float64: float64) and then cast to the model's dtype. detectron2 gives
        the batch the first image's dtype, so a float64 first image failed in the backbone
        ("expected scalar type Double"); a float64 image after a float32 one got exactly the
        numbers it gets here.
        """
        check_batched_inputs(batched_inputs, self.pixel_mean.shape[0])
        images = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        dtype = self.pixel_mean.dtype
        images = [x if x.dtype == dtype else x.to(dtype) for x in images]
        batch = ImageList.from_tensors(
            images, self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        if not getattr(self, "training", False):
            # workbench.utils.perf's channels_last switch (CUDA inference): same values, NHWC.
            batch.tensor = perf.channels_last(batch.tensor)
        return batch


def postprocess_per_image(results: List[Instances], batched_inputs: List[Dict],
                          image_sizes: List[Tuple[int, int]], key: str = "instances") -> List[Dict]:
    """``[{key: results rescaled to input i's "height"/"width" (default: its input size)}]``."""
    processed = []
    for i, (results_per_image, input_per_image, image_size) in enumerate(
            zip(results, batched_inputs, image_sizes)):
        height, width = output_size(input_per_image, image_size, i)
        processed.append({key: detector_postprocess(results_per_image, height, width)})
    return processed

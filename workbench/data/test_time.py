"""The test-time inputs of a cfg: what ``DefaultPredictor`` and ``inference_on_dataset`` feed a model.

One place turns a photo, an image file or a dataset dict into the model's input dict the way the
project's inference entry points do, so a trace of an image is the pass that was scored::

    inputs = InferenceInputs(cfg)
    inputs.from_image(bgr)              # DefaultPredictor(cfg)(bgr): format, ResizeShortestEdge
    inputs.from_dataset_dict(d)         # build_detection_test_loader(cfg, name): DatasetMapper
    inputs(x)                           # any of the above, a path, or a model input dict as is

Shapes: H x W the stored image; H' x W' after ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``;
C is 3 for BGR / RGB and 1 for "L". Every input dict carries "height" / "width" = H, W, so the
model's outputs are in the stored image's pixels.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np
import torch
from PIL import Image

from . import transforms as T
from .dataset_mapper import DatasetMapper

__all__ = ["InferenceInputs", "INPUT_FORMATS"]

INPUT_FORMATS = ("BGR", "RGB", "L")


class InferenceInputs:
    """Model input dicts made exactly as at test time (see the module docstring).

    Args:
        cfg: gives ``INPUT.FORMAT``, ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` and the
            mapper's test-mode settings.
    """

    def __init__(self, cfg) -> None:
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"cfg.INPUT.FORMAT must be one of {INPUT_FORMATS}, got "
                             f"{self.input_format!r}.")
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST],
                                        cfg.INPUT.MAX_SIZE_TEST)
        self._cfg = cfg
        self._mapper = None

    @property
    def mapper(self) -> DatasetMapper:
        """``DatasetMapper(cfg, is_train=False)``, what ``build_detection_test_loader`` uses."""
        if self._mapper is None:
            self._mapper = DatasetMapper(self._cfg, is_train=False)
        return self._mapper

    def from_image(self, image: np.ndarray, index: int = 0,
                   device: Optional[torch.device] = None) -> Dict[str, Any]:
        """(H, W, 3) uint8 BGR -> {"image": (C, H', W') float32, "height": H, "width": W}.

        With a ``device`` other than the CPU, the resized uint8 pixels are copied there and
        made float32 there: the same tensor, a quarter of the bytes through the host-to-device
        copy and no float conversion on the CPU (``DefaultPredictor`` on a GPU).
        """
        check_bgr_image(image, index)
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        elif self.input_format == "L":
            # PIL's ITU-R 601-2 luma, as detectron2's read_image(format="L").
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            image = np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
        image = self.aug.get_transform(image).apply_image(image)
        if device is not None and torch.device(device).type != "cpu":
            # (H', W', C) uint8 -> on the device -> (C, H', W') float32
            pixels = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device)
            tensor = pixels.permute(2, 0, 1).float().contiguous()
        else:
            # (H', W', C) -> (C, H', W')
            tensor = torch.as_tensor(np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def from_dataset_dict(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """A dataset dict (``DatasetCatalog.get(name)[i]``) -> its test-time input dict."""
        return self.mapper(dataset_dict)

    def __call__(self, item: Any, index: int = 0) -> Dict[str, Any]:
        """A model input dict (has "image": returned as is), a dataset dict, an image path
        or an (H, W, 3) uint8 BGR array -> the model input dict."""
        if isinstance(item, dict):
            if "image" in item:
                return item
            if "file_name" in item:
                return self.from_dataset_dict(item)
            raise KeyError(f"inputs[{index}] is a dict with neither 'image' (a model input) nor "
                           f"'file_name' (a dataset dict); got keys {sorted(item)}.")
        if isinstance(item, (str, os.PathLike)):
            if not os.path.isfile(item):
                raise FileNotFoundError(f"inputs[{index}]: no image file {os.fspath(item)!r}.")
            return self.from_dataset_dict({"file_name": os.fspath(item)})
        if isinstance(item, np.ndarray):
            return self.from_image(item, index)
        raise TypeError(f"inputs[{index}] must be a model input dict, a dataset dict, an image path "
                        f"or an (H, W, 3) uint8 BGR array, got {type(item).__name__}.")


def check_bgr_image(image: Any, index: int = 0) -> None:
    """Raise naming image ``index`` unless it is a non-empty (H, W, 3) uint8 array."""
    where = "image" if index == 0 else f"image {index}"
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"Expected {where} to be an (H, W, 3) uint8 numpy array in BGR order, got "
            f"{type(image).__name__}."
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"Expected {where} of shape (H, W, 3) in BGR order, got {image.shape}"
            + (" (a grayscale image? stack it to 3 channels)" if image.ndim == 2 else "") + "."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"Expected {where} to be non-empty, got shape {image.shape}.")
    if image.dtype != np.uint8:
        raise TypeError(
            f"Expected {where} with dtype uint8 (0..255), got {image.dtype}. Convert floats "
            "in [0, 1] with (img * 255).round().astype(np.uint8)."
        )

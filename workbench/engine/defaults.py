"""``DefaultPredictor``: a model built from a cfg, with its weights, that takes a photo.

Shapes: H x W the photo, H' x W' after ``ResizeShortestEdge`` (what the model sees); C is 3
for BGR / RGB and 1 for "L". Outputs are at H x W: the model rescales them to the
``height`` / ``width`` it is given, which are the photo's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch
from PIL import Image

from workbench.checkpoint import DetectionCheckpointer
from workbench.data import transforms as T
from workbench.modeling import build_model

__all__ = ["DefaultPredictor"]

_FORMATS = ("BGR", "RGB", "L")


class DefaultPredictor:
    """The model of ``cfg``, with ``cfg.MODEL.WEIGHTS`` loaded, in eval mode, for one image
    (or a few) at a time.

    It does what detectron2's ``DefaultPredictor`` does: takes an (H, W, 3) uint8 image in BGR
    order (what ``cv2.imread`` returns), converts it to ``cfg.INPUT.FORMAT``, resizes it with
    ``ResizeShortestEdge([MIN_SIZE_TEST] * 2, MAX_SIZE_TEST)``, and runs the model under
    ``torch.no_grad()`` with ``height`` / ``width`` set to the original size, so that outputs
    are in the original image's pixels.

    Args:
        cfg: A config; cloned, so later changes to it do not affect the predictor.

    Attributes:
        cfg: The predictor's own copy of the config.
        model: The model (``nn.Module``), in eval mode.
        aug: The resize (:class:`~workbench.data.transforms.ResizeShortestEdge`).
        input_format: ``cfg.INPUT.FORMAT``: "BGR", "RGB" or "L".

    Example::

        predictor = DefaultPredictor(cfg)
        bgr = np.asarray(Image.open("photo.jpg").convert("RGB"))[:, :, ::-1]
        instances = predictor(bgr)["instances"]
    """

    def __init__(self, cfg) -> None:
        self.cfg = cfg.clone()  # the model may modify its cfg
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in _FORMATS:
            raise ValueError(
                f"DefaultPredictor supports cfg.INPUT.FORMAT in {_FORMATS}, got {self.input_format!r}."
            )
        self.model = build_model(self.cfg)
        self.model.eval()
        DetectionCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MIN_SIZE_TEST], self.cfg.INPUT.MAX_SIZE_TEST
        )

    def __call__(self, original_image: Union[np.ndarray, Sequence[np.ndarray]]
                 ) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Runs the model on one image, or on a list of images in one batch.

        Args:
            original_image: An (H, W, 3) uint8 array in BGR order, or a list of them.

        Returns:
            For one image, the model's output dict for it (e.g. ``{"instances": Instances}``,
            at H x W). For a list, a list of such dicts from one batched model call (see
            :meth:`predict_batch`).
        """
        if isinstance(original_image, (list, tuple)):
            return self.predict_batch(original_image)
        return self.predict_batch([original_image], batched=False)[0]

    def predict_batch(self, original_images: Sequence[np.ndarray], *, batched: bool = True
                      ) -> List[Dict[str, Any]]:
        """Runs the model on several (H_i, W_i, 3) uint8 BGR images.

        Each image is converted and resized on its own. With ``batched=True`` all then go
        through the model in one call, padded to a common size, as in detectron2's batched
        inference; this is how the reference fixtures were made. Padding changes what deep
        features see (the padded area is not zero after the first conv + norm, and ResNet's
        receptive field spans the image), so results can differ from one-image calls: a little
        with trained weights, a lot with random ones. ``batched=False`` runs the images one
        at a time and gives exactly what ``predictor(image)`` gives for each.

        Returns:
            One output dict per image, in order.
        """
        if not isinstance(original_images, (list, tuple)):
            raise TypeError(
                f"predict_batch takes a list of images, got {type(original_images).__name__}."
            )
        inputs = [self._prepare(img, i) for i, img in enumerate(original_images)]
        with torch.no_grad():
            if not batched:
                return [self.model([x])[0] for x in inputs]
            return self.model(inputs) if inputs else []

    def _prepare(self, image: np.ndarray, index: int = 0) -> Dict[str, Any]:
        """(H, W, 3) uint8 BGR -> {"image": (C, H', W') float32 tensor, "height": H, "width": W}."""
        self._check_image(image, index)
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        elif self.input_format == "L":
            # PIL's ITU-R 601-2 luma, as detectron2's read_image(format="L").
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            image = np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
        image = self.aug.get_transform(image).apply_image(image)
        # (H', W', C) -> (C, H', W')
        tensor = torch.as_tensor(np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @staticmethod
    def _check_image(image: Any, index: int) -> None:
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

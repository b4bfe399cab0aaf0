"""``ImageList``: a batch of differently sized images padded into one tensor.

Shape legend:
    N: number of images.
    C_1..C_K: leading dims shared by all images (usually just C, the channels).
    Hi, Wi: size of image i before padding; H, W: padded batch size (H >= max Hi).

Images are padded at the bottom and right only, so pixel (y, x) of an image keeps its
coordinates in the batch. Semantics follow detectron2 0.6 (``detectron2/structures/image_list.py``),
including the ``padding_constraints`` argument of later releases.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["ImageList"]


class ImageList:
    """Images of varying sizes padded to a common size, plus the size of each before padding.

    Attributes:
        tensor: (N, H, W) or (N, C_1, ..., C_K, H, W) padded batch.
        image_sizes: list of (Hi, Wi) per image, the region of ``tensor[i]`` that is real.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: List[Tuple[int, int]]):
        """
        Args:
            tensor: the padded batch, (N, H, W) or (N, C_1, ..., C_K, H, W).
            image_sizes: (h, w) of each image; each may be smaller than (H, W).
        """
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Image ``idx`` without its padding, (Hi, Wi) or (C_1, ..., C_K, Hi, Wi); a view."""
        size = self.image_sizes[idx]
        return self.tensor[idx, ..., : size[0], : size[1]]

    def to(self, *args: Any, **kwargs: Any) -> "ImageList":
        """Apply ``Tensor.to`` (device and/or dtype) to the batch; sizes are kept."""
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: Optional[Dict[str, int]] = None,
    ) -> "ImageList":
        """Pad images to a common size and stack them.

        The common size is the per-dimension maximum over the batch, replaced by
        ``square_size`` on both sides if given, then rounded up to a multiple of the
        divisibility. The result lives on the device of ``tensors[0]``.

        Args:
            tensors: list or tuple of images, each (Hi, Wi) or (C_1, ..., C_K, Hi, Wi); all
                must share the leading dims.
            size_divisibility: if > 1, H and W are rounded up to a multiple of it (32 for
                a backbone with 5 stride-2 stages).
            pad_value: value written into the padding.
            padding_constraints: optional ``{"size_divisibility": int, "square_size": int}``;
                its ``size_divisibility`` overrides the argument, and ``square_size`` > 0 pads
                every image to a square of that size before the divisibility rounding.

        Returns:
            The padded ``ImageList``; ``image_sizes`` holds the original (Hi, Wi) as ints.

        Raises:
            ValueError: for an empty batch, an image with fewer than 2 dims, mismatched
                leading dims, or an image larger than ``square_size``.
            TypeError: if ``tensors`` is not a list/tuple of tensors.
        """
        if not isinstance(tensors, (tuple, list)):
            raise TypeError(
                f"ImageList.from_tensors expects a list or tuple of tensors, got "
                f"{type(tensors).__name__}"
            )
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors needs at least one image")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Image {i} is a {type(t).__name__}, expected a Tensor")
            if t.dim() < 2:
                raise ValueError(
                    f"Expected image {i} of shape (Hi, Wi) or (C, Hi, Wi), got {tuple(t.shape)}"
                )
            if t.shape[:-2] != tensors[0].shape[:-2]:
                raise ValueError(
                    f"Image {i} has shape {tuple(t.shape)}, but image 0 has shape "
                    f"{tuple(tensors[0].shape)}: all images must share the dims before (H, W) "
                    f"(e.g. the number of channels)"
                )

        image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)

        if padding_constraints is not None:
            square_size = int(padding_constraints.get("square_size", 0))
            if square_size > 0:
                if max_h > square_size or max_w > square_size:
                    # detectron2 would crop (single image) or fail in copy_ (batch); say why.
                    big = max(range(len(image_sizes)), key=lambda k: max(image_sizes[k]))
                    raise ValueError(
                        f"square_size={square_size} is smaller than the largest image "
                        f"({max_h}, {max_w}) (image {big} is {image_sizes[big]}). square_size comes "
                        f"from padding_constraints (the backbone's `padding_constraints`, "
                        f"its square_pad, e.g. FPN / ViTDet's SimpleFeaturePyramid(square_pad=...)): "
                        f"every image must fit in it, so the test-time resize's max_size "
                        f"(e.g. INPUT.MAX_SIZE_TEST / ResizeShortestEdge max_size) must not "
                        f"exceed {square_size}"
                    )
                max_h = max_w = square_size
            if "size_divisibility" in padding_constraints:
                size_divisibility = int(padding_constraints["size_divisibility"])
        if size_divisibility > 1:
            stride = size_divisibility
            max_h = (max_h + stride - 1) // stride * stride
            max_w = (max_w + stride - 1) // stride * stride

        batch_shape = [len(tensors), *tensors[0].shape[:-2], max_h, max_w]
        batched = tensors[0].new_full(batch_shape, pad_value)  # same dtype and device
        for i, img in enumerate(tensors):
            # Top-left corner: padding goes to the bottom and right.
            batched[i, ..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batched.contiguous(), image_sizes)

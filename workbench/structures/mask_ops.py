"""Pasting fixed-size ROI masks (e.g. 28 x 28 mask-head outputs) back into the full image.

Shape legend:
    N: number of masks / boxes (one mask per box).
    M: side of the square ROI mask (28 for the standard Mask R-CNN head).
    H, W: image height and width in pixels; h', w': the sub-window actually computed.

This reproduces ``_do_paste_mask`` / ``paste_masks_in_image`` of detectron2 0.6
(``detectron2/layers/mask_ops.py``): the ROI mask is treated as M x M pixels covering the box
exactly, each image pixel centre (x + 0.5, y + 0.5) is mapped into the box's [-1, 1]
normalised coordinates and the mask is bilinearly sampled there with ``F.grid_sample``
(``align_corners=False``, zero outside). On CPU masks are pasted one at a time over the
smallest window containing the box; elsewhere they are pasted in chunks over the whole image,
with chunks sized to stay under ``GPU_MEM_LIMIT``.

On CPU, with ``workbench.utils.perf``'s ``fast_paste`` on, the same per-box computation runs
without the per-box tensor bookkeeping around it (see ``_paste_masks_cpu``): bit-identical
results, memory bounded by one box window plus the output.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch
from torch.nn import functional as F

from workbench.utils import perf

from .boxes import Boxes

__all__ = ["paste_masks_in_image"]

BYTES_PER_FLOAT = 4
# Upper bound for one chunk of float masks when pasting on an accelerator (as in detectron2).
GPU_MEM_LIMIT = 1024**3


def _do_paste_mask(
    masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int, skip_empty: bool = True
) -> Tuple[torch.Tensor, Tuple[slice, ...]]:
    """Resample ROI masks into image coordinates.

    Args:
        masks: (N, 1, M, M) mask probabilities (or any float values).
        boxes: (N, 4) XYXY boxes in image pixels, one per mask.
        img_h: image height.
        img_w: image width.
        skip_empty: compute only the window that bounds all boxes (plus one pixel of margin);
            an important saving on CPU.

    Returns:
        (pasted, region): ``pasted`` is (N, H, W) if not ``skip_empty``, else (N, h', w'),
        with ``region`` the (row slice, column slice) of the window in the image ("()" when
        the whole image was computed).
    """
    device = masks.device
    if skip_empty:
        x0_int, y0_int = (
            torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32).tolist()
        )
        x1_int = int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(torch.int32))
        y1_int = int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(torch.int32))
        # A box entirely outside the image gives an inverted window; make it empty instead
        # (detectron2 would fail in torch.arange). Nothing is pasted then.
        x1_int, y1_int = max(x1_int, x0_int), max(y1_int, y0_int)
    else:
        x0_int, y0_int = 0, 0
        x1_int, y1_int = img_w, img_h
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)  # each (N, 1)
    n = masks.shape[0]

    # Pixel centres of the window, then normalised to the box: -1 / +1 at the box edges.
    img_y = torch.arange(y0_int, y1_int, device=device, dtype=torch.float32) + 0.5  # (h',)
    img_x = torch.arange(x0_int, x1_int, device=device, dtype=torch.float32) + 0.5  # (w',)
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1  # (N, h')
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1  # (N, w')

    gx = img_x[:, None, :].expand(n, img_y.size(1), img_x.size(1))  # (N, h', w')
    gy = img_y[:, :, None].expand(n, img_y.size(1), img_x.size(1))  # (N, h', w')
    grid = torch.stack([gx, gy], dim=3)  # (N, h', w', 2), (x, y) order for grid_sample

    if not masks.dtype.is_floating_point:
        masks = masks.float()
    img_masks = F.grid_sample(masks, grid.to(masks.dtype), align_corners=False)  # (N, 1, h', w')

    if skip_empty:
        return img_masks[:, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))
    return img_masks[:, 0], ()


def paste_masks_in_image(
    masks: torch.Tensor,
    boxes: Union[Boxes, torch.Tensor],
    image_shape: Tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """Paste square ROI masks into full-size image masks, each at its box.

    Args:
        masks: (N, M, M) mask probabilities in [0, 1], mask i drawn inside box i.
        boxes: N boxes (``Boxes`` or (N, 4) tensor), XYXY image pixels.
        image_shape: (H, W) of the output.
        threshold: binarisation threshold; pixels with value >= threshold are True. A negative
            threshold skips binarisation and returns ``uint8`` values ``prob * 255`` (for
            visualisation).

    Returns:
        (N, H, W) bool masks (``uint8`` if ``threshold < 0``) on the device of ``boxes``.

    Raises:
        ValueError: if masks are not (N, M, M) or boxes do not match them.
    """
    if masks.dim() != 3 or masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"Expected square masks of shape (N, M, M), got {tuple(masks.shape)}")
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    out_dtype = torch.bool if threshold >= 0 else torch.uint8
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    n = len(masks)
    if boxes.dim() != 2 or boxes.shape != (n, 4):
        raise ValueError(
            f"Expected boxes of shape ({n}, 4) to match masks {tuple(masks.shape)}, "
            f"got {tuple(boxes.shape)}"
        )
    device = boxes.device
    if n == 0:
        # detectron2 returns uint8 here; we keep the dtype of the non-empty case.
        return torch.zeros((0, img_h, img_w), dtype=out_dtype, device=device)

    # CPU: one mask at a time over its own small window is the cheapest.
    # Elsewhere: big chunks over the whole image, as many as fit under GPU_MEM_LIMIT.
    on_cpu = device.type == "cpu"
    if on_cpu and perf.get_inference_options().fast_paste:
        return _paste_masks_cpu(masks, boxes, img_h, img_w, threshold)
    if on_cpu:
        num_chunks = n
    else:
        num_chunks = int(math.ceil(n * img_h * img_w * BYTES_PER_FLOAT / GPU_MEM_LIMIT))
        if num_chunks > n:
            raise RuntimeError(
                f"An image of {img_h}x{img_w} does not fit in GPU_MEM_LIMIT={GPU_MEM_LIMIT} "
                "bytes even one mask at a time; raise mask_ops.GPU_MEM_LIMIT"
            )
    chunks = torch.chunk(torch.arange(n, device=device), num_chunks)

    img_masks = torch.zeros(n, img_h, img_w, device=device, dtype=out_dtype)
    for inds in chunks:
        chunk_boxes = boxes[inds]
        masks_chunk, spatial_inds = _do_paste_mask(
            masks[inds, None, :, :], chunk_boxes, img_h, img_w, skip_empty=on_cpu
        )
        if threshold >= 0:
            masks_chunk = masks_chunk >= threshold
        else:
            masks_chunk = (masks_chunk * 255).to(dtype=torch.uint8)
        img_masks[(inds,) + spatial_inds] = masks_chunk
    return img_masks



def _paste_masks_cpu(masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int,
                     threshold: float) -> torch.Tensor:
    """The CPU path of :func:`paste_masks_in_image`, bit for bit, with less overhead.

    The same computation as one ``_do_paste_mask`` call per box (the box's own window, the same
    sampling coordinates, the same ``grid_sample`` call), without what surrounded it: windows
    for all boxes come from one vectorised computation, the grid is written directly instead of
    expanded and stacked, and each result goes to its slice of the output (a view) instead of
    through advanced indexing with a one-element index tensor.
    """
    n = masks.shape[0]
    out_dtype = torch.bool if threshold >= 0 else torch.uint8
    img_masks = torch.zeros(n, img_h, img_w, dtype=out_dtype)
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    # Windows [x0, x1) x [y0, y1) exactly as _do_paste_mask computes them for a single box.
    lo = torch.clamp(boxes[:, :2].floor() - 1, min=0).to(torch.int32)  # (N, 2): x0, y0
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w).to(torch.int32)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h).to(torch.int32)
    windows = torch.stack([lo[:, 0], lo[:, 1], x1, y1], dim=1).tolist()
    for i, (wx0, wy0, wx1, wy1) in enumerate(windows):
        wx1, wy1 = max(wx1, wx0), max(wy1, wy0)
        if wx1 == wx0 or wy1 == wy0:
            continue
        bx0, by0, bx1, by1 = torch.split(boxes[i:i + 1], 1, dim=1)  # each (1, 1)
        img_y = torch.arange(wy0, wy1, dtype=torch.float32) + 0.5  # (h',)
        img_x = torch.arange(wx0, wx1, dtype=torch.float32) + 0.5  # (w',)
        img_y = (img_y - by0) / (by1 - by0) * 2 - 1  # (1, h')
        img_x = (img_x - bx0) / (bx1 - bx0) * 2 - 1  # (1, w')
        grid = torch.empty(1, wy1 - wy0, wx1 - wx0, 2, dtype=masks.dtype)  # (x, y) last
        grid[..., 0] = img_x[:, None, :]
        grid[..., 1] = img_y[:, :, None]
        pasted = F.grid_sample(masks[i:i + 1, None], grid, align_corners=False)[0, 0]  # (h', w')
        target = img_masks[i, wy0:wy1, wx0:wx1]
        if threshold >= 0:
            torch.ge(pasted, threshold, out=target)
        else:
            target.copy_((pasted * 255).to(dtype=torch.uint8))
    return img_masks

"""Non-maximum suppression on torchvision's kernels.

Boxes are Tensor[N, 4] in XYXY absolute pixels.
"""

from __future__ import annotations

import torch
from torchvision.ops import boxes as box_ops
from torchvision.ops import nms

from workbench.utils import perf

# detectron2 defines the rotated variants in layers/nms.py; workbench in layers/nms_rotated.py.
from .nms_rotated import batched_nms_rotated, nms_rotated

__all__ = ["nms", "batched_nms", "nms_rotated", "batched_nms_rotated"]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS run independently per category ``idxs``; returns kept indices by decreasing score.

    Same contract as ``torchvision.ops.batched_nms``; boxes are cast to float32 first, since
    the coordinate-offset trick loses precision in half precision.
    """
    if boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms expects boxes of shape (N, 4), got {tuple(boxes.shape)}.")
    boxes = boxes.float()
    # torchvision loops over the categories itself above this size (its "vanilla" path); on
    # CPU the categories can go to several threads instead, with the same result.
    if (boxes.numel() > 4000 and boxes.device.type == "cpu" and torch.get_num_threads() > 1
            and perf.get_inference_options().threaded_box_ops and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()):
        return _batched_nms_threads(boxes, scores, idxs, iou_threshold)
    if (boxes.device.type != "cpu" and boxes.numel() <= _VANILLA_ABOVE_ON_DEVICE
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()):
        return _batched_nms_offsets(boxes, scores, idxs, iou_threshold)
    return box_ops.batched_nms(boxes, scores, idxs, iou_threshold)


# torchvision's batched_nms loops over the categories above this many box coordinates off the CPU.
_VANILLA_ABOVE_ON_DEVICE = 100_000


def _batched_nms_offsets(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                         iou_threshold: float) -> torch.Tensor:
    """torchvision's coordinate trick (each category's boxes shifted by ``category * (max + 1)``
    so that categories never overlap), the same numbers, without its host-made
    ``torch.tensor(1)``: on a GPU, copying that to the device waits for the stream."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)  # (N,)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_threads(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                         iou_threshold: float) -> torch.Tensor:
    """torchvision's ``_batched_nms_vanilla`` with the per-category NMS calls on threads."""
    groups = [torch.where(idxs == c)[0] for c in torch.unique(idxs)]
    if len(groups) < 2:
        return box_ops.batched_nms(boxes, scores, idxs, iou_threshold)
    with torch.no_grad():
        kept = perf.map_in_threads(
            lambda ind: ind[nms(boxes[ind], scores[ind], iou_threshold)], groups)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for k in kept:
        keep_mask[k] = True
    keep_indices = torch.where(keep_mask)[0]
    return keep_indices[scores[keep_indices].sort(descending=True)[1]]

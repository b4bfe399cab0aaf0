"""Non-maximum suppression on torchvision's kernels.

Boxes are Tensor[N, 4] in XYXY absolute pixels.
"""

from __future__ import annotations

import torch
from torchvision.ops import boxes as box_ops
from torchvision.ops import nms

__all__ = ["nms", "batched_nms"]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS run independently per category ``idxs``; returns kept indices by decreasing score.

    Same contract as ``torchvision.ops.batched_nms``; boxes are cast to float32 first, since
    the coordinate-offset trick loses precision in half precision.
    """
    if boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms expects boxes of shape (N, 4), got {tuple(boxes.shape)}.")
    return box_ops.batched_nms(boxes.float(), scores, idxs, iou_threshold)

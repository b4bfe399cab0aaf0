"""Box regression and classification losses.

Boxes are Tensor[N, 4] in XYXY; all functions take a ``reduction`` of "none" | "mean" | "sum".
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["smooth_l1_loss", "giou_loss", "diou_loss", "ciou_loss", "sigmoid_focal_loss",
           "sigmoid_focal_loss_jit"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}.")


def smooth_l1_loss(input: torch.Tensor, target: torch.Tensor, beta: float,
                   reduction: str = "none") -> torch.Tensor:
    """Huber-like loss: 0.5 x^2 / beta below ``beta``, |x| - 0.5 beta above; L1 when beta < 1e-5."""
    if beta < 1e-5:
        # The quadratic branch would divide by ~0; it is plain L1 in the limit.
        loss = torch.abs(input - target)
    else:
        n = torch.abs(input - target)
        loss = torch.where(n < beta, 0.5 * n ** 2 / beta, n - 0.5 * beta)
    return _reduce(loss, reduction)


def _box_terms(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float):
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    if not ((x2 >= x1).all() and (y2 >= y1).all()):
        raise ValueError("Predicted boxes must be XYXY with x1 >= x0 and y1 >= y0.")
    xi1, yi1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xi2, yi2 = torch.min(x2, x2g), torch.min(y2, y2g)
    inter = torch.zeros_like(x1)
    mask = (yi2 > yi1) & (xi2 > xi1)
    inter[mask] = (xi2[mask] - xi1[mask]) * (yi2[mask] - yi1[mask])
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    # Smallest enclosing box.
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    return (x1, y1, x2, y2, x1g, y1g, x2g, y2g), iou, union, (xc1, yc1, xc2, yc2)


def giou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
              eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU loss, 1 - GIoU (Rezatofighi et al. 2019)."""
    _, iou, union, (xc1, yc1, xc2, yc2) = _box_terms(boxes1, boxes2, eps)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    giou = iou - (area_c - union) / (area_c + eps)
    return _reduce(1 - giou, reduction)


def diou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
              eps: float = 1e-7) -> torch.Tensor:
    """Distance IoU loss, 1 - IoU + centre distance^2 / enclosing diagonal^2 (Zheng et al. 2020)."""
    (x1, y1, x2, y2, x1g, y1g, x2g, y2g), iou, _, (xc1, yc1, xc2, yc2) = _box_terms(boxes1, boxes2, eps)
    diag_len = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p, y_p = (x2 + x1) / 2, (y2 + y1) / 2
    x_g, y_g = (x1g + x2g) / 2, (y1g + y2g) / 2
    distance = (x_p - x_g) ** 2 + (y_p - y_g) ** 2
    return _reduce(1 - iou + distance / diag_len, reduction)


def ciou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
              eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU loss: DIoU plus an aspect-ratio consistency term."""
    (x1, y1, x2, y2, x1g, y1g, x2g, y2g), iou, _, (xc1, yc1, xc2, yc2) = _box_terms(boxes1, boxes2, eps)
    diag_len = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p, y_p = (x2 + x1) / 2, (y2 + y1) / 2
    x_g, y_g = (x1g + x2g) / 2, (y1g + y2g) / 2
    distance = (x_p - x_g) ** 2 + (y_p - y_g) ** 2
    w_pred, h_pred = x2 - x1, y2 - y1
    w_gt, h_gt = x2g - x1g, y2g - y1g
    v = (4 / (math.pi ** 2)) * torch.pow(torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + distance / diag_len + alpha * v, reduction)


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = -1,
                       gamma: float = 2, reduction: str = "none") -> torch.Tensor:
    """Focal loss on logits (Lin et al. 2017); ``alpha < 0`` disables class weighting."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


sigmoid_focal_loss_jit = sigmoid_focal_loss

"""Thin wrappers around torch ops that detection code uses everywhere."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "cat", "Conv2d", "ConvTranspose2d", "Linear", "interpolate", "nonzero_tuple",
    "move_device_like", "cross_entropy", "shapes_to_tensor", "empty_input_loss_func_wrapper",
    "BatchNorm2d",
]

BatchNorm2d = nn.BatchNorm2d
ConvTranspose2d = nn.ConvTranspose2d
Linear = nn.Linear
interpolate = F.interpolate


def shapes_to_tensor(x: List[int], device: Optional[torch.device] = None) -> torch.Tensor:
    """Turn a list of ints (possibly traced tensors) into a 1-D tensor."""
    if torch.jit.is_scripting():
        return torch.as_tensor(x, device=device)
    if torch.jit.is_tracing():
        return torch.stack([torch.as_tensor(t, device=device) for t in x])
    return torch.as_tensor(x, device=device)


def cat(tensors: List[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat`` that skips the copy for a single tensor."""
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat() expects a list or tuple of tensors, got {type(tensors).__name__}.")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def nonzero_tuple(x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``x.nonzero(as_tuple=True)``, also for 0-d inputs."""
    if x.dim() == 0:
        return x.unsqueeze(0).nonzero().unbind(1)
    return x.nonzero().unbind(1)


def move_device_like(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Move ``src`` to ``dst``'s device (a no-op when they already agree)."""
    return src.to(dst.device)


def cross_entropy(input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean",
                  **kwargs) -> torch.Tensor:
    """``F.cross_entropy`` that returns a differentiable 0 for empty inputs instead of NaN."""
    if target.numel() == 0 and reduction == "mean":
        return input.sum() * 0.0
    return F.cross_entropy(input, target, reduction=reduction, **kwargs)


def empty_input_loss_func_wrapper(loss_func):
    def wrapped(input, target, *, reduction="mean", **kwargs):
        if target.numel() == 0 and reduction == "mean":
            return input.sum() * 0.0
        return loss_func(input, target, reduction=reduction, **kwargs)

    return wrapped


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm layer and activation.

    Args (besides those of ``nn.Conv2d``):
        norm: a module applied after the convolution (e.g. from ``get_norm``), or None.
        activation: a callable applied last (e.g. ``F.relu``), or None.
    """

    def __init__(self, *args, **kwargs) -> None:
        norm = kwargs.pop("norm", None)
        activation = kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and x.numel() == 0 and self.training:
            # SyncBN and GN cannot take empty batches in training.
            if isinstance(self.norm, nn.SyncBatchNorm):
                raise ValueError("SyncBatchNorm does not support empty inputs.")
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

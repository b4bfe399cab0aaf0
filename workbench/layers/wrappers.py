"""Thin wrappers around torch ops that detection code uses everywhere."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from workbench.utils import perf

from .batch_norm import FrozenBatchNorm2d, NaiveSyncBatchNorm

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
        if self.norm is not None and not self.training and _fold_allowed(self, x):
            folded = self.folded_weight_bias()
            if folded is not None:
                x = F.conv2d(x, folded[0], folded[1], self.stride, self.padding, self.dilation,
                             self.groups)
                if self.activation is not None:
                    x = self.activation(x)
                return x
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    # -- batch-norm folding (inference) ------------------------------------------------------

    def folded_weight_bias(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The (weight, bias) of one convolution equal to this conv followed by its norm.

        For a ``FrozenBatchNorm2d`` or an eval-mode ``BatchNorm2d`` with running statistics,
        with s = gamma / sqrt(running_var + eps) per output channel::

            weight' = weight * s[:, None, None, None]
            bias'   = (bias - running_mean) * s + beta      (bias = 0 when the conv has none)

        Both are computed in float64 and rounded once to the weight's dtype. Nothing is
        stored: the folded tensors are recomputed on every call (about 7 ms for all 53 convs of
        a ResNet-50 on 2 threads), so they always reflect the current weights and statistics,
        however those were changed, and cost no memory between calls.

        Returns None when the norm cannot be folded (another kind of norm, or a BatchNorm in
        training mode or without running statistics).
        """
        norm = self.norm
        if not _is_foldable_norm(norm):
            return None
        with torch.no_grad():
            w = self.weight.detach()
            scale = norm.running_var.detach().double().add(norm.eps).rsqrt()
            if norm.weight is not None:
                scale = scale * norm.weight.detach().double()
            shift = -norm.running_mean.detach().double()
            if self.bias is not None:
                shift = shift + self.bias.detach().double()
            shift = shift * scale
            if norm.bias is not None:
                shift = shift + norm.bias.detach().double()
            # (C_out,) -> (C_out, 1, 1, 1): every output filter scaled by its channel's s
            fused_w = (w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
            fused_b = shift.to(w.dtype)
        return fused_w, fused_b


def _is_foldable_norm(norm) -> bool:
    if type(norm) is FrozenBatchNorm2d:
        return True
    if type(norm) in (nn.BatchNorm2d, nn.SyncBatchNorm, NaiveSyncBatchNorm):
        return (not norm.training and norm.track_running_stats
                and norm.running_mean is not None and norm.running_var is not None)
    return False


def _fold_allowed(conv: Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` may use its folded weight for input ``x`` (see ``workbench.utils.perf``)."""
    if not perf.get_inference_options().fold_batchnorm or not perf._plain_eager():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return False  # autograd must see the conv and the norm as they are
    norm = conv.norm
    # Hooks on the norm (e.g. "res2.0.conv1.norm") must see the conv output and run: no folding.
    if norm._forward_hooks or norm._forward_pre_hooks or perf.global_module_hooks():
        return False
    return True


def _onednn_safe_conv(conv: Conv2d) -> bool:
    """A ``Conv2d`` runs on blocked tensors if its norm (if any) is folded away."""
    if conv.padding_mode != "zeros":
        return False
    act = conv.activation
    if not (act is None or act is F.relu or act is F.relu_ or type(act) is nn.ReLU):
        return False
    if conv.norm is None:
        return True
    return perf.get_inference_options().fold_batchnorm and _is_foldable_norm(conv.norm)


perf.register_onednn_safe(Conv2d, _onednn_safe_conv, skip_children=("norm",))

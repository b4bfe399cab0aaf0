"""``LayerNorm`` over the channel axis of channels-first feature maps (ConvNeXt / ViTDet style).

Shapes: N images, C channels, H x W spatial size. Input and output are (N, C, H, W); the mean
and variance are taken over C alone, separately for every (n, h, w) position. This differs
from ``nn.GroupNorm(1, C)``, which pools over C, H and W together, and from ``nn.LayerNorm``,
which normalises the trailing axes of a channels-last tensor.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerNorm"]


class LayerNorm(nn.Module):
    """Per-position normalisation over channels with a learnt per-channel scale and shift.

    ``y = weight[c] * (x - mean_c(x)) / sqrt(var_c(x) + eps) + bias[c]``, where the mean and
    (biased) variance run over the channel axis 1. Parameters are named ``weight`` and ``bias``
    as in detectron2's ``layers.LayerNorm``, so its checkpoints load unchanged.

    Args:
        normalized_shape: number of channels C.
        eps: added to the variance before the square root.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(normalized_shape, int) or normalized_shape <= 0:
            raise ValueError(f"LayerNorm normalized_shape must be a positive channel count, "
                             f"got {normalized_shape!r}.")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise an (N, C, ...) tensor over axis 1; same shape out."""
        if x.dim() < 2 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f"LayerNorm expects input of shape "
                             f"(N, {self.normalized_shape[0]}, ...), got {tuple(x.shape)}.")
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        # (C,) -> (C, 1, ..., 1) so the affine broadcasts over the spatial axes.
        view = (-1,) + (1,) * (x.dim() - 2)
        return self.weight.view(view) * x + self.bias.view(view)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}"

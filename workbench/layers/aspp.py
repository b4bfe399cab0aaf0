"""``ASPP``: Atrous Spatial Pyramid Pooling (DeepLab v3 / v3+), as detectron2's ``layers/aspp.py``.

Five parallel branches look at the same map: a 1x1 conv, three 3x3 convs with growing dilation
and an image-pooling branch (average pooling + 1x1 conv, upsampled back). Their outputs are
concatenated and projected back to ``out_channels`` by a 1x1 conv.

Shape legend:
    N          images in the batch
    C_in       ``in_channels``
    C          ``out_channels``
    H, W       size of the input map (kept by every branch and by the output)
    kh, kw     ``pool_kernel_size``

(N, C_in, H, W) -> 5 x (N, C, H, W) -> (N, 5*C, H, W) -> (N, C, H, W).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .batch_norm import get_norm
from .blocks import DepthwiseSeparableConv2d
from .weight_init import c2_xavier_fill
from .wrappers import Conv2d

__all__ = ["ASPP"]


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling.

    Children: ``convs`` (an ``nn.ModuleList`` of the 1x1 branch, the three atrous branches and
    the image-pooling ``nn.Sequential(pool, Conv2d)``) and ``project``, the names detectron2's
    checkpoints use (``convs.0.weight``, ``convs.1.norm.weight``, ``convs.4.1.weight``,
    ``project.weight``, ...).
    """

    # (in_channels, out_channels, dilations) are positional and the rest keyword-only, as in
    # detectron2, so DeepLab heads written against it port unchanged.
    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int], *,
                 norm: Union[str, Callable, None], activation: Callable[[Tensor], Tensor],
                 pool_kernel_size: Optional[Sequence[int]] = None, dropout: float = 0.0,
                 use_depthwise_separable_conv: bool = False) -> None:
        """
        Args:
            in_channels: C_in.
            out_channels: C, of every branch and of the output.
            dilations: the 3 dilations (and paddings) of the atrous 3x3 branches.
            norm: norm of every conv except the image-pooling one (a 1x1 map has nothing to
                normalise over); see :func:`~workbench.layers.get_norm`. Convs have a bias only
                when ``norm`` is "".
            activation: applied after every conv; each conv gets its own deep copy.
            pool_kernel_size: (kh, kw) of the image-pooling branch's average pool (stride 1),
                or None for global average pooling. When given, H and W must be multiples of
                kh and kw; set it to the training feature size so that the branch pools
                globally in training and keeps the same window at test time.
            dropout: dropout rate on the output in training (DeepLab uses 0.1).
            use_depthwise_separable_conv: make the atrous branches
                :class:`DepthwiseSeparableConv2d` (DeepLab v3+), norm and activation on both
                of its convs.
        """
        super().__init__()
        if len(dilations) != 3:
            raise ValueError(f"ASPP expects 3 dilations, got {len(dilations)}: {list(dilations)}.")
        if pool_kernel_size is not None and len(pool_kernel_size) != 2:
            raise ValueError(f"ASPP pool_kernel_size must be (kh, kw) or None, got {pool_kernel_size}.")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"ASPP dropout must be in [0, 1], got {dropout}.")
        self.pool_kernel_size = None if pool_kernel_size is None else tuple(pool_kernel_size)
        self.dropout = dropout
        use_bias = norm == ""

        self.convs = nn.ModuleList()
        self.convs.append(Conv2d(in_channels, out_channels, kernel_size=1, bias=use_bias,
                                 norm=get_norm(norm, out_channels), activation=deepcopy(activation)))
        c2_xavier_fill(self.convs[-1])
        for dilation in dilations:
            if use_depthwise_separable_conv:
                # Its own default (MSRA) init, as in detectron2.
                self.convs.append(DepthwiseSeparableConv2d(
                    in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation,
                    norm1=norm, activation1=deepcopy(activation),
                    norm2=norm, activation2=deepcopy(activation)))
            else:
                self.convs.append(Conv2d(in_channels, out_channels, kernel_size=3, padding=dilation,
                                         dilation=dilation, bias=use_bias,
                                         norm=get_norm(norm, out_channels),
                                         activation=deepcopy(activation)))
                c2_xavier_fill(self.convs[-1])
        # Image pooling: no norm (the TF original has a BatchNorm on the 1x1 pooled map).
        pool = (nn.AdaptiveAvgPool2d(1) if self.pool_kernel_size is None
                else nn.AvgPool2d(kernel_size=self.pool_kernel_size, stride=1))
        image_pooling = nn.Sequential(
            pool, Conv2d(in_channels, out_channels, 1, bias=True, activation=deepcopy(activation)))
        c2_xavier_fill(image_pooling[1])
        self.convs.append(image_pooling)

        self.project = Conv2d(5 * out_channels, out_channels, kernel_size=1, bias=use_bias,
                              norm=get_norm(norm, out_channels), activation=deepcopy(activation))
        c2_xavier_fill(self.project)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"ASPP expects a map of shape (N, C, H, W), got {tuple(x.shape)}.")
        size = x.shape[-2:]
        if self.pool_kernel_size is not None:
            kh, kw = self.pool_kernel_size
            if size[0] % kh or size[1] % kw:
                raise ValueError(
                    f"ASPP pool_kernel_size {self.pool_kernel_size} must divide the input size "
                    f"{tuple(size)}."
                )
        res = [conv(x) for conv in self.convs]
        # The pooled branch is (N, C, 1, 1) or (N, C, H-kh+1, W-kw+1): back to (N, C, H, W).
        res[-1] = F.interpolate(res[-1], size=size, mode="bilinear", align_corners=False)
        res = torch.cat(res, dim=1)  # 5 x (N, C, H, W) -> (N, 5*C, H, W)
        res = self.project(res)
        return F.dropout(res, self.dropout, training=self.training) if self.dropout > 0 else res

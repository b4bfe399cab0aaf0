"""``ROIAlign`` as a module, on torchvision's ``roi_align`` kernel.

Shapes: input (N, C, H, W); rois (R, 5) as (batch index, x0, y0, x1, y1) in input-image pixels;
output (R, C, output_size[0], output_size[1]).
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn
from torchvision.ops import roi_align

__all__ = ["ROIAlign"]


class ROIAlign(nn.Module):
    """Bilinear RoI pooling.

    Args:
        output_size: (h, w) of the pooled map.
        spatial_scale: feature-map size / image size (1 / stride).
        sampling_ratio: samples per bin along each axis; 0 means adaptive ceil(roi_size / bin).
        aligned: shift box coordinates by -0.5 pixel so that pixel centres sit at integer
            + 0.5 (detectron2's ``ROIAlignV2``). ``False`` reproduces the original Mask R-CNN op.
    """

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float,
                 sampling_ratio: int, aligned: bool = True) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if not (rois.dim() == 2 and rois.size(1) == 5):
            raise ValueError(f"ROIAlign expects rois of shape (R, 5), got {tuple(rois.shape)}.")
        if input.is_quantized:
            input = input.dequantize()
        return roi_align(input, rois.to(dtype=input.dtype), self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")

"""ROIAlign for rotated boxes, in plain PyTorch (bilinear sampling through ``grid_sample``).

Shape legend:
    N:      images in the batch; C channels; H x W the feature map.
    R:      ROIs; rois (R, 6) rows (batch index, xc, yc, w, h, angle) in input-image pixels,
            angle in degrees counter-clockwise.
    Ph, Pw: pooled output size; Gh, Gw the samples per bin along each axis.

Semantics follow detectron2's ``ROIAlignRotated`` CPU kernel: always "aligned" (a continuous
coordinate c has pixel neighbours floor(c - 0.5) and ceil(c - 0.5)); each output bin averages
Gh x Gw bilinear samples taken on a regular grid of the box, the grid rotated by the angle about
the box centre (so a box at +90 degrees gives the output rotated by -90 degrees); with
``sampling_ratio <= 0`` the samples per bin are ``ceil(roi_h / Ph)`` and ``ceil(roi_w / Pw)``
per ROI (after ``spatial_scale``). A sample more than one pixel outside the map is 0; one within
a pixel of it reads the border (the kernel clamps it), which is ``grid_sample``'s "border"
padding. Autograd flows to the input through ``grid_sample``.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ROIAlignRotated", "roi_align_rotated"]

# Sampled values (one per channel) materialised per chunk of ROIs.
_VALUES_PER_CHUNK = 1 << 24
# Most samples one ROI may take (Ph * Pw * Gh * Gw): an adaptive grid (sampling_ratio <= 0) on
# an absurdly large ROI would otherwise run for hours.
_MAX_SAMPLES_PER_ROI = 1 << 26


def _pair(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or a pair, got {size}.")
    return size


def _sample_points(rois: torch.Tensor, spatial_scale: float, pooled: Tuple[int, int],
                   rows: Tuple[int, int], cols: Tuple[int, int],
                   grid_hw: torch.Tensor) -> torch.Tensor:
    """(x, y) feature-map positions of samples ``rows[0] <= iy < rows[1]`` and
    ``cols[0] <= ix < cols[1]`` of every bin: (R, Ph, Pw, rows[1] - rows[0], cols[1] - cols[0], 2).

    ``grid_hw`` (R, 2) is each ROI's own sample grid, which sets the sample spacing (samples
    beyond it are masked by the caller).
    """
    ph, pw = pooled
    dev, dt = rois.device, rois.dtype
    cx = rois[:, 1] * spatial_scale - 0.5  # the aligned half-pixel offset
    cy = rois[:, 2] * spatial_scale - 0.5
    roi_w, roi_h = rois[:, 3] * spatial_scale, rois[:, 4] * spatial_scale
    theta = rois[:, 5] * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    bin_h, bin_w = roi_h / ph, roi_w / pw  # (R,)
    # Offsets from the box centre along its own axes; (R, Ph, 1, Gh, 1) and (R, 1, Pw, 1, Gw).
    iy = (torch.arange(*rows, device=dev, dtype=dt) + 0.5)[None, :] / grid_hw[:, 0:1]  # (R, Gh)
    ix = (torch.arange(*cols, device=dev, dtype=dt) + 0.5)[None, :] / grid_hw[:, 1:2]  # (R, Gw)
    py = torch.arange(ph, device=dev, dtype=dt)
    px = torch.arange(pw, device=dev, dtype=dt)
    yy = (-roi_h / 2)[:, None, None] + bin_h[:, None, None] * (py[None, :, None] + iy[:, None, :])
    xx = (-roi_w / 2)[:, None, None] + bin_w[:, None, None] * (px[None, :, None] + ix[:, None, :])
    yy = yy[:, :, None, :, None]  # (R, Ph, Gh) -> (R, Ph, 1, Gh, 1)
    xx = xx[:, None, :, None, :]  # (R, Pw, Gw) -> (R, 1, Pw, 1, Gw)
    c, s = cos.view(-1, 1, 1, 1, 1), sin.view(-1, 1, 1, 1, 1)
    y = yy * c - xx * s + cy.view(-1, 1, 1, 1, 1)
    x = yy * s + xx * c + cx.view(-1, 1, 1, 1, 1)
    return torch.stack(torch.broadcast_tensors(x, y), dim=-1)


def _pool_chunk(feature: torch.Tensor, rois: torch.Tensor, spatial_scale: float,
                pooled: Tuple[int, int], grid_hw: torch.Tensor) -> torch.Tensor:
    """Pool ROIs of one image ``feature`` (C, H, W); returns (R, C, Ph, Pw).

    The samples are taken a block of grid rows and columns at a time, so that a huge ROI with
    an adaptive sampling grid never needs more than about ``_VALUES_PER_CHUNK`` values at once.
    """
    C, H, W = feature.shape
    ph, pw = pooled
    R = rois.shape[0]
    gh, gw = (int(v) for v in grid_hw.amax(0).clamp(min=1).tolist())
    per_sample = R * C * ph * pw  # values per (grid row, grid column)
    cstep = max(1, min(gw, _VALUES_PER_CHUNK // per_sample))
    rstep = max(1, _VALUES_PER_CHUNK // (per_sample * cstep))
    total = feature.new_zeros((C, R, ph, pw))
    dev = rois.device
    for r0 in range(0, gh, rstep):
        r1 = min(gh, r0 + rstep)
        for c0 in range(0, gw, cstep):
            c1 = min(gw, c0 + cstep)
            pts = _sample_points(rois, spatial_scale, pooled, (r0, r1), (c0, c1),
                                 grid_hw.to(rois.dtype))
            x, y = pts[..., 0], pts[..., 1]  # each (R, Ph, Pw, Gh', Gw')
            # Samples beyond the ROI's own grid and samples more than a pixel off the map count 0.
            own_r = torch.arange(r0, r1, device=dev)[None, :] < grid_hw[:, 0:1]  # (R, Gh')
            own_c = torch.arange(c0, c1, device=dev)[None, :] < grid_hw[:, 1:2]  # (R, Gw')
            own = own_r[:, None, None, :, None] & own_c[:, None, None, None, :]
            inside = (y >= -1.0) & (y <= H) & (x >= -1.0) & (x <= W)
            weight = (own & inside).to(feature.dtype).reshape(1, R, ph, pw, -1)
            # grid_sample (align_corners=False) maps a normalised g to pixel ((g + 1) W - 1) / 2.
            grid = torch.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], dim=-1)
            grid = grid.reshape(1, 1, -1, 2).to(feature.dtype)  # (1, 1, R*Ph*Pw*Gh'*Gw', 2)
            values = F.grid_sample(feature[None], grid, mode="bilinear", padding_mode="border",
                                   align_corners=False)  # (1, C, 1, S)
            total = total + (values.view(C, R, ph, pw, -1) * weight).sum(-1)
    count = (grid_hw[:, 0] * grid_hw[:, 1]).clamp(min=1).to(feature.dtype)  # (R,)
    return (total / count.view(1, R, 1, 1)).permute(1, 0, 2, 3)  # (C, R, Ph, Pw) -> (R, C, ..)


def roi_align_rotated(input: torch.Tensor, rois: torch.Tensor,
                      output_size: Union[int, Tuple[int, int]], spatial_scale: float,
                      sampling_ratio: int) -> torch.Tensor:
    """Bilinear pooling of rotated boxes (detectron2's ``roi_align_rotated``).

    Args:
        input: (N, C, H, W) feature map.
        rois: (R, 6) rows (batch index, xc, yc, w, h, angle in degrees) in input-image pixels.
        output_size: Ph, or (Ph, Pw).
        spatial_scale: feature-map size / image size (1 / stride).
        sampling_ratio: samples per bin along each axis; <= 0 means ceil(roi side / bin count)
            for each ROI.

    Returns:
        (R, C, Ph, Pw) in the dtype of ``input`` (half precision is computed in float32).
    """
    if input.dim() != 4:
        raise ValueError(f"roi_align_rotated expects input of shape (N, C, H, W), got "
                         f"{tuple(input.shape)}.")
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(f"roi_align_rotated expects rois of shape (R, 6) as (batch index, xc, yc, "
                         f"w, h, angle), got {tuple(rois.shape)}.")
    ph, pw = _pair(output_size)
    orig_dtype = input.dtype
    if orig_dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    rois = rois.to(device=input.device, dtype=input.dtype)
    N, C, H, W = input.shape
    R = rois.shape[0]
    finite = torch.isfinite(rois).all(1)
    if R and not bool(finite.all()):
        j = int((~finite).nonzero()[0, 0])
        raise ValueError(f"roi_align_rotated: ROI {j} is not finite: {rois[j].tolist()}.")
    if R and bool(((rois[:, 3] < 0) | (rois[:, 4] < 0)).any()):
        raise ValueError("roi_align_rotated: ROIs must have non-negative width and height.")
    output = input.new_zeros((R, C, ph, pw))
    if R == 0:
        return output.to(orig_dtype)
    if sampling_ratio > 0:
        grid_hw = torch.full((R, 2), int(sampling_ratio), dtype=torch.int64, device=input.device)
    else:
        grid_hw = torch.stack([torch.ceil(rois[:, 4] * spatial_scale / ph),
                               torch.ceil(rois[:, 3] * spatial_scale / pw)], dim=1)
        samples = grid_hw.clamp(min=1).double().prod(1) * (ph * pw)  # (R,)
        if bool((samples > _MAX_SAMPLES_PER_ROI).any()):
            j = int((samples > _MAX_SAMPLES_PER_ROI).nonzero()[0, 0])
            raise ValueError(
                f"roi_align_rotated: ROI {j} ({rois[j, 3].item():g} x {rois[j, 4].item():g} px) "
                f"with sampling_ratio={sampling_ratio} (adaptive) would take "
                f"{samples[j].item():.3g} samples, over the limit of {_MAX_SAMPLES_PER_ROI}: "
                "pass a positive sampling_ratio, or clip the boxes.")
        grid_hw = grid_hw.long()
    batch = rois[:, 0].long()
    if bool(((batch < 0) | (batch >= N)).any()):
        raise ValueError(f"roi_align_rotated: batch indices must lie in [0, {N}), got "
                         f"{batch.min().item()}..{batch.max().item()}.")
    # ROIs with similar grids go together (sorted by their larger side), so that a chunk's
    # padded grid wastes little; a chunk holds as many as fit the budget at its largest grid.
    side = grid_hw.clamp(min=1).amax(1)
    order = torch.argsort(side, stable=True)
    cost = (C * ph * pw * side[order] ** 2).cpu().numpy()  # padded values per ROI, ascending
    batch_sorted = batch[order].cpu().numpy()
    parts, where = [], []
    for n in range(N):
        sel = np.flatnonzero(batch_sorted == n)
        start = 0
        while start < len(sel):
            # Cost of sel[start:end] is (end - start) * cost of its last (largest) ROI.
            fits = (np.arange(1, len(sel) - start + 1) * cost[sel[start:]]) <= _VALUES_PER_CHUNK
            end = start + max(1, int(np.argmin(fits)) if not fits.all() else len(fits))
            idx = order[torch.as_tensor(sel[start:end], device=order.device)]
            parts.append(_pool_chunk(input[n], rois[idx], spatial_scale, (ph, pw), grid_hw[idx]))
            where.append(idx)
            start = end
    # Out-of-place scatter (index_put), so autograd reaches every chunk.
    output = output.index_put((torch.cat(where),), torch.cat(parts))
    return output.to(orig_dtype)


class ROIAlignRotated(nn.Module):
    """Bilinear RoI pooling of rotated boxes, always with the aligned (half-pixel) convention.

    Args:
        output_size: (Ph, Pw) of the pooled map, or an int for both.
        spatial_scale: feature-map size / image size (1 / stride).
        sampling_ratio: samples per bin along each axis; 0 means adaptive ceil(roi size / bins).
    """

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float,
                 sampling_ratio: int) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: (N, C, H, W).
            rois: (R, 6) rows (batch index, xc, yc, w, h, angle in degrees).

        Returns:
            (R, C, Ph, Pw).
        """
        if not (rois.dim() == 2 and rois.size(1) == 6):
            raise ValueError(f"ROIAlignRotated expects rois of shape (R, 6), got "
                             f"{tuple(rois.shape)}.")
        return roi_align_rotated(input, rois, self.output_size, self.spatial_scale,
                                 self.sampling_ratio)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}")

"""Deformable convolutions, v1 (Dai et al. 2017) and modulated v2 (Zhu et al. 2019).

Shapes: N images, C_in / C_out channels, H x W input, Ho x Wo output, kh x kw kernel,
K = kh * kw kernel positions, G deformable groups (``deformable_groups``).

    input   (N, C_in, H, W)
    offset  (N, G * K * 2, Ho, Wo)   channel ((g * K) + k) * 2 + 0 is dy, ... + 1 is dx
    mask    (N, G * K, Ho, Wo)       channel g * K + k (modulated only; usually a sigmoid)
    output  (N, C_out, Ho, Wo)

Kernel position k = i * kw + j is row i, column j of the kernel. Output pixel (y, x) reads input
channel c (of deformable group g = c // (C_in / G)) at the fractional point

    (y * stride_h - pad_h + i * dilation_h + dy,  x * stride_w - pad_w + j * dilation_w + dx)

by bilinear interpolation, corners outside the image counting as 0 (a point at or beyond one
pixel outside reads 0), times ``mask`` in the modulated version. This is the layout of
detectron2's CUDA kernel (``deform_conv_cuda_kernel.cu``: per deformable group, per kernel
position, dy then dx) and also that of ``torchvision.ops.deform_conv2d``, so detectron2
checkpoints (e.g. the ``conv2_offset`` layers of ``DeformBottleneckBlock``) give the same
output here without any reordering. Unlike detectron2's kernel, which only runs on CUDA, these
modules run on CPU and CUDA, with gradients on both, for every ``deformable_groups``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "ModulatedDeformConv"]

IntOrPair = Union[int, Tuple[int, int]]


class _DeformConvBase(nn.Module):
    """Shared constructor checks, shape checks and the call into torchvision."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair, padding: IntOrPair, dilation: IntOrPair, groups: int,
                 deformable_groups: int, bias: bool, norm: Optional[nn.Module],
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        super().__init__()
        name = type(self).__name__
        if groups < 1 or in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups ({groups}).")
        if deformable_groups < 1 or in_channels % deformable_groups != 0:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by "
                             f"deformable_groups ({deformable_groups}).")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation
        # Allocated uninitialised, then drawn below: the same random draws as detectron2.
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.constant_(self.bias, 0)

    def _geometry(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        return _pair(self.stride), _pair(self.padding), _pair(self.dilation)

    def _output_hw(self, h: int, w: int) -> List[int]:
        stride, padding, dilation = self._geometry()
        return [(size + 2 * p - (d * (k - 1) + 1)) // s + 1
                for size, p, d, k, s in zip((h, w), padding, dilation, self.kernel_size, stride)]

    def _check(self, x: torch.Tensor, offset: torch.Tensor,
               mask: Optional[torch.Tensor]) -> List[int]:
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name} expects an input of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}.")
        n = x.shape[0]
        ho, wo = self._output_hw(x.shape[2], x.shape[3])
        positions = self.kernel_size[0] * self.kernel_size[1]
        expected = (n, 2 * self.deformable_groups * positions, ho, wo)
        if tuple(offset.shape) != expected:
            raise ValueError(f"{name}: expected offset of shape (N, 2 * deformable_groups * "
                             f"kh * kw, Ho, Wo) = {expected} for an input of shape "
                             f"{tuple(x.shape)}, got {tuple(offset.shape)}.")
        if mask is not None:
            expected = (n, self.deformable_groups * positions, ho, wo)
            if tuple(mask.shape) != expected:
                raise ValueError(f"{name}: expected mask of shape (N, deformable_groups * "
                                 f"kh * kw, Ho, Wo) = {expected} for an input of shape "
                                 f"{tuple(x.shape)}, got {tuple(mask.shape)}.")
        return [n, self.out_channels, ho, wo]

    def _run(self, x: torch.Tensor, offset: torch.Tensor,
             mask: Optional[torch.Tensor]) -> torch.Tensor:
        out_shape = self._check(x, offset, mask)
        if x.numel() == 0:
            # An empty batch (or empty map) gives an empty output of the right shape, still
            # attached to the graph so that backward reaches every input with zero gradients.
            # Like detectron2, norm and activation are not applied to it.
            anchor = x.sum() + offset.sum() + self.weight.sum()
            if mask is not None:
                anchor = anchor + mask.sum()
            return x.new_zeros(out_shape) + 0 * anchor
        stride, padding, dilation = self._geometry()
        x = deform_conv2d(x, offset, self.weight, self.bias, stride=stride, padding=padding,
                          dilation=dilation, mask=mask)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}")


class DeformConv(_DeformConvBase):
    """Deformable convolution (v1): each kernel tap samples at a learned fractional offset.

    Parameters are named ``weight`` (C_out, C_in / groups, kh, kw) and, if ``bias``, ``bias``;
    ``norm`` is a submodule, so detectron2 state dicts load unchanged.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (kh, kw).
        stride: int or pair.
        padding: int or pair.
        dilation: int or pair.
        groups: groups of the convolution (as in ``nn.Conv2d``).
        deformable_groups: number of channel groups with their own offsets.
        bias: add a learned bias (initialised to 0). detectron2 rejects ``True`` here.
        norm: a module applied after the convolution, or None.
        activation: a callable applied last, or None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: IntOrPair = 0, dilation: IntOrPair = 1,
                 groups: int = 1, deformable_groups: int = 1, bias: bool = False,
                 norm: Optional[nn.Module] = None,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, deformable_groups, bias, norm, activation)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (N, C_in, H, W) with offsets (N, 2 * G * kh * kw, Ho, Wo).

        Returns:
            (N, C_out, Ho, Wo), after ``norm`` and ``activation``.
        """
        return self._run(x, offset, None)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution (v2): deformable taps, each scaled by a mask value.

    Same parameters and arguments as :class:`DeformConv`, except that ``bias`` defaults to
    True (initialised to 0). As in detectron2, ``stride``, ``padding`` and ``dilation`` are
    kept as given (detectron2 takes ints only; pairs work here too).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: IntOrPair = 0, dilation: IntOrPair = 1,
                 groups: int = 1, deformable_groups: int = 1, bias: bool = True,
                 norm: Optional[nn.Module] = None,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, deformable_groups, bias, norm, activation)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation

    @property
    def with_bias(self) -> bool:
        """detectron2's name for ``bias is not None``."""
        return self.bias is not None

    def forward(self, x: torch.Tensor, offset: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (N, C_in, H, W) with offsets (N, 2 * G * kh * kw, Ho, Wo) and
        modulation ``mask`` (N, G * kh * kw, Ho, Wo) (not squashed here: pass a sigmoid).

        Returns:
            (N, C_out, Ho, Wo), after ``norm`` and ``activation``.
        """
        return self._run(x, offset, mask)

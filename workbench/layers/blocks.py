"""``CNNBlockBase`` (a conv block that knows its channels and stride and can freeze) and
``DepthwiseSeparableConv2d``.

Shapes: N images, C_in / C_out channels, H x W input size, s the block's stride;
a block maps (N, C_in, H, W) -> (N, C_out, H/s, W/s).
"""

from __future__ import annotations

from torch import Tensor, nn

from .batch_norm import FrozenBatchNorm2d, get_norm
from .weight_init import c2_msra_fill
from .wrappers import Conv2d

__all__ = ["CNNBlockBase", "DepthwiseSeparableConv2d"]


class CNNBlockBase(nn.Module):
    """A block whose input and output are NCHW tensors, with declared channels and stride.

    ``ResNet`` reads ``in_channels``, ``out_channels`` and ``stride`` to compute the shapes of
    its outputs without running the network, so subclasses must honour them.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: total downsampling factor of the block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """Stop training this block: no parameter needs a gradient, batch norms are frozen.

        Every ``BatchNorm2d`` / ``SyncBatchNorm`` inside is replaced by a ``FrozenBatchNorm2d``
        carrying the same statistics, so ``train()`` no longer updates them either.

        Returns:
            The block itself.
        """
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k depthwise convolution followed by a 1 x 1 pointwise one.

    Maps (N, C_in, H, W) -> (N, C_out, H', W') with H', W' those of the depthwise conv (the
    pointwise conv keeps the size). Xception puts norm and activation on the second conv only;
    MobileNet on both: each conv takes its own ``norm*`` / ``activation*``. A conv without a
    norm has a bias, one with a norm has none.

    Parameters (no norm): C_in * k * k + C_in (depthwise) + C_in * C_out + C_out (pointwise),
    against C_in * C_out * k * k + C_out for the full k x k conv.

    Children are ``depthwise`` and ``pointwise`` (:class:`~workbench.layers.Conv2d`, with the
    norm as their ``norm`` child), the state-dict names detectron2 uses.
    """

    # Positional (in_channels, out_channels, kernel_size, padding, dilation) as in detectron2,
    # so that code calling it the detectron2 way (ASPP, DeepLab) ports unchanged.
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 dilation: int = 1, *, norm1=None, activation1=None, norm2=None,
                 activation2=None) -> None:
        """
        Args:
            in_channels: C_in, also the channels (and groups) of the depthwise conv.
            out_channels: C_out of the pointwise conv.
            kernel_size, padding, dilation: of the depthwise conv.
            norm1, norm2: norm of the depthwise / pointwise conv, a name for
                :func:`~workbench.layers.get_norm` or a callable taking the channel count;
                None or "" for none.
            activation1, activation2: callables applied after each conv (and its norm).
        """
        super().__init__()
        self.depthwise = Conv2d(in_channels, in_channels, kernel_size=kernel_size, padding=padding,
                                dilation=dilation, groups=in_channels, bias=not norm1,
                                norm=get_norm(norm1, in_channels), activation=activation1)
        self.pointwise = Conv2d(in_channels, out_channels, kernel_size=1, bias=not norm2,
                                norm=get_norm(norm2, out_channels), activation=activation2)
        c2_msra_fill(self.depthwise)
        c2_msra_fill(self.pointwise)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        return self.pointwise(self.depthwise(x))

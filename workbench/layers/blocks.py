"""``CNNBlockBase``: a convolutional block that knows its channels and stride and can freeze.

Shapes: N images, C_in / C_out channels, H x W input size, s the block's stride;
a block maps (N, C_in, H, W) -> (N, C_out, H/s, W/s).
"""

from __future__ import annotations

from torch import nn

from .batch_norm import FrozenBatchNorm2d

__all__ = ["CNNBlockBase"]


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

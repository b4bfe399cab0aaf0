"""``Backbone``: the interface every feature extractor implements.

Shapes: N images, C input channels (3 for RGB/BGR), H x W padded input size;
each output feature map ``f`` is (N, C_f, H / s_f, W / s_f) with ``s_f`` its stride.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Dict

import torch
from torch import nn

from workbench.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Abstract base class of backbones: an image batch in, named feature maps out.

    Subclasses fill ``_out_features`` (names, in the order ``forward`` returns them),
    ``_out_feature_channels`` and ``_out_feature_strides`` (name -> int) so that
    :meth:`output_shape` can size the heads before any forward pass, or override
    :meth:`output_shape` themselves.
    """

    def __init__(self) -> None:
        super().__init__()

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Compute the feature maps of an (N, C, H, W) batch.

        Returns:
            Feature name (e.g. "res2", "p3") -> (N, C_f, H / s_f, W / s_f) tensor.
        """

    @property
    def size_divisibility(self) -> int:
        """Integer that the input height and width must be multiples of; 0 means no constraint.

        Encoder/decoder networks with lateral connections (FPN) need it so that upsampled
        top-down maps line up with the bottom-up ones.
        """
        return 0

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """Padding requirements beyond ``size_divisibility``, read by ``ImageList.from_tensors``.

        Possible keys: ``"size_divisibility"`` (overrides the property of the same name when
        present) and ``"square_size"`` (if > 0, pad every image to a square of that side,
        as ViTDet's large-scale-jitter recipes do). Empty means no extra constraint.
        """
        return {}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Channels and stride of every output feature, keyed by name, in output order."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

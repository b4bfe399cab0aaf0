"""Box heads: pooled ROI features -> one feature vector (or map) per ROI.

Shapes used below:
    R        ROIs of all images, concatenated
    C, P     channels and side of the pooled ROI features (R, C, P, P)
    D        width of the last fc layer (ROI_BOX_HEAD.FC_DIM)

The head only transforms features; the class scores and box deltas come from the box predictor
(``FastRCNNOutputLayers``) applied to its output.
"""

from __future__ import annotations

from typing import List, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import configurable
from workbench.layers import Conv2d, Linear, ShapeSpec, get_norm
from workbench.layers.weight_init import c2_msra_fill, c2_xavier_fill
from workbench.utils.registry import Registry

__all__ = ["ROI_BOX_HEAD_REGISTRY", "build_box_head", "FastRCNNConvFCHead"]

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
Registry for box heads, which turn pooled per-region features into per-region features for the
box predictor.

The registered object is called as `obj(cfg, input_shape)`, where `input_shape` is the ShapeSpec
of the pooled features (channels, height=width=pooler resolution); it must expose an
`output_shape` ShapeSpec.
"""


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Sequential):
    """3x3 convs (each with norm and ReLU), then fully connected layers (each with ReLU).

    Children are named ``conv1``, ``conv2``, ..., ``flatten``, ``fc1``, ``fc_relu1``, ``fc2``,
    ... in an ``nn.Sequential``, so that detectron2 checkpoints (``roi_heads.box_head.fc1.weight``)
    load unchanged and the layers can be sliced or iterated.

    Args:
        input_shape: shape of the pooled features (channels, height, width).
        conv_dims: output channels of each conv layer (may be empty).
        fc_dims: output width of each fc layer (may be empty, but not both).
        conv_norm: norm after each conv ("", "BN", "GN", ... see ``get_norm``). The convs have a
            bias only without a norm.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: List[int],
        fc_dims: List[int],
        conv_norm: Union[str, None] = "",
    ) -> None:
        super().__init__()
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError("FastRCNNConvFCHead needs at least one conv or fc layer, got "
                             "conv_dims=[] and fc_dims=[].")
        if input_shape.channels is None:
            raise ValueError(f"FastRCNNConvFCHead needs input_shape.channels, got {input_shape}.")

        # Either (channels, height, width) while in the conv part, or an int after an fc.
        self._output_size: Union[tuple, int] = (
            input_shape.channels, input_shape.height, input_shape.width
        )
        self.conv_norm_relus: List[nn.Module] = []
        for k, conv_dim in enumerate(conv_dims):
            conv = Conv2d(
                self._output_size[0], conv_dim, kernel_size=3, padding=1, bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim), activation=F.relu,
            )
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            self._output_size = (conv_dim, self._output_size[1], self._output_size[2])

        self.fcs: List[nn.Module] = []
        for k, fc_dim in enumerate(fc_dims):
            if k == 0:
                if any(s is None for s in self._output_size):
                    raise ValueError("FastRCNNConvFCHead with fc layers needs input_shape height "
                                     f"and width, got {input_shape}.")
                # (R, C, P, P) -> (R, C*P*P)
                self.add_module("flatten", nn.Flatten())
            fc = Linear(int(np.prod(self._output_size)), fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU())
            self.fcs.append(fc)
            self._output_size = fc_dim

        for layer in self.conv_norm_relus:
            c2_msra_fill(layer)
        for layer in self.fcs:
            c2_xavier_fill(layer)

    @classmethod
    def from_config(cls, cfg, input_shape):
        num_conv = cfg.MODEL.ROI_BOX_HEAD.NUM_CONV
        num_fc = cfg.MODEL.ROI_BOX_HEAD.NUM_FC
        return {
            "input_shape": input_shape,
            "conv_dims": [cfg.MODEL.ROI_BOX_HEAD.CONV_DIM] * num_conv,
            "fc_dims": [cfg.MODEL.ROI_BOX_HEAD.FC_DIM] * num_fc,
            "conv_norm": cfg.MODEL.ROI_BOX_HEAD.NORM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, P, P) -> (R, D), or (R, C', P, P) for a conv-only head."""
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        """Shape of one ROI's output: ShapeSpec(channels=D), or (C', P, P) without fc layers."""
        o = self._output_size
        if isinstance(o, int):
            return ShapeSpec(channels=o)
        return ShapeSpec(channels=o[0], height=o[1], width=o[2])


def build_box_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the box head named by ``cfg.MODEL.ROI_BOX_HEAD.NAME``."""
    name = cfg.MODEL.ROI_BOX_HEAD.NAME
    return ROI_BOX_HEAD_REGISTRY.get(name)(cfg, input_shape)

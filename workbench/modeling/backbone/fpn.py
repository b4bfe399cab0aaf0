"""Feature Pyramid Network (Lin et al. 2017) on top of a bottom-up backbone, as in detectron2.

Shapes: N images, H x W padded input (a multiple of ``size_divisibility``), C_out = FPN
out_channels. Output ``p{k}`` has stride 2^k:

    bottom-up  res2..res5: (N, C_k, H/2^k, W/2^k)
    lateral    fpn_lateral{k}: 1x1 conv            (N, C_k, H/2^k, W/2^k) -> (N, C_out, ...)
    top-down   p'_k = lateral_k + upsample2x(p'_{k+1})      (nearest neighbour)
    output     p_k  = fpn_output{k}(p'_k): 3x3 conv  (N, C_out, H/2^k, W/2^k)
    top block  p6 (and p7) from p5 or res5: (N, C_out, ceil(H/64), ceil(W/64)), ...
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from workbench.layers import Conv2d, ShapeSpec, get_norm
from workbench.layers.weight_init import c2_xavier_fill

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = [
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
]


class FPN(Backbone):
    """Build a pyramid of same-width feature maps ``p{k}`` from a backbone's ``res{k}`` maps.

    Convs are registered as ``fpn_lateral{k}`` / ``fpn_output{k}`` (k = log2 of the input
    stride), the bottom-up network as ``bottom_up`` and the extra levels as ``top_block``, the
    names detectron2 checkpoints use.

    Args:
        bottom_up: the backbone producing ``in_features``.
        in_features: names of the bottom-up maps to use, from high to low resolution, with
            strides doubling from one to the next (e.g. ["res2", "res3", "res4", "res5"]).
        out_channels: channels of every pyramid level.
        norm: norm after each lateral and output conv ("" for none, in which case the convs
            have a bias); see :func:`workbench.layers.get_norm`.
        top_block: optional module adding coarser levels. It has ``num_levels`` (how many it
            adds) and ``in_feature`` (the name of its input: a bottom-up map such as "res5",
            or a pyramid level such as "p5") and returns a list of maps.
        fuse_type: "sum" adds the lateral and upsampled maps, "avg" averages them.
        square_pad: if > 0, inputs must be padded to a square of this side
            (reported through ``padding_constraints``).
    """

    def __init__(self, bottom_up: Backbone, in_features: Sequence[str], out_channels: int,
                 norm: str = "", top_block: Optional[nn.Module] = None, fuse_type: str = "sum",
                 square_pad: int = 0) -> None:
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"FPN's bottom_up must be a Backbone, got {type(bottom_up).__name__}.")
        if not in_features:
            raise ValueError("FPN needs at least one input feature, got in_features=[].")
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FPN fuse_type must be 'sum' or 'avg', got '{fuse_type}'.")

        input_shapes = bottom_up.output_shape()
        for f in in_features:
            if f not in input_shapes:
                raise ValueError(f"FPN input feature '{f}' is not produced by the bottom-up "
                                 f"network, which outputs {list(input_shapes)}.")
        strides = [input_shapes[f].stride for f in in_features]
        in_channels_per_feature = [input_shapes[f].channels for f in in_features]
        _assert_strides_are_log2_contiguous(strides)

        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for in_channels, stride in zip(in_channels_per_feature, strides):
            lateral_conv = Conv2d(in_channels, out_channels, kernel_size=1, bias=use_bias,
                                  norm=get_norm(norm, out_channels))
            output_conv = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1,
                                 bias=use_bias, norm=get_norm(norm, out_channels))
            c2_xavier_fill(lateral_conv)
            c2_xavier_fill(output_conv)
            stage = int(math.log2(stride))
            self.add_module(f"fpn_lateral{stage}", lateral_conv)
            self.add_module(f"fpn_output{stage}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Plain lists (the modules are registered above under their stage names), ordered
        # top-down, from the coarsest level to the finest, as forward() walks them.
        self.lateral_convs: List[nn.Module] = lateral_convs[::-1]
        self.output_convs: List[nn.Module] = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up

        self._out_feature_strides: Dict[str, int] = {
            f"p{int(math.log2(s))}": s for s in strides
        }
        if self.top_block is not None:
            last = int(math.log2(strides[-1]))
            for s in range(last, last + self.top_block.num_levels):
                self._out_feature_strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        """The coarsest input stride: top-down upsampling only lines up on multiples of it."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Compute the pyramid of an (N, C, H, W) batch.

        Returns:
            ``p{k}`` -> (N, out_channels, H / 2^k, W / 2^k), finest level first.
        """
        bottom_up_features = self.bottom_up(x)
        results = []
        prev_features = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results.append(self.output_convs[0](prev_features))
        # Walk from the second-coarsest input to the finest.
        for idx in range(1, len(self.lateral_convs)):
            name = self.in_features[-idx - 1]
            lateral_features = self.lateral_convs[idx](bottom_up_features[name])
            top_down_features = F.interpolate(prev_features, scale_factor=2.0, mode="nearest")
            if top_down_features.shape[-2:] != lateral_features.shape[-2:]:
                raise ValueError(
                    f"FPN: upsampled top-down map {tuple(top_down_features.shape[-2:])} does not "
                    f"match lateral '{name}' {tuple(lateral_features.shape[-2:])}; the input "
                    f"{tuple(x.shape)} must have H and W divisible by "
                    f"size_divisibility={self.size_divisibility}."
                )
            prev_features = lateral_features + top_down_features
            if self._fuse_type == "avg":
                prev_features /= 2
            results.insert(0, self.output_convs[idx](prev_features))

        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_input = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_input = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_input))
        if len(results) != len(self._out_features):
            raise RuntimeError(f"FPN produced {len(results)} maps for output names "
                               f"{self._out_features}; check the top block's num_levels.")
        return dict(zip(self._out_features, results))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name],
                            stride=self._out_feature_strides[name])
            for name in self._out_features
        }


def _assert_strides_are_log2_contiguous(strides: Sequence[int]) -> None:
    """Raise unless each stride is twice the previous one."""
    for i in range(1, len(strides)):
        if strides[i] != 2 * strides[i - 1]:
            raise ValueError(f"Strides {strides[i]} {strides[i - 1]} are not log2 contiguous: "
                             f"FPN inputs must have strides doubling level to level, got "
                             f"{list(strides)}.")


class LastLevelMaxPool(nn.Module):
    """Adds P6 as P5 subsampled by 2 (a 1x1 max pool of stride 2), as in the original FPN.

    (N, C, h, w) -> [(N, C, ceil(h/2), ceil(w/2))]
    """

    def __init__(self) -> None:
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """Adds P6 and P7 for RetinaNet: p6 = conv3x3/2(in), p7 = conv3x3/2(relu(p6)).

    Registered as ``p6`` / ``p7`` (plain convs with bias, c2_xavier_fill init).

    Args:
        in_channels: channels of the input map (res5's, or the FPN width when fed by "p5").
        out_channels: FPN width.
        in_feature: name of the input map, a bottom-up output ("res5") or a level ("p5").
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5") -> None:
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            c2_xavier_fill(module)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6))
        return [p6, p7]


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet (``MODEL.RESNETS``) + FPN (``MODEL.FPN``) with a max-pooled P6 (Mask/Faster R-CNN)."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN with P6/P7 computed from res5 (RetinaNet)."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    shapes = bottom_up.output_shape()
    if "res5" not in shapes:
        raise ValueError("build_retinanet_resnet_fpn_backbone computes P6 from res5, so "
                         "MODEL.RESNETS.OUT_FEATURES must contain 'res5'; got "
                         f"{list(cfg.MODEL.RESNETS.OUT_FEATURES)}.")
    in_channels_p6p7 = shapes["res5"].channels
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels_p6p7, out_channels),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )

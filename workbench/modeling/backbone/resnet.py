"""ResNet / ResNeXt backbones (He et al. 2016; Xie et al. 2017), as in detectron2.

Shapes: N images, C input channels, H x W input size (a multiple of 32 keeps every stage exact).

    stem  (7x7/2 conv + norm + ReLU, 3x3/2 max pool)   (N, C, H, W) -> (N, C_stem, H/4, W/4)
    res2  (first block stride 1)                        -> (N, C_2,  H/4,  W/4)
    res3  (first block stride 2)                        -> (N, 2 C_2, H/8,  W/8)
    res4  (first block stride 2)                        -> (N, 4 C_2, H/16, W/16)
    res5  (first block stride 2, or 1 if dilated)       -> (N, 8 C_2, H/32, W/32)  (H/16 if dilated)

with C_stem = RESNETS.STEM_OUT_CHANNELS and C_2 = RESNETS.RES2_OUT_CHANNELS (256 for R50+).
Module names (``stem.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut``, ...) are detectron2's,
so its checkpoints load without renaming.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from workbench.layers import Conv2d, DeformConv, ModulatedDeformConv, ShapeSpec, get_norm
from workbench.layers.blocks import CNNBlockBase
from workbench.layers.weight_init import c2_msra_fill
from workbench.utils import perf

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "ResNetBlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "BasicStem",
    "ResNet",
    "make_stage",
    "build_resnet_backbone",
]

# Blocks per stage (res2, res3, res4, res5) for each supported depth.
_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}
_STAGE_INDEX = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}

NormSpec = Union[str, Any, None]


class BasicBlock(CNNBlockBase):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    The shortcut is a strided 1x1 conv + norm when the channel count changes, else identity.

    Args:
        in_channels: input channels.
        out_channels: output channels of both convs.
        stride: stride of the first conv (and of the projection shortcut).
        norm: norm after every conv; see :func:`workbench.layers.get_norm`.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 norm: NormSpec = "BN") -> None:
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, kernel_size=1, stride=stride,
                                   bias=False, norm=get_norm(norm, out_channels))
        else:
            self.shortcut = None
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                            bias=False, norm=get_norm(norm, out_channels))
        self.conv2 = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1,
                            bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out += shortcut
        return F.relu_(out)


class BottleneckBlock(CNNBlockBase):
    """1x1 reduce, 3x3 (grouped, dilated), 1x1 expand, plus a residual (ResNet-50+, ResNeXt).

    The shortcut is a strided 1x1 conv + norm when the channel count changes, else identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bottleneck_channels: channels of the two inner convs (``groups * width_per_group``).
        stride: downsampling of the block, applied in the first 1x1 conv if ``stride_in_1x1``
            (original MSRA models, detectron2's default) or else in the 3x3 conv (torchvision /
            fb.torch style).
        num_groups: groups of the 3x3 conv (ResNeXt cardinality).
        norm: norm after every conv; see :func:`workbench.layers.get_norm`.
        stride_in_1x1: see ``stride``.
        dilation: dilation of the 3x3 conv (its padding equals it, keeping the size).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int,
                 stride: int = 1, num_groups: int = 1, norm: NormSpec = "BN",
                 stride_in_1x1: bool = False, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, kernel_size=1, stride=stride,
                                   bias=False, norm=get_norm(norm, out_channels))
        else:
            self.shortcut = None

        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1,
                            bias=False, norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3,
                            stride=stride_3x3, padding=dilation, bias=False, groups=num_groups,
                            dilation=dilation, norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)
        # detectron2 leaves the last norm of the residual branch at weight 1 (the zero-gamma
        # trick of Goyal et al. 2017 is commented out there, as it hurt GN training from
        # scratch); we do the same so that random inits match.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out += shortcut
        return F.relu_(out)


class DeformBottleneckBlock(CNNBlockBase):
    """:class:`BottleneckBlock` whose 3x3 conv is deformable (Dai et al. 2017; v2 if modulated).

    A plain 3x3 conv ``conv2_offset`` (same stride and dilation as ``conv2``) predicts, per
    deformable group, 2 offsets (dy, dx) for each of the 9 taps, plus 9 mask logits if
    modulated: 18 * G or 27 * G channels, G = ``deform_num_groups``. It starts at zero (weights
    and bias), so a fresh block samples the regular 3x3 grid and computes what a
    :class:`BottleneckBlock` would, its 3x3 conv scaled by the mask sigmoid(0) = 1/2 when
    modulated. Channel layout, as in detectron2::

        conv2_offset(x)   (N, 27 G, Ho, Wo) --chunk(3)--> a, b, m  (each 9 G channels)
        offset = cat(a, b)  (N, 18 G, Ho, Wo)  see workbench.layers.deform_conv
        mask = sigmoid(m)   (N, 9 G, Ho, Wo)

    Args:
        in_channels, out_channels, bottleneck_channels, stride, num_groups, norm,
        stride_in_1x1, dilation: as for :class:`BottleneckBlock`.
        deform_modulated: use :class:`ModulatedDeformConv` (DCN v2) instead of
            :class:`DeformConv`.
        deform_num_groups: deformable groups of ``conv2`` (channel groups with their own
            offsets); must divide ``bottleneck_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int,
                 stride: int = 1, num_groups: int = 1, norm: NormSpec = "BN",
                 stride_in_1x1: bool = False, dilation: int = 1,
                 deform_modulated: bool = False, deform_num_groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        # Modules are created in detectron2's order (shortcut, conv1, conv2_offset, conv2,
        # conv3) so that a seeded build draws the same random numbers.
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, kernel_size=1, stride=stride,
                                   bias=False, norm=get_norm(norm, out_channels))
        else:
            self.shortcut = None

        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1,
                            bias=False, norm=get_norm(norm, bottleneck_channels))
        deform_op = ModulatedDeformConv if deform_modulated else DeformConv
        per_group = 27 if deform_modulated else 18  # (2 offsets [+ 1 mask]) x 3 x 3 taps
        self.conv2_offset = Conv2d(bottleneck_channels, per_group * deform_num_groups,
                                   kernel_size=3, stride=stride_3x3, padding=dilation,
                                   dilation=dilation)
        self.conv2 = deform_op(bottleneck_channels, bottleneck_channels, kernel_size=3,
                               stride=stride_3x3, padding=dilation, bias=False,
                               groups=num_groups, dilation=dilation,
                               deformable_groups=deform_num_groups,
                               norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        if self.deform_modulated:
            offset_mask = self.conv2_offset(out)
            # (N, 27 G, Ho, Wo) -> offsets (N, 18 G, Ho, Wo) and mask (N, 9 G, Ho, Wo)
            first, second, mask = torch.chunk(offset_mask, 3, dim=1)
            offset = torch.cat((first, second), dim=1)
            out = self.conv2(out, offset, mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = F.relu_(out)
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out += shortcut
        return F.relu_(out)


class BasicStem(CNNBlockBase):
    """The ResNet stem: 7x7 stride-2 conv, norm, ReLU, then 3x3 stride-2 max pool (stride 4).

    Args:
        in_channels: image channels.
        out_channels: channels of the conv.
        norm: norm after the conv; see :func:`workbench.layers.get_norm`.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64,
                 norm: NormSpec = "BN") -> None:
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3,
                            bias=False, norm=get_norm(norm, out_channels))
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(Backbone):
    """A stem followed by stages of residual blocks, named ``res2``, ``res3``, ...

    Args:
        stem: a :class:`CNNBlockBase`, usually :class:`BasicStem`.
        stages: one list of blocks per stage (see :meth:`make_stage`); stage ``i`` is named
            ``res{i + 2}``. Stages after the last one named in ``out_features`` are dropped
            rather than kept without gradients (as in detectron2).
        num_classes: if given, append global average pooling and a linear classifier
            (output name ``"linear"``) after the last kept stage: all of them when
            ``out_features`` names no stage (detectron2 fails there).
        out_features: names of the outputs to return, among "stem", "res2", ..., "linear";
            by default only the last layer.
        freeze_at: how many leading stages to freeze (see :meth:`freeze`).
    """

    def __init__(self, stem: CNNBlockBase, stages: Sequence[Sequence[CNNBlockBase]],
                 num_classes: Optional[int] = None, out_features: Optional[List[str]] = None,
                 freeze_at: int = 0) -> None:
        super().__init__()
        self.stem = stem
        self.num_classes = num_classes

        if out_features is not None:
            # Like detectron2, drop the stages after the last one out_features names: they
            # would hold parameters without gradients. Their blocks were built by the caller
            # already, so the random numbers drawn are those of the full network.
            needed = max([_STAGE_INDEX.get(f, 1) - 1 for f in out_features] or [0])
            if needed > 0 or num_classes is None:
                stages = stages[:needed]

        current_stride = self.stem.stride
        self._out_feature_strides: Dict[str, int] = {"stem": current_stride}
        self._out_feature_channels: Dict[str, int] = {"stem": self.stem.out_channels}

        self.stage_names: List[str] = []
        self.stages: List[nn.Sequential] = []  # plain list: the modules are registered by name
        name = "stem"
        for i, blocks in enumerate(stages):
            name = f"res{i + 2}"
            if len(blocks) == 0:
                raise ValueError(f"Stage {name} of ResNet has no blocks.")
            for block in blocks:
                if not isinstance(block, CNNBlockBase):
                    raise TypeError(f"Blocks of stage {name} must be CNNBlockBase, "
                                    f"got {type(block).__name__}.")
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            current_stride = int(current_stride * math.prod(b.stride for b in blocks))
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(self._out_feature_channels[name], num_classes)
            # Goyal et al. 2017, Sec. 5.1: the classifier is drawn from N(0, 0.01^2).
            nn.init.normal_(self.linear.weight, std=0.01)
            name = "linear"

        if out_features is None:
            out_features = [name]
        if len(out_features) == 0:
            raise ValueError("ResNet needs at least one output feature, got out_features=[].")
        children = [n for n, _ in self.named_children()]
        for f in out_features:
            if f not in children:
                raise ValueError(f"ResNet output feature '{f}' does not exist; available: "
                                 f"{children}.")
        self._out_features = list(out_features)
        self.freeze(freeze_at)

    @property
    def stages_and_names(self) -> List[tuple]:
        """(stage, name) pairs, the attribute detectron2 0.1-0.5 code iterates over."""
        return list(zip(self.stages, self.stage_names))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Run the network on an (N, C, H, W) batch.

        H and W should be multiples of the largest output stride, or downstream modules
        that combine levels (FPN) will see maps that do not line up.

        Returns:
            Name -> feature map, for each name in ``out_features`` (``"linear"``: (N, classes)).
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet expects an input of shape (N, C, H, W), "
                             f"got {tuple(x.shape)}.")
        if x.shape[1] != self.stem.in_channels:
            raise ValueError(f"ResNet's stem expects {self.stem.in_channels} input channels, "
                             f"got an input of shape {tuple(x.shape)}.")
        # oneDNN blocked layout between the convs on CPU in inference (workbench.utils.perf):
        # bit-identical values, dense NCHW maps returned.
        onednn = False
        if self.num_classes is None:
            x, onednn = perf.enter_onednn(self, x)
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x.to_dense() if onednn else x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x.to_dense() if onednn else x
        if self.num_classes is not None:
            x = self.avgpool(x)
            x = torch.flatten(x, 1)  # (N, C, 1, 1) -> (N, C)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels.get(name, self.num_classes),
                            stride=self._out_feature_strides.get(name))
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the first ``freeze_at`` stages, counting the stem as stage 1.

        ``1`` freezes the stem, ``2`` the stem and res2, and so on (a "stage" is a group of
        layers with one output resolution, as in the FPN paper). Frozen blocks get
        ``requires_grad=False`` and ``FrozenBatchNorm2d`` instead of batch norm.

        Returns:
            This ResNet.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(block_class: type, num_blocks: int, first_stride: Optional[int] = None, *,
                   in_channels: int, out_channels: int, **kwargs: Any) -> List[CNNBlockBase]:
        """Build the blocks of one stage.

        Args:
            block_class: a :class:`CNNBlockBase` subclass; it must keep the spatial size
                unless its stride is not 1.
            num_blocks: number of blocks.
            first_stride: deprecated; use ``stride_per_block=[s, 1, 1, ...]``.
            in_channels: input channels of the first block (the others get ``out_channels``).
            out_channels: output channels of every block.
            **kwargs: passed to every block; a key ending in ``_per_block`` must be a list of
                ``num_blocks`` values, block ``i`` receiving item ``i`` under the key without
                the suffix (e.g. ``stride_per_block=[2, 1, 1]``).

        Example::

            blocks = ResNet.make_stage(BottleneckBlock, 3, in_channels=16, out_channels=64,
                                       bottleneck_channels=16, stride_per_block=[2, 1, 1])
        """
        if first_stride is not None:
            if "stride" in kwargs or "stride_per_block" in kwargs:
                raise ValueError("make_stage: give first_stride or stride(_per_block), not both.")
            kwargs["stride_per_block"] = [first_stride] + [1] * (num_blocks - 1)
            logging.getLogger(__name__).warning(
                "ResNet.make_stage(first_stride=) is deprecated; use stride_per_block=."
            )
        for k, v in kwargs.items():
            if k.endswith("_per_block"):
                if len(v) != num_blocks:
                    raise ValueError(f"make_stage argument '{k}' has {len(v)} values, expected "
                                     f"num_blocks={num_blocks}.")
                if k[: -len("_per_block")] in kwargs:
                    raise ValueError(f"make_stage got both '{k}' and '{k[:-len('_per_block')]}'.")
        blocks = []
        for i in range(num_blocks):
            block_kwargs = {}
            for k, v in kwargs.items():
                if k.endswith("_per_block"):
                    block_kwargs[k[: -len("_per_block")]] = v[i]
                else:
                    block_kwargs[k] = v
            blocks.append(block_class(in_channels=in_channels, out_channels=out_channels,
                                      **block_kwargs))
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(depth: int, block_class: Optional[type] = None,
                            **kwargs: Any) -> List[List[CNNBlockBase]]:
        """The four stages of the standard ResNet-``depth`` (18, 34, 50, 101 or 152).

        Channels are the standard ones (64 stem; res2..res5 of 64..512 for depth < 50,
        256..2048 with bottlenecks of a quarter of that otherwise); for other widths use
        :meth:`make_stage` directly.

        Args:
            depth: number of layers.
            block_class: defaults to :class:`BasicBlock` below depth 50, else
                :class:`BottleneckBlock` (which must accept ``bottleneck_channels``).
            **kwargs: passed to :meth:`make_stage` (not strides or channels).
        """
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS_PER_STAGE)}, "
                             f"got {depth}.")
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        if depth < 50:
            in_channels, out_channels = [64, 64, 128, 256], [64, 128, 256, 512]
        else:
            in_channels, out_channels = [64, 256, 512, 1024], [256, 512, 1024, 2048]
        stages = []
        for n, s, c_in, c_out in zip(_BLOCKS_PER_STAGE[depth], [1, 2, 2, 2], in_channels,
                                     out_channels):
            extra = {"bottleneck_channels": c_out // 4} if depth >= 50 else {}
            stages.append(ResNet.make_stage(block_class=block_class, num_blocks=n,
                                            stride_per_block=[s] + [1] * (n - 1),
                                            in_channels=c_in, out_channels=c_out,
                                            **extra, **kwargs))
        return stages


ResNetBlockBase = CNNBlockBase
"""Alias kept for code written against detectron2's old name."""


def make_stage(*args: Any, **kwargs: Any) -> List[CNNBlockBase]:
    """Deprecated alias of :meth:`ResNet.make_stage`."""
    return ResNet.make_stage(*args, **kwargs)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Build a ResNet from ``cfg.MODEL.RESNETS`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``.

    Depths 18/34 use :class:`BasicBlock` (then RES2_OUT_CHANNELS must be 64, RES5_DILATION 1,
    NUM_GROUPS 1, no deformable stage); deeper nets use :class:`BottleneckBlock` with
    ``NUM_GROUPS * WIDTH_PER_GROUP`` channels in res2, doubling every stage, or
    :class:`DeformBottleneckBlock` in the stages that DEFORM_ON_PER_STAGE (res2..res5) turns on,
    with DEFORM_MODULATED and DEFORM_NUM_GROUPS. With RES5_DILATION 2, res5 keeps stride 16
    (DC5 models).

    As in detectron2, all four stages are built and those after the last one in OUT_FEATURES
    are then dropped by :class:`ResNet`: building them consumes the same random numbers, so
    every module built after the backbone under a seed gets detectron2's initial weights.
    """
    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    norm = r.NORM
    out_features = list(r.OUT_FEATURES)
    num_groups = r.NUM_GROUPS
    bottleneck_channels = num_groups * r.WIDTH_PER_GROUP
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    res5_dilation = r.RES5_DILATION
    deform_on_per_stage = list(r.DEFORM_ON_PER_STAGE)

    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_STAGE)}, "
                         f"got {depth}.")
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}.")
    if len(deform_on_per_stage) != 4:
        raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE needs one entry per stage "
                         f"res2..res5, got {deform_on_per_stage}.")
    for f in out_features:
        if f != "stem" and f not in _STAGE_INDEX:
            raise ValueError(f"MODEL.RESNETS.OUT_FEATURES has unknown name '{f}'; expected "
                             f"'stem' or one of {list(_STAGE_INDEX)}.")
    if depth in (18, 34):
        if out_channels != 64:
            raise ValueError("MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for R18/R34, "
                             f"got {out_channels}.")
        if any(deform_on_per_stage):
            raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE must be all False for "
                             f"R18/R34 (no deformable BasicBlock), got {deform_on_per_stage}.")
        if res5_dilation != 1:
            raise ValueError("MODEL.RESNETS.RES5_DILATION must be 1 for R18/R34, "
                             f"got {res5_dilation}.")
        if num_groups != 1:
            raise ValueError(f"MODEL.RESNETS.NUM_GROUPS must be 1 for R18/R34, got {num_groups}.")

    stem = BasicStem(in_channels=input_shape.channels, out_channels=in_channels, norm=norm)

    num_blocks = _BLOCKS_PER_STAGE[depth]
    stages = []
    for idx, stage_idx in enumerate(range(2, 6)):
        dilation = res5_dilation if stage_idx == 5 else 1
        # res2 follows the stem's max pool; a dilated res5 keeps res4's resolution.
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        stage_kwargs: Dict[str, Any] = {
            "num_blocks": num_blocks[idx],
            "stride_per_block": [first_stride] + [1] * (num_blocks[idx] - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        if depth in (18, 34):
            stage_kwargs["block_class"] = BasicBlock
        else:
            stage_kwargs.update(block_class=BottleneckBlock,
                                bottleneck_channels=bottleneck_channels,
                                stride_in_1x1=r.STRIDE_IN_1X1, dilation=dilation,
                                num_groups=num_groups)
            if deform_on_per_stage[idx]:
                stage_kwargs.update(block_class=DeformBottleneckBlock,
                                    deform_modulated=r.DEFORM_MODULATED,
                                    deform_num_groups=r.DEFORM_NUM_GROUPS)
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=out_features, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


# Their forward passes use only conv, relu_, max_pool2d and in-place add: exact on blocked tensors.
for _block in (BasicBlock, BottleneckBlock, BasicStem):
    perf.register_onednn_safe(_block)

"""Backbones: networks that turn an image batch into named, strided feature maps."""

from .build import BACKBONE_REGISTRY, build_backbone  # noqa: I001  (registry first)

from .backbone import Backbone
from .regnet import RegNet
from .swin import SwinTransformer
from .mvit import MViT
from .vit import SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate
from .fpn import (
    FPN,
    LastLevelMaxPool,
    LastLevelP6P7,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from .resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_resnet_backbone,
    make_stage,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]

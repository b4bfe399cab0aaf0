"""The backbone registry and ``build_backbone``."""

from __future__ import annotations

from typing import Optional

from workbench.layers import ShapeSpec
from workbench.utils.registry import Registry

from .backbone import Backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry of backbones, which turn an image batch into named feature maps.

Each entry is called as ``obj(cfg, input_shape)``, where ``cfg`` is the full config and
``input_shape`` a :class:`workbench.layers.ShapeSpec` describing the input image (its
``channels`` at least), and must return an instance of :class:`Backbone`.
The entry used is named by ``cfg.MODEL.BACKBONE.NAME``.
"""


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: the config.
        input_shape: shape of the input images; by default as many channels as
            ``cfg.MODEL.PIXEL_MEAN`` has entries.
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"BACKBONE_REGISTRY entry '{name}' returned a {type(backbone).__name__}; "
            f"backbones must be instances of workbench.modeling.backbone.Backbone."
        )
    return backbone

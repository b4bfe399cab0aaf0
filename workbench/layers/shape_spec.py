"""``ShapeSpec``: what a builder needs to know about a tensor without running the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["ShapeSpec"]


@dataclass
class ShapeSpec:
    """Channels, spatial size and stride of a feature map; any field may be unknown (None).

    Builders pass these to each other (``backbone.output_shape()``) so heads are sized
    from the cfg alone.
    """

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None

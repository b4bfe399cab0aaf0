"""The proposal generator registry and its builder.

A proposal generator takes the images and backbone features and returns object proposals
(``Instances`` with ``proposal_boxes`` and ``objectness_logits``) plus its training losses.
"""

from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from workbench.layers import ShapeSpec
from workbench.utils.registry import Registry

__all__ = ["PROPOSAL_GENERATOR_REGISTRY", "build_proposal_generator"]

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = """
Registry of proposal generators, which produce object proposals from feature maps.

Entries are called as ``obj(cfg, input_shape)`` with ``input_shape`` a ``dict[str, ShapeSpec]``
(the backbone's ``output_shape()``), and return an ``nn.Module`` whose
``forward(images, features, gt_instances=None)`` returns ``(proposals, losses)``.
"""


def build_proposal_generator(cfg, input_shape: Dict[str, ShapeSpec]) -> Optional[nn.Module]:
    """Build the proposal generator named by ``cfg.MODEL.PROPOSAL_GENERATOR.NAME``.

    Returns:
        The module, or None for "PrecomputedProposals" (proposals are then read from the
        dataset and given to the ROI heads directly).
    """
    name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if name == "PrecomputedProposals":
        return None
    return PROPOSAL_GENERATOR_REGISTRY.get(name)(cfg, input_shape)

"""Rotated Region Proposal Network (RRPN): the RPN on rotated anchors, giving rotated proposals.

Shape legend:
    N:      number of images; L levels; A anchors per location; Hi x Wi level i.
    B:      box size, 5: boxes (xc, yc, w, h, angle in degrees ccw), deltas (dx, dy, dw, dh, da).
    K:      candidates kept on one level before NMS, min(pre_nms_topk, Hi*Wi*A).

Everything but the box type is :class:`~workbench.modeling.proposal_generator.rpn.RPN`'s:
anchors come from ``RotatedAnchorGenerator`` (``RotatedBoxes``), anchors are matched to the
ground truth by rotated IoU, deltas follow ``Box2BoxTransformRotated``, and proposals are selected
by rotated NMS. Semantics follow detectron2 (``detectron2/modeling/proposal_generator/rrpn.py``).

Records: ``RPN.forward`` puts its ``RPNRecord`` as for the RPN, and :meth:`RRPN.predict_proposals`
puts an ``RPNSelectionRecord`` (exact indices of the candidates and of what NMS kept). Both record
types hold tensors and ``Instances`` of any box width; here their boxes are ``RotatedBoxes`` and
their deltas have 5 columns (the record docstrings speak of XYXY boxes, the RPN's case).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch

from workbench.config import configurable
from workbench.layers import ShapeSpec, batched_nms_rotated
from workbench.structures import Instances, RotatedBoxes, pairwise_iou_rotated

from ..box_regression import Box2BoxTransformRotated
from .build import PROPOSAL_GENERATOR_REGISTRY
from .proposal_utils import ProposalSelection, find_top_rpn_proposals
from .rpn import RPN

__all__ = ["RRPN", "find_top_rrpn_proposals"]


def find_top_rrpn_proposals(
    proposals: List[torch.Tensor],
    pred_objectness_logits: List[torch.Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
    *,
    return_selection: bool = False,
) -> Union[List[Instances], Tuple[List[Instances], List[ProposalSelection]]]:
    """Keep the best rotated proposals of each image (``find_top_rpn_proposals`` for rotated boxes).

    Steps: (1) on each level, the ``pre_nms_topk`` highest-scoring candidates of each image;
    (2) per image, over all levels: drop non-finite candidates, clip the nearly upright ones
    (``RotatedBoxes.clip``), drop boxes with a side <= ``min_box_size``, rotated NMS within each
    level, keep the ``post_nms_topk`` best.

    Args:
        proposals: L tensors (N, Hi*Wi*A, 5), decoded boxes of every anchor.
        pred_objectness_logits: L tensors (N, Hi*Wi*A).
        image_sizes: (h, w) of each image.
        nms_thresh: IoU at or above which the lower-scoring of two boxes is suppressed.
        pre_nms_topk: candidates kept per level and image before NMS.
        post_nms_topk: proposals kept per image after NMS.
        min_box_size: boxes whose w or h is not larger than this are dropped.
        training: in training, non-finite predictions raise instead of being dropped.
        return_selection: also return, per image, a ``ProposalSelection`` (which anchor each
            candidate is, what NMS kept).

    Returns:
        N ``Instances`` with ``proposal_boxes`` (``RotatedBoxes``) and ``objectness_logits``, by
        decreasing objectness; with ``return_selection``, also the N selections.

    Raises:
        FloatingPointError: in training, if a box or score is Inf/NaN.
    """
    return find_top_rpn_proposals(
        proposals, pred_objectness_logits, image_sizes, nms_thresh, pre_nms_topk, post_nms_topk,
        min_box_size, training, return_selection=return_selection, box_type=RotatedBoxes,
        box_dim=5, nms_fn=batched_nms_rotated)


@PROPOSAL_GENERATOR_REGISTRY.register()
class RRPN(RPN):
    """Rotated Region Proposal Network (Ma et al. 2018, "Arbitrary-Oriented Scene Text Detection
    via Rotation Proposals").

    Built like :class:`RPN` (same arguments); from a cfg, the box transform is
    ``Box2BoxTransformRotated(MODEL.RPN.BBOX_REG_WEIGHTS)`` (5 weights) and the anchor generator
    should be "RotatedAnchorGenerator".
    """

    find_top_proposals = staticmethod(find_top_rrpn_proposals)
    box2box_transform_class = Box2BoxTransformRotated
    box_iou = staticmethod(pairwise_iou_rotated)  # refuses gt_boxes that are not RotatedBoxes

    @configurable
    def __init__(self, **kwargs) -> None:
        """
        Args:
            **kwargs: the arguments of :class:`RPN`; ``anchor_boundary_thresh`` must be < 0
                (the legacy boundary test is not defined for rotated anchors).
        """
        super().__init__(**kwargs)
        if self.anchor_boundary_thresh >= 0:
            raise NotImplementedError(
                "anchor_boundary_thresh is a legacy option not implemented for RRPN; set "
                "MODEL.RPN.BOUNDARY_THRESH to -1.")

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        weights = tuple(cfg.MODEL.RPN.BBOX_REG_WEIGHTS)
        if len(weights) != 5:
            raise ValueError(f"RRPN needs 5 MODEL.RPN.BBOX_REG_WEIGHTS (dx, dy, dw, dh, da), got "
                             f"{weights}.")
        ret = super().from_config(cfg, input_shape)
        box_dim = getattr(ret["anchor_generator"], "box_dim", 4)
        if box_dim != 5:
            raise ValueError(f"RRPN needs rotated anchors (box_dim 5), but "
                             f"MODEL.ANCHOR_GENERATOR.NAME={cfg.MODEL.ANCHOR_GENERATOR.NAME!r} "
                             f"gives box_dim {box_dim}; use 'RotatedAnchorGenerator'.")
        return ret


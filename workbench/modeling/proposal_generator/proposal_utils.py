"""Turning dense RPN predictions into a short list of proposals per image, and adding GT to it.

Shape legend:
    N:      number of images.
    L:      number of feature maps (levels).
    Hi, Wi: height and width of the i-th feature map; A anchors per location.
    K:      number of candidates kept on one level before NMS, min(pre_nms_topk, Hi*Wi*A).

Proposal boxes are XYXY in absolute pixels of the (resized, unpadded) input image.
Semantics follow detectron2 0.6 (``detectron2/modeling/proposal_generator/proposal_utils.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple, Union

import torch

from workbench.layers import batched_nms, cat
from workbench.structures import Boxes, Instances

__all__ = ["find_top_rpn_proposals", "ProposalSelection", "add_ground_truth_to_proposals",
           "add_ground_truth_to_proposals_single_image"]


@dataclass
class ProposalSelection:
    """What :func:`find_top_rpn_proposals` did on one image, by index (Ci candidates, Ri kept).

    Attributes:
        candidates: what NMS was run on: the per-level top-k, finite, clipped and large enough.
            Fields ``proposal_boxes``, ``objectness_logits``, ``level`` (index into the levels)
            and ``anchor_index`` (row in that level's anchors / predictions, order (y, x, a)).
        proposal_candidate: (Ri,) row of ``candidates`` each proposal is.
        nms_kept: (Ci,) bool, the candidate survived NMS (before the post-NMS top-k).
    """

    candidates: Instances
    proposal_candidate: torch.Tensor
    nms_kept: torch.Tensor


def find_top_rpn_proposals(
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
    box_type: type = Boxes,
    box_dim: int = 4,
    nms_fn: Callable[..., torch.Tensor] = batched_nms,
) -> Union[List[Instances], Tuple[List[Instances], List[ProposalSelection]]]:
    """Keep the best proposals of each image.

    Steps: (1) on each level, the ``pre_nms_topk`` highest-scoring candidates of each image;
    (2) per image, over all levels together: drop non-finite candidates, clip to the image,
    drop boxes with a side <= ``min_box_size``, NMS within each level, keep the
    ``post_nms_topk`` best. The top-k after NMS is per image (Detectron1 took it over the whole
    batch in training, which made results depend on the batch size).

    Args:
        proposals: L tensors of shape (N, Hi*Wi*A, B), decoded boxes of every anchor.
        pred_objectness_logits: L tensors of shape (N, Hi*Wi*A).
        image_sizes: (h, w) of each image, to clip to.
        nms_thresh: IoU above which the lower-scoring of two boxes is suppressed.
        pre_nms_topk: candidates kept per level and image before NMS.
        post_nms_topk: proposals kept per image after NMS (over all levels).
        min_box_size: boxes whose width or height is not larger than this are dropped.
        training: in training, non-finite predictions raise instead of being dropped.
        return_selection: also return, per image, a :class:`ProposalSelection`: which anchor
            every candidate and proposal is, and what NMS kept (exact indices, no search).
        box_type, box_dim, nms_fn: the box kind: upright ``Boxes`` (B = 4, ``batched_nms``) by
            default; ``find_top_rrpn_proposals`` passes ``RotatedBoxes``, 5 and
            ``batched_nms_rotated`` (its ``clip`` clips only nearly upright boxes).

    Returns:
        N ``Instances`` with ``proposal_boxes`` (``box_type``) and ``objectness_logits``
        (Tensor), sorted by decreasing objectness; with ``return_selection``, also the N
        selections.

    Raises:
        FloatingPointError: in training, if a box or score is Inf/NaN.
    """
    if len(proposals) != len(pred_objectness_logits):
        raise ValueError(
            f"Expected as many levels of proposals as of logits, got {len(proposals)} and "
            f"{len(pred_objectness_logits)}."
        )
    num_images = len(image_sizes)
    device = proposals[0].device

    # 1. Top-k candidates of every level, for all images at once.
    topk_scores = []  # L tensors of shape (N, K)
    topk_proposals = []  # L tensors of shape (N, K, B)
    level_ids = []  # L tensors of shape (K,)
    anchor_ids = []  # L tensors of shape (N, K): row of each candidate in its level
    batch_idx = torch.arange(num_images, device=device)
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        if (logits_i.dim() != 2 or proposals_i.dim() != 3 or proposals_i.shape[2] != box_dim
                or proposals_i.shape[:2] != logits_i.shape):
            raise ValueError(
                f"Level {level_id}: expected proposals (N, Hi*Wi*A, {box_dim}) and logits "
                f"(N, Hi*Wi*A), got {tuple(proposals_i.shape)} and {tuple(logits_i.shape)}."
            )
        hi_wi_a = logits_i.shape[1]
        num_proposals_i = min(hi_wi_a, pre_nms_topk)

        topk_scores_i, topk_idx = logits_i.topk(num_proposals_i, dim=1)  # each (N, K)
        # (N, Hi*Wi*A, B) gathered at (N, K) -> (N, K, B)
        topk_proposals_i = proposals_i[batch_idx[:, None], topk_idx]

        topk_proposals.append(topk_proposals_i)
        topk_scores.append(topk_scores_i)
        if return_selection:
            anchor_ids.append(topk_idx)
        level_ids.append(
            torch.full((num_proposals_i,), level_id, dtype=torch.int64, device=device)
        )

    # 2. All levels together.
    topk_scores = cat(topk_scores, dim=1)  # L x (N, K) -> (N, sum K)
    topk_proposals = cat(topk_proposals, dim=1)  # L x (N, K, B) -> (N, sum K, B)
    level_ids = cat(level_ids, dim=0)  # L x (K,) -> (sum K,)
    if return_selection:
        anchor_ids = cat(anchor_ids, dim=1)  # L x (N, K) -> (N, sum K)

    # 3. Per image: filter, clip, NMS within each level, top-k.
    results: List[Instances] = []
    selections: List[ProposalSelection] = []
    for n, image_size in enumerate(image_sizes):
        boxes = box_type(topk_proposals[n])
        scores_per_img = topk_scores[n]
        lvl = level_ids
        anchor = anchor_ids[n] if return_selection else None

        valid_mask = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores_per_img)
        if not valid_mask.all():
            if training:
                raise FloatingPointError(
                    "Predicted boxes or scores contain Inf/NaN. Training has diverged."
                )
            boxes = boxes[valid_mask]
            scores_per_img = scores_per_img[valid_mask]
            lvl = lvl[valid_mask]
            if return_selection:
                anchor = anchor[valid_mask]
        boxes.clip(image_size)

        # Drop empty (or too small) boxes. One search for the kept rows (on a GPU, it waits for
        # the device) serves the count and the indexing.
        keep = boxes.nonempty(threshold=min_box_size).nonzero().squeeze(1)
        if len(keep) != len(boxes):
            boxes, scores_per_img, lvl = boxes[keep], scores_per_img[keep], lvl[keep]
            if return_selection:
                anchor = anchor[keep]

        nms_keep = nms_fn(boxes.tensor, scores_per_img, lvl, nms_thresh)
        keep = nms_keep[:post_nms_topk]  # already sorted by decreasing score

        res = Instances(image_size)
        res.proposal_boxes = boxes[keep]
        res.objectness_logits = scores_per_img[keep]
        results.append(res)
        if return_selection:
            kept = torch.zeros(len(boxes), dtype=torch.bool, device=device)
            kept[nms_keep] = True
            candidates = Instances(image_size, proposal_boxes=boxes, objectness_logits=scores_per_img,
                                   level=lvl, anchor_index=anchor)
            selections.append(ProposalSelection(candidates, keep, kept))
    return (results, selections) if return_selection else results


def add_ground_truth_to_proposals(
    gt: Union[List[Instances], List[Boxes]], proposals: List[Instances]
) -> List[Instances]:
    """Append each image's ground-truth boxes to its proposals (training-time ROI sampling).

    Args:
        gt: N ``Instances`` with at least ``gt_boxes``, or N ``Boxes``.
        proposals: N ``Instances`` with ``proposal_boxes`` and ``objectness_logits``.

    Returns:
        N ``Instances``: the proposals followed by the ground truth, which gets an objectness
        logit of ``log((1 - 1e-10) / 1e-10)`` ~ 23.03, i.e. P(object) ~ 1. Only the fields of
        the proposals are kept.
    """
    if gt is None:
        raise ValueError("add_ground_truth_to_proposals needs ground truth, got None.")
    if len(proposals) != len(gt):
        raise ValueError(
            f"proposals and gt should have the same length as the number of images, got "
            f"{len(proposals)} and {len(gt)}."
        )
    if len(proposals) == 0:
        return proposals
    return [
        add_ground_truth_to_proposals_single_image(gt_i, proposals_i)
        for gt_i, proposals_i in zip(gt, proposals)
    ]


def add_ground_truth_to_proposals_single_image(gt: Union[Instances, Boxes],
                                               proposals: Instances) -> Instances:
    """:func:`add_ground_truth_to_proposals` for one image."""
    if isinstance(gt, Boxes):
        gt = Instances(proposals.image_size, gt_boxes=gt)
    gt_boxes = gt.gt_boxes
    device = proposals.objectness_logits.device
    # The logit whose sigmoid is 1 - 1e-10 (computed in float64, stored as float32: ~23.0259).
    gt_logit_value = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))
    gt_logits = gt_logit_value * torch.ones(len(gt_boxes), device=device)

    # Instances.cat needs the same fields on both sides: start from all the gt fields.
    gt_proposal = Instances(proposals.image_size, **gt.get_fields())
    gt_proposal.proposal_boxes = gt_boxes
    gt_proposal.objectness_logits = gt_logits
    for key in proposals.get_fields().keys():
        if not gt_proposal.has(key):
            raise ValueError(f"The field {key!r} of the proposals does not exist in the gt.")
    # Only the fields of the proposals survive (detectron2's Instances.cat reads the fields of
    # its first element and drops the rest); selecting them here keeps that result whether or
    # not Instances.cat tolerates extra fields.
    gt_proposal = Instances(
        proposals.image_size, **{k: gt_proposal.get(k) for k in proposals.get_fields()}
    )
    return Instances.cat([proposals, gt_proposal])

"""Rotated Fast R-CNN: ROI heads that classify rotated proposals and regress rotated boxes.

Shape legend:
    N        images in the batch
    R        ROIs of all images, concatenated image after image (Ri in image i)
    K        foreground classes; column K of the scores is the background class
    B        box size, 5: boxes (xc, yc, w, h, angle in degrees ccw), deltas (dx, dy, dw, dh, da)

Boxes are ``RotatedBoxes`` in absolute pixels of the (resized) input image. Only the box branch
exists (no masks or keypoints), as in detectron2
(``detectron2/modeling/roi_heads/rotated_fast_rcnn.py``).

Records: ``RROIHeads`` runs ``StandardROIHeads._forward_box``, which puts its ``BoxRecord``, and
``RotatedFastRCNNOutputLayers.select`` puts the ``"box_selection"`` record (a ``BoxSelection``:
candidates, NMS survivors and the ROI of every detection, by index). Those record types hold
tensors of any box width; here boxes are 5-column rotated boxes and deltas have K*5 columns (the
record docstrings speak of XYXY boxes, the upright case).
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from workbench.config import configurable
from workbench.layers import ShapeSpec, batched_nms_rotated
from workbench.structures import RotatedBoxes, pairwise_iou_rotated

from ..box_regression import Box2BoxTransformRotated
from ..poolers import ROIPooler
from .box_head import build_box_head
from .fast_rcnn import (FastRCNNOutputLayers, fast_rcnn_inference,
                        fast_rcnn_inference_single_image)
from .roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads

__all__ = [
    "fast_rcnn_inference_rotated",
    "fast_rcnn_inference_single_image_rotated",
    "RotatedFastRCNNOutputLayers",
    "RROIHeads",
]

_B = 5  # box dimension


def fast_rcnn_inference_rotated(
    boxes: List[torch.Tensor],
    scores: List[torch.Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    *,
    return_selection: bool = False,
):
    """Threshold, clip (nearly upright boxes only) and per-class rotated NMS, per image.

    Args:
        boxes: per image, predicted boxes (Ri, K*5) class-specific or (Ri, 5) class-agnostic.
        scores: per image, class probabilities (Ri, K+1), background last.
        image_shapes: per image, (height, width).
        score_thresh: keep (ROI, class) pairs scoring strictly above this.
        nms_thresh: rotated IoU at or above which a lower-scoring box of the same class goes.
        topk_per_image: at most this many detections per image; < 0 keeps all.
        return_selection: also return a ``BoxSelection`` (candidates, NMS survivors).

    Returns:
        instances: per image, Instances with ``pred_boxes`` (``RotatedBoxes``), ``scores`` and
            ``pred_classes``, by decreasing score.
        kept_indices: per image, the ROI in [0, Ri) of each detection (counting only ROIs with
            finite predictions, as ``fast_rcnn_inference``).
        selection: with ``return_selection`` only.
    """
    return fast_rcnn_inference(boxes, scores, image_shapes, score_thresh, nms_thresh,
                               topk_per_image, return_selection=return_selection,
                               box_type=RotatedBoxes, box_dim=_B, nms_fn=batched_nms_rotated)


@torch.no_grad()
def fast_rcnn_inference_single_image_rotated(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: Tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    *,
    return_selection: bool = False,
):
    """``fast_rcnn_inference_rotated`` for one image: boxes (Ri, K*5 or 5), scores (Ri, K+1).

    With ``return_selection``, also (candidates (Ci, 2), nms_kept (Ci,), roi_index (Di,)), in
    rows of all the ROIs given (see ``BoxSelection``).
    """
    return fast_rcnn_inference_single_image(
        boxes, scores, image_shape, score_thresh, nms_thresh, topk_per_image,
        return_selection=return_selection, box_type=RotatedBoxes, box_dim=_B,
        nms_fn=batched_nms_rotated)


class RotatedFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` for rotated boxes: 5 deltas per class
    (``Box2BoxTransformRotated``) and rotated selection (:func:`fast_rcnn_inference_rotated`).

    Built like the parent; from a cfg, ``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS`` must hold 5
    weights, e.g. (10, 10, 5, 5, 1).
    """

    selection_fn = staticmethod(fast_rcnn_inference_rotated)
    box2box_transform_class = Box2BoxTransformRotated

    @classmethod
    def from_config(cls, cfg, input_shape):
        weights = tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
        if len(weights) != 5:
            raise ValueError(f"RotatedFastRCNNOutputLayers needs 5 MODEL.ROI_BOX_HEAD."
                             f"BBOX_REG_WEIGHTS (dx, dy, dw, dh, da), got {weights}.")
        return super().from_config(cfg, input_shape)


@ROI_HEADS_REGISTRY.register()
class RROIHeads(StandardROIHeads):
    """ROI heads of Rotated Fast R-CNN: a box branch on ``RotatedBoxes`` proposals, pooled by
    "ROIAlignRotated", predicting rotated boxes. No mask or keypoint heads, no
    ``train_on_pred_boxes``.
    """

    box_iou = staticmethod(pairwise_iou_rotated)

    @configurable
    def __init__(self, **kwargs) -> None:
        """
        Args:
            **kwargs: the arguments of ``StandardROIHeads`` (box branch only).
        """
        super().__init__(**kwargs)
        if self.mask_on or self.keypoint_on:
            raise ValueError("RROIHeads has no mask or keypoint heads; set MODEL.MASK_ON and "
                             "MODEL.KEYPOINT_ON to False.")
        if self.train_on_pred_boxes:
            raise ValueError("train_on_pred_boxes is not implemented for RROIHeads.")

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        pooler_resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooler_type = cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE
        if pooler_type != "ROIAlignRotated":
            raise ValueError(f"RROIHeads pools rotated boxes: MODEL.ROI_BOX_HEAD.POOLER_TYPE must "
                             f"be 'ROIAlignRotated', got {pooler_type!r}.")
        in_channels = [input_shape[f].channels for f in in_features]
        if len(set(in_channels)) != 1:
            raise ValueError(f"RROIHeads needs equal channels on {in_features}, got "
                             f"{in_channels}.")
        box_pooler = ROIPooler(
            output_size=pooler_resolution,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=pooler_type,
        )
        box_head = build_box_head(cfg, ShapeSpec(channels=in_channels[0], height=pooler_resolution,
                                                 width=pooler_resolution))
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            "box_predictor": RotatedFastRCNNOutputLayers(cfg, box_head.output_shape),
        }

"""Per-region heads of two-stage detectors: box, mask and keypoint heads and their containers."""

from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead, build_box_head
from .cascade_rcnn import CascadeROIHeads
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from .keypoint_head import (
    ROI_KEYPOINT_HEAD_REGISTRY,
    BaseKeypointRCNNHead,
    KRCNNConvDeconvUpsampleHead,
    build_keypoint_head,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
)
from .mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from .roi_heads import (
    ROI_HEADS_REGISTRY,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_roi_heads,
    select_foreground_proposals,
    select_proposals_with_visible_keypoints,
)
from .rotated_fast_rcnn import RROIHeads

__all__ = [k for k in globals().keys() if not k.startswith("_")]

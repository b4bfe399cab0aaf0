"""Fast R-CNN inference: per-ROI class scores and class boxes -> each image's detections (score
threshold, per-class NMS, top-k), with the selection record the stage trace reads.

Kept apart from the predictor (:mod:`.fast_rcnn`, which re-exports both functions under
detectron2's path) because the rotated heads reuse it with another box kind.

Shapes: R ROIs of one image, K foreground classes (column K of the scores is background),
B the box dimension (4 upright, 5 rotated).
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import torch

from workbench.layers import batched_nms
from workbench.structures import Boxes, Instances

from ..recording import SelectionSettings
from .records import BoxSelection

__all__ = ["fast_rcnn_inference", "fast_rcnn_inference_single_image"]


def fast_rcnn_inference(
    boxes: List[torch.Tensor],
    scores: List[torch.Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    *,
    return_selection: bool = False,
    box_type: type = Boxes,
    box_dim: int = 4,
    nms_fn: Callable[..., torch.Tensor] = batched_nms,
):
    """Threshold, clip and per-class NMS the predictions of every image.

    Args:
        boxes: per image, predicted boxes (Ri, K*4) for class-specific regression or (Ri, 4)
            for class-agnostic regression (as returned by ``FastRCNNOutputLayers.predict_boxes``).
        scores: per image, class probabilities (Ri, K+1), background last.
        image_shapes: per image, (height, width) to clip the boxes to.
        score_thresh: keep (ROI, class) pairs whose score is strictly above this.
        nms_thresh: IoU above which a lower-scoring box of the same class is suppressed.
        topk_per_image: keep at most this many detections per image; < 0 keeps all.
        return_selection: also return a :class:`BoxSelection` (candidates, NMS survivors).
        box_type, box_dim, nms_fn: the box kind: upright ``Boxes`` (4 numbers, ``batched_nms``)
            by default; ``fast_rcnn_inference_rotated`` passes ``RotatedBoxes``, 5 and
            ``batched_nms_rotated``.

    Returns:
        instances: per image, Instances with ``pred_boxes`` (Boxes), ``scores`` (Tensor[Di]) and
            ``pred_classes`` (int64 Tensor[Di]), sorted by decreasing score.
        kept_indices: per image, int64 Tensor[Di]: the ROI in [0, Ri) each detection came from
            (ROIs with non-finite predictions count as present).
        selection: with ``return_selection`` only.
    """
    if not (len(boxes) == len(scores) == len(image_shapes)):
        raise ValueError(f"fast_rcnn_inference got {len(boxes)} box tensors, {len(scores)} score "
                         f"tensors and {len(image_shapes)} image shapes; expected one per image.")
    result_per_image = [
        fast_rcnn_inference_single_image(
            boxes_per_image, scores_per_image, image_shape, score_thresh, nms_thresh,
            topk_per_image, return_selection=return_selection, box_type=box_type,
            box_dim=box_dim, nms_fn=nms_fn,
        )
        for scores_per_image, boxes_per_image, image_shape in zip(scores, boxes, image_shapes)
    ]
    instances, kept = [x[0] for x in result_per_image], [x[1] for x in result_per_image]
    if not return_selection:
        return instances, kept
    selection = BoxSelection(
        boxes=list(boxes), scores=list(scores), candidates=[x[2] for x in result_per_image],
        nms_kept=[x[3] for x in result_per_image], roi_index=[x[4] for x in result_per_image],
        instances=instances,
        settings=SelectionSettings({"score_thresh": score_thresh, "nms_thresh": nms_thresh,
                                    "topk": topk_per_image}, owner=None, attrs={}))
    return instances, kept, selection


def fast_rcnn_inference_single_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: Tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    *,
    return_selection: bool = False,
    box_type: type = Boxes,
    box_dim: int = 4,
    nms_fn: Callable[..., torch.Tensor] = batched_nms,
):
    """``fast_rcnn_inference`` for one image: boxes (Ri, K*B or B), scores (Ri, K+1), B the
    box dimension (4, or 5 for rotated boxes).

    With ``return_selection``, also (candidates (Ci, 2), nms_kept (Ci,), roi_index (Di,)), in
    rows of all the ROIs given (see :class:`BoxSelection`).
    """
    B = box_dim
    if boxes.dim() != 2 or boxes.shape[1] % B != 0:
        raise ValueError(f"Expected boxes of shape (R, K*{B}) or (R, {B}), got "
                         f"{tuple(boxes.shape)}.")
    if scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"Expected scores of shape (R, K+1) with R={boxes.shape[0]}, got "
                         f"{tuple(scores.shape)}.")
    valid_mask = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    valid_rows = None
    if not valid_mask.all():
        # NOTE: as in detectron2, the kept indices returned below then count only valid ROIs.
        boxes = boxes[valid_mask]
        scores = scores[valid_mask]
        valid_rows = valid_mask.nonzero()[:, 0]

    scores = scores[:, :-1]  # (R, K+1) -> (R, K): drop the background column
    num_bbox_reg_classes = boxes.shape[1] // B
    # Clip through the box type: (R, K*B) -> (R*K, B) -> clip -> (R, K, B)
    boxes = box_type(boxes.reshape(-1, B))
    boxes.clip(image_shape)
    boxes = boxes.tensor.view(-1, num_bbox_reg_classes, B)

    # 1. Drop (ROI, class) pairs at or below the threshold before NMS.
    filter_mask = scores > score_thresh  # (R, K)
    # (R', 2): column 0 is the ROI index, column 1 the class, in row-major order of filter_mask.
    filter_inds = filter_mask.nonzero()
    # Indexed by filter_inds rather than by the mask again: the same rows in the same order,
    # and no second search for them (on a GPU, each waits for the device).
    if num_bbox_reg_classes == 1:
        boxes = boxes[filter_inds[:, 0], 0]  # (R, 1, B) -> (R', B)
    else:
        boxes = boxes[filter_inds[:, 0], filter_inds[:, 1]]  # (R, K, B) -> (R', B)
    scores = scores[filter_inds[:, 0], filter_inds[:, 1]]  # (R, K) -> (R',)

    # 2. NMS per class; keep is sorted by decreasing score.
    nms_keep = nms_fn(boxes, scores, filter_inds[:, 1], nms_thresh)
    keep = nms_keep[:topk_per_image] if topk_per_image >= 0 else nms_keep
    candidates = filter_inds
    boxes, scores, filter_inds = boxes[keep], scores[keep], filter_inds[keep]

    result = Instances(image_shape)
    result.pred_boxes = box_type(boxes)
    result.scores = scores
    result.pred_classes = filter_inds[:, 1]
    if not return_selection:
        return result, filter_inds[:, 0]
    nms_kept = torch.zeros(len(candidates), dtype=torch.bool, device=candidates.device)
    nms_kept[nms_keep] = True
    if valid_rows is not None:  # in rows of all the ROIs given
        candidates = torch.stack([valid_rows[candidates[:, 0]], candidates[:, 1]], dim=1)
    return result, filter_inds[:, 0], candidates, nms_kept, candidates[keep, 0]

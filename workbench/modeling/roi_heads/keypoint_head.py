"""Keypoint R-CNN head: per-ROI features -> one heatmap per keypoint -> loss or (x, y, score).

Shapes used below:
    R        ROIs of all images of the batch, concatenated image after image
    C        channels of the pooled ROI features
    S        side of the pooled ROI features (ROI_KEYPOINT_HEAD.POOLER_RESOLUTION, 14 by default)
    M        side of the predicted heatmaps, M = 4 * S (a stride-2 transposed conv, then a
             bilinear x2 upsampling)
    K        keypoints per instance (ROI_KEYPOINT_HEAD.NUM_KEYPOINTS, 17 for COCO people)

Each keypoint is treated as an M*M-way classification: the target is the heatmap cell the
ground-truth keypoint falls in, and the loss is a softmax cross-entropy over the M*M cells.

To get predictions and losses from one pass, call the stages yourself:
``logits = head.layers(x)``, then ``keypoint_rcnn_loss(logits, instances, normalizer)`` and/or
``keypoint_rcnn_inference(logits, instances)``; ``forward`` picks one of them by
``head.training`` (kept that way for detectron2 compatibility).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import configurable
from workbench.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, interpolate
from workbench.structures import Instances, heatmaps_to_keypoints
from workbench.utils import perf
from workbench.utils.events import get_event_storage
from workbench.utils.registry import Registry

from ..recording import put_record

__all__ = [
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "build_keypoint_head",
    "keypoint_rcnn_loss",
    "keypoint_rcnn_inference",
    "BaseKeypointRCNNHead",
    "KRCNNConvDeconvUpsampleHead",
]

# Number of training batches whose keypoint loss was skipped for lack of any valid keypoint,
# counted over the life of the process (as detectron2 does) and logged as
# "kpts_num_skipped_batches".
_TOTAL_SKIPPED = 0


ROI_KEYPOINT_HEAD_REGISTRY = Registry("ROI_KEYPOINT_HEAD")
ROI_KEYPOINT_HEAD_REGISTRY.__doc__ = """
Registry for keypoint heads, which make keypoint predictions from per-region features.

The registered object will be called with `obj(cfg, input_shape)`, where `input_shape` is the
ShapeSpec of the pooled ROI features (channels, height=width=pooler resolution).
"""


def build_keypoint_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the keypoint head named by ``cfg.MODEL.ROI_KEYPOINT_HEAD.NAME``."""
    name = cfg.MODEL.ROI_KEYPOINT_HEAD.NAME
    return ROI_KEYPOINT_HEAD_REGISTRY.get(name)(cfg, input_shape)


def _check_keypoint_logits(pred_keypoint_logits: torch.Tensor) -> None:
    if pred_keypoint_logits.dim() != 4 or (
        pred_keypoint_logits.shape[2] != pred_keypoint_logits.shape[3]
    ):
        raise ValueError(
            "Expected pred_keypoint_logits of shape (R, K, M, M) with square heatmaps, "
            f"got {tuple(pred_keypoint_logits.shape)}."
        )


def _check_count(name: str, num_rows: int, instances: Sequence[Instances]) -> None:
    total = sum(len(x) for x in instances)
    if num_rows != total:
        raise ValueError(
            f"Expected {name} to have one row per instance ({total} instances in "
            f"{len(instances)} images), got {num_rows} rows."
        )


def keypoint_rcnn_loss(
    pred_keypoint_logits: torch.Tensor,
    instances: List[Instances],
    normalizer: Optional[float],
) -> torch.Tensor:
    """Softmax cross-entropy over heatmap cells, summed over the valid keypoints, normalised.

    A keypoint is valid when it is visible (v > 0) and falls inside its proposal box.

    Args:
        pred_keypoint_logits: (R, K, M, M) heatmap logits.
        instances: one Instances per image, in 1:1 order with the rows of
            ``pred_keypoint_logits``, with ``proposal_boxes`` (Boxes, XYXY absolute pixels) and
            ``gt_keypoints`` (Keypoints, (R_i, K, 3) as (x, y, visibility) absolute pixels).
        normalizer: divide the summed loss by this; None divides by the number of valid keypoints.

    Returns:
        Scalar loss. Without any valid keypoint, a zero that still depends on the logits, and the
        process-wide count of such batches is put in the EventStorage as
        ``kpts_num_skipped_batches``.
    """
    _check_keypoint_logits(pred_keypoint_logits)
    _check_count("pred_keypoint_logits", pred_keypoint_logits.shape[0], instances)
    heatmaps: List[torch.Tensor] = []
    valid: List[torch.Tensor] = []

    keypoint_side_len = pred_keypoint_logits.shape[2]
    for instances_per_image in instances:
        if len(instances_per_image) == 0:
            continue
        # (R_i, K) target cell index y * M + x, and (R_i, K) validity
        heatmaps_per_image, valid_per_image = instances_per_image.gt_keypoints.to_heatmap(
            instances_per_image.proposal_boxes.tensor, keypoint_side_len
        )
        heatmaps.append(heatmaps_per_image.reshape(-1))  # (R_i, K) -> (R_i*K,)
        valid.append(valid_per_image.reshape(-1))  # (R_i, K) -> (R_i*K,)

    if len(heatmaps) > 0:
        device = pred_keypoint_logits.device
        keypoint_targets = cat(heatmaps, dim=0).to(device=device)  # (R*K,)
        valid_inds = torch.nonzero(cat(valid, dim=0).to(device=device)).squeeze(1)  # (V,)

    # F.cross_entropy with reduction="sum" would give 0 here, but without the logits in the graph
    # nor the bookkeeping below.
    if len(heatmaps) == 0 or valid_inds.numel() == 0:
        global _TOTAL_SKIPPED
        _TOTAL_SKIPPED += 1
        storage = get_event_storage()
        storage.put_scalar("kpts_num_skipped_batches", _TOTAL_SKIPPED, smoothing_hint=False)
        return pred_keypoint_logits.sum() * 0

    N, K, H, W = pred_keypoint_logits.shape
    # (R, K, M, M) -> (R*K, M*M): one M*M-way classification per keypoint
    pred_keypoint_logits = pred_keypoint_logits.view(N * K, H * W)

    keypoint_loss = F.cross_entropy(
        pred_keypoint_logits[valid_inds], keypoint_targets[valid_inds], reduction="sum"
    )

    if normalizer is None:
        normalizer = valid_inds.numel()
    return keypoint_loss / normalizer


@perf.full_precision()  # post-processing: float32 under the autocast switch
def keypoint_rcnn_inference(
    pred_keypoint_logits: torch.Tensor, pred_instances: List[Instances]
) -> None:
    """Decode each heatmap into an image-space keypoint and attach results to the instances.

    Args:
        pred_keypoint_logits: (R, K, M, M) heatmap logits.
        pred_instances: one Instances per image, in 1:1 order with the rows of
            ``pred_keypoint_logits``, with ``pred_boxes`` (XYXY absolute pixels).

    Returns:
        None. Each Instances gets ``pred_keypoints`` (R_i, K, 3) as (x, y, score) in the
        coordinates of ``pred_boxes`` (score is the softmax probability of the chosen cell, > 0),
        and ``pred_keypoint_heatmaps`` (R_i, K, M, M), the logits as given (detached).
    """
    _check_keypoint_logits(pred_keypoint_logits)
    _check_count("pred_keypoint_logits", pred_keypoint_logits.shape[0], pred_instances)
    # list of (R_i, 4) -> (R, 4)
    bboxes_flat = cat([b.pred_boxes.tensor for b in pred_instances], dim=0)

    pred_keypoint_logits = perf.float32(pred_keypoint_logits.detach())  # decoded in float32
    # (R, K, 4) as (x, y, logit, score)
    keypoint_results = heatmaps_to_keypoints(pred_keypoint_logits, bboxes_flat.detach())
    num_instances_per_image = [len(i) for i in pred_instances]
    # (R, K, 4) -> (R, K, 3): keep x, y and the softmax score (slices: no index tensor to copy
    # to the device)
    keypoint_results = torch.cat([keypoint_results[:, :, 0:2], keypoint_results[:, :, 3:4]], dim=2)
    keypoint_results = keypoint_results.split(num_instances_per_image, dim=0)
    heatmap_results = pred_keypoint_logits.split(num_instances_per_image, dim=0)

    for keypoints_per_image, heatmaps_per_image, instances_per_image in zip(
        keypoint_results, heatmap_results, pred_instances
    ):
        instances_per_image.pred_keypoints = keypoints_per_image  # (R_i, K, 3)
        instances_per_image.pred_keypoint_heatmaps = heatmaps_per_image  # (R_i, K, M, M)


class BaseKeypointRCNNHead(nn.Module):
    """Loss and inference logic of Keypoint R-CNN; subclasses provide ``layers``.

    ``forward`` returns ``{"loss_keypoint": loss}`` in training mode and the instances (with
    ``pred_keypoints`` and ``pred_keypoint_heatmaps`` added) in eval mode.
    """

    @configurable
    def __init__(
        self,
        *,
        num_keypoints: int,
        loss_weight: float = 1.0,
        loss_normalizer: Union[float, str] = 1.0,
    ):
        """
        Args:
            num_keypoints: K, the number of keypoints predicted per instance.
            loss_weight: multiplier of the keypoint loss.
            loss_normalizer: a float divides the summed loss by ``loss_normalizer * #images``;
                "visible" divides it by the number of valid keypoints in the batch.
        """
        super().__init__()
        if not (loss_normalizer == "visible" or isinstance(loss_normalizer, float)):
            raise ValueError(
                f"Expected loss_normalizer to be a float or 'visible', got {loss_normalizer!r}."
            )
        self.num_keypoints = num_keypoints
        self.loss_weight = loss_weight
        self.loss_normalizer = loss_normalizer

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = {
            "loss_weight": cfg.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT,
            "num_keypoints": cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
        }
        if cfg.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS:
            ret["loss_normalizer"] = "visible"
        else:
            # The number of keypoints expected in a full batch of foreground samples per image.
            ret["loss_normalizer"] = (
                ret["num_keypoints"]
                * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE
                * cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION
            )
        return ret

    def forward(
        self, x: torch.Tensor, instances: List[Instances]
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """
        Args:
            x: (R, C, S, S) pooled ROI features.
            instances: one Instances per image, in 1:1 order with the ROIs. In training, the
                foreground proposals with ``proposal_boxes`` and ``gt_keypoints``; at inference,
                the detections with ``pred_boxes``.

        Returns:
            ``{"loss_keypoint": scalar}`` in training; otherwise ``instances`` with
            ``pred_keypoints`` and ``pred_keypoint_heatmaps``.
        """
        x = self.layers(x)
        if self.training:
            num_images = len(instances)
            normalizer = (
                None if self.loss_normalizer == "visible" else num_images * self.loss_normalizer
            )
            loss = keypoint_rcnn_loss(x, instances, normalizer=normalizer)
            return {"loss_keypoint": loss * self.loss_weight}
        put_record("keypoint_heatmaps", x, self)  # (R, K, M, M), kept only under a stage recorder
        keypoint_rcnn_inference(x, instances)
        return instances

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) ROI features -> (R, K, M, M) heatmap logits."""
        raise NotImplementedError


# An nn.Sequential (as in detectron2), so ``layers`` runs the children in registration order:
# conv_fcn1, conv_fcn_relu1, ..., score_lowres, then the bilinear upsampling. Add new children in
# the order they run.
@ROI_KEYPOINT_HEAD_REGISTRY.register()
class KRCNNConvDeconvUpsampleHead(BaseKeypointRCNNHead, nn.Sequential):
    """3x3 convs + ReLU, a 4x4 stride-2 transposed conv to K channels, then bilinear x2.

    Children (and hence state-dict names): ``conv_fcn{i}`` / ``conv_fcn_relu{i}`` for each entry
    of ``conv_dims``, then ``score_lowres``.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: Sequence[int],
                 **kwargs):
        """
        Args:
            input_shape: shape of the pooled ROI features (only ``channels`` is used).
            num_keypoints: K, the number of heatmaps predicted.
            conv_dims: output channels of each 3x3 conv, e.g. (512,) * 8.
            **kwargs: passed to :class:`BaseKeypointRCNNHead` (``loss_weight``,
                ``loss_normalizer``).
        """
        super().__init__(num_keypoints=num_keypoints, **kwargs)

        # Fixed, as in detectron2: the heatmaps come out 4x the pooled resolution.
        up_scale = 2.0
        in_channels = input_shape.channels

        for idx, layer_channels in enumerate(conv_dims, 1):
            module = Conv2d(in_channels, layer_channels, 3, stride=1, padding=1)
            self.add_module(f"conv_fcn{idx}", module)
            self.add_module(f"conv_fcn_relu{idx}", nn.ReLU())
            in_channels = layer_channels

        deconv_kernel = 4
        # (R, C', S, S) -> (R, K, 2S, 2S): padding k/2 - 1 makes the output exactly twice as large
        self.score_lowres = ConvTranspose2d(
            in_channels, num_keypoints, deconv_kernel, stride=2, padding=deconv_kernel // 2 - 1
        )
        self.up_scale = up_scale

        # Caffe2's MSRAFill (He-normal, fan_out) for every weight, zero biases.
        for name, param in self.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["input_shape"] = input_shape
        ret["conv_dims"] = cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) ROI features -> (R, K, 4S, 4S) heatmap logits."""
        if x.dim() != 4:
            raise ValueError(f"Expected ROI features of shape (R, C, S, S), got {tuple(x.shape)}.")
        # oneDNN blocked layout on CPU in inference (workbench.utils.perf): same values.
        x, onednn = perf.enter_onednn(self, x)
        for layer in self:
            x = layer(x)
        if onednn:
            x = x.to_dense()
        # (R, K, 2S, 2S) -> (R, K, 4S, 4S)
        return interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

"""Mask R-CNN mask head: per-ROI features -> per-class mask logits -> loss or soft masks.

Shapes used below:
    R        ROIs of all images of the batch, concatenated image after image
    C        channels of the pooled ROI features
    S        side of the pooled ROI features (ROI_MASK_HEAD.POOLER_RESOLUTION, 14 by default)
    M        side of the predicted masks, M = 2 * S (the head upsamples once, by 2)
    K        mask channels: the number of foreground classes, or 1 for a class-agnostic head

The head only ever sees masks in the ROI's own M x M frame. Training targets are the ground-truth
masks cropped to each proposal box and resampled to M x M; at inference the soft M x M masks are
attached to the instances and pasted into the image later, by ``detector_postprocess``.

To get predictions and losses from one pass, call the stages yourself:
``logits = head.layers(x)``, then ``mask_rcnn_loss(logits, instances)`` and/or
``mask_rcnn_inference(logits, instances)``; ``forward`` picks one of them by ``head.training``
(kept that way for detectron2 compatibility).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import configurable
from workbench.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from workbench.layers.weight_init import c2_msra_fill
from workbench.structures import Instances
from workbench.utils import perf
from workbench.utils.events import get_event_storage
from workbench.utils.registry import Registry

from ..recording import put_record

__all__ = [
    "ROI_MASK_HEAD_REGISTRY",
    "build_mask_head",
    "mask_rcnn_loss",
    "mask_rcnn_inference",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
]


ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = """
Registry for mask heads, which predict instance masks from per-region features.

The registered object will be called with `obj(cfg, input_shape)`, where `input_shape` is the
ShapeSpec of the pooled ROI features (channels, height=width=pooler resolution).
"""


def _check_mask_logits(pred_mask_logits: torch.Tensor) -> None:
    if pred_mask_logits.dim() != 4 or pred_mask_logits.shape[2] != pred_mask_logits.shape[3]:
        raise ValueError(
            "Expected pred_mask_logits of shape (R, K, M, M) with square masks, "
            f"got {tuple(pred_mask_logits.shape)}."
        )


def _check_count(name: str, num_rows: int, instances: Sequence[Instances]) -> None:
    total = sum(len(x) for x in instances)
    if num_rows != total:
        raise ValueError(
            f"Expected {name} to have one row per instance ({total} instances in "
            f"{len(instances)} images), got {num_rows} rows."
        )


@torch.jit.unused
def mask_rcnn_loss(
    pred_mask_logits: torch.Tensor, instances: List[Instances], vis_period: int = 0
) -> torch.Tensor:
    """Per-pixel binary cross-entropy of the Mask R-CNN paper, averaged over all mask pixels.

    Only the channel of each ROI's ground-truth class is penalised (or the single channel of a
    class-agnostic head). Also records, in the current EventStorage, the pixel accuracy and the
    false-positive / false-negative rates of the 0.5-thresholded predictions.

    Args:
        pred_mask_logits: (R, K, M, M) mask logits, K = number of classes or 1 (class-agnostic).
        instances: one Instances per image, in 1:1 order with the rows of ``pred_mask_logits``,
            with fields ``proposal_boxes`` (Boxes, XYXY absolute pixels), ``gt_masks``
            (PolygonMasks or BitMasks, anything with ``crop_and_resize(boxes, M)``) and, unless
            K == 1, ``gt_classes``.
        vis_period: every ``vis_period`` iterations (0 = never), put one image per ROI in the
            EventStorage: predicted probabilities on the left, the target on the right.

    Returns:
        Scalar loss. With no instances at all, a zero that still depends on the logits (so that
        every parameter receives a gradient).
    """
    _check_mask_logits(pred_mask_logits)
    _check_count("pred_mask_logits", pred_mask_logits.shape[0], instances)
    cls_agnostic_mask = pred_mask_logits.size(1) == 1
    mask_side_len = pred_mask_logits.size(2)
    device = pred_mask_logits.device

    gt_classes: List[torch.Tensor] = []
    gt_masks: List[torch.Tensor] = []
    for instances_per_image in instances:
        if len(instances_per_image) == 0:
            continue
        if not cls_agnostic_mask:
            gt_classes.append(instances_per_image.gt_classes.to(dtype=torch.int64))
        # Ground truth cropped to each proposal box, resampled to (R_i, M, M).
        targets = instances_per_image.gt_masks.crop_and_resize(
            instances_per_image.proposal_boxes.tensor, mask_side_len
        )
        gt_masks.append(targets.to(device=device))

    if len(gt_masks) == 0:
        return pred_mask_logits.sum() * 0

    gt_masks_t = cat(gt_masks, dim=0)  # (R, M, M)

    if cls_agnostic_mask:
        pred_mask_logits = pred_mask_logits[:, 0]  # (R, 1, M, M) -> (R, M, M)
    else:
        indices = torch.arange(pred_mask_logits.size(0), device=device)
        gt_classes_t = cat(gt_classes, dim=0).to(device=device)
        # (R, K, M, M) -> (R, M, M): the channel of each ROI's ground-truth class
        pred_mask_logits = pred_mask_logits[indices, gt_classes_t]

    # crop_and_resize may return bool (rasterised polygons, thresholded bitmaps) or soft floats.
    if gt_masks_t.dtype == torch.bool:
        gt_masks_bool = gt_masks_t
    else:
        gt_masks_bool = gt_masks_t > 0.5
    gt_masks_t = gt_masks_t.to(dtype=torch.float32)

    # Training statistics at the 0.5 probability threshold (logit 0), against the gt class.
    mask_incorrect = (pred_mask_logits > 0.0) != gt_masks_bool
    mask_accuracy = 1 - (mask_incorrect.sum().item() / max(mask_incorrect.numel(), 1.0))
    num_positive = gt_masks_bool.sum().item()
    false_positive = (mask_incorrect & ~gt_masks_bool).sum().item() / max(
        gt_masks_bool.numel() - num_positive, 1.0
    )
    false_negative = (mask_incorrect & gt_masks_bool).sum().item() / max(num_positive, 1.0)

    storage = get_event_storage()
    storage.put_scalar("mask_rcnn/accuracy", mask_accuracy)
    storage.put_scalar("mask_rcnn/false_positive", false_positive)
    storage.put_scalar("mask_rcnn/false_negative", false_negative)
    if vis_period > 0 and storage.iter % vis_period == 0:
        # (R, M, M) and (R, M, M) -> (R, M, 2M): prediction | target, side by side
        vis_masks = torch.cat([pred_mask_logits.sigmoid(), gt_masks_t], dim=2)
        name = "Left: mask prediction;   Right: mask GT"
        for idx, vis_mask in enumerate(vis_masks):
            # (M, 2M) -> (3, M, 2M): grey-level RGB
            storage.put_image(name + f" ({idx})", torch.stack([vis_mask] * 3, dim=0))

    return F.binary_cross_entropy_with_logits(pred_mask_logits, gt_masks_t, reduction="mean")


@perf.full_precision()  # post-processing: float32 under the autocast switch
def mask_rcnn_inference(pred_mask_logits: torch.Tensor, pred_instances: List[Instances]) -> None:
    """Attach to each predicted instance the soft mask of its predicted class (float32
    probabilities, whatever the logits' dtype).

    Args:
        pred_mask_logits: (R, K, M, M) mask logits, K = number of classes or 1 (class-agnostic).
        pred_instances: one Instances per image, in 1:1 order with the rows of
            ``pred_mask_logits``; each needs ``pred_classes`` unless K == 1.

    Returns:
        None. Each Instances gets ``pred_masks``: (R_i, 1, M, M) foreground probabilities in the
        frame of its ``pred_boxes``, neither thresholded nor pasted into the image (that is
        ``detector_postprocess``'s job).
    """
    _check_mask_logits(pred_mask_logits)
    _check_count("pred_mask_logits", pred_mask_logits.shape[0], pred_instances)
    cls_agnostic_mask = pred_mask_logits.size(1) == 1

    if cls_agnostic_mask:
        mask_probs_pred = perf.float32(pred_mask_logits).sigmoid()  # (R, 1, M, M)
    else:
        class_pred = cat([i.pred_classes for i in pred_instances]).to(pred_mask_logits.device)
        indices = torch.arange(pred_mask_logits.shape[0], device=pred_mask_logits.device)
        # (R, K, M, M) -> (R, M, M) -> (R, 1, M, M): the channel of the predicted class
        mask_probs_pred = perf.float32(pred_mask_logits[indices, class_pred][:, None]).sigmoid()

    num_boxes_per_image = [len(i) for i in pred_instances]
    for prob, instances in zip(mask_probs_pred.split(num_boxes_per_image, dim=0), pred_instances):
        instances.pred_masks = prob  # (R_i, 1, M, M)


class BaseMaskRCNNHead(nn.Module):
    """Loss and inference logic of Mask R-CNN; subclasses provide ``layers``.

    ``forward`` returns ``{"loss_mask": loss}`` in training mode and the instances (with
    ``pred_masks`` added) in eval mode.
    """

    @configurable
    def __init__(self, *, loss_weight: float = 1.0, vis_period: int = 0):
        """
        Args:
            loss_weight: multiplier of the mask loss.
            vis_period: see :func:`mask_rcnn_loss` (0 = no visualisation).
        """
        super().__init__()
        self.vis_period = vis_period
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"vis_period": cfg.VIS_PERIOD}

    def forward(
        self, x: torch.Tensor, instances: List[Instances]
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """
        Args:
            x: (R, C, S, S) pooled ROI features.
            instances: one Instances per image, in 1:1 order with the ROIs. In training, the
                foreground proposals with ``proposal_boxes``, ``gt_classes`` and ``gt_masks``; at
                inference, the detections with ``pred_boxes`` and ``pred_classes``.

        Returns:
            ``{"loss_mask": scalar}`` in training; otherwise ``instances`` with ``pred_masks``.
        """
        x = self.layers(x)
        if self.training:
            return {"loss_mask": mask_rcnn_loss(x, instances, self.vis_period) * self.loss_weight}
        put_record("mask_logits", x, self)  # (R, K, M, M), kept only under a stage recorder
        mask_rcnn_inference(x, instances)
        return instances

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) ROI features -> (R, K, M, M) mask logits."""
        raise NotImplementedError


# An nn.Sequential (as in detectron2), so ``layers`` simply runs the children in registration
# order: mask_fcn1..N, deconv, deconv_relu, predictor. Add new children in the order they run.
@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead, nn.Sequential):
    """3x3 convs, one 2x2 stride-2 transposed conv, then a 1x1 conv predicting K mask logits.

    Children (and hence state-dict names): ``mask_fcn{1..N}`` (conv + optional norm + ReLU),
    ``deconv``, ``deconv_relu``, ``predictor``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: Sequence[int],
        conv_norm: Union[str, nn.Module] = "",
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the pooled ROI features (only ``channels`` is used).
            num_classes: number of mask channels K; 1 for class-agnostic masks.
            conv_dims: output channels of the N 3x3 convs followed by those of the transposed
                conv, so its length is N + 1 >= 1.
            conv_norm: norm after each 3x3 conv (see :func:`workbench.layers.get_norm`);
                "" for none, in which case the convs carry a bias.
            **kwargs: passed to :class:`BaseMaskRCNNHead` (``loss_weight``, ``vis_period``).
        """
        super().__init__(**kwargs)
        if len(conv_dims) < 1:
            raise ValueError(f"Expected conv_dims to hold at least one entry, got {conv_dims}.")
        if num_classes < 1:
            raise ValueError(f"Expected num_classes >= 1, got {num_classes}.")

        self.conv_norm_relus: List[nn.Module] = []
        cur_channels = input_shape.channels
        for k, conv_dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(
                cur_channels,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            cur_channels = conv_dim

        # (R, C', S, S) -> (R, conv_dims[-1], 2S, 2S)
        self.deconv = ConvTranspose2d(
            cur_channels, conv_dims[-1], kernel_size=2, stride=2, padding=0
        )
        self.add_module("deconv_relu", nn.ReLU())
        cur_channels = conv_dims[-1]

        self.predictor = Conv2d(cur_channels, num_classes, kernel_size=1, stride=1, padding=0)

        for layer in self.conv_norm_relus + [self.deconv]:
            c2_msra_fill(layer)
        # Small initial logits for the predictor.
        nn.init.normal_(self.predictor.weight, std=0.001)
        if self.predictor.bias is not None:
            nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        conv_dim = cfg.MODEL.ROI_MASK_HEAD.CONV_DIM
        num_conv = cfg.MODEL.ROI_MASK_HEAD.NUM_CONV
        ret.update(
            input_shape=input_shape,
            conv_dims=[conv_dim] * (num_conv + 1),  # the last one is the transposed conv
            conv_norm=cfg.MODEL.ROI_MASK_HEAD.NORM,
            num_classes=(
                1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES
            ),
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) ROI features -> (R, K, 2S, 2S) mask logits."""
        if x.dim() != 4:
            raise ValueError(f"Expected ROI features of shape (R, C, S, S), got {tuple(x.shape)}.")
        # oneDNN blocked layout on CPU in inference (workbench.utils.perf): same values.
        x, onednn = perf.enter_onednn(self, x)
        for layer in self:
            x = layer(x)
        return x.to_dense() if onednn else x


def build_mask_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the mask head named by ``cfg.MODEL.ROI_MASK_HEAD.NAME``."""
    name = cfg.MODEL.ROI_MASK_HEAD.NAME
    return ROI_MASK_HEAD_REGISTRY.get(name)(cfg, input_shape)

"""ROI heads of a "C4" model (``Res5ROIHeads``): box and mask heads share the res5 stage.

Shapes: R ROIs of all images; C, P channels and side of the pooled crops (res4, stride 16).
"""

from __future__ import annotations

import inspect
import logging
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from workbench.config import configurable
from workbench.layers import ShapeSpec
from workbench.structures import Boxes, ImageList, Instances

from ..backbone.resnet import BottleneckBlock, ResNet
from ..poolers import ROIPooler
from ..recording import LazyPooled, active_recorder, run_stage
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import build_mask_head
from .records import BoxStage, put_box_record, run_head_recorded
from .roi_heads import ROI_HEADS_REGISTRY, ROIHeads, select_foreground_proposals

__all__ = ["Res5ROIHeads"]

logger = logging.getLogger(__name__)


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """ROI heads of a "C4" model: box and mask heads share one crop and the res5 stage.

    ROIs are pooled from the single input feature (res4, stride 16), run through res5 (whose
    first block has stride 2), and averaged over space for the box predictor; the mask head
    works on the res5 features of the same crops.

    Args:
        in_features: the one feature name pooled from.
        pooler: crops (R, C, P, P).
        res5: the res5 stage, (R, C, P, P) -> (R, 2C, P/2, P/2); a list of blocks is wrapped
            into an ``nn.Sequential``.
        box_predictor: (R, 2C) -> scores and deltas (``FastRCNNOutputLayers``).
        mask_head: called as ``mask_head(res5_features, instances)``; None disables masks.
        **kwargs: the arguments of ``ROIHeads``.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        pooler: ROIPooler,
        res5: nn.Module,
        box_predictor: nn.Module,
        mask_head: Optional[nn.Module] = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.in_features = in_features
        self.pooler = pooler
        if isinstance(res5, (list, tuple)):
            res5 = nn.Sequential(*res5)
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg)
        in_features = ret["in_features"] = cfg.MODEL.ROI_HEADS.IN_FEATURES
        pooler_resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooler_type = cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE
        sampling_ratio = cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO
        if cfg.MODEL.KEYPOINT_ON:
            raise ValueError("Res5ROIHeads has no keypoint head; set MODEL.KEYPOINT_ON=False or "
                             "use StandardROIHeads.")
        if len(in_features) != 1:
            raise ValueError(f"Res5ROIHeads pools from exactly one feature, got "
                             f"ROI_HEADS.IN_FEATURES={list(in_features)}.")
        pooler_scales = (1.0 / input_shape[in_features[0]].stride,)

        ret["pooler"] = ROIPooler(
            output_size=pooler_resolution,
            scales=pooler_scales,
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
        )
        # Older subclasses may override _build_res5_block as a plain method.
        if not inspect.ismethod(cls._build_res5_block):
            logger.warning("The behavior of _build_res5_block may change. "
                           "Please do not depend on private methods.")
            cls._build_res5_block = classmethod(cls._build_res5_block)

        ret["res5"], out_channels = cls._build_res5_block(cfg)
        ret["box_predictor"] = FastRCNNOutputLayers(
            cfg, ShapeSpec(channels=out_channels, height=1, width=1)
        )
        if cfg.MODEL.MASK_ON:
            ret["mask_head"] = build_mask_head(
                cfg,
                ShapeSpec(channels=out_channels, width=pooler_resolution,
                          height=pooler_resolution),
            )
        return ret

    @classmethod
    def _build_res5_block(cls, cfg) -> Tuple[nn.Module, int]:
        """The res5 stage (3 bottleneck blocks, first with stride 2) and its output channels."""
        stage_channel_factor = 2 ** 3  # res5 has 8x the channels of res2
        num_groups = cfg.MODEL.RESNETS.NUM_GROUPS
        width_per_group = cfg.MODEL.RESNETS.WIDTH_PER_GROUP
        bottleneck_channels = num_groups * width_per_group * stage_channel_factor
        out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * stage_channel_factor
        stride_in_1x1 = cfg.MODEL.RESNETS.STRIDE_IN_1X1
        norm = cfg.MODEL.RESNETS.NORM
        if cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE[-1]:
            raise ValueError("Deformable convolutions are not supported in the res5 ROI head.")

        # NOTE: as in detectron2, RESNETS.RES5_DILATION is not applied here (dilation 1).
        blocks = ResNet.make_stage(
            BottleneckBlock,
            3,
            stride_per_block=[2, 1, 1],
            in_channels=out_channels // 2,
            bottleneck_channels=bottleneck_channels,
            out_channels=out_channels,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
        )
        return nn.Sequential(*blocks), out_channels

    def _shared_roi_transform(self, features: List[torch.Tensor],
                              boxes: List[Boxes]) -> torch.Tensor:
        """Crop and run res5: (R, C, P, P) -> (R, 2C, P/2, P/2)."""
        x = self.pooler(features, boxes)
        return self.res5(x)

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """See ``ROIHeads.forward``. In training, returns ([], losses) as detectron2 does."""
        del images
        if self.training:
            proposals = self._sample_for_training(proposals, targets)
        del targets

        if not self.training:
            # The box branch alone, then the mask head on the detections (which crops again).
            pred_instances = self._forward_box(features, proposals)
            return self._heads_on_detections(features, pred_instances), {}
        proposal_boxes = [x.proposal_boxes for x in proposals]
        box_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], proposal_boxes
        )  # (R, 2C, P/2, P/2)
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))  # -> (R, 2C)
        losses = self.box_predictor.losses(predictions, proposals)
        if self.mask_on:
            proposals, fg_selection_masks = select_foreground_proposals(
                proposals, self.num_classes
            )
            # The crops are shared with the box head: reuse the foreground ones.
            mask_features = box_features[torch.cat(fg_selection_masks, dim=0)]
            del box_features
            losses.update(self.mask_head(mask_features, proposals))
        return [], losses

    def _forward_box(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """Box branch alone, with the contract of ``StandardROIHeads._forward_box``.

        Not in detectron2's Res5ROIHeads (its ``forward`` shares the crops with the mask head);
        added so that partial execution reads the same for both kinds of heads. At inference
        ``forward`` calls it, so a subclass that overrides it changes the model's detections.
        """
        maps = [features[f] for f in self.in_features]
        boxes = [x.proposal_boxes for x in proposals]
        embeddings = run_stage("box_features", lambda: self._shared_roi_transform(
            maps, boxes).mean(dim=[2, 3]), owner=self)  # (R, 2C, P/2, P/2) -> (R, 2C)
        predictions = run_stage("box_predictions", lambda: self.box_predictor(embeddings),
                                owner=self)
        rec = active_recorder(self)
        if rec is not None:
            stage = BoxStage(proposals=proposals,
                             pool=LazyPooled(lambda b: self.pooler(maps, b), boxes),
                             pooler_level=None, embeddings=embeddings, logits=predictions[0],
                             deltas=predictions[1])
        if self.training:
            return self.box_predictor.losses(predictions, proposals)
        mark = rec.mark() if rec is not None else 0
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        if rec is not None:
            put_box_record(rec, [stage], mark)
        return pred_instances

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Add masks to given detections (eval only); see ``StandardROIHeads``."""
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference; call .eval() first.")
        if len(instances) and not (instances[0].has("pred_boxes") and
                                   instances[0].has("pred_classes")):
            raise ValueError("forward_with_given_boxes needs instances with 'pred_boxes' and "
                             f"'pred_classes', got fields {list(instances[0].get_fields())}.")
        if self.mask_on:
            feature_list = [features[f] for f in self.in_features]
            boxes = [x.pred_boxes for x in instances]
            x = self._shared_roi_transform(feature_list, boxes)
            pool = LazyPooled.of(lambda b: self._shared_roi_transform(feature_list, b), boxes, x)
            return run_head_recorded(self.mask_head, x, instances, pool, False, "mask")
        return instances

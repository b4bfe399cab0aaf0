"""Cascade R-CNN ROI heads (Cai & Vasconcelos 2018).

The box branch runs S stages. Stage 0 classifies and refines the RPN proposals as Faster R-CNN
does; stage k > 0 takes the boxes stage k-1 predicted as its proposals and is trained with a
stricter IoU threshold (``ROI_BOX_CASCADE_HEAD.IOUS``, e.g. 0.5 / 0.6 / 0.7) and smaller
regression targets (larger ``BBOX_REG_WEIGHTS``). At inference the class probabilities of all
stages are averaged and the boxes of the last stage are kept. Mask and keypoint heads are those
of :class:`StandardROIHeads`, run on the final detections.

Shape legend:
    N        images in the batch
    S        cascade stages
    R        ROIs of all images, concatenated image after image (Ri in image i)
    K        foreground classes; label K is background
    C, P     channels and side of the pooled ROI features (R, C, P, P)
    D        width of the box-head output

Boxes are XYXY in absolute pixels of the resized input image. Regression is class-agnostic
(one box per ROI), as detectron2 requires for cascades.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.autograd.function import Function

from workbench.config import configurable
from workbench.layers import ShapeSpec
from workbench.structures import Boxes, ImageList, Instances, pairwise_iou
from workbench.utils.events import get_event_storage

from ..box_regression import Box2BoxTransform
from ..matcher import Matcher
from ..poolers import ROIPooler
from .box_head import build_box_head
from ..recording import LazyPooled, active_recorder, run_stage
from .fast_rcnn import FastRCNNOutputLayers
from .records import BoxStage, put_box_record
from .roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads

__all__ = ["CascadeROIHeads"]


class _ScaleGradient(Function):
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * ctx.scale, None


@ROI_HEADS_REGISTRY.register()
class CascadeROIHeads(StandardROIHeads):
    """:class:`StandardROIHeads` whose box branch is a cascade of S (box head, predictor) stages.

    ``box_head`` and ``box_predictor`` are ``nn.ModuleList`` of length S, so state-dict names are
    ``box_head.{k}.fc1.weight``, ``box_predictor.{k}.cls_score.weight`` as in detectron2.
    Training losses are named ``{loss}_stage{k}`` (e.g. ``loss_cls_stage0``) and every stage
    logs ``stage{k}/...`` scalars.
    """

    @configurable
    def __init__(self, *, box_in_features: List[str], box_pooler: ROIPooler,
                 box_heads: Sequence[nn.Module], box_predictors: Sequence[nn.Module],
                 proposal_matchers: Sequence[Matcher], **kwargs) -> None:
        """
        Args:
            box_pooler: crops (R, C, P, P) features for every stage.
            box_heads: S box heads, (R, C, P, P) -> (R, D).
            box_predictors: S ``FastRCNNOutputLayers`` with class-agnostic regression, each with
                its stage's ``Box2BoxTransform``.
            proposal_matchers: S matchers; the first labels the RPN proposals (it replaces
                ``ROIHeads``' ``proposal_matcher``), the others the boxes of the previous stage.
            **kwargs: the other arguments of :class:`StandardROIHeads` (no ``proposal_matcher``).
        """
        if "proposal_matcher" in kwargs:
            raise TypeError(
                "CascadeROIHeads takes 'proposal_matchers=' (one per stage) instead of "
                "'proposal_matcher='."
            )
        num_stages = len(box_heads)
        if num_stages == 0:
            raise ValueError("CascadeROIHeads needs at least one stage (box_heads is empty).")
        if len(box_predictors) != num_stages or len(proposal_matchers) != num_stages:
            raise ValueError(
                f"CascadeROIHeads needs one box head, predictor and matcher per stage; got "
                f"{num_stages} box_heads, {len(box_predictors)} box_predictors, "
                f"{len(proposal_matchers)} proposal_matchers."
            )
        # Stage 0 matches the RPN proposals, which ROIHeads.label_and_sample_proposals does.
        kwargs["proposal_matcher"] = proposal_matchers[0]
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            **kwargs,
        )
        self.num_cascade_stages = num_stages
        self.proposal_matchers = list(proposal_matchers)

    @classmethod
    def from_config(cls, cfg, input_shape) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret.pop("proposal_matcher")  # replaced by _init_box_head's proposal_matchers
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape) -> dict:
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        pooler_resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooler_scales = tuple(1.0 / input_shape[k].stride for k in in_features)
        sampling_ratio = cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO
        pooler_type = cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE
        cascade_bbox_reg_weights = cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
        cascade_ious = cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS
        if len(cascade_bbox_reg_weights) != len(cascade_ious):
            raise ValueError(
                f"ROI_BOX_CASCADE_HEAD has {len(cascade_ious)} IOUS but "
                f"{len(cascade_bbox_reg_weights)} BBOX_REG_WEIGHTS; give one of each per stage."
            )
        if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
            raise ValueError("CascadeROIHeads only supports class-agnostic regression: set "
                             "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True.")
        if cascade_ious[0] != cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]:
            raise ValueError(
                f"The first cascade IoU ({cascade_ious[0]}) must equal "
                f"MODEL.ROI_HEADS.IOU_THRESHOLDS[0] ({cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]})."
            )

        in_channels = [input_shape[f].channels for f in in_features]
        if len(set(in_channels)) != 1:
            raise ValueError(f"CascadeROIHeads needs equal channels on {in_features}, got {in_channels}.")
        in_channels = in_channels[0]

        box_pooler = ROIPooler(
            output_size=pooler_resolution,
            scales=pooler_scales,
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
        )
        pooled_shape = ShapeSpec(channels=in_channels, width=pooler_resolution, height=pooler_resolution)

        box_heads, box_predictors, proposal_matchers = [], [], []
        for match_iou, bbox_reg_weights in zip(cascade_ious, cascade_bbox_reg_weights):
            box_head = build_box_head(cfg, pooled_shape)
            box_heads.append(box_head)
            box_predictors.append(FastRCNNOutputLayers(
                cfg, box_head.output_shape, box2box_transform=Box2BoxTransform(weights=bbox_reg_weights)
            ))
            proposal_matchers.append(Matcher([match_iou], [0, 1], allow_low_quality_matches=False))
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_heads": box_heads,
            "box_predictors": box_predictors,
            "proposal_matchers": proposal_matchers,
        }

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """See ``ROIHeads.forward``. In training, returns the sampled proposals and the losses."""
        del images
        if self.training:
            proposals = self._sample_for_training(proposals, targets)
            # Later stages match their own boxes to the targets.
            losses = self._forward_box(features, proposals, targets)
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals)
        return self._heads_on_detections(features, pred_instances), {}

    def _forward_box(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """Run the S stages.

        Args:
            proposals: per image, the (sampled, in training) proposals with ``proposal_boxes``,
                ``objectness_logits`` and, in training, ``gt_classes`` / ``gt_boxes``.
            targets: the ground truth, to label the boxes of stages k > 0 (training only).

        Returns:
            Training: ``{"{loss}_stage{k}": ...}`` over all stages. Inference: per-image
            detections scored with the stage-averaged probabilities.
        """
        features = [features[f] for f in self.box_in_features]
        head_outputs = []  # (predictor, predictions, proposals) per stage
        prev_pred_boxes = None
        image_sizes = [x.image_size for x in proposals]
        rec = active_recorder(self)
        mark = rec.mark() if rec is not None else 0
        for k in range(self.num_cascade_stages):
            if k > 0:
                # The boxes predicted by stage k-1 are the proposals of stage k.
                proposals = self._create_proposals_from_boxes(
                    prev_pred_boxes, image_sizes, logits=[p.objectness_logits for p in proposals]
                )
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(features, proposals, k)
            prev_pred_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)  # N x (Ri, 4)
            head_outputs.append((self.box_predictor[k], predictions, proposals))

        if self.training:
            losses = {}
            storage = get_event_storage()
            for stage, (predictor, predictions, stage_proposals) in enumerate(head_outputs):
                with storage.name_scope(f"stage{stage}"):
                    stage_losses = predictor.losses(predictions, stage_proposals)
                losses.update({f"{name}_stage{stage}": v for name, v in stage_losses.items()})
            return losses

        # S x N x (Ri, K+1) -> N x (Ri, K+1): mean over stages of the class probabilities.
        scores_per_stage = [h[0].predict_probs(h[1], h[2]) for h in head_outputs]
        scores = [
            sum(list(scores_per_image)) * (1.0 / self.num_cascade_stages)
            for scores_per_image in zip(*scores_per_stage)
        ]
        predictor, predictions, last_proposals = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, last_proposals)  # N x (Ri, 4)
        # fast_rcnn_inference with the last predictor's test settings
        select_mark = rec.mark() if rec is not None else 0
        pred_instances, _ = predictor.select(boxes, scores, image_sizes)
        if rec is not None:
            stages = rec.since(mark, "box_stage")
            if len(stages) == len(head_outputs):  # else a custom stage recorded nothing
                for stage, (p, pred, props), probs in zip(stages, head_outputs, scores_per_stage):
                    stage.boxes, stage.probs = list(p.predict_boxes(pred, props)), list(probs)
                put_box_record(rec, stages, select_mark)
        return pred_instances

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals: List[Instances], stage: int,
                               targets: List[Instances]) -> List[Instances]:
        """Label the proposals of stage ``stage`` with that stage's matcher (no sampling).

        Args:
            proposals: per image, Instances with ``proposal_boxes``.
            targets: per image, the ground truth with ``gt_boxes`` and ``gt_classes``.

        Returns:
            The same proposals with ``gt_classes`` (K for background) and ``gt_boxes`` (zeros
            for an image without ground truth).
        """
        num_fg_samples, num_bg_samples = [], []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            match_quality_matrix = pairwise_iou(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )  # (M, Ri)
            matched_idxs, proposal_labels = self.proposal_matchers[stage](match_quality_matrix)
            if len(targets_per_image) > 0:
                gt_classes = targets_per_image.gt_classes[matched_idxs]
                gt_classes[proposal_labels == 0] = self.num_classes  # unmatched: background
                gt_boxes = targets_per_image.gt_boxes[matched_idxs]
            else:
                gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
                gt_boxes = Boxes(
                    targets_per_image.gt_boxes.tensor.new_zeros((len(proposals_per_image), 4))
                )
            proposals_per_image.gt_classes = gt_classes
            proposals_per_image.gt_boxes = gt_boxes

            num_fg_samples.append((proposal_labels == 1).sum().item())
            num_bg_samples.append(proposal_labels.numel() - num_fg_samples[-1])

        storage = get_event_storage()
        storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples",
                           sum(num_fg_samples) / len(num_fg_samples))
        storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples",
                           sum(num_bg_samples) / len(num_bg_samples))
        return proposals

    def _run_stage(self, features: List[torch.Tensor], proposals: List[Instances],
                   stage: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pool, box head and predictor of one stage: ``(scores (R, K+1), deltas (R, 4))``."""
        boxes = [x.proposal_boxes for x in proposals]
        rec = active_recorder(self)
        if rec is None:
            box_features = self.box_pooler(features, boxes)  # (R, C, P, P)
            # The original Cascade R-CNN averages the stage losses but scales up the heads'
            # gradients; adding the losses and scaling down the gradient into the shared
            # features is the same thing.
            if self.training:
                box_features = _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)
            box_features = self.box_head[stage](box_features)  # (R, C, P, P) -> (R, D)
            return self.box_predictor[stage](box_features)
        # Inference under a recorder: stage points, so that a trace can re-select without
        # pooling or running the heads again.
        pool = LazyPooled(lambda b: self.box_pooler(features, b), boxes)
        box_features = run_stage(f"box_features.{stage}", lambda: self.box_head[stage](
            pool.keep_if_grad(self.box_pooler(features, boxes))), owner=self)
        predictions = run_stage(f"box_predictions.{stage}",
                                lambda: self.box_predictor[stage](box_features), owner=self)
        rec.put("box_stage", BoxStage(
            proposals=proposals, pool=pool, pooler_level=self.box_pooler.level_of(boxes),
            embeddings=box_features, logits=predictions[0], deltas=predictions[1],
            pooler_features=list(self.box_in_features)))
        return predictions

    def _create_proposals_from_boxes(self, boxes: List[torch.Tensor], image_sizes: List[Tuple[int, int]],
                                     logits: List[torch.Tensor]) -> List[Instances]:
        """Turn one stage's predicted boxes into the next stage's proposals.

        Args:
            boxes: per image, (Ri, 4) predicted boxes.
            image_sizes: per image, (height, width) to clip to.
            logits: per image, (Ri,) objectness logits carried along from the RPN proposals.

        Returns:
            per image, Instances with ``proposal_boxes`` (detached, clipped; in training also
            without empty boxes) and ``objectness_logits``.
        """
        boxes = [Boxes(b.detach()) for b in boxes]  # proposals carry no gradient, as in RPN
        proposals = []
        for boxes_per_image, image_size, logit in zip(boxes, image_sizes, logits):
            boxes_per_image.clip(image_size)
            if self.training:
                # Only in training: at inference the stages' scores are averaged per ROI, so
                # every stage must keep the same ROIs.
                inds = boxes_per_image.nonempty()
                boxes_per_image = boxes_per_image[inds]
                logit = logit[inds]
            prop = Instances(image_size)
            prop.proposal_boxes = boxes_per_image
            prop.objectness_logits = logit
            proposals.append(prop)
        return proposals

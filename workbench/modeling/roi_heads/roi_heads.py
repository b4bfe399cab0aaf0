"""ROI heads: per-region computation of a two-stage detector (boxes, then masks and keypoints).

Shapes used below:
    N        images in the batch
    R        ROIs of all images, concatenated image after image (Ri in image i)
    M        ground-truth instances of one image
    K        foreground classes; label K is background, -1 an ignored proposal
    C, P     channels and side of the pooled ROI features (R, C, P, P)

Training (``ROIHeads.label_and_sample_proposals``): the gt boxes are appended to the proposals,
every proposal is matched to the gt box it overlaps most (IoU), labelled with that box's class
(foreground), K (background) or -1 (ignored) by the matcher thresholds, and a class-balanced
random subset is kept. The gt fields of the matched instance (``gt_boxes``, ``gt_masks``, ...)
are copied onto each sampled proposal.

Inference: boxes are predicted from every proposal, then masks and keypoints only for the kept
detections (``forward_with_given_boxes``), as in detectron2.

Each stage can be called on its own: ``heads._forward_box(features, proposals)`` returns the
detections (eval) or the box losses (train); ``heads._forward_mask`` / ``_forward_keypoint``
likewise for the other heads.
"""

from __future__ import annotations

import inspect
import logging
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from workbench.config import configurable
from workbench.layers import ShapeSpec, nonzero_tuple
from workbench.structures import Boxes, ImageList, Instances, pairwise_iou
from workbench.utils.events import get_event_storage
from workbench.utils.registry import Registry

from ..matcher import Matcher
from ..poolers import ROIPooler
from ..proposal_generator.proposal_utils import add_ground_truth_to_proposals
from ..recording import LazyPooled, active_recorder, run_stage
from ..sampling import subsample_labels
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers
from .keypoint_head import build_keypoint_head
from .mask_head import build_mask_head
from .records import BoxStage, put_box_record, run_head_recorded

__all__ = [
    "ROI_HEADS_REGISTRY",
    "build_roi_heads",
    "select_foreground_proposals",
    "select_proposals_with_visible_keypoints",
    "ROIHeads",
    "StandardROIHeads",
    "Res5ROIHeads",
]

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
Registry for ROI heads of a generalized R-CNN: they take the feature maps and the region proposals
and do all per-region computation.

The registered object is called as `obj(cfg, input_shape)`, where `input_shape` is the backbone's
`output_shape()` (dict of feature name -> ShapeSpec), and must return an `ROIHeads`.
"""

logger = logging.getLogger(__name__)


def build_roi_heads(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the ROI heads named by ``cfg.MODEL.ROI_HEADS.NAME``."""
    name = cfg.MODEL.ROI_HEADS.NAME
    return ROI_HEADS_REGISTRY.get(name)(cfg, input_shape)


def select_foreground_proposals(
    proposals: List[Instances], bg_label: int
) -> Tuple[List[Instances], List[torch.Tensor]]:
    """Keep the proposals labelled with a foreground class (``gt_classes`` not -1, not bg).

    Args:
        proposals: per image, Instances with a ``gt_classes`` field.
        bg_label: the background label (K).

    Returns:
        the foreground proposals of each image, and per image the boolean (Ri,) selection mask.
    """
    if not isinstance(proposals, (list, tuple)):
        raise TypeError(f"Expected a list of Instances, got {type(proposals).__name__}.")
    if len(proposals) and not proposals[0].has("gt_classes"):
        raise ValueError("select_foreground_proposals needs proposals with 'gt_classes'; "
                         "were they labelled by label_and_sample_proposals?")
    fg_proposals = []
    fg_selection_masks = []
    for proposals_per_image in proposals:
        gt_classes = proposals_per_image.gt_classes
        fg_selection_mask = (gt_classes != -1) & (gt_classes != bg_label)
        fg_idxs = fg_selection_mask.nonzero().squeeze(1)
        fg_proposals.append(proposals_per_image[fg_idxs])
        fg_selection_masks.append(fg_selection_mask)
    return fg_proposals, fg_selection_masks


def select_proposals_with_visible_keypoints(proposals: List[Instances]) -> List[Instances]:
    """Keep the proposals whose matched gt instance has a visible keypoint inside the proposal.

    Proposals are sampled first and filtered here (Detectron re-sampled among the proposals with
    a visible keypoint instead; detectron2 reports no difference). Puts the mean number kept per
    image in the storage as ``keypoint_head/num_fg_samples``.

    Args:
        proposals: per image, Instances with ``proposal_boxes`` and ``gt_keypoints``
            (Keypoints, (Ri, num_keypoints, 3) as x, y, visibility).
    """
    ret = []
    all_num_fg = []
    for proposals_per_image in proposals:
        # An image without annotations (hard negatives only) is kept as is.
        if len(proposals_per_image) == 0:
            ret.append(proposals_per_image)
            continue
        gt_keypoints = proposals_per_image.gt_keypoints.tensor  # (Ri, num_keypoints, 3)
        vis_mask = gt_keypoints[:, :, 2] >= 1
        xs, ys = gt_keypoints[:, :, 0], gt_keypoints[:, :, 1]
        # (Ri, 4) -> (Ri, 1, 4), broadcast against the keypoints of each row.
        proposal_boxes = proposals_per_image.proposal_boxes.tensor.unsqueeze(dim=1)
        kp_in_box = (
            (xs >= proposal_boxes[:, :, 0])
            & (xs <= proposal_boxes[:, :, 2])
            & (ys >= proposal_boxes[:, :, 1])
            & (ys <= proposal_boxes[:, :, 3])
        )
        selection = (kp_in_box & vis_mask).any(dim=1)
        selection_idxs = nonzero_tuple(selection)[0]
        all_num_fg.append(selection_idxs.numel())
        ret.append(proposals_per_image[selection_idxs])

    storage = get_event_storage()
    # When every image is empty detectron2 records np.mean([]) = NaN; same value, no warning.
    storage.put_scalar("keypoint_head/num_fg_samples",
                       np.mean(all_num_fg) if all_num_fg else float("nan"))
    return ret


class ROIHeads(nn.Module):
    """Base class: matching and sampling of training proposals; subclasses add the heads.

    Args:
        num_classes: K; the background label is K.
        batch_size_per_image: proposals sampled per image for training.
        positive_fraction: at most this fraction of the sampled proposals is foreground.
        proposal_matcher: labels each proposal from its best IoU with the gt boxes.
        proposal_append_gt: add the gt boxes to the proposals before matching, so that every
            gt instance has at least one perfectly matching proposal.
    """

    # IoU of ground truth (M boxes) with proposals (R boxes) -> (M, R), for this head's box
    # kind (RROIHeads: rotated IoU).
    box_iou = staticmethod(pairwise_iou)

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: int,
        positive_fraction: float,
        proposal_matcher: Matcher,
        proposal_append_gt: bool = True,
    ) -> None:
        super().__init__()
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.num_classes = num_classes
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg):
        return {
            "batch_size_per_image": cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "proposal_append_gt": cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT,
            "proposal_matcher": Matcher(
                cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS,
                cfg.MODEL.ROI_HEADS.IOU_LABELS,
                allow_low_quality_matches=False,
            ),
        }

    def _sample_proposals(
        self, matched_idxs: torch.Tensor, matched_labels: torch.Tensor, gt_classes: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Label the proposals of one image and sample them.

        Args:
            matched_idxs: (Ri,) index in [0, M) of each proposal's best gt.
            matched_labels: (Ri,) matcher label: 1 foreground, 0 background, -1 ignore.
            gt_classes: (M,) class of each gt instance.

        Returns:
            sampled_idxs: indices in [0, Ri) of the sampled proposals, foreground first.
            gt_classes: their labels, in [0, K) for foreground or K for background.
        """
        has_gt = gt_classes.numel() > 0
        if has_gt:
            gt_classes = gt_classes[matched_idxs]  # (M,) -> (Ri,)
            gt_classes[matched_labels == 0] = self.num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes

        sampled_fg_idxs, sampled_bg_idxs = subsample_labels(
            gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes
        )
        sampled_idxs = torch.cat([sampled_fg_idxs, sampled_bg_idxs], dim=0)
        return sampled_idxs, gt_classes[sampled_idxs]

    def _sample_for_training(self, proposals: List[Instances],
                             targets: Optional[List[Instances]]) -> List[Instances]:
        """:meth:`label_and_sample_proposals`, with a clear error when there are no targets."""
        if not targets:
            raise ValueError(f"{type(self).__name__} needs `targets` in training mode; call .eval() "
                             "for inference.")
        return self.label_and_sample_proposals(proposals, targets)

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """Match the proposals to the ground truth, label them and sample a training batch.

        Args:
            proposals: per image, Instances with ``proposal_boxes`` and ``objectness_logits``.
            targets: per image, Instances with ``gt_boxes``, ``gt_classes`` and any other
                ``gt_*`` fields (``gt_masks``, ``gt_keypoints``).

        Returns:
            per image, the sampled proposals (at most ``batch_size_per_image``) with
            ``proposal_boxes``, ``objectness_logits``, ``gt_classes`` and, when the image has gt
            instances, every ``gt_*`` field of the instance each proposal is matched to
            (``gt_boxes`` of a background proposal is its best-overlapping gt box). An image
            without gt instances gets only ``gt_classes``, all background.
        """
        if len(proposals) != len(targets):
            raise ValueError(f"Got proposals for {len(proposals)} images but targets for "
                             f"{len(targets)}.")
        if self.proposal_append_gt:
            # Early in training the proposals are poor; the gt boxes guarantee positives.
            proposals = add_ground_truth_to_proposals(targets, proposals)

        proposals_with_gt = []
        num_fg_samples = []
        num_bg_samples = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            has_gt = len(targets_per_image) > 0
            match_quality_matrix = type(self).box_iou(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )  # (M, Ri)
            matched_idxs, matched_labels = self.proposal_matcher(match_quality_matrix)
            sampled_idxs, gt_classes = self._sample_proposals(
                matched_idxs, matched_labels, targets_per_image.gt_classes
            )

            proposals_per_image = proposals_per_image[sampled_idxs]
            proposals_per_image.gt_classes = gt_classes

            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                # Copy every gt_* field not set yet (gt_classes is) from the matched instance.
                for trg_name, trg_value in targets_per_image.get_fields().items():
                    if trg_name.startswith("gt_") and not proposals_per_image.has(trg_name):
                        proposals_per_image.set(trg_name, trg_value[sampled_targets])
            # Without gt there is no meaningful value to copy: only gt_classes (background).

            num_bg_samples.append((gt_classes == self.num_classes).sum().item())
            num_fg_samples.append(gt_classes.numel() - num_bg_samples[-1])
            proposals_with_gt.append(proposals_per_image)

        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", np.mean(num_fg_samples))
        storage.put_scalar("roi_head/num_bg_samples", np.mean(num_bg_samples))
        return proposals_with_gt

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """Run the heads.

        Args:
            images: the batch (unused by the built-in heads).
            features: feature name -> (N, C, Hi, Wi).
            proposals: per image, Instances with ``proposal_boxes`` and ``objectness_logits``.
            targets: per image, the gt Instances; required in training only.

        Returns:
            per-image results (detections in eval; implementation-defined, possibly [], in
            training) and a dict of losses (empty in eval).
        """
        raise NotImplementedError()

    def _heads_on_detections(self, features: Dict[str, torch.Tensor],
                             instances: List[Instances]) -> List[Instances]:
        """``forward_with_given_boxes`` at inference, as the stage point "given_boxes" (a
        trace can stop after the boxes: then the detections are returned as they are)."""
        return run_stage("given_boxes", lambda: self.forward_with_given_boxes(features, instances),
                         skipped=instances, owner=self)


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """Independent box, mask and keypoint heads, each with its own pooler (FPN and C5 models).

    Args:
        box_in_features: feature names the box pooler crops from.
        box_pooler: crops (R, C, P, P) box features.
        box_head: box features -> per-ROI features (``FastRCNNConvFCHead``).
        box_predictor: per-ROI features -> scores and deltas, with ``losses`` and ``inference``
            (``FastRCNNOutputLayers``).
        mask_in_features: feature names for the mask head; None disables the mask head.
        mask_pooler: crops mask features; None hands the mask head the dict of feature maps.
        mask_head: called as ``mask_head(features, instances)``; returns a loss dict in training
            and the instances with ``pred_masks`` in eval.
        keypoint_in_features, keypoint_pooler, keypoint_head: the same for keypoints.
        train_on_pred_boxes: in training, feed the mask and keypoint heads the boxes the box head
            predicts (for the gt class) instead of the proposal boxes.
        **kwargs: the arguments of ``ROIHeads``.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_in_features: Optional[List[str]] = None,
        mask_pooler: Optional[ROIPooler] = None,
        mask_head: Optional[nn.Module] = None,
        keypoint_in_features: Optional[List[str]] = None,
        keypoint_pooler: Optional[ROIPooler] = None,
        keypoint_head: Optional[nn.Module] = None,
        train_on_pred_boxes: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # `in_features` is kept for code written against older detectron2.
        self.in_features = self.box_in_features = box_in_features
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor

        self.mask_on = mask_in_features is not None
        if self.mask_on:
            self.mask_in_features = mask_in_features
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head

        self.keypoint_on = keypoint_in_features is not None
        if self.keypoint_on:
            self.keypoint_in_features = keypoint_in_features
            self.keypoint_pooler = keypoint_pooler
            self.keypoint_head = keypoint_head

        self.train_on_pred_boxes = train_on_pred_boxes

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg)
        ret["train_on_pred_boxes"] = cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES
        # Subclasses written for older detectron2 may override _init_*_head as plain methods
        # (called from their own __init__); only classmethods are called here.
        if inspect.ismethod(cls._init_box_head):
            ret.update(cls._init_box_head(cfg, input_shape))
        if inspect.ismethod(cls._init_mask_head):
            ret.update(cls._init_mask_head(cfg, input_shape))
        if inspect.ismethod(cls._init_keypoint_head):
            ret.update(cls._init_keypoint_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        pooler_resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooler_scales = tuple(1.0 / input_shape[k].stride for k in in_features)
        sampling_ratio = cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO
        pooler_type = cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE

        # One head serves every level, so all levels must have the same channels.
        in_channels = [input_shape[f].channels for f in in_features]
        if len(set(in_channels)) != 1:
            raise ValueError(f"StandardROIHeads needs equal channels on {in_features}, got "
                             f"{in_channels}.")
        in_channels = in_channels[0]

        box_pooler = ROIPooler(
            output_size=pooler_resolution,
            scales=pooler_scales,
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
        )
        # "Box head" and "box predictor" are separate for historical reasons only.
        box_head = build_box_head(
            cfg, ShapeSpec(channels=in_channels, height=pooler_resolution, width=pooler_resolution)
        )
        box_predictor = FastRCNNOutputLayers(cfg, box_head.output_shape)
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            "box_predictor": box_predictor,
        }

    @staticmethod
    def _init_pooled_head(cfg, input_shape, head_cfg, build_head, prefix: str) -> dict:
        """Pooler + head for a per-region branch (mask or keypoint) reading ``head_cfg``.

        Returns ``{prefix_in_features, prefix_pooler, prefix_head}``. With an empty
        ``POOLER_TYPE`` the head pools for itself and gets every input feature's shape.
        """
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = head_cfg.POOLER_RESOLUTION
        pooler_type = head_cfg.POOLER_TYPE
        ret = {f"{prefix}_in_features": in_features, f"{prefix}_pooler": None}
        if pooler_type:
            ret[f"{prefix}_pooler"] = ROIPooler(
                output_size=resolution,
                scales=tuple(1.0 / input_shape[k].stride for k in in_features),
                sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
                pooler_type=pooler_type,
            )
            # Every level has the same channel count (checked by the box branch).
            shape = ShapeSpec(channels=input_shape[in_features[0]].channels, width=resolution,
                              height=resolution)
        else:
            shape = {f: input_shape[f] for f in in_features}
        ret[f"{prefix}_head"] = build_head(cfg, shape)
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            return {}
        return cls._init_pooled_head(cfg, input_shape, cfg.MODEL.ROI_MASK_HEAD, build_mask_head, "mask")

    @classmethod
    def _init_keypoint_head(cls, cfg, input_shape):
        if not cfg.MODEL.KEYPOINT_ON:
            return {}
        return cls._init_pooled_head(cfg, input_shape, cfg.MODEL.ROI_KEYPOINT_HEAD,
                                     build_keypoint_head, "keypoint")

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
        del targets

        if self.training:
            losses = self._forward_box(features, proposals)
            # With train_on_pred_boxes, _forward_box has replaced the proposal boxes by the
            # predicted ones, which the mask and keypoint heads then use.
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals)
        # Masks and keypoints only for the final detections (cascaded inference).
        return self._heads_on_detections(features, pred_instances), {}

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Add masks / keypoints to given detections (eval only).

        Args:
            features: feature name -> (N, C, Hi, Wi).
            instances: per image, Instances with ``pred_boxes`` and ``pred_classes``.

        Returns:
            the same instances, with ``pred_masks`` / ``pred_keypoints`` when those heads exist.
        """
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference; call .eval() first.")
        if len(instances) and not (instances[0].has("pred_boxes") and
                                   instances[0].has("pred_classes")):
            raise ValueError("forward_with_given_boxes needs instances with 'pred_boxes' and "
                             f"'pred_classes', got fields {list(instances[0].get_fields())}.")
        instances = self._forward_mask(features, instances)
        instances = self._forward_keypoint(features, instances)
        return instances

    def _forward_box(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """Box branch: losses {"loss_cls", "loss_box_reg"} in training, detections in eval.

        With ``train_on_pred_boxes``, the ``proposal_boxes`` of ``proposals`` are replaced in
        place by the boxes predicted for their gt class (after the losses are computed).
        """
        features = [features[f] for f in self.box_in_features]
        boxes = [x.proposal_boxes for x in proposals]
        rec = active_recorder(self)
        pool = LazyPooled(lambda b: self.box_pooler(features, b), boxes)
        # (R, C, P, P) -> (R, D); stage points, so that a trace can re-select without re-running
        box_features = run_stage("box_features", lambda: self.box_head(pool.keep_if_grad(
            self.box_pooler(features, boxes))), owner=self)
        predictions = run_stage("box_predictions", lambda: self.box_predictor(box_features),
                                owner=self)
        if rec is not None:
            stage = BoxStage(proposals=proposals, pool=pool,
                             pooler_level=self.box_pooler.level_of(boxes), embeddings=box_features,
                             logits=predictions[0], deltas=predictions[1],
                             pooler_features=list(self.box_in_features))

        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:
                with torch.no_grad():
                    pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(
                        predictions, proposals
                    )
                    for proposals_per_image, pred_boxes_per_image in zip(proposals, pred_boxes):
                        proposals_per_image.proposal_boxes = Boxes(pred_boxes_per_image)
            return losses
        mark = rec.mark() if rec is not None else 0
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        if rec is not None:
            put_box_record(rec, [stage], mark)
        return pred_instances

    def _forward_mask(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """Mask branch: {"loss_mask"} in training (foreground proposals only), else instances
        with ``pred_masks``. Without a mask head: {} in training, the instances unchanged else.
        """
        if not self.mask_on:
            return {} if self.training else instances

        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)

        pool = None
        if self.mask_pooler is not None:
            maps = [features[f] for f in self.mask_in_features]
            boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
            features = self.mask_pooler(maps, boxes)
            pool = LazyPooled.of(lambda b: self.mask_pooler(maps, b), boxes, features)
        else:
            features = {f: features[f] for f in self.mask_in_features}
        return run_head_recorded(self.mask_head, features, instances, pool, self.training, "mask")

    def _forward_keypoint(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """Keypoint branch: {"loss_keypoint"} in training (foreground proposals with a visible
        keypoint), else instances with ``pred_keypoints``. Without a keypoint head: {} in
        training, the instances unchanged else.
        """
        if not self.keypoint_on:
            return {} if self.training else instances

        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = select_proposals_with_visible_keypoints(instances)

        pool = None
        if self.keypoint_pooler is not None:
            maps = [features[f] for f in self.keypoint_in_features]
            boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
            features = self.keypoint_pooler(maps, boxes)
            pool = LazyPooled.of(lambda b: self.keypoint_pooler(maps, b), boxes, features)
        else:
            features = {f: features[f] for f in self.keypoint_in_features}
        return run_head_recorded(self.keypoint_head, features, instances, pool, self.training,
                                 "keypoint")


# Res5ROIHeads lives in its own module; importable from here as in detectron2.
from .res5_roi_heads import Res5ROIHeads  # noqa: E402

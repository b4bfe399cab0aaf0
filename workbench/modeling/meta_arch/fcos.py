"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", 2019 / 2020).

An anchor-free dense detector: every location of every level is one point, represented by a
square "anchor" box of side = the level's stride centred on it (``DefaultAnchorGenerator``,
offset 0.5, so the point of cell (y, x) is ((x + 0.5) * stride, (y + 0.5) * stride)). The
head predicts K class logits, the 4 distances (l, t, r, b) to the box edges in units of the
stride (``Box2BoxTransformLinear(normalize_by_size=True)``) and a centerness logit.

Training: a point is positive for a ground-truth box when it lies inside the box, within
``center_sampling_radius * stride`` of its centre (in x and in y), and the box's largest
distance to it lies in the level's scale range (4 * stride, 8 * stride], with 0 as the lower
bound of the first level and infinity as the upper bound of the last one; among several such
boxes the smallest wins. Losses: sigmoid focal loss on every point, GIoU on the positive ones,
BCE of the centerness logit against sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)).

Inference: score = sqrt(sigmoid(class logit) * sigmoid(centerness)); then, as RetinaNet, per
level the top candidates above ``test_score_thresh``, decoded, and class-wise NMS. Semantics
follow detectron2's ``modeling/meta_arch/fcos.py`` (built there from a LazyConfig only, not
registered in ``META_ARCH_REGISTRY``; neither is it here).

Shape legend:
    N        images in the batch
    L        feature levels (p3-p7 in the standard config)
    Hi, Wi   height and width of level i
    K        foreground classes; label K marks background (FCOS ignores no point)
    R        points of one image over all levels, sum_i Hi * Wi (one "anchor" per location)
    M        ground-truth boxes of one image

Boxes are XYXY in absolute pixels of the resized input image.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from workbench.layers import ShapeSpec, sigmoid_focal_loss
from workbench.structures import Boxes, ImageList, Instances, pairwise_point_box_distance
from workbench.utils import perf
from workbench.utils.events import get_event_storage

from ..anchor_generator import DefaultAnchorGenerator
from ..backbone import Backbone
from ..box_regression import Box2BoxTransformLinear, _dense_box_regression_loss
from ..recording import active_recorder, put_record
from .dense_detector import DenseDetector
from .retinanet import RetinaNetHead

__all__ = ["FCOS", "FCOSHead"]


def _fcos_scores_of(logits: Tensor) -> Tensor:
    """``DenseRecord.scores_of`` of FCOS: there is no map from the class logits alone."""
    raise ValueError(
        "FCOS scores are sqrt(sigmoid(class logit) * sigmoid(centerness)): they need the "
        "centerness too. Read DenseRecord.scores, or DenseRecord.scores_at(image, level, anchor)."
    )


class FCOS(DenseDetector):
    """FCOS: backbone (ResNet + FPN, P6/P7 from P5) -> :class:`FCOSHead` on each level.

    The loss normaliser ``loss_normalizer`` is an EMA (momentum 0.9, starting at 300) of the
    number of positive points per batch; a plain attribute, kept across training calls and not
    saved in the state dict. There is no ``from_config``: detectron2 builds FCOS from a
    LazyConfig (``configs/common/models/fcos.py``) only.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Optional[Sequence[str]] = None,
        box2box_transform: Optional[Box2BoxTransformLinear] = None,
        num_classes: int,
        center_sampling_radius: float = 1.5,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        test_score_thresh: float = 0.2,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.6,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ) -> None:
        """
        Args:
            head: maps the L feature maps to ``(logits, deltas, centerness)``, three lists of L
                tensors of shapes (N, K, Hi, Wi), (N, 4, Hi, Wi) and (N, 1, Hi, Wi).
            head_in_features: backbone features given to the head, e.g. ["p3", ..., "p7"];
                None takes every backbone output by increasing stride. Each level's stride sets
                its points and its scale range.
            box2box_transform: how the 4 distances encode a box; None for
                ``Box2BoxTransformLinear(normalize_by_size=True)`` (distances in strides).
            center_sampling_radius: a point is positive only within this many strides of the
                ground-truth centre (in x and in y).
            focal_loss_alpha, focal_loss_gamma: focal loss weighting of positives and of easy
                examples.
            test_score_thresh: at inference, (point, class) pairs need a score
                sqrt(p_cls * p_ctr) strictly above it.
            test_topk_candidates: at most this many candidates per level go to NMS.
            test_nms_thresh: class-wise NMS IoU threshold.
            max_detections_per_image: detections kept per image after NMS (COCO: 100).
            pixel_mean, pixel_std: see :class:`DenseDetector`.
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        if num_classes <= 0:
            raise ValueError(f"FCOS needs num_classes > 0, got {num_classes}.")
        if center_sampling_radius <= 0:
            raise ValueError(f"FCOS center_sampling_radius must be positive, got {center_sampling_radius}.")
        self.num_classes = num_classes

        # One point per location, represented by a square of side = stride centred on it.
        feature_shapes = backbone.output_shape()
        fpn_strides = [feature_shapes[k].stride for k in self.head_in_features]
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[k] for k in fpn_strides], aspect_ratios=[1.0], strides=fpn_strides
        )
        # Distances are divided by the anchor size (the stride), so one head serves all levels
        # without the learnable per-level scale of the original FCOS.
        if box2box_transform is None:
            box2box_transform = Box2BoxTransformLinear(normalize_by_size=True)
        self.box2box_transform = box2box_transform
        self.center_sampling_radius = float(center_sampling_radius)

        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma

        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        # EMA of the number of positive points (see losses); detectron2 starts it at 300.
        self.loss_normalizer = 300

    # -- training ------------------------------------------------------------------------------

    def forward_training(self, images: ImageList, features: List[Tensor],
                         predictions: List[List[Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, Tensor]:
        # L x (N, K, Hi, Wi) -> L x (N, Hi*Wi, K); the same with 4 and 1 for boxes, centerness.
        pred_logits, pred_anchor_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
                           pred_centerness)

    @torch.no_grad()
    def _match_anchors(self, gt_boxes: Boxes, anchors: List[Boxes]) -> Tensor:
        """How well each ground-truth box matches each point of all levels.

        Args:
            gt_boxes: the M ground-truth boxes of one image.
            anchors: L levels of Hi*Wi point boxes (side = stride).

        Returns:
            (M, R) float: 0 where the point may not predict the box, else 1e8 - area of the
            box, so that the largest entry of a column is the smallest eligible box.
        """
        num_anchors_per_level = [len(x) for x in anchors]
        anchors = Boxes.cat(anchors)  # L x (Hi*Wi, 4) -> (R, 4)
        anchor_centers = anchors.get_centers()  # (R, 2)
        anchor_sizes = anchors.tensor[:, 2] - anchors.tensor[:, 0]  # (R,), the strides

        # Scale range of each point: (4 * stride, 8 * stride), open-ended at both pyramid ends.
        lower_bound = anchor_sizes * 4
        lower_bound[: num_anchors_per_level[0]] = 0
        upper_bound = anchor_sizes * 8
        upper_bound[-num_anchors_per_level[-1]:] = float("inf")

        # Centre sampling: |point - gt centre| < radius * stride in both x and y.
        gt_centers = gt_boxes.get_centers()  # (M, 2)
        center_dists = (anchor_centers[None, :, :] - gt_centers[:, None, :]).abs_()  # (M, R, 2)
        sampling_regions = self.center_sampling_radius * anchor_sizes[None, :]  # (1, R)
        match_quality_matrix = center_dists.max(dim=2).values < sampling_regions  # (M, R)

        # (R, M, 4) -> (M, R, 4): distances (l, t, r, b) from each point to each box's edges.
        pairwise_dist = pairwise_point_box_distance(anchor_centers, gt_boxes).permute(1, 0, 2)
        match_quality_matrix &= pairwise_dist.min(dim=2).values > 0  # strictly inside the box

        # Multi-level assignment: the largest distance must be in the level's scale range.
        max_dist = pairwise_dist.max(dim=2).values  # (M, R)
        match_quality_matrix &= (max_dist > lower_bound[None, :]) & (max_dist < upper_bound[None, :])

        gt_areas = gt_boxes.area()  # (M,)
        match_quality_matrix = match_quality_matrix.to(torch.float32)
        match_quality_matrix *= 1e8 - gt_areas[:, None]
        return match_quality_matrix

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes],
                      gt_instances: List[Instances]) -> Tuple[List[Tensor], List[Tensor]]:
        """Assign every point of every image a class (or background) and a ground-truth box.

        Same interface as :meth:`RetinaNet.label_anchors`, with FCOS's rule
        (:meth:`_match_anchors`); no point is ignored.

        Args:
            anchors: L levels of points (the same for every image).
            gt_instances: N ``Instances`` with "gt_boxes" and "gt_classes".

        Returns:
            N label tensors (R,) with values in {0..K-1 (class), K (background)}, and N tensors
            (R, 4) of the assigned ground-truth box (zeros when the image has none; meaningless
            where the label is K).
        """
        gt_labels, matched_gt_boxes = [], []
        for i, inst in enumerate(gt_instances):
            if not inst.has("gt_boxes") or not inst.has("gt_classes"):
                raise KeyError(f"gt_instances[{i}] needs 'gt_boxes' and 'gt_classes'; has "
                               f"{list(inst.get_fields())}.")
            if len(inst) > 0:
                match_quality_matrix = self._match_anchors(inst.gt_boxes, anchors)  # (M, R)
                # Best box per point; a zero column means no box: -1. The same as a Matcher
                # with thresholds [1e-5] and labels [0, 1].
                match_quality, matched_idxs = match_quality_matrix.max(dim=0)  # (R,), (R,)
                matched_idxs[match_quality < 1e-5] = -1

                matched_gt_boxes_i = inst.gt_boxes.tensor[matched_idxs.clip(min=0)]
                gt_labels_i = inst.gt_classes[matched_idxs.clip(min=0)]
                gt_labels_i[matched_idxs < 0] = self.num_classes
            else:
                matched_gt_boxes_i = torch.zeros_like(Boxes.cat(anchors).tensor)
                gt_labels_i = torch.full((len(matched_gt_boxes_i),), self.num_classes,
                                         dtype=torch.long, device=matched_gt_boxes_i.device)
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def losses(self, anchors: List[Boxes], pred_logits: List[Tensor], gt_labels: List[Tensor],
               pred_anchor_deltas: List[Tensor], gt_boxes: List[Tensor],
               pred_centerness: List[Tensor]) -> Dict[str, Tensor]:
        """Focal loss on every point; GIoU and centerness BCE on the positive ones.

        All three are sums divided by the EMA of the number of positive points (updated here).

        Args:
            anchors: L levels of Hi*Wi points.
            pred_logits: L tensors (N, Hi*Wi, K).
            gt_labels: N tensors (R,), from :meth:`label_anchors`.
            pred_anchor_deltas: L tensors (N, Hi*Wi, 4).
            gt_boxes: N tensors (R, 4), the box assigned to each point.
            pred_centerness: L tensors (N, Hi*Wi, 1) of logits.

        Returns:
            {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}.
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # N x (R,) -> (N, R)

        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos_anchors, 1), 300)

        # (N, R) labels in [0, K] -> (N, R, K+1) one-hot -> (N, R, K): background is all zeros.
        gt_labels_target = F.one_hot(gt_labels, num_classes=self.num_classes + 1)[:, :, :-1]
        loss_cls = sigmoid_focal_loss(
            torch.cat(pred_logits, dim=1),  # L x (N, Hi*Wi, K) -> (N, R, K)
            gt_labels_target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
            box_reg_loss_type="giou",
        )
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # L x (N, Hi*Wi, 1) -> (N, R)
        ctrness_loss = F.binary_cross_entropy_with_logits(
            pred_centerness[pos_mask], ctrness_targets[pos_mask], reduction="sum"
        )
        return {
            "loss_fcos_cls": loss_cls / normalizer,
            "loss_fcos_loc": loss_box_reg / normalizer,
            "loss_fcos_ctr": ctrness_loss / normalizer,
        }

    def compute_ctrness_targets(self, anchors: List[Boxes], gt_boxes: List[Tensor]) -> Tensor:
        """Centerness of each point in its assigned box (FCOS eq. 3).

        With (l, t, r, b) the distances from the point to the box's edges:
        sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), 1 at the centre, towards 0 at an
        edge. Only meaningful at positive points (inside their box); elsewhere it may be NaN.

        Args:
            anchors: L levels of points.
            gt_boxes: N tensors (R, 4), the box assigned to each point.

        Returns:
            (N, R).
        """
        anchors = Boxes.cat(anchors).tensor  # L x (Hi*Wi, 4) -> (R, 4)
        if len(gt_boxes) == 0:
            return anchors.new_zeros((0, len(anchors)))
        reg_targets = [self.box2box_transform.get_deltas(anchors, m) for m in gt_boxes]
        reg_targets = torch.stack(reg_targets, dim=0)  # N x (R, 4) -> (N, R, 4)
        left_right = reg_targets[:, :, [0, 2]]  # (N, R, 2)
        top_bottom = reg_targets[:, :, [1, 3]]  # (N, R, 2)
        ctrness = (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]) * (
            top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]
        )
        return torch.sqrt(ctrness)

    # -- inference -----------------------------------------------------------------------------

    @perf.full_precision()  # decoding and NMS in float32 under workbench.utils.perf's autocast
    def forward_inference(self, images: ImageList, features: List[Tensor],
                          predictions: List[List[Tensor]]) -> List[Instances]:
        predictions = perf.float32(predictions)
        # L x (N, K, Hi, Wi) -> L x (N, Hi*Wi, K); the same with 4 and 1 for boxes, centerness.
        pred_logits, pred_anchor_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        # Geometric mean of class and centerness probabilities (eq. 4 of arXiv:2006.09214):
        # (N, Hi*Wi, K) * (N, Hi*Wi, 1) -> (N, Hi*Wi, K). detectron2 computes it image by image
        # with in-place sigmoids; out of place leaves the head's outputs as they were.
        scores = [torch.sqrt(x.sigmoid() * y.sigmoid()) for x, y in zip(pred_logits, pred_centerness)]
        results: List[Instances] = []
        rec = active_recorder(self)
        mark = rec.mark() if rec is not None else 0
        for img_idx, image_size in enumerate(images.image_sizes):
            scores_per_image = [x[img_idx] for x in scores]  # L x (Hi*Wi, K)
            deltas_per_image = [x[img_idx] for x in pred_anchor_deltas]  # L x (Hi*Wi, 4)
            results.append(self.inference_single_image(anchors, scores_per_image, deltas_per_image,
                                                       image_size))
        if rec is not None:
            self._put_dense_record(rec, mark, anchors, pred_logits, pred_anchor_deltas, results,
                                   scores_of=_fcos_scores_of, scores=scores,
                                   extra={"centerness": pred_centerness})
        return results


class FCOSHead(RetinaNetHead):
    """:class:`RetinaNetHead` with one point per location and a centerness branch.

    The centerness logit is a 3x3 conv (``ctrness``) on the box tower's output, so state-dict
    names are those of RetinaNetHead (``cls_subnet.0.weight``, ``bbox_pred.weight``, ...) plus
    ``ctrness.weight`` / ``ctrness.bias``. Unlike the original FCOS there is no learnable
    per-level scale: with distances in strides it brings nothing (detectron2's finding).
    """

    # detectron2 forwards **kwargs to RetinaNetHead; they are spelled out here. There is no
    # cfg path (FCOS is built from a LazyConfig), so this __init__ is not @configurable.
    def __init__(self, *, input_shape: List[ShapeSpec], conv_dims: List[int], num_classes: int,
                 norm: str = "", prior_prob: float = 0.01) -> None:
        """
        Args:
            input_shape: the L input levels; all must have the same number of channels.
            conv_dims: output channels of each tower conv; its length is the tower depth.
            num_classes: K.
            norm: norm after each tower conv (FCOS uses "GN"); see :class:`RetinaNetHead`.
            prior_prob: initial foreground probability of every point (class bias).
        """
        super().__init__(input_shape=input_shape, num_classes=num_classes, num_anchors=1,
                         conv_dims=conv_dims, norm=norm, prior_prob=prior_prob)
        self.ctrness = nn.Conv2d(conv_dims[-1], 1, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.ctrness.weight, std=0.01)
        nn.init.constant_(self.ctrness.bias, 0)

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features: L maps (N, C, Hi, Wi), in the level order the head was built for.

        Returns:
            logits: L tensors (N, K, Hi, Wi).
            bbox_reg: L tensors (N, 4, Hi, Wi), distances (l, t, r, b) in strides (before the
                ReLU that decoding applies).
            ctrness: L tensors (N, 1, Hi, Wi), centerness logits.
        """
        if len(features) != self._num_features:
            raise ValueError(f"FCOSHead was built for {self._num_features} levels, got {len(features)}.")
        logits, bbox_reg, ctrness, tower = [], [], [], []
        for feature in features:
            cls_features = self.cls_subnet(feature)
            tower.append(cls_features)
            logits.append(self.cls_score(cls_features))
            bbox_features = self.bbox_subnet(feature)
            bbox_reg.append(self.bbox_pred(bbox_features))
            ctrness.append(self.ctrness(bbox_features))
        put_record("dense_head_features", tower, self)  # kept only under a stage recorder
        return logits, bbox_reg, ctrness

"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017).

A one-stage detector: every anchor of every level gets K sigmoid class scores and 4 box deltas
from two small conv towers shared across levels. Training uses the sigmoid focal loss over all
non-ignored anchors; inference keeps confident (anchor, class) pairs per level and runs
class-wise NMS over all levels. Semantics follow detectron2 0.6.

Shape legend:
    N        images in the batch
    L        feature levels (p3-p7 in the standard config)
    Hi, Wi   height and width of level i
    A        anchors per location (3 aspect ratios x 3 scales = 9 in the standard config)
    K        foreground classes; label K marks background, -1 an ignored anchor
    R        anchors of one image over all levels, sum_i Hi * Wi * A
    M        ground-truth boxes of one image

Boxes are XYXY in absolute pixels of the resized input image.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from workbench.config import configurable
from workbench.layers import ShapeSpec, cat, get_norm, sigmoid_focal_loss
from workbench.layers.cycle_batch_norm import CycleBatchNormList
from workbench.structures import Boxes, ImageList, Instances, pairwise_iou
from workbench.utils import perf
from workbench.utils.events import get_event_storage

from ..anchor_generator import build_anchor_generator
from ..backbone import Backbone, build_backbone
from ..box_regression import Box2BoxTransform, _dense_box_regression_loss
from ..matcher import Matcher
from .build import META_ARCH_REGISTRY
from ..recording import active_recorder, put_record
from .dense_detector import DenseDetector

__all__ = ["RetinaNet", "RetinaNetHead"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class RetinaNet(DenseDetector):
    """RetinaNet: backbone (ResNet + FPN with P6/P7) -> :class:`RetinaNetHead` on each level.

    The loss normaliser ``loss_normalizer`` is an EMA (momentum 0.9, starting at 100) of the
    number of foreground anchors per batch; it is a plain attribute, kept across training calls
    and not saved in the state dict.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Sequence[str],
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_matcher: Matcher,
        num_classes: int,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        vis_period: int = 0,
        input_format: str = "BGR",
    ) -> None:
        """
        Args:
            head: maps the L feature maps to ``(logits, deltas)``, two lists of L tensors of
                shapes (N, A*K, Hi, Wi) and (N, A*4, Hi, Wi).
            head_in_features: backbone features given to the head, e.g. ["p3", ..., "p7"].
            anchor_generator: gives the L levels' anchors (same A on every level).
            anchor_matcher: labels anchors by IoU with the ground truth (detectron2:
                thresholds [0.4, 0.5], labels [0, -1, 1], low-quality matches allowed).
            focal_loss_alpha, focal_loss_gamma: focal loss weighting of positives and of easy
                examples.
            smooth_l1_beta: 0 makes the box loss plain L1 (on deltas).
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            test_score_thresh: at inference, (anchor, class) pairs need a score strictly above it.
            test_topk_candidates: at most this many candidates per level go to NMS.
            test_nms_thresh: class-wise NMS IoU threshold.
            max_detections_per_image: detections kept per image after NMS (COCO: 100).
            pixel_mean, pixel_std: see :class:`DenseDetector`.
            vis_period: every this many iterations, put an image of ground truth and detections
                into the ``EventStorage`` (0: never).
            input_format: channel order of "image", used to draw that image.
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_classes = num_classes

        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher

        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type

        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image

        self.vis_period = vis_period
        self.input_format = input_format
        # EMA of the number of foreground anchors (see losses); a plain attribute, so it is not
        # in the state dict. Reset it to 100 to make a training call independent of earlier ones.
        self.loss_normalizer = 100
        if len(self.backbone.output_shape()) != len(self.head_in_features):
            logger.warning("[RetinaNet] Backbone produces unused features.")

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        feature_shapes = [backbone_shape[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": RetinaNetHead(cfg, feature_shapes),
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS),
            "anchor_matcher": Matcher(
                cfg.MODEL.RETINANET.IOU_THRESHOLDS,
                cfg.MODEL.RETINANET.IOU_LABELS,
                allow_low_quality_matches=True,
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "head_in_features": cfg.MODEL.RETINANET.IN_FEATURES,
            "focal_loss_alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE,
            "test_score_thresh": cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    # -- training ------------------------------------------------------------------------------

    def forward_training(self, images: ImageList, features: List[Tensor],
                         predictions: List[List[Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, Tensor]:
        # L x (N, A*K, Hi, Wi) -> L x (N, Hi*Wi*A, K); same for the deltas with 4.
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)

    def losses(self, anchors: List[Boxes], pred_logits: List[Tensor], gt_labels: List[Tensor],
               pred_anchor_deltas: List[Tensor], gt_boxes: List[Tensor]) -> Dict[str, Tensor]:
        """Focal loss over all non-ignored anchors and box loss over the foreground ones.

        Both are sums divided by the EMA of the number of foreground anchors (updated here).

        Args:
            anchors: L levels of Hi*Wi*A anchors.
            pred_logits: L tensors (N, Hi*Wi*A, K).
            gt_labels: N tensors (R,), from :meth:`label_anchors`.
            pred_anchor_deltas: L tensors (N, Hi*Wi*A, 4).
            gt_boxes: N tensors (R, 4), the ground truth matched to each anchor.

        Returns:
            {"loss_cls", "loss_box_reg"}.
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # N x (R,) -> (N, R)

        valid_mask = gt_labels >= 0
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos_anchors, 1), 100)

        # (V,) labels in [0, K] -> (V, K+1) one-hot -> (V, K): background is the all-zero row.
        gt_labels_target = F.one_hot(gt_labels[valid_mask], num_classes=self.num_classes + 1)[:, :-1]
        loss_cls = sigmoid_focal_loss(
            cat(pred_logits, dim=1)[valid_mask],  # L x (N, Hi*Wi*A, K) -> (N, R, K) -> (V, K)
            gt_labels_target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes],
                      gt_instances: List[Instances]) -> Tuple[List[Tensor], List[Tensor]]:
        """Match every anchor of every image to a ground-truth box.

        Args:
            anchors: L levels of anchors (the same for every image).
            gt_instances: N ``Instances`` with "gt_boxes" and "gt_classes".

        Returns:
            N label tensors (R,) with values in {-1 (ignore), 0..K-1 (class), K (background)},
            and N tensors (R, 4) of the matched ground-truth box (zeros when the image has none;
            meaningless where the label is not a class).
        """
        anchors = Boxes.cat(anchors)  # L x (Hi*Wi*A, 4) -> (R, 4)
        gt_labels, matched_gt_boxes = [], []
        for i, gt_per_image in enumerate(gt_instances):
            if not gt_per_image.has("gt_boxes") or not gt_per_image.has("gt_classes"):
                raise KeyError(
                    f"gt_instances[{i}] needs 'gt_boxes' and 'gt_classes'; has "
                    f"{list(gt_per_image.get_fields())}."
                )
            match_quality_matrix = pairwise_iou(gt_per_image.gt_boxes, anchors)  # (M, R)
            matched_idxs, anchor_labels = self.anchor_matcher(match_quality_matrix)
            del match_quality_matrix

            if len(gt_per_image) > 0:
                matched_gt_boxes_i = gt_per_image.gt_boxes.tensor[matched_idxs]
                gt_labels_i = gt_per_image.gt_classes[matched_idxs]
                gt_labels_i[anchor_labels == 0] = self.num_classes  # below the low IoU: background
                gt_labels_i[anchor_labels == -1] = -1  # between the thresholds: ignored
            else:
                matched_gt_boxes_i = torch.zeros_like(anchors.tensor)
                gt_labels_i = torch.zeros_like(matched_idxs) + self.num_classes
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    # -- inference -----------------------------------------------------------------------------

    @perf.full_precision()  # decoding and NMS in float32 under workbench.utils.perf's autocast
    def forward_inference(self, images: ImageList, features: List[Tensor],
                          predictions: List[List[Tensor]]) -> List[Instances]:
        predictions = perf.float32(predictions)
        # L x (N, A*K, Hi, Wi) -> L x (N, Hi*Wi*A, K); same for the deltas with 4.
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        results: List[Instances] = []
        rec = active_recorder(self)
        mark = rec.mark() if rec is not None else 0
        for img_idx, image_size in enumerate(images.image_sizes):
            # detectron2 uses the in-place sigmoid_() here; the out-of-place one gives the same
            # numbers and leaves the head's outputs untouched.
            scores_per_image = [x[img_idx].sigmoid() for x in pred_logits]  # L x (Hi*Wi*A, K)
            deltas_per_image = [x[img_idx] for x in pred_anchor_deltas]  # L x (Hi*Wi*A, 4)
            results.append(self.inference_single_image(anchors, scores_per_image, deltas_per_image,
                                                       image_size))
        if rec is not None:
            self._put_dense_record(rec, mark, anchors, pred_logits, pred_anchor_deltas, results,
                                   scores_of=torch.sigmoid)
        return results


class RetinaNetHead(nn.Module):
    """Two conv towers shared by all levels: classification (K per anchor) and boxes (4 per anchor).

    Children ``cls_subnet`` / ``bbox_subnet`` are ``nn.Sequential`` of (conv, [norm], ReLU)
    repeats, so state-dict names are ``cls_subnet.0.weight``, ``cls_subnet.2.weight``, ... as in
    detectron2; ``cls_score`` and ``bbox_pred`` are 3x3 convs.
    """

    @configurable
    def __init__(self, *, input_shape: List[ShapeSpec], num_classes: int, num_anchors: int,
                 conv_dims: List[int], norm: str = "", prior_prob: float = 0.01) -> None:
        """
        Args:
            input_shape: the L input levels; all must have the same number of channels.
            num_anchors: A, the same on every level.
            conv_dims: output channels of each tower conv; its length is the tower depth.
            norm: norm after each tower conv. "BN" / "SyncBN" use per-level statistics with a
                shared affine (:class:`CycleBatchNormList`); "" for none; other names go
                through :func:`get_norm`.
            prior_prob: initial foreground probability of every anchor; the classification
                bias starts at -log((1 - p) / p) so the loss does not blow up at step one.
        """
        super().__init__()
        if len(input_shape) == 0:
            raise ValueError("RetinaNetHead needs at least one input level in input_shape.")
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(
                "RetinaNetHead levels must share the channel count, got "
                f"{[s.channels for s in input_shape]}."
            )
        if len(conv_dims) == 0:
            raise ValueError("RetinaNetHead needs at least one tower conv (conv_dims is empty).")
        self._num_features = len(input_shape)

        if norm in ("BN", "SyncBN"):
            logger.info(f"Using domain-specific {norm} in RetinaNetHead with len={self._num_features}.")
            bn_class = nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm

            def make_norm(c: int) -> nn.Module:
                return CycleBatchNormList(length=self._num_features, bn_class=bn_class, num_features=c)
        else:
            if norm and "BN" in type(get_norm(norm, 32)).__name__:
                logger.warning(f"Shared BatchNorm (type={norm}) may not work well in RetinaNetHead.")

            def make_norm(c: int) -> nn.Module:
                return get_norm(norm, c)

        cls_subnet: List[nn.Module] = []
        bbox_subnet: List[nn.Module] = []
        for in_channels, out_channels in zip([input_shape[0].channels] + list(conv_dims), conv_dims):
            for tower in (cls_subnet, bbox_subnet):
                tower.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1))
                if norm:
                    tower.append(make_norm(out_channels))
                tower.append(nn.ReLU())
        self.cls_subnet = nn.Sequential(*cls_subnet)
        self.bbox_subnet = nn.Sequential(*bbox_subnet)
        self.cls_score = nn.Conv2d(conv_dims[-1], num_anchors * num_classes, kernel_size=3, stride=1,
                                   padding=1)
        self.bbox_pred = nn.Conv2d(conv_dims[-1], num_anchors * 4, kernel_size=3, stride=1, padding=1)

        for modules in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in modules.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0, std=0.01)
                    nn.init.constant_(layer.bias, 0)
        bias_value = -math.log((1 - prior_prob) / prior_prob)
        nn.init.constant_(self.cls_score.bias, bias_value)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(
                f"RetinaNetHead needs the same number of anchors on every level, got {num_anchors} "
                "(check MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS)."
            )
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.RETINANET.NUM_CONVS,
            "prior_prob": cfg.MODEL.RETINANET.PRIOR_PROB,
            "norm": cfg.MODEL.RETINANET.NORM,
            "num_anchors": num_anchors[0],
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Args:
            features: L maps (N, C, Hi, Wi), in the level order the head was built for.

        Returns:
            logits: L tensors (N, A*K, Hi, Wi), channel a*K + k is class k of anchor a.
            bbox_reg: L tensors (N, A*4, Hi, Wi), the deltas (dx, dy, dw, dh) of each anchor.
        """
        if len(features) != self._num_features:
            raise ValueError(
                f"RetinaNetHead was built for {self._num_features} levels, got {len(features)}."
            )
        logits, bbox_reg, tower = [], [], []
        for feature in features:
            cls_features = self.cls_subnet(feature)
            tower.append(cls_features)
            logits.append(self.cls_score(cls_features))
            bbox_reg.append(self.bbox_pred(self.bbox_subnet(feature)))
        put_record("dense_head_features", tower, self)  # kept only under a stage recorder
        return logits, bbox_reg

"""Region Proposal Network (Faster R-CNN): objectness and box deltas for every anchor.

Shape legend:
    N:      number of images in the batch.
    L:      number of feature maps (levels) the RPN runs on.
    A:      number of cell anchors per location (the same on every level).
    Hi, Wi: height and width of the i-th feature map.
    B:      box parameterisation size (4 for (dx, dy, dw, dh)).
    R:      total number of anchors of one image, sum(Hi * Wi * A).

Naming:
    objectness: binary "object vs. not object" classification of an anchor;
        ``pred_objectness_logits`` are logits, sigmoid() gives P(object).
    deltas: the (dx, dy, dw, dh) of :class:`~workbench.modeling.box_regression.Box2BoxTransform`
        that turn an anchor into a proposal.
    gt_labels: the objectness target of each anchor, -1 ignore / 0 negative / 1 positive.

Per-anchor tensors are flattened as (N, Hi*Wi*A) / (N, Hi*Wi*A, B), location-major and
anchor-minor, the order of :class:`~workbench.modeling.anchor_generator.DefaultAnchorGenerator`.
Semantics and state-dict names follow detectron2 0.6
(``detectron2/modeling/proposal_generator/rpn.py``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import configurable
from workbench.layers import Conv2d, ShapeSpec, cat
from workbench.structures import Boxes, ImageList, Instances, pairwise_iou
from workbench.utils import perf
from workbench.utils.events import get_event_storage
from workbench.utils.registry import Registry

from ..anchor_generator import build_anchor_generator
from ..box_regression import Box2BoxTransform, _dense_box_regression_loss
from ..matcher import Matcher
from ..recording import SelectionSettings, active_recorder, run_stage
from ..sampling import subsample_labels
from .build import PROPOSAL_GENERATOR_REGISTRY
from .proposal_utils import find_top_rpn_proposals
from .rpn_record import RPNRecord, RPNSelectionRecord

__all__ = ["RPN_HEAD_REGISTRY", "build_rpn_head", "StandardRPNHead", "RPN"]

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = """
Registry of RPN heads, which predict objectness logits and anchor deltas from feature maps.

Entries are called as ``obj(cfg, input_shape)`` with ``input_shape`` a list of ``ShapeSpec``
(one per level the RPN runs on) and return an ``nn.Module`` whose
``forward(features: list[Tensor])`` returns ``(objectness logits, anchor deltas)``, two lists of
L tensors shaped (N, A, Hi, Wi) and (N, A*B, Hi, Wi).
"""


def build_rpn_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Build the RPN head named by ``cfg.MODEL.RPN.HEAD_NAME``."""
    name = cfg.MODEL.RPN.HEAD_NAME
    return RPN_HEAD_REGISTRY.get(name)(cfg, input_shape)


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """The RPN head of Faster R-CNN, shared by all levels.

    A 3x3 conv (+ ReLU) computes a hidden state; from it, one 1x1 conv predicts an objectness
    logit per anchor and another one B deltas per anchor.

    Children, as in detectron2's state dict: ``conv`` (a single ``Conv2d`` when there is one
    hidden conv, otherwise an ``nn.Sequential`` of ``conv0``, ``conv1``, ...),
    ``objectness_logits`` and ``anchor_deltas``.
    """

    @configurable
    def __init__(self, *, in_channels: int, num_anchors: int, box_dim: int = 4,
                 conv_dims: Sequence[int] = (-1,)) -> None:
        """
        Args:
            in_channels: channels of every input feature map (the same on all levels).
            num_anchors: A, the anchors per location; the head predicts A logits and A*box_dim
                deltas per location.
            box_dim: B, deltas per anchor (4 for axis-aligned boxes).
            conv_dims: output channels of each hidden 3x3 conv; -1 means "same as the input".
                The default is the single conv of the original RPN.
        """
        super().__init__()
        if len(conv_dims) == 0:
            raise ValueError("StandardRPNHead needs at least one hidden conv, got conv_dims=().")
        cur_channels = in_channels
        if len(conv_dims) == 1:
            # One hidden conv, kept at top level so that its parameters are named "conv.*".
            out_channels = cur_channels if conv_dims[0] == -1 else conv_dims[0]
            self.conv = self._get_rpn_conv(cur_channels, out_channels)
            cur_channels = out_channels
        else:
            self.conv = nn.Sequential()
            for k, conv_dim in enumerate(conv_dims):
                out_channels = cur_channels if conv_dim == -1 else conv_dim
                if out_channels <= 0:
                    raise ValueError(
                        f"RPN conv_dims[{k}] must be positive or -1, got {conv_dim}."
                    )
                self.conv.add_module(f"conv{k}", self._get_rpn_conv(cur_channels, out_channels))
                cur_channels = out_channels
        self.objectness_logits = nn.Conv2d(cur_channels, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(cur_channels, num_anchors * box_dim, kernel_size=1,
                                       stride=1)

        # Same initialisation (and order of RNG draws) as detectron2.
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    def _get_rpn_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                      activation=nn.ReLU())

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        in_channels = [s.channels for s in input_shape]
        if len(set(in_channels)) != 1:
            raise ValueError(
                f"StandardRPNHead is shared across levels: every level must have the same "
                f"number of channels, got {in_channels}."
            )
        # The head must agree with the anchor generator the RPN builds from the same cfg.
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = anchor_generator.num_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(
                f"StandardRPNHead needs the same number of anchors per location on every "
                f"level, got {num_anchors}."
            )
        return {
            "in_channels": in_channels[0],
            "num_anchors": num_anchors[0],
            "box_dim": anchor_generator.box_dim,
            "conv_dims": cfg.MODEL.RPN.CONV_DIMS,
        }

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor],
                                                             List[torch.Tensor]]:
        """
        Args:
            features: L feature maps, each (N, C, Hi, Wi).

        Returns:
            pred_objectness_logits: L tensors, each (N, A, Hi, Wi).
            pred_anchor_deltas: L tensors, each (N, A*B, Hi, Wi); channel a*B + j is delta j of
                anchor a.
        """
        pred_objectness_logits = []
        pred_anchor_deltas = []
        for x in features:
            # oneDNN blocked layout on CPU in inference (workbench.utils.perf): same values.
            x, onednn = perf.enter_onednn(self, x)
            t = self.conv(x)  # the ReLU is part of each hidden conv
            logits, deltas = self.objectness_logits(t), self.anchor_deltas(t)
            if onednn:
                logits, deltas = logits.to_dense(), deltas.to_dense()
            pred_objectness_logits.append(logits)
            pred_anchor_deltas.append(deltas)
        return pred_objectness_logits, pred_anchor_deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region Proposal Network of Faster R-CNN (Ren et al. 2015).

    Stages, each a method: anchors (``anchor_generator``), dense predictions (``rpn_head``),
    in training :meth:`label_and_sample_anchors` + :meth:`losses`, and always
    :meth:`predict_proposals` (decode, top-k, NMS).
    """

    # The selection of the proposals (top-k, NMS within each level, top-k) for this RPN's box kind.
    find_top_proposals = staticmethod(find_top_rpn_proposals)
    # What from_config builds from MODEL.RPN.BBOX_REG_WEIGHTS (RRPN: the rotated transform).
    box2box_transform_class = Box2BoxTransform
    # IoU of ground truth (M boxes) with anchors (R boxes) -> (M, R), for this RPN's box kind
    # (RRPN: rotated IoU, which also refuses ground truth that is not RotatedBoxes).
    box_iou = staticmethod(pairwise_iou)

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_topk: Tuple[int, int],
        post_nms_topk: Tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ) -> None:
        """
        Args:
            in_features: names of the feature maps to run on, e.g. ["p2", ..., "p6"].
            head: predicts objectness logits and deltas from the list of feature maps
                (stored as ``self.rpn_head``, hence the ``proposal_generator.rpn_head.*``
                checkpoint names).
            anchor_generator: creates the anchors of the feature maps.
            anchor_matcher: labels anchors from their IoU with the ground truth.
            box2box_transform: encodes boxes as deltas relative to anchors.
            batch_size_per_image: anchors sampled per image for the losses; also the loss
                normaliser (times N).
            positive_fraction: largest fraction of positives in the sample.
            pre_nms_topk: (train, test) candidates kept per level before NMS.
            post_nms_topk: (train, test) proposals kept per image after NMS.
            nms_thresh: IoU threshold of the NMS between proposals.
            min_box_size: proposals whose width or height is not above this (input pixels)
                are removed.
            anchor_boundary_thresh: legacy option; when >= 0, anchors sticking out of the image
                by more than this many pixels are ignored in training. -1 disables it.
            loss_weight: one weight for both losses, or a dict with keys "loss_rpn_cls" and
                "loss_rpn_loc".
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            smooth_l1_beta: beta of the smooth L1 loss; 0 means L1.
        """
        super().__init__()
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        # Indexed by self.training.
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_rpn_cls": loss_weight, "loss_rpn_loc": loss_weight}
        self.loss_weight = loss_weight
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        in_features = cfg.MODEL.RPN.IN_FEATURES
        ret = {
            "in_features": in_features,
            "min_box_size": cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            "nms_thresh": cfg.MODEL.RPN.NMS_THRESH,
            "batch_size_per_image": cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": cfg.MODEL.RPN.POSITIVE_FRACTION,
            "loss_weight": {
                "loss_rpn_cls": cfg.MODEL.RPN.LOSS_WEIGHT,
                "loss_rpn_loc": cfg.MODEL.RPN.BBOX_REG_LOSS_WEIGHT * cfg.MODEL.RPN.LOSS_WEIGHT,
            },
            "anchor_boundary_thresh": cfg.MODEL.RPN.BOUNDARY_THRESH,
            "box2box_transform": cls.box2box_transform_class(weights=cfg.MODEL.RPN.BBOX_REG_WEIGHTS),
            "box_reg_loss_type": cfg.MODEL.RPN.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": cfg.MODEL.RPN.SMOOTH_L1_BETA,
            "pre_nms_topk": (cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN,
                              cfg.MODEL.RPN.POST_NMS_TOPK_TEST),
        }
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise KeyError(
                f"MODEL.RPN.IN_FEATURES names {missing}, which the backbone does not produce "
                f"(it has {list(input_shape)})."
            )
        level_shapes = [input_shape[f] for f in in_features]
        ret["anchor_generator"] = build_anchor_generator(cfg, level_shapes)
        ret["anchor_matcher"] = Matcher(
            cfg.MODEL.RPN.IOU_THRESHOLDS, cfg.MODEL.RPN.IOU_LABELS, allow_low_quality_matches=True
        )
        ret["head"] = build_rpn_head(cfg, level_shapes)
        return ret

    def _subsample_labels(self, label: torch.Tensor) -> torch.Tensor:
        """Keep a random sample of positives and negatives; set every other label to -1.

        Args:
            label: (R,) labels in {-1, 0, 1}; modified in place and returned.
        """
        pos_idx, neg_idx = subsample_labels(
            label, self.batch_size_per_image, self.positive_fraction, 0
        )
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Objectness targets and matched ground-truth boxes of every anchor.

        Args:
            anchors: L ``Boxes`` of Hi*Wi*A anchors each.
            gt_instances: N ``Instances`` with ``gt_boxes``; their ``image_size`` is used for
                the (legacy) boundary test.

        Returns:
            gt_labels: N tensors of shape (R,), values -1 / 0 / 1 after subsampling.
            matched_gt_boxes: N tensors of shape (R, 4), the ground truth matched to each
                anchor; meaningless where the label is not 1 (zeros when there is no gt).
        """
        anchors = type(anchors[0]).cat(anchors)  # L x (Hi*Wi*A, B) -> (R, B)

        gt_boxes = [x.gt_boxes for x in gt_instances]
        image_sizes = [x.image_size for x in gt_instances]
        del gt_instances

        gt_labels = []
        matched_gt_boxes = []
        for image_size_i, gt_boxes_i in zip(image_sizes, gt_boxes):
            # detectron2 wraps the next two calls in retry_if_cuda_oom (retry on CPU after a
            # CUDA out-of-memory error); workbench calls them directly.
            match_quality_matrix = type(self).box_iou(gt_boxes_i, anchors)  # (M, R)
            matched_idxs, gt_labels_i = self.anchor_matcher(match_quality_matrix)  # (R,), (R,)
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            del match_quality_matrix

            if self.anchor_boundary_thresh >= 0:
                # Legacy: ignore anchors that stick out of the image.
                anchors_inside_image = anchors.inside_box(image_size_i,
                                                          self.anchor_boundary_thresh)
                gt_labels_i[~anchors_inside_image] = -1

            gt_labels_i = self._subsample_labels(gt_labels_i)

            if len(gt_boxes_i) == 0:
                # Every anchor is background: the boxes are never used.
                matched_gt_boxes_i = torch.zeros_like(anchors.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i[matched_idxs].tensor  # (R, B)

            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Objectness and localisation losses.

        Both are sums (binary cross-entropy over sampled anchors, box regression over sampled
        positives) divided by ``batch_size_per_image * N`` -- not by the number of anchors
        actually sampled -- then multiplied by their loss weight. Also records the average
        numbers of positive and negative anchors per image in the current ``EventStorage``
        (``rpn/num_pos_anchors``, ``rpn/num_neg_anchors``).

        Args:
            anchors: L ``Boxes`` of Hi*Wi*A anchors each.
            pred_objectness_logits: L tensors of shape (N, Hi*Wi*A).
            gt_labels: output of :meth:`label_and_sample_anchors`.
            pred_anchor_deltas: L tensors of shape (N, Hi*Wi*A, B).
            gt_boxes: output of :meth:`label_and_sample_anchors`.

        Returns:
            {"loss_rpn_cls": scalar, "loss_rpn_loc": scalar}
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # N x (R,) -> (N, R)

        pos_mask = gt_labels == 1
        num_pos_anchors = pos_mask.sum().item()
        num_neg_anchors = (gt_labels == 0).sum().item()
        storage = get_event_storage()
        storage.put_scalar("rpn/num_pos_anchors", num_pos_anchors / num_images)
        storage.put_scalar("rpn/num_neg_anchors", num_neg_anchors / num_images)

        localization_loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )

        valid_mask = gt_labels >= 0
        objectness_loss = F.binary_cross_entropy_with_logits(
            cat(pred_objectness_logits, dim=1)[valid_mask],  # L x (N, Hi*Wi*A) -> (N, R)
            gt_labels[valid_mask].to(torch.float32),
            reduction="sum",
        )
        normalizer = self.batch_size_per_image * num_images
        losses = {
            "loss_rpn_cls": objectness_loss / normalizer,
            # The regression loss could instead be normalised by the number of positives;
            # detectron2 keeps this normaliser, and so do we.
            "loss_rpn_loc": localization_loss / normalizer,
        }
        losses = {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
        return losses

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """
        Args:
            images: the N input images; only ``image_sizes`` is used (to clip proposals).
            features: feature maps by name, each (N, C, Hi, Wi); ``in_features`` are used.
            gt_instances: N ``Instances`` with ``gt_boxes``; required in training.

        Returns:
            proposals: N ``Instances`` with ``proposal_boxes`` and ``objectness_logits``,
                sorted by decreasing objectness, computed without gradient (also in training).
            losses: {"loss_rpn_cls", "loss_rpn_loc"} in training, {} otherwise.
        """
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(
                f"RPN expects features {self.in_features}; missing {missing} "
                f"(got {list(features)})."
            )
        features = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(features)

        def head():
            pred_objectness_logits, pred_anchor_deltas = self.rpn_head(features)
            pred_objectness_logits = [
                # (N, A, Hi, Wi) -> (N, Hi, Wi, A) -> (N, Hi*Wi*A)
                score.permute(0, 2, 3, 1).flatten(1)
                for score in pred_objectness_logits
            ]
            pred_anchor_deltas = [
                # (N, A*B, Hi, Wi) -> (N, A, B, Hi, Wi) -> (N, Hi, Wi, A, B) -> (N, Hi*Wi*A, B)
                x.view(x.shape[0], -1, self.anchor_generator.box_dim, x.shape[-2], x.shape[-1])
                .permute(0, 3, 4, 1, 2)
                .flatten(1, -2)
                for x in pred_anchor_deltas
            ]
            return pred_objectness_logits, pred_anchor_deltas

        # A stage point: a trace may re-select proposals from these without re-running the head.
        pred_objectness_logits, pred_anchor_deltas = run_stage("rpn_head", head, owner=self)

        if self.training:
            if gt_instances is None:
                raise ValueError("RPN requires gt_instances in training!")
            if len(gt_instances) != len(images.image_sizes):
                raise ValueError(
                    f"Expected one gt Instances per image ({len(images.image_sizes)}), got "
                    f"{len(gt_instances)}."
                )
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(
                anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes
            )
        else:
            losses = {}
        rec = active_recorder(self)
        mark = rec.mark() if rec is not None else 0
        proposals = self.predict_proposals(
            anchors, pred_objectness_logits, pred_anchor_deltas, images.image_sizes
        )
        if rec is not None:
            selection = rec.since(mark, "rpn_selection")
            selection = selection[-1] if selection else None
            if selection is not None and not all(
                    a is b for a, b in zip(selection.proposals, proposals)):
                selection = None  # an override changed the proposals: their anchors are unknown
            rec.put("rpn", RPNRecord(
                in_features=list(self.in_features), anchors=anchors,
                objectness=pred_objectness_logits, deltas=pred_anchor_deltas,
                proposals=proposals, image_sizes=list(images.image_sizes), selection=selection))
        return proposals, losses

    @perf.full_precision()  # box decoding and NMS in float32 under the autocast switch
    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """Decode every anchor's deltas, then keep the best proposals (top-k, NMS, top-k).

        Runs without gradient: the proposals are treated as constants by the ROI heads
        (the derivative with respect to the proposal coordinates is ignored).

        Returns:
            N ``Instances`` with at most ``post_nms_topk`` proposals each, sorted by
            decreasing objectness.
        """
        rec = active_recorder(self)
        pred_objectness_logits = perf.float32(pred_objectness_logits)
        pred_anchor_deltas = perf.float32(pred_anchor_deltas)
        with torch.no_grad():
            pred_proposals = self._decode_proposals(anchors, pred_anchor_deltas)
            out = type(self).find_top_proposals(
                pred_proposals,
                pred_objectness_logits,
                image_sizes,
                self.nms_thresh,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.min_box_size,
                self.training,
                return_selection=rec is not None,
            )
        if rec is None:
            return out
        proposals, selections = out
        settings = SelectionSettings(
            values={"nms_thresh": self.nms_thresh, "pre_nms_topk": self.pre_nms_topk[self.training],
                    "topk": self.post_nms_topk[self.training], "min_box_size": self.min_box_size},
            owner=self,
            attrs={"nms_thresh": "nms_thresh", "pre_nms_topk": ("pre_nms_topk", self.training),
                   "topk": ("post_nms_topk", self.training), "min_box_size": "min_box_size"})
        rec.put("rpn_selection", RPNSelectionRecord(pred_proposals, selections, settings, proposals))
        return proposals

    def _decode_proposals(self, anchors: List[Boxes],
                          pred_anchor_deltas: List[torch.Tensor]) -> List[torch.Tensor]:
        """Apply the predicted deltas to the anchors.

        Returns:
            L tensors, each (N, Hi*Wi*A, B).
        """
        N = pred_anchor_deltas[0].shape[0]
        proposals = []
        for anchors_i, pred_anchor_deltas_i in zip(anchors, pred_anchor_deltas):
            B = anchors_i.tensor.size(1)
            pred_anchor_deltas_i = pred_anchor_deltas_i.reshape(-1, B)  # -> (N*Hi*Wi*A, B)
            # (Hi*Wi*A, B) -> (N, Hi*Wi*A, B) -> (N*Hi*Wi*A, B)
            anchors_i = anchors_i.tensor.unsqueeze(0).expand(N, -1, -1).reshape(-1, B)
            proposals_i = self.box2box_transform.apply_deltas(pred_anchor_deltas_i, anchors_i)
            proposals.append(proposals_i.view(N, -1, B))  # -> (N, Hi*Wi*A, B)
        return proposals

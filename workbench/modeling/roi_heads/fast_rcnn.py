"""Fast R-CNN box predictor: per-ROI features -> class scores and class-specific box deltas.

Shapes used below:
    N        images in the batch
    R        ROIs of all images, concatenated image after image (Ri in image i)
    K        foreground classes; column K of the scores is the background class
    B        box dimension, 4 (dx, dy, dw, dh deltas; XYXY boxes)
    D        width of the box-head feature given to the predictor

Labels: ``gt_classes`` lie in [0, K]; [0, K) are foreground classes, K is background and -1 marks
an ignored proposal. Boxes are XYXY in absolute pixels of the (resized) input image.

Training:  ``scores, deltas = predictor(x)``; ``predictor.losses((scores, deltas), proposals)``.
Inference: ``instances, kept = predictor.inference((scores, deltas), proposals)``, where
``kept[i][j]`` is the index in proposals[i] of the ROI that detection j came from.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import configurable
from workbench.layers import ShapeSpec, cat, cross_entropy, nonzero_tuple
from workbench.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from workbench.structures import Instances
from workbench.utils import perf
from workbench.utils.events import get_event_storage

from ..recording import SelectionSettings, active_recorder
from .box_inference import fast_rcnn_inference, fast_rcnn_inference_single_image
from .records import BoxSelection

__all__ = [
    "fast_rcnn_inference",
    "fast_rcnn_inference_single_image",
    "BoxSelection",
    "FastRCNNOutputLayers",
]

logger = logging.getLogger(__name__)


def _log_classification_stats(pred_logits: torch.Tensor, gt_classes: torch.Tensor,
                              prefix: str = "fast_rcnn") -> None:
    """Put classification accuracy, foreground accuracy and false-negative rate in the storage.

    Args:
        pred_logits: (R, K+1) class logits, background last.
        gt_classes: (R,) labels in [0, K] (or -1).
        prefix: scalar names are "{prefix}/cls_accuracy", "{prefix}/fg_cls_accuracy" and
            "{prefix}/false_negative" (the last two only when there is a foreground ROI).
    """
    num_instances = gt_classes.numel()
    if num_instances == 0:
        return
    pred_classes = pred_logits.argmax(dim=1)
    bg_class_ind = pred_logits.shape[1] - 1

    fg_inds = (gt_classes >= 0) & (gt_classes < bg_class_ind)
    num_fg = fg_inds.nonzero().numel()
    fg_gt_classes = gt_classes[fg_inds]
    fg_pred_classes = pred_classes[fg_inds]

    num_false_negative = (fg_pred_classes == bg_class_ind).nonzero().numel()
    num_accurate = (pred_classes == gt_classes).nonzero().numel()
    fg_num_accurate = (fg_pred_classes == fg_gt_classes).nonzero().numel()

    storage = get_event_storage()
    storage.put_scalar(f"{prefix}/cls_accuracy", num_accurate / num_instances)
    if num_fg > 0:
        storage.put_scalar(f"{prefix}/fg_cls_accuracy", fg_num_accurate / num_fg)
        storage.put_scalar(f"{prefix}/false_negative", num_false_negative / num_fg)


def _default_fed_loss_cls_weights(cfg) -> Callable[[], torch.Tensor]:
    """Deferred lookup of the per-class sampling weights of the federated loss.

    detectron2 computes them from the training datasets' image counts
    (``detectron2.data.detection_utils.get_fed_loss_cls_weights``). The callable is only invoked
    when ``USE_FED_LOSS`` is on.
    """

    def get_weights() -> torch.Tensor:
        try:
            from workbench.data.detection_utils import get_fed_loss_cls_weights
        except ImportError as e:
            raise ImportError(
                "MODEL.ROI_BOX_HEAD.USE_FED_LOSS needs per-class frequency weights, which are "
                "computed from the dataset catalog (workbench.data.detection_utils); build "
                "FastRCNNOutputLayers with get_fed_loss_cls_weights=<callable returning a "
                "Tensor[K]> instead."
            ) from e
        return get_fed_loss_cls_weights(
            dataset_names=cfg.DATASETS.TRAIN,
            freq_weight_power=cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER,
        )

    return get_weights


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on the box-head features: class logits and box regression deltas.

    Args:
        input_shape: shape of one ROI's feature (flattened to channels * height * width).
        box2box_transform: encodes/decodes deltas (4 weights: (dx, dy, dw, dh)).
        num_classes: K, the number of foreground classes.
        test_score_thresh: detections at or below this score are dropped at inference.
        test_nms_thresh: per-class NMS IoU threshold at inference.
        test_topk_per_image: detections kept per image at inference (< 0: all).
        cls_agnostic_bbox_reg: predict one box per ROI instead of one per class.
        smooth_l1_beta: transition point of the smooth L1 loss (0: L1). Only for "smooth_l1".
        box_reg_loss_type: "smooth_l1" (on deltas), "giou", "diou" or "ciou" (on decoded boxes).
        loss_weight: a float for both losses, or a dict with "loss_cls" / "loss_box_reg" keys.
        use_fed_loss: federated loss (Zhou et al. 2021): the sigmoid loss only counts the gt
            classes of the batch plus randomly sampled negative classes. Needs use_sigmoid_ce.
        use_sigmoid_ce: per-class binary cross entropy instead of softmax cross entropy.
        get_fed_loss_cls_weights: callable returning Tensor[K] of sampling weights for negative
            classes; called once, at construction, when use_fed_loss is on.
        fed_loss_num_classes: classes kept by the federated loss in total.
    """

    # The selection (threshold, clip, per-class NMS) of this layer's box kind.
    selection_fn = staticmethod(fast_rcnn_inference)
    box2box_transform_class = Box2BoxTransform  # what from_config builds from the weights

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        use_fed_loss: bool = False,
        use_sigmoid_ce: bool = False,
        get_fed_loss_cls_weights: Optional[Callable[[], torch.Tensor]] = None,
        fed_loss_num_classes: int = 50,
    ) -> None:
        super().__init__()
        if isinstance(input_shape, int):  # detectron2 also accepts a plain channel count
            input_shape = ShapeSpec(channels=input_shape)
        self.num_classes = num_classes
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        # K foreground classes + 1 background class.
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        box_dim = len(box2box_transform.weights)
        self.bbox_pred = nn.Linear(input_size, num_bbox_reg_classes * box_dim)

        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        if box_reg_loss_type not in ("smooth_l1", "giou", "diou", "ciou"):
            raise ValueError(f"box_reg_loss_type must be 'smooth_l1', 'giou', 'diou' or 'ciou', "
                             f"got {box_reg_loss_type!r}.")
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_cls": float(loss_weight), "loss_box_reg": float(loss_weight)}
        self.loss_weight = loss_weight
        self.use_fed_loss = use_fed_loss
        self.use_sigmoid_ce = use_sigmoid_ce
        self.fed_loss_num_classes = fed_loss_num_classes

        if self.use_fed_loss:
            if not self.use_sigmoid_ce:
                raise ValueError("use_fed_loss=True needs use_sigmoid_ce=True (the federated loss "
                                 "is a sigmoid cross entropy).")
            if get_fed_loss_cls_weights is None:
                raise ValueError("use_fed_loss=True needs get_fed_loss_cls_weights.")
            fed_loss_cls_weights = get_fed_loss_cls_weights()
            if len(fed_loss_cls_weights) != self.num_classes:
                raise ValueError(f"get_fed_loss_cls_weights returned {len(fed_loss_cls_weights)} "
                                 f"weights, expected one per class ({self.num_classes}).")
            self.register_buffer("fed_loss_cls_weights", fed_loss_cls_weights)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {
            "input_shape": input_shape,
            "box2box_transform": cls.box2box_transform_class(
                weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "cls_agnostic_bbox_reg": cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG,
            "smooth_l1_beta": cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "box_reg_loss_type": cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE,
            "loss_weight": {"loss_box_reg": cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT},
            "use_fed_loss": cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS,
            "use_sigmoid_ce": cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE,
            "get_fed_loss_cls_weights": _default_fed_loss_cls_weights(cfg),
            "fed_loss_num_classes": cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES,
        }

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-ROI features (R, D) or (R, C, H, W) -> (scores (R, K+1), deltas (R, K*4 or 4))."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)  # (R, C, H, W) -> (R, C*H*W)
        scores = self.cls_score(x)
        proposal_deltas = self.bbox_pred(x)
        return scores, proposal_deltas

    def losses(
        self,
        predictions: Tuple[torch.Tensor, torch.Tensor],
        proposals: List[Instances],
    ) -> Dict[str, torch.Tensor]:
        """Classification and box regression losses of the sampled proposals.

        Args:
            predictions: the output of ``forward``.
            proposals: per image, the sampled proposals the predictions were made on, with fields
                ``proposal_boxes``, ``gt_classes`` and (when the image has ground truth)
                ``gt_boxes``.

        Returns:
            {"loss_cls", "loss_box_reg"}, each already multiplied by its ``loss_weight``.
        """
        scores, proposal_deltas = predictions

        # detectron2 uses a float torch.empty(0) for an empty batch, which cannot index the
        # deltas below; an int64 tensor on the predictions' device can.
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0) if len(proposals)
            else torch.empty(0, dtype=torch.int64, device=scores.device)
        )  # (R,)
        _log_classification_stats(scores, gt_classes)

        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)  # (R, 4)
            if proposal_boxes.requires_grad:
                raise ValueError("Proposal boxes must not require gradients; detach them first.")
            # An image without ground truth has no gt_boxes: all its proposals are background
            # and take no part in the regression loss, so any placeholder of the right shape does.
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor
                 for p in proposals],
                dim=0,
            )  # (R, 4)
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)

        if self.use_sigmoid_ce:
            loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
        else:
            loss_cls = cross_entropy(scores, gt_classes, reduction="mean")

        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas,
                                              gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def get_fed_loss_classes(self, gt_classes: torch.Tensor, num_fed_loss_classes: int,
                             num_classes: int, weight: torch.Tensor) -> torch.Tensor:
        """Classes the federated loss counts: the gt classes present, topped up by sampling.

        Args:
            gt_classes: (R,) labels in [0, K].
            num_fed_loss_classes: classes to keep in total; negatives are sampled (without
                replacement, with probability proportional to ``weight``) until there are as many.
            num_classes: K.
            weight: (K,) sampling weights of the negative classes.

        Returns:
            int64 Tensor of the kept class indices (may include K, the background).
        """
        unique_gt_classes = torch.unique(gt_classes)
        prob = unique_gt_classes.new_ones(num_classes + 1).float()  # (K+1,)
        prob[-1] = 0
        if len(unique_gt_classes) < num_fed_loss_classes:
            prob[:num_classes] = weight.float().clone()
            prob[unique_gt_classes] = 0
            sampled_negative_classes = torch.multinomial(
                prob, num_fed_loss_classes - len(unique_gt_classes), replacement=False
            )
            fed_loss_classes = torch.cat([unique_gt_classes, sampled_negative_classes])
        else:
            fed_loss_classes = unique_gt_classes
        return fed_loss_classes

    def sigmoid_cross_entropy_loss(self, pred_class_logits: torch.Tensor,
                                   gt_classes: torch.Tensor) -> torch.Tensor:
        """Sum of per-class binary cross entropies over the K foreground columns, divided by R.

        The background column of the logits is not used; a background ROI has all-zero targets.
        """
        if pred_class_logits.numel() == 0:
            return pred_class_logits.new_zeros([1])[0]

        num_rois = pred_class_logits.shape[0]
        num_fg_classes = pred_class_logits.shape[1] - 1

        # One-hot over K+1 columns, then drop the background one: (R, K+1) -> (R, K)
        target = pred_class_logits.new_zeros(num_rois, num_fg_classes + 1)
        target[range(len(gt_classes)), gt_classes] = 1
        target = target[:, :num_fg_classes]

        cls_loss = F.binary_cross_entropy_with_logits(
            pred_class_logits[:, :-1], target, reduction="none"
        )  # (R, K)

        if self.use_fed_loss:
            fed_loss_classes = self.get_fed_loss_classes(
                gt_classes, num_fed_loss_classes=self.fed_loss_num_classes,
                num_classes=num_fg_classes, weight=self.fed_loss_cls_weights,
            )
            fed_loss_classes_mask = fed_loss_classes.new_zeros(num_fg_classes + 1)
            fed_loss_classes_mask[fed_loss_classes] = 1
            fed_loss_classes_mask = fed_loss_classes_mask[:num_fg_classes]
            # (K,) -> (R, K)
            weight = fed_loss_classes_mask.view(1, num_fg_classes).expand(
                num_rois, num_fg_classes).float()
        else:
            weight = 1

        return torch.sum(cls_loss * weight) / num_rois

    def box_reg_loss(self, proposal_boxes: torch.Tensor, gt_boxes: torch.Tensor,
                     pred_deltas: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        """Regression loss of the foreground ROIs, on the deltas of their gt class.

        Args:
            proposal_boxes: (R, 4) proposals.
            gt_boxes: (R, 4) the gt box each proposal is matched to.
            pred_deltas: (R, K*4) class-specific or (R, 4) class-agnostic deltas.
            gt_classes: (R,) labels in [0, K] (or -1).

        Returns:
            Scalar: the summed loss divided by R, the number of sampled ROIs (not foreground
            ROIs), so that every foreground ROI weighs the same whatever the batch's foreground
            fraction; 0 when R = 0.
        """
        box_dim = proposal_boxes.shape[1]  # 4
        fg_inds = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if pred_deltas.shape[1] == box_dim:  # class-agnostic
            fg_pred_deltas = pred_deltas[fg_inds]  # (R_fg, 4)
        else:
            # (R, K*4) -> (R, K, 4), then the row of each ROI's gt class: (R_fg, 4)
            fg_pred_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[
                fg_inds, gt_classes[fg_inds]
            ]

        loss_box_reg = _dense_box_regression_loss(
            [proposal_boxes[fg_inds]],
            self.box2box_transform,
            [fg_pred_deltas.unsqueeze(0)],  # (R_fg, 4) -> (1, R_fg, 4): one "image"
            [gt_boxes[fg_inds]],
            ...,
            self.box_reg_loss_type,
            self.smooth_l1_beta,
        )
        return loss_box_reg / max(gt_classes.numel(), 1.0)

    @perf.full_precision()  # post-processing: float32 under the autocast switch
    def inference(
        self,
        predictions: Tuple[torch.Tensor, torch.Tensor],
        proposals: List[Instances],
    ) -> Tuple[List[Instances], List[torch.Tensor]]:
        """Detections per image, as ``fast_rcnn_inference`` with this layer's test settings.

        Args:
            predictions: the output of ``forward``.
            proposals: per image, the proposals (field ``proposal_boxes``) the predictions were
                made on; their ``image_size`` is used for clipping.
        """
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [x.image_size for x in proposals]
        return self.select(boxes, scores, image_shapes)

    @perf.full_precision()
    def select(self, boxes: List[torch.Tensor], scores: List[torch.Tensor],
               image_shapes: List[Tuple[int, int]]) -> Tuple[List[Instances], List[torch.Tensor]]:
        """``fast_rcnn_inference`` (the class's ``selection_fn``) with this layer's test
        settings (also for a cascade's stage-averaged scores); under a stage recorder, puts a
        ``"box_selection"`` record. Runs in float32 (``workbench.utils.perf.full_precision``)."""
        rec = active_recorder(self)
        boxes, scores = perf.float32(boxes), perf.float32(scores)
        out = type(self).selection_fn(
            boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh,
            self.test_topk_per_image, return_selection=rec is not None,
        )
        if rec is None:
            return out
        instances, kept, selection = out
        selection.settings = SelectionSettings(
            selection.settings.values, owner=self,
            attrs={"score_thresh": "test_score_thresh", "nms_thresh": "test_nms_thresh",
                   "topk": "test_topk_per_image"})
        rec.put("box_selection", selection)
        return instances, kept

    def predict_boxes_for_gt_classes(
        self,
        predictions: Tuple[torch.Tensor, torch.Tensor],
        proposals: List[Instances],
    ) -> List[torch.Tensor]:
        """Per image, the box predicted for each proposal's gt class: (Ri, 4).

        Background and ignored proposals (label K or -1) get the box of the nearest valid class
        index (labels are clamped to [0, K-1]); class-agnostic heads return their single box.
        """
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)  # (R, 4)
        num_rois, box_dim = proposal_boxes.shape
        predict_boxes = self.box2box_transform.apply_deltas(
            proposal_deltas, proposal_boxes
        )  # (R, K*4) or (R, 4)

        num_reg_classes = predict_boxes.shape[1] // box_dim
        if num_reg_classes > 1:
            gt_classes = torch.cat([p.gt_classes for p in proposals], dim=0)
            gt_classes = gt_classes.clamp(0, num_reg_classes - 1)
            # (R, K*4) -> (R, K, 4) -> (R, 4)
            predict_boxes = predict_boxes.view(num_rois, num_reg_classes, box_dim)[
                torch.arange(num_rois, dtype=torch.long, device=predict_boxes.device), gt_classes
            ]
        num_prop_per_image = [len(p) for p in proposals]
        return predict_boxes.split(num_prop_per_image)

    @perf.full_precision()
    def predict_boxes(
        self,
        predictions: Tuple[torch.Tensor, torch.Tensor],
        proposals: List[Instances],
    ) -> List[torch.Tensor]:
        """Per image, decoded boxes (Ri, K*4) (or (Ri, 4) class-agnostic), not yet clipped;
        float32 (``workbench.utils.perf.full_precision``)."""
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        proposal_deltas = perf.float32(proposal_deltas)
        num_prop_per_image = [len(p) for p in proposals]
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)  # (R, 4)
        predict_boxes = self.box2box_transform.apply_deltas(proposal_deltas, proposal_boxes)
        return predict_boxes.split(num_prop_per_image)

    @perf.full_precision()
    def predict_probs(
        self,
        predictions: Tuple[torch.Tensor, torch.Tensor],
        proposals: List[Instances],
    ) -> List[torch.Tensor]:
        """Per image, class probabilities (Ri, K+1): softmax, or sigmoid with use_sigmoid_ce;
        float32 (``workbench.utils.perf.full_precision``)."""
        scores, _ = predictions
        scores = perf.float32(scores)
        num_inst_per_image = [len(p) for p in proposals]
        if self.use_sigmoid_ce:
            probs = scores.sigmoid()
        else:
            probs = F.softmax(scores, dim=-1)
        return probs.split(num_inst_per_image, dim=0)

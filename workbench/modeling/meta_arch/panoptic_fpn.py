"""Panoptic FPN (Kirillov et al. 2019): Mask R-CNN plus a semantic branch on the same FPN.

Inference produces three outputs per image: instances (as Mask R-CNN), semantic logits
(as ``SemanticSegmentor``) and a panoptic segmentation that pastes the confident instance
masks first and fills the remaining pixels with the "stuff" classes of the semantic argmax.

Shape legend:
    N        images in the batch
    C        semantic classes; class 0 stands for "all things", classes 1..C-1 are stuff
    H x W    requested output size of one image ("height" x "width", else the input size)
    Hp x Wp  padded batch size

The combination follows panopticapi's ``combine_semantic_and_instance_predictions.py`` as
detectron2 0.6 implements it.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from workbench.config import configurable
from workbench.structures import Instances

from ..recording import run_stage
from .build import META_ARCH_REGISTRY
from .input_checks import gather_gt_instances, roi_heads_expectations
from .postprocessing import detector_postprocess, sem_seg_postprocess
from .preprocess import output_size, postprocess_per_image
from .rcnn import GeneralizedRCNN
from .semantic_seg import _pad_sem_seg_targets, build_sem_seg_head
from workbench.utils import perf
from workbench.utils.events import get_event_storage

__all__ = ["PanopticFPN", "combine_semantic_and_instance_outputs"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class PanopticFPN(GeneralizedRCNN):
    """:class:`GeneralizedRCNN` with a semantic segmentation head on the shared backbone.

    Training needs "instances" and "sem_seg" in every input; the losses of both branches are
    returned together. Inference returns per image ``{"sem_seg", "instances", "panoptic_seg"}``,
    with ``panoptic_seg = (ids (H, W) int32, segments_info)``.
    """

    @configurable
    def __init__(self, *, sem_seg_head: nn.Module, combine_overlap_thresh: float = 0.5,
                 combine_stuff_area_thresh: float = 4096, combine_instances_score_thresh: float = 0.5,
                 **kwargs) -> None:
        """
        Args:
            sem_seg_head: see ``SEM_SEG_HEADS_REGISTRY``.
            combine_overlap_thresh: an instance whose mask is covered by already placed
                instances for more than this fraction of its area is dropped.
            combine_stuff_area_thresh: stuff regions smaller than this many pixels are dropped.
            combine_instances_score_thresh: instances scoring below this are not placed.
            **kwargs: the arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self.sem_seg_head = sem_seg_head
        self.combine_overlap_thresh = combine_overlap_thresh
        self.combine_stuff_area_thresh = combine_stuff_area_thresh
        self.combine_instances_score_thresh = combine_instances_score_thresh

    @classmethod
    def from_config(cls, cfg) -> dict:
        ret = super().from_config(cfg)
        ret.update({
            "combine_overlap_thresh": cfg.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH,
            "combine_stuff_area_thresh": cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT,
            "combine_instances_score_thresh": cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH,
        })
        ret["sem_seg_head"] = build_sem_seg_head(cfg, ret["backbone"].output_shape())
        if not cfg.MODEL.PANOPTIC_FPN.COMBINE.ENABLED:
            logger.warning(
                "PANOPTIC_FPN.COMBINE.ENABLED is no longer used; call "
                "model.inference(..., do_postprocess=False) to skip the postprocessing."
            )
        if cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT != 1.0:
            # Old configs weighted the instance branch with one key; it now lives on the heads.
            w = cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT
            logger.warning(
                "PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT should be replaced by weights on each ROI head."
            )

            def update_weight(x):
                if isinstance(x, dict):
                    return {k: v * w for k, v in x.items()}
                return x * w

            roi_heads = ret["roi_heads"]
            roi_heads.box_predictor.loss_weight = update_weight(roi_heads.box_predictor.loss_weight)
            roi_heads.mask_head.loss_weight = update_weight(roi_heads.mask_head.loss_weight)
        return ret

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per image with "image", and for training "instances"
                (ground truth) and "sem_seg" ((H, W) long class ids, ``ignore_value`` where
                unlabelled); optionally "height"/"width" for the output size.

        Returns:
            Training: dict of losses ("loss_sem_seg", the RPN and ROI-head losses).
            Inference: see :meth:`inference`.
        """
        if not self.training:
            return self.inference(batched_inputs)
        # Fail before any work: a forward that raises later would already have moved the
        # BatchNorm running statistics of the backbone and the semantic head.
        get_event_storage()
        for key in ("sem_seg", "instances"):
            if key not in batched_inputs[0]:
                raise KeyError(f"Training PanopticFPN needs a '{key}' key in every input dict.")
        images = self.preprocess_image(batched_inputs)
        # The targets are checked before the backbone runs.
        gt_sem_seg = _pad_sem_seg_targets(batched_inputs, self.pixel_mean, self.backbone,
                                          self.sem_seg_head.ignore_value,
                                          getattr(self.sem_seg_head, "num_classes", None)).long()  # (N, Hp, Wp)
        gt_instances = gather_gt_instances(batched_inputs, self.device,
                                           **roi_heads_expectations(self.roi_heads))
        features = self.backbone(images.tensor)

        _, sem_seg_losses = self.sem_seg_head(features, gt_sem_seg)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)

        losses = dict(sem_seg_losses)
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    # GeneralizedRCNN.inference's signature is kept (detected_instances before do_postprocess)
    # so the override stays substitutable; detectron2's PanopticFPN.inference has no
    # detected_instances, so call it with do_postprocess= by keyword, as detectron2 code does.
    @perf.in_inference_precision  # the GPU precision switches (workbench.utils.perf)
    def inference(self, batched_inputs: List[Dict], detected_instances: Optional[List[Instances]] = None,
                  do_postprocess: bool = True) -> Union[List[Dict], Tuple[List[Instances], Tensor]]:
        """Run inference on ``batched_inputs``.

        Args:
            detected_instances: if given, skip proposals and box prediction and run the mask
                head on these boxes (``pred_boxes``, ``pred_classes`` and ``scores`` per image).
            do_postprocess: rescale to "height"/"width" and combine into a panoptic output.

        Returns:
            With ``do_postprocess``: per image ``{"sem_seg": (C, H, W) logits, "instances":
            Instances at (H, W), "panoptic_seg": (ids (H, W) int32, segments_info)}``.
            Without: ``(detector_results, sem_seg_results)``, the raw ``list[Instances]`` at the
            input resolution and the (N, C, Hp, Wp) semantic logits of the padded batch.
        """
        if self.training:
            raise RuntimeError("inference() needs model.eval(); the model is in training mode.")
        if isinstance(detected_instances, bool):
            raise TypeError(
                "PanopticFPN.inference's second argument is detected_instances; pass "
                "do_postprocess by keyword."
            )
        images = run_stage("preprocess", lambda: self.preprocess_image(batched_inputs), owner=self)
        features = run_stage("backbone", lambda: self.backbone(images.tensor), owner=self)
        # (N, C, Hp, Wp); None when a trace skips it (detections only)
        sem_seg_results = run_stage("sem_seg_head", lambda: self.sem_seg_head(features, None)[0],
                                    skipped=None, owner=self)
        if detected_instances is None:
            proposals = run_stage("proposals", lambda: self.propose(images, features, batched_inputs),
                                  owner=self)
            detector_results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            detector_results = self.roi_heads.forward_with_given_boxes(features, detected_instances)

        if not do_postprocess:
            return detector_results, sem_seg_results

        processed_results = []
        if sem_seg_results is None:  # a trace of the detections only skipped the semantic head
            return postprocess_per_image(detector_results, batched_inputs, images.image_sizes)
        for i, (sem_seg_result, detector_result, input_per_image, image_size) in enumerate(zip(
            sem_seg_results, detector_results, batched_inputs, images.image_sizes
        )):
            height, width = output_size(input_per_image, image_size, i)
            sem_seg_r = sem_seg_postprocess(sem_seg_result, image_size, height, width)
            detector_r = detector_postprocess(detector_result, height, width)
            panoptic_r = combine_semantic_and_instance_outputs(
                detector_r,
                sem_seg_r.argmax(dim=0),
                self.combine_overlap_thresh,
                self.combine_stuff_area_thresh,
                self.combine_instances_score_thresh,
            )
            processed_results.append({"sem_seg": sem_seg_r, "instances": detector_r,
                                      "panoptic_seg": panoptic_r})
        return processed_results


def combine_semantic_and_instance_outputs(
    instance_results: Instances,
    semantic_results: Tensor,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> Tuple[Tensor, List[Dict]]:
    """Merge instance masks and a semantic map into one panoptic segmentation.

    Instances are placed in decreasing score order, stopping at the first one scoring below
    ``instances_score_thresh``. An instance is skipped when its mask is empty or when more than
    ``overlap_threshold`` of it is already covered; otherwise it takes its still-free pixels.
    Then every semantic class except 0 (class 0 is the single "thing" class of the semantic
    head) takes its still-free pixels, if there are at least ``stuff_area_thresh`` of them.

    Args:
        instance_results: ``detector_postprocess`` output: ``scores``, ``pred_classes`` and
            ``pred_masks`` (R, H, W) at the output resolution.
        semantic_results: (H, W) semantic class ids (the argmax of the semantic logits).

    Returns:
        panoptic_seg: (H, W) int32 segment ids, 0 where no segment was placed.
        segments_info: one dict per segment, in id order: ``{"id", "isthing": True, "score",
            "category_id", "instance_id"}`` for things (``instance_id`` indexes
            ``instance_results``) and ``{"id", "isthing": False, "category_id", "area"}`` for
            stuff (``category_id`` is the semantic class id).
    """
    if semantic_results.dim() != 2:
        raise ValueError(
            f"Expected semantic_results of shape (H, W), got {tuple(semantic_results.shape)}."
        )
    masks = instance_results.pred_masks
    if masks.dim() != 3 or tuple(masks.shape[-2:]) != tuple(semantic_results.shape):
        raise ValueError(
            f"Expected instance pred_masks of shape (R, {semantic_results.shape[0]}, "
            f"{semantic_results.shape[1]}) (run detector_postprocess first), got {tuple(masks.shape)}."
        )
    panoptic_seg = torch.zeros_like(semantic_results, dtype=torch.int32)

    # The per-instance numbers are read from the device once, not one .item() per instance and
    # field: on a GPU, every read waits for the device. What stays per instance is one read of
    # its mask area and overlap, which depend on the instances placed before it.
    sorted_inds = torch.argsort(-instance_results.scores)
    sorted_scores = instance_results.scores[sorted_inds].tolist()
    sorted_ids, sorted_classes = torch.stack(
        [sorted_inds, instance_results.pred_classes[sorted_inds].to(sorted_inds.dtype)]).tolist()
    current_segment_id = 0
    segments_info: List[Dict] = []
    instance_masks = masks.to(dtype=torch.bool, device=panoptic_seg.device)

    for inst_id, score, category in zip(sorted_ids, sorted_scores, sorted_classes):
        if score < instances_score_thresh:
            break  # sorted: every later instance scores lower
        mask = instance_masks[inst_id]  # (H, W)
        intersect = mask & (panoptic_seg > 0)
        mask_area, intersect_area = torch.stack([mask.sum(), intersect.sum()]).tolist()
        if mask_area == 0:
            continue
        if intersect_area * 1.0 / mask_area > overlap_threshold:
            continue
        if intersect_area > 0:
            mask = mask & (panoptic_seg == 0)

        current_segment_id += 1
        panoptic_seg.masked_fill_(mask, current_segment_id)
        segments_info.append({
            "id": current_segment_id,
            "isthing": True,
            "score": score,
            "category_id": category,
            "instance_id": inst_id,
        })

    # Stuff classes take disjoint pixels (one class each), so every class's free area can be
    # read before any is placed: one read for all of them.
    stuff_labels = [int(v) for v in torch.unique(semantic_results).tolist() if v != 0]
    free = panoptic_seg == 0
    stuff_masks = [(semantic_results == label) & free for label in stuff_labels]
    stuff_areas = torch.stack([m.sum() for m in stuff_masks]).tolist() if stuff_masks else []
    for semantic_label, mask, mask_area in zip(stuff_labels, stuff_masks, stuff_areas):
        if mask_area < stuff_area_thresh:
            continue
        current_segment_id += 1
        panoptic_seg.masked_fill_(mask, current_segment_id)
        segments_info.append({
            "id": current_segment_id,
            "isthing": False,
            "category_id": semantic_label,
            "area": mask_area,
        })
    return panoptic_seg, segments_info

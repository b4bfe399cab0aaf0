"""Two-stage detectors: ``GeneralizedRCNN`` (Faster / Mask / Keypoint R-CNN) and ``ProposalNetwork``.

The stages run in plain sight, so a notebook can run them one at a time::

    images = model.preprocess_image(inputs)                        # ImageList (N, C, Hp, Wp)
    features = model.backbone(images.tensor)                       # {"p2": (N, C, Hp/4, Wp/4), ...}
    proposals, _ = model.proposal_generator(images, features)      # list[Instances], N of them
    instances, _ = model.roi_heads(images, features, proposals)    # list[Instances]

Shapes: N images; C channels; Hp x Wp the padded batch size (a multiple of
``backbone.size_divisibility``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from workbench.config import configurable
from workbench.structures import Instances
from workbench.utils import perf
from workbench.utils.events import get_event_storage

from ..backbone import Backbone, build_backbone
from ..proposal_generator import build_proposal_generator
from ..recording import run_stage
from ..roi_heads import build_roi_heads
from .build import META_ARCH_REGISTRY
from .input_checks import check_given_proposals, gather_gt_instances, roi_heads_expectations
from .preprocess import PixelNormalizer, check_batched_inputs, postprocess_per_image

__all__ = ["GeneralizedRCNN", "ProposalNetwork"]


# Kept under its old name: other meta-architectures import it from here.
_check_batched_inputs = check_batched_inputs


def _draw_box_outlines(img: np.ndarray, boxes: np.ndarray, color: Tuple[int, int, int]) -> None:
    """Draw 1-px rectangle outlines into an (H, W, 3) uint8 image in place."""
    h, w = img.shape[:2]
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        x0, x1 = np.clip([x0, x1], 0, w - 1)
        y0, y1 = np.clip([y0, y1], 0, h - 1)
        img[y0, x0:x1 + 1] = color
        img[y1, x0:x1 + 1] = color
        img[y0:y1 + 1, x0] = color
        img[y0:y1 + 1, x1] = color


class GeneralizedRCNN(PixelNormalizer, nn.Module):
    """Backbone -> proposal generator -> per-region heads.

    Training (``model.train()``, inside ``EventStorage``): returns ``dict[str, Tensor]`` of losses.
    Inference (``model.eval()``): returns ``list[dict]`` with ``"instances"`` per image, rescaled to
    each input's "height"/"width" when given.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, proposal_generator: Optional[nn.Module],
                 roi_heads: nn.Module, pixel_mean: Tuple[float, ...], pixel_std: Tuple[float, ...],
                 input_format: Optional[str] = None, vis_period: int = 0) -> None:
        """
        Args:
            proposal_generator: None to take precomputed ``"proposals"`` from the inputs.
            pixel_mean, pixel_std: per-channel normalisation, in ``input_format`` channel order.
            input_format: channel order of ``"image"`` ("BGR" or "RGB"); used for visualisation.
            vis_period: every this many training iterations, put an image of ground truth and
                proposals into the ``EventStorage`` (0: never).
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.vis_period = vis_period
        if vis_period > 0 and input_format is None:
            raise ValueError("vis_period > 0 needs input_format to draw images.")
        self._register_pixel_stats(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(cfg, backbone.output_shape()),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def visualize_training(self, batched_inputs: List[Dict], proposals: List[Instances]) -> None:
        """Put one image per call into the storage: ground truth (green) | top-20 proposals (red)."""
        storage = get_event_storage()
        max_vis_prop = 20
        for inp, prop in zip(batched_inputs, proposals):
            img = inp["image"].detach().cpu().permute(1, 2, 0).numpy()
            if self.input_format == "BGR":
                img = img[:, :, ::-1]
            img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
            left, right = img.copy(), img.copy()
            if "instances" in inp:
                _draw_box_outlines(left, inp["instances"].gt_boxes.tensor.cpu().numpy(), (0, 255, 0))
            boxes = prop.proposal_boxes[0:max_vis_prop].tensor.detach().cpu().numpy()
            _draw_box_outlines(right, boxes, (255, 0, 0))
            vis = np.concatenate((left, right), axis=1).transpose(2, 0, 1)
            storage.put_image("Left: GT bounding boxes;  Right: Predicted proposals", vis)
            break  # only one image

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per image with "image" ((C, H, W) in ``cfg.INPUT.FORMAT``,
                0-255) and optionally "height"/"width" (output size), "instances" (ground truth
                for training), "proposals" (when the model has no proposal generator).
        """
        if not self.training:
            return self.inference(batched_inputs)
        # Fail early, and clearly, when there is nowhere to put the training statistics.
        get_event_storage()
        images = self.preprocess_image(batched_inputs)
        if "instances" in batched_inputs[0]:
            gt_instances = gather_gt_instances(batched_inputs, self.device,
                                               **roi_heads_expectations(self.roi_heads))
        else:
            gt_instances = None
        features = self.backbone(images.tensor)

        if self.proposal_generator is not None:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals = self._given_proposals(batched_inputs)
            proposal_losses = {}

        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0:
            storage = get_event_storage()
            if storage.iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, proposals)

        losses: Dict[str, torch.Tensor] = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses

    def _given_proposals(self, batched_inputs: List[Dict]) -> List[Instances]:
        if "proposals" not in batched_inputs[0]:
            raise KeyError(
                "This model has no proposal generator (MODEL.PROPOSAL_GENERATOR.NAME is "
                "'PrecomputedProposals'), so every input dict needs a 'proposals' Instances with "
                "'proposal_boxes' and 'objectness_logits'."
            )
        check_given_proposals(batched_inputs)
        return [x["proposals"].to(self.device) for x in batched_inputs]

    @perf.in_inference_precision  # the GPU precision switches (workbench.utils.perf)
    def inference(self, batched_inputs: List[Dict], detected_instances: Optional[List[Instances]] = None,
                  do_postprocess: bool = True):
        """Run inference on ``batched_inputs``.

        Args:
            detected_instances: if given, skip proposals and box prediction: run the mask /
                keypoint heads on these boxes (``pred_boxes`` and ``pred_classes`` per image).
            do_postprocess: rescale outputs to "height"/"width" and paste masks; with False,
                return the raw ``list[Instances]`` at the network's input resolution.
        """
        if self.training:
            raise RuntimeError("inference() needs model.eval(); the model is in training mode.")
        # Stage points (workbench.modeling.recording): a trace records them and may resume here.
        images = run_stage("preprocess", lambda: self.preprocess_image(batched_inputs), owner=self)
        features = run_stage("backbone", lambda: self.backbone(images.tensor), owner=self)

        if detected_instances is None:
            proposals = run_stage("proposals", lambda: self.propose(images, features, batched_inputs),
                                  owner=self)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)

        if do_postprocess:
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        return results

    def propose(self, images, features: Dict[str, torch.Tensor],
                batched_inputs: List[Dict]) -> List[Instances]:
        """The proposals of an inference: the proposal generator's, or the inputs' own
        ``"proposals"`` when the model has none (``PrecomputedProposals``)."""
        if self.proposal_generator is not None:
            proposals, _ = self.proposal_generator(images, features, None)
            return proposals
        return self._given_proposals(batched_inputs)

    @staticmethod
    def _postprocess(instances: List[Instances], batched_inputs: List[Dict],
                     image_sizes: List[Tuple[int, int]]) -> List[Dict]:
        """Rescale each image's instances to its requested output size."""
        return postprocess_per_image(instances, batched_inputs, image_sizes)


class ProposalNetwork(PixelNormalizer, nn.Module):
    """Backbone + proposal generator only (``MODEL.META_ARCHITECTURE: ProposalNetwork``).

    Inference returns ``list[dict]`` with ``"proposals"`` (``proposal_boxes``,
    ``objectness_logits``) per image, rescaled to "height"/"width" when given.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, proposal_generator: nn.Module,
                 pixel_mean: Tuple[float, ...], pixel_std: Tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self._register_pixel_stats(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @perf.in_inference_precision  # in eval mode: the GPU precision switches
    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            get_event_storage()
        images = run_stage("preprocess", lambda: self.preprocess_image(batched_inputs), owner=self)
        key = next((k for k in ("instances", "targets") if k in batched_inputs[0]), None)
        if key is None:
            gt_instances = None
        elif self.training:  # checked before the backbone; the RPN reads only "gt_boxes"
            gt_instances = gather_gt_instances(batched_inputs, self.device, key)
        else:
            gt_instances = [x[key].to(self.device) for x in batched_inputs]
        features = run_stage("backbone", lambda: self.backbone(images.tensor), owner=self)

        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        if self.training:
            return proposal_losses

        return postprocess_per_image(proposals, batched_inputs, images.image_sizes, key="proposals")


META_ARCH_REGISTRY.register(GeneralizedRCNN)
META_ARCH_REGISTRY.register(ProposalNetwork)

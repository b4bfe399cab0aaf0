"""Semantic segmentation: ``SemanticSegmentor`` and the Panoptic FPN head ``SemSegFPNHead``.

Shape legend:
    N          images in the batch
    C          semantic classes (``SEM_SEG_HEAD.NUM_CLASSES``)
    D          channels of the head's convs (``conv_dims``)
    Hp x Wp    padded batch size (a multiple of ``backbone.size_divisibility``)
    s          the head's ``common_stride``: every level is brought to (Hp/s, Wp/s) and summed

Targets are (N, Hp, Wp) integer maps of class ids in [0, C), with ``ignore_value`` in the
padding and wherever there is no label.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from workbench.config import configurable
from workbench.layers import Conv2d, ShapeSpec, get_norm, move_device_like
from workbench.layers.weight_init import c2_msra_fill
from workbench.structures import ImageList
from workbench.utils import perf
from workbench.utils.registry import Registry

from ..backbone import Backbone, build_backbone
from ..recording import run_stage
from .build import META_ARCH_REGISTRY
from .input_checks import check_sem_seg_targets
from .postprocessing import sem_seg_postprocess
from .preprocess import PixelNormalizer, output_size

__all__ = ["SemanticSegmentor", "SEM_SEG_HEADS_REGISTRY", "SemSegFPNHead", "build_sem_seg_head"]

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = """
Registry for semantic segmentation heads (``cfg.MODEL.SEM_SEG_HEAD.NAME``), which make
per-pixel class predictions from feature maps.

Entries are called as ``obj(cfg, input_shape)`` with ``input_shape`` the backbone's
``dict[str, ShapeSpec]``; they must return a module whose ``forward(features, targets=None)``
returns ``(predictions, losses)`` and that has an ``ignore_value`` attribute.
"""


def build_sem_seg_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the semantic segmentation head named by ``cfg.MODEL.SEM_SEG_HEAD.NAME``."""
    name = cfg.MODEL.SEM_SEG_HEAD.NAME
    return SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)


def _pad_sem_seg_targets(batched_inputs: List[Dict], like: Tensor, backbone: Backbone,
                         ignore_value: int, num_classes: Optional[int] = None) -> Tensor:
    """Stack the inputs' "sem_seg" maps into (N, Hp, Wp), padding with ``ignore_value``.

    The maps are checked first, on the tensors as given (:func:`check_sem_seg_targets`: the
    image's size, integer class ids in [0, ``num_classes``) or ``ignore_value``), so that inputs
    from a data loader are checked on the CPU without waiting for the GPU; the padding holds
    ``ignore_value``, so the padded batch needs no further check. Integer dtypes other than
    uint8 / int64 are made int64 before padding (an int8 map could not hold the padding value
    255); uint8 and int64 maps are used as they are (the loss reads them as int64).
    """
    check_sem_seg_targets(batched_inputs, num_classes=num_classes, ignore_value=ignore_value)
    targets = []
    for x in batched_inputs:
        t = x["sem_seg"]
        if t.dtype not in (torch.uint8, torch.int64):
            t = t.long()
        targets.append(move_device_like(t, like))
    padded = ImageList.from_tensors(
        targets, backbone.size_divisibility, ignore_value, backbone.padding_constraints
    ).tensor
    return padded


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(PixelNormalizer, nn.Module):
    """Backbone + semantic segmentation head.

    Training returns ``{"loss_sem_seg": ...}``; inference returns ``list[dict]`` with
    ``"sem_seg"``, (C, height, width) logits at each input's requested "height"/"width" (the
    input image size when absent).
    """

    @configurable
    def __init__(self, *, backbone: Backbone, sem_seg_head: nn.Module,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        """
        Args:
            sem_seg_head: see :data:`SEM_SEG_HEADS_REGISTRY`.
            pixel_mean, pixel_std: per-channel normalisation, in the input's channel order.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self._register_pixel_stats(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @perf.in_inference_precision  # in eval mode: the GPU precision switches (workbench.utils.perf)
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per image with "image" ((C_in, H, W), 0-255), "sem_seg"
                ((H, W) long class ids; needed in training) and optionally "height"/"width".
        """
        images = run_stage("preprocess", lambda: self.preprocess_image(batched_inputs), owner=self)
        if "sem_seg" in batched_inputs[0]:  # checked before the backbone runs
            targets = _pad_sem_seg_targets(batched_inputs, self.pixel_mean, self.backbone,
                                           self.sem_seg_head.ignore_value,
                                           getattr(self.sem_seg_head, "num_classes", None))
        else:
            if self.training:
                raise KeyError("Training a SemanticSegmentor needs a 'sem_seg' key in every input dict.")
            targets = None
        features = run_stage("backbone", lambda: self.backbone(images.tensor), owner=self)
        if self.training:
            return self.sem_seg_head(features, targets)[1]
        results = run_stage("sem_seg_head", lambda: self.sem_seg_head(features, targets)[0], owner=self)

        processed_results = []
        for i, (result, input_per_image, image_size) in enumerate(
                zip(results, batched_inputs, images.image_sizes)):
            height, width = output_size(input_per_image, image_size, i)
            processed_results.append({"sem_seg": sem_seg_postprocess(result, image_size, height, width)})
        return processed_results


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNHead(nn.Module):
    """The semantic branch of Panoptic FPN (Kirillov et al. 2019).

    Each input level goes through its own "scale head": log2(stride / s) repeats of
    (3x3 conv, norm, ReLU, 2x bilinear upsample), at least one conv; the level at stride s has no
    upsampling. The (N, D, Hp/s, Wp/s) results are summed and a 1x1 conv predicts C logits.
    Scale heads are children named after their feature ("p2", "p3", ...), so state-dict names
    are ``p2.0.weight``, ``p4.2.norm.weight`` ... as in detectron2.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int, conv_dims: int,
                 common_stride: int, loss_weight: float = 1.0,
                 norm: Optional[Union[str, Callable]] = "GN", ignore_value: int = -1) -> None:
        """
        Args:
            input_shape: the features to use, by name; they are processed in increasing stride.
            conv_dims: D, channels of every scale-head conv.
            common_stride: s, the stride all levels are brought to; must divide every stride.
            loss_weight: multiplier of the cross-entropy loss.
            norm: norm of the scale-head convs ("GN" is 32-group GroupNorm; "" for none, which
                also gives those convs a bias).
            ignore_value: target value that takes no loss (the padding value of targets).
        """
        super().__init__()
        if not input_shape:
            raise ValueError("SemSegFPNHead(input_shape=) cannot be empty.")
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [name for name, _ in ordered]
        for name, shape in ordered:
            ratio = shape.stride // common_stride
            if shape.stride % common_stride != 0 or ratio & (ratio - 1) != 0:
                # Scale heads upsample by 2 per conv: the stride must be s times a power of 2.
                raise ValueError(
                    f"Feature '{name}' has stride {shape.stride}; SemSegFPNHead needs strides equal "
                    f"to common_stride ({common_stride}) times a power of 2."
                )
        self.ignore_value = ignore_value
        self.num_classes = num_classes
        self.common_stride = common_stride
        self.loss_weight = loss_weight

        self.scale_heads: List[nn.Sequential] = []
        for name, shape in ordered:
            head_ops: List[nn.Module] = []
            head_length = max(1, int(np.log2(shape.stride) - np.log2(self.common_stride)))
            for k in range(head_length):
                conv = Conv2d(
                    shape.channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                c2_msra_fill(conv)
                head_ops.append(conv)
                if shape.stride != self.common_stride:
                    head_ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*head_ops))
            # Registered under the feature's name (not in a ModuleList), for detectron2's names.
            self.add_module(name, self.scale_heads[-1])
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1, stride=1, padding=0)
        c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise KeyError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not backbone outputs "
                f"(the backbone has {list(input_shape)})."
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in in_features},
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "conv_dims": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "common_stride": cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    def forward(self, features: Dict[str, Tensor],
                targets: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Dict[str, Tensor]]:
        """
        Args:
            features: at least ``self.in_features``, each (N, C_f, Hp/stride, Wp/stride).
            targets: (N, Hp, Wp) long class ids; needed in training.

        Returns:
            Training: ``(None, {"loss_sem_seg": ...})``. Inference: ``((N, C, Hp, Wp) logits, {})``.
        """
        x = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("SemSegFPNHead needs targets in training mode.")
            return None, self.losses(x, targets)
        # (N, C, Hp/s, Wp/s) -> (N, C, Hp, Wp), in float32 under workbench.utils.perf's autocast
        with perf.full_precision():
            x = F.interpolate(perf.float32(x), scale_factor=self.common_stride, mode="bilinear",
                              align_corners=False)
        return x, {}

    def layers(self, features: Dict[str, Tensor]) -> Tensor:
        """Sum of the scale heads' outputs, then the predictor: (N, C, Hp/s, Wp/s) logits."""
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"SemSegFPNHead needs features {missing}; got {list(features)}.")
        x = None
        for i, f in enumerate(self.in_features):
            y = self.scale_heads[i](features[f])  # (N, C_f, Hp/stride, Wp/stride) -> (N, D, Hp/s, Wp/s)
            x = y if x is None else x + y
        return self.predictor(x)

    def losses(self, predictions: Tensor, targets: Tensor) -> Dict[str, Tensor]:
        """Mean cross-entropy over the labelled pixels at input resolution.

        Args:
            predictions: (N, C, Hp/s, Wp/s) logits.
            targets: (N, Hp, Wp) class ids, ``ignore_value`` where unlabelled.
        """
        predictions = predictions.float()  # interpolate + cross-entropy in fp32 under AMP
        # (N, C, Hp/s, Wp/s) -> (N, C, Hp, Wp)
        predictions = F.interpolate(predictions, scale_factor=self.common_stride, mode="bilinear",
                                    align_corners=False)
        if predictions.shape[-2:] != targets.shape[-2:] or predictions.shape[0] != targets.shape[0]:
            raise ValueError(
                f"Expected sem_seg targets of shape {(predictions.shape[0], *predictions.shape[-2:])}, "
                f"got {tuple(targets.shape)}."
            )
        loss = F.cross_entropy(predictions, targets.long(), reduction="mean",
                               ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}

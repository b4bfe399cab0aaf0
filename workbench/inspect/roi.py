"""Pooled ROI features (and box-head embeddings) for boxes you choose.

Boxes are given in original-image pixels by default (the "height" x "width" the outputs are
in) and mapped through the resize into the network's input pixels before pooling, so a box
drawn on the photo pools the region the model sees there. Pooling uses the model's own
``ROIPooler`` (and so its level rule: ``canonical_box_size`` / ``canonical_level``).

Shape legend: Mi boxes of image i, M = sum Mi; C, P channels and side of the pooled features;
D box-head width; K classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from workbench.modeling.poolers import ROIPooler
from workbench.modeling.roi_heads.roi_heads import Res5ROIHeads
from workbench.structures import Boxes

from . import stages as S
from .hooks import describe
from .trace import Trace

__all__ = ["RoiFeatures", "roi_features"]


@dataclass
class RoiFeatures:
    """Attributes:
        boxes: per image (Mi, 4) the boxes in input pixels (what was pooled).
        pooled: (M, C, P, P) pooled features, image 0's boxes first.
        level: (M,) index of the feature map each box was pooled from (None with one map).
        embeddings: (M, D) box-head output (C4: res5 averaged over space); None when
            ``head=False`` or for the mask / keypoint poolers.
        logits: (M, K+1) the box predictor's class logits on those embeddings.
    """

    boxes: List[Tensor]
    pooled: Tensor
    level: Optional[Tensor]
    embeddings: Optional[Tensor]
    logits: Optional[Tensor]

    def __repr__(self) -> str:
        parts = [f"boxes={[len(b) for b in self.boxes]}", f"pooled={describe(self.pooled)}"]
        for name in ("level", "embeddings", "logits"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={describe(v)}")
        return "RoiFeatures(" + ", ".join(parts) + ")"


def _pooler_and_features(model: nn.Module, pooler: Union[str, ROIPooler],
                         in_features: Optional[Sequence[str]]):
    if isinstance(pooler, ROIPooler):
        if not in_features:
            raise ValueError("A custom ROIPooler needs in_features= (the feature names it pools from).")
        return pooler, list(in_features)
    heads = getattr(model, "roi_heads", None)
    if heads is None:
        raise ValueError(f"{type(model).__name__} has no ROI heads; pass your own pooler=ROIPooler(...) "
                         "and in_features=[...].")
    if pooler == "box":
        if isinstance(heads, Res5ROIHeads):
            return heads.pooler, list(heads.in_features)
        return heads.box_pooler, list(heads.box_in_features)
    if pooler in ("mask", "keypoint"):
        if not getattr(heads, f"{pooler}_on", False):
            raise ValueError(f"The model has no {pooler} head.")
        if isinstance(heads, Res5ROIHeads):
            return heads.pooler, list(heads.in_features)
        p = getattr(heads, f"{pooler}_pooler")
        if p is None:
            raise ValueError(f"The model's {pooler} head takes whole feature maps (no pooler).")
        return p, list(getattr(heads, f"{pooler}_in_features"))
    raise ValueError(f"pooler must be 'box', 'mask', 'keypoint' or an ROIPooler, got {pooler!r}.")


def roi_features(model: nn.Module, source: Union[Trace, List[Dict[str, Any]]],
                 boxes: Union[Tensor, Sequence[Tensor]], *, coords: str = "original",
                 pooler: Union[str, ROIPooler] = "box", in_features: Optional[Sequence[str]] = None,
                 head: bool = True, stage: int = -1) -> RoiFeatures:
    """Pool features for given boxes and (optionally) run the box head on them.

    Example::

        rf = roi_features(model, tr, [torch.tensor([[10., 20., 200., 180.]])])  # photo pixels
        rf.embeddings.shape                       # (1, D): the box-head vector of that region
        rf.level                                  # the FPN level the model's rule picked

    Args:
        source: a :class:`Trace` of the images (its features are reused), or the model's
            ``list[dict]`` inputs (preprocessed and run through the backbone here).
        boxes: per image a (Mi, 4) XYXY tensor; a single tensor for a single image.
        coords: "original" (pixels of "height" x "width", the outputs' frame) or "input"
            (pixels of the resized image the network sees).
        pooler: "box", "mask", "keypoint" (the model's poolers) or your own ``ROIPooler``
            (with ``in_features``), e.g. for a RetinaNet.
        head: run the box head (and predictor) on the pooled features ("box" pooler only).
        stage: which cascade stage's box head to use.
    """
    if isinstance(source, Trace):
        pre, feats = source.preprocess, source.backbone
    else:
        with torch.no_grad():
            pre = S.preprocess(model, source)
            feats = S.backbone(model, pre)
    if isinstance(boxes, Tensor):
        boxes = [boxes]
    if len(boxes) != len(pre):
        raise ValueError(f"Expected one box tensor per image ({len(pre)}), got {len(boxes)}.")
    if coords not in ("original", "input"):
        raise ValueError(f"coords must be 'original' or 'input', got {coords!r}.")
    like = pre.images.tensor
    input_boxes = []
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"Expected boxes[{i}] of shape (M, 4) XYXY, got {tuple(b.shape)}.")
        input_boxes.append(pre.to_input(b, i) if coords == "original" else b.clone())
    pool, names = _pooler_and_features(model, pooler, in_features)
    box_lists = [Boxes(b) for b in input_boxes]
    with torch.no_grad():
        pooled = pool([feats.features[f] for f in names], box_lists)
        level = S._pooler_levels(pool, box_lists)
        embeddings = logits = None
        if head and pooler == "box":
            heads = model.roi_heads
            if isinstance(heads, Res5ROIHeads):
                embeddings = heads.res5(pooled).mean(dim=[2, 3])
                predictor = heads.box_predictor
            elif isinstance(heads.box_head, nn.ModuleList):  # cascade
                embeddings = heads.box_head[stage](pooled)
                predictor = heads.box_predictor[stage]
            else:
                embeddings = heads.box_head(pooled)
                predictor = heads.box_predictor
            logits, _ = predictor(embeddings)
    return RoiFeatures(boxes=input_boxes, pooled=pooled, level=level, embeddings=embeddings,
                       logits=logits)

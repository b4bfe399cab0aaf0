"""Pooled ROI features (and box-head embeddings) for boxes you choose.

Boxes are given in original-image pixels by default (the "height" x "width" the outputs are
in) and mapped through the resize into the network's input pixels before pooling, so a box
drawn on the photo pools the region the model sees there. The boxes run through the model's own
ROI heads (so its pooler's level rule, its box head), and the stage records are read.

Shape legend: Mi boxes of image i, M = sum Mi; C, P channels and side of the pooled features;
D box-head width; K classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from workbench.modeling.poolers import ROIPooler
from workbench.structures import Boxes, Instances

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


def _input_boxes(boxes, pre: S.Preprocessed, coords: str) -> List[Tensor]:
    if isinstance(boxes, Tensor):
        boxes = [boxes]
    if len(boxes) != len(pre):
        raise ValueError(f"Expected one box tensor per image ({len(pre)}), got {len(boxes)}.")
    if coords not in ("original", "input"):
        raise ValueError(f"coords must be 'original' or 'input', got {coords!r}.")
    like = pre.images.tensor
    out = []
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b, device=like.device).to(torch.float32)
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"Expected boxes[{i}] of shape (M, 4) XYXY, got {tuple(b.shape)}.")
        bad = (~torch.isfinite(b).all(dim=1)) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise ValueError(f"boxes[{i}][{j}] = {b[j].tolist()} is not a finite XYXY box with "
                             "x1 >= x0 and y1 >= y0.")
        out.append(pre.to_input(b, i) if coords == "original" else b.clone())
    return out


def roi_features(model: nn.Module, source: Union[Trace, List[Dict[str, Any]]],
                 boxes: Union[Tensor, Sequence[Tensor]], *, coords: str = "original",
                 pooler: Union[str, ROIPooler] = "box", in_features: Optional[Sequence[str]] = None,
                 head: bool = True, stage: int = -1) -> RoiFeatures:
    """Pooled features (and box-head embeddings) of given boxes, computed by the model itself.

    The boxes go to the model's ROI heads as proposals ("box") or as detections ("mask",
    "keypoint"), and what their records hold is returned: the model's own pooler (its level
    rule), box head and predictor, whatever they are.

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
        pooler: "box", "mask", "keypoint" (the model's heads) or your own ``ROIPooler``
            (with ``in_features``), e.g. for a RetinaNet.
        head: return the box head's embeddings and logits ("box" only).
        stage: which pass of the box branch to read (a cascade: stage 0 pools your boxes,
            later stages the boxes the stages before refined, as the model does).
    """
    if isinstance(source, Trace):
        pre, feats = source.preprocess, source.backbone
    else:
        with torch.no_grad():
            pre = S.preprocess(model, source)
            feats = S.backbone(model, pre)
    input_boxes = _input_boxes(boxes, pre, coords)
    box_lists = [Boxes(b) for b in input_boxes]
    with torch.no_grad():
        if isinstance(pooler, ROIPooler):
            if not in_features:
                raise ValueError("A custom ROIPooler needs in_features= (the feature names it "
                                 "pools from).")
            pooled = pooler([feats.features[f] for f in in_features], box_lists)
            return RoiFeatures(boxes=input_boxes, pooled=pooled, level=pooler.level_of(box_lists),
                               embeddings=None, logits=None)
        if getattr(model, "roi_heads", None) is None:
            raise ValueError(f"{type(model).__name__} has no ROI heads; pass your own "
                             "pooler=ROIPooler(...) and in_features=[...].")
        if pooler == "box":
            props = [Instances(size,
                               proposal_boxes=b, objectness_logits=torch.zeros(len(b), device=b.device))
                     for b, size in zip(box_lists, pre.image_sizes)]
            box = S.box_head(model, pre, feats, props)
            if not -len(box.stages) <= stage < len(box.stages):
                raise ValueError(f"stage must index the box branch's {len(box.stages)} passes, got "
                                 f"{stage}.")
            st = box.stages[stage]
            return RoiFeatures(boxes=[p.proposal_boxes.tensor for p in st.proposals],
                               pooled=st.pooled, level=st.pooler_level,
                               embeddings=st.embeddings if head else None,
                               logits=st.logits if head else None)
        if pooler in ("mask", "keypoint"):
            dets = [Instances(size, pred_boxes=b,
                              pred_classes=torch.zeros(len(b), dtype=torch.int64, device=b.device))
                    for b, size in zip(box_lists, pre.image_sizes)]
            rec = getattr(S.given_boxes(model, feats, dets), pooler)
            if rec is None:
                raise ValueError(f"The model has no {pooler} head.")
            if rec.pool is None:
                raise ValueError(f"The model's {pooler} head takes whole feature maps (no pooler).")
            return RoiFeatures(boxes=input_boxes, pooled=rec.pooled, level=None,
                               embeddings=None, logits=None)
    raise ValueError(f"pooler must be 'box', 'mask', 'keypoint' or an ROIPooler, got {pooler!r}.")

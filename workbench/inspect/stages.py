"""The stages of a detector's inference, one plain function each, built from the model's parts.

Every function here runs the model's own modules and functions in the order its ``forward``
does (``model.preprocess_image``, ``model.backbone``, ``rpn.rpn_head``,
``find_top_rpn_proposals``, ``roi_heads.box_pooler``, ``box_head``, ``box_predictor``,
``fast_rcnn_inference_single_image``, the mask and keypoint heads, ``detector_postprocess``), so
the numbers are the model's, bit for bit; what it adds is bookkeeping: which anchor a proposal
came from, which ROI a detection came from, what NMS kept. A notebook can call them one by one,
change what a stage returned and carry on::

    pre = preprocess(model, inputs)                    # normalise + pad, exactly as the model
    feats = backbone(model, pre)
    props = rpn(model, pre, feats)                     # props.proposals: list[Instances]
    box = box_head(model, feats, props.proposals)      # or hand-made proposals
    inst = keypoint_head(model, feats, mask_head(model, feats, box.instances).instances).instances
    outputs, _ = postprocess(model, pre, instances=inst)   # == model(inputs)

There is no way to hand a stage an un-normalised tensor: the backbone stage takes the
:class:`Preprocessed` that :func:`preprocess` returns (detectron2 issue #4421).

Shape legend:
    N        images; Hp x Wp the padded batch; hi x wi image i after the resize (its
             ``image_size``); Hi x Wi the original size ("height" x "width" of the input dict)
    L        feature levels; A anchors per location; Hl x Wl level l
    Ri       proposals (ROIs) of image i; R = sum Ri; K foreground classes (K+1 with background)
    C, P     channels and side of pooled ROI features; D box-head width
    Di       detections of image i

Boxes are XYXY in pixels of the resized input image (``image_size``) unless said otherwise.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from workbench.layers import batched_nms, cat, move_device_like
from workbench.modeling.meta_arch.postprocessing import detector_postprocess, sem_seg_postprocess
from workbench.modeling.meta_arch.rcnn import GeneralizedRCNN, ProposalNetwork, _check_batched_inputs
from workbench.modeling.poolers import assign_boxes_to_levels
from workbench.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from workbench.modeling.proposal_generator.rpn import RPN
from workbench.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference_single_image
from workbench.modeling.roi_heads.keypoint_head import BaseKeypointRCNNHead, keypoint_rcnn_inference
from workbench.modeling.roi_heads.mask_head import BaseMaskRCNNHead, mask_rcnn_inference
from workbench.modeling.roi_heads.roi_heads import Res5ROIHeads, StandardROIHeads
from workbench.structures import Boxes, ImageList, Instances

from .hooks import describe

__all__ = [
    "Preprocessed", "BackboneOutput", "RPNOutput", "LazyPooled", "BoxStage", "BoxOutput", "MaskOutput",
    "KeypointOutput", "DenseOutput", "SemSegOutput",
    "preprocess", "backbone", "rpn", "select_proposals", "box_head", "box_inference",
    "mask_head", "keypoint_head", "dense_head", "dense_inference", "sem_seg_head",
    "postprocess", "architecture",
]


# -- architecture lookup -----------------------------------------------------------------------

def _optional(module: str, name: str):
    """A class from a model-core module that may not exist in every checkout (None if absent)."""
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError):
        return None


def _cascade_cls():
    return _optional("workbench.modeling.roi_heads.cascade_rcnn", "CascadeROIHeads")


def _retinanet_cls():
    return _optional("workbench.modeling.meta_arch.retinanet", "RetinaNet")


def _panoptic_cls():
    return _optional("workbench.modeling.meta_arch.panoptic_fpn", "PanopticFPN")


def _semseg_cls():
    return _optional("workbench.modeling.meta_arch.semantic_seg", "SemanticSegmentor")


def architecture(model: nn.Module) -> str:
    """The kind of model, as the trace sees it.

    Example::

        architecture(model)                   # "rcnn" for Faster / Mask / Keypoint / Cascade
        architecture(retinanet)               # "retinanet"
        architecture(panoptic)                # "panoptic_fpn"

    Returns:
        "panoptic_fpn", "rcnn" (any ``GeneralizedRCNN``), "rpn" (``ProposalNetwork``),
        "retinanet" or "semantic".

    Raises:
        TypeError: for a model the inspection layer does not know.
    """
    for name, cls in (("panoptic_fpn", _panoptic_cls()), ("rcnn", GeneralizedRCNN),
                      ("rpn", ProposalNetwork), ("retinanet", _retinanet_cls()),
                      ("semantic", _semseg_cls())):
        if cls is not None and isinstance(model, cls):
            return name
    raise TypeError(
        f"workbench.inspect supports GeneralizedRCNN, PanopticFPN, ProposalNetwork, RetinaNet and "
        f"SemanticSegmentor models, got {type(model).__name__}."
    )


def _is_stock(obj: Any, base: type, method: str) -> bool:
    """Whether ``obj`` is a ``base`` whose ``method`` is not overridden (so we may decompose it)."""
    return isinstance(obj, base) and getattr(type(obj), method) is getattr(base, method)


def _copy_instances(inst: Instances) -> Instances:
    """A new Instances holding the same field objects (adding a field does not touch ``inst``)."""
    return Instances(inst.image_size, **inst.get_fields())


@contextmanager
def _outputs_of(module: nn.Module) -> Iterator[List[Any]]:
    """Collect what ``module`` returns while inside (a bare forward hook, removed on exit)."""
    calls: List[Any] = []
    handle = module.register_forward_hook(lambda m, args, out: calls.append(out))
    try:
        yield calls
    finally:
        handle.remove()


def _repr_block(name: str, obj: Any, fields: Sequence[str]) -> str:
    parts = []
    for f in fields:
        v = getattr(obj, f)
        if v is None:
            continue
        if isinstance(v, list) and v and isinstance(v[0], Instances):
            parts.append(f"{f}=[{', '.join(str(len(x)) for x in v)}]")
        elif isinstance(v, LazyPooled):
            parts.append(f"pooled={v!r}")
        else:
            parts.append(f"{f}={describe(v)}")
    return f"{name}(" + ", ".join(parts) + ")"


# -- preprocessing -----------------------------------------------------------------------------

@dataclass
class Preprocessed:
    """Normalised, padded batch, and how each image relates to its original pixels.

    Attributes:
        images: the batch the backbone sees, ``tensor`` (N, C, Hp, Wp), ``image_sizes`` [(hi, wi)].
        original_sizes: (Hi, Wi) per image: the input's "height"/"width", else (hi, wi). Final
            outputs are in these pixels.
        scales: (sx, sy) per image, input pixels per original pixel (wi / Wi, hi / Hi).
    """

    images: ImageList
    original_sizes: List[Tuple[int, int]]
    scales: List[Tuple[float, float]]

    @property
    def image_sizes(self) -> List[Tuple[int, int]]:
        return list(self.images.image_sizes)

    def __len__(self) -> int:
        return len(self.images.image_sizes)

    def to_input(self, boxes: Tensor, image: int = 0) -> Tensor:
        """Boxes (M, 4) XYXY in original pixels of ``image`` -> input pixels (a new tensor)."""
        sx, sy = self.scales[image]
        return _scale_boxes(boxes, sx, sy)

    def to_original(self, boxes: Tensor, image: int = 0) -> Tensor:
        """Boxes (M, 4) XYXY in input pixels of ``image`` -> original pixels (a new tensor)."""
        sx, sy = self.scales[image]
        return _scale_boxes(boxes, 1.0 / sx, 1.0 / sy)

    def __repr__(self) -> str:
        return (f"Preprocessed(images={tuple(self.images.tensor.shape)}, "
                f"image_sizes={self.image_sizes}, original_sizes={self.original_sizes})")


def _scale_boxes(boxes: Tensor, sx: float, sy: float) -> Tensor:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"Expected boxes of shape (M, 4) XYXY, got {tuple(boxes.shape)}.")
    out = boxes.clone().to(torch.float32) if boxes.dtype != torch.float64 else boxes.clone()
    out[:, 0::2] *= sx
    out[:, 1::2] *= sy
    return out


def preprocess(model: nn.Module, batched_inputs: List[Dict[str, Any]]) -> Preprocessed:
    """Normalise and pad the images exactly as ``model(batched_inputs)`` does.

    Example::

        pre = preprocess(model, inputs)
        pre.images.tensor.shape          # (N, 3, Hp, Wp), what the backbone sees
        pre.to_input(boxes_in_photo, 0)  # map boxes from the photo into the network input

    Args:
        batched_inputs: the model's ``list[dict]`` ("image" (C, hi, wi) 0-255 in the model's
            channel order, optional "height"/"width").
    """
    if hasattr(model, "preprocess_image"):
        images = model.preprocess_image(batched_inputs)
    else:  # SemanticSegmentor normalises inline in its forward; same operations
        _check_batched_inputs(batched_inputs, model.pixel_mean.shape[0])
        tensors = [move_device_like(x["image"], model.pixel_mean) for x in batched_inputs]
        tensors = [(x - model.pixel_mean) / model.pixel_std for x in tensors]
        images = ImageList.from_tensors(tensors, model.backbone.size_divisibility,
                                        padding_constraints=model.backbone.padding_constraints)
    original_sizes, scales = [], []
    for x, (h, w) in zip(batched_inputs, images.image_sizes):
        oh, ow = int(x.get("height", h)), int(x.get("width", w))
        original_sizes.append((oh, ow))
        scales.append((w / ow, h / oh))
    return Preprocessed(images=images, original_sizes=original_sizes, scales=scales)


# -- backbone ----------------------------------------------------------------------------------

@dataclass
class BackboneOutput:
    """Feature maps of the padded batch.

    Attributes:
        features: name -> (N, C, Hp/stride, Wp/stride), what the heads see (FPN levels for
            FPN models, e.g. "p2".."p6"; "res4" for C4 models).
        bottom_up: for an FPN, the bottom-up network's maps ("res2".."res5"); None otherwise.
    """

    features: Dict[str, Tensor]
    bottom_up: Optional[Dict[str, Tensor]] = None

    def __getitem__(self, name: str) -> Tensor:
        if name in self.features:
            return self.features[name]
        if self.bottom_up is not None and name in self.bottom_up:
            return self.bottom_up[name]
        raise KeyError(f"No feature {name!r}; have {list(self.features)}"
                       + (f" and bottom-up {list(self.bottom_up)}" if self.bottom_up else "") + ".")

    def __repr__(self) -> str:
        s = "BackboneOutput(features=" + describe(self.features)
        if self.bottom_up is not None:
            s += ", bottom_up=" + describe(self.bottom_up)
        return s + ")"


def backbone(model: nn.Module, pre: Preprocessed) -> BackboneOutput:
    """Run ``model.backbone`` on the preprocessed batch (and keep the FPN's bottom-up maps).

    Example::

        feats = backbone(model, preprocess(model, inputs))
        feats["p2"].shape, feats["res5"].shape   # FPN level, bottom-up stage

    Raises:
        TypeError: if given anything but a :class:`Preprocessed` (a raw tensor would skip the
            normalisation and padding the model applies).
    """
    if not isinstance(pre, Preprocessed):
        raise TypeError(
            "backbone() takes the Preprocessed returned by workbench.inspect.stages.preprocess("
            f"model, inputs), got {type(pre).__name__}: feeding a tensor directly would skip the "
            "model's normalisation and padding (detectron2 #4421)."
        )
    bb = model.backbone
    if isinstance(getattr(bb, "bottom_up", None), nn.Module):
        with _outputs_of(bb.bottom_up) as calls:
            features = bb(pre.images.tensor)
        return BackboneOutput(features=features, bottom_up=calls[0] if len(calls) == 1 else None)
    return BackboneOutput(features=bb(pre.images.tensor))


# -- region proposal network -------------------------------------------------------------------

@dataclass
class RPNOutput:
    """Everything the RPN computed.

    Attributes:
        in_features: the feature names the RPN runs on, one per level.
        anchors: L ``Boxes`` of Hl*Wl*A anchors (the same for every image).
        objectness: L tensors (N, Hl*Wl*A), objectness logits; row order (y, x, anchor).
        deltas: L tensors (N, Hl*Wl*A, 4) anchor deltas.
        decoded: L tensors (N, Hl*Wl*A, 4): every anchor with its deltas applied (unclipped).
        proposals: per image, what NMS and top-k kept: what the ROI heads receive (fields
            ``proposal_boxes``, ``objectness_logits``, decreasing objectness).
        image_sizes: (hi, wi) per image, the clipping bounds.
        nms_thresh, pre_nms_topk, post_nms_topk, min_box_size: the settings used.
        candidates: (property) per image, the proposals NMS was run on: the top
            ``pre_nms_topk`` of each level, clipped, without non-finite or too small boxes.
            Fields ``proposal_boxes``, ``objectness_logits``, ``level`` (index into
            ``in_features``) and ``anchor_index`` (row in that level's anchors / objectness).
        proposal_candidate: (property) per image, (Ri,) row of ``candidates`` each proposal is
            (-1 if not found, which only happens with a custom proposal selection).

    The two properties are derived from the stored predictions on first access (and cached),
    so a trace that never looks at them does not pay for them.
    """

    in_features: List[str]
    anchors: List[Boxes]
    objectness: List[Tensor]
    deltas: List[Tensor]
    decoded: List[Tensor]
    proposals: List[Instances]
    image_sizes: List[Tuple[int, int]]
    nms_thresh: float
    pre_nms_topk: int
    post_nms_topk: int
    min_box_size: float
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def candidates(self) -> List[Instances]:
        if "candidates" not in self._cache:
            with torch.no_grad():
                self._cache["candidates"] = _rpn_candidates(
                    self.decoded, self.objectness, self.image_sizes, self.pre_nms_topk,
                    self.min_box_size)
        return self._cache["candidates"]

    @property
    def proposal_candidate(self) -> List[Tensor]:
        if "matched" not in self._cache:
            def rows(inst):  # (M, 5): objectness first, the search key
                return torch.cat([inst.objectness_logits[:, None], inst.proposal_boxes.tensor], dim=1)

            with torch.no_grad():
                self._cache["matched"] = [_match_rows(rows(p), rows(c))
                                          for p, c in zip(self.proposals, self.candidates)]
        return self._cache["matched"]

    def proposal_level(self, image: int = 0) -> Tensor:
        """(Ri,) level (index into ``in_features``) of each proposal of ``image``, -1 if unknown."""
        return _gather_or_missing(self.candidates[image].level, self.proposal_candidate[image])

    def proposal_anchor(self, image: int = 0) -> Tensor:
        """(Ri,) anchor row (within its level) of each proposal of ``image``, -1 if unknown."""
        return _gather_or_missing(self.candidates[image].anchor_index,
                                  self.proposal_candidate[image])

    def __repr__(self) -> str:
        cand = f", candidates={[len(c) for c in self._cache['candidates']]}" \
            if "candidates" in self._cache else ""
        return (f"RPNOutput(levels={self.in_features}, anchors={[len(a) for a in self.anchors]}, "
                f"objectness={describe(self.objectness)}{cand}, "
                f"proposals={[len(p) for p in self.proposals]})")


def _gather_or_missing(values: Tensor, index: Tensor) -> Tensor:
    out = values[index.clamp(min=0)] if len(values) else torch.zeros_like(index)
    return torch.where(index >= 0, out, torch.full_like(out, -1))


def _match_rows(query: Tensor, pool: Tensor) -> Tensor:
    """For each row of ``query`` (Q, D), the smallest index of an equal row of ``pool`` (P, D), or -1.

    Column 0 (a score) is the search key: rows are looked up by binary search on it and
    compared in full, so this costs O((P + Q) log P) unless many keys tie.
    """
    device = query.device
    result = torch.full((query.shape[0],), -1, dtype=torch.int64, device=device)
    if query.shape[0] == 0 or pool.shape[0] == 0:
        return result
    keys, order = pool[:, 0].sort(stable=True)
    q = query[:, 0].contiguous()
    lo = torch.searchsorted(keys, q, right=False)
    hi = torch.searchsorted(keys, q, right=True)
    count = hi - lo
    one = (count == 1).nonzero()[:, 0]
    idx = order[lo[one]]
    ok = (pool[idx] == query[one]).all(dim=1)
    result[one[ok]] = idx[ok]
    tied = (count > 1).nonzero()[:, 0]
    if len(tied):
        n = count[tied]
        rep = torch.repeat_interleave(tied, n)  # one entry per (query, candidate) pair
        start = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        cand = order[lo[rep] + torch.arange(len(rep), device=device) - start]
        eq = (pool[cand] == query[rep]).all(dim=1)
        best = torch.full_like(result, pool.shape[0])
        best.scatter_reduce_(0, rep[eq], cand[eq], reduce="amin")
        found = best[tied] < pool.shape[0]
        result[tied[found]] = best[tied[found]]
    return result


def _rpn_candidates(decoded: List[Tensor], objectness: List[Tensor],
                    image_sizes: List[Tuple[int, int]], pre_nms_topk: int,
                    min_box_size: float) -> List[Instances]:
    """Steps 1-3 of ``find_top_rpn_proposals`` up to the NMS, keeping level and anchor indices."""
    num_images = len(image_sizes)
    device = decoded[0].device
    batch_idx = torch.arange(num_images, device=device)
    scores, boxes, levels, anchor_idx = [], [], [], []
    for level, (boxes_l, logits_l) in enumerate(zip(decoded, objectness)):
        k = min(logits_l.shape[1], pre_nms_topk)
        s, idx = logits_l.topk(k, dim=1)  # (N, k)
        scores.append(s)
        boxes.append(boxes_l[batch_idx[:, None], idx])  # (N, Hl*Wl*A, 4) at (N, k) -> (N, k, 4)
        anchor_idx.append(idx)
        levels.append(torch.full((k,), level, dtype=torch.int64, device=device))
    scores, boxes, anchor_idx = cat(scores, dim=1), cat(boxes, dim=1), cat(anchor_idx, dim=1)
    levels = cat(levels, dim=0)
    out = []
    for n, size in enumerate(image_sizes):
        b, s, lvl, a = Boxes(boxes[n]), scores[n], levels, anchor_idx[n]
        valid = torch.isfinite(b.tensor).all(dim=1) & torch.isfinite(s)
        if not valid.all():
            b, s, lvl, a = b[valid], s[valid], lvl[valid], a[valid]
        b.clip(size)
        keep = b.nonempty(threshold=min_box_size)
        out.append(Instances(size, proposal_boxes=b[keep], objectness_logits=s[keep],
                             level=lvl[keep], anchor_index=a[keep]))
    return out


def select_proposals(rpn_out: RPNOutput, image_sizes: List[Tuple[int, int]], *,
                     nms_thresh: Optional[float] = None, pre_nms_topk: Optional[int] = None,
                     post_nms_topk: Optional[int] = None,
                     min_box_size: Optional[float] = None) -> RPNOutput:
    """Redo the RPN's top-k / NMS / top-k from its stored predictions, with other settings.

    Example::

        props = rpn(model, pre, feats)
        fewer = select_proposals(props, pre.image_sizes, post_nms_topk=100, nms_thresh=0.5)
        fewer.proposals[0]               # == what the model gives with those settings

    Returns:
        A new :class:`RPNOutput` sharing anchors and predictions with ``rpn_out``.
    """
    nms = rpn_out.nms_thresh if nms_thresh is None else float(nms_thresh)
    pre_k = rpn_out.pre_nms_topk if pre_nms_topk is None else int(pre_nms_topk)
    post_k = rpn_out.post_nms_topk if post_nms_topk is None else int(post_nms_topk)
    min_size = rpn_out.min_box_size if min_box_size is None else float(min_box_size)
    with torch.no_grad():
        proposals = find_top_rpn_proposals(rpn_out.decoded, rpn_out.objectness, image_sizes, nms,
                                           pre_k, post_k, min_size, False)
    return RPNOutput(in_features=rpn_out.in_features, anchors=rpn_out.anchors,
                     objectness=rpn_out.objectness, deltas=rpn_out.deltas, decoded=rpn_out.decoded,
                     proposals=proposals, image_sizes=list(image_sizes), nms_thresh=nms,
                     pre_nms_topk=pre_k, post_nms_topk=post_k, min_box_size=min_size)


def rpn(model: nn.Module, pre: Preprocessed, feats: BackboneOutput) -> RPNOutput:
    """Run the model's RPN stage by stage: anchors, head, decoding, top-k / NMS.

    Example::

        props = rpn(model, pre, feats)
        props.proposals[0].proposal_boxes    # what the ROI heads get
        props.proposal_level(0), props.proposal_anchor(0)   # where each proposal came from

    Raises:
        TypeError: if the model's proposal generator is not an ``RPN``.
    """
    gen = model.proposal_generator
    if not isinstance(gen, RPN):
        raise TypeError(f"rpn() needs model.proposal_generator to be an RPN, got "
                        f"{type(gen).__name__}.")
    missing = [f for f in gen.in_features if f not in feats.features]
    if missing:
        raise KeyError(f"RPN expects features {gen.in_features}; missing {missing} "
                       f"(got {list(feats.features)}).")
    features = [feats.features[f] for f in gen.in_features]
    anchors = gen.anchor_generator(features)
    objectness, deltas = gen.rpn_head(features)
    # (N, A, Hl, Wl) -> (N, Hl, Wl, A) -> (N, Hl*Wl*A), as RPN.forward
    objectness = [score.permute(0, 2, 3, 1).flatten(1) for score in objectness]
    B = gen.anchor_generator.box_dim
    # (N, A*B, Hl, Wl) -> (N, A, B, Hl, Wl) -> (N, Hl, Wl, A, B) -> (N, Hl*Wl*A, B)
    deltas = [x.view(x.shape[0], -1, B, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
              for x in deltas]
    with torch.no_grad():
        decoded = gen._decode_proposals(anchors, deltas)
    partial = RPNOutput(in_features=list(gen.in_features), anchors=anchors, objectness=objectness,
                        deltas=deltas, decoded=decoded, proposals=[], image_sizes=pre.image_sizes,
                        nms_thresh=gen.nms_thresh,
                        pre_nms_topk=gen.pre_nms_topk[gen.training],
                        post_nms_topk=gen.post_nms_topk[gen.training], min_box_size=gen.min_box_size)
    return select_proposals(partial, pre.image_sizes)


# -- ROI box head ------------------------------------------------------------------------------

class LazyPooled:
    """Pooled ROI features of a list of boxes, kept, or recomputed when first read.

    ROI pooling is computed box by box, so recomputing gives the very numbers the head saw
    (also for a subset of the boxes). Not keeping them saves memory (R x C x P x P floats: 50 MB
    per image for a model-zoo FPN) and the page faults of a larger peak, which would otherwise
    be most of a trace's cost. They are kept when autograd is on, so that the graph is intact.
    """

    def __init__(self, pool: Callable[[List[Boxes]], Tensor], boxes: List[Boxes],
                 value: Optional[Tensor] = None) -> None:
        self._pool, self._boxes, self._value = pool, boxes, value

    @property
    def computed(self) -> bool:
        return self._value is not None

    def all(self) -> Tensor:
        """(R, C, P, P), image 0's boxes first (computed once, then kept)."""
        if self._value is None:
            with torch.no_grad():
                self._value = self._pool(self._boxes)
        return self._value

    def rows(self, image: int, index: Tensor) -> Tensor:
        """(M, C, P, P) for boxes ``index`` of ``image`` (only those are pooled if not kept)."""
        if self._value is not None:
            offset = sum(len(b) for b in self._boxes[:image])
            return self._value[index + offset]
        subset = [b[index] if i == image else b[:0] for i, b in enumerate(self._boxes)]
        with torch.no_grad():
            return self._pool(subset)

    def __repr__(self) -> str:
        n = sum(len(b) for b in self._boxes)
        return describe(self._value) if self._value is not None else f"({n}, ...) on demand"



@dataclass
class BoxStage:
    """One pass of pooler -> box head -> box predictor (a cascade has one per stage).

    Attributes:
        proposals: per image, the ROIs of this pass (``proposal_boxes``).
        pooled: (property) (R, C, P, P) pooled ROI features, image 0's ROIs first; see
            :class:`LazyPooled` (``pool``) for when they are kept or recomputed.
        pooler_level: (R,) index of the feature map each ROI was pooled from (None with one map).
        embeddings: (R, D) box-head output (for C4 models: res5 output averaged over space).
        logits: (R, K+1) class logits, background last.
        deltas: (R, K*4) class-specific (or (R, 4) class-agnostic) box deltas.
        boxes: per image (Ri, K*4 or 4) decoded boxes, not clipped.
        probs: per image (Ri, K+1) class probabilities.
    """

    proposals: List[Instances]
    pool: LazyPooled
    pooler_level: Optional[Tensor]
    embeddings: Tensor
    logits: Tensor
    deltas: Tensor
    boxes: List[Tensor]
    probs: List[Tensor]

    @property
    def pooled(self) -> Tensor:
        return self.pool.all()

    def pooled_rows(self, image: int, rois: Tensor) -> Tensor:
        """(M, C, P, P) pooled features of ROIs ``rois`` of ``image``."""
        return self.pool.rows(image, rois)

    def __repr__(self) -> str:
        return _repr_block("BoxStage", self, ["proposals", "pool", "embeddings", "logits", "deltas"])


@dataclass
class BoxOutput:
    """The box branch of the ROI heads: per-ROI predictions and what survived thresholds and NMS.

    Attributes:
        stages: one :class:`BoxStage`, or one per cascade stage.
        scores: per image (Ri, K+1) the probabilities inference used (cascade: stage mean).
        boxes: per image (Ri, K*4 or 4) the boxes inference used (cascade: last stage).
        candidates: per image (Ci, 2) the (ROI, class) pairs scoring above ``score_thresh``, in
            row-major order: what the per-class NMS was run on.
        nms_kept: per image (Ci,) bool, True where the candidate survived NMS (before top-k).
        instances: per image, the detections (``pred_boxes``, ``scores``, ``pred_classes``),
            at most ``topk`` of them, decreasing score.
        roi_index: per image (Di,) the ROI (row of ``proposals``) each detection came from.
        score_thresh, nms_thresh, topk: the settings used.
    """

    stages: List[BoxStage]
    scores: List[Tensor]
    boxes: List[Tensor]
    candidates: List[Tensor]
    nms_kept: List[Tensor]
    instances: List[Instances]
    roi_index: List[Tensor]
    score_thresh: float
    nms_thresh: float
    topk: int

    @property
    def proposals(self) -> List[Instances]:
        """The ROIs of the first stage: the proposals the heads were given."""
        return self.stages[0].proposals

    def nms_report(self, image: int = 0, cls: Optional[int] = None) -> Dict[str, Tensor]:
        """What the per-class NMS of ``image`` saw and kept, optionally for class ``cls`` only.

        Returns:
            {"roi": (M,), "class": (M,), "score": (M,), "kept": (M,) bool}.
        """
        cand = self.candidates[image]
        scores = self.scores[image]
        score = scores[cand[:, 0], cand[:, 1]] if len(cand) else scores.new_zeros(0)
        sel = slice(None) if cls is None else cand[:, 1] == cls
        return {"roi": cand[sel, 0], "class": cand[sel, 1], "score": score[sel],
                "kept": self.nms_kept[image][sel]}

    def __repr__(self) -> str:
        st = ", ".join(repr(s) for s in self.stages)
        return (f"BoxOutput(stages=[{st}], candidates={[len(c) for c in self.candidates]}, "
                f"kept_by_nms={[int(k.sum()) for k in self.nms_kept]}, "
                f"detections={[len(i) for i in self.instances]}, score_thresh={self.score_thresh}, "
                f"nms_thresh={self.nms_thresh}, topk={self.topk})")


def _pooler_levels(pooler, boxes: List[Boxes]) -> Optional[Tensor]:
    if len(pooler.level_poolers) == 1:
        return None
    if sum(len(b) for b in boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes[0].tensor.device if boxes else None)
    return assign_boxes_to_levels(boxes, pooler.min_level, pooler.max_level,
                                  pooler.canonical_box_size, pooler.canonical_level)


def _box_pass(pooler, head: nn.Module, predictor: nn.Module, features: List[Tensor],
              proposals: List[Instances]) -> BoxStage:
    """pooler -> box head -> predictor, as ``StandardROIHeads._forward_box`` (eval)."""
    boxes = [x.proposal_boxes for x in proposals]
    pooled = pooler(features, boxes)
    embeddings = head(pooled)  # (R, C, P, P) -> (R, D)
    logits, deltas = predictor(embeddings)
    pool = LazyPooled(lambda b: pooler(features, b), boxes,
                      pooled if torch.is_grad_enabled() else None)
    return BoxStage(proposals=proposals, pool=pool, pooler_level=_pooler_levels(pooler, boxes),
                    embeddings=embeddings, logits=logits, deltas=deltas,
                    boxes=list(predictor.predict_boxes((logits, deltas), proposals)),
                    probs=list(predictor.predict_probs((logits, deltas), proposals)))


def _settings(predictor, score_thresh, nms_thresh, topk) -> Tuple[float, float, int]:
    return (predictor.test_score_thresh if score_thresh is None else float(score_thresh),
            predictor.test_nms_thresh if nms_thresh is None else float(nms_thresh),
            predictor.test_topk_per_image if topk is None else int(topk))


def box_inference(boxes: List[Tensor], scores: List[Tensor], image_sizes: List[Tuple[int, int]],
                  score_thresh: float, nms_thresh: float, topk: int
                  ) -> Tuple[List[Instances], List[Tensor], List[Tensor], List[Tensor]]:
    """``fast_rcnn_inference`` with bookkeeping: candidates, NMS survivors, ROI of each detection.

    Example::

        b = tr.box
        inst, rois, cand, kept = box_inference(b.boxes, b.scores, tr.preprocess.image_sizes,
                                               0.3, 0.5, 100)

    Runs ``fast_rcnn_inference_single_image`` without its top-k and applies the top-k after,
    which selects the same detections (NMS output is sorted by score).

    Returns:
        instances, roi_index, candidates, nms_kept: see :class:`BoxOutput`.
    """
    instances, roi_index, candidates, nms_kept = [], [], [], []
    for b, s, size in zip(boxes, scores, image_sizes):
        result, rois = fast_rcnn_inference_single_image(b, s, size, score_thresh, nms_thresh, -1)
        valid = torch.isfinite(b).all(dim=1) & torch.isfinite(s).all(dim=1)
        valid_rows = None if bool(valid.all()) else valid.nonzero()[:, 0]
        s_valid = s if valid_rows is None else s[valid_rows]
        filter_mask = s_valid[:, :-1] > score_thresh  # (R', K)
        cand = filter_mask.nonzero()  # (C, 2) as the function builds it
        cand_id = torch.full(filter_mask.shape, -1, dtype=torch.int64, device=s.device)
        cand_id[filter_mask] = torch.arange(cand.shape[0], device=s.device)
        kept = torch.zeros(cand.shape[0], dtype=torch.bool, device=s.device)
        kept[cand_id[rois, result.pred_classes]] = True
        if valid_rows is not None:  # the function counts valid ROIs only; map back to all ROIs
            rois = valid_rows[rois]
            cand = torch.stack([valid_rows[cand[:, 0]], cand[:, 1]], dim=1)
        if topk >= 0:
            result, rois = result[:topk], rois[:topk]
        instances.append(result)
        roi_index.append(rois)
        candidates.append(cand)
        nms_kept.append(kept)
    return instances, roi_index, candidates, nms_kept


def box_head(model: nn.Module, feats: BackboneOutput, proposals: List[Instances], *,
             score_thresh: Optional[float] = None, nms_thresh: Optional[float] = None,
             topk: Optional[int] = None) -> BoxOutput:
    """Run the box branch of ``model.roi_heads`` on ``proposals`` (any ROIs you like).

    Works for ``StandardROIHeads`` (FPN), ``Res5ROIHeads`` (C4) and ``CascadeROIHeads`` (one
    :class:`BoxStage` per stage, scores averaged over stages as the model does).

    Example::

        box = box_head(model, feats, props.proposals)
        box.stages[-1].embeddings            # (R, D): the box-head vector of every ROI
        box.instances[0], box.roi_index[0]   # detections and the ROI each came from

    Args:
        proposals: per image, Instances with ``proposal_boxes`` in input pixels (and
            ``objectness_logits`` for a cascade; zeros are used when absent).
        score_thresh, nms_thresh, topk: override the predictor's test settings.
    """
    heads = model.roi_heads
    if len(proposals) != len(next(iter(feats.features.values()))):
        raise ValueError(f"Got proposals for {len(proposals)} images, but the features hold "
                         f"{len(next(iter(feats.features.values())))}.")
    proposals = [_as_proposals(p, i) for i, p in enumerate(proposals)]
    image_sizes = [p.image_size for p in proposals]
    cascade = _cascade_cls()
    if cascade is not None and isinstance(heads, cascade):
        features = [feats.features[f] for f in heads.box_in_features]
        stages: List[BoxStage] = []
        stage_props = proposals
        for k in range(heads.num_cascade_stages):
            if k > 0:
                stage_props = heads._create_proposals_from_boxes(
                    stages[-1].boxes, image_sizes,
                    logits=[p.objectness_logits for p in stage_props])
            stages.append(_box_pass(heads.box_pooler, heads.box_head[k], heads.box_predictor[k],
                                    features, stage_props))
        # S x N x (Ri, K+1) -> N x (Ri, K+1), written as CascadeROIHeads._forward_box does.
        scores = [sum(list(per_image)) * (1.0 / heads.num_cascade_stages)
                  for per_image in zip(*[s.probs for s in stages])]
        predictor = heads.box_predictor[-1]
    elif isinstance(heads, StandardROIHeads):
        features = [feats.features[f] for f in heads.box_in_features]
        stages = [_box_pass(heads.box_pooler, heads.box_head, heads.box_predictor, features, proposals)]
        scores, predictor = stages[0].probs, heads.box_predictor
    elif isinstance(heads, Res5ROIHeads):
        boxes = [x.proposal_boxes for x in proposals]
        in_maps = [feats.features[f] for f in heads.in_features]
        pooled = heads.pooler(in_maps, boxes)
        embeddings = heads.res5(pooled).mean(dim=[2, 3])  # (R, 2C, P/2, P/2) -> (R, 2C)
        predictor = heads.box_predictor
        logits, deltas = predictor(embeddings)
        pool = LazyPooled(lambda b: heads.pooler(in_maps, b), boxes,
                          pooled if torch.is_grad_enabled() else None)
        stages = [BoxStage(proposals=proposals, pool=pool, pooler_level=None,
                           embeddings=embeddings, logits=logits, deltas=deltas,
                           boxes=list(predictor.predict_boxes((logits, deltas), proposals)),
                           probs=list(predictor.predict_probs((logits, deltas), proposals)))]
        scores = stages[0].probs
    else:
        raise TypeError(f"box_head() supports StandardROIHeads, Res5ROIHeads and CascadeROIHeads, "
                        f"got {type(heads).__name__}.")
    if not _is_stock(predictor, FastRCNNOutputLayers, "inference"):
        raise TypeError(f"{type(predictor).__name__} overrides FastRCNNOutputLayers.inference; the "
                        "trace cannot reproduce its detections.")
    st, nt, k = _settings(predictor, score_thresh, nms_thresh, topk)
    boxes = stages[-1].boxes
    instances, roi_index, candidates, kept = box_inference(boxes, scores, image_sizes, st, nt, k)
    return BoxOutput(stages=stages, scores=scores, boxes=boxes, candidates=candidates,
                     nms_kept=kept, instances=instances, roi_index=roi_index,
                     score_thresh=st, nms_thresh=nt, topk=k)


def _as_proposals(p: Instances, i: int) -> Instances:
    if not isinstance(p, Instances) or not p.has("proposal_boxes"):
        got = list(p.get_fields()) if isinstance(p, Instances) else type(p).__name__
        raise ValueError(f"proposals[{i}] must be an Instances with 'proposal_boxes' (Boxes, XYXY "
                         f"input pixels), got {got}.")
    if not p.has("objectness_logits"):
        p = _copy_instances(p)
        p.objectness_logits = torch.zeros(len(p), device=p.proposal_boxes.tensor.device)
    return p


# -- mask and keypoint heads -------------------------------------------------------------------

@dataclass
class MaskOutput:
    """The mask head on the detections.

    Attributes:
        pooled: (property) (D, C, S, S) pooled features of the detection boxes (None without a
            pooler; for C4 models the res5 output of the crops), see :class:`LazyPooled`.
        logits: (D, K, M, M) raw mask logits of every class (M = 28 by default); None for a
            custom head that only exposes ``forward``.
        instances: per image, the detections with ``pred_masks`` (Di, 1, M, M) probabilities of
            the predicted class, in the box frame.
    """

    pool: Optional[LazyPooled]
    logits: Optional[Tensor]
    instances: List[Instances]

    @property
    def pooled(self) -> Optional[Tensor]:
        return None if self.pool is None else self.pool.all()

    def __repr__(self) -> str:
        return _repr_block("MaskOutput", self, ["pool", "logits", "instances"])


@dataclass
class KeypointOutput:
    """The keypoint head on the detections.

    Attributes:
        pooled: (property) (D, C, S, S) pooled features of the detection boxes (None without a
            pooler), see :class:`LazyPooled`.
        heatmaps: (D, K, M, M) heatmap logits (K keypoints, M = 56 by default).
        instances: per image, the detections with ``pred_keypoints`` (Di, K, 3) as (x, y, score)
            in input pixels, and ``pred_keypoint_heatmaps``.
    """

    pool: Optional[LazyPooled]
    heatmaps: Optional[Tensor]
    instances: List[Instances]

    @property
    def pooled(self) -> Optional[Tensor]:
        return None if self.pool is None else self.pool.all()

    def __repr__(self) -> str:
        return _repr_block("KeypointOutput", self, ["pool", "heatmaps", "instances"])


def _check_detections(instances: List[Instances]) -> None:
    for i, x in enumerate(instances):
        if not (isinstance(x, Instances) and x.has("pred_boxes") and x.has("pred_classes")):
            got = list(x.get_fields()) if isinstance(x, Instances) else type(x).__name__
            raise ValueError(f"instances[{i}] must be an Instances with 'pred_boxes' and "
                             f"'pred_classes' (input pixels), got {got}.")


def mask_head(model: nn.Module, feats: BackboneOutput, instances: List[Instances]) -> MaskOutput:
    """Run the mask head on detections, as ``roi_heads.forward_with_given_boxes`` does.

    Example::

        m = mask_head(model, feats, box.instances)
        m.logits.shape                        # (D, K, 28, 28) raw logits of every class
        m.instances[0].pred_masks             # (D0, 1, 28, 28) probabilities of the class

    Returns:
        A :class:`MaskOutput`; the given instances are not modified (copies get the masks).
        Without a mask head: pooled / logits None and the instances unchanged.
    """
    _check_detections(instances)
    heads = model.roi_heads
    instances = [_copy_instances(x) for x in instances]
    if not getattr(heads, "mask_on", False):
        return MaskOutput(pool=None, logits=None, instances=instances)
    boxes = [x.pred_boxes for x in instances]
    pool = None
    if isinstance(heads, Res5ROIHeads):
        # res5 runs on the crops: kept (a conv over another batch need not give the same bits)
        in_maps = [feats.features[f] for f in heads.in_features]
        x: Any = heads.res5(heads.pooler(in_maps, boxes))
        pool = LazyPooled(lambda b: heads.res5(heads.pooler(in_maps, b)), boxes, x)
    elif heads.mask_pooler is not None:
        in_maps = [feats.features[f] for f in heads.mask_in_features]
        x = heads.mask_pooler(in_maps, boxes)
        pool = LazyPooled(lambda b: heads.mask_pooler(in_maps, b), boxes,
                          x if torch.is_grad_enabled() else None)
    else:
        x = {f: feats.features[f] for f in heads.mask_in_features}
    head = heads.mask_head
    if _is_stock(head, BaseMaskRCNNHead, "forward"):
        logits = head.layers(x)
        mask_rcnn_inference(logits, instances)
        return MaskOutput(pool=pool, logits=logits, instances=instances)
    return MaskOutput(pool=pool, logits=None, instances=head(x, instances))


def keypoint_head(model: nn.Module, feats: BackboneOutput,
                  instances: List[Instances]) -> KeypointOutput:
    """Run the keypoint head on detections, as ``roi_heads.forward_with_given_boxes`` does.

    Example::

        kp = keypoint_head(model, feats, box.instances)
        kp.heatmaps.shape                     # (D, 17, 56, 56)
        kp.instances[0].pred_keypoints        # (D0, 17, 3): x, y, score in input pixels

    Returns:
        A :class:`KeypointOutput`; the given instances are not modified.
    """
    _check_detections(instances)
    heads = model.roi_heads
    instances = [_copy_instances(x) for x in instances]
    if not getattr(heads, "keypoint_on", False):
        return KeypointOutput(pool=None, heatmaps=None, instances=instances)
    boxes = [x.pred_boxes for x in instances]
    pool = None
    if heads.keypoint_pooler is not None:
        in_maps = [feats.features[f] for f in heads.keypoint_in_features]
        x: Any = heads.keypoint_pooler(in_maps, boxes)
        pool = LazyPooled(lambda b: heads.keypoint_pooler(in_maps, b), boxes,
                          x if torch.is_grad_enabled() else None)
    else:
        x = {f: feats.features[f] for f in heads.keypoint_in_features}
    head = heads.keypoint_head
    if _is_stock(head, BaseKeypointRCNNHead, "forward"):
        heatmaps = head.layers(x)
        keypoint_rcnn_inference(heatmaps, instances)
        return KeypointOutput(pool=pool, heatmaps=heatmaps, instances=instances)
    return KeypointOutput(pool=pool, heatmaps=None, instances=head(x, instances))


# -- dense (one-stage) detectors ---------------------------------------------------------------

@dataclass
class DenseOutput:
    """Everything a RetinaNet-style detector computed.

    Attributes:
        in_features: the feature names of the L levels.
        anchors: L ``Boxes`` of Hl*Wl*A anchors.
        logits: L tensors (N, Hl*Wl*A, K) class logits (sigmoid gives the scores).
        deltas: L tensors (N, Hl*Wl*A, 4).
        head_features: L tensors (N, C, Hl, Wl), the classification tower's output (the last
            hidden layer before ``cls_score``); None if the head has no ``cls_subnet``.
        candidates: per image, what NMS was run on: the ``topk_candidates`` best (anchor,
            class) pairs above ``score_thresh`` of each level, decoded (``pred_boxes``,
            ``scores``, ``pred_classes``).
        candidate_level, candidate_anchor: per image (Ci,) level and anchor row of each candidate.
        nms_kept: per image (Ci,) bool, survived the class-wise NMS (before the top-k).
        instances: per image, the detections.
        det_candidate: per image (Di,) candidate row of each detection.
        score_thresh, nms_thresh, topk, topk_candidates: the settings used.
    """

    in_features: List[str]
    anchors: List[Boxes]
    logits: List[Tensor]
    deltas: List[Tensor]
    head_features: Optional[List[Tensor]]
    candidates: List[Instances]
    candidate_level: List[Tensor]
    candidate_anchor: List[Tensor]
    nms_kept: List[Tensor]
    instances: List[Instances]
    det_candidate: List[Tensor]
    score_thresh: float
    nms_thresh: float
    topk: int
    topk_candidates: int

    def __repr__(self) -> str:
        return (f"DenseOutput(levels={self.in_features}, anchors={[len(a) for a in self.anchors]}, "
                f"logits={describe(self.logits)}, candidates={[len(c) for c in self.candidates]}, "
                f"detections={[len(i) for i in self.instances]})")


def dense_head(model: nn.Module, pre: Preprocessed, feats: BackboneOutput, *,
               score_thresh: Optional[float] = None, nms_thresh: Optional[float] = None,
               topk: Optional[int] = None, topk_candidates: Optional[int] = None) -> DenseOutput:
    """Run a RetinaNet's head and inference, keeping anchors, logits and candidates.

    Example::

        d = dense_head(model, pre, feats)
        d.logits[0].shape                     # (N, H3*W3*A, K) on the first level
        d.instances[0], d.det_candidate[0]    # detections and the candidate each came from
    """
    features = [feats.features[f] for f in model.head_in_features]
    if isinstance(getattr(model.head, "cls_subnet", None), nn.Module):
        with _outputs_of(model.head.cls_subnet) as head_features:
            predictions = model.head(features)
    else:
        predictions, head_features = model.head(features), None
    # L x (N, A*K, Hl, Wl) -> L x (N, Hl*Wl*A, K); same for the deltas with 4.
    logits, deltas = model._transpose_dense_predictions(predictions, [model.num_classes, 4])
    anchors = model.anchor_generator(features)
    partial = DenseOutput(in_features=list(model.head_in_features), anchors=anchors, logits=logits,
                          deltas=deltas, head_features=head_features, candidates=[],
                          candidate_level=[], candidate_anchor=[], nms_kept=[], instances=[],
                          det_candidate=[], score_thresh=model.test_score_thresh,
                          nms_thresh=model.test_nms_thresh, topk=model.max_detections_per_image,
                          topk_candidates=model.test_topk_candidates)
    return dense_inference(model, partial, pre.image_sizes, score_thresh=score_thresh,
                           nms_thresh=nms_thresh, topk=topk, topk_candidates=topk_candidates)


def dense_inference(model: nn.Module, dense: DenseOutput, image_sizes: List[Tuple[int, int]], *,
                    score_thresh: Optional[float] = None, nms_thresh: Optional[float] = None,
                    topk: Optional[int] = None, topk_candidates: Optional[int] = None) -> DenseOutput:
    """Redo a dense detector's inference from stored logits and deltas, optionally with new settings.

    Example::

        tr = trace(model, inputs)
        d2 = dense_inference(model, tr.dense, tr.preprocess.image_sizes, score_thresh=0.3)
        d2.instances[0]                       # == RetinaNet with test_score_thresh=0.3
    """
    st = dense.score_thresh if score_thresh is None else float(score_thresh)
    nt = dense.nms_thresh if nms_thresh is None else float(nms_thresh)
    k = dense.topk if topk is None else int(topk)
    kc = dense.topk_candidates if topk_candidates is None else int(topk_candidates)
    cands, levels, anchor_rows, kept_all, instances, det_cand = [], [], [], [], [], []
    for img, size in enumerate(image_sizes):
        scores = [x[img].sigmoid() for x in dense.logits]  # L x (Hl*Wl*A, K)
        deltas = [x[img] for x in dense.deltas]  # L x (Hl*Wl*A, 4)
        pred = model._decode_multi_level_predictions(dense.anchors, scores, deltas, st, kc, size)
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, nt)
        # The same selection as _decode_per_level_predictions, with the anchor rows kept.
        lvl_ids, rows, sel_scores = [], [], []
        for level, s in enumerate(scores):
            mask = s > st
            s_kept = s[mask]
            idx = torch.nonzero(mask)  # (M, 2): (anchor row, class)
            s_kept, order = s_kept.topk(min(kc, idx.shape[0]))
            sel_scores.append(s_kept)
            rows.append(idx[order][:, 0])
            lvl_ids.append(torch.full((len(order),), level, dtype=torch.int64, device=s.device))
        rows_t, lvl_t = cat(rows, dim=0), cat(lvl_ids, dim=0)
        if not torch.equal(cat(sel_scores, dim=0), pred.scores):  # a custom decoding: unknown
            rows_t = torch.full((len(pred),), -1, dtype=torch.int64, device=pred.scores.device)
            lvl_t = rows_t.clone()
        kept = torch.zeros(len(pred), dtype=torch.bool, device=pred.scores.device)
        kept[keep] = True
        sel = keep[:k]
        cands.append(pred)
        levels.append(lvl_t)
        anchor_rows.append(rows_t)
        kept_all.append(kept)
        instances.append(pred[sel])
        det_cand.append(sel)
    return DenseOutput(in_features=dense.in_features, anchors=dense.anchors, logits=dense.logits,
                       deltas=dense.deltas, head_features=dense.head_features, candidates=cands,
                       candidate_level=levels, candidate_anchor=anchor_rows, nms_kept=kept_all,
                       instances=instances, det_candidate=det_cand, score_thresh=st, nms_thresh=nt,
                       topk=k, topk_candidates=kc)


# -- semantic segmentation ---------------------------------------------------------------------

@dataclass
class SemSegOutput:
    """Attributes:
        logits: (N, C, Hp, Wp) semantic logits of the padded batch.
    """

    logits: Tensor

    def __repr__(self) -> str:
        return f"SemSegOutput(logits={describe(self.logits)})"


def sem_seg_head(model: nn.Module, feats: BackboneOutput) -> SemSegOutput:
    """Run ``model.sem_seg_head`` (Panoptic FPN, SemanticSegmentor) in inference mode.

    Example::

        feats = backbone(model, preprocess(model, inputs))
        seg = sem_seg_head(model, feats)
        seg.logits.argmax(1)                  # (N, Hp, Wp) class ids of the padded batch
    """
    logits, _ = model.sem_seg_head(feats.features, None)
    return SemSegOutput(logits=logits)


# -- postprocessing ----------------------------------------------------------------------------

def _with_index(inst: Instances) -> Instances:
    """A copy safe to postprocess (which scales boxes and keypoints in place) + a row index."""
    fields = dict(inst.get_fields())
    for name in ("pred_boxes", "proposal_boxes"):
        if name in fields:
            fields[name] = Boxes(fields[name].tensor.clone())
    if "pred_keypoints" in fields:
        fields["pred_keypoints"] = fields["pred_keypoints"].clone()
    out = Instances(inst.image_size, **fields)
    device = next((v.device for v in fields.values() if isinstance(v, Tensor)), None)
    if device is None:
        device = next(iter(fields.values())).tensor.device
    out.set("_trace_row", torch.arange(len(inst), device=device))
    return out


def _postprocess_one(inst: Instances, height: int, width: int) -> Tuple[Instances, Tensor]:
    r = detector_postprocess(_with_index(inst), height, width)
    row = r.get("_trace_row")
    r.remove("_trace_row")
    return r, row


def postprocess(model: nn.Module, pre: Preprocessed, batched_inputs: Optional[List[Dict]] = None, *,
                instances: Optional[List[Instances]] = None, proposals: Optional[List[Instances]] = None,
                sem_seg: Optional[Tensor] = None) -> Tuple[List[Dict[str, Any]], List[Optional[Tensor]]]:
    """Turn raw predictions into what ``model(inputs)`` returns, at the original resolution.

    Example::

        outputs, rows = postprocess(model, pre, instances=kp.instances)
        outputs[0]["instances"]               # == model(inputs)[0]["instances"]
        rows[0]                               # raw detection row of each output detection

    Args:
        batched_inputs: unused (the sizes are in ``pre``); accepted for symmetry with the model.
        instances: per image raw detections (GeneralizedRCNN, Panoptic FPN, RetinaNet).
        proposals: per image proposals (ProposalNetwork).
        sem_seg: (N, C, Hp, Wp) semantic logits (Panoptic FPN, SemanticSegmentor).

    Returns:
        outputs: one dict per image, as the model returns them.
        rows: per image (Oi,) row of the raw instances each output instance is (postprocessing
            drops boxes that become empty), None where there are no instances.
    """
    del batched_inputs
    arch = architecture(model)
    outputs: List[Dict[str, Any]] = []
    rows: List[Optional[Tensor]] = []
    for i, (image_size, (height, width)) in enumerate(zip(pre.image_sizes, pre.original_sizes)):
        if arch == "rpn":
            r, row = _postprocess_one(proposals[i], height, width)
            outputs.append({"proposals": r})
            rows.append(row)
        elif arch == "semantic":
            outputs.append({"sem_seg": sem_seg_postprocess(sem_seg[i], image_size, height, width)})
            rows.append(None)
        elif arch == "panoptic_fpn":
            from workbench.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
            sem_seg_r = sem_seg_postprocess(sem_seg[i], image_size, height, width)
            detector_r, row = _postprocess_one(instances[i], height, width)
            panoptic_r = combine_semantic_and_instance_outputs(
                detector_r, sem_seg_r.argmax(dim=0), model.combine_overlap_thresh,
                model.combine_stuff_area_thresh, model.combine_instances_score_thresh)
            outputs.append({"sem_seg": sem_seg_r, "instances": detector_r, "panoptic_seg": panoptic_r})
            rows.append(row)
        else:
            r, row = _postprocess_one(instances[i], height, width)
            outputs.append({"instances": r})
            rows.append(row)
    return outputs, rows

"""``trace(model, inputs)``: one inference whose every stage you can read, change and re-run.

::

    tr = trace(model, inputs)             # tr.outputs == model(inputs), bit for bit
    tr                                    # what each stage produced: shapes and counts
    d = tr.detection(0, image=0)          # proposal, anchor, level, ROI feature, 1024-d embedding

A :class:`Trace` holds the stage outputs of :mod:`workbench.inspect.stages` under plain
attribute names (``preprocess``, ``backbone``, ``rpn``, ``box``, ``mask``, ``keypoint``,
``dense``, ``sem_seg``), the raw detections at the network's input resolution (``instances``)
and the final ``outputs``. :func:`resume` re-runs what follows a stage you replaced (hand-made
proposals or boxes); :func:`rethreshold` recomputes the detections for other test settings
without touching the backbone or the box head.

Shape legend: N images; Oi final detections of image i (``outputs[i]["instances"]``); K
classes; D box-head width; C, P channels and side of pooled ROI features.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from workbench.structures import Instances
from workbench.utils.events import EventStorage

from . import stages as S
from .hooks import Captured, capture, describe

__all__ = ["Trace", "Provenance", "Detection", "trace", "resume", "rethreshold"]


@dataclass
class Provenance:
    """Where the final detections of one image came from; row j is ``outputs[image]["instances"][j]``.

    Fields that do not apply to the architecture are None (e.g. ``roi_index`` for RetinaNet).
    Indices are -1 where unknown.

    Attributes:
        image: the image index.
        rows: (Oi,) row of each detection in the raw ``trace.instances[image]``.
        boxes: (Oi, 4) final boxes in original pixels; ``boxes_input`` the same in input pixels.
        scores, classes: (Oi,) final score and class.
        roi_index: (Oi,) the proposal (row of ``trace.proposals[image]``) each detection came from.
        proposal_boxes: (Oi, 4) that proposal's box (input pixels); ``objectness`` its logit.
        level: (Oi,) index of the anchor's feature level (``level_names[level]``).
        anchor_index: (Oi,) row of the anchor within its level (order y, x, anchor).
        anchor_boxes: (Oi, 4) the anchor.
        anchor_yxa: (Oi, 3) the anchor's cell (y, x) on its level and its cell-anchor index.
        pooler_level: (Oi,) feature map the ROI was pooled from (multi-level poolers).
        pooled: (Oi, C, P, P) pooled ROI features (of the last cascade stage).
        embeddings: (Oi, D) box-head output (last cascade stage); for RetinaNet the
            classification tower's feature at the anchor's cell.
        logits: (Oi, K+1) class logits before NMS (RetinaNet: (Oi, K) sigmoid logits; cascade:
            last stage).
        probs: (Oi, K+1) the class scores inference used (cascade: stage mean).
        class_boxes: (Oi, K, 4) (or (Oi, 1, 4)) decoded boxes of every class, before clipping.
        stage_embeddings, stage_logits: cascade only, one (Oi, D) / (Oi, K+1) per stage.
        mask_logits: (Oi, K, M, M) raw mask logits; keypoint_heatmaps (Oi, K, M, M).
    """

    image: int
    rows: Tensor
    boxes: Tensor
    boxes_input: Tensor
    scores: Optional[Tensor]
    classes: Optional[Tensor]
    level_names: List[str]
    roi_index: Optional[Tensor] = None
    proposal_boxes: Optional[Tensor] = None
    objectness: Optional[Tensor] = None
    level: Optional[Tensor] = None
    anchor_index: Optional[Tensor] = None
    anchor_boxes: Optional[Tensor] = None
    anchor_yxa: Optional[Tensor] = None
    pooler_level: Optional[Tensor] = None
    pooled: Optional[Tensor] = None
    embeddings: Optional[Tensor] = None
    logits: Optional[Tensor] = None
    probs: Optional[Tensor] = None
    class_boxes: Optional[Tensor] = None
    stage_embeddings: Optional[List[Tensor]] = None
    stage_logits: Optional[List[Tensor]] = None
    mask_logits: Optional[Tensor] = None
    keypoint_heatmaps: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        parts = [f"image={self.image}", f"detections={len(self)}"]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("image", "level_names") or v is None:
                continue
            parts.append(f"{f.name}={describe(v)}")
        return "Provenance(" + ", ".join(parts) + ")"


@dataclass
class Detection:
    """One final detection and its history (one row of :class:`Provenance`; same field names).

    Tensors are rows (``embedding`` is (D,), ``pooled`` (C, P, P), ``logits`` (K+1,)); ints and
    floats are Python numbers (-1 / None where not applicable).
    """

    image: int
    index: int
    row: int
    box: Tensor
    box_input: Tensor
    score: Optional[float]
    cls: Optional[int]
    roi_index: Optional[int]
    proposal_box: Optional[Tensor]
    objectness: Optional[float]
    level: Optional[int]
    level_name: Optional[str]
    anchor_index: Optional[int]
    anchor_box: Optional[Tensor]
    anchor_yxa: Optional[tuple]
    pooler_level: Optional[int]
    pooled: Optional[Tensor]
    embedding: Optional[Tensor]
    logits: Optional[Tensor]
    probs: Optional[Tensor]
    class_boxes: Optional[Tensor]
    stage_embeddings: Optional[List[Tensor]] = None
    stage_logits: Optional[List[Tensor]] = None
    mask_logits: Optional[Tensor] = None
    keypoint_heatmap: Optional[Tensor] = None

    def __repr__(self) -> str:
        def fmt_box(b):
            return "None" if b is None else "[" + ", ".join(f"{v:.1f}" for v in b.tolist()) + "]"
        lines = [f"Detection(image={self.image}, index={self.index}, class={self.cls}, "
                 f"score={self.score if self.score is None else round(self.score, 4)})",
                 f"  box (original px)  {fmt_box(self.box)}"]
        if self.roi_index is not None:
            obj = "None" if self.objectness is None else f"{self.objectness:.3f}"
            lines.append(f"  from proposal {self.roi_index}: {fmt_box(self.proposal_box)} "
                         f"(objectness logit {obj})")
        elif self.objectness is not None:  # an RPN-only model: the detection is a proposal
            lines.append(f"  objectness logit {self.objectness:.3f}")
        if self.anchor_index is not None:
            lines.append(f"  from anchor {self.anchor_index} on {self.level_name} "
                         f"(cell y, x, a = {self.anchor_yxa}): {fmt_box(self.anchor_box)}")
        if self.pooler_level is not None:
            lines.append(f"  ROI pooled from level {self.pooler_level}")
        for name in ("pooled", "embedding", "logits", "mask_logits", "keypoint_heatmap"):
            v = getattr(self, name)
            if v is not None:
                lines.append(f"  {name:<17}{tuple(v.shape)}")
        return "\n".join(lines)


@dataclass
class Trace:
    """The stages of one inference (see the module docstring). Build it with :func:`trace`.

    Attributes:
        architecture: "rcnn", "panoptic_fpn", "rpn", "retinanet" or "semantic".
        inputs: the ``list[dict]`` given.
        preprocess: the normalised, padded batch and the original -> input scales.
        backbone: feature maps (and the FPN's bottom-up maps).
        rpn: anchors, objectness, deltas, candidates before NMS, proposals (None without RPN).
        proposals: per image, the proposals the ROI heads received.
        box: the box branch (per-ROI pooled features, embeddings, logits, boxes, NMS).
        mask, keypoint: the mask / keypoint heads on the detections.
        dense: RetinaNet's head outputs, candidates and detections.
        sem_seg: semantic logits (Panoptic FPN, SemanticSegmentor).
        instances: per image, the raw detections at input resolution (with mask
            probabilities and keypoints), before ``detector_postprocess``.
        outputs: exactly what ``model(inputs)`` returns.
        output_rows: per image, row of ``instances`` of each output detection.
        losses: the training losses (``trace(..., losses=True)``), else None.
        loss_scalars: the ``EventStorage`` scalars the loss pass recorded.
        captured: hooks requested with ``trace(..., capture=[...])``.
        detections_only: the trace stopped after the box branch (see :func:`trace`).
    """

    architecture: str
    inputs: List[Dict[str, Any]]
    preprocess: S.Preprocessed
    backbone: S.BackboneOutput
    rpn: Optional[S.RPNOutput] = None
    proposals: Optional[List[Instances]] = None
    box: Optional[S.BoxOutput] = None
    mask: Optional[S.MaskOutput] = None
    keypoint: Optional[S.KeypointOutput] = None
    dense: Optional[S.DenseOutput] = None
    sem_seg: Optional[S.SemSegOutput] = None
    instances: Optional[List[Instances]] = None
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    output_rows: List[Optional[Tensor]] = field(default_factory=list)
    losses: Optional[Dict[str, Tensor]] = None
    loss_scalars: Optional[Dict[str, float]] = None
    captured: Optional[Captured] = None
    detections_only: bool = False
    _provenance: Dict[tuple, Provenance] = field(default_factory=dict, repr=False)

    @property
    def num_images(self) -> int:
        return len(self.preprocess)

    def __repr__(self) -> str:
        lines = [f"Trace({self.architecture}, {self.num_images} images)"]
        pre = self.preprocess
        lines.append(f"  preprocess  images {tuple(pre.images.tensor.shape)}, sizes {pre.image_sizes}, "
                     f"scales {[(round(a, 3), round(b, 3)) for a, b in pre.scales]}")
        lines.append(f"  backbone    {describe(self.backbone.features)}")
        if self.backbone.bottom_up is not None:
            lines.append(f"  bottom_up   {describe(self.backbone.bottom_up)}")
        for name in ("rpn", "box", "mask", "keypoint", "dense", "sem_seg"):
            v = getattr(self, name)
            if v is not None:
                lines.append(f"  {name:<11} {v!r}")
        if self.rpn is None and self.proposals is not None:
            lines.append(f"  proposals   given: {[len(p) for p in self.proposals]}")
        if self.instances is not None:
            lines.append(f"  instances   {[len(x) for x in self.instances]} (input pixels)")
        keys = sorted({k for o in self.outputs for k in o})
        lines.append(f"  outputs     {len(self.outputs)} dicts with {keys}")
        if self.losses is not None:
            losses = ", ".join(f"{k}={float(v):.4f}" for k, v in self.losses.items())
            lines.append(f"  losses      {losses}")
        if self.captured is not None:
            lines.append(f"  captured    {self.captured.names}")
        return "\n".join(lines)

    # -- provenance ------------------------------------------------------------------------------

    def provenance(self, image: int = 0, *, anchors: bool = True) -> Provenance:
        """Where every final detection of ``image`` came from (computed once, then cached).

        Example::

            p = tr.provenance(0)
            p.embeddings          # (O0, D) box-head vectors of the final detections
            p.roi_index, p.level, p.anchor_index

        Args:
            anchors: also trace R-CNN proposals back to their RPN anchors (``level``,
                ``anchor_*``), which matches proposals against the RPN's candidates; False
                skips that when only the per-ROI fields are needed.
        """
        if not 0 <= image < self.num_images:
            raise IndexError(f"image {image} out of range for a trace of {self.num_images} images.")
        if (image, True) in self._provenance:
            return self._provenance[(image, True)]
        if (image, anchors) not in self._provenance:
            self._provenance[(image, anchors)] = _provenance(self, image, anchors)
        return self._provenance[(image, anchors)]

    def detection(self, index: int, image: int = 0) -> Detection:
        """Final detection ``index`` of ``image`` and its history.

        ``index`` counts the rows of ``outputs[image]["instances"]`` (negative from the end).

        Example::

            d = tr.detection(0, image=0)
            d.proposal_box, d.anchor_box, d.level_name, d.objectness
            d.embedding.shape     # (D,), the box-head vector (1024-d in the model zoo)
        """
        p = self.provenance(image)
        n = len(p)
        if not -n <= index < n:
            raise IndexError(f"image {image} has {n} detections, asked for index {index}.")
        index = index % n

        def row(t):
            return None if t is None else t[index]

        def num(t, kind=int):
            if t is None:
                return None
            v = t[index].item()
            return kind(v)

        level = num(p.level)
        return Detection(
            image=image, index=index, row=int(p.rows[index]), box=p.boxes[index],
            box_input=p.boxes_input[index], score=num(p.scores, float), cls=num(p.classes),
            roi_index=num(p.roi_index), proposal_box=row(p.proposal_boxes),
            objectness=num(p.objectness, float), level=level,
            level_name=p.level_names[level] if level is not None and level >= 0 else None,
            anchor_index=num(p.anchor_index), anchor_box=row(p.anchor_boxes),
            anchor_yxa=None if p.anchor_yxa is None else tuple(p.anchor_yxa[index].tolist()),
            pooler_level=num(p.pooler_level), pooled=row(p.pooled), embedding=row(p.embeddings),
            logits=row(p.logits), probs=row(p.probs), class_boxes=row(p.class_boxes),
            stage_embeddings=None if p.stage_embeddings is None
            else [e[index] for e in p.stage_embeddings],
            stage_logits=None if p.stage_logits is None else [e[index] for e in p.stage_logits],
            mask_logits=row(p.mask_logits), keypoint_heatmap=row(p.keypoint_heatmaps),
        )


# -- provenance --------------------------------------------------------------------------------

def _anchor_info(anchors, features: List[Tensor], level: Tensor, anchor_index: Tensor):
    """Anchor boxes and (y, x, a) cells for (level, row) pairs; rows of -1 give -1 / NaN."""
    n = len(level)
    device = level.device
    boxes = torch.full((n, 4), float("nan"), device=device)
    yxa = torch.full((n, 3), -1, dtype=torch.int64, device=device)
    for lvl, (a, f) in enumerate(zip(anchors, features)):
        sel = (level == lvl).nonzero()[:, 0]
        if len(sel) == 0:
            continue
        rows = anchor_index[sel]
        boxes[sel] = a.tensor[rows].to(boxes.dtype)
        num_cell = len(a) // (f.shape[-2] * f.shape[-1])  # A
        loc = rows // num_cell
        yxa[sel] = torch.stack([loc // f.shape[-1], loc % f.shape[-1], rows % num_cell], dim=1)
    return boxes, yxa


def _provenance(tr: Trace, image: int, anchors: bool = True) -> Provenance:
    out = tr.outputs[image]
    rows = tr.output_rows[image]
    final = out.get("instances", out.get("proposals"))
    if final is None or rows is None:
        raise ValueError(f"A {tr.architecture} trace has no detections to trace back.")
    is_props = "proposals" in out and "instances" not in out
    boxes = (final.proposal_boxes if is_props else final.pred_boxes).tensor
    raw = tr.instances[image]
    raw_boxes = (raw.proposal_boxes if is_props else raw.pred_boxes).tensor[rows]
    prov = Provenance(
        image=image, rows=rows, boxes=boxes, boxes_input=raw_boxes,
        scores=None if is_props else final.scores, classes=None if is_props else final.pred_classes,
        level_names=[],
    )
    if tr.architecture == "retinanet":
        d = tr.dense
        cand = d.det_candidate[image][rows]
        prov.level_names = list(d.in_features)
        prov.level = d.candidate_level[image][cand]
        prov.anchor_index = d.candidate_anchor[image][cand]
        feats = [tr.backbone.features[f] for f in d.in_features]
        prov.anchor_boxes, prov.anchor_yxa = _anchor_info(d.anchors, feats, prov.level,
                                                          prov.anchor_index)
        K = d.logits[0].shape[-1]
        prov.logits = torch.full((len(rows), K), float("nan"), device=boxes.device)
        emb = None
        if d.head_features is not None:
            emb = torch.full((len(rows), d.head_features[0].shape[1]), float("nan"), device=boxes.device)
        for lvl in range(len(d.in_features)):
            sel = (prov.level == lvl).nonzero()[:, 0]
            if len(sel) == 0:
                continue
            prov.logits[sel] = d.logits[lvl][image][prov.anchor_index[sel]]
            if emb is not None:
                y, x = prov.anchor_yxa[sel, 0], prov.anchor_yxa[sel, 1]
                emb[sel] = d.head_features[lvl][image][:, y, x].T  # (C, M) -> (M, C)
        prov.embeddings = emb
        prov.probs = prov.logits.sigmoid()
        return prov

    rpn = tr.rpn
    if is_props:
        roi = rows
    else:
        if tr.box is None:
            return prov  # detections were given (resume(..., detections=...)): no history
        roi = tr.box.roi_index[image][rows]
        prov.roi_index = roi
        props = tr.box.proposals[image]
        prov.proposal_boxes = props.proposal_boxes.tensor[roi]
        prov.objectness = props.objectness_logits[roi]
    if rpn is not None and (anchors or is_props):
        prov.level_names = list(rpn.in_features)
        prov.level = rpn.proposal_level(image)[roi]
        prov.anchor_index = rpn.proposal_anchor(image)[roi]
        if is_props:
            prov.objectness = rpn.proposals[image].objectness_logits[roi]
        feats = [tr.backbone.features[f] for f in rpn.in_features]
        prov.anchor_boxes, prov.anchor_yxa = _anchor_info(rpn.anchors, feats, prov.level,
                                                          prov.anchor_index.clamp(min=0))
        missing = prov.anchor_index < 0
        if missing.any():
            prov.anchor_boxes[missing] = float("nan")
            prov.anchor_yxa[missing] = -1
    if is_props:
        return prov

    box = tr.box
    offset = sum(len(p) for p in box.proposals[:image])
    g = roi + offset  # row in the concatenated ROIs of the batch
    last = box.stages[-1]
    prov.pooled = last.pooled_rows(image, roi)
    prov.pooler_level = None if last.pooler_level is None else last.pooler_level[g]
    prov.embeddings = last.embeddings[g]
    prov.logits = last.logits[g]
    prov.probs = box.scores[image][roi]
    cb = box.boxes[image][roi]  # (Oi, K*4) or (Oi, 4)
    prov.class_boxes = cb.view(len(roi), -1, 4)  # (Oi, K*4) -> (Oi, K, 4)
    if len(box.stages) > 1:
        prov.stage_embeddings = [s.embeddings[g] for s in box.stages]
        prov.stage_logits = [s.logits[g] for s in box.stages]
    det_offset = sum(len(x) for x in tr.instances[:image])
    if tr.mask is not None and tr.mask.logits is not None:
        prov.mask_logits = tr.mask.logits[rows + det_offset]
    if tr.keypoint is not None and tr.keypoint.heatmaps is not None:
        prov.keypoint_heatmaps = tr.keypoint.heatmaps[rows + det_offset]
    return prov


# -- running -----------------------------------------------------------------------------------

def _check_model(model: nn.Module) -> str:
    arch = S.architecture(model)
    if model.training:
        raise RuntimeError(
            "trace() runs inference and needs model.eval(); the training losses come from "
            "trace(model, inputs, losses=True), which runs its own training-mode pass."
        )
    return arch


def _to_device(instances: List[Instances], like: Tensor, what: str) -> List[Instances]:
    if not isinstance(instances, (list, tuple)):
        raise TypeError(f"{what} must be a list with one Instances per image, got "
                        f"{type(instances).__name__}.")
    return [x.to(like.device) for x in instances]


def _run_heads(model: nn.Module, tr: Trace, *, proposals: Optional[List[Instances]] = None,
               detections: Optional[List[Instances]] = None, box: Optional[S.BoxOutput] = None,
               rpn_out: Optional[S.RPNOutput] = None, detections_only: bool = False) -> Trace:
    """Fill the stages after the backbone (reusing any that are given) and the outputs."""
    arch = tr.architecture
    pre, feats = tr.preprocess, tr.backbone
    like = pre.images.tensor
    if arch in ("rcnn", "panoptic_fpn") and detections_only:
        if detections is not None:
            raise ValueError("detections_only=True and detections= exclude each other.")
        if box is None:
            if proposals is not None:
                tr.rpn, tr.proposals = None, _to_device(proposals, like, "proposals")
            elif model.proposal_generator is None:
                tr.rpn, tr.proposals = None, model._given_proposals(tr.inputs)
            else:
                tr.rpn = S.rpn(model, pre, feats)
                tr.proposals = tr.rpn.proposals
            box = S.box_head(model, feats, tr.proposals)
        tr.box, tr.instances = box, box.instances
        post = [S._postprocess_one(x, h, w) for x, (h, w) in zip(tr.instances, pre.original_sizes)]
        tr.outputs = [{"instances": r} for r, _ in post]
        tr.output_rows = [row for _, row in post]
    elif arch in ("rcnn", "panoptic_fpn"):
        if arch == "panoptic_fpn" and tr.sem_seg is None:
            tr.sem_seg = S.sem_seg_head(model, feats)
        if detections is not None:
            tr.rpn, tr.proposals, tr.box = None, None, None
            dets = _to_device(detections, like, "detections")
        else:
            if box is None:
                if proposals is not None:
                    tr.rpn, tr.proposals = None, _to_device(proposals, like, "proposals")
                elif rpn_out is not None:
                    tr.rpn, tr.proposals = rpn_out, rpn_out.proposals
                elif model.proposal_generator is None:
                    tr.rpn, tr.proposals = None, model._given_proposals(tr.inputs)
                else:
                    tr.rpn = S.rpn(model, pre, feats)
                    tr.proposals = tr.rpn.proposals
                box = S.box_head(model, feats, tr.proposals)
            tr.box = box
            dets = box.instances
        tr.mask = S.mask_head(model, feats, dets)
        tr.keypoint = S.keypoint_head(model, feats, tr.mask.instances)
        tr.instances = tr.keypoint.instances
        if not getattr(model.roi_heads, "mask_on", False):
            tr.mask = None
        if not getattr(model.roi_heads, "keypoint_on", False):
            tr.keypoint = None
        tr.outputs, tr.output_rows = S.postprocess(
            model, pre, instances=tr.instances,
            sem_seg=None if tr.sem_seg is None else tr.sem_seg.logits)
    elif arch == "rpn":
        if rpn_out is None:
            rpn_out = S.rpn(model, pre, feats)
        tr.rpn, tr.proposals = rpn_out, rpn_out.proposals
        tr.instances = tr.proposals
        tr.outputs, tr.output_rows = S.postprocess(model, pre, proposals=tr.proposals)
    elif arch == "retinanet":
        if tr.dense is None:
            tr.dense = S.dense_head(model, pre, feats)
        tr.instances = tr.dense.instances
        tr.outputs, tr.output_rows = S.postprocess(model, pre, instances=tr.instances)
    else:  # semantic
        tr.sem_seg = S.sem_seg_head(model, feats)
        tr.outputs, tr.output_rows = S.postprocess(model, pre, sem_seg=tr.sem_seg.logits)
    tr._provenance = {}
    return tr


def _compute_losses(model: nn.Module, batched_inputs: List[Dict], grad: bool):
    """Training-mode losses with no lasting effect on the model (mode and BN statistics restored)."""
    if not any(k in batched_inputs[0] for k in ("instances", "sem_seg")):
        raise ValueError("trace(..., losses=True) needs ground truth in the inputs: an 'instances' "
                         "(and/or 'sem_seg') entry in every dict.")
    saved = {name: {k: v.clone() for k, v in m.state_dict().items()}
             for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
    modules = dict(model.named_modules())
    was_training = model.training
    try:
        model.train()
        with EventStorage() as storage, torch.set_grad_enabled(grad):
            losses = model(batched_inputs)
        scalars = {k: v for k, (v, _) in storage.latest().items()}
    finally:
        model.train(was_training)
        for name, state in saved.items():
            modules[name].load_state_dict(state)
    return losses, scalars


def trace(model: nn.Module, batched_inputs: List[Dict[str, Any]], *,
          proposals: Optional[List[Instances]] = None, detections: Optional[List[Instances]] = None,
          losses: bool = False, capture: Optional[Union[str, Sequence[str]]] = None,
          grad: bool = False, detections_only: bool = False) -> Trace:
    """Run ``model`` on ``batched_inputs`` stage by stage and keep what every stage produced.

    ``trace(...).outputs`` is what ``model(batched_inputs)`` returns (same numbers, bit for bit).

    Example::

        tr = trace(model, inputs)
        tr.rpn.proposals[0], tr.box.stages[0].embeddings, tr.outputs[0]["instances"]
        tr.detection(0, image=0).embedding       # box-head vector of the top detection

    Args:
        model: a workbench detector in eval mode.
        batched_inputs: the model's ``list[dict]``.
        proposals: per image, Instances with ``proposal_boxes`` (input pixels) to use instead of
            the RPN's (R-CNN models).
        detections: per image, Instances with ``pred_boxes`` / ``pred_classes`` (input pixels):
            skip the box branch and run the mask / keypoint heads on them, as
            ``model.inference(inputs, detected_instances=...)`` does.
        losses: also run a training-mode pass on the same inputs (which must carry
            "instances") and store its losses: predictions and losses from one call. The
            model's mode and BatchNorm statistics are restored afterwards.
        capture: module names / globs whose outputs to record (``trace.captured``), as
            :func:`workbench.inspect.capture`; hooks on the top-level model do not fire.
        grad: keep the autograd graph (e.g. to differentiate an embedding w.r.t. the image).
        detections_only: R-CNN models: stop after the box branch (no mask / keypoint / semantic
            heads); ``outputs`` then hold boxes, scores and classes only, equal to the model's,
            and provenance works as usual. For feature extraction that needs no masks.
    """
    arch = _check_model(model)
    ctx = contextlib.ExitStack()
    with ctx:
        ctx.enter_context(torch.set_grad_enabled(grad))
        cap = ctx.enter_context(_capture_ctx(model, capture, grad))
        pre = S.preprocess(model, batched_inputs)
        feats = S.backbone(model, pre)
        tr = Trace(architecture=arch, inputs=list(batched_inputs), preprocess=pre, backbone=feats,
                   detections_only=detections_only)
        _run_heads(model, tr, proposals=proposals, detections=detections,
                   detections_only=detections_only)
    tr.captured = cap
    if losses:
        tr.losses, tr.loss_scalars = _compute_losses(model, batched_inputs, grad)
    return tr


def _capture_ctx(model, names, grad):
    if not names:
        return contextlib.nullcontext(None)
    return capture(model, names, detach=not grad)


def resume(model: nn.Module, tr: Trace, *, features: Optional[Dict[str, Tensor]] = None,
           proposals: Optional[List[Instances]] = None,
           detections: Optional[List[Instances]] = None, grad: bool = False) -> Trace:
    """Re-run the stages after the one you replaced, reusing everything before it.

    Give exactly one of ``features`` (edited backbone maps), ``proposals`` (hand-made ROIs,
    input pixels) or ``detections`` (boxes for the mask / keypoint heads, input pixels).

    Example::

        props = [p[:10] for p in tr.proposals]        # keep 10 proposals per image
        tr2 = resume(model, tr, proposals=props)
        tr2.outputs                                    # as if the RPN had returned those

    Returns:
        A new :class:`Trace`; ``tr`` is unchanged.
    """
    given = [x is not None for x in (features, proposals, detections)]
    if sum(given) != 1:
        raise ValueError("resume() takes exactly one of features=, proposals=, detections=.")
    _check_model(model)
    new = dataclasses.replace(tr, rpn=None, proposals=None, box=None, mask=None, keypoint=None,
                              dense=None, sem_seg=None, instances=None, outputs=[],
                              output_rows=[], losses=None, loss_scalars=None, _provenance={})
    with torch.set_grad_enabled(grad):
        if features is not None:
            if not isinstance(features, dict):
                raise TypeError(f"features must be a dict name -> (N, C, H, W), got "
                                f"{type(features).__name__}.")
            new.backbone = S.BackboneOutput(features=dict(features), bottom_up=tr.backbone.bottom_up)
            return _run_heads(model, new, detections_only=tr.detections_only)
        if tr.architecture not in ("rcnn", "panoptic_fpn"):
            raise ValueError(f"proposals= / detections= apply to R-CNN models, not {tr.architecture}.")
        if tr.architecture == "panoptic_fpn":
            new.sem_seg = tr.sem_seg
        return _run_heads(model, new, proposals=proposals, detections=detections,
                          detections_only=tr.detections_only and detections is None)


def rethreshold(model: nn.Module, tr: Trace, *, score_thresh: Optional[float] = None,
                nms_thresh: Optional[float] = None, topk: Optional[int] = None,
                topk_candidates: Optional[int] = None) -> Trace:
    """The detections ``model`` would return with other test settings, from a trace.

    Neither the backbone, the RPN nor the box head is run again: the per-ROI scores and boxes
    (R-CNN), the dense logits (RetinaNet) or the RPN predictions (RPN-only) are re-filtered.
    The mask and keypoint heads, which work on the final boxes, run on the new detections.

    Example::

        tr = trace(model, inputs)
        loose = rethreshold(model, tr, score_thresh=0.01, topk=300)
        loose.outputs      # == model(inputs) with ROI_HEADS.SCORE_THRESH_TEST=0.01, 300 per image

    Args:
        score_thresh: R-CNN ``ROI_HEADS.SCORE_THRESH_TEST`` / RetinaNet ``SCORE_THRESH_TEST``.
        nms_thresh: the NMS IoU threshold of the final detections (RPN-only: of the proposals).
        topk: detections per image (``TEST.DETECTIONS_PER_IMAGE``; RPN-only:
            ``POST_NMS_TOPK_TEST``).
        topk_candidates: RetinaNet's ``TOPK_CANDIDATES_TEST`` (candidates per level).

    Returns:
        A new :class:`Trace` sharing the unchanged stages with ``tr``.
    """
    _check_model(model)
    new = dataclasses.replace(tr, outputs=[], output_rows=[], losses=None, loss_scalars=None,
                              _provenance={})
    sizes = tr.preprocess.image_sizes
    with torch.no_grad():
        if tr.architecture in ("rcnn", "panoptic_fpn"):
            if tr.box is None:
                raise ValueError("This trace has no box branch (detections were given); nothing to "
                                 "re-threshold.")
            if topk_candidates is not None:
                raise ValueError("topk_candidates applies to RetinaNet only.")
            b = tr.box
            st = b.score_thresh if score_thresh is None else float(score_thresh)
            nt = b.nms_thresh if nms_thresh is None else float(nms_thresh)
            k = b.topk if topk is None else int(topk)
            inst, roi, cand, kept = S.box_inference(b.boxes, b.scores, sizes, st, nt, k)
            box = dataclasses.replace(b, instances=inst, roi_index=roi, candidates=cand,
                                      nms_kept=kept, score_thresh=st, nms_thresh=nt, topk=k)
            return _run_heads(model, new, box=box, detections_only=tr.detections_only)
        if tr.architecture == "rpn":
            if score_thresh is not None or topk_candidates is not None:
                raise ValueError("An RPN-only trace re-thresholds nms_thresh and topk only.")
            out = S.select_proposals(tr.rpn, sizes, nms_thresh=nms_thresh, post_nms_topk=topk)
            return _run_heads(model, new, rpn_out=out)
        if tr.architecture == "retinanet":
            new.dense = S.dense_inference(model, tr.dense, sizes, score_thresh=score_thresh,
                                          nms_thresh=nms_thresh, topk=topk,
                                          topk_candidates=topk_candidates)
            return _run_heads(model, new)
    raise ValueError(f"A {tr.architecture} trace has no detections to re-threshold.")

"""Where each final detection came from: its proposal, anchor, level, features and scores.

Everything is read from the records the model put while it ran (``trace.rpn``, ``trace.box``,
``trace.dense``, ...) by the indices its selection functions returned, so provenance is exact
by construction. Row j of a :class:`Provenance` is ``outputs[image]["instances"][j]``.

Shape legend: Oi final detections of image i; K classes; D box-head width; C, P channels and
side of pooled ROI features. "input px" are pixels of the resized image the network saw,
"original px" those of the input's "height" x "width" (the outputs' frame).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence

import torch
from torch import Tensor

from .hooks import describe

if TYPE_CHECKING:  # pragma: no cover
    from .trace import Trace

__all__ = ["Provenance", "Detection", "class_name", "fmt_box"]


def class_name(names: Optional[Sequence[str]], cls: Optional[int]) -> str:
    """``"circle (3)"`` when the class has a name, else ``"class 3"``."""
    if cls is None:
        return "None"
    if names is not None and 0 <= cls < len(names):
        return f"{names[cls]} ({cls})"
    return f"class {cls}"


def fmt_box(b: Optional[Tensor]) -> str:
    return "None" if b is None else "[" + ", ".join(f"{v:.1f}" for v in b.tolist()) + "]"


@dataclass
class Provenance:
    """Where the final detections of one image came from; row j is ``outputs[image]["instances"][j]``.

    Fields that do not apply to the model are None (e.g. ``roi_index`` for RetinaNet).
    Indices are -1 where unknown.

    Attributes:
        image: the image index.
        rows: (Oi,) row of each detection in the raw ``trace.instances[image]``.
        boxes: (Oi, B) final boxes in original px (B = 4 XYXY, or 5 for rotated boxes);
            ``boxes_input`` the same in input px.
        scores, classes: (Oi,) final score and class.
        level_names: the feature names the levels index ("p2".."p6").
        roi_index: (Oi,) the proposal (row of ``trace.proposals[image]``) each detection came from.
        proposal_boxes: (Oi, B) that proposal's box (input px); ``objectness`` its logit.
        level: (Oi,) index of the anchor's feature level (``level_names[level]``).
        anchor_index: (Oi,) row of the anchor within its level (order y, x, anchor).
        anchor_boxes: (Oi, B) the anchor (input px).
        anchor_yxa: (Oi, 3) the anchor's cell (y, x) on its level and its cell-anchor index.
        pooler_level: (Oi,) feature map the ROI was pooled from (multi-level poolers), an
            index into ``pooler_features``.
        pooled: (Oi, C, P, P) pooled ROI features (of the last cascade stage).
        embeddings: (Oi, D) box-head output (last cascade stage); for RetinaNet the
            classification tower's feature at the anchor's cell.
        logits: (Oi, K+1) class logits before NMS (RetinaNet: (Oi, K) sigmoid logits; cascade:
            last stage).
        probs: (Oi, K+1) the class scores inference used (cascade: stage mean).
        class_boxes: (Oi, K, B) (or (Oi, 1, B)) decoded boxes of every class, before clipping.
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
    pooler_features: Optional[List[str]] = None
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
            if f.name in ("image", "level_names", "pooler_features") or v is None:
                continue
            parts.append(f"{f.name}={describe(v)}")
        return "Provenance(" + ", ".join(parts) + ")"


@dataclass
class Detection:
    """One final detection and its history (one row of :class:`Provenance`; same field names).

    Tensors are rows (``embedding`` is (D,), ``pooled`` (C, P, P), ``logits`` (K+1,)); ints and
    floats are Python numbers (None where not applicable). ``match`` is the ground truth it
    was matched to when the trace has ground truth (see :class:`~.ground_truth.Match`).
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
    class_names: Optional[Sequence[str]] = dataclasses.field(default=None, repr=False)
    match: Optional[object] = None
    pooler_level_name: Optional[str] = None

    @property
    def class_name(self) -> str:
        return class_name(self.class_names, self.cls)

    def __repr__(self) -> str:
        score = "None" if self.score is None else f"{self.score:.4f}"
        lines = [f"Detection(image={self.image}, index={self.index}, class={self.class_name}, "
                 f"score={score})",
                 f"  box (original px)  {fmt_box(self.box)}",
                 f"  box (input px)     {fmt_box(self.box_input)}"]
        if self.roi_index is not None:
            obj = "None" if self.objectness is None else f"{self.objectness:.3f}"
            lines.append(f"  from proposal {self.roi_index} (input px): {fmt_box(self.proposal_box)} "
                         f"(objectness logit {obj})")
        elif self.objectness is not None:  # an RPN-only model: the detection is a proposal
            lines.append(f"  objectness logit {self.objectness:.3f}")
        if self.anchor_index is not None and self.anchor_index >= 0:
            lines.append(f"  from anchor {self.anchor_index} on {self.level_name} "
                         f"(cell y, x, a = {self.anchor_yxa}, input px): {fmt_box(self.anchor_box)}")
        if self.pooler_level is not None:
            lines.append(f"  ROI pooled from {self.pooler_level_name or f'level {self.pooler_level}'}")
        for name in ("pooled", "embedding", "logits", "mask_logits", "keypoint_heatmap"):
            v = getattr(self, name)
            if v is not None:
                lines.append(f"  {name:<17}{tuple(v.shape)}")
        if self.match is not None:
            lines.append(f"  ground truth       {self.match!r}")
        return "\n".join(lines)


def anchor_cells(anchors, features: List[Tensor], level: Tensor, anchor_index: Tensor):
    """Anchor boxes and (y, x, a) cells for (level, row) pairs; rows of -1 give NaN / -1."""
    n = len(level)
    device = level.device
    width = anchors[0].tensor.shape[1] if len(anchors) else 4  # 4 (XYXY) or 5 (rotated)
    boxes = torch.full((n, width), float("nan"), device=device)
    yxa = torch.full((n, 3), -1, dtype=torch.int64, device=device)
    for lvl, (a, f) in enumerate(zip(anchors, features)):
        sel = ((level == lvl) & (anchor_index >= 0)).nonzero()[:, 0]
        if len(sel) == 0:
            continue
        rows = anchor_index[sel]
        boxes[sel] = a.tensor[rows].to(boxes.dtype)
        num_cell = len(a) // (f.shape[-2] * f.shape[-1])  # A
        loc = rows // num_cell
        yxa[sel] = torch.stack([loc // f.shape[-1], loc % f.shape[-1], rows % num_cell], dim=1)
    return boxes, yxa


def provenance_of(tr: "Trace", image: int, anchors: bool = True) -> Provenance:
    """The :class:`Provenance` of ``tr``'s final detections of ``image``."""
    out = tr.outputs[image]
    rows = tr.output_rows[image] if image < len(tr.output_rows) else None
    final = out.get("instances", out.get("proposals"))
    if final is None:
        raise ValueError(f"A {tr.architecture} trace has no detections to trace back.")
    if rows is None:
        raise ValueError("The model's postprocessing put no record, so its outputs cannot be "
                         f"traced back{tr.why_unavailable('provenance')}.")
    is_props = "proposals" in out and "instances" not in out
    boxes = (final.proposal_boxes if is_props else final.pred_boxes).tensor
    raw = tr.instances[image]
    raw_boxes = (raw.proposal_boxes if is_props else raw.pred_boxes).tensor[rows]
    prov = Provenance(
        image=image, rows=rows, boxes=boxes, boxes_input=raw_boxes,
        scores=None if is_props else final.scores, classes=None if is_props else final.pred_classes,
        level_names=[],
    )
    if tr.dense is not None:
        return _dense(tr, image, prov)
    rpn = tr.rpn
    if is_props:
        roi = rows
    else:
        if tr.box is None or tr.box.selection is None or not same_detections(
                raw, tr.box.instances[image]):
            return prov  # given detections, a box branch without a record, or one whose
            # detections an override changed: no history
        roi = tr.box.roi_index[image][rows]
        prov.roi_index = roi
        props = tr.box.proposals[image]
        prov.proposal_boxes = props.proposal_boxes.tensor[roi]
        if props.has("objectness_logits"):
            prov.objectness = props.objectness_logits[roi]
    if rpn is not None and (anchors or is_props) and rpn.proposals[image] is _proposals_of(tr, image):
        prov.level_names = list(rpn.in_features)
        prov.level = rpn.proposal_level(image)[roi]
        prov.anchor_index = rpn.proposal_anchor(image)[roi]
        if is_props:
            prov.objectness = rpn.proposals[image].objectness_logits[roi]
        feats = [tr.backbone.features[f] for f in rpn.in_features]
        prov.anchor_boxes, prov.anchor_yxa = anchor_cells(rpn.anchors, feats, prov.level,
                                                          prov.anchor_index)
    if is_props:
        return prov
    _box_fields(tr, image, prov, roi, rows)
    return prov


def same_detections(raw, selected) -> bool:
    """Whether the raw detections are the box selection's (rows align), e.g. not filtered by
    an override of ``_forward_box`` after the selection."""
    if raw is selected:
        return True
    if len(raw) != len(selected):
        return False
    return all(torch.equal(raw.get(f).tensor if hasattr(raw.get(f), "tensor") else raw.get(f),
                           selected.get(f).tensor if hasattr(selected.get(f), "tensor")
                           else selected.get(f))
               for f in ("pred_boxes", "scores", "pred_classes"))


def _proposals_of(tr: "Trace", image: int):
    """The proposals the box branch of ``image`` ran on (the RPN's, unless given)."""
    if tr.box is None:
        return tr.rpn.proposals[image] if tr.rpn is not None else None
    return tr.box.proposals[image]


def _box_fields(tr: "Trace", image: int, prov: Provenance, roi: Tensor, rows: Tensor) -> None:
    box = tr.box
    offset = sum(len(p) for p in box.proposals[:image])
    g = roi + offset  # row in the concatenated ROIs of the batch
    last = box.stages[-1]
    prov.pooled = last.pooled_rows(image, roi)
    prov.pooler_level = None if last.pooler_level is None else last.pooler_level[g]
    prov.pooler_features = last.pooler_features
    prov.embeddings = last.embeddings[g]
    prov.logits = last.logits[g]
    prov.probs = box.scores[image][roi]
    cb = box.boxes[image][roi]  # (Oi, K*B) or (Oi, B), B = 4 (XYXY) or 5 (rotated)
    B = prov.boxes_input.shape[1]
    prov.class_boxes = cb.reshape(len(roi), cb.shape[1] // B, B)  # (Oi, K*B) -> (Oi, K, B)
    if len(box.stages) > 1:
        prov.stage_embeddings = [s.embeddings[g] for s in box.stages]
        prov.stage_logits = [s.logits[g] for s in box.stages]
    det_offset = sum(len(x) for x in tr.instances[:image])
    if tr.mask is not None and tr.mask.logits is not None:
        prov.mask_logits = tr.mask.logits[rows + det_offset]
    if tr.keypoint is not None and tr.keypoint.heatmaps is not None:
        prov.keypoint_heatmaps = tr.keypoint.heatmaps[rows + det_offset]


def _dense(tr: "Trace", image: int, prov: Provenance) -> Provenance:
    d = tr.dense
    if d.selections is None:
        return prov
    rows = prov.rows
    cand = d.det_candidate[image][rows]
    prov.level_names = list(d.in_features)
    prov.level = d.candidate_level[image][cand]
    prov.anchor_index = d.candidate_anchor[image][cand]
    feats = [tr.backbone.features[f] for f in d.in_features]
    prov.anchor_boxes, prov.anchor_yxa = anchor_cells(d.anchors, feats, prov.level, prov.anchor_index)
    K = d.logits[0].shape[-1]
    device = prov.boxes.device
    prov.logits = torch.full((len(rows), K), float("nan"), device=device)
    emb = None
    if d.head_features is not None:
        emb = torch.full((len(rows), d.head_features[0].shape[1]), float("nan"), device=device)
    for lvl in range(len(d.in_features)):
        sel = ((prov.level == lvl) & (prov.anchor_index >= 0)).nonzero()[:, 0]
        if len(sel) == 0:
            continue
        prov.logits[sel] = d.logits[lvl][image][prov.anchor_index[sel]]
        if emb is not None:
            y, x = prov.anchor_yxa[sel, 0], prov.anchor_yxa[sel, 1]
            emb[sel] = d.head_features[lvl][image][:, y, x].T  # (C, M) -> (M, C)
    prov.embeddings = emb
    prov.probs = d.scores_at(image, prov.level, prov.anchor_index)  # what the selection ranked
    return prov


def detection_of(p: Provenance, index: int, class_names=None, match=None) -> Detection:
    """Row ``index`` of ``p`` as a :class:`Detection` (negative counts from the end)."""
    n = len(p)
    if not -n <= index < n:
        raise IndexError(f"image {p.image} has {n} detections, asked for index {index}.")
    index = index % n

    def row(t):
        return None if t is None else t[index]

    def num(t, kind=int):
        return None if t is None else kind(t[index].item())

    level = num(p.level)
    pooler_level = num(p.pooler_level)
    return Detection(
        image=p.image, index=index, row=int(p.rows[index]), box=p.boxes[index],
        box_input=p.boxes_input[index], score=num(p.scores, float), cls=num(p.classes),
        roi_index=num(p.roi_index), proposal_box=row(p.proposal_boxes),
        objectness=num(p.objectness, float), level=level,
        level_name=p.level_names[level] if level is not None and level >= 0 else None,
        anchor_index=num(p.anchor_index), anchor_box=row(p.anchor_boxes),
        anchor_yxa=None if p.anchor_yxa is None else tuple(p.anchor_yxa[index].tolist()),
        pooler_level=pooler_level, pooled=row(p.pooled), embedding=row(p.embeddings),
        logits=row(p.logits), probs=row(p.probs), class_boxes=row(p.class_boxes),
        stage_embeddings=None if p.stage_embeddings is None
        else [e[index] for e in p.stage_embeddings],
        stage_logits=None if p.stage_logits is None else [e[index] for e in p.stage_logits],
        mask_logits=row(p.mask_logits), keypoint_heatmap=row(p.keypoint_heatmaps),
        class_names=class_names, match=match,
        pooler_level_name=p.pooler_features[pooler_level]
        if p.pooler_features and pooler_level is not None and 0 <= pooler_level < len(p.pooler_features)
        else None,
    )

"""Why a ground-truth object has no detection: the stages followed back from the object.

For an R-CNN: the best anchor of every level, the best RPN candidate before NMS and what NMS
and the top-k did to it, the proposal the ROI heads got (its rank, IoU and objectness), that
proposal's class scores, and what the score threshold, the per-class NMS or the top-k did to
its (ROI, class) pair. For a dense detector: the anchors (points) the model's own
``label_anchors`` assigns to the object, their class scores, and what the score threshold, the
NMS and the top-k did to their candidates. Everything is read from the trace's records or asked
of the model's public methods; boxes are XYXY (XYWHA for a rotated model), "input px" unless said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from workbench.structures import Boxes, Instances

from .ground_truth import as_boxes, box_iou
from .provenance import class_name, fmt_box

if TYPE_CHECKING:  # pragma: no cover
    from .trace import Trace

__all__ = ["WhyMissed", "why_missed"]


@dataclass
class WhyMissed:
    """The answer of :meth:`Trace.why_missed` (print it; the fields hold the numbers).

    Attributes:
        image, gt: the image and the object's index in its ground truth.
        box, box_input: the object in original px and input px; ``cls`` its class.
        detected_by: the detection that took it (it is not missed), else None.
        anchors: per level {"level", "anchor", "iou", "box"}: the best anchor by IoU (for
            information: a dense detector's assignment is ``assigned``).
        assigned: dense detectors: the anchors / points the model's ``label_anchors`` makes
            foreground for this object alone, each {"level", "anchor", "score"} (its class
            score there); None when the model cannot be asked (no ``label_anchors``, or the
            model is gone).
        candidate: the best RPN candidate before NMS {"row", "iou", "objectness", "kept_by_nms",
            "proposal"} (None without an RPN record).
        proposal: the proposal chosen {"row" (its rank), "iou", "objectness"} or None.
        class_scores: (K+1,) that proposal's class scores (dense: (K,) at the best anchor).
        lost_at: the stage that lost the object: "anchors", "rpn", "rpn_nms", "rpn_topk",
            "score_thresh", "nms", "topk", "localisation" or None (not missed).
        reason: one sentence.
        covered_by: the final detections that overlap it without taking it
            {"detection", "kind" (mislabel, localisation, ...), "class", "score", "iou"}.
    """

    image: int
    gt: int
    box: Tensor
    box_input: Tensor
    cls: int
    class_names: Optional[Sequence[str]] = field(default=None, repr=False)
    detected_by: Optional[int] = None
    anchors: List[Dict] = field(default_factory=list)
    assigned: Optional[List[Dict]] = None
    candidate: Optional[Dict] = None
    proposal: Optional[Dict] = None
    class_scores: Optional[Tensor] = None
    lost_at: Optional[str] = None
    reason: str = ""
    covered_by: List[Dict] = field(default_factory=list)
    scores_have_background: bool = True

    def __repr__(self) -> str:
        lines = [f"WhyMissed(image {self.image}, object {self.gt}: "
                 f"{class_name(self.class_names, self.cls)}, box (original px) {fmt_box(self.box)})"]
        for a in self.anchors:
            lines.append(f"  best anchor on {a['level']}: {a['anchor']} (IoU {a['iou']:.2f})")
        if self.assigned is not None:
            top = sorted(self.assigned, key=lambda p: -p["score"])[:5]
            lines.append(f"  assigned by the model: {len(self.assigned)} anchors"
                         + "".join(f", {p['level']} {p['anchor']} (score {p['score']:.3f})"
                                   for p in top) + (", ..." if len(self.assigned) > 5 else ""))
        if self.candidate is not None:
            c = self.candidate
            lines.append(f"  best RPN candidate: IoU {c['iou']:.2f}, objectness {c['objectness']:.2f}"
                         f", {'kept' if c['kept_by_nms'] else 'suppressed'} by NMS"
                         + (f", proposal {c['proposal']}" if c['proposal'] >= 0 else ""))
        if self.proposal is not None:
            p = self.proposal
            lines.append(f"  proposal {p['row']} (rank by objectness): IoU {p['iou']:.2f}, "
                         f"objectness {p['objectness']:.2f}")
        if self.class_scores is not None and len(self.class_scores) > self.cls:
            top = int(self.class_scores.argmax())
            background = self.scores_have_background and top == len(self.class_scores) - 1
            top_name = "background" if background else class_name(self.class_names, top)
            lines.append(f"  class scores: its class {float(self.class_scores[self.cls]):.3f}, top "
                         f"{top_name} {float(self.class_scores[top]):.3f}")
        lines.append(f"  lost at {self.lost_at}: {self.reason}" if self.lost_at else f"  {self.reason}")
        for c in self.covered_by:
            lines.append(f"  covered by detection {c['detection']} "
                         f"({class_name(self.class_names, c['class'])}, score {c['score']:.3f}, "
                         f"IoU {c['iou']:.2f}): a {c['kind']} error")
        return "\n".join(lines)


def _best(iou: Tensor):
    if iou.numel() == 0:
        return -1, 0.0
    j = int(iou.argmax())
    return j, float(iou[j])


def why_missed(tr: "Trace", image: int, gt_index: int, detected_by: int) -> WhyMissed:
    gt = tr.ground_truth[image]
    box = gt.boxes[gt_index]
    cls = int(gt.classes[gt_index])
    device = tr.preprocess.images.tensor.device
    box_in = tr.preprocess.to_input(box[None].to(device), image)  # (1, B) input px
    w = WhyMissed(image=image, gt=gt_index, box=box, box_input=box_in[0], cls=cls,
                  class_names=tr.class_names)
    gtb = as_boxes(box_in)  # Boxes, or RotatedBoxes for a rotated model's ground truth
    t = tr.iou_thresh
    if detected_by >= 0:
        w.detected_by, w.reason = detected_by, f"not missed: detection {detected_by} took it."
        return w
    out = tr.outputs[image].get("instances")
    for d, m in enumerate(tr.matches(image) or []):
        if m.gt == gt_index:
            w.covered_by.append({"detection": d, "kind": m.kind, "class": int(out.pred_classes[d]),
                                 "score": float(out.scores[d]), "iou": m.iou})
    # The best anchor by IoU, per level. For the RPN this is also the verdict's "anchors" test:
    # the RPN labels anchors by IoU but then subsamples them at random, so asking its
    # label_and_sample_anchors would not give a reproducible answer. Dense detectors are judged
    # by their own label_anchors instead (_dense).
    anchor_src = tr.rpn if tr.rpn is not None else tr.dense
    if anchor_src is not None:
        for name, a in zip(anchor_src.in_features, anchor_src.anchors):
            j, v = _best(box_iou(gtb, a)[0])
            w.anchors.append({"level": name, "anchor": j, "iou": v,
                              "box": a.tensor[j] if j >= 0 else None})
    if tr.dense is not None:
        return _dense(tr, w, gtb, t)
    if tr.box is None or tr.box.selection is None:
        w.reason = "the trace has no box-branch record to follow" + tr.why_unavailable("box")
        return w
    return _rcnn(tr, w, gtb, t)


def _rcnn(tr: "Trace", w: WhyMissed, gtb: Boxes, t: float) -> WhyMissed:
    image, cls = w.image, w.cls
    props = tr.box.proposals[image]
    ious = box_iou(gtb, props.proposal_boxes)[0]  # (Ri,)
    scores = tr.box.scores[image]  # (Ri, K+1)
    rpn = tr.rpn if tr.rpn is not None and tr.rpn.proposals[image] is props else None
    if rpn is not None and rpn.selection is not None:
        cands = rpn.candidates[image]
        j, v = _best(box_iou(gtb, cands.proposal_boxes)[0])
        if j >= 0:
            as_prop = (rpn.proposal_candidate[image] == j).nonzero()[:, 0]
            w.candidate = {"row": j, "iou": v, "objectness": float(cands.objectness_logits[j]),
                           "kept_by_nms": bool(rpn.selection.selections[image].nms_kept[j]),
                           "proposal": int(as_prop[0]) if len(as_prop) else -1}
    over = (ious >= t).nonzero()[:, 0]
    if len(over) == 0:
        j, v = _best(ious)
        if j >= 0:
            w.proposal = {"row": j, "iou": v, "objectness": _objectness(props, j)}
        best_anchor = max((a["iou"] for a in w.anchors), default=0.0)
        c = w.candidate
        if c is not None and c["iou"] >= t and not c["kept_by_nms"]:
            w.lost_at, w.reason = "rpn_nms", (f"the RPN's NMS suppressed its best candidate "
                                              f"(IoU {c['iou']:.2f}) for a higher-scoring overlap.")
        elif c is not None and c["iou"] >= t:
            w.lost_at, w.reason = "rpn_topk", (f"its best candidate (IoU {c['iou']:.2f}) survived "
                                               f"NMS but fell past the RPN's top {rpn.post_nms_topk}.")
        elif w.anchors and best_anchor < t:
            w.lost_at, w.reason = "anchors", (f"no anchor reaches IoU {t} (best {best_anchor:.2f}), "
                                              "and no proposal regressed onto it.")
        else:
            w.lost_at, w.reason = "rpn", (f"no proposal reaches IoU {t} (best {v:.2f}): the RPN "
                                          "scored or regressed it too poorly.")
        return w
    # The proposal over the IoU threshold that scored the object's class highest.
    j = int(over[scores[over, cls].argmax()])
    w.proposal = {"row": j, "iou": float(ious[j]), "objectness": _objectness(props, j)}
    w.class_scores = scores[j]
    s = float(scores[j, cls])
    sel = tr.box.selection
    cand = sel.candidates[image]
    hit = ((cand[:, 0] == j) & (cand[:, 1] == cls)).nonzero()[:, 0]
    if len(hit) == 0:
        w.lost_at, w.reason = "score_thresh", (f"its best proposal scores its class {s:.3f}, not "
                                               f"above score_thresh {sel.score_thresh}.")
        return w
    k = int(hit[0])
    if not bool(sel.nms_kept[image][k]):
        w.lost_at = "nms"
        w.reason = (f"the per-class NMS (IoU {sel.nms_thresh}) suppressed it (score {s:.3f})"
                    + _suppressor(tr, image, j, cls) + ".")
        return w
    dets = (sel.roi_index[image] == j) & (sel.instances[image].pred_classes == cls)
    if not bool(dets.any()):
        w.lost_at, w.reason = "topk", (f"it survived NMS (score {s:.3f}) but fell past the top "
                                       f"{sel.topk} detections of the image.")
        return w
    w.lost_at, w.reason = "localisation", (f"it was detected from proposal {j} (score {s:.3f}), but "
                                           f"the regressed box does not reach IoU {t} with it.")
    return w


def _objectness(props, j: int) -> float:
    return float(props.objectness_logits[j]) if props.has("objectness_logits") else float("nan")


def _suppressor(tr: "Trace", image: int, roi: int, cls: int) -> str:
    """", by raw detection d (score s, IoU v)": the same-class detection that overlaps most."""
    sel = tr.box.selection
    inst = sel.instances[image]
    same = (inst.pred_classes == cls).nonzero()[:, 0]
    if len(same) == 0:
        return ""
    b = sel.boxes[image][roi]
    B = inst.pred_boxes.tensor.shape[1]  # 4, or 5 for rotated boxes
    b = (b.view(-1, B)[cls] if b.numel() > B else b.view(B))[None]
    ious = box_iou(as_boxes(b), inst.pred_boxes[same])[0]
    d = int(same[ious.argmax()])
    return f", by raw detection {d} (score {float(inst.scores[d]):.3f}, IoU {float(ious.max()):.2f})"


def _assigned(tr: "Trace", w: WhyMissed, gtb: Boxes) -> Optional[tuple]:
    """(levels, anchors) of the anchors the model's own ``label_anchors`` makes foreground for
    this object alone (in the input frame), or None when the model cannot be asked."""
    model = tr.model_ref() if tr.model_ref is not None else None
    label_anchors = getattr(model, "label_anchors", None)
    if not callable(label_anchors):
        return None
    d = tr.dense
    gt = Instances(tuple(tr.preprocess.image_sizes[w.image]), gt_boxes=gtb,
                   gt_classes=torch.tensor([w.cls], device=gtb.device))
    with torch.no_grad():
        labels = label_anchors(list(d.anchors), [gt])[0][0]  # (R,) over the levels' anchors
    fg = (labels == w.cls).nonzero()[:, 0]  # the object's class: foreground for it
    sizes = torch.tensor([len(a) for a in d.anchors], device=fg.device)  # (L,)
    ends = sizes.cumsum(0)
    level = torch.searchsorted(ends, fg, right=True)  # (M,) the level of each concatenated row
    return level, fg - (ends - sizes)[level]  # its row within that level


def _dense(tr: "Trace", w: WhyMissed, gtb: Boxes, t: float) -> WhyMissed:
    d, image, cls = tr.dense, w.image, w.cls
    if not w.anchors:
        w.reason = "no anchors recorded"
        return w
    w.scores_have_background = False
    assigned = _assigned(tr, w, gtb)
    if assigned is not None:
        level, anchor = assigned
        scores = d.scores_at(image, level, anchor)[:, cls] if len(level) else torch.zeros(0)
        w.assigned = [{"level": d.in_features[int(lv)], "anchor": int(a), "score": float(s)}
                      for lv, a, s in zip(level.tolist(), anchor.tolist(), scores.tolist())]
    if assigned is not None and len(assigned[0]):
        k = int(scores.argmax())  # the assigned anchor that scores its class best
        lvl, row = int(assigned[0][k]), int(assigned[1][k])
    else:
        lvl = max(range(len(w.anchors)), key=lambda i: w.anchors[i]["iou"])
        row = w.anchors[lvl]["anchor"]
    w.class_scores = d.scores_at(image, lvl, row)
    s = float(w.class_scores[cls])
    if assigned is not None and len(assigned[0]) == 0:
        best = max(a["iou"] for a in w.anchors)
        w.lost_at, w.reason = "anchors", (f"{type(tr.model_ref()).__name__}.label_anchors assigns "
                                          f"it no anchor (best anchor IoU {best:.2f}).")
        return w
    if d.selections is None:
        w.reason = "the per-image inference put no selection record"
        return w
    cand = d.candidates[image]
    same = cand.pred_classes == cls
    if assigned is not None:  # the candidates of its class from its assigned anchors
        key = d.candidate_level[image] * (1 << 32) + d.candidate_anchor[image]
        mine = torch.isin(key, assigned[0].to(key.device) * (1 << 32) + assigned[1].to(key.device))
        over = (same & mine & (d.candidate_anchor[image] >= 0)).nonzero()[:, 0]
        where = f"its {len(assigned[0])} assigned anchors"
    else:  # the model cannot be asked: the candidates of its class that overlap it
        same = same.nonzero()[:, 0]
        ious = box_iou(gtb, cand.pred_boxes[same])[0] if len(same) else torch.zeros(0)
        over = same[ious >= t] if len(same) else same
        where = f"the candidates at IoU >= {t}"
    if len(over) == 0:
        w.lost_at, w.reason = "score_thresh", (f"no candidate of its class from {where}: the "
                                               f"best scores it {s:.3f} (score_thresh "
                                               f"{d.score_thresh}, top {d.topk_candidates} per level).")
        return w
    kept = over[d.nms_kept[image][over]]
    if len(kept) == 0:
        w.lost_at, w.reason = "nms", (f"the class-wise NMS suppressed every candidate of its class "
                                      f"from {where}.")
        return w
    detected = kept[torch.isin(kept, d.det_candidate[image].to(kept.device))]
    if len(detected) == 0:
        w.lost_at, w.reason = "topk", (f"its candidates from {where} survived NMS but fell past "
                                       f"the top {d.topk}.")
        return w
    w.lost_at, w.reason = "localisation", (f"{len(detected)} detections of its class came from "
                                           f"{where}, but none reaches IoU {t} with it.")
    return w

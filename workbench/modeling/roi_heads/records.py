"""What the ROI heads computed on one forward: put by ``_forward_box``, ``_forward_mask`` and
``_forward_keypoint`` (and their Res5 / cascade versions) while a stage recorder is active.

Shape legend: N images; Ri ROIs of image i, R = sum Ri, image 0's first; K foreground classes
(K+1 with background, last); C, P channels and side of pooled ROI features; D box-head width;
Di detections of image i, D = sum Di. Boxes are XYXY in pixels of the resized input image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from torch import nn

from torch import Tensor

from workbench.structures import Instances

from ..recording import LazyPooled, SelectionSettings, active_recorder

__all__ = ["BoxSelection", "BoxStage", "BoxRecord", "MaskRecord", "KeypointRecord", "put_box_record",
           "run_head_recorded"]


def _shape(t) -> str:
    return "None" if t is None else f"{tuple(t.shape)}"


@dataclass
class BoxSelection:
    """What ``fast_rcnn_inference`` did, per image, by index (Ri ROIs, Ci candidates, Di kept).

    Attributes:
        boxes: per image (Ri, K*4 or 4) the decoded boxes it was given (not clipped).
        scores: per image (Ri, K+1) the class probabilities it was given.
        candidates: per image (Ci, 2) the (ROI, class) pairs scoring above ``score_thresh``,
            in row-major order: what the per-class NMS was run on (ROI rows count all ROIs).
        nms_kept: per image (Ci,) bool, the candidate survived NMS (before the top-k).
        roi_index: per image (Di,) the ROI each detection came from (all ROIs counted).
        instances: per image, the detections.
        settings: score_thresh, nms_thresh and topk as used (and where the model keeps them,
            when the caller said so; see ``FastRCNNOutputLayers.select``).
    """

    boxes: List[Tensor]
    scores: List[Tensor]
    candidates: List[Tensor]
    nms_kept: List[Tensor]
    roi_index: List[Tensor]
    instances: List[Instances]
    settings: Optional[SelectionSettings] = None

    @property
    def score_thresh(self) -> float:
        return self.settings.values["score_thresh"]

    @property
    def nms_thresh(self) -> float:
        return self.settings.values["nms_thresh"]

    @property
    def topk(self) -> int:
        return self.settings.values["topk"]


@dataclass
class BoxStage:
    """One pass of pooler -> box head -> box predictor (a cascade has one per stage).

    Attributes:
        proposals: per image, the ROIs of this pass (``proposal_boxes``).
        pool: the pooled ROI features (R, C, P, P), kept or recomputed by the model's pooler;
            ``pooled`` reads them all, ``pooled_rows`` a few.
        pooler_level: (R,) index of the feature map each ROI was pooled from (None with one map).
        embeddings: (R, D) box-head output (C4 models: res5 output averaged over space).
        logits: (R, K+1) class logits, background last.
        deltas: (R, K*4) class-specific (or (R, 4) class-agnostic) box deltas.
        boxes: per image (Ri, K*4 or 4) decoded boxes, not clipped (None if unknown).
        probs: per image (Ri, K+1) class probabilities (None if unknown).
        pooler_features: the feature names ``pooler_level`` indexes ("p2".."p5").
    """

    proposals: List[Instances]
    pool: LazyPooled
    pooler_level: Optional[Tensor]
    embeddings: Tensor
    logits: Tensor
    deltas: Tensor
    boxes: Optional[List[Tensor]] = None
    probs: Optional[List[Tensor]] = None
    pooler_features: Optional[List[str]] = None

    @property
    def pooled(self) -> Tensor:
        return self.pool.all()

    def pooled_rows(self, image: int, rois: Tensor) -> Tensor:
        """(M, C, P, P) pooled features of ROIs ``rois`` of ``image``."""
        return self.pool.rows(image, rois)

    def __repr__(self) -> str:
        return (f"BoxStage(proposals={[len(p) for p in self.proposals]}, pool={self.pool!r}, "
                f"embeddings={_shape(self.embeddings)}, logits={_shape(self.logits)}, "
                f"deltas={_shape(self.deltas)})")


@dataclass
class BoxRecord:
    """The box branch: per-ROI predictions of every pass, and what the selection kept.

    Attributes:
        stages: one :class:`BoxStage`, or one per cascade stage.
        selection: what ``fast_rcnn_inference`` did (None if the predictor's inference was
            replaced by one that puts no record). Its fields are also read through here:
            ``scores`` / ``boxes`` (the inputs of the selection: cascade scores are the stage
            mean), ``candidates``, ``nms_kept``, ``instances``, ``roi_index`` and the settings
            ``score_thresh``, ``nms_thresh``, ``topk``.
    """

    stages: List[BoxStage]
    selection: Optional[BoxSelection]

    @property
    def proposals(self) -> List[Instances]:
        """The ROIs of the first pass: the proposals the heads were given."""
        return self.stages[0].proposals

    def _sel(self, name: str):
        if self.selection is None:
            raise AttributeError(f"BoxRecord.{name}: the box predictor's inference put no "
                                 "selection record (it overrides FastRCNNOutputLayers.inference).")
        return getattr(self.selection, name)

    scores = property(lambda self: self._sel("scores"))
    boxes = property(lambda self: self._sel("boxes"))
    candidates = property(lambda self: self._sel("candidates"))
    nms_kept = property(lambda self: self._sel("nms_kept"))
    instances = property(lambda self: self._sel("instances"))
    roi_index = property(lambda self: self._sel("roi_index"))
    score_thresh = property(lambda self: self._sel("score_thresh"))
    nms_thresh = property(lambda self: self._sel("nms_thresh"))
    topk = property(lambda self: self._sel("topk"))

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
        if self.selection is None:
            return f"BoxRecord(stages=[{st}], selection=None)"
        return (f"BoxRecord(stages=[{st}], candidates={[len(c) for c in self.candidates]}, "
                f"kept_by_nms={[int(k.sum()) for k in self.nms_kept]}, "
                f"detections={[len(i) for i in self.instances]}, score_thresh={self.score_thresh}, "
                f"nms_thresh={self.nms_thresh}, topk={self.topk})")


@dataclass
class MaskRecord:
    """The mask head on the detections.

    Attributes:
        pool: pooled features of the detection boxes (None without a pooler; for C4 models
            the res5 output of the crops); ``pooled`` reads them (D, C, S, S).
        logits: (D, K, M, M) raw mask logits of every class (M = 28 by default); None for a
            head whose ``forward`` puts no record.
        instances: per image, the detections with ``pred_masks`` (Di, 1, M, M).
    """

    pool: Optional[LazyPooled]
    logits: Optional[Tensor]
    instances: List[Instances]

    @property
    def pooled(self) -> Optional[Tensor]:
        return None if self.pool is None else self.pool.all()

    def __repr__(self) -> str:
        return (f"MaskRecord(pool={self.pool!r}, logits={_shape(self.logits)}, "
                f"instances={[len(i) for i in self.instances]})")


@dataclass
class KeypointRecord:
    """The keypoint head on the detections.

    Attributes:
        pool: pooled features of the detection boxes (None without a pooler); ``pooled``.
        heatmaps: (D, K, M, M) heatmap logits (K keypoints, M = 56 by default); None for a
            head whose ``forward`` puts no record.
        instances: per image, the detections with ``pred_keypoints`` (Di, K, 3).
    """

    pool: Optional[LazyPooled]
    heatmaps: Optional[Tensor]
    instances: List[Instances]

    @property
    def pooled(self) -> Optional[Tensor]:
        return None if self.pool is None else self.pool.all()

    def __repr__(self) -> str:
        return (f"KeypointRecord(pool={self.pool!r}, heatmaps={_shape(self.heatmaps)}, "
                f"instances={[len(i) for i in self.instances]})")


# -- how the ROI heads put them ----------------------------------------------------------------

def put_box_record(rec, stages: List[BoxStage], mark: int) -> None:
    """Put the :class:`BoxRecord` of a box branch: its passes and the selection put since
    ``mark`` (the stage's ``boxes`` / ``probs`` default to what the selection was given)."""
    if not stages:  # a custom pass that records nothing: the branch is not shown
        return
    selection = rec.since(mark, "box_selection")
    selection = selection[-1] if selection else None
    last = stages[-1]
    if selection is not None and last.boxes is None:
        last.boxes, last.probs = selection.boxes, selection.scores
    rec.put("box", BoxRecord(stages=stages, selection=selection))


def run_head_recorded(head: nn.Module, x, instances: List[Instances], pool: Optional[LazyPooled],
                      training: bool, kind: str):
    """``head(x, instances)``; at inference under a recorder, put its Mask/KeypointRecord with
    the logits the head's forward put (``"mask_logits"`` / ``"keypoint_heatmaps"``)."""
    rec = None if training else active_recorder()
    if rec is None:
        return head(x, instances)
    mark = rec.mark()
    out = head(x, instances)
    if kind == "mask":
        logits = rec.since(mark, "mask_logits")
        rec.put("mask", MaskRecord(pool=pool, logits=logits[-1] if logits else None, instances=out))
    else:
        logits = rec.since(mark, "keypoint_heatmaps")
        rec.put("keypoint", KeypointRecord(pool=pool, heatmaps=logits[-1] if logits else None,
                                           instances=out))
    return out

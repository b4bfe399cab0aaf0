"""Run a traced forward again from one of its stages: :func:`resume` and :func:`rethreshold`.

Both run the model's own forward once more inside a stage recorder that hands it, at every
stage point that finished before the resume point, the value the trace recorded there
(:meth:`~workbench.modeling.recording.StageRecorder.resume_at`): the stages before are reused,
not re-run, and whatever the model does from there on is what the new trace shows.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from workbench.modeling.recording import SKIP
from workbench.structures import Instances

from .trace import Trace, _check_model, _device_of, _forward, _to_device, _unwrap

__all__ = ["resume", "rethreshold"]


def _check_same_model(model: nn.Module, tr: Trace) -> None:
    traced = tr.model_ref() if tr.model_ref is not None else None
    if traced is not None and traced is not model:
        raise ValueError(f"This trace was made with another model ({type(traced).__name__} at "
                         f"{id(traced):#x}); resume / rethreshold run the forward of the model it "
                         "traced.")


def _rerun(model: nn.Module, tr: Trace, order: int, *, substitutes=None, detections=None,
           grad: bool = False) -> Trace:
    """The forward of ``tr`` again, resumed at recorder position ``order``; proposals or
    detections the trace was given stay given unless replaced."""
    if tr.recorder is None:
        raise ValueError("This trace holds no recorder to resume from.")
    reuse, seed = tr.recorder.resume_at(order)
    reuse.update(substitutes or {})
    if tr.given_proposals is not None:
        reuse.setdefault("proposals", tr.given_proposals)
    if detections is None:
        detections = tr.given_detections
    if tr.detections_only:
        reuse.setdefault("given_boxes", SKIP)
        reuse.setdefault("sem_seg_head", SKIP)
    return _forward(model, tr.inputs, tr.ground_truth, substitutes=reuse, seed=seed, detections=detections, grad=grad,
                    class_names=tr.class_names, iou_thresh=tr.iou_thresh,
                    detections_only=tr.detections_only,
                    bottom_up=tr.backbone.bottom_up if tr.backbone is not None else None,
                    required=list(substitutes or {}),
                    given_proposals=(substitutes or {}).get("proposals", tr.given_proposals))


def _stage_entry(tr: Trace, kind: str, what: str):
    e = tr.recorder.entry(kind) if tr.recorder is not None else None
    if e is None:
        raise ValueError(f"This trace has no {what} to resume from{tr.why_unavailable(kind)}.")
    return e


def resume(model: nn.Module, tr: Trace, *, features: Optional[Dict[str, Tensor]] = None,
           proposals: Optional[List[Instances]] = None,
           detections: Optional[List[Instances]] = None, grad: bool = False) -> Trace:
    """Run the model's forward again from the stage you replaced, reusing the stages before it.

    Give exactly one of ``features`` (edited backbone maps), ``proposals`` (hand-made ROIs,
    input px) or ``detections`` (boxes for the mask / keypoint heads, input px).

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
    model = _unwrap(model, None)[0]
    _check_same_model(model, tr)
    _check_model(model)
    like = _device_of(model)
    if features is not None:
        if not isinstance(features, dict):
            raise TypeError(f"features must be a dict name -> (N, C, H, W), got "
                            f"{type(features).__name__}.")
        e = _stage_entry(tr, "backbone", "backbone stage")
        return _rerun(model, tr, e.start, substitutes={"backbone": dict(features)}, grad=grad)
    if proposals is not None:
        e = _stage_entry(tr, "proposals", "'proposals' stage")
        return _rerun(model, tr, e.start, substitutes={"proposals": _to_device(
            proposals, like, "proposals")}, grad=grad)
    e = _stage_entry(tr, "proposals", "'proposals' stage (detections go to the ROI heads)")
    return _rerun(model, tr, e.start, detections=_to_device(detections, like, "detections"),
                  grad=grad)


def _check_thresh(name: str, value: Optional[float], low: float = 0.0) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not low <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [{low:g}, 1], got {value!r}.")
    return float(value)


def _check_count(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (value > 0 or value == -1):
        raise ValueError(f"{name} must be a positive int (or -1 for all), got {value!r}.")
    return value


def rethreshold(model: nn.Module, tr: Trace, *, score_thresh: Optional[float] = None,
                nms_thresh: Optional[float] = None, topk: Optional[int] = None,
                topk_candidates: Optional[int] = None) -> Trace:
    """The detections ``model`` gives with other test settings, from a trace.

    The model's own forward runs again from its selection (``fast_rcnn_inference``, a dense
    detector's per-image inference, or the RPN's for an RPN-only model) with the settings
    changed on the model for the duration; the stages before it are reused, not re-run. The
    mask and keypoint heads, which work on the final boxes, run on the new detections.

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
    values = {"score_thresh": _check_thresh("score_thresh", score_thresh),
              "nms_thresh": _check_thresh("nms_thresh", nms_thresh),
              "topk": _check_count("topk", topk),
              "topk_candidates": _check_count("topk_candidates", topk_candidates)}
    values = {k: v for k, v in values.items() if v is not None}
    model = _unwrap(model, None)[0]
    _check_same_model(model, tr)
    _check_model(model)
    rec = tr.recorder
    # The selection that made the final outputs: the RPN's only for an RPN-only model.
    kind = {"retinanet": "dense", "rpn": "rpn_selection"}.get(tr.architecture, "box_selection")
    entry = rec.entry(kind) if rec is not None else None
    if entry is None:
        raise ValueError(f"A {tr.architecture} trace has no recorded selection to re-threshold"
                         f"{tr.why_unavailable('box.selection') or tr.why_unavailable('box')}.")
    settings = entry.value.settings
    if settings.owner is None:
        raise ValueError("The recorded selection does not say where the model keeps its settings.")
    unknown = [k for k in values if k not in settings.attrs]
    if unknown:
        raise ValueError(f"{unknown[0]} does not apply to this trace's selection "
                         f"({type(settings.owner).__name__}: {sorted(settings.attrs)}).")
    with torch.no_grad(), settings.overridden(**values):
        new = _rerun(model, tr, entry.order)
    got = new.recorder.last(entry.kind).settings.values
    wrong = [k for k, v in values.items() if got.get(k) != v]
    if wrong:
        raise RuntimeError(f"The model's selection ran with {wrong[0]}={got.get(wrong[0])}, not "
                           f"{values[wrong[0]]}: a custom inference that does not read "
                           f"{type(settings.owner).__name__}.{settings.attrs[wrong[0]]}.")
    return new

"""``trace(model, inputs)``: the model's own forward, with every stage it ran kept for reading.

::

    tr = trace(model, inputs)             # tr.outputs IS model(inputs): the same forward
    tr                                    # what each stage produced: shapes and counts
    d = tr.detection(0, image=0)          # proposal, anchor, level, ROI feature, embedding
    tr = trace(predictor, dataset_dict)   # the scored pass: the evaluator's test-time input

The trace runs ``model(inputs)`` once inside a stage recorder
(:mod:`workbench.modeling.recording`) and reads what the model's stage methods recorded:
whatever a subclass overrides is what runs, and a custom part that records nothing leaves its
stage absent (``tr.unavailable`` says which and why). :func:`resume` re-runs the forward from
a stage you replaced and :func:`rethreshold` from the selection with other test settings,
both through the model's own forward, reusing the stages before that point (``rerun.py``).

Shape legend: N images; Oi final detections of image i (``outputs[i]["instances"]``).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from workbench.modeling.recording import SKIP, StageRecorder, record_stages
from workbench.structures import Instances
from workbench.utils.events import EventStorage

from . import stages as S
from .ground_truth import (GroundTruth, Match, ground_truth_from_input, match_detections,
                           rotated_like)
from .hooks import Captured, capture, describe
from .provenance import Detection, Provenance, detection_of, provenance_of, same_detections
from .why_missed import WhyMissed, why_missed

__all__ = ["Trace", "Provenance", "Detection", "trace"]


@dataclass
class Trace:
    """The stages of one forward (see the module docstring). Build it with :func:`trace`.

    Attributes:
        architecture: what the outputs hold: "rcnn", "panoptic_fpn", "rpn", "retinanet" (any
            dense detector) or "semantic".
        inputs: the model's ``list[dict]`` that was run (after the test-time transform).
        preprocess: the normalised, padded batch and the original -> input scales.
        backbone: feature maps (and the FPN's bottom-up maps).
        rpn: the RPN's record: anchors, objectness, deltas, candidates, proposals.
        proposals: per image, the proposals the ROI heads received.
        box: the box branch's record (per-ROI pooled features, embeddings, logits, selection).
        mask, keypoint: the mask / keypoint heads' records on the detections.
        dense: a dense detector's record (head outputs, candidates, selection).
        sem_seg: semantic logits (Panoptic FPN, SemanticSegmentor).
        instances: per image, the raw detections at input resolution, before postprocessing.
        outputs: what ``model(inputs)`` returned, in this very forward.
        output_rows: per image, row of ``instances`` of each output detection.
        ground_truth: per image, the annotations given with the input (original px), or None.
        class_names: the metadata's ``thing_classes`` when known.
        input_format: the model's ``input_format`` ("BGR" / "RGB": the channel order of
            ``inputs[i]["image"]``), None if the model has none.
        feature_strides: input pixels per cell of each backbone map (FPN levels and bottom-up
            stages), from the backbone's ``output_shape()``; None if it has none.
        unavailable: stage -> why the trace cannot show it (a custom part that records nothing).
        losses, loss_scalars: the training losses (``trace(..., losses=True)``), else None.
        captured: hooks requested with ``trace(..., capture=[...])``.
        detections_only: the trace skipped the mask / keypoint / semantic heads.
    """

    architecture: str
    inputs: List[Dict[str, Any]]
    preprocess: Optional[S.Preprocessed]
    backbone: Optional[S.BackboneOutput]
    rpn: Any = None
    proposals: Optional[List[Instances]] = None
    box: Any = None
    mask: Any = None
    keypoint: Any = None
    dense: Any = None
    sem_seg: Optional[S.SemSegOutput] = None
    instances: Optional[List[Instances]] = None
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    output_rows: List[Optional[Tensor]] = field(default_factory=list)
    ground_truth: List[Optional[GroundTruth]] = field(default_factory=list)
    class_names: Optional[List[str]] = None
    iou_thresh: float = 0.5
    unavailable: Dict[str, str] = field(default_factory=dict)
    losses: Optional[Dict[str, Tensor]] = None
    loss_scalars: Optional[Dict[str, float]] = None
    captured: Optional[Captured] = None
    detections_only: bool = False
    input_format: Optional[str] = None
    feature_strides: Optional[Dict[str, int]] = None
    given_proposals: Optional[List[Instances]] = field(default=None, repr=False)
    given_detections: Optional[List[Instances]] = field(default=None, repr=False)
    recorder: Optional[StageRecorder] = field(default=None, repr=False)
    model_ref: Any = field(default=None, repr=False)  # weakref to the model traced
    _cache: Dict[tuple, Any] = field(default_factory=dict, repr=False)

    @property
    def num_images(self) -> int:
        return len(self.outputs)

    def why_unavailable(self, stage: str) -> str:
        reason = self.unavailable.get(stage)
        return f" ({reason})" if reason else ""

    def __repr__(self) -> str:
        lines = [f"Trace({self.architecture}, {self.num_images} images)"]
        pre = self.preprocess
        if pre is not None:
            lines.append(f"  preprocess  images {tuple(pre.images.tensor.shape)}, sizes "
                         f"{pre.image_sizes} (input px), scales "
                         f"{[(round(a, 3), round(b, 3)) for a, b in pre.scales]}")
        if self.backbone is not None:
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
            lines.append(f"  instances   {[len(x) for x in self.instances]} (input px)")
        keys = sorted({k for o in self.outputs for k in o})
        lines.append(f"  outputs     {len(self.outputs)} dicts with {keys} (original px)")
        if any(g is not None for g in self.ground_truth):
            lines.append(f"  ground truth {[None if g is None else len(g) for g in self.ground_truth]}"
                         f" objects, matched at IoU {self.iou_thresh}")
        for stage, reason in self.unavailable.items():
            lines.append(f"  (no {stage}: {reason})")
        if self.losses is not None:
            losses = ", ".join(f"{k}={float(v):.4f}" for k, v in self.losses.items())
            lines.append(f"  losses      {losses}")
        if self.captured is not None:
            lines.append(f"  captured    {self.captured.names}")
        return "\n".join(lines)

    # -- provenance and ground truth ---------------------------------------------------------

    def _check_image(self, image: int) -> None:
        if not 0 <= image < self.num_images:
            raise IndexError(f"image {image} out of range for a trace of {self.num_images} images.")

    def provenance(self, image: int = 0, *, anchors: bool = True) -> Provenance:
        """Where every final detection of ``image`` came from (computed once, then cached).

        Example::

            p = tr.provenance(0)
            p.embeddings          # (O0, D) box-head vectors of the final detections
            p.roi_index, p.level, p.anchor_index

        Args:
            anchors: also trace R-CNN proposals back to their RPN anchors (``level``,
                ``anchor_*``); False skips that when only the per-ROI fields are needed.
        """
        self._check_image(image)
        if ("prov", image, True) in self._cache:
            return self._cache[("prov", image, True)]
        key = ("prov", image, anchors)
        if key not in self._cache:
            self._cache[key] = provenance_of(self, image, anchors)
        return self._cache[key]

    def matches(self, image: int = 0) -> Optional[List[Match]]:
        """Per final detection of ``image``, its :class:`Match` to the ground truth (None
        without ground truth)."""
        self._check_image(image)
        if self.ground_truth[image] is None:
            return None
        key = ("match", image)
        if key not in self._cache:
            out = self.outputs[image].get("instances")
            if out is None:
                raise ValueError(f"A {self.architecture} trace has no detections to match.")
            self._cache[key] = match_detections(out.pred_boxes.tensor, out.scores, out.pred_classes,
                                                self.ground_truth[image], self.iou_thresh,
                                                self.class_names)
        return self._cache[key][0]

    def missed(self, image: int = 0) -> List[int]:
        """Indices of the ground-truth objects of ``image`` no detection took (crowd excluded)."""
        if self.matches(image) is None:
            raise ValueError(f"image {image} of this trace has no ground truth: trace a dataset "
                             "dict with 'annotations', or inputs with 'instances'.")
        gt_det = self._cache[("match", image)][1]
        gt = self.ground_truth[image]
        return [j for j in range(len(gt)) if gt_det[j] < 0 and not bool(gt.crowd[j])]

    def detection(self, index: int, image: int = 0) -> Detection:
        """Final detection ``index`` of ``image`` and its history (and its ground truth match).

        ``index`` counts the rows of ``outputs[image]["instances"]`` (negative from the end).

        Example::

            d = tr.detection(0, image=0)
            d.proposal_box, d.anchor_box, d.level_name, d.objectness
            d.embedding.shape     # (D,), the box-head vector (1024-d in the model zoo)
        """
        p = self.provenance(image)
        matches = self.matches(image) if "instances" in self.outputs[image] else None
        n = len(p)
        m = matches[index % n] if matches is not None and -n <= index < n else None
        return detection_of(p, index, self.class_names, m)

    def why_missed(self, gt_index: int, image: int = 0) -> WhyMissed:
        """Why ground-truth object ``gt_index`` of ``image`` has no detection, stage by stage.

        Example::

            for j in tr.missed(0):
                print(tr.why_missed(j, image=0))   # anchors, proposal, class scores, NMS
        """
        self._check_image(image)
        if self.matches(image) is None:
            raise ValueError(f"image {image} of this trace has no ground truth to explain.")
        gt = self.ground_truth[image]
        if not 0 <= gt_index < len(gt):
            raise IndexError(f"image {image} has {len(gt)} ground-truth objects, asked for {gt_index}.")
        return why_missed(self, image, gt_index, int(self._cache[("match", image)][1][gt_index]))


# -- building a trace from a recorded forward --------------------------------------------------

def _architecture(outputs: List[Dict[str, Any]], dense) -> str:
    keys = {k for o in outputs for k in o}
    if dense is not None:
        return "retinanet"
    if "panoptic_seg" in keys or ("sem_seg" in keys and "instances" in keys):
        return "panoptic_fpn"
    if "proposals" in keys and "instances" not in keys:
        return "rpn"
    if "instances" in keys:
        return "rcnn"
    return "semantic"


def _from_records(model: nn.Module, rec: StageRecorder, batch: List[Dict[str, Any]], outputs,
                  bottom_up, ground_truth, class_names, iou_thresh: float,
                  detections_only: bool) -> Trace:
    images = rec.last("preprocess")
    pre = S.Preprocessed.of(images, batch) if images is not None else None
    features = rec.last("backbone")
    feats = S.BackboneOutput(features, bottom_up) if features is not None else None
    sem = rec.last("sem_seg_head")
    tr = Trace(architecture=_architecture(outputs, rec.last("dense")), inputs=list(batch),
               preprocess=pre, backbone=feats, rpn=rec.last("rpn"), proposals=rec.last("proposals"),
               box=rec.last("box"), mask=rec.last("mask"), keypoint=rec.last("keypoint"),
               dense=rec.last("dense"), sem_seg=S.SemSegOutput(sem) if sem is not None else None,
               outputs=outputs, class_names=class_names, iou_thresh=iou_thresh,
               detections_only=detections_only, recorder=rec)
    # Raw detections and output rows: the postprocess record whose output each output is.
    posts = {id(p.output): p for p in rec.all("postprocess")}
    instances, rows = [], []
    for out in outputs:
        final = out.get("instances", out.get("proposals"))
        p = posts.get(id(final)) if final is not None else None
        instances.append(None if p is None else p.source)
        rows.append(None if p is None else p.rows)
    tr.instances = instances if any(x is not None for x in instances) else None
    tr.output_rows = rows
    tr.unavailable = _unavailable(model, tr, rec)
    if callable(ground_truth):  # parsed here, once the scales are known
        scales = pre.scales if pre is not None else [(1.0, 1.0)] * len(batch)
        ground_truth = ground_truth(scales)
    tr.ground_truth = list(ground_truth)
    for i, (gt, out) in enumerate(zip(tr.ground_truth, outputs)):
        final = out.get("instances")  # rotated detections: upright ground truth as angle 0
        if gt is not None and final is not None and final.has("pred_boxes") \
                and final.pred_boxes.tensor.shape[-1] == 5:
            tr.ground_truth[i] = rotated_like(gt)
    return tr


def _unavailable(model: nn.Module, tr: Trace, rec: StageRecorder) -> Dict[str, str]:
    """Stages the model ran but recorded nothing of, and why (custom parts)."""
    out: Dict[str, str] = {}
    if tr.preprocess is None or tr.backbone is None:
        out["preprocess/backbone"] = (f"{type(model).__name__}'s forward has no 'preprocess' / "
                                      "'backbone' stage points (it overrides forward or inference "
                                      "without workbench.modeling.recording.run_stage)")
    has_boxes = any("instances" in o for o in tr.outputs)
    if tr.proposals is not None and tr.box is None and has_boxes and not rec.used & {"given_boxes"}:
        out["box"] = (f"{type(model.roi_heads).__name__} puts no BoxRecord (an override of "
                      "_forward_box that does not record); detections are the model's, their ROIs "
                      "unknown")
    elif tr.box is not None and tr.box.selection is None:
        out["box.selection"] = ("the box predictor's inference puts no selection record (it "
                                "overrides FastRCNNOutputLayers.inference): ROI of each detection "
                                "unknown")
    if tr.rpn is None and "proposals" in {e.kind for e in rec.entries} and \
            "proposals" not in rec.used and getattr(model, "proposal_generator", None) is not None:
        out["rpn"] = (f"{type(model.proposal_generator).__name__} puts no RPNRecord (a custom "
                      "proposal generator); the proposals are known, their anchors are not")
    elif tr.rpn is not None and tr.rpn.selection is None:
        out["rpn.selection"] = (f"{type(model.proposal_generator).__name__}.predict_proposals puts "
                                "no selection record: the anchor of each proposal is unknown")
    if tr.dense is not None and tr.dense.selections is None:
        out["dense.selection"] = "the per-image inference puts no selection record"
    if any(("instances" in o or "proposals" in o) for o in tr.outputs) and tr.instances is None:
        out["provenance"] = "the model's postprocessing puts no record (detector_postprocess)"
    elif tr.box is not None and tr.box.selection is not None and tr.instances is not None and any(
            raw is not None and not same_detections(raw, sel)
            for raw, sel in zip(tr.instances, tr.box.instances)):
        out["provenance"] = ("the ROI heads returned other detections than the box selection's "
                             "(an override changed them after it): their ROIs are unknown")
    return out


# -- running -------------------------------------------------------------------------------------

def _unwrap(model, cfg):
    """(model, cfg, test-time inputs or None) from a model or a DefaultPredictor (which carries
    its cfg and the inputs it makes)."""
    if not isinstance(model, nn.Module) and hasattr(model, "model") and hasattr(model, "cfg"):
        return model.model, cfg if cfg is not None else model.cfg, getattr(model, "inputs", None)
    return model, cfg, None


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"trace() takes a model (nn.Module) or a DefaultPredictor, got "
                        f"{type(model).__name__}.")
    if model.training:
        raise RuntimeError(
            "trace() runs inference and needs model.eval(); the training losses come from "
            "trace(model, inputs, losses=True), which runs its own training-mode pass."
        )


def _as_batch(inputs, cfg, make=None) -> tuple:
    """(model input dicts, what was given per image): the test-time transform for dataset
    dicts, image paths and arrays (``make``, a predictor's
    :class:`~workbench.data.test_time.InferenceInputs`, else one of ``cfg``)."""
    import numpy as np
    import os

    if isinstance(inputs, (dict, str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or len(inputs) == 0:
        raise TypeError(f"trace() takes a non-empty list of inputs (model input dicts, dataset "
                        f"dicts, image paths or HWC arrays), got {type(inputs).__name__}.")
    items = list(inputs)
    if all(isinstance(x, dict) and "image" in x for x in items):
        return items, items
    if make is None:
        if cfg is None:
            raise ValueError("Tracing dataset dicts, image paths or arrays applies the test-time "
                             "transform of a cfg (INPUT.FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST): "
                             "pass cfg=..., or a DefaultPredictor instead of the model.")
        from workbench.data.test_time import InferenceInputs

        make = InferenceInputs(cfg)
    return [make(x, i) for i, x in enumerate(items)], items


def _class_names(cfg, class_names):
    if class_names is not None or cfg is None:
        return None if class_names is None else list(class_names)
    from workbench.data import MetadataCatalog

    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        names = MetadataCatalog.get(name).get("thing_classes", None)
        if names:
            return list(names)
    return None


def _device_of(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.buffers(), model.parameters()):
        return t.device
    return torch.device("cpu")


def _to_device(instances, device: torch.device, what: str) -> List[Instances]:
    if not isinstance(instances, (list, tuple)) or not all(isinstance(x, Instances) for x in instances):
        raise TypeError(f"{what} must be a list with one Instances per image, got "
                        f"{type(instances).__name__}.")
    return [x.to(device) for x in instances]


def _forward(model: nn.Module, batch, ground_truth, *, substitutes=None, seed=(), detections=None,
             grad=False, capture_names=None, class_names=None, iou_thresh=0.5,
             detections_only=False, bottom_up=None, required=(), given_proposals=None) -> Trace:
    """Run the model's forward under a recorder and build the :class:`Trace` of it."""
    with contextlib.ExitStack() as ctx:
        ctx.enter_context(torch.set_grad_enabled(grad))
        cap = ctx.enter_context(_capture_ctx(model, capture_names, grad))
        calls = ctx.enter_context(S.bottom_up_of(model))
        rec = ctx.enter_context(record_stages(substitutes=substitutes, seed=seed))
        if detections is not None:
            if not callable(getattr(model, "inference", None)):
                raise TypeError(f"{type(model).__name__} has no inference(inputs, "
                                "detected_instances=...): it cannot take given detections.")
            outputs = model.inference(batch, detected_instances=detections)
        else:
            outputs = model(batch)
    seen = [e.kind for e in rec.entries[len(seed):] if e.stage_point]
    repeated = sorted({k for k in seen if seen.count(k) > 1})
    if repeated:
        raise ValueError(f"The stage point {repeated[0]!r} ran {seen.count(repeated[0])} times in one "
                         f"call of {type(model).__name__}: a trace follows one forward pass (a "
                         "wrapper that runs the model per image? trace the model itself).")
    missing = [k for k in required if k not in rec.used]
    if missing:
        raise ValueError(f"{type(model).__name__}'s forward never reached the stage point "
                         f"{missing[0]!r}, so it cannot take the value given for it (a custom "
                         "forward without workbench.modeling.recording.run_stage).")
    if bottom_up is None and len(calls) == 1:
        bottom_up = calls[0]
    tr = _from_records(model, rec, batch, outputs, bottom_up, ground_truth, class_names,
                       iou_thresh, detections_only)
    tr.captured = cap
    tr.given_proposals, tr.given_detections = given_proposals, detections
    tr.model_ref = weakref.ref(model)
    tr.input_format = getattr(model, "input_format", None)
    tr.feature_strides = _feature_strides(model)
    return tr


def _feature_strides(model: nn.Module) -> Optional[Dict[str, int]]:
    """name -> stride of the backbone's maps (and its bottom-up network's), from their
    ``output_shape()``; None for a backbone without one."""
    strides: Dict[str, int] = {}
    backbone = getattr(model, "backbone", None)
    for part in (getattr(backbone, "bottom_up", None), backbone):
        shapes = getattr(part, "output_shape", None)
        if callable(shapes):
            strides.update({k: int(v.stride) for k, v in shapes().items() if getattr(v, "stride", None)})
    return strides or None


def _capture_ctx(model, names, grad):
    if not names:
        return contextlib.nullcontext(None)
    return capture(model, names, detach=not grad)


def _compute_losses(model: nn.Module, batched_inputs: List[Dict], grad: bool):
    """Training-mode losses with no lasting effect on the model (mode and BN statistics restored)."""
    if not any(k in batched_inputs[0] for k in ("instances", "sem_seg")):
        raise ValueError("trace(..., losses=True) needs ground truth in the model inputs: an "
                         "'instances' (and/or 'sem_seg') entry in every dict (a training mapper's "
                         "output).")
    saved = {name: {k: v.clone() for k, v in m.state_dict().items()}
             for name, m in model.named_modules()
             if getattr(m, "track_running_stats", False) and getattr(m, "running_mean", None) is not None}
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


def trace(model: Union[nn.Module, Any], inputs: Any, *, cfg=None,
          class_names: Optional[Sequence[str]] = None, iou_thresh: float = 0.5,
          proposals: Optional[List[Instances]] = None, detections: Optional[List[Instances]] = None,
          losses: bool = False, capture: Optional[Union[str, Sequence[str]]] = None,
          grad: bool = False, detections_only: bool = False) -> Trace:
    """Run ``model(inputs)`` once and keep what every stage of that forward recorded.

    ``trace(...).outputs`` is what that forward returned: ``model(inputs)``, bit for bit.

    Example::

        tr = trace(model, inputs)
        tr.rpn.proposals[0], tr.box.stages[0].embeddings, tr.outputs[0]["instances"]
        tr.detection(0, image=0).embedding       # box-head vector of the top detection
        tr = trace(predictor, DatasetCatalog.get("shapes_val")[0])  # with ground truth
        tr.detection(0).match, tr.missed(0), tr.why_missed(0)

    Args:
        model: a workbench detector in eval mode, or a ``DefaultPredictor`` (its cfg is used).
        inputs: the model's ``list[dict]``; or dataset dicts, image paths or (H, W, 3) uint8
            BGR arrays (one or a list), which get exactly the test-time transform of
            ``DefaultPredictor`` / ``inference_on_dataset``.
        cfg: the config whose test-time transform applies to non-model inputs, and whose
            datasets' metadata names the classes.
        class_names: names of the classes (default: the cfg's metadata ``thing_classes``).
        iou_thresh: IoU at which detections are matched to ground truth.
        proposals: per image, Instances with ``proposal_boxes`` (input px) to use instead of
            the proposal generator's (R-CNN models).
        detections: per image, Instances with ``pred_boxes`` / ``pred_classes`` (input px):
            ``model.inference(inputs, detected_instances=...)``, the mask / keypoint heads on them.
        losses: also run a training-mode pass on the same inputs (which must carry
            "instances") and store its losses. The model's mode and BatchNorm statistics are
            restored afterwards.
        capture: module names / globs whose outputs to record (``trace.captured``).
        grad: keep the autograd graph (e.g. to differentiate an embedding w.r.t. the image).
        detections_only: skip the mask, keypoint and semantic heads (their stage points);
            ``outputs`` then hold boxes, scores and classes only, equal to the model's.
    """
    # A predictor's own test-time inputs, unless another cfg is given.
    model, cfg, make = _unwrap(model, cfg) if cfg is None else (*_unwrap(model, cfg)[:2], None)
    _check_model(model)
    if not (0.0 < float(iou_thresh) <= 1.0):
        raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}.")
    if detections is not None and (proposals is not None or detections_only):
        raise ValueError("detections= excludes proposals= and detections_only=True.")
    batch, given = _as_batch(inputs, cfg, make)
    substitutes: Dict[str, Any] = {}
    required = []
    if proposals is not None:
        substitutes["proposals"] = _to_device(proposals, _device_of(model), "proposals")
        required.append("proposals")
    if detections_only:
        substitutes.update(given_boxes=SKIP, sem_seg_head=SKIP)
    dets = None if detections is None else _to_device(detections, _device_of(model), "detections")

    def ground_truth(scales):
        return [ground_truth_from_input(g, b, s) for g, b, s in zip(given, batch, scales)]

    tr = _forward(model, batch, ground_truth, substitutes=substitutes, detections=dets, grad=grad,
                  capture_names=capture, class_names=_class_names(cfg, class_names),
                  iou_thresh=float(iou_thresh), detections_only=detections_only, required=required,
                  given_proposals=substitutes.get("proposals"))
    if losses:
        tr.losses, tr.loss_scalars = _compute_losses(model, batch, grad)
    return tr

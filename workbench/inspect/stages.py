"""The stages of a detector, one call each, run by the model's own public methods.

Each function calls the model part a forward calls at that point (``model.preprocess_image``,
``model.backbone``, ``model.proposal_generator``, ``model.roi_heads``,
``roi_heads.forward_with_given_boxes``) under a stage recorder, and returns what the part
recorded (:mod:`workbench.modeling.recording`): nothing here computes a stage itself, so a
part you override is the part that runs. A notebook can call them one by one, change what a
stage returned and carry on::

    pre = preprocess(model, inputs)                    # normalise + pad, exactly as the model
    feats = backbone(model, pre)
    props = rpn(model, pre, feats)                     # RPNRecord; props.proposals: list[Instances]
    box = box_head(model, pre, feats, props.proposals) # BoxRecord; or hand-made proposals
    heads = given_boxes(model, feats, box.instances)   # masks / keypoints of those boxes

There is no way to hand a stage an un-normalised tensor: the backbone stage takes the
:class:`Preprocessed` that :func:`preprocess` returns (detectron2 issue #4421).

Shape legend:
    N        images; Hp x Wp the padded batch; hi x wi image i after the resize (its
             ``image_size``); Hi x Wi the original size ("height" x "width" of the input dict)
    Ri       proposals of image i; Di detections of image i
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from workbench.modeling.recording import SKIP, record_stages
from workbench.modeling.roi_heads.records import BoxRecord, KeypointRecord, MaskRecord
from workbench.modeling.proposal_generator.rpn_record import RPNRecord
from workbench.structures import Boxes, ImageList, Instances, RotatedBoxes

from .hooks import describe

__all__ = [
    "Preprocessed", "BackboneOutput", "SemSegOutput", "HeadsOutput",
    "preprocess", "backbone", "rpn", "box_head", "given_boxes",
]


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

    @classmethod
    def of(cls, images: ImageList, batched_inputs: Sequence[Dict[str, Any]]) -> "Preprocessed":
        """The batch ``images`` made from ``batched_inputs`` (their "height"/"width")."""
        original_sizes, scales = [], []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            oh, ow = int(x.get("height", h)), int(x.get("width", w))
            original_sizes.append((oh, ow))
            scales.append((w / ow, h / oh))
        return cls(images=images, original_sizes=original_sizes, scales=scales)

    @property
    def image_sizes(self) -> List[Tuple[int, int]]:
        return [tuple(int(v) for v in s) for s in self.images.image_sizes]

    def __len__(self) -> int:
        return len(self.images.image_sizes)

    def to_input(self, boxes: Tensor, image: int = 0) -> Tensor:
        """Boxes (M, 4) XYXY, or rotated (M, 5) XYWHA, in original pixels of ``image`` -> input
        pixels (a new tensor)."""
        sx, sy = self.scales[image]
        return scale_boxes(boxes, sx, sy)

    def to_original(self, boxes: Tensor, image: int = 0) -> Tensor:
        """Boxes (M, 4) XYXY, or rotated (M, 5) XYWHA, in input pixels of ``image`` -> original
        pixels (a new tensor)."""
        sx, sy = self.scales[image]
        return scale_boxes(boxes, 1.0 / sx, 1.0 / sy)

    def __repr__(self) -> str:
        return (f"Preprocessed(images={tuple(self.images.tensor.shape)}, "
                f"image_sizes={self.image_sizes}, original_sizes={self.original_sizes})")


def as_boxes(t: Tensor) -> Boxes:
    """The box structure of a (N, 4) XYXY tensor (:class:`Boxes`) or (N, 5) XYWHA tensor
    (:class:`RotatedBoxes`), by its data; the tensor itself is kept (float64 stays float64)."""
    structure = RotatedBoxes(t) if t.dim() == 2 and t.shape[-1] == 5 else Boxes(t)
    structure.tensor = t
    return structure


def scale_boxes(boxes: Tensor, sx: float, sy: float) -> Tensor:
    """A scaled copy of (M, 4) XYXY or (M, 5) XYWHA boxes (float32, or float64 if given),
    scaled through the box structure's own ``scale`` (a rotated box's angle and sides change
    with unequal factors, see :meth:`RotatedBoxes.scale`)."""
    if boxes.dim() != 2 or boxes.shape[-1] not in (4, 5):
        raise ValueError(f"Expected boxes of shape (M, 4) XYXY or (M, 5) XYWHA, got "
                         f"{tuple(boxes.shape)}.")
    out = boxes.clone().to(torch.float32) if boxes.dtype != torch.float64 else boxes.clone()
    structure = as_boxes(out)
    structure.scale(sx, sy)
    return structure.tensor


def preprocess(model: nn.Module, batched_inputs: List[Dict[str, Any]]) -> Preprocessed:
    """``model.preprocess_image(batched_inputs)``, with the original sizes and scales.

    Example::

        pre = preprocess(model, inputs)
        pre.images.tensor.shape          # (N, 3, Hp, Wp), what the backbone sees
        pre.to_input(boxes_in_photo, 0)  # map boxes from the photo into the network input
    """
    return Preprocessed.of(model.preprocess_image(batched_inputs), batched_inputs)


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


@contextmanager
def bottom_up_of(model: nn.Module) -> Iterator[List[Any]]:
    """Collect what ``model.backbone.bottom_up`` returns while inside (an FPN's bottom-up maps;
    nothing for a backbone without one). A bare forward hook, removed on exit."""
    calls: List[Any] = []
    bottom_up = getattr(getattr(model, "backbone", None), "bottom_up", None)
    if not isinstance(bottom_up, nn.Module):
        yield calls
        return
    handle = bottom_up.register_forward_hook(lambda m, args, out: calls.append(out))
    try:
        yield calls
    finally:
        handle.remove()


def backbone(model: nn.Module, pre: Preprocessed) -> BackboneOutput:
    """``model.backbone`` on the preprocessed batch (and the FPN's bottom-up maps).

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
    with bottom_up_of(model) as calls:
        features = model.backbone(pre.images.tensor)
    return BackboneOutput(features=features, bottom_up=calls[0] if len(calls) == 1 else None)


def _recorded(rec, kind: str, what: str, part: Any):
    value = rec.last(kind)
    if value is None:
        raise TypeError(f"{type(part).__name__} put no {what} record: a custom component that "
                        "does not record (see workbench.modeling.recording).")
    return value


def rpn(model: nn.Module, pre: Preprocessed, feats: BackboneOutput) -> RPNRecord:
    """``model.proposal_generator(images, features)`` and its :class:`RPNRecord`.

    Example::

        props = rpn(model, pre, feats)
        props.proposals[0].proposal_boxes    # what the ROI heads get
        props.proposal_level(0), props.proposal_anchor(0)   # where each proposal came from
    """
    gen = getattr(model, "proposal_generator", None)
    if gen is None:
        raise TypeError(f"{type(model).__name__} has no proposal generator.")
    with record_stages() as rec:
        gen(pre.images, feats.features, None)
    return _recorded(rec, "rpn", "RPN", gen)


def box_head(model: nn.Module, pre: Preprocessed, feats: BackboneOutput,
             proposals: List[Instances]) -> BoxRecord:
    """``model.roi_heads`` on ``proposals`` (any ROIs you like), up to the detections.

    Example::

        box = box_head(model, pre, feats, props.proposals)
        box.stages[-1].embeddings            # (R, D): the box-head vector of every ROI
        box.instances[0], box.roi_index[0]   # detections and the ROI each came from

    Args:
        proposals: per image, Instances with ``proposal_boxes`` in input pixels (and
            ``objectness_logits``).
    """
    heads = model.roi_heads
    for i, p in enumerate(proposals):
        if not isinstance(p, Instances) or not p.has("proposal_boxes"):
            got = list(p.get_fields()) if isinstance(p, Instances) else type(p).__name__
            raise ValueError(f"proposals[{i}] must be an Instances with 'proposal_boxes' (Boxes, "
                             f"XYXY input pixels), got {got}.")
    with record_stages(substitutes={"given_boxes": SKIP}) as rec:
        heads(pre.images, feats.features, proposals, None)
    return _recorded(rec, "box", "box", heads)


@dataclass
class HeadsOutput:
    """The heads run on given boxes: ``mask`` / ``keypoint`` records (None without the head)
    and the instances with their masks / keypoints."""

    mask: Optional[MaskRecord]
    keypoint: Optional[KeypointRecord]
    instances: List[Instances]


def given_boxes(model: nn.Module, feats: BackboneOutput, instances: List[Instances]) -> HeadsOutput:
    """``roi_heads.forward_with_given_boxes`` on copies of ``instances`` (not modified).

    Example::

        heads = given_boxes(model, feats, box.instances)
        heads.mask.logits.shape               # (D, K, 28, 28) raw logits of every class
        heads.instances[0].pred_masks         # (D0, 1, 28, 28) probabilities of the class
    """
    for i, x in enumerate(instances):
        if not (isinstance(x, Instances) and x.has("pred_boxes") and x.has("pred_classes")):
            got = list(x.get_fields()) if isinstance(x, Instances) else type(x).__name__
            raise ValueError(f"instances[{i}] must be an Instances with 'pred_boxes' and "
                             f"'pred_classes' (input pixels), got {got}.")
    copies = [Instances(x.image_size, **x.get_fields()) for x in instances]
    with record_stages() as rec:
        out = model.roi_heads.forward_with_given_boxes(feats.features, copies)
    return HeadsOutput(mask=rec.last("mask"), keypoint=rec.last("keypoint"), instances=out)


@dataclass
class SemSegOutput:
    """Attributes:
        logits: (N, C, Hp, Wp) semantic logits of the padded batch.
    """

    logits: Tensor

    def __repr__(self) -> str:
        return f"SemSegOutput(logits={describe(self.logits)})"

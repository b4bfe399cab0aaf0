"""Ground truth joined to a trace: what each detection is, and why a ground-truth object was missed.

When a traced input carries annotations (a dataset dict's ``"annotations"``, or a model input's
``"instances"``), every final detection is matched to the ground truth of its image, COCO-style
(greedily by decreasing score, at ``iou_thresh``), and labelled as TIDE does:

    tp            IoU >= t with an unmatched object of its class
    duplicate     IoU >= t with an object of its class that a higher-scoring detection took
    mislabel      IoU >= t with an object of another class (a classification error)
    localisation  its class, 0.1 <= IoU < t
    both          another class, 0.1 <= IoU < t
    background    IoU < 0.1 with every object
    crowd         not a tp, and inside a crowd region (ignored, as COCO does)

:meth:`Trace.why_missed` then follows an object no detection took back through the stages.
Boxes are XYXY, or (xc, yc, w, h, angle) rows for a rotated model (``RotatedBoxes``); the IoU
follows the kind of box (:func:`box_iou`). Ground truth is kept in original px (the outputs' frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from workbench.structures import (Boxes, BoxMode, RotatedBoxes, pairwise_ioa, pairwise_iou,
                                  pairwise_iou_rotated)

from .provenance import class_name
from .stages import as_boxes, scale_boxes

__all__ = ["GroundTruth", "Match", "ground_truth_from_input", "match_detections", "BACKGROUND_IOU",
           "as_boxes", "box_iou"]

BACKGROUND_IOU = 0.1  # below this IoU with every object, a detection is background (TIDE)


def box_iou(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """(N, M) IoU of the kind of the boxes: rotated for two ``RotatedBoxes``, upright for two
    ``Boxes``; a mix is refused (it has no single IoU)."""
    r1, r2 = isinstance(boxes1, RotatedBoxes), isinstance(boxes2, RotatedBoxes)
    if r1 != r2:
        raise TypeError(f"Cannot compare {type(boxes1).__name__} with {type(boxes2).__name__}: "
                        "both must be upright Boxes or both RotatedBoxes.")
    return pairwise_iou_rotated(boxes1, boxes2) if r1 else pairwise_iou(boxes1, boxes2)


def box_ioa(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """(N, M) intersection over the area of the second box, of the kind of the boxes."""
    if not isinstance(boxes1, RotatedBoxes):
        return pairwise_ioa(boxes1, boxes2)
    iou = box_iou(boxes1, boxes2).double()  # I = IoU (A1 + A2) / (1 + IoU)
    a1, a2 = boxes1.area().double(), boxes2.area().double()
    inter = iou * (a1[:, None] + a2[None, :]) / (1 + iou)
    return torch.where(a2[None, :] > 0, inter / a2.clamp(min=1e-300)[None, :],
                       torch.zeros_like(inter)).float()


@dataclass
class GroundTruth:
    """The annotated objects of one image, in original px.

    Attributes:
        boxes: (G, 4) XYXY, or (G, 5) XYWHA rotated boxes (angle in degrees).
        classes: (G,) contiguous class ids.
        crowd: (G,) bool, COCO ``iscrowd`` regions (never missed, never matched).
    """

    boxes: Tensor
    classes: Tensor
    crowd: Tensor

    def __len__(self) -> int:
        return len(self.classes)


def ground_truth_from_input(item: Any, model_input: Dict[str, Any], scale) -> Optional[GroundTruth]:
    """The ground truth of one traced image, or None if it carries none.

    Args:
        item: what was given to the trace for this image (a dataset dict keeps its
            "annotations", in original px, whatever the mapper dropped).
        model_input: the model's input dict ("instances" with ``gt_boxes`` in input px).
        scale: (sx, sy), input px per original px.
    """
    annos = item.get("annotations") if isinstance(item, dict) else None
    if annos is not None:
        boxes, classes, crowd, modes = [], [], [], set()
        for j, a in enumerate(annos):
            if "bbox" not in a or "category_id" not in a:
                raise KeyError(f"annotation {j} of {item.get('file_name', 'the dataset dict')} needs "
                               f"'bbox' and 'category_id', got keys {sorted(a)}.")
            mode = BoxMode(a.get("bbox_mode", BoxMode.XYWH_ABS))
            rotated = mode == BoxMode.XYWHA_ABS  # kept rotated, as the rotated model sees it
            modes.add(rotated)
            if len(modes) > 1:
                raise ValueError(f"annotation {j} of {item.get('file_name', 'the dataset dict')} "
                                 "mixes rotated (XYWHA_ABS) and upright boxes in one image.")
            bbox = list(map(float, a["bbox"]))
            boxes.append(bbox if rotated else BoxMode.convert(bbox, mode, BoxMode.XYXY_ABS))
            classes.append(int(a["category_id"]))
            crowd.append(bool(a.get("iscrowd", 0)))
        width = 5 if True in modes else 4
        return GroundTruth(torch.tensor(boxes, dtype=torch.float32).reshape(-1, width),
                           torch.tensor(classes, dtype=torch.int64),
                           torch.tensor(crowd, dtype=torch.bool))
    inst = model_input.get("instances")
    if inst is None or not inst.has("gt_boxes"):
        return None
    sx, sy = scale
    # input px -> original px, through the box structure (a rotated box's angle stays right)
    b = scale_boxes(inst.gt_boxes.tensor.detach().to("cpu", torch.float32), 1.0 / sx, 1.0 / sy)
    classes = inst.gt_classes.detach().cpu().to(torch.int64) if inst.has("gt_classes") \
        else torch.zeros(len(b), dtype=torch.int64)
    return GroundTruth(b, classes, torch.zeros(len(b), dtype=torch.bool))


def rotated_like(gt: GroundTruth) -> GroundTruth:
    """Upright ground truth as rotated boxes of angle 0 (for a rotated model's detections)."""
    if gt.boxes.shape[1] == 5:
        return gt
    xywh = BoxMode.convert(gt.boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    return GroundTruth(BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS), gt.classes,
                       gt.crowd)


@dataclass
class Match:
    """What one detection is with respect to the ground truth (see the module docstring).

    Attributes:
        kind: "tp", "duplicate", "mislabel", "localisation", "both", "background" or "crowd".
        gt: index of the object it refers to (-1 for background).
        iou: IoU with that object (0 for background).
        gt_class: that object's class (None for background).
    """

    kind: str
    gt: int
    iou: float
    gt_class: Optional[int]
    class_names: Optional[Sequence[str]] = field(default=None, repr=False)

    def __repr__(self) -> str:
        if self.gt < 0:
            return f"{self.kind} (IoU < {BACKGROUND_IOU} with every object)"
        return (f"{self.kind}: object {self.gt}, {class_name(self.class_names, self.gt_class)}, "
                f"IoU {self.iou:.2f}")


def match_detections(boxes: Tensor, scores: Tensor, classes: Tensor, gt: GroundTruth,
                     iou_thresh: float = 0.5, class_names=None):
    """Match one image's detections to its ground truth.

    Args:
        boxes: (D, 4) XYXY (or (D, 5) rotated, like ``gt.boxes``) original px; scores,
            classes: (D,).

    Returns:
        matches: D :class:`Match`, in the detections' order.
        gt_detection: (G,) the detection that took each object (a tp), -1 if none.
    """
    D, G = len(boxes), len(gt)
    gt_detection = torch.full((G,), -1, dtype=torch.int64)
    matches: List[Optional[Match]] = [None] * D
    if D == 0:
        return [], gt_detection
    if boxes.shape[-1] != gt.boxes.shape[-1]:
        raise ValueError(f"The detections have {boxes.shape[-1]} coordinates per box but the "
                         f"ground truth has {gt.boxes.shape[-1]}: rotated ground truth "
                         "(XYWHA_ABS) needs a rotated model.")
    det = as_boxes(boxes.detach().cpu().float())
    gtb = as_boxes(gt.boxes)
    iou = box_iou(det, gtb) if G else torch.zeros(D, 0)  # (D, G)
    crowd_ioa = box_ioa(det, gtb)[:, gt.crowd] if bool(gt.crowd.any()) else torch.zeros(D, 0)
    iou = iou.masked_fill(gt.crowd[None, :], -1.0) if G else iou
    classes = classes.detach().cpu()
    taken = torch.zeros(G, dtype=torch.bool)
    for d in torch.argsort(scores.detach().cpu(), descending=True, stable=True).tolist():
        same = gt.classes == classes[d]
        row = iou[d]

        def best(mask):
            vals = torch.where(mask, row, torch.full_like(row, -1.0))
            j = int(vals.argmax()) if G else -1
            return (j, float(vals[j])) if G and vals[j] >= 0 else (-1, -1.0)

        j, v = best(same & ~taken)
        if v >= iou_thresh:
            taken[j] = True
            gt_detection[j] = d
            kind = "tp"
        else:
            j, v = best(same)
            if v >= iou_thresh:
                kind = "duplicate"
            elif crowd_ioa.shape[1] and float(crowd_ioa[d].max()) >= iou_thresh:
                kind, j, v = "crowd", -1, 0.0
            else:
                jo, vo = best(~same)
                if vo >= iou_thresh:
                    kind, j, v = "mislabel", jo, vo
                elif v >= BACKGROUND_IOU:
                    kind = "localisation"
                elif vo >= BACKGROUND_IOU:
                    kind, j, v = "both", jo, vo
                else:
                    kind, j, v = "background", -1, 0.0
        matches[d] = Match(kind, j, max(v, 0.0), int(gt.classes[j]) if j >= 0 else None, class_names)
    return matches, gt_detection

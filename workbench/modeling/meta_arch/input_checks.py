"""Checks of the ground truth a meta-architecture trains on, with errors that name the culprit.

Every training path gathers its targets through :func:`gather_gt_instances` (GeneralizedRCNN,
ProposalNetwork, PanopticFPN, RetinaNet / FCOS through DenseDetector), or checks the padded
semantic targets with :func:`check_sem_seg_targets` (SemanticSegmentor, PanopticFPN) before
they are moved and padded. Given
proposals (``PrecomputedProposals``) go through :func:`check_given_proposals`.

What is refused, and what detectron2 would do instead:

* reversed boxes (x2 < x1 or y2 < y1; rotated: width or height < 0): NaN ``loss_rpn_loc``,
  ``loss_box_reg`` 0. Zero-area boxes (x2 == x1) stay legal, as in detectron2.
* NaN / inf box coordinates: NaN losses or an error deep in the matcher.
* ``gt_classes`` outside [0, num_classes): ``num_classes`` is trained as background and -1
  is silently ignored. Non-int64 ``gt_classes``: torch errors, or (uint8) boolean-mask
  indexing and a silently wrong loss.
* ``gt_masks`` that are not BitMasks / PolygonMasks, or BitMasks of another size than the image.
* ``gt_keypoints`` that are not ``Keypoints`` of shape (N, num_keypoints, 3).
* semantic targets of another size than the image, of a floating dtype, or with values
  outside [0, num_classes) that are not the ignore value.

Cost: type and shape checks are plain Python. Value checks are vectorised and run on the
tensors where they are: the ground truth of every image is checked *before* it is moved to the
model's device (data loaders give CPU tensors, so this never waits for the GPU), and all flags of
a batch are combined into one ``.any()``. Only when that finds something does a slow path look
for the first offending image and instance to name in the message.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from workbench.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks, RotatedBoxes

__all__ = [
    "check_given_proposals", "check_gt_instances", "check_sem_seg_targets",
    "gather_gt_instances", "roi_heads_expectations",
]

_BOX_HELP = {
    Boxes: "(x1, y1, x2, y2) in absolute pixels with x1 <= x2 and y1 <= y2 (XYWH boxes must be "
           "converted, e.g. with BoxMode.convert)",
    RotatedBoxes: "(x_center, y_center, width, height, angle_degrees) with width >= 0 and height >= 0",
}


def _what(value) -> str:
    """Type, and shape / dtype of a tensor-like, for error messages."""
    t = value if isinstance(value, Tensor) else getattr(value, "tensor", None)
    if isinstance(t, Tensor):
        return f"{type(value).__name__} of shape {tuple(t.shape)} and dtype {t.dtype}"
    return type(value).__name__


def roi_heads_expectations(roi_heads: nn.Module) -> Dict:
    """What a two-stage detector's ROI heads read from the ground truth, as keyword arguments of
    :func:`gather_gt_instances`. Attributes a custom ROI-heads class lacks are not checked."""
    keypoint_head = getattr(roi_heads, "keypoint_head", None) if getattr(roi_heads, "keypoint_on", False) else None
    return {
        "num_classes": getattr(roi_heads, "num_classes", None),
        "masks": bool(getattr(roi_heads, "mask_on", False)),
        "num_keypoints": getattr(keypoint_head, "num_keypoints", None),
    }


def gather_gt_instances(batched_inputs: List[Dict], device: torch.device, key: str = "instances",
                        **expectations) -> List[Instances]:
    """``[x[key].to(device) for x in batched_inputs]``, after :func:`check_gt_instances`."""
    check_gt_instances(batched_inputs, key, **expectations)
    return [x[key].to(device) for x in batched_inputs]


def check_gt_instances(batched_inputs: List[Dict], key: str = "instances", *,
                       num_classes: Optional[int] = None, masks: bool = False,
                       num_keypoints: Optional[int] = None) -> None:
    """Refuse ground truth that would train on a silently wrong loss or fail inside the model.

    Args:
        key: where the ``Instances`` are ("instances"; ProposalNetwork also takes "targets").
        num_classes: check ``gt_classes`` (int64, in [0, num_classes)); None: not read.
        masks: check ``gt_masks`` when present (BitMasks of the image's size, or PolygonMasks).
        num_keypoints: check ``gt_keypoints`` when present (``Keypoints`` (N, num_keypoints, 3)).
    """
    flags: List[Tensor] = []
    for i, x in enumerate(batched_inputs):
        where = f"batched_inputs[{i}]['{key}']"
        if key not in x:
            raise KeyError(f"batched_inputs[{i}] has no '{key}'; batched_inputs[0] has, and training "
                           "needs it in every input dict (for an image without objects, an empty Instances: "
                           "Instances((h, w), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, "
                           "dtype=torch.int64)) or annotations_to_instances([], (h, w))).")
        inst = x[key]
        if not isinstance(inst, Instances):
            raise TypeError(f"{where} must be an Instances with 'gt_boxes' and 'gt_classes'; got {_what(inst)}.")
        if not inst.has("gt_boxes"):
            raise KeyError(
                f"{where} has no 'gt_boxes' (its fields: {list(inst.get_fields())}). For an image "
                "without objects pass an empty Instances with the fields, e.g. Instances((h, w), "
                "gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)) "
                "or annotations_to_instances([], (h, w))."
            )
        boxes = inst.gt_boxes
        if not isinstance(boxes, (Boxes, RotatedBoxes)):
            raise TypeError(f"{where}.gt_boxes must be Boxes (or RotatedBoxes); got {_what(boxes)}.")
        flags.append(_bad_boxes(boxes.tensor, isinstance(boxes, RotatedBoxes)).any())
        if num_classes is not None:
            if not inst.has("gt_classes"):
                raise KeyError(f"{where} has no 'gt_classes' (its fields: {list(inst.get_fields())}).")
            c = inst.gt_classes
            if not isinstance(c, Tensor) or c.dtype != torch.int64 or c.dim() != 1:
                raise TypeError(
                    f"{where}.gt_classes must be an int64 (torch.long) tensor of shape (N,) holding "
                    f"class ids in [0, {num_classes}); got {_what(c)}."
                )
            flags.append(((c < 0) | (c >= num_classes)).any())
        if masks and inst.has("gt_masks"):
            _check_masks(inst.gt_masks, x["image"], i, key)
        if num_keypoints is not None and inst.has("gt_keypoints"):
            kp = inst.gt_keypoints
            if not isinstance(kp, Keypoints) or tuple(kp.tensor.shape[1:]) != (num_keypoints, 3):
                raise ValueError(
                    f"{where}.gt_keypoints must be Keypoints of shape (N, {num_keypoints}, 3) "
                    f"(x, y, visibility per keypoint; the model has {num_keypoints} keypoints); "
                    f"got {_what(kp)}."
                )
    if flags and _any(flags):
        _raise_first_bad_value(batched_inputs, key, num_classes)


def _bad_boxes(t: Tensor, rotated: bool) -> Tensor:
    """(N,) True where a box has a non-finite coordinate or is reversed (negative extent)."""
    bad = ~torch.isfinite(t).all(dim=1)
    if rotated:  # (xc, yc, w, h, angle)
        return bad | (t[:, 2] < 0) | (t[:, 3] < 0)
    return bad | (t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])  # (x1, y1, x2, y2)


def _any(flags: List[Tensor]) -> bool:
    """One synchronisation for all flags when they share a device."""
    if len({f.device for f in flags}) == 1:
        return bool(torch.stack(flags).any())
    return any(bool(f) for f in flags)


def _raise_first_bad_value(batched_inputs: List[Dict], key: str, num_classes: Optional[int]) -> None:
    """The slow path: find the first offending image and instance and describe it."""
    for i, x in enumerate(batched_inputs):
        where = f"batched_inputs[{i}]['{key}']"
        boxes = x[key].gt_boxes
        rotated = isinstance(boxes, RotatedBoxes)
        bad = _bad_boxes(boxes.tensor, rotated).nonzero()
        if len(bad):
            j = int(bad[0])
            box = tuple(round(v, 3) for v in boxes.tensor[j].tolist())
            finite = bool(torch.isfinite(boxes.tensor[j]).all())
            problem = "a non-finite coordinate" if not finite else (
                "a negative width or height" if rotated else "x2 < x1 or y2 < y1 (a reversed box)")
            raise ValueError(
                f"{where}.gt_boxes[{j}] = {box} has {problem} (bad boxes in this image: "
                f"{len(bad)} of {len(boxes)}). Expected {_BOX_HELP[RotatedBoxes if rotated else Boxes]}."
            )
        if num_classes is not None:
            c = x[key].gt_classes
            bad = ((c < 0) | (c >= num_classes)).nonzero()
            if len(bad):
                j = int(bad[0])
                hint = (" (num_classes is the background label; ids start at 0)"
                        if int(c[j]) == num_classes else "")
                raise ValueError(
                    f"{where}.gt_classes[{j}] = {int(c[j])} is outside [0, {num_classes}){hint} "
                    f"(out of range in this image: {len(bad)} of {len(c)}). Class ids must be "
                    "contiguous in [0, NUM_CLASSES) (the dataset mapper maps category ids to them)."
                )
    raise AssertionError("check_gt_instances: a value check failed but no culprit was found.")


def _check_masks(masks, image: Tensor, i: int, key: str) -> None:
    where = f"batched_inputs[{i}]['{key}']"
    if isinstance(masks, PolygonMasks):
        return
    if not isinstance(masks, BitMasks):
        hint = " (wrap a (N, H, W) tensor: BitMasks(masks))" if isinstance(masks, Tensor) else ""
        raise TypeError(f"{where}.gt_masks must be BitMasks or PolygonMasks{hint}; got {_what(masks)}.")
    if tuple(masks.tensor.shape[1:]) != tuple(image.shape[-2:]):
        raise ValueError(
            f"{where}.gt_masks are BitMasks of size {tuple(masks.tensor.shape[1:])} (H, W), but "
            f"batched_inputs[{i}]['image'] is {tuple(image.shape[-2:])}; "
            "masks must have the image's size (apply the same transforms to both)."
        )


def check_given_proposals(batched_inputs: List[Dict]) -> None:
    """Every input's "proposals" must be an ``Instances`` with "proposal_boxes"."""
    for i, x in enumerate(batched_inputs):
        p = x.get("proposals")
        if isinstance(p, Instances) and p.has("proposal_boxes"):
            continue
        if isinstance(p, Instances):
            got = f"an Instances with fields {list(p.get_fields())}"
        else:
            got = "no 'proposals'" if p is None else _what(p)
        raise TypeError(
            f"batched_inputs[{i}]['proposals'] must be an Instances with 'proposal_boxes' (Boxes) and "
            f"'objectness_logits' (N,), e.g. Instances((h, w), proposal_boxes=Boxes(b), "
            f"objectness_logits=torch.zeros(len(b))); got {got}."
        )


def check_sem_seg_targets(batched_inputs: List[Dict], *, num_classes: Optional[int] = None,
                          ignore_value: int = 255) -> None:
    """Check the inputs' "sem_seg" maps where they are, before they are moved or padded: (H, W)
    integer tensors of the image's size and, with ``num_classes``, values in [0, num_classes) or
    ``ignore_value`` (one vectorised pass per map, one ``.any()`` for the batch). Padding holds
    ``ignore_value``, so checking the unpadded maps checks the padded batch."""
    flags: List[Tensor] = []
    for i, x in enumerate(batched_inputs):
        t = x["sem_seg"]
        where = f"batched_inputs[{i}]['sem_seg']"
        if not isinstance(t, Tensor) or t.dim() != 2:
            raise ValueError(f"{where} must be an (H, W) tensor of class ids, got {_what(t)}.")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{where} must hold integer class ids (e.g. torch.long); got {t.dtype}.")
        image = x["image"]
        if tuple(t.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"{where} has size {tuple(t.shape)}, but batched_inputs[{i}]['image'] is "
                f"{tuple(image.shape[-2:])} (H, W); the target must have the image's size."
            )
        if num_classes is not None:
            flags.append(_bad_sem_seg(t, num_classes, ignore_value).any())
    if not flags or not _any(flags):
        return
    for i, x in enumerate(batched_inputs):
        bad = _bad_sem_seg(x["sem_seg"], num_classes, ignore_value)
        hits = bad.nonzero()
        if len(hits):
            y, x_ = (int(v) for v in hits[0])
            raise ValueError(
                f"batched_inputs[{i}]['sem_seg'][{y}, {x_}] = {int(x['sem_seg'][y, x_])}: class ids "
                f"must be in [0, {num_classes}) or the ignore value {ignore_value} "
                f"(MODEL.SEM_SEG_HEAD.IGNORE_VALUE); {len(hits)} pixel(s) of this image are outside."
            )
    raise AssertionError("check_sem_seg_targets: a value check failed but no culprit was found.")


def _bad_sem_seg(t: Tensor, num_classes: int, ignore_value: int) -> Tensor:
    """(H, W) True where a class id is outside [0, num_classes) and not ``ignore_value``."""
    if t.dtype != torch.int64:  # compared in int64: int8 >= 200 would wrap around
        t = t.long()
    return ((t < 0) | (t >= num_classes)) & (t != ignore_value)

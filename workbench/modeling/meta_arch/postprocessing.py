"""Resize model outputs from the network's input resolution to the requested one.

Boxes are Tensor[N, 4] XYXY in absolute pixels of the image the network saw
(``Instances.image_size``); afterwards they are in pixels of the requested (height, width).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import torch
from torch.nn import functional as F

from workbench.structures import Instances, ROIMasks
from workbench.utils import perf

from ..recording import active_recorder

__all__ = ["detector_postprocess", "sem_seg_postprocess", "PostprocessRecord"]


@dataclass
class PostprocessRecord:
    """One ``detector_postprocess`` call: which rows of ``source`` became ``output``.

    Attributes:
        source: the Instances at the network's input resolution that were given.
        output: the Instances returned (rescaled; empty boxes dropped).
        rows: (Oi,) row of ``source`` of each row of ``output``.
        scale: (sx, sy), output pixels per input pixel.
    """

    source: Instances
    output: Instances
    rows: torch.Tensor
    scale: Tuple[float, float]


@perf.full_precision()  # float32 under workbench.utils.perf's autocast switch
def detector_postprocess(results: Instances, output_height: Union[int, torch.Tensor],
                         output_width: Union[int, torch.Tensor],
                         mask_threshold: float = 0.5) -> Instances:
    """Rescale boxes (and keypoints), paste masks, to the output resolution.

    The network sees a resized image (``results.image_size``); users usually want results on the
    original image. Boxes are scaled by output / input size, clipped to the output, and empty
    boxes are dropped; ``pred_masks`` (N, 1, M, M) probabilities in box coordinates become a bool
    (N, output_height, output_width) tensor.

    Returns:
        A new ``Instances`` of image size (output_height, output_width).
    """
    if isinstance(output_width, torch.Tensor):
        # Keep the sizes as tensors so tracing records them.
        output_width_tmp = output_width.float()
        output_height_tmp = output_height.float()
        new_size = torch.stack([output_height, output_width])
    else:
        new_size = (output_height, output_width)
        output_width_tmp, output_height_tmp = output_width, output_height

    scale_x = output_width_tmp / results.image_size[1]
    scale_y = output_height_tmp / results.image_size[0]
    source = results
    results = Instances(new_size, **results.get_fields())

    if results.has("pred_boxes"):
        output_boxes = results.pred_boxes
    elif results.has("proposal_boxes"):
        output_boxes = results.proposal_boxes
    else:
        raise ValueError(
            "detector_postprocess expects Instances with 'pred_boxes' or 'proposal_boxes'; got "
            f"fields {list(results.get_fields())}."
        )
    rec = active_recorder()
    if rec is not None:
        # detectron2 scales the given Instances' boxes in place (they share the Boxes); under a
        # recorder the source keeps its input-pixel boxes, the output gets the same values.
        output_boxes = type(output_boxes)(output_boxes.tensor.clone())  # Boxes or RotatedBoxes
        results.set("pred_boxes" if results.has("pred_boxes") else "proposal_boxes", output_boxes)
    output_boxes.scale(scale_x, scale_y)
    output_boxes.clip(results.image_size)
    nonempty = output_boxes.nonempty()
    results = results[nonempty]

    if results.has("pred_masks"):
        if isinstance(results.pred_masks, ROIMasks):
            roi_masks = results.pred_masks
        else:
            # (N, 1, M, M) -> (N, M, M)
            roi_masks = ROIMasks(results.pred_masks[:, 0, :, :])
        results.pred_masks = roi_masks.to_bitmasks(
            results.pred_boxes, output_height, output_width, mask_threshold
        ).tensor

    if results.has("pred_keypoints"):
        results.pred_keypoints[:, :, 0] *= scale_x
        results.pred_keypoints[:, :, 1] *= scale_y
    if rec is not None:
        rec.put("postprocess", PostprocessRecord(source, results, nonempty.nonzero()[:, 0],
                                                 (float(scale_x), float(scale_y))))
    return results


@perf.full_precision()
def sem_seg_postprocess(result: torch.Tensor, img_size: Tuple[int, int], output_height: int,
                        output_width: int) -> torch.Tensor:
    """Crop the padding off (C, H_pad, W_pad) logits and resize them bilinearly to the output.

    Args:
        result: (C, H_pad, W_pad) semantic logits of one padded image.
        img_size: (h, w) of the image before padding.
    Returns:
        (C, output_height, output_width) logits, float32 (also under the autocast switch).
    """
    # (C, H_pad, W_pad) -> (1, C, h, w)
    result = perf.float32(result[:, : img_size[0], : img_size[1]]).expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear",
                         align_corners=False)[0]

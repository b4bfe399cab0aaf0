"""Box-to-box transforms (boxes <-> regression deltas) and the dense box regression loss.

Shape legend:
    N: number of boxes (or images, in :func:`_dense_box_regression_loss`).
    k: number of box predictions per source box (e.g. one per class); k >= 1.
    R: total number of anchors over all levels, sum(Hi * Wi * A).

Boxes are XYXY in absolute pixels; width = x1 - x0 (no "+1", the detectron2 convention).
Semantics follow detectron2 0.6 (``detectron2/modeling/box_regression.py``).
"""

from __future__ import annotations

import math
from typing import List, Tuple, Union

import torch
from torch.nn import functional as F

from workbench.layers import cat, ciou_loss, diou_loss, giou_loss, smooth_l1_loss
from workbench.structures import Boxes

__all__ = ["Box2BoxTransform", "Box2BoxTransformRotated", "Box2BoxTransformLinear",
           "_dense_box_regression_loss"]

# Clamp for predicted dw and dh: no larger than what turns a 16 px box into a 1000 px box
# (a small anchor and a typical image size), so that exp() cannot overflow.
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_boxes(boxes: torch.Tensor, name: str, box_dim: int = 4) -> None:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"Expected {name} to be a Tensor, got {type(boxes).__name__}.")
    if boxes.dim() != 2 or boxes.shape[1] != box_dim:
        raise ValueError(
            f"Expected {name} of shape (N, {box_dim}), got {tuple(boxes.shape)}."
        )


class Box2BoxTransform:
    """The R-CNN box parameterisation by 4 deltas (dx, dy, dw, dh).

    Applying deltas to a box of centre (cx, cy) and size (w, h) gives centre
    (cx + dx * w, cy + dy * h) and size (w * exp(dw), h * exp(dh)); each delta is divided by its
    weight first. detectron2 scripts this class with ``torch.jit.script``; here it is a plain
    Python class (same methods and attributes).
    """

    def __init__(self, weights: Tuple[float, float, float, float],
                 scale_clamp: float = _DEFAULT_SCALE_CLAMP) -> None:
        """
        Args:
            weights: multipliers of (dx, dy, dw, dh) in the regression targets; larger weights
                make the network predict larger numbers for the same box change. RPN uses
                (1, 1, 1, 1), Fast R-CNN heads (10, 10, 5, 5).
            scale_clamp: upper bound applied to dw and dh (after the weights) when decoding.
        """
        if len(weights) != 4:
            raise ValueError(f"Box2BoxTransform needs 4 weights (wx, wy, ww, wh), got {weights}.")
        self.weights = tuple(weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas that turn ``src_boxes`` into ``target_boxes``.

        ``apply_deltas(get_deltas(src, target), src) == target`` up to rounding, unless a dw/dh
        exceeds ``scale_clamp``.

        Args:
            src_boxes: (N, 4) source boxes, e.g. anchors or proposals; must have positive width.
            target_boxes: (N, 4) targets, e.g. matched ground truth.

        Returns:
            (N, 4) deltas (dx, dy, dw, dh).
        """
        _check_boxes(src_boxes, "src_boxes")
        _check_boxes(target_boxes, "target_boxes")

        src_widths = src_boxes[:, 2] - src_boxes[:, 0]
        src_heights = src_boxes[:, 3] - src_boxes[:, 1]
        src_ctr_x = src_boxes[:, 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[:, 1] + 0.5 * src_heights

        target_widths = target_boxes[:, 2] - target_boxes[:, 0]
        target_heights = target_boxes[:, 3] - target_boxes[:, 1]
        target_ctr_x = target_boxes[:, 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[:, 1] + 0.5 * target_heights

        wx, wy, ww, wh = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)

        deltas = torch.stack((dx, dy, dw, dh), dim=1)  # 4 x (N,) -> (N, 4)
        if not (src_widths > 0).all().item():
            raise ValueError("Box2BoxTransform.get_deltas: src_boxes must have positive width.")
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` relative to ``boxes``.

        Decoding always runs in float32 (deltas are cast up, e.g. under mixed precision), as
        detectron2 does.

        Args:
            deltas: (N, k*4); columns 4j..4j+3 are the j-th (dx, dy, dw, dh) for each box,
                e.g. one per class.
            boxes: (N, 4) boxes to transform.

        Returns:
            (N, k*4) float32 boxes, XYXY.
        """
        if deltas.dim() != 2 or deltas.shape[1] % 4 != 0:
            raise ValueError(f"Expected deltas of shape (N, k*4), got {tuple(deltas.shape)}.")
        _check_boxes(boxes, "boxes")
        if boxes.shape[0] != deltas.shape[0]:
            raise ValueError(
                f"Expected as many boxes as rows of deltas, got boxes {tuple(boxes.shape)} "
                f"and deltas {tuple(deltas.shape)}."
            )
        deltas = deltas.float()  # decode in fp32 for precision
        boxes = boxes.to(deltas.dtype)

        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx  # (N, k)
        dy = deltas[:, 1::4] / wy
        dw = deltas[:, 2::4] / ww
        dh = deltas[:, 3::4] / wh

        # Keep exp() finite.
        dw = torch.clamp(dw, max=self.scale_clamp)
        dh = torch.clamp(dh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        pred_boxes = torch.stack((x1, y1, x2, y2), dim=-1)  # 4 x (N, k) -> (N, k, 4)
        return pred_boxes.reshape(deltas.shape)  # (N, k, 4) -> (N, k*4)


class Box2BoxTransformRotated:
    """The Rotated R-CNN parameterisation by 5 deltas (dx, dy, dw, dh, da) of (xc, yc, w, h, a).

    Like :class:`Box2BoxTransform` for the centre and size (boxes here are (N, 5) rows
    (xc, yc, w, h, angle)); the angle delta is the angle difference wrapped into [-180, 180)
    degrees and expressed in radians (as the original RRPN), so that a 1-radian change weighs
    like a 1-box-width shift. Decoded angles are wrapped into [-180, 180) degrees.
    """

    def __init__(self, weights: Tuple[float, float, float, float, float],
                 scale_clamp: float = _DEFAULT_SCALE_CLAMP) -> None:
        """
        Args:
            weights: multipliers of (dx, dy, dw, dh, da) in the regression targets, e.g.
                (1, 1, 1, 1, 1) for RRPN and (10, 10, 5, 5, 1) for rotated Fast R-CNN heads.
            scale_clamp: upper bound applied to dw and dh (after the weights) when decoding.
        """
        if len(weights) != 5:
            raise ValueError(f"Box2BoxTransformRotated needs 5 weights (wx, wy, ww, wh, wa), got "
                             f"{weights}.")
        self.weights = tuple(weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas (N, 5) that turn ``src_boxes`` (N, 5) into ``target_boxes`` (N, 5).

        ``apply_deltas(get_deltas(src, target), src)`` gives ``target`` up to rounding and up to
        the angle's wrapping into [-180, 180), unless a dw/dh exceeds ``scale_clamp``.
        """
        _check_boxes(src_boxes, "src_boxes", 5)
        _check_boxes(target_boxes, "target_boxes", 5)
        if src_boxes.shape[0] != target_boxes.shape[0]:
            raise ValueError(f"Box2BoxTransformRotated.get_deltas needs one target per source box: "
                             f"src_boxes has {src_boxes.shape[0]} rows, target_boxes "
                             f"{target_boxes.shape[0]}.")
        src_ctr_x, src_ctr_y, src_widths, src_heights, src_angles = torch.unbind(src_boxes, dim=1)
        tgt_ctr_x, tgt_ctr_y, tgt_widths, tgt_heights, tgt_angles = torch.unbind(target_boxes,
                                                                                 dim=1)
        wx, wy, ww, wh, wa = self.weights
        dx = wx * (tgt_ctr_x - src_ctr_x) / src_widths
        dy = wy * (tgt_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(tgt_widths / src_widths)
        dh = wh * torch.log(tgt_heights / src_heights)
        da = (tgt_angles - src_angles + 180.0) % 360.0 - 180.0  # degrees, in [-180, 180)
        da = da * (wa * math.pi / 180.0)  # -> weighted radians
        if not (src_widths > 0).all().item():
            raise ValueError("Box2BoxTransformRotated.get_deltas: src_boxes must have positive "
                             "width.")
        return torch.stack((dx, dy, dw, dh, da), dim=1)  # 5 x (N,) -> (N, 5)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` (N, k*5) relative to ``boxes`` (N, 5); returns (N, k*5) boxes.

        Columns 5j..5j+4 of ``deltas`` are the j-th (dx, dy, dw, dh, da) of each box (e.g. one
        per class). Computed in the dtype of ``deltas``, as detectron2 does.
        """
        if deltas.dim() != 2 or deltas.shape[1] % 5 != 0:
            raise ValueError(f"Expected deltas of shape (N, k*5), got {tuple(deltas.shape)}.")
        _check_boxes(boxes, "boxes", 5)
        if boxes.shape[0] != deltas.shape[0]:
            raise ValueError(f"Expected as many boxes as rows of deltas, got boxes "
                             f"{tuple(boxes.shape)} and deltas {tuple(deltas.shape)}.")
        boxes = boxes.to(deltas.dtype)
        ctr_x, ctr_y, widths, heights, angles = (boxes[:, i:i + 1] for i in range(5))  # (N, 1)
        wx, wy, ww, wh, wa = self.weights
        dx = deltas[:, 0::5] / wx  # (N, k)
        dy = deltas[:, 1::5] / wy
        dw = torch.clamp(deltas[:, 2::5] / ww, max=self.scale_clamp)  # keep exp() finite
        dh = torch.clamp(deltas[:, 3::5] / wh, max=self.scale_clamp)
        da = deltas[:, 4::5] / wa

        pred_angle = da * 180.0 / math.pi + angles
        pred_angle = (pred_angle + 180.0) % 360.0 - 180.0  # into [-180, 180)
        pred = torch.stack((dx * widths + ctr_x, dy * heights + ctr_y, torch.exp(dw) * widths,
                            torch.exp(dh) * heights, pred_angle), dim=-1)  # (N, k, 5)
        return pred.reshape(deltas.shape)  # (N, k, 5) -> (N, k*5)


class Box2BoxTransformLinear:
    """The FCOS box parameterisation: distances from the source box centre to the 4 target edges.

    Deltas are (left, top, right, bottom), optionally divided by the source box size (its
    stride, for the square anchors FCOS uses).
    """

    def __init__(self, normalize_by_size: bool = True) -> None:
        """
        Args:
            normalize_by_size: express distances in units of the source box width / height.
        """
        self.normalize_by_size = normalize_by_size

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) distances (l, t, r, b) from each source centre to its target's edges.

        The centre of each source box should lie inside its target; otherwise some distances
        are negative (and :meth:`apply_deltas` would clamp them to 0).
        """
        _check_boxes(src_boxes, "src_boxes")
        _check_boxes(target_boxes, "target_boxes")

        src_ctr_x = 0.5 * (src_boxes[:, 0] + src_boxes[:, 2])
        src_ctr_y = 0.5 * (src_boxes[:, 1] + src_boxes[:, 3])

        target_l = src_ctr_x - target_boxes[:, 0]
        target_t = src_ctr_y - target_boxes[:, 1]
        target_r = target_boxes[:, 2] - src_ctr_x
        target_b = target_boxes[:, 3] - src_ctr_y

        deltas = torch.stack((target_l, target_t, target_r, target_b), dim=1)  # (N, 4)
        if self.normalize_by_size:
            stride_w = src_boxes[:, 2] - src_boxes[:, 0]
            stride_h = src_boxes[:, 3] - src_boxes[:, 1]
            strides = torch.stack([stride_w, stride_h, stride_w, stride_h], dim=1)
            deltas = deltas / strides
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode (N, k*4) distances around the centres of (N, 4) ``boxes``.

        Negative distances are clamped to 0 (ReLU) so the output is always a valid box
        (Sec. 2.1 of https://arxiv.org/abs/2006.09214).
        """
        if deltas.dim() != 2 or deltas.shape[1] % 4 != 0:
            raise ValueError(f"Expected deltas of shape (N, k*4), got {tuple(deltas.shape)}.")
        _check_boxes(boxes, "boxes")
        deltas = F.relu(deltas)
        boxes = boxes.to(deltas.dtype)

        ctr_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
        ctr_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
        if self.normalize_by_size:
            stride_w = boxes[:, 2] - boxes[:, 0]
            stride_h = boxes[:, 3] - boxes[:, 1]
            strides = torch.stack([stride_w, stride_h, stride_w, stride_h], dim=1)  # (N, 4)
            # (N, 4) -> (N, k*4) so that every one of the k predictions is scaled.
            deltas = deltas * strides.repeat(1, deltas.shape[1] // 4)

        l = deltas[:, 0::4]  # (N, k)
        t = deltas[:, 1::4]
        r = deltas[:, 2::4]
        b = deltas[:, 3::4]

        pred_boxes = torch.zeros_like(deltas)
        pred_boxes[:, 0::4] = ctr_x[:, None] - l  # x1
        pred_boxes[:, 1::4] = ctr_y[:, None] - t  # y1
        pred_boxes[:, 2::4] = ctr_x[:, None] + r  # x2
        pred_boxes[:, 3::4] = ctr_y[:, None] + b  # y2
        return pred_boxes


def _dense_box_regression_loss(
    anchors: List[Union[Boxes, torch.Tensor]],
    box2box_transform: Union[Box2BoxTransform, Box2BoxTransformLinear],
    pred_anchor_deltas: List[torch.Tensor],
    gt_boxes: List[torch.Tensor],
    fg_mask: torch.Tensor,
    box_reg_loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> torch.Tensor:
    """Box regression loss of a dense (per-anchor) head, summed over the foreground anchors.

    The caller normalises the sum (RPN by ``batch_size_per_image * N``, RetinaNet by an EMA of
    the number of foreground anchors).

    Args:
        anchors: L levels of anchors, each ``Boxes`` or Tensor of shape (Hi*Wi*A, 4).
        box2box_transform: how deltas encode boxes.
        pred_anchor_deltas: L levels of predicted deltas, each (N, Hi*Wi*A, 4).
        gt_boxes: N tensors of shape (R, 4), the ground-truth box matched to each anchor
            (values at non-foreground anchors are ignored).
        fg_mask: (N, R) bool, the anchors that contribute to the loss.
        box_reg_loss_type: "smooth_l1" (on deltas), or "giou" / "diou" / "ciou" (on decoded
            boxes).
        smooth_l1_beta: transition point of the smooth L1 loss; 0 means plain L1.

    Returns:
        A scalar tensor.
    """
    if isinstance(anchors[0], Boxes):
        anchors = type(anchors[0]).cat(anchors).tensor  # L x (Hi*Wi*A, 4) -> (R, 4)
    else:
        anchors = cat(anchors)  # L x (Hi*Wi*A, 4) -> (R, 4)
    if box_reg_loss_type == "smooth_l1":
        gt_anchor_deltas = [box2box_transform.get_deltas(anchors, k) for k in gt_boxes]
        gt_anchor_deltas = torch.stack(gt_anchor_deltas)  # N x (R, 4) -> (N, R, 4)
        loss_box_reg = smooth_l1_loss(
            cat(pred_anchor_deltas, dim=1)[fg_mask],  # L x (N, Hi*Wi*A, 4) -> (N, R, 4)
            gt_anchor_deltas[fg_mask],
            beta=smooth_l1_beta,
            reduction="sum",
        )
    elif box_reg_loss_type in ("giou", "diou", "ciou"):
        loss_fn = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}[box_reg_loss_type]
        # L x (N, Hi*Wi*A, 4) -> (N, R, 4), then decode each image's (R, 4) deltas.
        pred_boxes = [
            box2box_transform.apply_deltas(k, anchors) for k in cat(pred_anchor_deltas, dim=1)
        ]
        loss_box_reg = loss_fn(
            torch.stack(pred_boxes)[fg_mask], torch.stack(gt_boxes)[fg_mask], reduction="sum"
        )
    else:
        raise ValueError(
            f"Invalid dense box regression loss type {box_reg_loss_type!r}; expected one of "
            "'smooth_l1', 'giou', 'diou', 'ciou'."
        )
    return loss_box_reg

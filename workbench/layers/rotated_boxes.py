"""Intersection over union of rotated boxes, in plain PyTorch (no compiled extension).

Shape legend:
    N, M: number of boxes in the first / second set.
    P:    number of box pairs handled at once (one chunk).

A rotated box is a row (xc, yc, w, h, angle): centre and size in absolute pixels, angle in
degrees counter-clockwise (the ``XYWHA_ABS`` mode of detectron2's ``RotatedBoxes``). Its corners
are, for the local offsets (u, v) in {(+-w/2, +-h/2)} and theta = angle in radians::

    x = xc + cos(theta) * u + sin(theta) * v
    y = yc - sin(theta) * u + cos(theta) * v

(y points down the image, so a positive angle turns the box counter-clockwise on screen.)

The intersection of two rectangles is a convex polygon. As in detectron2's
``box_iou_rotated_utils.h``, its vertices are collected from (a) the crossings of every edge of
one box with every edge of the other and (b) the corners of each box that lie inside the other,
with a small tolerance so that no vertex is missed (duplicates do no harm). detectron2 then runs
a Graham scan; here the collected points are instead sorted by angle around their mean (an
interior point of the convex polygon) and the area is the sum of the fan triangles, which is
the same area and vectorises over all pairs. Computation is in float64 after moving each pair's
centres to their midpoint, so identical, nearly identical, very large and far-away boxes keep
their precision. Tolerances are relative to the box sizes (detectron2 uses an absolute 1e-5 on
squared lengths, which swallows boxes smaller than about 3e-3 pixels).

Exact ties stay ties: pairs with the same geometry (e.g. anchors of equal shape placed
symmetrically about a ground-truth box) get bit-identical IoUs here, where detectron2's float32
kernel rounds them apart. A ``Matcher`` with low-quality matches then makes every tied anchor a
positive rather than the one rounding favoured, so RPN losses can differ from detectron2's in
such cases (detectron2's ``test_rroi_heads``: loss_rpn_cls 0.2429835 / loss_rpn_loc 0.4045328
here, 0.2427729 / 0.3646621 there; its ROI-head losses agree).

Boxes with an area below ``_MIN_AREA`` have IoU 0 with everything and are dropped before the
pairs are formed, so millions of empty boxes cost next to nothing.
"""

from __future__ import annotations

import math

import torch

__all__ = ["pairwise_iou_rotated", "rotated_box_corners", "paired_iou_rotated"]

# Pairs per chunk: each pair holds 24 candidate points and a few (P, 16) temporaries in float64,
# about 2 kB, so a chunk stays near 64 MB.
_PAIRS_PER_CHUNK = 1 << 15
_REL_EPS = 1e-5  # slack on the edge parameters and on the inside-box projections (relative)
_MIN_AREA = 1e-14  # a box with a smaller area has IoU 0 with everything (as detectron2)


def _check(boxes: torch.Tensor, name: str) -> None:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"Expected {name} to be a Tensor, got {type(boxes).__name__}.")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"Expected {name} of shape (N, 5) as (xc, yc, w, h, angle), got "
                         f"{tuple(boxes.shape)}.")


def rotated_box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """The 4 corners of each rotated box, in detectron2's order.

    Args:
        boxes: (N, 5) rows (xc, yc, w, h, angle in degrees counter-clockwise).

    Returns:
        (N, 4, 2) (x, y) of the corners with local offsets (w/2, h/2), (w/2, -h/2),
        (-w/2, -h/2), (-w/2, h/2), in the dtype of ``boxes``. Consecutive corners share an edge.
    """
    _check(boxes, "boxes")
    theta = boxes[:, 4] * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    xc, yc, half_w, half_h = boxes[:, 0], boxes[:, 1], boxes[:, 2] / 2, boxes[:, 3] / 2
    u = torch.stack([half_w, half_w, -half_w, -half_w], dim=1)  # (N, 4) local x offsets
    v = torch.stack([half_h, -half_h, -half_h, half_h], dim=1)  # (N, 4) local y offsets
    x = xc[:, None] + cos[:, None] * u + sin[:, None] * v
    y = yc[:, None] - sin[:, None] * u + cos[:, None] * v
    return torch.stack([x, y], dim=2)  # 2 x (N, 4) -> (N, 4, 2)


def _inside(px: torch.Tensor, py: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Which points (px, py) (each (P, 4)) lie in the rectangle of corners (cx, cy) (each
    (P, 4)), with a slack relative to its sides."""
    ox, oy = cx[:, 0:1], cy[:, 0:1]  # (P, 1) corner 0
    ax, ay = cx[:, 1:2] - ox, cy[:, 1:2] - oy  # side from corner 0 to corner 1
    bx, by = cx[:, 3:4] - ox, cy[:, 3:4] - oy  # side from corner 0 to corner 3
    rx, ry = px - ox, py - oy
    len_a, len_b = ax * ax + ay * ay, bx * bx + by * by  # (P, 1)
    proj_a, proj_b = rx * ax + ry * ay, rx * bx + ry * by  # (P, 4)
    slack_a, slack_b = _REL_EPS * len_a, _REL_EPS * len_b
    return ((proj_a > -slack_a) & (proj_a < len_a + slack_a)
            & (proj_b > -slack_b) & (proj_b < len_b + slack_b))


def _intersection_area(c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """Area of the intersection of the rectangles ``c1`` and ``c2`` (each (P, 4, 2), float64)."""
    c1x, c1y, c2x, c2y = c1[..., 0], c1[..., 1], c2[..., 0], c2[..., 1]  # each (P, 4)
    # Edge i goes from corner i to corner i+1.
    e1x, e1y = torch.roll(c1x, -1, 1) - c1x, torch.roll(c1y, -1, 1) - c1y
    e2x, e2y = torch.roll(c2x, -1, 1) - c2x, torch.roll(c2y, -1, 1) - c2y
    # Every edge i of box 1 (rows, (P, 4, 1)) against every edge j of box 2 (columns, (P, 1, 4)).
    ax, ay, dax, day = c1x[:, :, None], c1y[:, :, None], e1x[:, :, None], e1y[:, :, None]
    bx, by, dbx, dby = c2x[:, None], c2y[:, None], e2x[:, None], e2y[:, None]
    det = dbx * day - dby * dax  # (P, 4, 4)
    abx, aby = bx - ax, by - ay
    # Parallel edges (|sin| of their angle <= 1e-14) never cross at a single point.
    lengths = torch.sqrt((dax * dax + day * day) * (dbx * dbx + dby * dby))
    parallel = det.abs() <= 1e-14 * lengths
    det = torch.where(parallel, torch.ones_like(det), det)
    t1 = (dbx * aby - dby * abx) / det  # position along edge i of box 1
    t2 = (dax * aby - day * abx) / det  # position along edge j of box 2
    hit = (~parallel & (t1 > -_REL_EPS) & (t1 < 1 + _REL_EPS)
           & (t2 > -_REL_EPS) & (t2 < 1 + _REL_EPS))

    # 24 candidate vertices: 16 crossings, then the corners of each box inside the other.
    px = torch.cat([(ax + dax * t1).flatten(1), c1x, c2x], dim=1)  # (P, 24)
    py = torch.cat([(ay + day * t1).flatten(1), c1y, c2y], dim=1)
    valid = torch.cat([hit.flatten(1), _inside(c1x, c1y, c2x, c2y),
                       _inside(c2x, c2y, c1x, c1y)], dim=1)  # (P, 24)

    count = valid.sum(1, keepdim=True)  # (P, 1)
    w = valid.to(px.dtype)
    denom = count.clamp(min=1).to(px.dtype)
    rx = px - (px * w).sum(1, keepdim=True) / denom  # relative to the mean of the valid points
    ry = py - (py * w).sum(1, keepdim=True) / denom
    # A pseudo-angle, monotonic in the true angle and cheaper than atan2: dy / (|dx| + |dy|)
    # in [-1, 1] on the right half-plane, 2 minus it on the left, so [-1, 3) all around.
    ratio = ry / (rx.abs() + ry.abs()).clamp(min=1e-300)
    angle = torch.where(rx < 0, 2 - ratio, ratio)
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid points sort last
    order = angle.argsort(dim=1)
    rx, ry = rx.gather(1, order), ry.gather(1, order)  # valid points first, by angle
    # Fan triangles (mean, k, next(k)), the next of the last valid point being the first one.
    k = torch.arange(px.shape[1], device=px.device)[None]  # (1, 24)
    nxt = torch.where(k + 1 < count, k + 1, torch.zeros_like(k))  # (P, 24)
    fan = rx * ry.gather(1, nxt) - ry * rx.gather(1, nxt)
    area = (fan * (k < count).to(px.dtype)).sum(1).abs() / 2
    return torch.where(count.squeeze(1) > 2, area, torch.zeros_like(area))


def paired_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of row i of ``boxes1`` with row i of ``boxes2`` (no broadcasting), in float64.

    Args:
        boxes1: (P, 5) rotated boxes.
        boxes2: (P, 5) rotated boxes.

    Returns:
        (P,) float64 IoU in [0, 1]; 0 where either box has an area below 1e-14.
    """
    _check(boxes1, "boxes1")
    _check(boxes2, "boxes2")
    if boxes1.shape[0] != boxes2.shape[0]:
        raise ValueError(f"paired_iou_rotated needs as many rows in boxes1 as in boxes2, got "
                         f"{boxes1.shape[0]} and {boxes2.shape[0]}.")
    out = []
    for s in range(0, boxes1.shape[0], _PAIRS_PER_CHUNK):
        b1 = boxes1[s:s + _PAIRS_PER_CHUNK].double()
        b2 = boxes2[s:s + _PAIRS_PER_CHUNK].double()
        # Centres relative to the pair's midpoint: precision does not depend on where the boxes are.
        mid = (b1[:, :2] + b2[:, :2]) / 2
        b1 = torch.cat([b1[:, :2] - mid, b1[:, 2:]], dim=1)
        b2 = torch.cat([b2[:, :2] - mid, b2[:, 2:]], dim=1)
        area1, area2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
        inter = _intersection_area(rotated_box_corners(b1), rotated_box_corners(b2))
        union = area1 + area2 - inter
        ok = (area1 >= _MIN_AREA) & (area2 >= _MIN_AREA) & (union > 0)
        iou = torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)),
                          torch.zeros_like(union))
        out.append(iou.clamp(0.0, 1.0))
    if not out:
        return boxes1.new_zeros(0, dtype=torch.float64)
    return torch.cat(out)


def _upright_bounds(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) XYXY bounds of the upright rectangle enclosing each rotated box (float64)."""
    boxes = boxes.double()
    theta = boxes[:, 4] * (math.pi / 180.0)
    cos, sin = torch.cos(theta).abs(), torch.sin(theta).abs()
    half_x = (cos * boxes[:, 2] + sin * boxes[:, 3]) / 2
    half_y = (sin * boxes[:, 2] + cos * boxes[:, 3]) / 2
    return torch.stack([boxes[:, 0] - half_x, boxes[:, 1] - half_y,
                        boxes[:, 0] + half_x, boxes[:, 1] + half_y], dim=1)


def _candidate_pairs(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(K, 2) index pairs (i, j) of boxes with an area of at least ``_MIN_AREA`` whose enclosing
    upright rectangles overlap (all other pairs have IoU 0).

    A small margin (relative to the box sizes) keeps touching pairs, whose exact IoU is 0 or
    within rounding of it.
    """
    # A box with an area below _MIN_AREA has IoU 0 with everything: such rows and columns take
    # no part (detectron2's "too many boxes" case is millions of all-zero boxes).
    keep1 = (boxes1[:, 2].double() * boxes1[:, 3].double() >= _MIN_AREA).nonzero()[:, 0]
    keep2 = (boxes2[:, 2].double() * boxes2[:, 3].double() >= _MIN_AREA).nonzero()[:, 0]
    empty = torch.zeros(0, 2, dtype=torch.int64, device=boxes1.device)
    if len(keep1) == 0 or len(keep2) == 0:
        return empty
    u1, u2 = _upright_bounds(boxes1[keep1]), _upright_bounds(boxes2[keep2])
    margin1 = 1e-6 * (u1[:, 2:] - u1[:, :2]).amax(1) + 1e-9  # (N',)
    pairs = []
    rows = max(1, (1 << 24) // max(1, len(u2)))  # bound the (rows, M') masks to ~16M entries
    for s in range(0, len(u1), rows):
        a, m = u1[s:s + rows], margin1[s:s + rows, None]
        overlap = ((torch.min(a[:, None, 2], u2[None, :, 2]) - torch.max(a[:, None, 0], u2[None, :, 0])
                    > -m)
                   & (torch.min(a[:, None, 3], u2[None, :, 3]) - torch.max(a[:, None, 1], u2[None, :, 1])
                      > -m))  # (rows, M')
        idx = overlap.nonzero()
        pairs.append(torch.stack([keep1[idx[:, 0] + s], keep2[idx[:, 1]]], dim=1))
    return torch.cat(pairs) if pairs else empty


def pairwise_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair of rotated boxes.

    Only pairs whose enclosing upright rectangles overlap are computed exactly; the others are 0.

    Args:
        boxes1: (N, 5) rows (xc, yc, w, h, angle in degrees counter-clockwise).
        boxes2: (M, 5) same format.

    Returns:
        (N, M) IoU in the dtype of ``boxes1`` (float32 for float32 boxes); 0 for pairs that do
        not overlap, that only touch, or where a box has zero area.
    """
    _check(boxes1, "boxes1")
    _check(boxes2, "boxes2")
    out_dtype = boxes1.dtype if boxes1.dtype.is_floating_point else torch.float32
    ious = torch.zeros(len(boxes1), len(boxes2), dtype=out_dtype, device=boxes1.device)
    if ious.numel() == 0:
        return ious
    pairs = _candidate_pairs(boxes1, boxes2)
    if len(pairs):
        values = paired_iou_rotated(boxes1[pairs[:, 0]], boxes2.to(boxes1.device)[pairs[:, 1]])
        ious[pairs[:, 0], pairs[:, 1]] = values.to(out_dtype)
    return ious

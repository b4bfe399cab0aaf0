"""Drawing of the procedural "shapes" dataset: one image and its ground truth from a seed.

:func:`generate_shapes_image` is a pure function of its seed; :mod:`.shapes` caches its
images on disk as dataset splits and registers them (see there for what an image holds).
The classes drawn (:data:`THING_CLASSES`, :data:`STUFF_CLASSES`) are defined here; their
colours and the keypoint metadata are in :mod:`.shapes`.

Coordinates are continuous (detectron2's dataset-dict convention): pixel ``(i, j)`` covers
``[j, j+1) x [i, i+1)``; its centre is ``(j + 0.5, i + 0.5)``; masks are rendered by testing
pixel centres against the exact geometry.

Shape legend:
    H x W   image size (each side in 256..384)
    K       shapes in one image
    V       vertices of one polygon
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["THING_CLASSES", "STUFF_CLASSES", "generate_shapes_image", "mask_to_polygons"]

THING_CLASSES = ["circle", "triangle", "square", "pentagon", "star", "ring", "cross"]
# Semantic classes of the Panoptic FPN head: index 0 is "things" (every shape pixel).
STUFF_CLASSES = ["things", "sky", "ground", "water"]
_SKY, _GROUND, _WATER = 1, 2, 3

# Bump when the drawing changes, so that old caches (:mod:`.shapes`' ``_CACHE_VERSION``) are
# not mistaken for new images.
_GENERATOR_VERSION = 1

# Ratios of the shape geometry to the circumradius r.
_STAR_INNER = 0.45
_RING_INNER = 0.55
_CROSS_HALF_WIDTH = 0.34
_MIN_VISIBLE_FRACTION = 0.5
_MIN_VISIBLE_PIXELS = 120
_MIN_RADIUS = 15.0  # circumradius, pixels; the largest is 0.17 * min(H, W)
_MIN_COLOR_DISTANCE = 90.0  # RGB distance between a shape and what it covers
_IMAGE_SIDES = np.arange(256, 385, 32)  # 256, 288, 320, 352, 384

# Directions (dx, dy) of the four axis keypoints; y grows downwards.
_KEYPOINT_DIRECTIONS = np.array([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def _shape_vertices(cls_name: str, cx: float, cy: float, r: float, theta: float) -> Optional[np.ndarray]:
    """(V, 2) polygon vertices of a shape, or None for the round shapes (circle, ring)."""
    if cls_name in ("circle", "ring"):
        return None
    if cls_name in ("triangle", "square", "pentagon"):
        n = {"triangle": 3, "square": 4, "pentagon": 5}[cls_name]
        ang = theta + 2 * np.pi * np.arange(n) / n
        radii = np.full(n, r)
    elif cls_name == "star":
        ang = theta + np.pi * np.arange(10) / 5
        radii = np.where(np.arange(10) % 2 == 0, r, _STAR_INNER * r)
    elif cls_name == "cross":
        w = _CROSS_HALF_WIDTH
        # A plus sign in unit coordinates, counter-clockwise from the tip of the right arm.
        local = np.array([[1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w],
                          [-w, -w], [-w, -1], [w, -1], [w, -w]], dtype=np.float64) * r
        c, s = np.cos(theta), np.sin(theta)
        rot = local @ np.array([[c, s], [-s, c]])
        return rot + np.array([cx, cy])
    else:
        raise ValueError(f"Unknown shape class {cls_name!r}; expected one of {THING_CLASSES}.")
    # Angle 0 points up, so an unrotated triangle / pentagon / star stands on its base.
    return np.stack([cx + radii * np.sin(ang), cy - radii * np.cos(ang)], axis=1)


def _outer_radius(cls_name: str, r: float) -> float:
    """Radius of the disc around the centre that contains the whole shape."""
    return r * np.hypot(1.0, _CROSS_HALF_WIDTH) if cls_name == "cross" else r


def _inside(cls_name: str, verts: Optional[np.ndarray], cx: float, cy: float, r: float,
            px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Boolean mask of the points (px, py) (same shapes) that lie inside the shape."""
    if verts is None:
        d2 = (px - cx) ** 2 + (py - cy) ** 2
        inside = d2 < r * r
        if cls_name == "ring":
            inside &= d2 >= (_RING_INNER * r) ** 2
        return inside
    # Even-odd rule: count the edges a horizontal ray from each point crosses.
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = verts[:, 0], verts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        if b == d:
            continue
        straddles = (b > py) != (d > py)
        x_cross = a + (py - b) * (c - a) / (d - b)
        inside ^= straddles & (px < x_cross)
    return inside


def _axis_keypoints(cls_name: str, verts: Optional[np.ndarray], cx: float, cy: float, r: float) -> np.ndarray:
    """(5, 2) keypoints: where the rays up/right/down/left from the centre leave the shape, then
    the centre. Every shape is star-shaped around its centre, so each ray leaves it once."""
    pts = np.empty((5, 2))
    pts[4] = (cx, cy)
    for k, (dx, dy) in enumerate(_KEYPOINT_DIRECTIONS):
        if verts is None:
            t = r
        else:
            # Solve centre + t * dir = a + s * (b - a), 0 <= s <= 1, t > 0, for every edge.
            a = verts
            e = np.roll(verts, -1, axis=0) - verts  # (V, 2) edge vectors
            ac = a - np.array([cx, cy])
            den = dx * e[:, 1] - dy * e[:, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                t_all = (ac[:, 0] * e[:, 1] - ac[:, 1] * e[:, 0]) / den
                s_all = (ac[:, 0] * dy - ac[:, 1] * dx) / den
            ok = (np.abs(den) > 1e-12) & (s_all >= -1e-9) & (s_all <= 1 + 1e-9) & (t_all > 0)
            t = float(t_all[ok].max())
        pts[k] = (cx + t * dx, cy + t * dy)
    return pts


# --------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) float32 noise in [0, 1]: a (cells+1)^2 random grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h, endpoint=False)
    xs = np.linspace(0, cells, w, endpoint=False)
    knots = np.arange(cells + 1)
    rows = np.stack([np.interp(xs, knots, g) for g in grid])  # (cells+1, w)
    y0 = ys.astype(int)
    fy = (ys - y0)[:, None]
    return (rows[y0] * (1 - fy) + rows[y0 + 1] * fy).astype(np.float32)


def _wavy_curve(rng: np.random.Generator, x: np.ndarray, length: int, base: float, amp: float) -> np.ndarray:
    """A smooth random curve y(x) around ``base``: a slope plus two sinusoids."""
    slope = rng.uniform(-0.12, 0.12)
    f1, f2 = rng.uniform(0.3, 1.5), rng.uniform(1.5, 4.0)
    p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
    return (base + slope * (x - length / 2) + amp * np.sin(2 * np.pi * f1 * x / length + p1)
            + 0.35 * amp * np.sin(2 * np.pi * f2 * x / length + p2))


def _stuff_layout(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 stuff labels (1 sky, 2 ground, 3 water) with 2-3 regions of >= 8% each."""
    y = (np.arange(h) + 0.5)[:, None]
    x = np.arange(w) + 0.5
    for _ in range(50):
        kind = rng.integers(0, 4)
        labels = np.empty((h, w), dtype=np.uint8)
        if kind in (0, 1):  # sky over ground (0) or over open water (1, a flatter horizon)
            amp = rng.uniform(0.02, 0.08) * h if kind == 0 else rng.uniform(0.0, 0.015) * h
            horizon = _wavy_curve(rng, x, w, rng.uniform(0.3, 0.6) * h, amp)
            labels[:] = _GROUND if kind == 0 else _WATER
            labels[y < horizon] = _SKY
        elif kind == 2:  # sky, then ground and water in random order towards the viewer
            h1 = _wavy_curve(rng, x, w, rng.uniform(0.22, 0.42) * h, rng.uniform(0.01, 0.05) * h)
            h2 = _wavy_curve(rng, x, w, h1.mean() + rng.uniform(0.2, 0.32) * h,
                             rng.uniform(0.02, 0.08) * h)
            near, far = (_WATER, _GROUND) if rng.random() < 0.5 else (_GROUND, _WATER)
            labels[:] = near
            labels[y < h2] = far
            labels[y < h1] = _SKY
        else:  # seen from above: a river across the ground
            transpose = rng.random() < 0.5
            hh, ww = (w, h) if transpose else (h, w)
            yy = (np.arange(hh) + 0.5)[:, None]
            xx = np.arange(ww) + 0.5
            centre = _wavy_curve(rng, xx, ww, rng.uniform(0.3, 0.7) * hh, rng.uniform(0.03, 0.12) * hh)
            half = rng.uniform(0.1, 0.2) * hh
            lab = np.where(np.abs(yy - centre) < half, _WATER, _GROUND).astype(np.uint8)
            labels = np.ascontiguousarray(lab.T) if transpose else lab
        counts = np.bincount(labels.ravel(), minlength=4)[1:]
        present = counts[counts > 0]
        if len(present) >= 2 and present.min() >= 0.08 * h * w:
            return labels
    raise RuntimeError("Could not draw a stuff layout with two regions of >= 8% of the image.")


def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) as float RGB in [0, 255]."""
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array(rgb) * 255.0


def _stuff_textures(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 background: each stuff class textured where ``labels`` holds it."""
    h, w = labels.shape
    out = np.zeros((h, w, 3), dtype=np.float32)
    present = set(np.unique(labels).tolist())
    if _SKY in present:
        where = labels == _SKY
        top = _hsv_to_rgb(rng.uniform(0.53, 0.64), rng.uniform(0.35, 0.8), rng.uniform(0.65, 0.95))
        if rng.random() < 0.25:  # dusk
            bottom = _hsv_to_rgb(rng.uniform(0.0, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.85, 1.0))
        else:
            bottom = np.minimum(top + rng.uniform(40, 90), 255.0)
        rows = np.nonzero(where)[0]
        yr = ((rows + 0.5) / h).astype(np.float32)[:, None]  # (P, 1) relative height
        gradient = top.astype(np.float32) + (bottom - top).astype(np.float32) * yr  # (P, 3)
        clouds = np.clip((_smooth_noise(rng, h, w, int(rng.integers(3, 7))) - 0.55) * 3.0, 0, 1)
        cover = (np.float32(rng.uniform(0.3, 0.8)) * clouds[where])[:, None]  # (P, 1)
        out[where] = gradient + (250.0 - gradient) * cover
    if _GROUND in present:
        where = labels == _GROUND
        base = _hsv_to_rgb(rng.uniform(0.07, 0.3), rng.uniform(0.35, 0.75), rng.uniform(0.3, 0.65))
        blotch = _smooth_noise(rng, h, w, int(rng.integers(8, 20))) - 0.5
        grain = rng.standard_normal((h, w), dtype=np.float32)
        gain = (1 + 0.45 * blotch + 0.12 * grain)[where]  # (P,)
        out[where] = gain[:, None] * base.astype(np.float32)
    if _WATER in present:
        where = labels == _WATER
        base = _hsv_to_rgb(rng.uniform(0.5, 0.64), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.75))
        xr = (np.arange(w) + 0.5)[None, :]
        yy = (np.arange(h) + 0.5)[:, None]
        period = rng.uniform(5.0, 10.0)
        wobble = 2.0 * np.sin(2 * np.pi * xr / rng.uniform(40, 90) + rng.uniform(0, 2 * np.pi))
        waves = np.sin(2 * np.pi * (yy + wobble) / period).astype(np.float32)
        ripple = 0.04 * rng.standard_normal((h, w), dtype=np.float32)
        gain = (1 + 0.18 * waves + ripple)[where]
        out[where] = gain[:, None] * base.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Mask -> polygons
# --------------------------------------------------------------------------------------------
def _simplify_chain(points: np.ndarray, tol: float) -> np.ndarray:
    """Douglas-Peucker on an open chain; keeps both ends. Returns the kept points."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = points[i], points[j]
        seg = b - a
        norm = np.hypot(seg[0], seg[1])
        mid = points[i + 1:j] - a
        if norm < 1e-12:
            dist = np.hypot(mid[:, 0], mid[:, 1])
        else:
            dist = np.abs(mid[:, 0] * seg[1] - mid[:, 1] * seg[0]) / norm
        k = int(np.argmax(dist))
        if dist[k] > tol:
            keep[i + 1 + k] = True
            stack.append((i, i + 1 + k))
            stack.append((i + 1 + k, j))
    return points[keep]


def _simplify_ring(ring: np.ndarray, tol: float) -> np.ndarray:
    """Douglas-Peucker on a closed ring (without the repeated last point)."""
    if len(ring) <= 4:
        return ring
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    first = _simplify_chain(ring[: far + 1], tol)
    second = _simplify_chain(np.concatenate([ring[far:], ring[:1]]), tol)
    return np.concatenate([first, second[1:-1]])


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _join_holes(outer: np.ndarray, holes: List[np.ndarray]) -> np.ndarray:
    """One ring for an outer boundary with holes: each hole is entered and left through a
    zero-width cut from the nearest outer vertex (the "keyhole" polygon). With the hole running
    against the outer ring, both the even-odd fill of pycocotools and the shoelace area are
    exact."""
    ring = outer
    # Largest holes first, so the small ones can attach to an already cut ring.
    for hole in sorted(holes, key=lambda hl: -abs(_signed_area(hl))):
        d = np.hypot(hole[:, None, 0] - ring[None, :, 0], hole[:, None, 1] - ring[None, :, 1])
        hi, ri = np.unravel_index(int(np.argmin(d)), d.shape)
        ring = np.concatenate([ring[: ri + 1], hole[hi:], hole[: hi + 1], ring[ri:]])
    return ring


def mask_to_polygons(mask: np.ndarray, tol: float = 0.35, min_area: float = 2.0,
                     offset: Tuple[float, float] = (0.0, 0.0)) -> List[List[float]]:
    """Polygons (COCO format: flat ``[x0, y0, x1, y1, ...]`` lists in continuous coordinates)
    tracing a binary mask: one per connected part, holes joined in by zero-width cuts.

    The boundary is the 0.5 level line of the mask sampled at pixel centres (so it runs along
    pixel edges and cuts pixel corners), simplified by Douglas-Peucker with tolerance ``tol``
    pixels. Parts whose polygon is smaller than ``min_area`` pixels are dropped. ``offset``
    (x, y) is added to every coordinate (for a mask cut out of a larger image).
    """
    import contourpy  # shipped with matplotlib, a workbench dependency

    if mask.ndim != 2:
        raise ValueError(f"Expected a mask of shape (H, W), got {tuple(mask.shape)}.")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return []
    # Trace only the bounding box of the mask, padded so that every contour is closed.
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    z = np.pad(crop.astype(np.float64), 1)
    xs = np.arange(-1, w + 1) + 0.5 + cols[0] + offset[0]
    ys = np.arange(-1, h + 1) + 0.5 + rows[0] + offset[1]
    gen = contourpy.contour_generator(xs, ys, z, fill_type=contourpy.FillType.OuterOffset)
    points_list, offsets_list = gen.filled(0.5, 2.0)
    polygons = []
    for pts, offs in zip(points_list, offsets_list):
        rings = []
        for a, b in zip(offs[:-1], offs[1:]):
            ring = np.asarray(pts[a:b - 1], dtype=np.float64)  # drop the closing repeat
            rings.append(_simplify_ring(ring, tol))
        outer, holes = rings[0], [r for r in rings[1:] if len(r) >= 3]
        if len(outer) < 3 or abs(_signed_area(outer)) < min_area:
            continue
        poly = _join_holes(outer, holes) if holes else outer
        polygons.append([round(float(v), 2) for v in poly.ravel()])
    return polygons


def _mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------
def _as_rng(seed_or_rng: Union[int, Sequence[int], np.random.Generator]) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def generate_shapes_image(
    seed_or_rng: Union[int, Sequence[int], np.random.Generator],
    *,
    height: Optional[int] = None,
    width: Optional[int] = None,
    num_shapes: Optional[int] = None,
    mask_format: str = "polygon",
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Draw one image of the shapes dataset with its ground truth.

    Args:
        seed_or_rng: an int (or int sequence) seed, or a ``numpy.random.Generator`` to draw
            from (it is advanced). The same seed always gives the same image and record.
        height, width: image size; each side is drawn from 256, 288, ..., 384 if not given.
        num_shapes: shapes to try to place (drawn from 3..7 if not given); fewer are placed
            when a position that keeps every shape half visible cannot be found.
        mask_format: "polygon" (COCO polygons) or "bitmask" (COCO RLE dict) for the
            ``segmentation`` of each annotation.

    Returns:
        image: (H, W, 3) uint8 RGB.
        record: a detectron2 dataset dict without file names: ``height``, ``width``,
            ``annotations`` (``bbox`` XYWH_ABS of the visible part with ``bbox_mode``,
            ``category_id`` in ``0..len(THING_CLASSES)-1``, ``segmentation``, ``keypoints``
            ``[x, y, v] * 5``, ``iscrowd`` 0), plus the dense ground truth as arrays:
            ``sem_seg`` (H, W) uint8 (0 things, 1..3 stuff), ``pan_seg`` (H, W) int32 segment ids
            and its ``segments_info`` (``id``, ``category_id`` contiguous, ``isthing``,
            ``iscrowd``, ``area``, ``bbox``; stuff ``category_id`` is its ``sem_seg`` label).
    """
    from workbench.structures import BoxMode

    if mask_format not in ("polygon", "bitmask"):
        raise ValueError(f"Expected mask_format 'polygon' or 'bitmask', got {mask_format!r}.")
    rng = _as_rng(seed_or_rng)
    h = int(height) if height is not None else int(rng.choice(_IMAGE_SIDES))
    w = int(width) if width is not None else int(rng.choice(_IMAGE_SIDES))
    if h < 64 or w < 64:
        raise ValueError(f"Expected an image of at least 64 x 64 pixels, got {h} x {w}.")
    k_try = int(num_shapes) if num_shapes is not None else int(rng.integers(3, 8))

    stuff = _stuff_layout(rng, h, w)
    image = _stuff_textures(rng, stuff)

    owner = np.full((h, w), -1, dtype=np.int32)  # index of the shape seen at each pixel
    shapes: List[Dict[str, Any]] = []
    full_area: List[int] = []
    visible: List[int] = []  # pixels of each shape still seen
    r_max = 0.17 * min(h, w)
    for _ in range(k_try):
        cls_id = int(rng.integers(len(THING_CLASSES)))
        cls_name = THING_CLASSES[cls_id]
        placed = False
        for _attempt in range(15):
            r = float(np.exp(rng.uniform(np.log(_MIN_RADIUS), np.log(r_max))))
            theta = float(rng.uniform(0, 2 * np.pi))
            ro = _outer_radius(cls_name, r)
            cx = float(rng.uniform(ro + 1, w - ro - 1))
            cy = float(rng.uniform(ro + 1, h - ro - 1))
            verts = _shape_vertices(cls_name, cx, cy, r, theta)
            x0, x1 = max(int(np.floor(cx - ro)), 0), min(int(np.ceil(cx + ro)) + 1, w)
            y0, y1 = max(int(np.floor(cy - ro)), 0), min(int(np.ceil(cy + ro)) + 1, h)
            px, py = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
            local = _inside(cls_name, verts, cx, cy, r, px, py)  # (y1-y0, x1-x0)
            area = int(local.sum())
            if area < _MIN_VISIBLE_PIXELS:
                continue
            # Reject positions that would hide too much of an earlier shape.
            covered = np.bincount(owner[y0:y1, x0:x1][local] + 1, minlength=len(shapes) + 1)[1:]
            remaining = np.asarray(visible, dtype=np.int64) - covered
            if len(shapes) and (np.any(remaining < _MIN_VISIBLE_FRACTION * np.asarray(full_area))
                                or np.any(remaining < _MIN_VISIBLE_PIXELS)):
                continue
            placed = True
            break
        if not placed:
            continue
        window = (slice(y0, y1), slice(x0, x1))
        # A colour that stands out from what it covers: the stuff under it (on average) and
        # each shape it overlaps, so that every visible boundary can be seen.
        under = owner[window][local]
        avoid = [image[window][local][under < 0].mean(axis=0)] if np.any(under < 0) else []
        avoid += [shapes[j]["color"] for j in np.unique(under[under >= 0])]
        for _c in range(30):
            color = _hsv_to_rgb(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
            if all(np.linalg.norm(color - a) > _MIN_COLOR_DISTANCE for a in avoid):
                break
        # Soft shading along a random direction, as if lit from one side.
        phi = rng.uniform(0, 2 * np.pi)
        shade = 1 + 0.18 * ((px[local] - cx) * np.cos(phi) + (py[local] - cy) * np.sin(phi)) / r
        image[window][local] = np.clip(color[None, :] * shade[:, None], 0, 255)
        visible = [v - int(c) for v, c in zip(visible, covered)] + [area]
        owner[window][local] = len(shapes)
        shapes.append({"cls": cls_id, "name": cls_name, "cx": cx, "cy": cy, "r": r,
                       "verts": verts, "window": window, "color": color})
        full_area.append(area)

    image += 3.0 * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    sem_seg = np.where(owner >= 0, 0, stuff).astype(np.uint8)
    pan_seg = np.where(owner >= 0, owner + 1, 1000 + stuff.astype(np.int32)).astype(np.int32)
    segments_info: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for k, sh in enumerate(shapes):
        window = sh["window"]
        local = owner[window] == k  # visible part, inside the shape's window
        ys, xs = np.nonzero(local)
        ys = ys + window[0].start
        xs = xs + window[1].start
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        kps = _axis_keypoints(sh["name"], sh["verts"], sh["cx"], sh["cy"], sh["r"])
        kp_flat: List[float] = []
        for x, y in kps:
            xi = min(max(int(np.floor(x)), 0), w - 1)
            yi = min(max(int(np.floor(y)), 0), h - 1)
            vis = 1 if owner[yi, xi] > k else 2  # covered by a later shape: labelled, hidden
            kp_flat += [round(float(x), 3), round(float(y), 3), vis]
        if mask_format == "polygon":
            segm: Any = mask_to_polygons(local, offset=(window[1].start, window[0].start))
        else:
            full = np.zeros((h, w), dtype=np.uint8)
            full[window] = local
            segm = _mask_to_rle(full)
        annotations.append({"iscrowd": 0, "bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS,
                            "category_id": sh["cls"], "segmentation": segm, "keypoints": kp_flat})
        segments_info.append({"id": k + 1, "category_id": sh["cls"], "isthing": True,
                              "iscrowd": 0, "area": int(len(xs)), "bbox": bbox})
    for label in range(1, len(STUFF_CLASSES)):
        mask = sem_seg == label
        if not mask.any():
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        segments_info.append({
            "id": 1000 + label, "category_id": label, "isthing": False, "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
                     float(rows[-1] - rows[0] + 1)],
        })
    record = {"height": h, "width": w, "annotations": annotations, "sem_seg": sem_seg,
              "pan_seg": pan_seg, "segments_info": segments_info}
    return image, record

"""Label placement and rendering.

Where a label goes is decided by :class:`LabelPlacer` (one per picture): next to its box if a
spot there is free, else shifted in steps of a label's size, else the least-crowded spot; always
inside its panel. Labels are rendered after the figure, with PIL and matplotlib's own DejaVu
Sans font (matplotlib's Agg text costs ~2 ms a label, too slow for 100 labels per slider move);
each rendered label is ``(text, (x0, y0, x1, y1) image pixels, face colour, text colour)``.

Shape legend: C candidate spots; P labels placed so far.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

Rect = Tuple[float, float, float, float]

_OVERLAP_EPS = 1e-6  # px^2: rectangles that only touch do not overlap
_CHUNK = 64  # far candidates tried at a time


@functools.lru_cache(maxsize=16)
def _font(size_px: int):
    """matplotlib's bundled DejaVu Sans at ``size_px`` pixels, for PIL."""
    import matplotlib
    from PIL import ImageFont

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    return ImageFont.truetype(path, max(size_px, 1))


def fit_text(text: str, font, max_px: float) -> Tuple[str, float]:
    """``text``, shortened with an ellipsis until ``font`` draws it within ``max_px`` pixels,
    and its drawn width in pixels."""
    width = font.getlength(text)
    if width <= max_px:
        return text, width
    lo, hi = 0, len(text)  # the longest prefix p with font(text[:p] + "…") <= max_px
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid] + "\u2026") <= max_px:
            lo = mid
        else:
            hi = mid - 1
    short = text[:lo] + "\u2026"
    return short, font.getlength(short)


@dataclass
class LabelSpot:
    """Where one label went.

    Attributes:
        rect: (x0, y0, x1, y1) image pixels.
        moved: the label is away from every corner of its box (more than a quarter of its
            height), so it has a ``leader``.
        leader: (x_label, y_label, x_box, y_box): from the label's nearest point to the box's
            nearest corner; None unless ``moved``.
    """

    rect: Rect
    moved: bool
    leader: Optional[Rect]


class LabelPlacer:
    """Greedy label placement: each label takes the first free candidate spot near its box.

    Candidates, in order: above the box's top-left corner, inside its top-left, below its
    bottom-left, right of its top-right, left of its top-left, above its top-right, inside its
    bottom-left, below its bottom-right. If none is free: a grid of spots around the first one,
    shifted in steps of the label's height (down / up) and width (right / left), and the spots
    just beside each label already placed, nearest first. Every candidate is clamped into the
    label's panel. If none is free of the labels already placed, the one overlapping them least
    is taken. Cost: a few numpy operations on (C, P) arrays per label.
    """

    def __init__(self):
        self._rects = np.zeros((16, 4))  # (capacity, 4); the first ``_n`` rows are placed
        self._n = 0

    @property
    def placed(self) -> np.ndarray:
        """(P, 4) the rectangles placed so far."""
        return self._rects[: self._n]

    def place(self, width: float, height: float, box: Sequence[float], panel: Rect) -> LabelSpot:
        """Place a ``width`` x ``height`` label for ``box`` (x0, y0, x1, y1) inside ``panel``."""
        x0, y0, x1, y1 = (float(v) for v in box)
        w, h = float(width), float(height)
        if not np.isfinite([x0, y0, x1, y1]).all():
            raise ValueError(f"Cannot place a label for the box {list(box)}: its coordinates must be finite.")
        near = np.array([(x0, y0 - h), (x0, y0), (x0, y1), (x1, y0), (x0 - w, y0),
                         (x1 - w, y0 - h), (x0, y1 - h), (x1 - w, y1)])
        overlap, rects = self._overlaps(near, w, h, panel)
        free = np.nonzero(overlap <= _OVERLAP_EPS)[0]
        if len(free):
            rect = rects[free[0]]
        else:
            k = int(np.argmin(overlap))
            rect = self._search_far(x0, y0 - h, w, h, panel, rects[k], float(overlap[k]))
        self._add(rect)
        return _spot(rect, (x0, y0, x1, y1), h)

    def _search_far(self, x: float, y: float, w: float, h: float, panel: Rect,
                    best: np.ndarray, best_overlap: float) -> np.ndarray:
        """The first free spot on the grid around (x, y) or beside a placed label, nearest
        first, else the least crowded of those and ``best``. Candidates are tried a chunk at a
        time: most labels find a spot in the first chunk."""
        far = _nearest_first(np.concatenate([_grid(x, y, w, h, panel), _beside(self.placed, w, h)]),
                             x, y, w, h)
        for start in range(0, len(far), _CHUNK):
            overlap, rects = self._overlaps(far[start:start + _CHUNK], w, h, panel)
            free = np.nonzero(overlap <= _OVERLAP_EPS)[0]
            if len(free):
                return rects[free[0]]
            k = int(np.argmin(overlap))
            if overlap[k] < best_overlap:
                best, best_overlap = rects[k], float(overlap[k])
        return best

    def _overlaps(self, corners: np.ndarray, w: float, h: float, panel: Rect):
        """(C,) summed overlap with the placed labels and (C, 4) rectangles of the candidates
        with top-left ``corners`` (C, 2), clamped into ``panel``."""
        px0, py0, px1, py1 = panel
        c = np.empty_like(corners)
        c[:, 0] = np.clip(corners[:, 0], px0, max(px1 - w, px0))
        c[:, 1] = np.clip(corners[:, 1], py0, max(py1 - h, py0))
        rects = np.concatenate([c, c + [w, h]], axis=1)
        placed = self.placed
        if len(placed) == 0:
            return np.zeros(len(rects)), rects
        # Only the placed labels that can reach a candidate matter.
        reach = ((placed[:, 2] > rects[:, 0].min()) & (placed[:, 0] < rects[:, 2].max())
                 & (placed[:, 3] > rects[:, 1].min()) & (placed[:, 1] < rects[:, 3].max()))
        placed = placed[reach]
        if len(placed) == 0:
            return np.zeros(len(rects)), rects
        r, p = rects[:, None, :], placed[None, :, :]  # (C, 1, 4), (1, P, 4)
        iw = np.minimum(r[..., 2], p[..., 2]) - np.maximum(r[..., 0], p[..., 0])  # (C, P)
        ih = np.minimum(r[..., 3], p[..., 3]) - np.maximum(r[..., 1], p[..., 1])
        return (np.clip(iw, 0, None) * np.clip(ih, 0, None)).sum(1), rects

    def _add(self, rect: np.ndarray) -> None:
        if self._n == len(self._rects):
            self._rects = np.concatenate([self._rects, np.zeros_like(self._rects)])
        self._rects[self._n] = rect
        self._n += 1


def _grid(x: float, y: float, w: float, h: float, panel: Rect) -> np.ndarray:
    """(C, 2) top-left corners around (x, y) in steps of the label's height and width that
    cover ``panel``."""
    px0, py0, px1, py1 = panel
    ky = np.arange(-int(np.ceil((y - py0) / h)) - 1, int(np.ceil((py1 - y) / h)) + 2)
    kx = np.arange(-int(np.ceil((x - px0) / w)) - 1, int(np.ceil((px1 - x) / w)) + 2)
    gx, gy = np.meshgrid(kx, ky)
    return np.stack([x + gx.ravel() * w, y + gy.ravel() * h], axis=1)


def _beside(placed: np.ndarray, w: float, h: float) -> np.ndarray:
    """(4 P, 2) top-left corners of a w x h label just below, above, right and left of each
    placed label (the gaps a grid anchored elsewhere would miss)."""
    x0, y0, x1, y1 = placed.T
    return np.concatenate([np.stack([x0, y1], 1), np.stack([x0, y0 - h], 1),
                           np.stack([x1, y0], 1), np.stack([x0 - w, y0], 1)])


def _nearest_first(corners: np.ndarray, x: float, y: float, w: float, h: float) -> np.ndarray:
    """``corners`` (C, 2) sorted by their distance from (x, y) in label sizes, a label width
    across counting as two label heights down (a column of labels reads better than a row);
    below before above at equal distance."""
    dx, dy = (corners[:, 0] - x) / w, (corners[:, 1] - y) / h
    return corners[np.argsort(2.0 * np.abs(dx) + np.abs(dy) + 1e-3 * (dy < 0), kind="stable")]


def _spot(rect: np.ndarray, box: Rect, h: float) -> LabelSpot:
    """The :class:`LabelSpot` of ``rect``: moved (and its leader) when no corner of ``box`` is
    within a quarter label height of it."""
    x0, y0, x1, y1 = box
    corners = np.array([(x0, y0), (x1, y0), (x0, y1), (x1, y1)])
    nearest = np.stack([np.clip(corners[:, 0], rect[0], rect[2]),
                        np.clip(corners[:, 1], rect[1], rect[3])], axis=1)  # on the label
    dist = np.hypot(*(corners - nearest).T)
    k = int(np.argmin(dist))
    rect_t = tuple(float(v) for v in rect)
    if dist[k] <= 0.25 * h:
        return LabelSpot(rect_t, False, None)
    leader = (float(nearest[k, 0]), float(nearest[k, 1]), float(corners[k, 0]), float(corners[k, 1]))
    return LabelSpot(rect_t, True, leader)


def _render_labels(rgb: np.ndarray, labels, scale: float, font_px: float) -> np.ndarray:
    """Label backgrounds (80% opaque) and text onto the rendered (H, W, 3) uint8 picture."""
    if not labels:
        return rgb
    from PIL import Image, ImageDraw

    base = Image.fromarray(rgb).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(int(round(font_px)))
    pad = 0.2 * font_px
    for text, (x0, y0, x1, y1), face, text_color in labels:
        r = [x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1]
        draw.rectangle(r, fill=tuple(int(round(c * 255)) for c in face[:3]) + (204,))
    out = Image.alpha_composite(base, layer)
    draw = ImageDraw.Draw(out)
    fill = {"black": (0, 0, 0, 255), "white": (255, 255, 255, 255)}
    for text, (x0, y0, x1, y1), face, text_color in labels:
        draw.text((x0 * scale + pad, (y0 + y1) / 2 * scale), text, font=font, anchor="lm",
                  fill=fill[text_color])
    return np.asarray(out.convert("RGB"))


def _overlap_area(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0

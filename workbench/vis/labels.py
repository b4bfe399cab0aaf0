"""Label text and backgrounds, rendered with PIL onto the finished picture.

Matplotlib's Agg text costs ~2 ms a label, too slow for 100 labels per slider move, so labels
are drawn after the figure, with PIL and matplotlib's own DejaVu Sans font. Where a label goes
is decided by ``Visualizer._place_label``; each label is ``(text, (x0, y0, x1, y1) image
pixels, face colour, text colour)``.
"""

from __future__ import annotations

import functools
import os

import numpy as np


@functools.lru_cache(maxsize=16)
def _font(size_px: int):
    """matplotlib's bundled DejaVu Sans at ``size_px`` pixels, for PIL."""
    import matplotlib
    from PIL import ImageFont

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    return ImageFont.truetype(path, max(size_px, 1))


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

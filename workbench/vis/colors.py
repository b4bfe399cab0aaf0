"""Colours: a fixed palette for classes and instances, and colour maps for scores.

Every function is deterministic (no global random state), so the same inputs give the same
pixels and the PNGs of a notebook do not change from run to run.

Colours are RGB floats in [0, 1] unless a name says ``_uint8``.
"""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence

import numpy as np

__all__ = ["palette", "class_color", "class_colors", "instance_colors", "score_colors",
           "contrast_text_color", "lighten"]

# 20 distinct, saturated hues first (hand-ordered so neighbours differ), then golden-ratio hues.
_BASE = np.array([
    [0.000, 0.447, 0.741], [0.850, 0.325, 0.098], [0.929, 0.694, 0.125], [0.494, 0.184, 0.556],
    [0.466, 0.674, 0.188], [0.301, 0.745, 0.933], [0.635, 0.078, 0.184], [1.000, 0.000, 1.000],
    [0.000, 0.700, 0.500], [0.600, 0.600, 0.000], [0.300, 0.300, 1.000], [1.000, 0.500, 0.000],
    [0.000, 0.500, 1.000], [0.700, 0.200, 0.700], [0.200, 0.800, 0.200], [1.000, 0.250, 0.400],
    [0.250, 0.550, 0.550], [0.850, 0.850, 0.200], [0.550, 0.350, 0.150], [0.500, 0.500, 0.900],
])


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours, (n, 3) floats in [0, 1]; the first 20 are fixed, then generated."""
    if n <= len(_BASE):
        return _BASE[:n].copy()
    extra = []
    for i in range(n - len(_BASE)):
        h = (0.13 + i * 0.6180339887) % 1.0
        s = 0.65 + 0.3 * ((i * 7) % 3) / 2
        v = 0.95 - 0.25 * ((i * 5) % 3) / 2
        extra.append(colorsys.hsv_to_rgb(h, s, v))
    return np.concatenate([_BASE, np.asarray(extra)], axis=0)


def _metadata_colors(metadata, key: str) -> Optional[np.ndarray]:
    if metadata is None:
        return None
    colors = metadata.get(key) if hasattr(metadata, "get") else getattr(metadata, key, None)
    if not colors:
        return None
    arr = np.asarray(colors, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"Expected metadata.{key} to be a list of RGB triples, got shape {arr.shape}.")
    return arr / 255.0 if arr.max() > 1.0 else arr


def class_colors(num_classes: int, metadata=None, *, stuff: bool = False) -> np.ndarray:
    """(num_classes, 3) colours: ``metadata.thing_colors`` (``stuff_colors`` if ``stuff``) when
    set (0-255 ints, as detectron2 stores them), else the fixed palette."""
    given = _metadata_colors(metadata, "stuff_colors" if stuff else "thing_colors")
    out = palette(max(num_classes, 1))
    if given is not None:
        n = min(len(given), len(out))
        out[:n] = given[:n]
    return out[:num_classes] if num_classes > 0 else out[:0]


def class_color(cls: int, metadata=None, *, stuff: bool = False) -> np.ndarray:
    """The colour of one class (see :func:`class_colors`)."""
    return class_colors(int(cls) + 1, metadata, stuff=stuff)[int(cls)]


def instance_colors(classes: Optional[Sequence[int]], n: int, metadata=None) -> np.ndarray:
    """(n, 3) colours: per class when ``classes`` is given, else one palette colour per instance."""
    if classes is None:
        return palette(max(n, 1))[:n]
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(classes) != n:
        raise ValueError(f"Expected {n} classes, got {len(classes)}.")
    if n == 0:
        return np.zeros((0, 3))
    return class_colors(int(classes.max()) + 1, metadata)[classes]


def score_colors(scores, cmap: str = "viridis", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """(n, 3) colours of ``scores`` through a matplotlib colour map (e.g. objectness)."""
    from matplotlib import colormaps

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.clip((s - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return colormaps[cmap](t)[:, :3]


def contrast_text_color(rgb) -> str:
    """Black or white, whichever reads better on ``rgb``."""
    r, g, b = [float(v) for v in rgb[:3]]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def lighten(rgb, amount: float = 0.3) -> np.ndarray:
    """``rgb`` moved ``amount`` of the way towards white."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb + (1.0 - rgb) * amount

"""detectron2's colour table, at detectron2's path ``detectron2/utils/colormap.py``.

``colormap``, ``random_color`` and ``random_colors`` behave as detectron2's: colours are
float32 values in [0, 255] (or [0, 1] with ``maximum=1``), **BGR** unless ``rgb=True``, drawn
from the same 74-entry table (detectron2's ``_COLORS``, from Detectron). ``random_color`` and
``random_colors`` use numpy's and Python's global random state, as detectron2's do.

workbench's own drawing (:mod:`workbench.vis`) uses the deterministic palette of
:mod:`workbench.vis.colors` instead; this module is for code written against detectron2.
"""

from __future__ import annotations

import random
from typing import List

import numpy as np

__all__ = ["colormap", "random_color", "random_colors"]

# RGB in [0, 1], in detectron2's order (detectron2/utils/colormap.py ``_COLORS``).
_COLORS = np.array([
    [0.000, 0.447, 0.741], [0.850, 0.325, 0.098], [0.929, 0.694, 0.125], [0.494, 0.184, 0.556],
    [0.466, 0.674, 0.188], [0.301, 0.745, 0.933], [0.635, 0.078, 0.184], [0.300, 0.300, 0.300],
    [0.600, 0.600, 0.600], [1.000, 0.000, 0.000], [1.000, 0.500, 0.000], [0.749, 0.749, 0.000],
    [0.000, 1.000, 0.000], [0.000, 0.000, 1.000], [0.667, 0.000, 1.000], [0.333, 0.333, 0.000],
    [0.333, 0.667, 0.000], [0.333, 1.000, 0.000], [0.667, 0.333, 0.000], [0.667, 0.667, 0.000],
    [0.667, 1.000, 0.000], [1.000, 0.333, 0.000], [1.000, 0.667, 0.000], [1.000, 1.000, 0.000],
    [0.000, 0.333, 0.500], [0.000, 0.667, 0.500], [0.000, 1.000, 0.500], [0.333, 0.000, 0.500],
    [0.333, 0.333, 0.500], [0.333, 0.667, 0.500], [0.333, 1.000, 0.500], [0.667, 0.000, 0.500],
    [0.667, 0.333, 0.500], [0.667, 0.667, 0.500], [0.667, 1.000, 0.500], [1.000, 0.000, 0.500],
    [1.000, 0.333, 0.500], [1.000, 0.667, 0.500], [1.000, 1.000, 0.500], [0.000, 0.333, 1.000],
    [0.000, 0.667, 1.000], [0.000, 1.000, 1.000], [0.333, 0.000, 1.000], [0.333, 0.333, 1.000],
    [0.333, 0.667, 1.000], [0.333, 1.000, 1.000], [0.667, 0.000, 1.000], [0.667, 0.333, 1.000],
    [0.667, 0.667, 1.000], [0.667, 1.000, 1.000], [1.000, 0.000, 1.000], [1.000, 0.333, 1.000],
    [1.000, 0.667, 1.000], [0.333, 0.000, 0.000], [0.500, 0.000, 0.000], [0.667, 0.000, 0.000],
    [0.833, 0.000, 0.000], [1.000, 0.000, 0.000], [0.000, 0.167, 0.000], [0.000, 0.333, 0.000],
    [0.000, 0.500, 0.000], [0.000, 0.667, 0.000], [0.000, 0.833, 0.000], [0.000, 1.000, 0.000],
    [0.000, 0.000, 0.167], [0.000, 0.000, 0.333], [0.000, 0.000, 0.500], [0.000, 0.000, 0.667],
    [0.000, 0.000, 0.833], [0.000, 0.000, 1.000], [0.000, 0.000, 0.000], [0.143, 0.143, 0.143],
    [0.857, 0.857, 0.857], [1.000, 1.000, 1.000],
], dtype=np.float32)


def _scaled(colors: np.ndarray, rgb: bool, maximum: int) -> np.ndarray:
    assert maximum in (255, 1), maximum
    out = colors * maximum
    return out if rgb else out[..., ::-1]


def colormap(rgb: bool = False, maximum: int = 255) -> np.ndarray:
    """All colours of the table, (N, 3) float32 in [0, ``maximum``]; BGR unless ``rgb``."""
    return _scaled(_COLORS, rgb, maximum)


def random_color(rgb: bool = False, maximum: int = 255) -> np.ndarray:
    """One colour of the table at random (``np.random``), (3,) in [0, ``maximum``]."""
    return _scaled(_COLORS[np.random.randint(0, len(_COLORS))], rgb, maximum)


def random_colors(N: int, rgb: bool = False, maximum: int = 255) -> List[np.ndarray]:
    """``N`` distinct colours of the table at random (``random.sample``), each (3,)."""
    return [_scaled(_COLORS[i], rgb, maximum) for i in random.sample(range(len(_COLORS)), N)]

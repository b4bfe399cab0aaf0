""":class:`PlotImage`: a matplotlib figure rendered with Agg, with the ``VisImage`` interface.

Pictures are meant to be shown at their native pixel size (a notebook's ``widgets.Image``,
a PNG file), so sizes are chosen in pixels: one inch is :data:`DPI` pixels and a ``panel`` of
3.0 is a 300 px square. Every heat map gets a colour bar with its unit
(:meth:`PlotImage.colorbar`), listed in ``drawn["colorbars"]``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .png import encode_png
from .vis_image import VisImage

__all__ = ["PlotImage", "DPI"]

DPI = 100  # pixels per inch of every PlotImage


class PlotImage:
    """A grid of ``nrows`` x ``ncols`` panels, each ``panel`` inches (x :data:`DPI` px) square.

    ``get_image()`` (H, W, 3) uint8 RGB, ``to_png_bytes()``, ``save(path)``; ``drawn`` holds
    what was shown (arrays, titles, colour-bar labels) so tests can compare it with its source.
    """

    def __init__(self, nrows: int, ncols: int, panel: float = 2.2, *, title_space: bool = True,
                 suptitle: bool = False, colorbars: bool = False, layout: Optional[str] = None):
        """``title_space``: room for a panel title; ``suptitle``: for :meth:`title`;
        ``colorbars``: room beside each panel for its :meth:`colorbar`. ``layout``: None
        (fixed margins, adjustable with ``fig.subplots_adjust``) or a matplotlib layout engine,
        e.g. "compressed", which packs panels so that colour bars, labels and titles never
        overlap a neighbour."""
        title = 0.25 if title_space else 0.0
        top_extra = 0.3 if suptitle else 0.0
        width = ncols * (panel + (0.8 if colorbars else 0.0))
        height = nrows * (panel + title) + top_extra
        self.fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
        self.canvas = FigureCanvasAgg(self.fig)
        self.axes = [self.fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
        if layout is None:
            top = 1.0 - (0.3 / (nrows * (panel + title)) if title_space else 0.02) - top_extra / height
            self.fig.subplots_adjust(left=0.03, right=0.97, bottom=0.03, top=top, wspace=0.12, hspace=0.3)
        self.drawn: Dict[str, Any] = {}
        self._cache: Optional[np.ndarray] = None

    def title(self, text: str) -> None:
        """A title over all panels (``drawn["title"]``); the figure needs ``suptitle=True``."""
        self.fig.suptitle(text, fontsize=9)
        self.drawn["title"] = text

    def colorbar(self, mappable, ax: Union[Any, Sequence[Any]], label: str):
        """A colour bar of ``mappable`` (an ``imshow`` result) beside ``ax`` (one axes, or a
        list sharing one bar), labelled with the unit shown; recorded in ``drawn["colorbars"]``."""
        cb = self.fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label(label, fontsize=7)
        cb.ax.tick_params(labelsize=6)
        self.drawn.setdefault("colorbars", []).append(label)
        return cb

    def get_image(self) -> np.ndarray:
        if self._cache is None:
            self.canvas.draw()
            self._cache = np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
        return self._cache

    def to_png_bytes(self) -> bytes:
        return encode_png(self.get_image())

    save = VisImage.save
    _repr_png_ = VisImage._repr_png_

"""The picture a :class:`~.visualizer.Visualizer` draws on: an image with matplotlib artists.

Rendering is matplotlib's Agg backend on a private ``Figure`` (pyplot is never imported, so no
window opens and global state is untouched). Artists go straight onto the figure, in image
pixels; the figure is transparent and is composited over the (mask-blended) image in numpy,
then labels are drawn with PIL (:mod:`.labels`).

Shape legend: H x W the image.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from matplotlib.transforms import Affine2D, IdentityTransform

from .labels import _render_labels
from .png import encode_png

__all__ = ["VisImage"]

_DPI = 100


class VisImage:
    """An image with artists on a private Agg figure; ``get_image()`` renders it.

    Attributes:
        img: the (H, W, 3) uint8 RGB background; masks blend into ``blended`` (float).
        drawn: what the visualiser put on it (see the docstring of :mod:`.visualizer`).
    """

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        self.img = img
        self.height, self.width = img.shape[:2]
        self.scale = float(scale)
        self.blended = img.astype(np.float32)
        self.drawn: Dict[str, Any] = {"boxes": np.zeros((0, 4)), "box_colors": np.zeros((0, 3)),
                                      "labels": [], "label_layout": [], "leaders": [], "masks": 0,
                                      "keypoints": np.zeros((0, 2)), "skeleton": 0, "segments": [],
                                      "matches": []}
        out_w = max(int(round(self.width * self.scale)), 1)
        out_h = max(int(round(self.height * self.scale)), 1)
        # The +1e-3 makes Agg's int(inches * dpi) land on the intended pixel count.
        self.fig = Figure(figsize=((out_w + 1e-3) / _DPI, (out_h + 1e-3) / _DPI), dpi=_DPI)
        self.canvas = FigureCanvasAgg(self.fig)
        # Image pixels (x right, y down) -> the figure: what an Axes spanning the figure with
        # xlim (0, W) and ylim (H, 0) would do. Artists go straight onto the figure with it (see
        # add_artist): building an Axes (ticks, spines, ...) was a quarter of a redraw.
        self.transform = Affine2D().scale(1.0 / self.width, -1.0 / self.height).translate(0.0, 1.0) \
            + self.fig.transFigure
        self._ax = None
        # The background is not a matplotlib artist: the figure is transparent and its artists
        # are composited over the (mask-blended) image in numpy, which skips Agg's image
        # resampling (a third of a redraw otherwise).
        self.fig.patch.set_alpha(0.0)
        self.labels: List[Tuple[str, Tuple[float, float, float, float], Any, str]] = []
        self.font_px = 10.0
        self._dirty = True
        self._cache: Optional[np.ndarray] = None

    @property
    def ax(self):
        """A matplotlib ``Axes`` over the whole picture, in image pixels (x right, y down), for
        drawing of your own; made on first use. What the visualiser draws does not go through it
        (see :meth:`add_artist`), and lies above what is drawn on it."""
        if self._ax is None:
            ax = self.fig.add_axes([0.0, 0.0, 1.0, 1.0])
            ax.axis("off")
            ax.set_xlim(0, self.width)
            ax.set_ylim(self.height, 0)
            self._ax = ax
        self._dirty = True  # whatever is drawn on it must reach the next get_image()
        return self._ax

    def add_artist(self, artist, *, offsets: bool = False):
        """Put a matplotlib collection on the picture, its coordinates in image pixels.

        ``offsets=True`` for marker-like collections (a ``PathCollection``): the offsets are in
        image pixels and the marker shapes in display points, as ``Axes.scatter`` makes them.
        """
        if offsets:
            artist.set_offset_transform(self.transform)
            artist.set_transform(IdentityTransform())
        else:
            artist.set_transform(self.transform)
        self.fig.add_artist(artist)
        self._dirty = True
        return artist

    def scatter(self, xy, *, size: float, facecolors, edgecolors="none", linewidths: float = 1.0,
                zorder: float = 6):
        """Round markers at ``xy`` (n, 2) image pixels, ``size`` in points squared (as
        ``Axes.scatter``'s ``s``)."""
        marker = MarkerStyle("o")
        path = marker.get_path().transformed(marker.get_transform())
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        coll = PathCollection((path,), sizes=[size], offsets=xy, facecolors=facecolors,
                              edgecolors=edgecolors, linewidths=linewidths, zorder=zorder)
        return self.add_artist(coll, offsets=True)

    def _record(self, key: str, value: Any) -> None:
        cur = self.drawn.get(key)
        if isinstance(cur, np.ndarray):
            self.drawn[key] = np.concatenate([cur, np.asarray(value, dtype=cur.dtype).reshape(
                (-1,) + cur.shape[1:])], axis=0)
        elif isinstance(cur, list):
            cur.extend(value)
        else:
            self.drawn[key] = (cur or 0) + value
        self._dirty = True

    def blend(self, mask: np.ndarray, color, alpha: float) -> None:
        """Alpha-blend ``color`` into the background where ``mask`` (H, W) is true."""
        m = mask.astype(bool)
        if m.any():
            c = np.asarray(color, dtype=np.float32) * 255.0
            self.blended[m] = self.blended[m] * (1.0 - alpha) + c * alpha
        self._dirty = True

    def blend_rgba(self, rgba: np.ndarray) -> None:
        """Composite an (H, W, 4) float overlay (RGB in [0, 1], alpha) over the background."""
        a = rgba[..., 3:4].astype(np.float32)
        covered = a[..., 0] > 0
        if covered.any():
            self.blended = self.blended * (1.0 - a) + rgba[..., :3].astype(np.float32) * (255.0 * a)
        self._dirty = True

    def get_image(self) -> np.ndarray:
        """The rendered picture, (H*scale, W*scale, 3) uint8 RGB."""
        if self._dirty or self._cache is None:
            self.canvas.draw()
            rgba = np.asarray(self.canvas.buffer_rgba())  # straight (not premultiplied) alpha
            bg = self.blended
            if bg.shape[:2] != rgba.shape[:2]:  # scale != 1
                from PIL import Image

                bg = np.asarray(Image.fromarray(np.clip(np.round(bg), 0, 255).astype(np.uint8)).resize(
                    (rgba.shape[1], rgba.shape[0]), Image.BILINEAR), dtype=np.float32)
            a = rgba[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
            out = bg + (rgba[:, :, :3].astype(np.float32) - bg) * a
            out = np.clip(np.round(out), 0, 255).astype(np.uint8)
            self._cache = _render_labels(out, self.labels, self.scale, self.font_px)
            self._dirty = False
        return self._cache

    def to_png_bytes(self) -> bytes:
        """Deterministic PNG bytes of :meth:`get_image`."""
        return encode_png(self.get_image())

    def save(self, path: str) -> None:
        """Write a PNG to ``path`` atomically (a temporary file renamed into place)."""
        data = self.to_png_bytes()
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".png.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _repr_png_(self) -> bytes:
        return self.to_png_bytes()

"""Draw detections, masks, keypoints, segmentations, proposals and anchors over an image.

::

    vis = Visualizer(image_bgr, MetadataCatalog.get("shapes_val"), input_format="BGR")
    out = vis.draw_instance_predictions(outputs["instances"], score_thresh=0.5)
    out.get_image()           # (H*scale, W*scale, 3) uint8 RGB
    out.to_png_bytes()        # deterministic PNG bytes (no timestamp, no software tag)
    vis.drawn["boxes"]        # (n, 4) the boxes that were drawn, image pixels

Rendering is matplotlib's Agg backend on a private ``Figure`` (pyplot is never imported, so no
window opens and global state is untouched). To stay fast enough for slider-driven redraws,
all boxes of a call are one ``PolyCollection``, label backgrounds another, and masks and
segmentations are alpha-blended into the image array in numpy (one ``imshow``) instead of one
artist per mask.

What was drawn is recorded in ``VisImage.drawn`` (also ``Visualizer.drawn``), a dict of
``boxes`` (n, 4) XYXY image pixels, ``box_colors``, ``labels`` (text and the (x0, y0, x1, y1)
rectangle each label occupies), ``masks`` (count), ``keypoints`` (points drawn),
``skeleton`` (segments drawn), ``segments`` and ``matches`` — tests and explorers read it.

Shape legend: H x W the image; n instances; K keypoints per instance.
"""

from __future__ import annotations

import functools
import os
import struct
import tempfile
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from matplotlib.transforms import Affine2D, IdentityTransform

from . import colors as C

__all__ = ["VisImage", "Visualizer", "to_numpy_image", "box_iou_matrix", "match_by_iou",
           "encode_png"]

_DPI = 100
_KEYPOINT_THRESHOLD = 0.05  # detectron2's default visibility threshold for predicted keypoints
_LINE_H = 1.35  # label height, in font heights (text plus padding)


def encode_png(rgb: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 array; deterministic (no time or software chunks).

    A small writer of its own: the "sub" filter on every row (a vectorised difference) and
    zlib at ``level``, about twice as fast as PIL's adaptive filtering for a redraw's picture.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) uint8 image, got {rgb.shape}.")
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)  # (H, W, 3) -> (H, W*3) scanlines
    raw = np.empty((h, w * 3 + 1), dtype=np.uint8)
    raw[:, 0] = 1  # filter type 1: each byte minus the same channel of the previous pixel
    raw[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=raw[:, 4:])  # uint8 arithmetic wraps mod 256

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b""))


def to_numpy_image(img: Any, input_format: str = "RGB") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a numpy / torch image (HWC or CHW, RGB or BGR, 0-255
    or 0-1 floats, grayscale allowed)."""
    if hasattr(img, "detach"):  # torch tensor
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3, 4):
        img = img.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected an image of shape (H, W, 3), (3, H, W) or (H, W), got {img.shape}.")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[:, :, :3]
    fmt = input_format.upper()
    if fmt not in ("RGB", "BGR"):
        raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}.")
    if fmt == "BGR":
        img = img[:, :, ::-1]
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        if img.size and img.max() <= 1.0 and img.min() >= 0.0:
            img = img * 255.0
        img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _np(x: Any) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "tensor"):  # Boxes, Keypoints
        x = x.tensor
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of XYXY boxes ``a`` (n, 4) and ``b`` (m, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (n, m, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_by_iou(gt_boxes, pred_boxes, pred_scores=None, gt_classes=None, pred_classes=None,
                 iou_thresh: float = 0.5) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one matching, predictions in descending score: each takes the unmatched
    ground truth (of its class, when classes are given) with the highest IoU >= ``iou_thresh``.

    Returns:
        ``[(gt_index, pred_index, iou), ...]`` in the order the predictions were matched.
    """
    iou = box_iou_matrix(gt_boxes, pred_boxes)  # (G, P)
    n_gt, n_pred = iou.shape
    order = np.arange(n_pred) if pred_scores is None else np.argsort(-np.asarray(pred_scores), kind="stable")
    if gt_classes is not None and pred_classes is not None:
        same = np.asarray(gt_classes)[:, None] == np.asarray(pred_classes)[None, :]
        iou = np.where(same, iou, -1.0)
    taken = np.zeros(n_gt, dtype=bool)
    out = []
    for j in order:
        if n_gt == 0:
            break
        col = np.where(taken, -1.0, iou[:, j])
        g = int(np.argmax(col))
        if col[g] >= iou_thresh:
            taken[g] = True
            out.append((g, int(j), float(iou[g, j])))
    return out


class VisImage:
    """An image with artists on a private Agg figure; ``get_image()`` renders it.

    Attributes:
        img: the (H, W, 3) uint8 RGB background; masks blend into ``blended`` (float).
        drawn: what the visualiser put on it (see the module docstring).
    """

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        self.img = img
        self.height, self.width = img.shape[:2]
        self.scale = float(scale)
        self.blended = img.astype(np.float32)
        self.drawn: Dict[str, Any] = {"boxes": np.zeros((0, 4)), "box_colors": np.zeros((0, 3)),
                                      "labels": [], "masks": 0, "keypoints": np.zeros((0, 2)),
                                      "skeleton": 0, "segments": [], "matches": []}
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


class Visualizer:
    """Draws on one image; each ``draw_*`` call adds to the same :class:`VisImage` and returns it.

    Args:
        img_rgb: (H, W, 3) numpy image (or a CHW tensor), uint8 or floats.
        metadata: a :class:`workbench.data.Metadata` (class names, colours, keypoint names and
            connection rules, stuff classes); None draws class indices in palette colours.
        scale: output size relative to the image.
        input_format: "RGB" or "BGR" (the order of ``img_rgb``'s channels).
        font_size: label font size in points; default grows with the image like detectron2's.
    """

    def __init__(self, img_rgb: Any, metadata=None, scale: float = 1.0, input_format: str = "RGB",
                 *, font_size: Optional[float] = None):
        self.img = to_numpy_image(img_rgb, input_format)
        self.metadata = metadata
        self.scale = float(scale)
        self.output = VisImage(self.img, scale=self.scale)
        h, w = self.img.shape[:2]
        self.font_size = float(font_size) if font_size else max(np.sqrt(h * w) // 90, 10 // self.scale)
        self.output.font_px = self._font_px()
        self._placed: List[Tuple[float, float, float, float]] = []

    @property
    def drawn(self) -> Dict[str, Any]:
        return self.output.drawn

    # -- names and colours -----------------------------------------------------------------------

    def _meta(self, key: str, default=None):
        if self.metadata is None:
            return default
        return self.metadata.get(key, default) if hasattr(self.metadata, "get") else getattr(
            self.metadata, key, default)

    def class_name(self, cls: int, stuff: bool = False) -> str:
        names = self._meta("stuff_classes" if stuff else "thing_classes")
        if names and 0 <= int(cls) < len(names):
            return str(names[int(cls)])
        return str(int(cls))

    def _labels(self, classes, scores, extra: Optional[Sequence[str]] = None) -> List[str]:
        n = len(classes) if classes is not None else (len(scores) if scores is not None else 0)
        out = []
        for i in range(n):
            parts = []
            if classes is not None:
                parts.append(self.class_name(classes[i]))
            if scores is not None:
                parts.append(f"{scores[i] * 100:.0f}%")
            if extra is not None and extra[i]:
                parts.append(extra[i])
            out.append(" ".join(parts))
        return out

    # -- primitives ------------------------------------------------------------------------------

    def _font_px(self) -> float:
        """The label font height in output pixels."""
        return self.font_size * _DPI / 72.0

    def _place_label(self, text: str, box: Sequence[float]) -> Tuple[float, float, float, float]:
        """A rectangle (image pixels) for ``text`` near ``box``, overlapping no placed label if
        any candidate position allows: above the box, inside its top, below it, stacked higher."""
        font = _font(int(round(self._font_px())))
        pad = 0.2 * self._font_px()
        w = (font.getlength(text) + 2 * pad) / self.scale
        h = (self._font_px() * _LINE_H) / self.scale
        x0, y0, x1, y1 = [float(v) for v in box]
        W, H = self.output.width, self.output.height
        cands = [(x0, y0 - h), (x0, y0), (x0, y1), (x1 - w, y0 - h), (x0, y1 - h), (x1 - w, y1)]
        cands += [(x0, y0 - k * h) for k in range(2, 6)] + [(x0, y1 + k * h) for k in range(1, 5)]
        cands += [(x0 + k * w, y0 - h) for k in (1, 2)] + [(x0 - k * w, y0 - h) for k in (1, 2)]
        c = np.asarray(cands)  # (num_candidates, 2) top-left corners, clamped into the image
        c[:, 0] = np.clip(c[:, 0], 0.0, max(W - w, 0.0))
        c[:, 1] = np.clip(c[:, 1], 0.0, max(H - h, 0.0))
        rects = np.concatenate([c, c + [w, h]], axis=1)  # (num_candidates, 4)
        if self._placed:
            placed = np.asarray(self._placed)  # (num_placed, 4)
            iw = np.minimum(rects[:, None, 2], placed[None, :, 2]) - np.maximum(rects[:, None, 0], placed[None, :, 0])
            ih = np.minimum(rects[:, None, 3], placed[None, :, 3]) - np.maximum(rects[:, None, 1], placed[None, :, 1])
            overlap = (np.clip(iw, 0, None) * np.clip(ih, 0, None)).sum(1)
            free = np.nonzero(overlap <= 0)[0]
            pick = int(free[0]) if len(free) else int(np.argmin(overlap))  # first free, else least
        else:
            pick = 0
        best = tuple(float(v) for v in rects[pick])
        self._placed.append(best)
        return best

    def _draw_labels(self, texts: Sequence[str], boxes: np.ndarray, colors: np.ndarray,
                     order: Optional[Sequence[int]] = None) -> None:
        """Labels placed greedily in ``order`` (most important first) so they do not overlap.

        Matplotlib's Agg text costs ~2 ms a label, too slow for 100 labels per slider move, so
        labels are rendered after the figure, with PIL and matplotlib's own DejaVu Sans font.
        """
        if len(texts) == 0:
            return
        order = range(len(texts)) if order is None else order
        rects = []
        for i in order:
            r = self._place_label(texts[i], boxes[i])
            face = C.lighten(np.asarray(colors[i], dtype=np.float64), 0.15)
            rects.append((texts[i], r))
            self.output.labels.append((texts[i], r, face, C.contrast_text_color(face)))
        self.output._record("labels", rects)

    def draw_boxes(self, boxes, colors=None, *, linewidth: Optional[float] = None,
                   linestyle: str = "-", alpha: float = 1.0) -> VisImage:
        """XYXY boxes (n, 4) in image pixels, as one collection."""
        boxes = np.asarray(_np(boxes), dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        colors = C.palette(n) if colors is None else np.asarray(colors, dtype=np.float64).reshape(-1, 3)
        if n:
            lw = linewidth or max(self.font_size / 4, 1.0)
            verts = [[(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3])] for b in boxes]
            coll = PolyCollection(verts, facecolors="none", edgecolors=[(*c, alpha) for c in colors],
                                  linewidths=lw * self.scale, linestyles=linestyle, zorder=2)
            self.output.add_artist(coll)
        self.output._record("boxes", boxes)
        self.output._record("box_colors", colors)
        return self.output

    def draw_masks(self, masks, colors, alpha: float = 0.5, *, outline: bool = True) -> VisImage:
        """Binary masks (n, H, W) blended into the image (largest first, so small ones stay on top).

        All masks go into one RGBA overlay, each painted only inside its own bounding box, so
        100 full-image masks cost a few tens of milliseconds.
        """
        masks = _np(masks)
        if masks is None or len(masks) == 0:
            return self.output
        H, W = self.output.height, self.output.width
        if masks.shape[1:] != (H, W):
            raise ValueError(f"Expected masks of shape (n, {H}, {W}) matching the image, got {masks.shape}.")
        masks = masks > 0.5 if masks.dtype != bool else masks
        colors = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
        rows_any, cols_any = masks.any(2), masks.any(1)  # (n, H), (n, W)
        # Paint mask indices into one label map, largest bounding box first; then colour the
        # map through a lookup table (one gather instead of n boolean assignments per channel).
        label = np.full((H, W), -1, dtype=np.int32)
        areas = rows_any.sum(1) * cols_any.sum(1)
        for i in np.argsort(-areas, kind="stable"):
            ys, xs = np.nonzero(rows_any[i])[0], np.nonzero(cols_any[i])[0]
            if len(ys) == 0:
                continue
            sl = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
            np.copyto(label[sl], i, where=masks[i][sl])
        n = len(masks)
        lut = np.zeros((2 * (n + 1), 4), dtype=np.float32)  # rows: none, masks; then their edges
        lut[1:n + 1, :3], lut[1:n + 1, 3] = colors, alpha
        lut[n + 2:, :3], lut[n + 2:, 3] = colors * 0.7, min(1.0, alpha + 0.35)
        index = label + 1
        if outline:  # boundary pixels of the visible part of each mask: darker and more opaque
            padded = np.pad(label, 1, constant_values=-1)
            edge = ((padded[:-2, 1:-1] != label) | (padded[2:, 1:-1] != label)
                    | (padded[1:-1, :-2] != label) | (padded[1:-1, 2:] != label))
            index += edge * (n + 1)
        rgba = lut[index]
        self.output.blend_rgba(rgba)
        self.output._record("masks", int(len(masks)))
        return self.output

    def draw_keypoints(self, keypoints, *, kpt_thresh: float = _KEYPOINT_THRESHOLD,
                       color=None) -> VisImage:
        """Keypoints (n, K, 3) ``(x, y, score)`` above ``kpt_thresh``, and the skeleton from
        ``metadata.keypoint_connection_rules`` (name, name, colour) between visible points."""
        kps = _np(keypoints)
        if kps is None or kps.size == 0:
            return self.output
        kps = kps.reshape(len(kps), -1, 3).astype(np.float64)
        names = self._meta("keypoint_names") or []
        index = {n: i for i, n in enumerate(names)}
        rules = self._meta("keypoint_connection_rules") or []
        segs, seg_colors = [], []
        vis = kps[:, :, 2] > kpt_thresh  # (n, K)
        for inst, v in zip(kps, vis):
            for a, b, col in rules:
                ia, ib = index.get(a), index.get(b)
                if ia is None or ib is None or ia >= len(inst) or ib >= len(inst):
                    continue
                if v[ia] and v[ib]:
                    segs.append([inst[ia, :2], inst[ib, :2]])
                    c = np.asarray(col, dtype=np.float64)
                    seg_colors.append(c / 255.0 if c.max() > 1 else c)
        lw = max(self.font_size / 4, 1.0) * self.scale
        if segs:
            self.output.add_artist(LineCollection(segs, colors=seg_colors, linewidths=lw, zorder=5))
        pts = kps[vis][:, :2]
        if len(pts):
            kcolors = C.palette(kps.shape[1])[np.nonzero(vis)[1]] if color is None else [color]
            self.output.scatter(pts, size=(lw * 2.5) ** 2, facecolors=kcolors, edgecolors="white",
                                linewidths=0.5 * self.scale, zorder=6)
        self.output._record("keypoints", pts)
        self.output._record("skeleton", len(segs))
        return self.output

    def overlay_instances(self, *, boxes=None, labels: Optional[Sequence[str]] = None, masks=None,
                          keypoints=None, assigned_colors=None, alpha: float = 0.5,
                          label_order: Optional[Sequence[int]] = None,
                          kpt_thresh: float = _KEYPOINT_THRESHOLD) -> VisImage:
        """Any combination of boxes, labels, masks and keypoints of the same n instances."""
        boxes = None if boxes is None else np.asarray(_np(boxes), dtype=np.float64).reshape(-1, 4)
        n = next((len(x) for x in (boxes, labels, _np(masks), _np(keypoints)) if x is not None), 0)
        colors = C.palette(n) if assigned_colors is None else np.asarray(assigned_colors).reshape(-1, 3)
        if masks is not None:
            self.draw_masks(masks, colors, alpha)
        if boxes is not None:
            self.draw_boxes(boxes, colors)
        if keypoints is not None:
            self.draw_keypoints(keypoints, kpt_thresh=kpt_thresh)
        if labels is not None:
            anchor_boxes = boxes
            if anchor_boxes is None and masks is not None:
                anchor_boxes = _mask_boxes(_np(masks))
            if anchor_boxes is not None:
                self._draw_labels(labels, anchor_boxes, colors, label_order)
        return self.output

    # -- detectron2-style entry points -----------------------------------------------------------

    def draw_instance_predictions(self, predictions, score_thresh: float = 0.0,
                                  classes: Optional[Sequence[int]] = None, show_labels: bool = True,
                                  show_masks: bool = True, show_keypoints: bool = True, *,
                                  alpha: float = 0.5, kpt_thresh: float = _KEYPOINT_THRESHOLD,
                                  box_scale: float = 1.0) -> VisImage:
        """Boxes with "class score%" labels, masks and keypoints of an ``Instances``.

        Args:
            predictions: ``Instances`` with ``pred_boxes`` (or ``proposal_boxes``), ``scores``,
                ``pred_classes``, optionally ``pred_masks`` (n, H, W) and ``pred_keypoints``
                (n, K, 3), in this image's pixels (times ``box_scale``).
            score_thresh: keep ``scores > score_thresh`` (detectron2's test filter); 0 keeps all.
            classes: keep only these class indices (None: all).
            box_scale: multiplies boxes and keypoints (e.g. input -> original pixels).

        ``drawn["kept"]`` holds the rows of ``predictions`` that were drawn.
        """
        f = _fields(predictions)
        boxes = _np(f.get("pred_boxes", f.get("proposal_boxes")))
        scores = _np(f.get("scores"))
        cls = _np(f.get("pred_classes"))
        n = len(boxes) if boxes is not None else (len(scores) if scores is not None else 0)
        keep = np.ones(n, dtype=bool)
        if scores is not None and score_thresh > 0:
            keep &= scores > score_thresh
        if classes is not None and cls is not None:
            keep &= np.isin(cls, np.asarray(list(classes), dtype=np.int64))
        idx = np.nonzero(keep)[0]
        self.output.drawn["kept"] = idx
        boxes = None if boxes is None else boxes[idx].astype(np.float64) * box_scale
        scores_k = None if scores is None else scores[idx]
        cls_k = None if cls is None else cls[idx]
        colors = C.instance_colors(cls_k, len(idx), self.metadata) if cls_k is not None else C.palette(len(idx))
        masks = _np(f.get("pred_masks")) if show_masks else None
        if masks is not None and len(idx) < len(masks):  # no 26 MB copy when all are kept
            masks = masks[idx]
        kps = _np(f.get("pred_keypoints")) if show_keypoints else None
        if kps is not None:
            kps = kps[idx].astype(np.float64).copy()
            kps[:, :, :2] *= box_scale
        labels = self._labels(cls_k, scores_k) if show_labels else None
        order = None if scores_k is None else np.argsort(-scores_k, kind="stable")
        return self.overlay_instances(boxes=boxes, labels=labels, masks=masks, keypoints=kps,
                                      assigned_colors=colors, alpha=alpha, label_order=order,
                                      kpt_thresh=kpt_thresh)

    def draw_sem_seg(self, sem_seg, area_threshold: Optional[int] = None, alpha: float = 0.6, *,
                     show_labels: bool = True) -> VisImage:
        """A semantic map: (H, W) class ids or (K, H, W) scores (argmax), coloured with
        ``metadata.stuff_colors``; ``metadata.ignore_label`` (default 255) is left undrawn.

        Args:
            area_threshold: classes covering fewer pixels are neither coloured nor labelled.
        """
        seg = _np(sem_seg)
        if seg.ndim == 3:
            seg = seg.argmax(0)  # (K, H, W) -> (H, W)
        seg = seg.astype(np.int64)
        ignore = int(self._meta("ignore_label", 255))
        labels, areas = np.unique(seg, return_counts=True)
        keep = [int(c) for c, a in zip(labels, areas)
                if c != ignore and c >= 0 and (area_threshold is None or a >= area_threshold)]
        lut_n = max(keep) + 1 if keep else 1
        colors = C.class_colors(lut_n, self.metadata, stuff=True)
        rgba = np.zeros(seg.shape + (4,), dtype=np.float32)
        valid = np.isin(seg, keep)
        rgba[valid, :3] = colors[seg[valid]]
        rgba[valid, 3] = alpha
        self.output.blend_rgba(rgba)
        segs = [{"category_id": c, "isthing": False} for c in keep]
        self.output._record("segments", segs)
        if show_labels and keep:
            masks = [seg == c for c in keep]
            self._draw_segment_labels([self.class_name(c, stuff=True) for c in keep], masks,
                                      colors[keep])
        return self.output

    def draw_panoptic_seg(self, panoptic_seg, segments_info: Optional[List[Dict]] = None,
                          area_threshold: Optional[int] = None, alpha: float = 0.6, *,
                          show_labels: bool = True) -> VisImage:
        """A panoptic map (H, W) of segment ids with ``segments_info`` (``id``,
        ``category_id``, ``isthing``, optional ``score``) as Panoptic FPN returns them. Things
        take ``thing_colors`` and class names, stuff ``stuff_colors`` / ``stuff_classes``.
        With ``segments_info=None`` the map holds ``category_id * label_divisor + instance``
        codes (label_divisor 1000, things are the ids with instance > 0)."""
        pan = _np(panoptic_seg).astype(np.int64)
        if segments_info is None:
            segments_info = []
            for sid in np.unique(pan):
                if sid < 0 or sid == self._meta("ignore_label", 255):
                    continue
                segments_info.append({"id": int(sid), "category_id": int(sid // 1000),
                                      "isthing": bool(sid % 1000 > 0)})
        rgba = np.zeros(pan.shape + (4,), dtype=np.float32)
        drawn, texts, masks, cols = [], [], [], []
        thing_colors = C.class_colors(1 + max([s["category_id"] for s in segments_info if s.get("isthing")] or [0]),
                                      self.metadata)
        stuff_colors = C.class_colors(1 + max([s["category_id"] for s in segments_info if not s.get("isthing")] or [0]),
                                      self.metadata, stuff=True)
        for s in segments_info:
            m = pan == int(s["id"])
            area = int(m.sum())
            if area == 0 or (area_threshold is not None and area < area_threshold):
                continue
            thing = bool(s.get("isthing", False))
            color = (thing_colors if thing else stuff_colors)[int(s["category_id"])]
            rgba[m, :3] = color
            rgba[m, 3] = alpha
            drawn.append({"id": int(s["id"]), "category_id": int(s["category_id"]), "isthing": thing})
            text = self.class_name(s["category_id"], stuff=not thing)
            if thing and "score" in s:
                text += f" {float(s['score']) * 100:.0f}%"
            texts.append(text)
            masks.append(m)
            cols.append(color)
        self.output.blend_rgba(rgba)
        self.output._record("segments", drawn)
        if show_labels and texts:
            self._draw_segment_labels(texts, masks, np.asarray(cols))
        return self.output

    def _draw_segment_labels(self, texts, masks, colors) -> None:
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            # Label at the segment's median pixel: always inside the segment, unlike the centroid.
            cy, cx = float(np.median(ys)), float(np.median(xs))
            boxes.append([cx, cy, cx, cy])
        areas = [-int(m.sum()) for m in masks]
        self._draw_labels(texts, np.asarray(boxes), np.asarray(colors), np.argsort(areas, kind="stable"))

    def draw_dataset_dict(self, dic: Dict[str, Any], *, alpha: float = 0.5) -> VisImage:
        """Ground truth of a detectron2 dataset dict: boxes, classes, masks (polygons or RLE),
        keypoints (v > 0 drawn) and ``sem_seg`` / ``sem_seg_file_name``."""
        annos = [a for a in dic.get("annotations", []) if not a.get("iscrowd", 0)]
        if annos:
            boxes = np.asarray([_xyxy(a) for a in annos], dtype=np.float64)
            cls = np.asarray([a.get("category_id", 0) for a in annos], dtype=np.int64)
            masks = None
            if all("segmentation" in a for a in annos):
                masks = np.stack([_decode_segmentation(a["segmentation"], self.output.height,
                                                       self.output.width) for a in annos])
            kps = None
            if all("keypoints" in a for a in annos):
                kps = np.asarray([a["keypoints"] for a in annos], dtype=np.float64).reshape(len(annos), -1, 3)
                kps = kps.copy()
                kps[:, :, 2] = (kps[:, :, 2] > 0).astype(np.float64)  # visibility -> score 0/1
            self.overlay_instances(boxes=boxes, labels=self._labels(cls, None), masks=masks,
                                   keypoints=kps, alpha=alpha,
                                   assigned_colors=C.instance_colors(cls, len(cls), self.metadata),
                                   kpt_thresh=0.5)
        sem = dic.get("sem_seg")
        if sem is None and dic.get("sem_seg_file_name"):
            from PIL import Image

            sem = np.asarray(Image.open(dic["sem_seg_file_name"]))
        if sem is not None:
            self.draw_sem_seg(sem, alpha=alpha)
        return self.output

    def draw_proposals(self, proposals, topk: int = 50, *, box_scale: float = 1.0,
                       cmap: str = "viridis", show_scores: bool = False) -> VisImage:
        """The ``topk`` proposals by objectness, coloured by sigmoid(objectness) (``cmap``),
        the most confident drawn last (on top).

        Args:
            proposals: ``Instances`` with ``proposal_boxes`` and ``objectness_logits``, or a
                ``(boxes, logits)`` pair.
        """
        if isinstance(proposals, (tuple, list)):
            boxes, logits = (_np(x) for x in proposals)
        else:
            f = _fields(proposals)
            boxes, logits = _np(f["proposal_boxes"]), _np(f["objectness_logits"])
        order = np.argsort(-logits, kind="stable")[: max(int(topk), 0)]
        prob = 1.0 / (1.0 + np.exp(-logits[order].astype(np.float64)))
        draw_order = order[::-1]  # weakest first, strongest on top
        self.draw_boxes(boxes[draw_order].astype(np.float64) * box_scale,
                        C.score_colors(prob[::-1], cmap))
        self.output.drawn["kept"] = order
        self.output.drawn["objectness"] = prob
        if show_scores and len(order):
            texts = [f"{p:.2f}" for p in prob]
            self._draw_labels(texts, boxes[order].astype(np.float64) * box_scale,
                              C.score_colors(prob, cmap))
        return self.output

    def draw_anchors(self, anchors, grid_size: Tuple[int, int], cell: Tuple[int, int], *,
                     box_scale: float = 1.0, stride: Optional[float] = None) -> VisImage:
        """The anchors of one cell of one feature level, and the cell's centre.

        Args:
            anchors: the level's anchors, (Hi*Wi*A, 4) XYXY (a ``Boxes`` or tensor), in the order
                detectron2's anchor generator makes them (y, x, anchor).
            grid_size: (Hi, Wi) of the level.
            cell: (y, x) on that level.
            box_scale: multiplies the anchors (input pixels -> this image's pixels).
        """
        a = np.asarray(_np(anchors), dtype=np.float64).reshape(-1, 4)
        hi, wi = int(grid_size[0]), int(grid_size[1])
        y, x = int(cell[0]), int(cell[1])
        if not (0 <= y < hi and 0 <= x < wi):
            raise IndexError(f"cell {(y, x)} is outside the level's grid {(hi, wi)}.")
        if len(a) % (hi * wi):
            raise ValueError(f"Expected Hi*Wi*A = multiple of {hi * wi} anchors, got {len(a)}.")
        num = len(a) // (hi * wi)  # A
        loc = y * wi + x
        sel = a[loc * num: (loc + 1) * num] * box_scale
        self.draw_boxes(sel, C.palette(num), linestyle="--")
        center = sel[:, :2].mean(0) / 2 + sel[:, 2:].mean(0) / 2 if num else np.zeros(2)
        self.output.scatter([center], size=30 * self.scale, facecolors=[[1, 1, 1]],
                            edgecolors="black", zorder=6)
        self.output.drawn["anchor_rows"] = np.arange(loc * num, (loc + 1) * num)
        return self.output

    def compare(self, gt, pred, *, iou_thresh: float = 0.5, score_thresh: float = 0.0,
                classes: Optional[Sequence[int]] = None, match_classes: bool = True,
                box_scale: float = 1.0, gap: int = 8) -> VisImage:
        """Ground truth (left) beside predictions (right), each match labelled with its IoU.

        Args:
            gt: ``Instances`` with ``gt_boxes`` / ``gt_classes`` or a dataset dict.
            pred: ``Instances`` with ``pred_boxes``, ``scores``, ``pred_classes``.
            match_classes: only match boxes of the same class.

        Returns:
            A new :class:`VisImage` (the two panels side by side); its ``drawn["matches"]`` is
            ``[(gt_index, pred_index, iou)]`` (pred_index a row of ``pred``), ``"missed"`` and
            ``"false_positives"`` the unmatched rows.
        """
        if isinstance(gt, dict):
            annos = [a for a in gt.get("annotations", []) if not a.get("iscrowd", 0)]
            g_boxes = np.asarray([_xyxy(a) for a in annos], dtype=np.float64).reshape(-1, 4)
            g_cls = np.asarray([a.get("category_id", 0) for a in annos], dtype=np.int64)
        else:
            f = _fields(gt)
            g_boxes = _np(f["gt_boxes"]).astype(np.float64).reshape(-1, 4) * box_scale
            g_cls = _np(f.get("gt_classes")) if f.get("gt_classes") is not None else np.zeros(len(g_boxes), np.int64)
        f = _fields(pred)
        p_boxes = _np(f["pred_boxes"]).astype(np.float64).reshape(-1, 4) * box_scale
        p_scores = _np(f.get("scores"))
        p_cls = _np(f.get("pred_classes"))
        keep = np.ones(len(p_boxes), dtype=bool)
        if p_scores is not None and score_thresh > 0:
            keep &= p_scores > score_thresh
        if classes is not None:
            keep &= np.isin(p_cls, list(classes))
            g_keep = np.isin(g_cls, list(classes))
            g_boxes, g_cls = g_boxes[g_keep], g_cls[g_keep]
        rows = np.nonzero(keep)[0]
        matches = match_by_iou(g_boxes, p_boxes[rows], None if p_scores is None else p_scores[rows],
                               g_cls if match_classes else None,
                               p_cls[rows] if match_classes and p_cls is not None else None, iou_thresh)
        matches = [(g, int(rows[j]), iou) for g, j, iou in matches]

        H, W = self.img.shape[:2]
        canvas = np.full((H, 2 * W + gap, 3), 255, dtype=np.uint8)
        canvas[:, :W], canvas[:, W + gap:] = self.img, self.img
        side = Visualizer(canvas, self.metadata, scale=self.scale, font_size=self.font_size)
        matched_gt = {g: (j, iou) for g, j, iou in matches}
        matched_pred = {j: (g, iou) for g, j, iou in matches}
        g_colors = C.instance_colors(g_cls, len(g_boxes), self.metadata)
        g_text = [self.class_name(c) + ("" if i in matched_gt else " missed") for i, c in enumerate(g_cls)]
        side.draw_boxes(g_boxes, g_colors)
        side._draw_labels(g_text, g_boxes, g_colors)
        shifted = p_boxes[rows] + np.array([W + gap, 0, W + gap, 0])
        p_colors = C.instance_colors(None if p_cls is None else p_cls[rows], len(rows), self.metadata)
        p_text = []
        for j in rows:
            t = self.class_name(p_cls[j]) if p_cls is not None else ""
            if p_scores is not None:
                t += f" {p_scores[j] * 100:.0f}%"
            t += f" IoU {matched_pred[j][1]:.2f}" if j in matched_pred else " FP"
            p_text.append(t.strip())
        side.draw_boxes(shifted, p_colors)
        order = None if p_scores is None else np.argsort(-p_scores[rows], kind="stable")
        side._draw_labels(p_text, shifted, p_colors, order)
        out = side.output
        out.drawn["matches"] = matches
        out.drawn["missed"] = [i for i in range(len(g_boxes)) if i not in matched_gt]
        out.drawn["false_positives"] = [int(j) for j in rows if j not in matched_pred]
        out.drawn["kept"] = rows
        return out

    def get_output(self) -> VisImage:
        return self.output


# -- helpers ---------------------------------------------------------------------------------------

def _fields(x) -> Dict[str, Any]:
    if isinstance(x, dict):
        return x
    if hasattr(x, "get_fields"):
        return x.get_fields()
    raise TypeError(f"Expected Instances or a dict of fields, got {type(x).__name__}.")


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


def _erode(m: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (4-neighbourhood) of an (H, W) bool mask."""
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out & m


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m > 0.5)
        if len(xs):
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return boxes


def _xyxy(anno: Dict[str, Any]) -> List[float]:
    from workbench.structures import BoxMode

    mode = anno.get("bbox_mode", BoxMode.XYWH_ABS)
    return list(BoxMode.convert(list(anno["bbox"]), mode, BoxMode.XYXY_ABS))


def _decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a polygon list, an RLE dict or an (H, W) array."""
    from pycocotools import mask as mask_util

    if isinstance(seg, list):
        if not seg:
            return np.zeros((height, width), dtype=bool)
        rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64).tolist() for p in seg], height, width)
        return mask_util.decode(mask_util.merge(rles)).astype(bool)
    if isinstance(seg, dict):
        if isinstance(seg.get("counts"), list):
            seg = mask_util.frPyObjects(seg, *seg["size"])
        return mask_util.decode(seg).astype(bool)
    arr = np.asarray(seg)
    if arr.shape != (height, width):
        raise ValueError(f"Expected a segmentation mask of shape {(height, width)}, got {arr.shape}.")
    return arr.astype(bool)

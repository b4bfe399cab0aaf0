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
rectangle each label occupies), ``label_layout`` (per label: text, rect, the box it labels,
that box's index in its drawing call and whether it ``moved`` away from the box), ``leaders``
(the lines from moved labels to their boxes), ``masks`` (count), ``keypoints`` (points drawn),
``skeleton`` (segments drawn), ``segments`` and ``matches`` — tests and explorers read it.

Labels never overlap one another where the picture has room (:class:`~.labels.LabelPlacer`:
next to the box if free, else shifted, with a leader line back to the box) and stay inside
their panel (the image, or one side of :meth:`compare`).

Shape legend: H x W the image; n instances; K keypoints per instance.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from matplotlib.collections import LineCollection, PolyCollection

from . import colors as C
# Parts of the visualiser live in their own modules; their names stay importable from here.
from .inputs import _decode_segmentation, _erode, _fields, _mask_boxes, _np, _xyxy  # noqa: F401
from .labels import LabelPlacer, LabelSpot, _font, _overlap_area, _render_labels, fit_text  # noqa: F401
from .masks import (ColorMode, binary_mask_overlay, check_mask, grayscale_outside, mask_color,
                    mask_texts, masks_to_array, soft_mask_overlay)
from .matching import box_iou_matrix, match_by_iou
from .model_stages import ModelStageDrawing
from .png import encode_png, to_numpy_image
from .vis_image import _DPI, VisImage

__all__ = ["ColorMode", "VisImage", "Visualizer", "to_numpy_image", "box_iou_matrix",
           "match_by_iou", "encode_png"]

_KEYPOINT_THRESHOLD = 0.05  # detectron2's default visibility threshold for predicted keypoints
_LINE_H = 1.35  # label height, in font heights (text plus padding)


class Visualizer(ModelStageDrawing):
    """Draws on one image; each ``draw_*`` call adds to the same :class:`VisImage` and returns it.

    Args:
        img_rgb: (H, W, 3) numpy image (or a CHW tensor), uint8 or floats.
        metadata: a :class:`workbench.data.Metadata` (class names, colours, keypoint names and
            connection rules, stuff classes); None draws class indices in palette colours.
        scale: output size relative to the image.
        input_format: "RGB" or "BGR" (the order of ``img_rgb``'s channels).
        font_size: label font size in points; default grows with the image like detectron2's.
        instance_mode: a :class:`ColorMode` for instance predictions. detectron2's fourth
            positional argument is ``instance_mode``: a ``ColorMode`` given there is taken as it.
    """

    def __init__(self, img_rgb: Any, metadata=None, scale: float = 1.0, input_format: str = "RGB",
                 *, font_size: Optional[float] = None, instance_mode: ColorMode = ColorMode.IMAGE):
        if isinstance(input_format, ColorMode):  # Visualizer(img, meta, 1.0, ColorMode.IMAGE_BW)
            input_format, instance_mode = "RGB", input_format
        self._instance_mode = ColorMode(instance_mode)
        self.img = to_numpy_image(img_rgb, input_format)
        self.metadata = metadata
        self.scale = float(scale)
        self.output = VisImage(self.img, scale=self.scale)
        h, w = self.img.shape[:2]
        self.font_size = float(font_size) if font_size else max(np.sqrt(h * w) // 90, 10 // self.scale)
        self.output.font_px = self._font_px()
        self._label_placer = LabelPlacer()

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

    def _place_label(self, text: str, box: Sequence[float],
                     panel: Optional[Sequence[float]] = None) -> Tuple[str, LabelSpot]:
        """Where ``text`` goes for ``box`` (image pixels), inside ``panel`` (x0, y0, x1, y1;
        default the whole image), overlapping no label placed before if a candidate spot allows
        (see :class:`~.labels.LabelPlacer`). Text wider than the panel is shortened with "…".

        Returns:
            ``(text as drawn, LabelSpot)``.
        """
        panel = (0.0, 0.0, float(self.output.width), float(self.output.height)) if panel is None \
            else tuple(float(v) for v in panel)
        if len(panel) != 4 or not (panel[0] < panel[2] and panel[1] < panel[3]):
            raise ValueError(f"panel must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {panel}.")
        font = _font(int(round(self._font_px())))
        pad = 0.2 * self._font_px()
        text, text_px = fit_text(text, font, (panel[2] - panel[0]) * self.scale - 2 * pad)
        w = (text_px + 2 * pad) / self.scale
        h = (self._font_px() * _LINE_H) / self.scale
        return text, self._label_placer.place(w, h, box, panel)

    def _draw_labels(self, texts: Sequence[str], boxes: np.ndarray, colors: np.ndarray,
                     order: Optional[Sequence[int]] = None,
                     panel: Optional[Sequence[float]] = None) -> None:
        """Labels placed greedily in ``order`` (most important first) so they do not overlap,
        each inside ``panel`` (default the whole image); a label that had to move away from its
        box gets a thin leader line to the box's nearest corner.

        Records ``drawn["labels"]`` ``(text, rect)``, ``drawn["label_layout"]`` dicts
        ``{text, rect, box, box_index, moved}`` (``box_index`` indexes this call's ``boxes``)
        and ``drawn["leaders"]`` dicts ``{box_index, line: (x_label, y_label, x_box, y_box)}``.
        """
        if len(texts) == 0:
            return
        if len(boxes) != len(texts) or len(colors) != len(texts):
            raise ValueError(f"Expected one box and one colour per label: {len(texts)} texts, "
                             f"{len(boxes)} boxes, {len(colors)} colours.")
        order = range(len(texts)) if order is None else order
        rects, layout, leaders, segs, seg_colors = [], [], [], [], []
        for i in order:
            i = int(i)
            text, spot = self._place_label(texts[i], boxes[i], panel)
            face = C.lighten(np.asarray(colors[i], dtype=np.float64), 0.15)
            rects.append((text, spot.rect))
            layout.append({"text": text, "rect": spot.rect, "box": tuple(float(v) for v in boxes[i]),
                           "box_index": i, "moved": spot.moved})
            if spot.leader is not None:
                leaders.append({"box_index": i, "line": spot.leader})
                segs.append(np.reshape(spot.leader, (2, 2)))
                seg_colors.append(np.asarray(colors[i], dtype=np.float64)[:3])
            self.output.labels.append((text, spot.rect, face, C.contrast_text_color(face)))
        if segs:
            self.output.add_artist(LineCollection(segs, colors=seg_colors, zorder=3,
                                                  linewidths=max(self.font_size / 10, 0.75) * self.scale))
        self.output._record("labels", rects)
        self.output._record("label_layout", layout)
        self.output._record("leaders", leaders)

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

    def draw_rotated_box_with_label(self, rotated_box, alpha: float = 1.0, edge_color=(0.0, 0.5, 0.0),
                                    line_style: str = "-", label: Optional[str] = None) -> VisImage:
        """One rotated box (xc, yc, w, h, angle in degrees ccw) with its top edge dashed and an
        optional label at its top-left corner (detectron2's method; colours as RGB in [0, 1]).

        Records ``drawn["rotated_boxes"]`` (k, 5) and ``drawn["rotated_corners"]`` (k, 4, 2).
        """
        cx, cy, w, h, angle = (float(v) for v in np.asarray(_np(rotated_box)).reshape(5))
        theta = np.deg2rad(angle)
        c, s = np.cos(theta), np.sin(theta)
        # Local corners bottom-left, top-left, top-right, bottom-right; y points down, so a
        # positive angle turns the box counter-clockwise on screen.
        u = np.array([-w / 2, -w / 2, w / 2, w / 2])
        v = np.array([h / 2, -h / 2, -h / 2, h / 2])
        corners = np.stack([cx + c * u + s * v, cy - s * u + c * v], axis=1)  # (4, 2)
        color = np.asarray(edge_color, dtype=np.float64).reshape(3)
        lw = max(self.font_size / (6 if w * h < 1000 * self.scale else 3), 1.0)
        segments = [corners[[k, (k + 1) % 4]] for k in range(4)]
        styles = ["--" if k == 1 else line_style for k in range(4)]  # k = 1: the top edge
        self.output.add_artist(LineCollection(segments, colors=[(*color, alpha)] * 4,
                                              linewidths=lw * self.scale, linestyles=styles,
                                              zorder=2))
        self.output._record("rotated_boxes", np.array([[cx, cy, w, h, angle]]))
        self.output._record("rotated_corners", corners[None])
        if label is not None:
            x0, y0 = corners[1]  # the top-left corner
            self._draw_labels([label], np.array([[x0, y0, x0, y0]]), color[None])
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

    def draw_binary_mask(self, binary_mask, color=None, *, edge_color=None, text: Optional[str] = None,
                         alpha: float = 0.5, area_threshold: Optional[float] = 10) -> VisImage:
        """One (H, W) 0/1 mask, its connected parts smaller than ``area_threshold`` pixels left out.

        Args:
            color, edge_color: matplotlib colours (names, RGB in [0, 1], ...). ``color`` defaults
                to the next palette colour; ``edge_color`` to ``color`` (darker when alpha > 0.8).
            text: drawn on the mask's largest part (and on other very large parts).
        """
        mask = check_mask(binary_mask, self.output.height, self.output.width, "binary_mask")
        color = mask_color(color, self.drawn["masks"])
        edge = None if edge_color is None else mask_color(edge_color, 0)
        rgba, kept = binary_mask_overlay(mask, color, edge, alpha, area_threshold)
        self.output.blend_rgba(rgba)
        self.output._record("masks", 1)
        if text is not None and kept.any():
            self._draw_labels(*mask_texts(text, kept, color))
        return self.output

    def draw_soft_mask(self, soft_mask, color=None, *, text: Optional[str] = None,
                       alpha: float = 0.5) -> VisImage:
        """One (H, W) mask of values in [0, 1], blended with opacity ``soft_mask * alpha``.

        ``text`` goes on the largest part of ``soft_mask > 0.5``.
        """
        soft = check_mask(soft_mask, self.output.height, self.output.width, "soft_mask")
        color = mask_color(color, self.drawn["masks"])
        self.output.blend_rgba(soft_mask_overlay(soft, color, alpha))
        self.output._record("masks", 1)
        if text is not None and (soft > 0.5).any():
            self._draw_labels(*mask_texts(text, soft > 0.5, color))
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
        """Any combination of boxes, labels, masks and keypoints of the same n instances.

        ``masks``: (n, H, W), ``BitMasks``, ``PolygonMasks``, or one entry per instance: a list
        of flat ``[x0, y0, x1, y1, ...]`` polygons, an (H, W) array or an RLE dict.
        """
        if boxes is not None and np.ndim(_np(boxes)) == 2 and np.shape(_np(boxes))[1] == 5:
            # Rotated boxes (xc, yc, w, h, angle), largest first; masks and keypoints are not
            # drawn with them (detectron2's overlay_rotated_instances).
            boxes = np.asarray(_np(boxes), dtype=np.float64)
            colors = C.palette(len(boxes)) if assigned_colors is None else \
                np.asarray(assigned_colors, dtype=np.float64).reshape(-1, 3)
            for i in np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable"):
                self.draw_rotated_box_with_label(
                    boxes[i], edge_color=colors[i], label=None if labels is None else labels[i])
            return self.output
        boxes = None if boxes is None else np.asarray(_np(boxes), dtype=np.float64).reshape(-1, 4)
        masks = masks_to_array(masks, self.output.height, self.output.width)
        n = next((len(x) for x in (boxes, labels, masks, _np(keypoints)) if x is not None), 0)
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
                anchor_boxes = _mask_boxes(masks)
            if anchor_boxes is not None:
                self._draw_labels(labels, anchor_boxes, colors, label_order)
        return self.output

    # -- detectron2-style entry points -----------------------------------------------------------

    def draw_instance_predictions(self, predictions, score_thresh: float = 0.0,
                                  classes: Optional[Sequence[int]] = None, show_labels: bool = True,
                                  show_masks: bool = True, show_keypoints: bool = True, *,
                                  alpha: Optional[float] = None,
                                  kpt_thresh: float = _KEYPOINT_THRESHOLD,
                                  box_scale: float = 1.0) -> VisImage:
        """Boxes with "class score%" labels, masks and keypoints of an ``Instances``.

        Args:
            predictions: ``Instances`` with ``pred_boxes`` (or ``proposal_boxes``), ``scores``,
                ``pred_classes``, optionally ``pred_masks`` (n, H, W) and ``pred_keypoints``
                (n, K, 3), in this image's pixels (times ``box_scale``).
            score_thresh: keep ``scores > score_thresh`` (detectron2's test filter); 0 keeps all.
            classes: keep only these class indices (None: all).
            box_scale: multiplies boxes and keypoints (e.g. input -> original pixels).
            alpha: mask opacity; default from the ``instance_mode``: 0.5 for ``IMAGE``, 0.8 for
                ``SEGMENTATION`` with ``metadata.thing_colors``, 0.3 for ``IMAGE_BW`` (whose
                background outside the drawn masks turns grey).

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
        if boxes is not None:
            boxes = boxes[idx].astype(np.float64)
            boxes[:, :4] *= box_scale  # a rotated box's angle (column 4) is not scaled
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
        mode = self._instance_mode
        if alpha is None:  # detectron2's opacity per mode
            seg = mode == ColorMode.SEGMENTATION and self._meta("thing_colors")
            alpha = 0.3 if mode == ColorMode.IMAGE_BW else (0.8 if seg else 0.5)
        if mode == ColorMode.IMAGE_BW:
            keep_colour = None if masks is None else (masks > 0.5).any(0)
            self.output.blended = grayscale_outside(self.output.blended, keep_colour)
            self.output._dirty = True
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
        if self._instance_mode == ColorMode.IMAGE_BW:  # grey where no segment is
            segment_ids = [int(s["id"]) for s in segments_info]
            self.output.blended = grayscale_outside(self.output.blended, np.isin(pan, segment_ids))
            self.output._dirty = True
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

    def get_output(self) -> VisImage:
        return self.output

"""The detections of a trace: score / NMS / top-k sliders, class filter, and one detection's
provenance, picked from a list or by clicking its box.

Sliders never re-run the backbone or the heads: the explorer re-filters the traced per-ROI
scores with :func:`workbench.inspect.rethreshold` once per (NMS, top-k) setting and then
applies the score threshold and class filter to the cached result, which is exactly what a
re-run would return (NMS and top-k only ever drop lower-scored boxes).
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .explorer_base import Explorer, _widgets
from .features import _crop, trace_image
from .visualizer import Visualizer, encode_png

__all__ = ["DetectionExplorer", "scored_trace", "resolve_input_format", "class_names", "image_slider",
           "boxes_containing"]

DETECTION_ARCHITECTURES = ("rcnn", "panoptic_fpn", "retinanet")


def scored_trace(model, trace):
    """(model, trace) for an explorer: ``trace`` may be a Trace, or inputs to trace first with
    ``model``, e.g. a ``DefaultPredictor`` and dataset dicts (the pass that was scored); a
    predictor gives its model."""
    from workbench import inspect as wi

    if not isinstance(trace, wi.Trace):
        import torch

        with torch.no_grad():
            trace = wi.trace(model, trace)
    if not hasattr(model, "training") and hasattr(model, "model"):  # a DefaultPredictor
        model = model.model
    return model, trace


def resolve_input_format(trace, model=None, given: Optional[str] = None) -> str:
    """The channel order of the traced images: ``given``, else the trace's, else the model's;
    never a guess."""
    fmt = given or getattr(trace, "input_format", None) or getattr(model, "input_format", None)
    if not fmt:
        raise ValueError("The input format (channel order) of the traced images is unknown: pass "
                         "input_format='RGB' or 'BGR' (cfg.INPUT.FORMAT), or give the model.")
    return str(fmt)


def name_classes(trace, metadata) -> None:
    """Give a trace made without class names (model inputs, no cfg) the metadata's."""
    names = metadata.get("thing_classes", None) if metadata is not None else None
    if trace.class_names is None and names:
        trace.class_names = list(names)


def class_names(trace, metadata, n: int) -> List[str]:
    """``n`` class names: the metadata's, else the trace's, else the ids."""
    names = metadata.get("thing_classes", None) if metadata is not None else None
    names = names or getattr(trace, "class_names", None)
    return [str(names[i]) if names and i < len(names) else str(i) for i in range(n)]


def image_slider(trace):
    w = _widgets()
    return w.IntSlider(value=0, min=0, max=max(trace.num_images - 1, 0), description="image")


def boxes_containing(boxes: np.ndarray, x: float, y: float) -> np.ndarray:
    """Rows of ``boxes`` ((n, 4) XYXY, or rotated (n, 5) XYWHA in degrees) containing (x, y)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1)
    if b.shape[1] == 4:
        inside = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
    elif b.shape[1] == 5:  # into each box's frame: rotate the offset back by the box's angle
        t = np.deg2rad(b[:, 4])
        dx, dy = x - b[:, 0], y - b[:, 1]
        u = dx * np.cos(t) - dy * np.sin(t)
        v = dx * np.sin(t) + dy * np.cos(t)
        inside = (np.abs(u) <= b[:, 2] / 2) & (np.abs(v) <= b[:, 3] / 2)
    else:
        raise ValueError(f"Expected boxes of shape (n, 4) or (n, 5); got {b.shape}.")
    return np.flatnonzero(inside)


def rows_passing(inst, score_thresh: float, classes) -> np.ndarray:
    """Rows of ``inst`` with ``scores > score_thresh`` (detectron2's test filter) and a class in
    ``classes`` (empty: all): what ``Visualizer.draw_instance_predictions`` draws."""
    keep = np.ones(len(inst), dtype=bool)
    if inst.has("scores") and score_thresh > 0:
        keep &= inst.scores.cpu().numpy() > score_thresh
    if classes and inst.has("pred_classes"):
        keep &= np.isin(inst.pred_classes.cpu().numpy(), np.asarray(list(classes), dtype=np.int64))
    return np.flatnonzero(keep)


def detection_options(inst, rows, names: List[str]) -> List[Tuple[str, int]]:
    """(label, row) per row of ``inst``: "row: class-name score", as the detection lists show."""
    scores = inst.scores.cpu().numpy() if inst.has("scores") else np.zeros(len(inst))
    cls = inst.pred_classes.cpu().numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
    return [(f"{r}: {names[cls[r]]} {scores[r]:.2f}", int(r)) for r in rows]


def _xyxy_of(box) -> np.ndarray:
    """An XYXY box, or the bounding rectangle of a rotated (cx, cy, w, h, angle-degrees) one."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if len(b) == 4:
        return b
    cx, cy, w, h, a = b
    t = np.deg2rad(a)
    c, s = abs(np.cos(t)), abs(np.sin(t))
    hw, hh = (w * c + h * s) / 2, (w * s + h * c) / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def _centres(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1)
    return (b[:, :2] + b[:, 2:4]) / 2 if b.shape[1] == 4 else b[:, :2]


class DetectionExplorer(Explorer):
    """Final detections with score / NMS / top-k sliders, class filter, toggles and one
    detection's provenance (proposal, anchor, level, objectness, scores) and crop.

    Controls: ``image``, ``score_thresh``, ``nms_thresh``, ``topk``, ``classes`` (empty: all),
    ``show_labels``, ``show_masks``, ``show_keypoints``, ``detection`` (-1: none; else a row of
    the shown image's detections at the current NMS / top-k). A click on the picture picks the
    detection whose box contains the click, the one with the nearest centre if several do
    (:meth:`pick`); a click on no box clears the choice.
    """

    def __init__(self, model, trace, metadata=None, *, input_format: Optional[str] = None,
                 max_topk: int = 300, image_control=None, zoom: int = 1):
        super().__init__(zoom=zoom)
        model, trace = scored_trace(model, trace)
        name_classes(trace, metadata)
        if trace.architecture not in DETECTION_ARCHITECTURES:
            raise ValueError(f"DetectionExplorer needs detections; a {trace.architecture} trace has "
                             "none (use ProposalExplorer / FeatureExplorer).")
        w = _widgets()
        self.model, self.trace, self.metadata = model, trace, metadata
        self.input_format = resolve_input_format(trace, model, input_format)
        base = trace.box if trace.box is not None else trace.dense
        self.base_settings = (float(base.score_thresh), float(base.nms_thresh), int(base.topk))
        n_cls = self._num_classes()
        self.names = class_names(trace, metadata, n_cls)
        if image_control is not None:
            self.shared.add("image")
        self.controls = {
            "image": image_control or image_slider(trace),
            "score_thresh": w.FloatSlider(value=max(round(self.base_settings[0], 2), 0.5), min=0.0, max=1.0,
                                          step=0.01, description="score"),
            "nms_thresh": w.FloatSlider(value=round(self.base_settings[1], 2), min=0.01, max=1.0,
                                        step=0.01, description="NMS IoU"),
            "topk": w.IntSlider(value=self.base_settings[2], min=1, max=max(max_topk, self.base_settings[2]),
                                description="top-k"),
            "classes": w.SelectMultiple(options=[(n, i) for i, n in enumerate(self.names)], value=(),
                                        description="classes", rows=min(n_cls, 10) or 1),
            "show_labels": w.Checkbox(value=True, description="labels", indent=False),
            "show_masks": w.Checkbox(value=True, description="masks", indent=False),
            "show_keypoints": w.Checkbox(value=True, description="keypoints", indent=False),
            "detection": w.Dropdown(options=[("none", -1)], value=-1, description="detection"),
        }
        self.info = w.HTML()
        # A fixed display width (the crop is often a few dozen pixels); no flex stretching.
        self.crop = w.Image(format="png", layout=w.Layout(max_width="none"))  # its own size x an integer
        self.provenance = None
        self._pools: Dict[Tuple[float, int], Tuple[float, Any]] = {}
        self._orig_images: Dict[int, np.ndarray] = {}
        self.current = None  # the trace the shown detections come from
        self.controls["image"].observe(self._image_changed, names="value")
        self._watch()
        self._enable_clicks()
        self.redraw()

    def _num_classes(self) -> int:
        if self.trace.box is not None:
            return int(self.trace.box.scores[0].shape[1]) - 1  # (R, K+1) -> K
        return int(self.trace.dense.logits[0].shape[-1])  # RetinaNet (N, HWA, K)

    def original_image(self, i: int) -> np.ndarray:
        if i not in self._orig_images:
            self._orig_images[i] = trace_image(self.trace, i, input_format=self.input_format)
        return self._orig_images[i]

    def detections_trace(self, score_thresh: float, nms_thresh: float, topk: int):
        """A trace whose outputs hold every detection above ``score_thresh`` at these NMS /
        top-k settings (possibly more: the caller filters by score)."""
        st0, nt0, k0 = self.base_settings
        key = (round(float(nms_thresh), 6), int(topk))
        if abs(key[0] - nt0) < 1e-9 and key[1] == k0 and score_thresh >= st0:
            return self.trace
        floor, pool = self._pools.get(key, (None, None))
        if pool is None or score_thresh < floor:
            from workbench.inspect import rethreshold

            floor = min(float(score_thresh), st0)  # keep a wide pool: later slider moves are free
            pool = rethreshold(self.model, self.trace, score_thresh=floor, nms_thresh=key[0], topk=key[1])
            self._pools[key] = (floor, pool)
        return pool

    def shown_rows(self, image: Optional[int] = None) -> np.ndarray:
        """Rows of the base trace's detections of ``image`` that pass the score threshold and
        class filter now (what the mask and keypoint tabs list)."""
        s = self.state
        i = int(s["image"]) if image is None else int(image)
        return rows_passing(self.trace.outputs[i]["instances"], s["score_thresh"], s["classes"])

    def current_trace(self):
        """The trace the detections come from at the current NMS / top-k / score settings."""
        s = self.state
        return self.detections_trace(s["score_thresh"], s["nms_thresh"], s["topk"])

    def _options(self, inst, kept) -> List[Tuple[str, int]]:
        return [("none", -1)] + detection_options(inst, kept, self.names)

    def _set_detection_options(self, options) -> int:
        """The detection list (quietly); the choice is kept if still listed, else none."""
        det = self.controls["detection"]
        chosen = det.value if det.value in [v for _, v in options] else -1
        self.set_options("detection", options, chosen)
        return chosen

    def refresh_options(self, name: str) -> None:
        if name == "detection":  # the detections shown at the current settings, without drawing
            s = self.state
            inst = self.current_trace().outputs[int(s["image"])]["instances"]
            self._set_detection_options(self._options(inst, rows_passing(inst, s["score_thresh"], s["classes"])))

    def _image_changed(self, _change=None) -> None:
        """A new image: a row number would name another object there, so the choice is cleared."""
        with self.quietly():
            det = self.controls["detection"]
            det.options, det.value = [("none", -1)], -1

    def render(self):
        s = self.state
        i = int(s["image"])
        self.current = tr = self.detections_trace(s["score_thresh"], s["nms_thresh"], s["topk"])
        inst = tr.outputs[i]["instances"]
        vis = Visualizer(self.original_image(i), self.metadata)
        out = vis.draw_instance_predictions(
            inst, score_thresh=s["score_thresh"], classes=s["classes"] or None,
            show_labels=s["show_labels"], show_masks=s["show_masks"], show_keypoints=s["show_keypoints"])
        chosen = self._set_detection_options(self._options(inst, out.drawn["kept"]))
        if chosen >= 0:
            # A white outline 1.5x the width of the others: it stands out without hiding the
            # box's own edge or the mask boundary under it.
            box = inst.pred_boxes.tensor[chosen].cpu().numpy()
            if len(box) == 5:
                rotated = out.drawn.get("rotated_boxes")
                vis.draw_rotated_box_with_label(box, edge_color=(1.0, 1.0, 1.0))
                if rotated is not None:  # the highlight is not a detection
                    out.drawn["rotated_boxes"] = rotated
            else:
                vis.draw_boxes(box[None], [[1.0, 1.0, 1.0]], linewidth=1.5 * max(vis.font_size / 4, 1.0))
                out.drawn["boxes"] = out.drawn["boxes"][:-1]  # the highlight is not a detection
                out.drawn["box_colors"] = out.drawn["box_colors"][:-1]
            out.drawn["highlight"] = chosen
            self._show_detection(tr, i, chosen)
        else:
            self.info.value, self.crop.value = "", b""
            self.crop.layout.display = "none"  # an empty <img> shows as a broken image in a browser
            self.provenance = None
        return out

    def pick(self, x: float, y: float) -> Optional[int]:
        """Choose the shown detection whose box contains (x, y) (original-image pixels, as the
        picture is drawn); the nearest centre wins among several. Returns its row, or None
        (and clears the choice) when no box is there."""
        drawn = self.last.drawn
        kept = np.asarray(drawn["kept"], dtype=np.int64)
        if not len(kept):
            self.set(detection=-1)
            return None
        boxes = self.current.outputs[int(self.state["image"])]["instances"].pred_boxes.tensor[kept]
        boxes = boxes.cpu().numpy()
        hits = boxes_containing(boxes, x, y)
        if not len(hits):
            self.set(detection=-1)
            return None
        d = np.hypot(*(_centres(boxes[hits]) - np.array([x, y])).T)
        row = int(kept[hits[int(np.argmin(d))]])
        self.set(detection=row)
        return row

    def _show_detection(self, tr, image: int, row: int) -> None:
        d = tr.detection(row, image=image)
        self.provenance = d
        lines = [html.escape(str(d))]
        if d.probs is not None:
            p = d.probs.cpu().numpy()
            top = np.argsort(-p)[:5]
            names = class_names(tr, self.metadata, len(p))
            lines.append("top scores: " + ", ".join(
                f"{'background' if (self.trace.box is not None and k == len(p) - 1) else names[k]} {p[k]:.3f}"
                for k in top))
        self.info.value = "<pre style='font-size:11px;white-space:pre-wrap'>" + "\n".join(lines) + "</pre>"
        crop, _ = _crop(self.original_image(image), _xyxy_of(d.box.cpu().numpy()))
        crop = np.ascontiguousarray(crop)
        zoom = max(1, min(8, 192 // max(crop.shape[:2])))  # an integer zoom, pixels kept square
        if zoom > 1:
            crop = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
        self.crop.value = encode_png(crop)
        self.crop.layout.width, self.crop.layout.height = f"{crop.shape[1]}px", f"{crop.shape[0]}px"
        self.crop.layout.display = None

    @property
    def widget(self):
        self.info.layout.width = "360px"
        return self.framed(self.crop, self.info)

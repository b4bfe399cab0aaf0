"""ipywidgets explorers on top of a :class:`workbench.inspect.Trace`.

::

    tr = wi.trace(predictor, DatasetCatalog.get("shapes_val")[:3])   # the pass that was scored
    ex = TraceExplorer(predictor, tr, MetadataCatalog.get("shapes_val"))
    ex                                  # in JupyterLab: tabs, sliders, the picture
    ex.detections.set(score_thresh=0.7, classes=[0, 2])   # same as moving the widgets
    ex.detections.last.drawn["boxes"]   # what is on screen now
    ex.detections.png                   # the PNG bytes shown

Every explorer renders through a ``widgets.Image`` holding PNG bytes (deterministic under
nbval, testable without a kernel), redraws on any widget change, and keeps ``last`` (the
``VisImage`` / ``PlotImage`` drawn), ``png`` and ``renders`` (a counter).

Sliders never re-run the backbone or the heads: the detection explorer re-filters the traced
per-ROI scores with :func:`workbench.inspect.rethreshold` once per (NMS, top-k) setting and
then applies the score threshold and class filter to the cached result, which is exactly what
a re-run would return (NMS and top-k only ever drop lower-scored boxes).
"""

from __future__ import annotations

import contextlib
import html
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .features import (_crop, activation_histograms, channel_montage, keypoint_heatmaps_view, level_grid,
                       mask_logits_view, pca_image, rois_per_level, trace_image)
from .visualizer import Visualizer, encode_png

__all__ = ["Explorer", "DetectionExplorer", "FeatureExplorer", "ProposalExplorer", "MaskExplorer",
           "KeypointExplorer", "SegmentationExplorer", "TraceExplorer"]


def _widgets():
    import ipywidgets

    return ipywidgets


def _input_format(model) -> str:
    return getattr(model, "input_format", None) or "BGR"


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


def _name_classes(trace, metadata) -> None:
    """Give a trace made without class names (model inputs, no cfg) the metadata's."""
    names = metadata.get("thing_classes", None) if metadata is not None else None
    if trace.class_names is None and names:
        trace.class_names = list(names)


def _class_names(metadata, n: int) -> List[str]:
    names = metadata.get("thing_classes") if metadata is not None else None
    return [str(names[i]) if names and i < len(names) else str(i) for i in range(n)]


class Explorer:
    """Base: a set of named controls, a picture, ``set(**values)`` and ``state``.

    Subclasses fill ``self.controls`` (name -> widget) and implement :meth:`render`.
    """

    def __init__(self):
        w = _widgets()
        self.image = w.Image(format="png")
        self.controls: Dict[str, Any] = {}
        self.last = None
        self.png = b""
        self.renders = 0
        self._holding = 0
        self._pending = False
        self._rendering = False

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> Dict[str, Any]:
        """Current control values by name."""
        return {k: (list(v.value) if isinstance(v.value, tuple) else v.value) for k, v in self.controls.items()}

    @contextlib.contextmanager
    def hold(self):
        """Change several controls and redraw once at the end."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if self._holding == 0 and self._pending:
                self._pending = False
                self.redraw()

    def set(self, **values) -> "Explorer":
        """Set controls by name (as moving the widgets would) and redraw once."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise KeyError(f"Unknown control(s) {unknown}; this explorer has {sorted(self.controls)}.")
        with self.hold():
            for k, v in values.items():
                if k == "classes" and v is None:
                    v = ()
                self.controls[k].value = tuple(v) if isinstance(v, list) else v
            self._pending = True
        return self

    def _watch(self) -> None:
        for w in self.controls.values():
            w.observe(self._on_change, names="value")

    def _on_change(self, _change=None) -> None:
        if self._rendering:  # render() itself updates dependent controls (e.g. option lists)
            return
        if self._holding:
            self._pending = True
        else:
            self.redraw()

    # -- drawing -----------------------------------------------------------------------------------

    def render(self):
        raise NotImplementedError

    def redraw(self) -> bytes:
        """Render with the current state and show it; returns the PNG bytes."""
        self._rendering = True
        try:
            self.last = self.render()
        finally:
            self._rendering = False
        self._pending = False
        self.png = self.last.to_png_bytes()
        self.image.value = self.png
        self.renders += 1
        return self.png

    @property
    def widget(self):
        w = _widgets()
        return w.VBox([w.HBox(list(self.controls.values()), layout=w.Layout(flex_flow="row wrap")),
                       self.image])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _image_control(trace):
    w = _widgets()
    return w.IntSlider(value=0, min=0, max=max(trace.num_images - 1, 0), description="image")


class DetectionExplorer(Explorer):
    """Final detections with score / NMS / top-k sliders, class filter, toggles and one
    detection's provenance (proposal, anchor, level, objectness, scores) and crop.

    Controls: ``image``, ``score_thresh``, ``nms_thresh``, ``topk``, ``classes`` (empty: all),
    ``show_labels``, ``show_masks``, ``show_keypoints``, ``detection`` (-1: none; else a row of
    the shown image's detections at the current NMS / top-k).
    """

    def __init__(self, model, trace, metadata=None, *, input_format: Optional[str] = None,
                 max_topk: int = 300):
        super().__init__()
        model, trace = scored_trace(model, trace)
        _name_classes(trace, metadata)
        if trace.architecture not in ("rcnn", "panoptic_fpn", "retinanet"):
            raise ValueError(f"DetectionExplorer needs detections; a {trace.architecture} trace has "
                             "none (use ProposalExplorer / FeatureExplorer).")
        w = _widgets()
        self.model, self.trace, self.metadata = model, trace, metadata
        self.input_format = input_format or _input_format(model)
        base = trace.box if trace.box is not None else trace.dense
        self.base_settings = (float(base.score_thresh), float(base.nms_thresh), int(base.topk))
        n_cls = self._num_classes()
        names = _class_names(metadata, n_cls)
        self.controls = {
            "image": _image_control(trace),
            "score_thresh": w.FloatSlider(value=max(self.base_settings[0], 0.5), min=0.0, max=1.0,
                                          step=0.01, description="score"),
            "nms_thresh": w.FloatSlider(value=self.base_settings[1], min=0.05, max=1.0, step=0.05,
                                        description="NMS IoU"),
            "topk": w.IntSlider(value=self.base_settings[2], min=1, max=max(max_topk, self.base_settings[2]),
                                description="top-k"),
            "classes": w.SelectMultiple(options=[(n, i) for i, n in enumerate(names)], value=(),
                                        description="classes", rows=min(6, max(n_cls, 1))),
            "show_labels": w.Checkbox(value=True, description="labels"),
            "show_masks": w.Checkbox(value=True, description="masks"),
            "show_keypoints": w.Checkbox(value=True, description="keypoints"),
            "detection": w.Dropdown(options=[("none", -1)], value=-1, description="detection"),
        }
        self.info = w.HTML()
        # A fixed display width (the crop is often a few dozen pixels); no flex stretching.
        self.crop = w.Image(format="png", layout=w.Layout(width="192px", object_fit="contain"))
        self._pools: Dict[Tuple[float, int], Tuple[float, Any]] = {}
        self._orig_images: Dict[int, np.ndarray] = {}
        self.current = None  # the trace the shown detections come from
        self._watch()
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

    def render(self):
        s = self.state
        i = int(s["image"])
        self.current = tr = self.detections_trace(s["score_thresh"], s["nms_thresh"], s["topk"])
        inst = tr.outputs[i]["instances"]
        vis = Visualizer(self.original_image(i), self.metadata)
        out = vis.draw_instance_predictions(
            inst, score_thresh=s["score_thresh"], classes=s["classes"] or None,
            show_labels=s["show_labels"], show_masks=s["show_masks"], show_keypoints=s["show_keypoints"])
        kept = out.drawn["kept"]
        scores = inst.scores.cpu().numpy() if inst.has("scores") else np.zeros(len(inst))
        cls = inst.pred_classes.cpu().numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
        names = _class_names(self.metadata, self._num_classes())
        options = [("none", -1)] + [(f"{r}: {names[cls[r]]} {scores[r]:.2f}", int(r)) for r in kept]
        det = self.controls["detection"]
        chosen = det.value if det.value in [o[1] for o in options] else -1
        det.options, det.value = options, chosen
        if chosen >= 0:
            # A white outline 1.5x the width of the others: it stands out without hiding the
            # box's own edge or the mask boundary under it.
            vis.draw_boxes(inst.pred_boxes.tensor[chosen:chosen + 1].cpu().numpy(), [[1.0, 1.0, 1.0]],
                           linewidth=1.5 * max(vis.font_size / 4, 1.0))
            out.drawn["boxes"] = out.drawn["boxes"][:-1]  # the highlight is not a detection
            out.drawn["box_colors"] = out.drawn["box_colors"][:-1]
            out.drawn["highlight"] = chosen
            self._show_detection(tr, i, chosen)
        else:
            self.info.value, self.crop.value = "", b""
            self.crop.layout.display = "none"  # an empty <img> shows as a broken image in a browser
            self.provenance = None
        return out

    def _show_detection(self, tr, image: int, row: int) -> None:
        d = tr.detection(row, image=image)
        self.provenance = d
        lines = [html.escape(str(d))]
        if d.probs is not None:
            p = d.probs.cpu().numpy()
            top = np.argsort(-p)[:5]
            names = _class_names(self.metadata, len(p))
            lines.append("top scores: " + ", ".join(
                f"{'background' if (self.trace.box is not None and k == len(p) - 1) else names[k]} {p[k]:.3f}"
                for k in top))
        self.info.value = "<pre>" + "\n".join(lines) + "</pre>"
        crop, _ = _crop(self.original_image(image), d.box)
        self.crop.value = encode_png(np.ascontiguousarray(crop))
        self.crop.layout.display = None

    @property
    def widget(self):
        w = _widgets()
        top = w.Layout(align_items="flex-start")  # flex's default "stretch" distorts the images
        return w.VBox([w.HBox(list(self.controls.values()), layout=w.Layout(flex_flow="row wrap")),
                       w.HBox([self.image, w.VBox([self.crop, self.info], layout=top)], layout=top)])


class FeatureExplorer(Explorer):
    """Backbone maps: one level (a channel, or a reduction), all levels, a channel montage,
    PCA to RGB, activation histograms, or the ROIs each level received.

    Controls: ``image``, ``source`` ("features" or "bottom_up"), ``level``, ``channel`` (-1:
    ``reduce`` over channels), ``reduce``, ``view`` ("level", "levels", "montage", "pca",
    "histograms", "rois").
    """

    VIEWS = ("level", "levels", "montage", "pca", "histograms", "rois")

    def __init__(self, trace, model=None):
        super().__init__()
        w = _widgets()
        self.trace, self.model = trace, model
        sources = ["features"] + (["bottom_up"] if trace.backbone.bottom_up else [])
        names = list(trace.backbone.features)
        max_c = max(int(f.shape[1]) for f in trace.backbone.features.values())
        views = [v for v in self.VIEWS if v != "rois" or trace.box is not None]
        self.controls = {
            "image": _image_control(trace),
            "source": w.Dropdown(options=sources, value="features", description="source"),
            "level": w.Dropdown(options=names, value=names[0], description="level"),
            "channel": w.IntSlider(value=-1, min=-1, max=max_c - 1, description="channel"),
            "reduce": w.Dropdown(options=["mean", "absmean", "max", "norm"], value="mean", description="reduce"),
            "view": w.ToggleButtons(options=views, value="level", description="view"),
        }
        self.controls["source"].observe(self._source_changed, names="value")
        self._watch()
        self.redraw()

    def maps(self) -> Dict[str, Any]:
        src = self.controls["source"].value
        return self.trace.backbone.features if src == "features" else self.trace.backbone.bottom_up

    def _source_changed(self, change) -> None:
        names = list(self.maps())
        with self.hold():
            lvl = self.controls["level"]
            if lvl.value not in names:
                lvl.options = names
                lvl.value = names[0]
            else:
                lvl.options = names

    def render(self):
        s = self.state
        feats, i = self.maps(), int(s["image"])
        level = s["level"] if s["level"] in feats else list(feats)[0]
        f = feats[level][i]  # (C, Hi, Wi)
        ch = None if s["channel"] < 0 else min(int(s["channel"]), int(f.shape[0]) - 1)
        view = s["view"]
        if view == "level":
            out = level_grid(feats, image=i, channel=ch, reduce=s["reduce"], levels=[level], ncols=1)
        elif view == "levels":
            out = level_grid(feats, image=i, channel=ch, reduce=s["reduce"])
        elif view == "montage":
            start = 0 if ch is None else ch
            out = channel_montage(f, list(range(start, min(start + 32, f.shape[0]))))
        elif view == "pca":
            out = pca_image(feats, image=i, levels=[level], ncols=1)
        elif view == "histograms":
            out = activation_histograms({k: v[i] for k, v in feats.items()})
        else:
            out = rois_per_level(self.trace, self.model, image=i)
        out.drawn["level"], out.drawn["channel"] = level, ch
        return out


class ProposalExplorer(Explorer):
    """The RPN's proposals coloured by objectness (top-k), and the anchors of one cell.

    Controls: ``image``, ``topk``, ``show_anchors``, ``level`` (anchor level), ``cell_y``,
    ``cell_x`` (clamped to the level's grid).
    """

    def __init__(self, trace, *, input_format: str = "BGR"):
        super().__init__()
        if trace.rpn is None:
            raise ValueError("ProposalExplorer needs a trace with an RPN stage.")
        w = _widgets()
        self.trace, self.input_format = trace, input_format
        rpn = trace.rpn
        self.levels = list(rpn.in_features)
        self.controls = {
            "image": _image_control(trace),
            "topk": w.IntSlider(value=min(50, max(len(p) for p in rpn.proposals)), min=0,
                                max=max(len(p) for p in rpn.proposals), description="top-k"),
            "show_anchors": w.Checkbox(value=False, description="anchors"),
            "level": w.Dropdown(options=self.levels, value=self.levels[0], description="level"),
            "cell_y": w.IntSlider(value=0, min=0, max=511, description="cell y"),
            "cell_x": w.IntSlider(value=0, min=0, max=511, description="cell x"),
        }
        self._images: Dict[int, np.ndarray] = {}
        self._watch()
        self.redraw()

    def grid(self, level: str) -> Tuple[int, int]:
        f = self.trace.backbone.features[level]
        return int(f.shape[-2]), int(f.shape[-1])

    def render(self):
        s = self.state
        i = int(s["image"])
        if i not in self._images:
            self._images[i] = trace_image(self.trace, i, input_format=self.input_format)
        sy, sx = self.trace.preprocess.scales[i]
        box_scale = 1.0 / ((sx + sy) / 2)  # input pixels -> original pixels
        vis = Visualizer(self._images[i])
        out = vis.draw_proposals(self.trace.rpn.proposals[i], topk=s["topk"], box_scale=box_scale)
        n_prop = len(out.drawn["boxes"])
        if s["show_anchors"]:
            lvl = self.levels.index(s["level"])
            hi, wi = self.grid(s["level"])
            y, x = min(s["cell_y"], hi - 1), min(s["cell_x"], wi - 1)
            vis.draw_anchors(self.trace.rpn.anchors[lvl], (hi, wi), (y, x), box_scale=box_scale)
            out.drawn["anchors"] = out.drawn["boxes"][n_prop:]
            out.drawn["cell"] = (s["level"], y, x)
        out.drawn["proposals"] = out.drawn["boxes"][:n_prop]
        return out


class _DetectionViewExplorer(Explorer):
    """Shared by the mask and keypoint explorers: an image and a detection of it."""

    def __init__(self, trace, input_format: str):
        super().__init__()
        w = _widgets()
        self.trace, self.input_format = trace, input_format
        self.controls = {"image": _image_control(trace),
                         "detection": w.Dropdown(options=self._options(0), description="detection")}
        self.controls["image"].observe(self._image_changed, names="value")

    def _options(self, image: int):
        inst = self.trace.outputs[image]["instances"]
        scores = inst.scores.cpu().numpy() if inst.has("scores") else np.zeros(len(inst))
        classes = inst.pred_classes.tolist() if inst.has("pred_classes") else [None] * len(inst)
        names = self.trace.class_names
        label = [names[c] if names and c is not None and 0 <= c < len(names) else f"class {c}"
                 for c in classes]
        return [(f"{r}: {label[r]} {scores[r]:.2f}", r) for r in range(len(inst))] \
            or [("(no detections)", -1)]

    def _image_changed(self, change) -> None:
        with self.hold():
            self.controls["detection"].options = self._options(int(change["new"]))


class MaskExplorer(_DetectionViewExplorer):
    """Raw M x M mask logits of a detection beside its pasted mask. Controls: ``image``, ``detection``."""

    def __init__(self, trace, *, input_format: str = "BGR"):
        if trace.mask is None:
            raise ValueError("MaskExplorer needs a trace of a model with a mask head.")
        super().__init__(trace, input_format)
        self._watch()
        self.redraw()

    def render(self):
        s = self.state
        if s["detection"] < 0:
            return _empty("no detections")
        return mask_logits_view(self.trace, s["detection"], image=s["image"], input_format=self.input_format)


class KeypointExplorer(_DetectionViewExplorer):
    """Keypoint heatmaps over a detection's crop. Controls: ``image``, ``detection``,
    ``keypoints`` (empty: all)."""

    def __init__(self, trace, metadata=None, *, input_format: str = "BGR"):
        if trace.keypoint is None:
            raise ValueError("KeypointExplorer needs a trace of a model with a keypoint head.")
        super().__init__(trace, input_format)
        w = _widgets()
        k = int(trace.keypoint.heatmaps.shape[1])
        names = metadata.get("keypoint_names") if metadata is not None else None
        self.names = [str(names[j]) if names and j < len(names) else str(j) for j in range(k)]
        self.controls["keypoints"] = w.SelectMultiple(options=[(n, j) for j, n in enumerate(self.names)],
                                                      value=(), description="keypoints", rows=6)
        self._watch()
        self.redraw()

    def render(self):
        s = self.state
        if s["detection"] < 0:
            return _empty("no detections")
        return keypoint_heatmaps_view(self.trace, s["detection"], image=s["image"],
                                      keypoints=s["keypoints"] or None, names=self.names,
                                      input_format=self.input_format)


class SegmentationExplorer(Explorer):
    """Semantic and panoptic outputs (Panoptic FPN, SemanticSegmentor) over the image.

    Controls: ``image``, ``kind`` ("panoptic" or "semantic"), ``alpha``, ``show_labels``.
    """

    def __init__(self, trace, metadata=None, *, input_format: str = "BGR"):
        kinds = [k for k, key in (("panoptic", "panoptic_seg"), ("semantic", "sem_seg"))
                 if key in trace.outputs[0]]
        if not kinds:
            raise ValueError("SegmentationExplorer needs a trace whose outputs hold 'sem_seg' or "
                             "'panoptic_seg'.")
        super().__init__()
        w = _widgets()
        self.trace, self.metadata, self.input_format = trace, metadata, input_format
        self.controls = {
            "image": _image_control(trace),
            "kind": w.ToggleButtons(options=kinds, value=kinds[0], description="kind"),
            "alpha": w.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="alpha"),
            "show_labels": w.Checkbox(value=True, description="labels"),
        }
        self._images: Dict[int, np.ndarray] = {}
        self._watch()
        self.redraw()

    def render(self):
        s = self.state
        i = int(s["image"])
        if i not in self._images:
            self._images[i] = trace_image(self.trace, i, input_format=self.input_format)
        out = self.trace.outputs[i]
        vis = Visualizer(self._images[i], self.metadata)
        if s["kind"] == "panoptic":
            pan, info = out["panoptic_seg"]
            res = vis.draw_panoptic_seg(pan, info, alpha=s["alpha"], show_labels=s["show_labels"])
        else:
            res = vis.draw_sem_seg(out["sem_seg"], alpha=s["alpha"], show_labels=s["show_labels"])
        return res


def _empty(text: str):
    from .features import PlotImage

    out = PlotImage(1, 1, panel=2.0)
    out.axes[0].axis("off")
    out.axes[0].text(0.5, 0.5, text, ha="center", va="center")
    return out


class TraceExplorer:
    """Tabs for features, proposals, detections, masks, keypoints and segmentation (those the model has),
    sharing one image selector. ``explorer.tabs[name]`` is each tab's explorer.

    ``trace`` is a Trace, or what to trace: ``TraceExplorer(predictor, dataset_dicts, metadata)``
    explores the pass the evaluator scored."""

    def __init__(self, model, trace, metadata=None, *, input_format: Optional[str] = None):
        w = _widgets()
        model, trace = scored_trace(model, trace)
        _name_classes(trace, metadata)
        fmt = input_format or _input_format(model)
        self.tabs: Dict[str, Explorer] = {"features": FeatureExplorer(trace, model)}
        if trace.rpn is not None:
            self.tabs["proposals"] = ProposalExplorer(trace, input_format=fmt)
        if trace.architecture in ("rcnn", "panoptic_fpn", "retinanet"):
            self.tabs["detections"] = DetectionExplorer(model, trace, metadata, input_format=fmt)
        if trace.mask is not None:
            self.tabs["masks"] = MaskExplorer(trace, input_format=fmt)
        if trace.keypoint is not None:
            self.tabs["keypoints"] = KeypointExplorer(trace, metadata, input_format=fmt)
        if any(k in trace.outputs[0] for k in ("sem_seg", "panoptic_seg")):
            self.tabs["segmentation"] = SegmentationExplorer(trace, metadata, input_format=fmt)
        self.image = _image_control(trace)
        self.image.observe(self._image_changed, names="value")
        for ex in self.tabs.values():  # the shared selector above the tabs drives theirs
            if "image" in ex.controls:
                ex.controls["image"].layout.display = "none"
        self.tab = w.Tab(children=[ex.widget for ex in self.tabs.values()])
        for k, name in enumerate(self.tabs):
            self.tab.set_title(k, name)

    def __getattr__(self, name: str):
        tabs = self.__dict__.get("tabs", {})
        if name in tabs:
            return tabs[name]
        raise AttributeError(name)

    def _image_changed(self, change) -> None:
        for ex in self.tabs.values():
            ex.set(image=int(change["new"]))

    def set_image(self, i: int) -> None:
        self.image.value = int(i)

    @property
    def widget(self):
        w = _widgets()
        return w.VBox([self.image, self.tab])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

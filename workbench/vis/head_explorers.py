"""Explorers of the heads that run per detection (mask logits, keypoint heatmaps) and of the
segmentation outputs (semantic, panoptic)."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .detection_explorer import class_names, detection_options, image_slider, resolve_input_format
from .explorer_base import Explorer, _widgets
from .features import PlotImage, keypoint_heatmaps_view, mask_logits_view, trace_image
from .visualizer import Visualizer

__all__ = ["MaskExplorer", "KeypointExplorer", "SegmentationExplorer"]


def _empty(text: str):
    out = PlotImage(1, 1, panel=2.0)
    out.axes[0].axis("off")
    out.axes[0].text(0.5, 0.5, text, ha="center", va="center")
    return out


class _DetectionViewExplorer(Explorer):
    """Shared by the mask and keypoint explorers: an image and a detection of it.

    Alone, a new image shows its first detection. Linked by :class:`TraceExplorer`
    (``rows_shown`` set from the detections tab), it offers the detections that tab shows (one
    score threshold and class filter for every tab), "none" among them, and follows that tab's
    choice (:meth:`follow`)."""

    def __init__(self, trace, input_format: Optional[str], metadata=None, model=None, image_control=None,
                 zoom: int = 1):
        super().__init__(zoom=zoom)
        w = _widgets()
        self.trace, self.metadata = trace, metadata
        self.input_format = resolve_input_format(trace, model, input_format)
        self.rows_shown: Optional[Callable[[int], np.ndarray]] = None
        if image_control is not None:
            self.shared.add("image")
        self.controls = {"image": image_control or image_slider(trace),
                         "detection": w.Dropdown(options=[("(no detections)", -1)], value=-1,
                                                 description="detection")}
        self.controls["image"].observe(self._image_changed, names="value")
        self._refresh_options(0, first=True)

    @property
    def linked(self) -> bool:
        return self.rows_shown is not None

    def options(self, image: int) -> List[Tuple[str, int]]:
        """(label, row) of the detections offered for ``image``: "row: name score"."""
        inst = self.trace.outputs[image]["instances"]
        rows = np.arange(len(inst)) if self.rows_shown is None else np.asarray(self.rows_shown(image))
        classes = inst.pred_classes.cpu().numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
        names = class_names(self.trace, self.metadata, int(classes.max()) + 1 if len(classes) else 0)
        listed = detection_options(inst, rows, names)
        if self.linked:
            return [("none", -1)] + listed
        return listed or [("(no detections)", -1)]

    def _refresh_options(self, image: int, *, first: bool = False, row: Optional[int] = None) -> bool:
        """Offer ``image``'s detections (quietly), keeping the choice if still offered (``row``
        instead when given); alone, the first detection when asked or when the choice is gone,
        linked: none. Returns whether the choice or the list changed."""
        det = self.controls["detection"]
        options = self.options(image)
        values = [v for _, v in options]
        want = det.value if row is None else row
        if want not in values or (first and not self.linked):
            want = -1 if self.linked else values[0]
        return self.set_options("detection", options, want)

    def refresh_options(self, name: str) -> None:
        if name == "detection":
            self._refresh_options(int(self.controls["image"].value))

    def follow(self, row: int) -> None:
        """Show detection ``row`` of the current image (-1: none), as the detections tab chose;
        redraws (or marks stale) only if something changed."""
        if self._refresh_options(int(self.controls["image"].value), row=row):
            self._on_change()

    def _image_changed(self, change) -> None:
        if not self.linked:  # alone: the image's first detection; the image's change redraws
            self._refresh_options(int(change["new"]), first=True)

    def _on_change(self, change=None) -> None:
        if self.linked and change is not None and change.get("owner") is self.controls["image"]:
            return  # linked: the detections tab's follow-up (follow) redraws this tab, once
        super()._on_change(change)

    def chosen_class(self) -> Optional[str]:
        """The class name of the chosen detection (None: none chosen)."""
        r = int(self.controls["detection"].value)
        if r < 0:
            return None
        inst = self.trace.outputs[int(self.controls["image"].value)]["instances"]
        c = int(inst.pred_classes[r])
        return class_names(self.trace, self.metadata, c + 1)[c]

    def render(self):
        self._refresh_options(int(self.controls["image"].value))
        s = self.state
        if s["detection"] < 0:
            return _empty("choose a detection:\nhere, or click one\non the detections tab" if self.linked else "no detections")
        return self.render_detection(int(s["image"]), int(s["detection"]), s)

    def render_detection(self, image: int, row: int, state):
        raise NotImplementedError


class MaskExplorer(_DetectionViewExplorer):
    """Raw M x M mask logits of a detection beside its pasted mask. Controls: ``image``, ``detection``."""

    def __init__(self, trace, metadata=None, *, input_format: Optional[str] = None, model=None,
                 image_control=None, zoom: int = 1):
        if trace.mask is None:
            raise ValueError("MaskExplorer needs a trace of a model with a mask head.")
        super().__init__(trace, input_format, metadata, model, image_control, zoom)
        self._watch()
        self.redraw()

    def render_detection(self, image, row, state):
        return mask_logits_view(self.trace, row, image=image, input_format=self.input_format)


class KeypointExplorer(_DetectionViewExplorer):
    """Keypoint heatmaps over a detection's crop. Controls: ``image``, ``detection``,
    ``keypoints`` (empty: all), named by the metadata's ``keypoint_names``."""

    def __init__(self, trace, metadata=None, *, input_format: Optional[str] = None, model=None,
                 image_control=None, zoom: int = 1):
        if trace.keypoint is None:
            raise ValueError("KeypointExplorer needs a trace of a model with a keypoint head.")
        super().__init__(trace, input_format, metadata, model, image_control, zoom)
        w = _widgets()
        k = int(trace.keypoint.heatmaps.shape[1])
        names = metadata.get("keypoint_names", None) if metadata is not None else None
        self.names = [str(names[j]) if names and j < len(names) else str(j) for j in range(k)]
        self.controls["keypoints"] = w.SelectMultiple(options=[(n, j) for j, n in enumerate(self.names)],
                                                      value=(), description="keypoints", rows=min(k, 8))
        self._watch()
        self.redraw()

    def render_detection(self, image, row, state):
        return keypoint_heatmaps_view(self.trace, row, image=image, keypoints=state["keypoints"] or None,
                                      names=self.names, input_format=self.input_format)


class SegmentationExplorer(Explorer):
    """Semantic and panoptic outputs (Panoptic FPN, SemanticSegmentor) over the image.

    Controls: ``image``, ``kind`` ("panoptic" or "semantic"), ``alpha``, ``show_labels``.
    """

    def __init__(self, trace, metadata=None, *, input_format: Optional[str] = None, model=None,
                 image_control=None, zoom: int = 1):
        kinds = [k for k, key in (("panoptic", "panoptic_seg"), ("semantic", "sem_seg"))
                 if key in trace.outputs[0]]
        if not kinds:
            raise ValueError("SegmentationExplorer needs a trace whose outputs hold 'sem_seg' or "
                             "'panoptic_seg'.")
        super().__init__(zoom=zoom)
        w = _widgets()
        self.trace, self.metadata = trace, metadata
        self.input_format = resolve_input_format(trace, model, input_format)
        if image_control is not None:
            self.shared.add("image")
        self.controls = {
            "image": image_control or image_slider(trace),
            "kind": w.Dropdown(options=kinds, value=kinds[0], description="kind"),
            "alpha": w.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="alpha"),
            "show_labels": w.Checkbox(value=True, description="labels", indent=False),
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
            return vis.draw_panoptic_seg(pan, info, alpha=s["alpha"], show_labels=s["show_labels"])
        return vis.draw_sem_seg(out["sem_seg"], alpha=s["alpha"], show_labels=s["show_labels"])

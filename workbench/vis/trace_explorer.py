"""Every view of one trace in tabs, with one selection: the image, the detection, the score
threshold and class filter are each held once and every tab reads them."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .detection_explorer import (DETECTION_ARCHITECTURES, DetectionExplorer, image_slider, name_classes,
                                 resolve_input_format, scored_trace)
from .explorer_base import NATIVE_CSS, Explorer, _widgets
from .feature_explorers import FeatureExplorer, ProposalExplorer
from .head_explorers import KeypointExplorer, MaskExplorer, SegmentationExplorer

__all__ = ["TraceExplorer"]


class TraceExplorer:
    """Tabs for features, proposals, detections, masks, keypoints and segmentation (those the
    model has) under one image selector. ``explorer.tabs[name]`` (or ``explorer.<name>``) is
    each tab's explorer.

    One source of truth: the image selector above the tabs is the ``image`` control of every
    tab (``tab.set(image=i)`` moves it for all); the detection chosen in the detections tab
    (from its list or by a click on its box) is the one the masks and keypoints tabs show, and
    a choice there is reflected back; the masks and keypoints tabs offer the detections that
    pass the detections tab's score threshold and class filter. Only the tab on screen redraws
    on a change; the others redraw when shown. The masks and keypoints tab titles name the
    class of the chosen detection.

    ``trace`` is a Trace, or what to trace: ``TraceExplorer(predictor, dataset_dicts, metadata)``
    explores the pass the evaluator scored.
    """

    def __init__(self, model, trace, metadata=None, *, input_format: Optional[str] = None, zoom: int = 1):
        w = _widgets()
        model, trace = scored_trace(model, trace)
        name_classes(trace, metadata)
        self.model, self.trace, self.metadata = model, trace, metadata
        fmt = resolve_input_format(trace, model, input_format)
        self.image = image_slider(trace)
        common = dict(image_control=self.image, zoom=zoom)
        self.tabs: Dict[str, Explorer] = {"features": FeatureExplorer(trace, model, **common)}
        if trace.rpn is not None:
            self.tabs["proposals"] = ProposalExplorer(trace, input_format=fmt, **common)
        if trace.architecture in DETECTION_ARCHITECTURES:
            self.tabs["detections"] = DetectionExplorer(model, trace, metadata, input_format=fmt, **common)
        if trace.mask is not None:
            self.tabs["masks"] = MaskExplorer(trace, metadata, input_format=fmt, **common)
        if trace.keypoint is not None:
            self.tabs["keypoints"] = KeypointExplorer(trace, metadata, input_format=fmt, **common)
        if any(k in trace.outputs[0] for k in ("sem_seg", "panoptic_seg")):
            self.tabs["segmentation"] = SegmentationExplorer(trace, metadata, input_format=fmt, **common)
        self.tab = w.Tab(children=[ex.widget for ex in self.tabs.values()])
        self._link_detections()
        self._titles()
        self.tab.observe(self._tab_changed, names="selected_index")
        self.tab.selected_index = list(self.tabs).index("detections") if "detections" in self.tabs else 0
        self._tab_changed()

    def __getattr__(self, name: str):
        tabs = self.__dict__.get("tabs", {})
        if name in tabs:
            return tabs[name]
        raise AttributeError(name)

    # -- one selection -------------------------------------------------------------------------

    def _heads(self):
        return [self.tabs[k] for k in ("masks", "keypoints") if k in self.tabs]

    def _link_detections(self) -> None:
        det = self.tabs.get("detections")
        if det is None:
            return
        self._syncing = False
        for head in self._heads():
            head.rows_shown = det.shown_rows
            head._refresh_options(int(self.image.value), row=-1)
            head.controls["detection"].observe(self._head_detection_changed, names="value")
        # Once per action on the detections tab (after its hold, drawn or not): the heads follow.
        det._listeners.append(lambda _ex: self._heads_follow())

    def _base_row(self) -> int:
        """The detections tab's choice as a row of the trace's own outputs (what the mask and
        keypoint records index), or -1 (none, not shown at the current settings, or a box only
        a re-thresholded pool has)."""
        det = self.tabs["detections"]
        det.refresh_options("detection")  # its list at the current settings, without drawing
        r = int(det.controls["detection"].value)
        current = det.current_trace()
        if r < 0 or current is self.trace:
            return r
        i = int(self.image.value)
        mine = current.outputs[i]["instances"]
        base = self.trace.outputs[i]["instances"]
        same = (base.pred_classes == mine.pred_classes[r]) & \
            (base.pred_boxes.tensor - mine.pred_boxes.tensor[r]).abs().amax(dim=1).le(1e-4)
        rows = np.flatnonzero(same.cpu().numpy())
        return int(rows[0]) if len(rows) else -1

    def _heads_follow(self) -> None:
        """The heads offer what the detections tab shows and show its choice."""
        if self._syncing:
            return
        row = self._base_row()
        self._syncing = True
        try:
            for head in self._heads():
                head.follow(row)
        finally:
            self._syncing = False
        self._titles()

    def _head_detection_changed(self, change) -> None:
        """A detection chosen in the masks or keypoints tab becomes the detections tab's choice
        (and so the other head's)."""
        if self._syncing or change["new"] == change["old"]:
            return
        det = self.tabs["detections"]
        row = int(change["new"])
        if det.current_trace() is not self.trace:  # rows of a re-thresholded pool differ
            self._titles()
            return
        self._syncing = True
        try:
            for head in self._heads():
                head.follow(row)
            det.set(detection=row)
        finally:
            self._syncing = False
        self._titles()

    def _titles(self) -> None:
        for k, (name, ex) in enumerate(self.tabs.items()):
            title = name
            if name in ("masks", "keypoints"):
                cls = ex.chosen_class()
                title = f"{name}: {cls}" if cls else name
            if self.tab.get_title(k) != title:
                self.tab.set_title(k, title)

    def _tab_changed(self, _change=None) -> None:
        idx = self.tab.selected_index
        for k, ex in enumerate(self.tabs.values()):
            if k != idx:
                ex.active = False
        if idx is not None:
            list(self.tabs.values())[idx].show()

    # -- API -------------------------------------------------------------------------------------

    def set_image(self, i: int) -> None:
        """Show image ``i`` in every tab (as moving the image selector)."""
        from .explorer_base import snap_to_control

        self.image.value = snap_to_control("image", self.image, i)

    def select(self, tab: str) -> Explorer:
        """Bring tab ``tab`` on screen; returns its explorer."""
        if tab not in self.tabs:
            raise KeyError(f"No tab {tab!r}; this explorer has {list(self.tabs)}.")
        self.tab.selected_index = list(self.tabs).index(tab)
        return self.tabs[tab]

    @property
    def widget(self):
        w = _widgets()
        return w.VBox([w.HTML(NATIVE_CSS), self.image, self.tab])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

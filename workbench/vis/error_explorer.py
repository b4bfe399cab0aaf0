"""One explorer over a dataset's errors: a table of every false positive and miss of an
evaluation, filters by error type and class, and the chosen error on its image.

::

    ex = ErrorExplorer(evaluator, breakdown=evaluator.error_breakdown("bbox"), predictor=predictor)
    ex                                   # in JupyterLab: filters, the table, the picture
    ex.set(kinds=["cls"], classes=[3], sort="score")   # same as using the widgets
    ex.set(row=0)                        # choose the first row of the table
    ex.info.value                        # its provenance (proposal, anchor, scores) or why_missed

The table is an ipywidgets ``Select`` (one row per error: type, image, class, score); choosing a
row draws the image with the ground truth (white) and that error (red: a false positive, dashed
yellow: a missed object). With a ``predictor``, the image is traced through the pass that was
scored (``workbench.analysis.explain_image``, cached per image) and the panel shows the
detection's provenance or ``why_missed``.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .explorer_base import NATIVE_CSS, Explorer, _widgets

__all__ = ["ErrorExplorer"]

SORTS = ("score", "type", "class", "image")


class ErrorExplorer(Explorer):
    """Controls: ``kinds`` (error types shown; empty: all), ``classes`` (empty: all), ``sort``
    (one of "score", "type", "class", "image"), ``row`` (the chosen row of the filtered table,
    -1: none). ``rows`` lists every error as a dict; ``table`` the filtered, sorted ones."""

    def __init__(self, evaluator, *, breakdown=None, predictor=None, task: str = "bbox",
                 iou_thresh: Optional[float] = None):
        super().__init__()
        if iou_thresh is None:
            iou_thresh = breakdown.iou_thresh if breakdown is not None else 0.5
        if breakdown is not None and abs(breakdown.iou_thresh - iou_thresh) > 1e-9:
            raise ValueError(f"The breakdown is at IoU {breakdown.iou_thresh}, the explorer was asked "
                             f"for {iou_thresh}: give the same threshold.")
        self.iou_thresh = iou_thresh
        from workbench.data import DatasetCatalog, MetadataCatalog

        w = _widgets()
        self.evaluator, self.breakdown, self.predictor = evaluator, breakdown, predictor
        self.task = task
        self.results = evaluator.per_image(task, iou_thresh)
        self.metadata = MetadataCatalog.get(evaluator.dataset_name)
        self.names = list(self.metadata.get("thing_classes", []) or [])
        self.dicts = {d["image_id"]: d for d in DatasetCatalog.get(evaluator.dataset_name)}
        self.rows = self._rows()
        kinds = sorted({r["kind"] for r in self.rows})
        classes = sorted({r["class"] for r in self.rows})
        self.controls = {
            "kinds": w.SelectMultiple(options=kinds, value=(), description="error", rows=min(7, max(len(kinds), 1))),
            "classes": w.SelectMultiple(options=[(self._name(c), c) for c in classes], value=(),
                                        description="class", rows=min(7, max(len(classes), 1))),
            "sort": w.Dropdown(options=list(SORTS), value="score", description="sort"),
            "row": w.Select(options=[("(none)", -1)], value=-1, description="errors", rows=12,
                            layout=w.Layout(width="420px")),
        }
        self.info = w.HTML()
        self._explained: Dict[Any, Any] = {}
        self.table: List[Dict[str, Any]] = []
        for name in ("kinds", "classes", "sort"):  # a new table: row i would be another error
            self.controls[name].observe(self._table_changed, names="value")
        self._watch()
        self.redraw()

    def _table_changed(self, _change=None) -> None:
        with self.quietly():
            self.controls["row"].value = -1
        self.refresh_options("row")

    def refresh_options(self, name: str) -> None:
        """The table and its rows for the current filters and sort, without drawing."""
        if name != "row":
            return
        self.table = self._filtered(self.state)
        row_w = self.controls["row"]
        options: List[Tuple[str, int]] = [("(none)", -1)] + [(self._label(i, r), i)
                                                             for i, r in enumerate(self.table)]
        chosen = int(row_w.value) if int(row_w.value) < len(self.table) else -1
        self.set_options("row", options, chosen)

    # -- the table ------------------------------------------------------------------------------

    def _name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else f"class {c}"

    def _rows(self) -> List[Dict[str, Any]]:
        rows = []
        b = self.breakdown
        for img, r in self.results.items():
            kinds = b.errors.get(img) if b is not None else None
            for d in np.nonzero(r.fp)[0].tolist():
                rows.append({"kind": kinds[d] if kinds and kinds[d] else "fp", "image_id": img,
                             "class": int(r.categories[d]), "score": float(r.scores[d]),
                             "box": r.boxes[d], "dt_id": int(r.dt_ids[d]), "gt": -1})
            for g in np.nonzero(r.missed)[0].tolist():
                # TIDE charges an object under a cls / loc error to that error: "miss:cls/loc"
                rows.append({"kind": "miss" if b is None or g in b.missed.get(img, []) else "miss:cls/loc",
                             "image_id": img, "class": int(r.gt_categories[g]), "score": None,
                             "box": r.gt_boxes[g], "dt_id": -1, "gt": g})
        return rows

    def _filtered(self, s: Dict[str, Any]) -> List[Dict[str, Any]]:
        kinds, classes = set(s["kinds"]), set(s["classes"])
        rows = [r for r in self.rows if (not kinds or r["kind"] in kinds)
                and (not classes or r["class"] in classes)]
        key = {"score": lambda r: -(r["score"] if r["score"] is not None else -1.0),
               "type": lambda r: r["kind"], "class": lambda r: r["class"],
               "image": lambda r: str(r["image_id"])}[s["sort"]]
        return sorted(rows, key=key)

    def _label(self, i: int, r: Dict[str, Any]) -> str:
        score = "" if r["score"] is None else f" {r['score']:.2f}"
        return f"{i}: {r['kind']:<9} image {r['image_id']}  {self._name(r['class'])}{score}"

    # -- drawing --------------------------------------------------------------------------------

    def _explanation(self, img):
        if self.predictor is None:
            return None
        if img not in self._explained:
            from workbench.analysis import explain_image

            self._explained[img] = explain_image(self.evaluator, self.predictor, img,
                                                 task=self.task, iou_thresh=self.iou_thresh,
                                                 breakdown=self.breakdown)
        return self._explained[img]

    def _info(self, r: Dict[str, Any]) -> str:
        ex = self._explanation(r["image_id"])
        if ex is None:
            return html.escape(f"{r['kind']} on image {r['image_id']}: {self._name(r['class'])}")
        if r["dt_id"] >= 0:
            _, row = self.evaluator.output_row(r["dt_id"])
            text = repr(ex.trace.detection(row))
        else:
            text = next((repr(w) for g, w in ex.misses if g == r["gt"]), "(no why_missed)")
        return f"<pre style='font-size:11px'>{html.escape(text)}</pre>"

    def render(self):
        from PIL import Image as PILImage

        from .visualizer import Visualizer

        self.refresh_options("row")
        chosen = int(self.controls["row"].value)
        if chosen < 0:
            self.info.value = f"{len(self.table)} of {len(self.rows)} errors; choose one."
            img = np.full((64, 64, 3), 255, np.uint8)
            v = Visualizer(img, self.metadata)
            v.output.drawn["error"] = None
            return v.get_output()
        r = self.table[chosen]
        d = self.dicts[r["image_id"]]
        img = np.asarray(PILImage.open(d["file_name"]).convert("RGB"))
        res = self.results[r["image_id"]]
        v = Visualizer(img, self.metadata)
        gt = np.concatenate([res.gt_boxes[:, :2], res.gt_boxes[:, :2] + res.gt_boxes[:, 2:]], axis=1)
        if len(gt):
            v.draw_boxes(gt, [[1.0, 1.0, 1.0]] * len(gt), linewidth=1)
        box = np.asarray(r["box"], dtype=np.float64)
        xyxy = np.concatenate([box[:2], box[:2] + box[2:]])[None]
        miss = r["dt_id"] < 0
        v.draw_boxes(xyxy, [[1.0, 0.85, 0.1] if miss else [0.9, 0.1, 0.1]], linewidth=2,
                     linestyle="--" if miss else "-")
        out = v.get_output()
        out.drawn["error"] = dict(r)
        self.info.value = self._info(r)
        return out

    @property
    def widget(self):
        w = _widgets()
        c = self.controls
        top = w.Layout(align_items="flex-start")
        return w.VBox([w.HTML(NATIVE_CSS), w.HBox([c["kinds"], c["classes"], c["sort"], self.view_controls["zoom"]]),
                       w.HBox([c["row"], self.image], layout=top), self.info])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

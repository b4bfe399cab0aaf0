"""The box-head embeddings of an evaluation's detections, in 2-D, coloured by what they are.

::

    emb = detection_embeddings(evaluator, predictor, breakdown=b, min_score=0.3)
    emb.plot(color_by="error")          # PCA 2-D scatter: tp / cls / loc / ... in colours
    near = emb.near(emb.xy[0], k=16)    # the detections around one point
    emb.gallery(near)                   # their crops, with labels

Each evaluated image is traced through the pass that was scored (``trace(predictor,
dataset_dict, detections_only=True)``); its detections are rows of the evaluator's results, so
each embedding carries its detection's true class and error type from the evaluation. The 2-D
view is PCA (built in); ``emb.embeddings`` can go to any other projection.

Shape legend: N detections, D box-head width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from workbench.inspect.provenance import class_name

from .errors import BACKGROUND_IOU, ERROR_TYPES, ErrorBreakdown, _ious

__all__ = ["DetectionEmbeddings", "detection_embeddings", "pca_2d"]

_COLOURS = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34],
                     [23, 190, 207]], dtype=np.float64) / 255.0


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2): the first two principal components (signs fixed: the largest loading
    of each component is positive)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"Expected a non-empty (N, D) array, got shape {x.shape}.")
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    out = x @ comps.T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


@dataclass
class DetectionEmbeddings:
    """Attributes:
        embeddings: (N, D) box-head vectors; ``xy`` (N, 2) their PCA projection.
        image_ids, rows: (N,) the image and the row of its outputs each detection is.
        boxes: (N, 4) XYXY original px; ``scores``, ``pred_classes``: (N,).
        true_classes: (N,) the class of the object the detection lies on: its match for a
            true positive, else the object it overlaps most at IoU >= 0.1; -1 for none.
        kinds: (N,) "tp", an error type, or "ignored".
        file_names: image id -> file, for the gallery.
    """

    embeddings: np.ndarray
    xy: np.ndarray
    image_ids: np.ndarray
    rows: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    pred_classes: np.ndarray
    true_classes: np.ndarray
    kinds: np.ndarray
    file_names: Dict[Any, str]
    class_names: Optional[List[str]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        kinds = dict(zip(*np.unique(self.kinds, return_counts=True))) if len(self) else {}
        return (f"DetectionEmbeddings({len(self)} detections, D={self.embeddings.shape[1]}, "
                f"{ {str(k): int(v) for k, v in kinds.items()} })")

    def near(self, point: Sequence[float], k: int = 16) -> np.ndarray:
        """Indices of the ``k`` detections nearest to ``point`` in the 2-D view."""
        d = np.linalg.norm(self.xy - np.asarray(point, dtype=np.float64)[None], axis=1)
        return np.argsort(d, kind="stable")[:k]

    def within(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices of the detections inside a rectangle of the 2-D view (a selected cluster)."""
        x, y = self.xy[:, 0], self.xy[:, 1]
        return np.nonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))[0]

    def _labels(self, color_by: str):
        if color_by == "pred":
            return self.pred_classes, lambda v: class_name(self.class_names, int(v))
        if color_by == "true":
            return self.true_classes, lambda v: "no object" if v < 0 else class_name(self.class_names, int(v))
        if color_by == "error":
            order = {k: i for i, k in enumerate(("tp",) + ERROR_TYPES + ("ignored",))}
            return np.array([order[k] for k in self.kinds]), lambda v: list(order)[int(v)]
        raise ValueError(f"color_by must be 'pred', 'true' or 'error', got {color_by!r}.")

    def plot(self, color_by: str = "pred", *, selected: Optional[Sequence[int]] = None):
        """The 2-D view as a PlotImage, coloured by predicted class, true class or error type;
        ``selected`` indices are ringed. ``drawn["groups"]``: label -> count."""
        from workbench.vis import PlotImage

        values, label = self._labels(color_by)
        fig = PlotImage(1, 1, panel=4.0)
        ax = fig.axes[0]
        fig.drawn["groups"] = {}
        for i, v in enumerate(np.unique(values)):
            sel = values == v
            ax.scatter(self.xy[sel, 0], self.xy[sel, 1], s=6, color=_COLOURS[i % len(_COLOURS)],
                       label=label(v))
            fig.drawn["groups"][label(v)] = int(sel.sum())
        if selected is not None and len(selected):
            sel = np.asarray(selected)
            ax.scatter(self.xy[sel, 0], self.xy[sel, 1], s=30, facecolors="none", edgecolors="black",
                       linewidths=0.8)
        ax.legend(fontsize=6, markerscale=2, loc="best")
        ax.set_title(f"box-head embeddings, PCA (by {color_by})", fontsize=8)
        ax.tick_params(labelsize=6)
        return fig

    def gallery(self, indices: Sequence[int], *, size: int = 64, ncols: int = 8):
        """The crops of detections ``indices`` (original px) in a grid, labelled with class,
        score and error type; a VisImage-like PlotImage. ``drawn["indices"]`` the ones shown."""
        from PIL import Image as PILImage

        from workbench.vis import PlotImage
        from workbench.vis.features import _crop

        indices = [int(i) for i in indices]
        n = max(len(indices), 1)
        nrows, ncols = -(-n // ncols), min(ncols, n)
        fig = PlotImage(nrows, ncols, panel=1.3)
        fig.drawn["indices"] = indices
        cache: Dict[Any, np.ndarray] = {}
        for ax in fig.axes:
            ax.set_axis_off()
        for ax, i in zip(fig.axes, indices):
            img_id = self.image_ids[i].item()
            if img_id not in cache:
                cache[img_id] = np.asarray(PILImage.open(self.file_names[img_id]).convert("RGB"))
            crop, _ = _crop(cache[img_id], self.boxes[i])  # at least 1 x 1 px inside the image
            crop = PILImage.fromarray(crop).resize((size, size), PILImage.BILINEAR)
            ax.imshow(np.asarray(crop))
            ax.set_title(f"{class_name(self.class_names, int(self.pred_classes[i])).split(' (')[0]} "
                         f"{self.scores[i]:.2f} {self.kinds[i]}", fontsize=5)
        return fig


def detection_embeddings(evaluator, predictor, *, breakdown: Optional[ErrorBreakdown] = None,
                         image_ids: Optional[Sequence[Any]] = None, min_score: float = 0.0,
                         task: str = "bbox") -> DetectionEmbeddings:
    """The embeddings of the evaluated detections (see the module docstring).

    Args:
        evaluator: the ``COCOEvaluator`` that evaluated them; ``predictor`` the
            ``DefaultPredictor`` whose model made them.
        breakdown: its error breakdown, for the error types (else "tp" / "fp").
        image_ids: only these images (default: all evaluated).
        min_score: only detections scoring at least this.
    """
    import torch

    from workbench import inspect as wi
    from workbench.data import DatasetCatalog, MetadataCatalog

    results = evaluator.per_image(task, 0.5 if breakdown is None else breakdown.iou_thresh)
    ids = list(results) if image_ids is None else list(image_ids)
    dicts = {d["image_id"]: d for d in DatasetCatalog.get(evaluator.dataset_name)}
    cols: Dict[str, list] = {k: [] for k in ("emb", "img", "row", "box", "score", "cls", "true", "kind")}
    for img in ids:
        if img not in results or img not in dicts:
            raise KeyError(f"image id {img!r} was not evaluated on {evaluator.dataset_name!r}.")
        r = results[img]
        keep = [d for d in range(len(r.dt_ids)) if r.scores[d] >= min_score]
        if not keep:
            continue
        with torch.no_grad():
            tr = wi.trace(predictor, dicts[img], detections_only=True)
        p = tr.provenance(0, anchors=False)
        if p.embeddings is None:
            raise ValueError(f"The trace of image {img!r} has no box-head embeddings"
                             f"{tr.why_unavailable('box')}.")
        kinds = breakdown.errors.get(img) if breakdown is not None else None
        gt_cls = dict(zip(r.gt_ids.tolist(), r.gt_categories.tolist()))
        iou = _ious(r, lambda r_, w: (r_.boxes if w == "dt" else r_.gt_boxes).tolist())
        for d in keep:
            _, row = evaluator.output_row(int(r.dt_ids[d]))
            if abs(float(p.scores[row]) - float(r.scores[d])) > 1e-5:
                raise ValueError(f"image {img!r}: the trace's detection {row} scores "
                                 f"{float(p.scores[row]):.4f}, the evaluated one {r.scores[d]:.4f}: "
                                 "not the evaluated pass (another model or other settings?).")
            if r.ignored[d]:
                kind = "ignored"
            elif r.tp[d]:
                kind = "tp"
            else:
                kind = kinds[d] if kinds and kinds[d] else "fp"
            true = gt_cls.get(int(r.matched_gt[d]), -1)
            if true < 0 and iou.shape[1] and iou[d].max() >= BACKGROUND_IOU:
                true = int(r.gt_categories[int(iou[d].argmax())])
            cols["emb"].append(p.embeddings[row].float().cpu().numpy())
            cols["img"].append(img)
            cols["row"].append(row)
            cols["box"].append(p.boxes[row].float().cpu().numpy())
            cols["score"].append(float(r.scores[d]))
            cols["cls"].append(int(r.categories[d]))
            cols["true"].append(true)
            cols["kind"].append(kind)
    if not cols["emb"]:
        raise ValueError(f"No detection scores at least {min_score} on the images asked for.")
    emb = np.stack(cols["emb"])
    return DetectionEmbeddings(
        embeddings=emb, xy=pca_2d(emb), image_ids=np.array(cols["img"]), rows=np.array(cols["row"]),
        boxes=np.stack(cols["box"]), scores=np.array(cols["score"]), pred_classes=np.array(cols["cls"]),
        true_classes=np.array(cols["true"]), kinds=np.array(cols["kind"]),
        file_names={i: dicts[i]["file_name"] for i in ids},
        class_names=MetadataCatalog.get(evaluator.dataset_name).get("thing_classes", None))

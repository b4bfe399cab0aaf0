"""The drawings of a detector's own stages and of its errors, as methods of :class:`Visualizer`:
the RPN's proposals by objectness, the anchors of one feature-map cell, and ground truth beside
predictions (``compare``). Kept apart from the generic drawing (boxes, masks, keypoints,
segmentations) in ``visualizer.py``; they use its primitives (``draw_boxes``, ``_draw_labels``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from . import colors as C
from .inputs import _fields, _np
from .matching import _match_gt_pred
from .vis_image import VisImage

__all__ = ["ModelStageDrawing"]


class ModelStageDrawing:
    """Mixin of :class:`~workbench.vis.Visualizer` (``self`` is the visualiser)."""

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

        Predictions are matched to the ground truth as the trace matches detections
        (:func:`~.matching.classify_predictions`): greedily by score, each taking the untaken
        object of its class with the highest IoU >= ``iou_thresh`` (a true positive). A
        prediction that is not one but overlaps (IoU >= ``iou_thresh``) an object of another
        class is a mislabel, "mislabel (gt: <name>)"; the object, if no prediction of its class
        took it, reads "<name> mislabelled as <predicted name>". Every other prediction is a
        false positive, "FP" ("FP duplicate" when it overlaps an object of its class that a
        higher-scored prediction took).

        Args:
            gt: ``Instances`` with ``gt_boxes`` / ``gt_classes`` or a dataset dict (its crowd
                annotations left out; gt indices count the others).
            pred: ``Instances`` with ``pred_boxes``, ``scores``, ``pred_classes``.
            match_classes: only match boxes of the same class (False: any class matches, so
                nothing is a mislabel).

        Returns:
            A new :class:`VisImage` (the two panels side by side; every label stays inside its
            own panel). Its ``drawn`` holds

            - ``"matches"``: ``[(gt_index, pred_index, iou)]`` true positives (pred_index a row
              of ``pred``), in descending score;
            - ``"mislabels"``: ``[(gt_index, pred_index, iou)]`` the mislabelled predictions,
              in descending score;
            - ``"missed"``: gt indices with no true positive (mislabelled objects included);
            - ``"false_positives"``: the kept rows neither true positive nor mislabel;
            - ``"kept"``: the rows of ``pred`` drawn (by ``score_thresh`` and ``classes``).
        """
        cmp = _match_gt_pred(gt, pred, iou_thresh=iou_thresh, score_thresh=score_thresh,
                             classes=classes, match_classes=match_classes, box_scale=box_scale)
        g_boxes, g_cls, p_scores, p_cls, rows = cmp.g_boxes, cmp.g_cls, cmp.p_scores, cmp.p_cls, cmp.rows

        H, W = self.img.shape[:2]
        canvas = np.full((H, 2 * W + gap, 3), 255, dtype=np.uint8)
        canvas[:, :W], canvas[:, W + gap:] = self.img, self.img
        side = type(self)(canvas, self.metadata, scale=self.scale, font_size=self.font_size)
        matched_gt = {g for g, _, _ in cmp.matches}
        mislabelled_as = {}  # gt index -> the class of its highest-scored mislabel
        for g, j, _ in cmp.mislabels:
            mislabelled_as.setdefault(g, p_cls[j])
        g_text = []
        for i, c in enumerate(g_cls):
            t = self.class_name(c)
            if i in mislabelled_as and i not in matched_gt:
                t += f" mislabelled as {self.class_name(mislabelled_as[i])}"
            elif i not in matched_gt:
                t += " missed"
            g_text.append(t)
        g_colors = C.instance_colors(g_cls, len(g_boxes), self.metadata)
        side.draw_boxes(g_boxes, g_colors)
        side._draw_labels(g_text, g_boxes, g_colors, panel=(0, 0, W, H))

        shifted = cmp.p_boxes[rows] + np.array([W + gap, 0, W + gap, 0])
        p_colors = C.instance_colors(None if p_cls is None else p_cls[rows], len(rows), self.metadata)
        p_text = []
        for j in rows:
            t = self.class_name(p_cls[j]) if p_cls is not None else ""
            if p_scores is not None:
                t += f" {p_scores[j] * 100:.0f}%"
            m = cmp.kinds[int(j)]
            if m.kind == "tp":
                t += f" IoU {m.iou:.2f}"
            elif m.kind == "mislabel":
                t += f" mislabel (gt: {self.class_name(m.gt_class)})"
            else:
                t += " FP duplicate" if m.kind == "duplicate" else " FP"
            p_text.append(t.strip())
        side.draw_boxes(shifted, p_colors)
        order = None if p_scores is None else np.argsort(-p_scores[rows], kind="stable")
        side._draw_labels(p_text, shifted, p_colors, order, panel=(W + gap, 0, 2 * W + gap, H))
        out = side.output
        out.drawn["matches"] = cmp.matches
        out.drawn["mislabels"] = cmp.mislabels
        out.drawn["missed"] = [i for i in range(len(g_boxes)) if i not in matched_gt]
        out.drawn["false_positives"] = [int(j) for j in rows
                                        if cmp.kinds[int(j)].kind not in ("tp", "mislabel")]
        out.drawn["kept"] = rows
        return out

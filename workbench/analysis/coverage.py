"""Anchor and proposal coverage: could the RPN have found each object at all?

For every ground-truth object of a dataset, the best anchor IoU on every level and whether
the RPN kept a proposal on it, read from the trace of the pass that was scored; summarised by
object size (COCO's small / medium / large areas), so that anchor sizes, ratios and RPN
settings can be judged::

    cov = anchor_coverage(predictor, DatasetCatalog.get("shapes_val")[:50])
    print(cov.summary())        # per size: objects, best-anchor IoU, share with an anchor / proposal

Boxes are compared in input px (the network's), areas are those of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from workbench.structures import Boxes, pairwise_iou

__all__ = ["AnchorCoverage", "anchor_coverage", "SIZE_RANGES"]

SIZE_RANGES = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}


@dataclass
class AnchorCoverage:
    """Per object (G of them over the dataset):

    Attributes:
        image_ids: (G,); ``classes`` (G,); ``areas`` (G,) in original px.
        level_names: the RPN's levels; ``anchor_iou`` (G, L) the best anchor IoU on each.
        best_anchor_iou: (G,) over all levels; ``best_level`` (G,) where it is.
        proposal_iou: (G,) the best IoU of a proposal the ROI heads got.
        iou_thresh: the threshold the summary uses for "has an anchor / a proposal".
    """

    image_ids: np.ndarray
    classes: np.ndarray
    areas: np.ndarray
    level_names: List[str]
    anchor_iou: np.ndarray
    best_anchor_iou: np.ndarray
    best_level: np.ndarray
    proposal_iou: np.ndarray
    iou_thresh: float

    def by_size(self) -> Dict[str, Dict[str, float]]:
        """Size -> {"objects", "mean_best_anchor_iou", "with_anchor", "with_proposal", and the
        share of each level among the best anchors ("p2", ...)}."""
        out = {}
        for name, (lo, hi) in {"all": (0.0, 1e10), **SIZE_RANGES}.items():
            sel = (self.areas >= lo) & (self.areas < hi)
            n = int(sel.sum())
            row: Dict[str, float] = {"objects": n}
            if n:
                row["mean_best_anchor_iou"] = float(self.best_anchor_iou[sel].mean())
                row["with_anchor"] = float((self.best_anchor_iou[sel] >= self.iou_thresh).mean())
                row["with_proposal"] = float((self.proposal_iou[sel] >= self.iou_thresh).mean())
                for i, lvl in enumerate(self.level_names):
                    row[lvl] = float((self.best_level[sel] == i).mean())
            out[name] = row
        return out

    def summary(self) -> str:
        lines = [f"{'size':<7}{'objects':>8}{'best anchor IoU':>17}{'anchor>=t':>11}"
                 f"{'proposal>=t':>13}   best level (share)  [t = {self.iou_thresh}]"]
        for name, r in self.by_size().items():
            if not r["objects"]:
                lines.append(f"{name:<7}{0:>8}")
                continue
            levels = ", ".join(f"{lvl} {r[lvl]:.2f}" for lvl in self.level_names if r[lvl] > 0)
            lines.append(f"{name:<7}{r['objects']:>8}{r['mean_best_anchor_iou']:>17.2f}"
                         f"{r['with_anchor']:>11.2f}{r['with_proposal']:>13.2f}   {levels}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "AnchorCoverage(\n" + self.summary() + "\n)"


def anchor_coverage(predictor, dataset_dicts: Sequence[Dict[str, Any]], *,
                    iou_thresh: float = 0.5) -> AnchorCoverage:
    """The coverage of the objects of ``dataset_dicts`` (see the module docstring).

    Raises:
        ValueError: if the model has no RPN record (a dense or custom proposal generator).
    """
    from workbench import inspect as wi

    cols: Dict[str, list] = {k: [] for k in ("img", "cls", "area", "aiou", "piou")}
    levels: List[str] = []
    for d in dataset_dicts:
        with torch.no_grad():
            tr = wi.trace(predictor, d, detections_only=True)
        if tr.rpn is None:
            raise ValueError(f"The trace of {d.get('file_name')} has no RPN record"
                             f"{tr.why_unavailable('rpn')}: anchor coverage needs an RPN.")
        levels = list(tr.rpn.in_features)
        gt = tr.ground_truth[0]
        if gt is None or len(gt) == 0:
            continue
        keep = ~gt.crowd
        boxes = tr.preprocess.to_input(gt.boxes[keep].to(tr.preprocess.images.tensor.device), 0)
        gtb = Boxes(boxes)
        zeros = boxes.new_zeros(len(gtb))
        per_level = torch.stack([pairwise_iou(gtb, a).max(dim=1).values if len(a) else zeros
                                 for a in tr.rpn.anchors], dim=1)  # (G, L)
        props = tr.proposals[0].proposal_boxes
        piou = pairwise_iou(gtb, props).max(dim=1).values if len(props) else zeros
        wh = (gt.boxes[keep, 2:] - gt.boxes[keep, :2]).clamp(min=0)
        cols["img"] += [d.get("image_id")] * int(keep.sum())
        cols["cls"].append(gt.classes[keep].numpy())
        cols["area"].append((wh[:, 0] * wh[:, 1]).numpy())
        cols["aiou"].append(per_level.cpu().numpy())
        cols["piou"].append(piou.cpu().numpy())
    if not cols["aiou"]:
        raise ValueError("No ground-truth objects in the dataset dicts given.")
    aiou = np.concatenate(cols["aiou"]).astype(np.float64)
    return AnchorCoverage(
        image_ids=np.array(cols["img"], dtype=object), classes=np.concatenate(cols["cls"]),
        areas=np.concatenate(cols["area"]).astype(np.float64), level_names=levels, anchor_iou=aiou,
        best_anchor_iou=aiou.max(axis=1), best_level=aiou.argmax(axis=1),
        proposal_iou=np.concatenate(cols["piou"]).astype(np.float64), iou_thresh=float(iou_thresh))

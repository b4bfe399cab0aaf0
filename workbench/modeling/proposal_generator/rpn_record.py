"""What the RPN computed on one forward: filled by ``RPN.forward`` and ``RPN.predict_proposals``.

Shape legend: N images; L levels; A anchors per location; Hl x Wl level l; Ci candidates and
Ri proposals of image i. Boxes are XYXY in pixels of the resized input image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from workbench.structures import Boxes, Instances

from ..recording import SelectionSettings
from .proposal_utils import ProposalSelection

__all__ = ["RPNRecord", "RPNSelectionRecord"]


@dataclass
class RPNSelectionRecord:
    """Put by ``RPN.predict_proposals``: the decoded anchors and what the selection kept.

    Attributes:
        decoded: L tensors (N, Hl*Wl*A, 4), every anchor with its deltas applied (unclipped).
        selections: per image, the :class:`ProposalSelection` of ``find_top_rpn_proposals``.
        settings: nms_thresh, pre_nms_topk, topk (post-NMS) and min_box_size as used.
        proposals: per image, the proposals the selection returned (``RPN.forward`` keeps the
            selection only if they are the ones it returns).
    """

    decoded: List[Tensor]
    selections: List[ProposalSelection]
    settings: SelectionSettings
    proposals: List[Instances]


@dataclass
class RPNRecord:
    """Everything the RPN computed (put by ``RPN.forward``).

    Attributes:
        in_features: the feature names the RPN runs on, one per level.
        anchors: L ``Boxes`` of Hl*Wl*A anchors (the same for every image).
        objectness: L tensors (N, Hl*Wl*A), objectness logits; row order (y, x, anchor).
        deltas: L tensors (N, Hl*Wl*A, 4) anchor deltas.
        proposals: per image, what the ROI heads receive (``proposal_boxes``,
            ``objectness_logits``, decreasing objectness).
        image_sizes: (hi, wi) per image, the clipping bounds.
        selection: the record of ``predict_proposals``; None if a subclass replaced it
            without putting one, or changed its proposals (then their anchors are unknown).
    """

    in_features: List[str]
    anchors: List[Boxes]
    objectness: List[Tensor]
    deltas: List[Tensor]
    proposals: List[Instances]
    image_sizes: List[Tuple[int, int]]
    selection: Optional[RPNSelectionRecord] = None

    @property
    def decoded(self) -> Optional[List[Tensor]]:
        return None if self.selection is None else self.selection.decoded

    @property
    def settings(self) -> Optional[SelectionSettings]:
        return None if self.selection is None else self.selection.settings

    def _setting(self, name: str):
        return None if self.selection is None else self.selection.settings.values[name]

    @property
    def nms_thresh(self) -> Optional[float]:
        return self._setting("nms_thresh")

    @property
    def pre_nms_topk(self) -> Optional[int]:
        return self._setting("pre_nms_topk")

    @property
    def post_nms_topk(self) -> Optional[int]:
        return self._setting("topk")

    @property
    def min_box_size(self) -> Optional[float]:
        return self._setting("min_box_size")

    @property
    def candidates(self) -> List[Instances]:
        """Per image, the proposals NMS was run on (fields ``proposal_boxes``,
        ``objectness_logits``, ``level`` and ``anchor_index``); empty if unknown."""
        if self.selection is None:
            return [Instances(s) for s in self.image_sizes]
        return [s.candidates for s in self.selection.selections]

    @property
    def proposal_candidate(self) -> List[Tensor]:
        """Per image, (Ri,) row of ``candidates`` each proposal is (-1 if unknown)."""
        if self.selection is None:
            return [torch.full((len(p),), -1, dtype=torch.int64) for p in self.proposals]
        return [s.proposal_candidate for s in self.selection.selections]

    def _of_proposals(self, image: int, field: str) -> Tensor:
        if self.selection is None:
            return torch.full((len(self.proposals[image]),), -1, dtype=torch.int64)
        sel = self.selection.selections[image]
        return sel.candidates.get(field)[sel.proposal_candidate]

    def proposal_level(self, image: int = 0) -> Tensor:
        """(Ri,) level (index into ``in_features``) of each proposal of ``image``, -1 if unknown."""
        return self._of_proposals(image, "level")

    def proposal_anchor(self, image: int = 0) -> Tensor:
        """(Ri,) anchor row (within its level) of each proposal of ``image``, -1 if unknown."""
        return self._of_proposals(image, "anchor_index")

    def __repr__(self) -> str:
        cand = "" if self.selection is None else f", candidates={[len(c) for c in self.candidates]}"
        shapes = [tuple(o.shape) for o in self.objectness]
        return (f"RPNRecord(levels={self.in_features}, anchors={[len(a) for a in self.anchors]}, "
                f"objectness={shapes}{cand}, proposals={[len(p) for p in self.proposals]})")

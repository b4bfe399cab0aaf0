"""Assign each prediction (anchor, proposal) to at most one ground-truth element.

Shape legend:
    M: number of ground-truth elements.
    N: number of predictions (anchors or proposals).

Semantics follow detectron2 0.6 (``detectron2/modeling/matcher.py``).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from workbench.layers import nonzero_tuple

__all__ = ["Matcher"]


class Matcher:
    """Match predictions to ground truth by thresholding a (M, N) quality matrix (e.g. IoU).

    Each prediction gets the ground truth it overlaps most (its "match") and a label read off
    the interval its best quality falls in. With ``thresholds=[0.3, 0.7]`` and
    ``labels=[0, -1, 1]``: best IoU < 0.3 -> 0 (negative), 0.3 <= IoU < 0.7 -> -1 (ignored),
    IoU >= 0.7 -> 1 (positive). Each ground truth may be matched by any number of predictions.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int],
                 allow_low_quality_matches: bool = False) -> None:
        """
        Args:
            thresholds: increasing, positive boundaries between the quality intervals. Each
                interval is closed on the left, open on the right.
            labels: one label per interval (``len(thresholds) + 1`` of them), each in
                {-1: ignore, 0: negative, 1: positive}.
            allow_low_quality_matches: also label positive, for every ground truth, the
                predictions whose quality with it is the highest (ties included), even when
                that quality is below the top threshold (case (i) of the RPN assignment in
                Sec. 3.1.2 of Faster R-CNN, https://arxiv.org/abs/1506.01497).
        """
        thresholds = list(thresholds)
        labels = list(labels)
        if len(thresholds) == 0 or thresholds[0] <= 0:
            raise ValueError(
                f"Matcher thresholds must be positive and non-empty, got {thresholds}."
            )
        thresholds.insert(0, -float("inf"))
        thresholds.append(float("inf"))
        if not all(low <= high for low, high in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be increasing, got {thresholds[1:-1]}.")
        if not all(label in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher labels must be in {{-1, 0, 1}}, got {labels}.")
        if len(labels) != len(thresholds) - 1:
            raise ValueError(
                f"Matcher needs len(thresholds) + 1 = {len(thresholds) - 1} labels, got {labels}."
            )
        self.thresholds: List[float] = thresholds
        self.labels: List[int] = labels
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            match_quality_matrix: (M, N) qualities between M ground-truth and N predicted
                elements, all >= 0.

        Returns:
            matches: int64 (N,), index in [0, M) of the ground truth matched to each prediction
                (0 when M == 0; meaningful only where the label is 1).
            match_labels: int8 (N,), the label of each prediction. When M == 0 (no ground
                truth), every prediction gets ``labels[0]`` (usually 0: negative).
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                "Expected match_quality_matrix of shape (M, N), got "
                f"{tuple(match_quality_matrix.shape)}."
            )
        if match_quality_matrix.numel() == 0:
            default_matches = match_quality_matrix.new_full(
                (match_quality_matrix.size(1),), 0, dtype=torch.int64
            )
            # No ground truth: every quality is taken to be 0, hence labels[0]. To ignore such
            # predictions instead, use e.g. labels=[-1, 0, -1, 1] with matching thresholds.
            default_match_labels = match_quality_matrix.new_full(
                (match_quality_matrix.size(1),), self.labels[0], dtype=torch.int8
            )
            return default_matches, default_match_labels

        if not torch.all(match_quality_matrix >= 0):
            raise ValueError("Matcher expects match qualities >= 0.")

        # Best ground truth for each prediction: max over dim 0.
        matched_vals, matches = match_quality_matrix.max(dim=0)  # (M, N) -> (N,), (N,)

        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            low_high = (matched_vals >= low) & (matched_vals < high)
            match_labels[low_high] = label

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(match_labels, match_quality_matrix)

        return matches, match_labels

    def set_low_quality_matches_(self, match_labels: torch.Tensor,
                                 match_quality_matrix: torch.Tensor) -> None:
        """Label 1, in place, every prediction that is the best one for some ground truth.

        For each ground truth, all predictions reaching its highest quality (ties included)
        become positive. ``matches`` is left as computed by the max over ground truths, as in
        detectron2: a prediction tied for two ground truths keeps its own best match.
        Note that a ground truth overlapping nothing has highest quality 0, which makes every
        prediction with quality 0 to it positive (detectron2 behaves the same way).
        """
        # For each gt, the highest quality any prediction reaches.
        highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)  # (M, N) -> (M,)
        # All (gt, prediction) pairs reaching it, ties included.
        _, pred_inds_with_highest_quality = nonzero_tuple(
            match_quality_matrix == highest_quality_foreach_gt[:, None]
        )
        match_labels[pred_inds_with_highest_quality] = 1

"""Random subsampling of positive / negative training examples.

Shape legend:
    N: number of labelled elements (anchors or proposals) of one image.

Semantics follow detectron2 0.6 (``detectron2/modeling/sampling.py``), including the order of
the random draws, so that a seeded run selects the same elements as detectron2.
"""

from __future__ import annotations

from typing import Tuple

import torch

from workbench.layers import nonzero_tuple

__all__ = ["subsample_labels"]


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float,
                     bg_label: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw at most ``num_samples`` elements, as many positives as allowed, negatives for the rest.

    The number of positives drawn is ``min(#positives, int(positive_fraction * num_samples))``;
    the remaining slots go to negatives, ``min(#negatives, num_samples - #positives drawn)``.

    Randomness: exactly two ``torch.randperm`` calls, first over the positives then over the
    negatives, on the device of ``labels`` (as detectron2), so results depend only on the
    torch RNG state of that device.

    Args:
        labels: (N,) labels: -1 ignore, ``bg_label`` background, anything else foreground.
        num_samples: total number of elements to draw.
        positive_fraction: largest fraction of ``num_samples`` given to positives.
        bg_label: the background label (0 for RPN, the number of classes for ROI heads).

    Returns:
        pos_idx, neg_idx: 1-D int64 indices into ``labels`` of the drawn positives and
        negatives, in random order; together at most ``num_samples`` long.
    """
    if labels.dim() != 1:
        raise ValueError(f"Expected labels of shape (N,), got {tuple(labels.shape)}.")
    positive = nonzero_tuple((labels != -1) & (labels != bg_label))[0]
    negative = nonzero_tuple(labels == bg_label)[0]

    num_pos = int(num_samples * positive_fraction)
    num_pos = min(positive.numel(), num_pos)  # not enough positives
    num_neg = num_samples - num_pos
    num_neg = min(negative.numel(), num_neg)  # not enough negatives

    # Positives first, then negatives: the order of the RNG draws matters for reproducibility.
    perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]

    pos_idx = positive[perm1]
    neg_idx = negative[perm2]
    return pos_idx, neg_idx

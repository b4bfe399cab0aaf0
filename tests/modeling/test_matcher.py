"""Matcher: thresholds, labels, low-quality matches with ties, empty ground truth."""

import pytest
import torch

from workbench.modeling.matcher import Matcher


def _iou():
    # 2 ground truths x 6 predictions.
    return torch.tensor([
        [0.10, 0.75, 0.50, 0.30, 0.00, 0.20],
        [0.20, 0.10, 0.60, 0.29, 0.00, 0.40],
    ])


def test_thresholds_and_labels():
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)
    matches, labels = matcher(_iou())
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8
    # Best gt per prediction: values .2 .75 .6 .3 0 .4 (a tie at 0 picks gt 0).
    assert matches.tolist() == [1, 0, 1, 0, 0, 1]
    # < 0.3 -> 0, [0.3, 0.7) -> -1, >= 0.7 -> 1; 0.3 itself is in the middle interval.
    assert labels.tolist() == [0, 1, -1, -1, 0, -1]


def test_low_quality_matches_include_ties():
    iou = _iou()
    iou[1, 5] = 0.6  # gt 1 now has its best quality 0.6 on predictions 2 and 5 (a tie)
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(iou)
    # gt 0's best is prediction 1 (already positive); gt 1's best are predictions 2 and 5.
    assert labels.tolist() == [0, 1, 1, -1, 0, 1]
    # Matches are not changed by the low-quality rule.
    assert matches.tolist() == [1, 0, 1, 0, 0, 1]


def test_low_quality_match_of_gt_without_overlap_marks_all_zero_predictions():
    # detectron2 behaviour: a gt that overlaps nothing has best quality 0, and every
    # prediction with quality 0 to it is a "tie" and becomes positive.
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.0]])
    _, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(iou)
    assert labels.tolist() == [1, 1, 1]


def test_empty_ground_truth():
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(torch.zeros(0, 5))
    assert matches.tolist() == [0] * 5 and matches.dtype == torch.int64
    assert labels.tolist() == [0] * 5 and labels.dtype == torch.int8
    # labels[0] is used, whatever it is.
    _, labels = Matcher([0.5], [-1, 1])(torch.zeros(0, 3))
    assert labels.tolist() == [-1, -1, -1]
    # No predictions at all.
    matches, labels = matcher(torch.zeros(2, 0))
    assert matches.shape == (0,) and labels.shape == (0,)


def test_single_threshold_roi_heads_style():
    matches, labels = Matcher([0.5], [0, 1])(torch.tensor([[0.5, 0.49], [0.2, 0.3]]))
    assert matches.tolist() == [0, 0] and labels.tolist() == [1, 0]


def test_bad_configuration_is_loud():
    with pytest.raises(ValueError, match="positive"):
        Matcher([0.0, 0.5], [0, -1, 1])
    with pytest.raises(ValueError, match="increasing"):
        Matcher([0.7, 0.3], [0, -1, 1])
    with pytest.raises(ValueError, match="labels"):
        Matcher([0.3, 0.7], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        Matcher([0.3, 0.7], [0, 2, 1])
    with pytest.raises(ValueError, match=r"\(M, N\)"):
        Matcher([0.5], [0, 1])(torch.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        Matcher([0.5], [0, 1])(torch.tensor([[-0.1, 0.5]]))


def test_thresholds_list_is_not_modified():
    thresholds = [0.3, 0.7]
    Matcher(thresholds, [0, -1, 1])
    assert thresholds == [0.3, 0.7]

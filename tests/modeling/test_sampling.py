"""subsample_labels: counts, fall-backs and the exact order of random draws."""

import torch

from workbench.modeling.sampling import subsample_labels


def _labels(num_pos=10, num_neg=20, num_ignore=5):
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(num_ignore)])
    g = torch.Generator().manual_seed(123)
    return labels[torch.randperm(len(labels), generator=g)].long()


def test_counts_respect_positive_fraction():
    labels = _labels()
    pos, neg = subsample_labels(labels, num_samples=8, positive_fraction=0.25, bg_label=0)
    assert len(pos) == 2 and len(neg) == 6
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 2 and len(set(neg.tolist())) == 6


def test_not_enough_positives_fills_with_negatives():
    labels = _labels(num_pos=2, num_neg=20)
    pos, neg = subsample_labels(labels, num_samples=10, positive_fraction=0.5, bg_label=0)
    assert len(pos) == 2 and len(neg) == 8


def test_not_enough_of_anything_takes_all():
    labels = _labels(num_pos=3, num_neg=4)
    pos, neg = subsample_labels(labels, num_samples=1000, positive_fraction=0.5, bg_label=0)
    assert sorted(pos.tolist()) == torch.nonzero(labels == 1).flatten().tolist()
    assert sorted(neg.tolist()) == torch.nonzero(labels == 0).flatten().tolist()


def test_other_background_label():
    # ROI-heads style: classes 0..3 are foreground, 4 is background.
    labels = torch.tensor([4, 0, 3, 4, -1, 4, 2])
    pos, neg = subsample_labels(labels, num_samples=4, positive_fraction=0.5, bg_label=4)
    assert sorted(pos.tolist()) in ([1, 2], [1, 6], [2, 6])
    assert set(neg.tolist()) <= {0, 3, 5} and len(neg) == 2


def test_random_draws_match_two_randperm_calls():
    labels = _labels()
    positive = torch.nonzero(labels == 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    torch.manual_seed(7)
    pos, neg = subsample_labels(labels, num_samples=8, positive_fraction=0.25, bg_label=0)
    # detectron2 draws randperm over positives first, then over negatives.
    torch.manual_seed(7)
    perm1 = torch.randperm(len(positive))[:2]
    perm2 = torch.randperm(len(negative))[:6]
    assert pos.tolist() == positive[perm1].tolist()
    assert neg.tolist() == negative[perm2].tolist()
    # And the same seed gives the same sample.
    torch.manual_seed(7)
    pos2, neg2 = subsample_labels(labels, num_samples=8, positive_fraction=0.25, bg_label=0)
    assert torch.equal(pos, pos2) and torch.equal(neg, neg2)

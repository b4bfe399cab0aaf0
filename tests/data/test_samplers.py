"""Training samplers: seeded as detectron2 seeds them (same generator use, same order for a
seed), sharded by rank, and the loader seeded from cfg.SEED; GroupedBatchSampler."""

import itertools

import torch
from torch.utils.data import SequentialSampler

from workbench.config import get_cfg
from workbench.data import DatasetCatalog, build_detection_train_loader
from workbench.data.samplers import (
    GroupedBatchSampler,
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from workbench.utils import comm


def _reference_order(size, seed, n):
    """detectron2's TrainingSampler, re-derived: one generator seeded once, one randperm per epoch."""
    g = torch.Generator()
    g.manual_seed(seed)
    out = []
    while len(out) < n:
        out.extend(torch.randperm(size, generator=g).tolist())
    return out[:n]


def test_training_sampler_seed_42_matches_detectron2_algorithm():
    got = list(itertools.islice(iter(TrainingSampler(10, seed=42)), 25))
    assert got == _reference_order(10, 42, 25)
    assert sorted(got[:10]) == list(range(10))  # the first epoch is a permutation
    assert got[:10] != got[10:20]  # and the next epoch another one


def test_training_sampler_shards_by_rank(monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    got = list(itertools.islice(iter(TrainingSampler(10, seed=42)), 10))
    assert got == _reference_order(10, 42, 20)[1::2]


def test_training_sampler_without_shuffle():
    assert list(itertools.islice(iter(TrainingSampler(3, shuffle=False, seed=0)), 7)) == [0, 1, 2, 0, 1, 2, 0]


def test_repeat_factor_sampler_matches_detectron2_algorithm():
    factors = torch.tensor([1.0, 2.5, 1.2])
    got = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=7)), 12))
    g = torch.Generator()
    g.manual_seed(7)
    expected = []
    while len(expected) < 12:
        rands = torch.rand(3, generator=g)
        reps = torch.trunc(factors) + (rands < factors - torch.trunc(factors)).float()
        indices = torch.repeat_interleave(torch.arange(3), reps.long())
        expected.extend(indices[torch.randperm(len(indices), generator=g)].tolist())
    assert got == expected[:12]


def test_random_subset_sampler():
    s = RandomSubsetTrainingSampler(10, 0.5, seed_shuffle=1, seed_subset=2)
    g = torch.Generator()
    g.manual_seed(2)
    subset = torch.randperm(10, generator=g)[:5]
    g.manual_seed(1)
    expected = subset[torch.randperm(5, generator=g)].tolist()
    assert list(itertools.islice(iter(s), 5)) == expected


def test_grouped_batch_sampler_keeps_order_within_groups():
    groups = [0, 1, 0, 1, 0, 0, 1]
    batches = [b for b in GroupedBatchSampler(SequentialSampler(range(7)), groups, 2)]  # len() raises
    assert batches == [[0, 2], [1, 3], [4, 5]]  # index 6 waits for a partner forever


def _register_toy(name, n):
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, lambda: [
            {"file_name": f"{i}.jpg", "image_id": i, "height": 4, "width": 6,
             "annotations": [{"iscrowd": 0, "category_id": 0, "bbox": [0, 0, 1, 1], "bbox_mode": 1}]}
            for i in range(n)])


def _first_ids(seed, n_batches=6):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("sampler_toy_10",)
    cfg.SEED = seed
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    cfg.DATALOADER.NUM_WORKERS = 0
    loader = build_detection_train_loader(cfg, mapper=lambda d: d["image_id"])
    return [i for batch in itertools.islice(iter(loader), n_batches) for i in batch]


def test_train_loader_order_is_fixed_by_cfg_seed():
    _register_toy("sampler_toy_10", 10)
    first = _first_ids(42)
    assert first == _first_ids(42), "two loaders from the same cfg.SEED gave different orders"
    assert first == _reference_order(10, 42, 12)
    assert _first_ids(43) != first

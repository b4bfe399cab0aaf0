"""Samplers aware of ``torch.distributed``: every rank draws from the same seeded stream of
indices and keeps every ``world_size``-th one, so ranks see disjoint images and the whole run
is reproducible from one seed."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.utils.data.sampler import Sampler

from workbench.utils import comm

__all__ = ["TrainingSampler", "InferenceSampler", "RandomSubsetTrainingSampler", "RepeatFactorTrainingSampler"]


def _seed_or_shared(seed: Optional[int]) -> int:
    # All ranks must use the same seed: rank 0 draws it when none is given.
    return int(comm.shared_random_seed() if seed is None else seed)


class TrainingSampler(Sampler):
    """An infinite stream of indices in ``[0, size)``: epoch after epoch, each a permutation
    drawn from a generator seeded with ``seed`` (or ``0, 1, ..., size - 1`` without shuffle).

    Rank ``r`` of ``w`` yields elements ``r, r + w, r + 2w, ...`` of the stream.

    Args:
        size: Dataset length.
        shuffle: Permute each epoch.
        seed: Seed of the permutations; ``None`` draws one, shared by all ranks.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None) -> None:
        if not isinstance(size, int):
            raise TypeError(f"TrainingSampler(size=) expects an int. Got type {type(size)}.")
        if size <= 0:
            raise ValueError(f"TrainingSampler(size=) expects a positive int. Got {size}.")
        self._size = size
        self._shuffle = shuffle
        self._seed = _seed_or_shared(seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)


class RandomSubsetTrainingSampler(TrainingSampler):
    """A :class:`TrainingSampler` over a fixed random subset of ``int(size * subset_ratio)``
    indices (e.g. for accuracy-vs-data-size curves).

    Args:
        size: Dataset length.
        subset_ratio: Fraction in (0, 1] of the dataset to keep.
        shuffle: Permute the subset each epoch.
        seed_shuffle: Seed of the per-epoch permutations; None: shared random seed.
        seed_subset: Seed choosing the subset (``randperm(size)[:subset size]``); None: shared
            random seed.
    """

    def __init__(self, size: int, subset_ratio: float, shuffle: bool = True,
                 seed_shuffle: Optional[int] = None, seed_subset: Optional[int] = None) -> None:
        super().__init__(size=size, shuffle=shuffle, seed=seed_shuffle)
        if not 0.0 < subset_ratio <= 1.0:
            raise ValueError(f"RandomSubsetTrainingSampler(subset_ratio=) must be in (0, 1], got {subset_ratio}.")
        self._size_subset = int(size * subset_ratio)
        if self._size_subset <= 0:
            raise ValueError(f"subset_ratio={subset_ratio} of {size} elements keeps none of them.")
        self._seed_subset = _seed_or_shared(seed_subset)
        g = torch.Generator()
        g.manual_seed(self._seed_subset)
        self._indexes_subset = torch.randperm(self._size, generator=g)[: self._size_subset]

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from self._indexes_subset[torch.randperm(self._size_subset, generator=g)].tolist()
            else:
                yield from self._indexes_subset.tolist()


class RepeatFactorTrainingSampler(Sampler):
    """Like :class:`TrainingSampler`, but image ``i`` appears ``repeat_factors[i]`` times per
    epoch on average (LVIS-style resampling of images with rare categories).

    The fractional part of a factor is realised by a random draw per epoch.

    Args:
        repeat_factors: (N,) float tensor, >= 1 usually.
        shuffle: Permute each epoch.
        seed: Seed; ``None`` draws one shared by all ranks.
    """

    def __init__(self, repeat_factors: torch.Tensor, *, shuffle: bool = True,
                 seed: Optional[int] = None) -> None:
        self._shuffle = shuffle
        self._seed = _seed_or_shared(seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        repeat_factors = torch.as_tensor(repeat_factors, dtype=torch.float32)
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    @staticmethod
    def repeat_factors_from_category_frequency(dataset_dicts: List[Dict[str, Any]],
                                               repeat_thresh: float, sqrt: bool = True) -> torch.Tensor:
        """Per image, ``max over its categories c of max(1, sqrt(repeat_thresh / f(c)))``, where
        ``f(c)`` is the fraction of images containing ``c`` (without the sqrt if ``sqrt=False``)."""
        category_freq: Dict[int, float] = defaultdict(int)
        for d in dataset_dicts:
            for cat_id in {ann["category_id"] for ann in d["annotations"]}:
                category_freq[cat_id] += 1
        num_images = len(dataset_dicts)
        category_rep = {}
        for cat_id, count in category_freq.items():
            ratio = repeat_thresh / (count / num_images)
            category_rep[cat_id] = max(1.0, math.sqrt(ratio) if sqrt else ratio)
        rep_factors = [
            max((category_rep[ann["category_id"]] for ann in d["annotations"]), default=1.0)
            for d in dataset_dicts
        ]
        return torch.tensor(rep_factors, dtype=torch.float32)

    def _get_epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        rands = torch.rand(len(self._frac_part), generator=generator)
        rep_factors = self._int_part + (rands < self._frac_part).float()
        return torch.repeat_interleave(torch.arange(len(rep_factors)), rep_factors.long())

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            indices = self._get_epoch_indices(g)
            if self._shuffle:
                yield from indices[torch.randperm(len(indices), generator=g)].tolist()
            else:
                yield from indices.tolist()


class InferenceSampler(Sampler):
    """Each index of ``[0, size)`` exactly once over all ranks: rank ``r`` gets a contiguous
    shard, the first ``size % world_size`` shards one element longer."""

    def __init__(self, size: int) -> None:
        self._size = size
        if size < 0:
            raise ValueError(f"InferenceSampler(size=) expects a non-negative int, got {size}.")
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._local_indices = self._get_local_indices(size, self._world_size, self._rank)

    @staticmethod
    def _get_local_indices(total_size: int, world_size: int, rank: int) -> range:
        shard_size = total_size // world_size
        left = total_size % world_size
        shard_sizes = [shard_size + int(r < left) for r in range(world_size)]
        begin = sum(shard_sizes[:rank])
        end = min(sum(shard_sizes[: rank + 1]), total_size)
        return range(begin, end)

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)

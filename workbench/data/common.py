"""Dataset wrappers used by the loaders: a list as a dataset, a mapped dataset, a sampler-driven
iterable dataset and batching by aspect ratio."""

from __future__ import annotations

import copy
import itertools
import logging
import pickle
import random
from typing import Any, Callable, Iterable, Iterator, List

import numpy as np
import torch.utils.data as torchdata

__all__ = ["DatasetFromList", "MapDataset", "ToIterableDataset", "AspectRatioGroupedDataset"]


class _MapIterableDataset(torchdata.IterableDataset):
    """``map`` over an iterable dataset, skipping elements the function maps to None."""

    def __init__(self, dataset: Iterable, map_func: Callable[[Any], Any]) -> None:
        self._dataset = dataset
        self._map_func = map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __iter__(self) -> Iterator[Any]:
        for x in map(self._map_func, self._dataset):
            if x is not None:
                yield x


class MapDataset(torchdata.Dataset):
    """Applies ``map_func`` to each element of ``dataset``.

    If ``map_func`` returns None for an element (e.g. an image left without instances after a
    crop), another element, drawn at random among those that mapped fine before, is used
    instead; this draw uses the dataset's own seeded generator, so it stays reproducible.
    """

    def __new__(cls, dataset, map_func):
        if isinstance(dataset, torchdata.IterableDataset):
            return _MapIterableDataset(dataset, map_func)
        return super().__new__(cls)

    def __init__(self, dataset, map_func: Callable[[Any], Any]) -> None:
        self._dataset = dataset
        self._map_func = map_func
        self._rng = random.Random(42)
        self._fallback_candidates = set(range(len(dataset)))

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        retry_count = 0
        cur_idx = int(idx)
        while True:
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            retry_count += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError("The mapper returned None for every element tried; nothing to load.")
            cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]
            if retry_count >= 3:
                logging.getLogger(__name__).warning(
                    "Failed to apply `_map_func` for idx: %d, retry count: %d", idx, retry_count)


class DatasetFromList(torchdata.Dataset):
    """A list as a dataset.

    Args:
        lst: The elements (e.g. dataset dicts).
        copy: Return a deep copy of each element (so a mapper can modify it freely).
        serialize: Keep the elements pickled in one numpy buffer. Data-loader worker processes
            then share one block of memory, instead of each touching (and so copying, through
            reference counts) millions of Python objects.
    """

    def __init__(self, lst: List[Any], copy: bool = True, serialize: bool = True) -> None:
        self._lst = lst
        self._copy = copy
        self._serialize = serialize
        if self._serialize:
            blobs = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in lst]
            self._addr = np.cumsum(np.asarray([len(b) for b in blobs], dtype=np.int64))
            self._lst = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._addr) if self._serialize else len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        if self._serialize:
            start = 0 if idx == 0 else int(self._addr[idx - 1])
            end = int(self._addr[idx])
            return pickle.loads(memoryview(self._lst[start:end]))
        if self._copy:
            return copy.deepcopy(self._lst[idx])
        return self._lst[idx]


class ToIterableDataset(torchdata.IterableDataset):
    """The elements of a map-style ``dataset`` in the order of ``sampler``.

    With several data-loader workers and ``shard_sampler=True``, worker ``i`` of ``n`` takes
    indices ``i, i + n, i + 2n, ...``, so each index is loaded exactly once and the order of
    the batches (which the loader takes round-robin from the workers) matches ``sampler``.
    """

    def __init__(self, dataset, sampler: torchdata.Sampler, shard_sampler: bool = True) -> None:
        if isinstance(dataset, torchdata.IterableDataset):
            raise TypeError("ToIterableDataset wraps a map-style dataset, got an IterableDataset.")
        if not isinstance(sampler, torchdata.Sampler):
            raise TypeError(f"Expected a torch Sampler, got {type(sampler).__name__}.")
        self.dataset = dataset
        self.sampler = sampler
        self.shard_sampler = shard_sampler

    def __iter__(self) -> Iterator[Any]:
        sampler: Iterable[int] = self.sampler
        if self.shard_sampler:
            worker_info = torchdata.get_worker_info()
            if worker_info is not None and worker_info.num_workers > 1:
                sampler = itertools.islice(sampler, worker_info.id, None, worker_info.num_workers)
        for idx in sampler:
            yield self.dataset[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class AspectRatioGroupedDataset(torchdata.IterableDataset):
    """Batches images so that each batch holds only landscape (w > h) or only portrait
    (w <= h) images, which reduces padding.

    Args:
        dataset: Iterable of mapped dicts with "width" and "height".
        batch_size: Images per batch.
    """

    def __init__(self, dataset: Iterable, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self._buckets: List[List[Any]] = [[] for _ in range(2)]

    def __iter__(self) -> Iterator[List[Any]]:
        for d in self.dataset:
            w, h = d["width"], d["height"]
            bucket = self._buckets[0 if w > h else 1]
            bucket.append(d)
            if len(bucket) == self.batch_size:
                data = bucket[:]
                del bucket[:]  # cleared before yielding, in case the consumer stops here
                yield data

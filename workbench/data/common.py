"""Dataset wrappers used by the loaders: a list as a dataset, a mapped dataset, a sampler-driven
iterable dataset and batching by aspect ratio."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import pickle
import random
from typing import Any, Callable, Iterable, Iterator, List, Union

import numpy as np
import torch
import torch.utils.data as torchdata

from workbench.utils.serialize import PicklableWrapper

__all__ = [
    "DatasetFromList", "MapDataset", "ToIterableDataset", "AspectRatioGroupedDataset",
    "set_default_dataset_from_list_serialize_method",
]

logger = logging.getLogger(__name__)


def _roundrobin(*iterables: Iterable) -> Iterator:
    """``_roundrobin("ABC", "D", "EF") -> A D E B F C`` (the itertools recipe)."""
    num_active = len(iterables)
    nexts = itertools.cycle(iter(it).__next__ for it in iterables)
    while num_active:
        try:
            for nxt in nexts:
                yield nxt()
        except StopIteration:
            num_active -= 1  # drop the exhausted iterator from the cycle
            nexts = itertools.cycle(itertools.islice(nexts, num_active))


def _shard_iterator_dataloader_worker(iterable: Iterable, chunk_size: int = 1) -> Iterator:
    """Inside data-loader worker ``i`` of ``n``, keeps chunks ``i, i + n, ...`` of ``chunk_size``
    consecutive elements (worker 0: elements 0 .. chunk_size - 1, n * chunk_size, ...), so the
    loader, taking one batch from each worker in turn, restores the original order."""
    worker_info = torchdata.get_worker_info()
    if worker_info is None or worker_info.num_workers == 1:
        yield from iterable
        return
    yield from _roundrobin(*[
        itertools.islice(iterable, worker_info.id * chunk_size + chunk_i, None,
                         worker_info.num_workers * chunk_size)
        for chunk_i in range(chunk_size)
    ])


class _MapIterableDataset(torchdata.IterableDataset):
    """``map`` over an iterable dataset, skipping elements the function maps to None."""

    def __init__(self, dataset: Iterable, map_func: Callable[[Any], Any]) -> None:
        self._dataset = dataset
        self._map_func = PicklableWrapper(map_func)  # so that a lambda can be pickled (cloudpickle)

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
    Given an ``IterableDataset``, returns an iterable dataset that skips those elements.

    ``map_func`` is wrapped in :class:`~workbench.utils.serialize.PicklableWrapper`, so that a
    lambda can be sent to worker processes when ``cloudpickle`` is installed.
    """

    def __new__(cls, dataset, map_func):
        if isinstance(dataset, torchdata.IterableDataset):
            return _MapIterableDataset(dataset, map_func)
        return super().__new__(cls)

    def __init__(self, dataset, map_func: Callable[[Any], Any]) -> None:
        self._dataset = dataset
        self._map_func = PicklableWrapper(map_func)  # so that a lambda can be pickled (cloudpickle)
        self._rng = random.Random(42)
        self._fallback_candidates = set(range(len(dataset)))

    def __getnewargs__(self):
        # __new__ takes (dataset, map_func): give them back when unpickling.
        return self._dataset, self._map_func

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


class _TorchSerializedList:
    """A list stored as pickled bytes in one uint8 tensor plus a tensor of end offsets.

    Worker processes then share these two blocks of memory (``fork``: untouched pages;
    ``spawn``: torch moves tensors to shared memory), instead of each touching, and so copying
    through reference counts, millions of Python objects. Each read unpickles a fresh copy.
    """

    def __init__(self, lst: List[Any]) -> None:
        logger.info("Serializing %d elements to byte tensors and concatenating them all ...", len(lst))
        blobs = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in lst]
        self._addr = torch.from_numpy(np.cumsum(np.asarray([len(b) for b in blobs], dtype=np.int64)))
        self._lst = torch.from_numpy(np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8))
        logger.info("Serialized dataset takes %.2f MiB", len(self._lst) / 1024 ** 2)

    def __len__(self) -> int:
        return len(self._addr)

    def __getitem__(self, idx: int) -> Any:
        start = 0 if idx == 0 else int(self._addr[idx - 1])
        end = int(self._addr[idx])
        return pickle.loads(memoryview(self._lst[start:end].numpy()))


_DEFAULT_DATASET_FROM_LIST_SERIALIZE_METHOD: Callable[[List[Any]], Any] = _TorchSerializedList


@contextlib.contextmanager
def set_default_dataset_from_list_serialize_method(new: Callable[[List[Any]], Any]) -> Iterator[None]:
    """Within the ``with`` block, ``DatasetFromList(lst, serialize=True)`` stores
    ``new(lst)`` (any list-like with ``len`` and indexing) instead of the default byte tensor."""
    global _DEFAULT_DATASET_FROM_LIST_SERIALIZE_METHOD
    orig = _DEFAULT_DATASET_FROM_LIST_SERIALIZE_METHOD
    _DEFAULT_DATASET_FROM_LIST_SERIALIZE_METHOD = new
    try:
        yield
    finally:
        _DEFAULT_DATASET_FROM_LIST_SERIALIZE_METHOD = orig


class DatasetFromList(torchdata.Dataset):
    """A list as a dataset.

    Args:
        lst: The elements (e.g. dataset dicts).
        copy: Return a deep copy of each element, so a mapper can modify it freely (only
            without serialization: a serialized element is a fresh copy anyway).
        serialize: True: store the list with the default method (pickled into one byte
            tensor, shared by data-loader workers; see
            :func:`set_default_dataset_from_list_serialize_method`); a callable: store
            ``serialize(lst)``; False: keep the list as is.
    """

    def __init__(self, lst: List[Any], copy: bool = True, serialize: Union[bool, Callable] = True) -> None:
        if not isinstance(serialize, bool) and not callable(serialize):
            raise TypeError(f"DatasetFromList(serialize=) must be a bool or a callable, got {serialize!r}.")
        self._lst = lst
        self._copy = copy
        self._serialize = serialize is not False
        if self._serialize:
            method = serialize if callable(serialize) else _DEFAULT_DATASET_FROM_LIST_SERIALIZE_METHOD
            logger.info("Serializing the dataset using: %s", method)
            self._lst = method(self._lst)

    def __len__(self) -> int:
        return len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        if self._copy and not self._serialize:
            return copy.deepcopy(self._lst[idx])
        return self._lst[idx]


class ToIterableDataset(torchdata.IterableDataset):
    """The elements of a map-style ``dataset`` in the order of ``sampler``.

    With several data-loader workers and ``shard_sampler=True``, worker ``i`` of ``n`` takes
    chunks ``i, i + n, ...`` of ``shard_chunk_size`` consecutive indices, so each index is
    loaded exactly once; with ``shard_chunk_size`` equal to the batch size the batches, which
    the loader takes round-robin from the workers, keep the order of ``sampler``.
    """

    def __init__(self, dataset, sampler: torchdata.Sampler, shard_sampler: bool = True,
                 shard_chunk_size: int = 1) -> None:
        if isinstance(dataset, torchdata.IterableDataset):
            raise TypeError("ToIterableDataset wraps a map-style dataset, got an IterableDataset.")
        if not isinstance(sampler, torchdata.Sampler):
            raise TypeError(f"Expected a torch Sampler, got {type(sampler).__name__}.")
        self.dataset = dataset
        self.sampler = sampler
        self.shard_sampler = shard_sampler
        self.shard_chunk_size = shard_chunk_size

    def __iter__(self) -> Iterator[Any]:
        sampler: Iterable[int] = self.sampler
        if self.shard_sampler:
            sampler = _shard_iterator_dataloader_worker(sampler, self.shard_chunk_size)
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

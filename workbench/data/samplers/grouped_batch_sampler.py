"""Batches of indices drawn from one group at a time (e.g. landscape vs portrait images)."""

from __future__ import annotations

from typing import Dict, Iterator, List, Sequence

import numpy as np
from torch.utils.data.sampler import BatchSampler, Sampler

__all__ = ["GroupedBatchSampler"]


class GroupedBatchSampler(BatchSampler):
    """Wraps a sampler into batches whose indices all share a group id, keeping the sampler's
    order as far as possible: each index waits in its group's buffer, and a batch is yielded as
    soon as a buffer holds ``batch_size`` indices. Leftovers are never yielded, so with an
    infinite sampler nothing is lost and with a finite one the incomplete buffers are dropped.

    Args:
        sampler: Yields indices in [0, N).
        group_ids: N ints, the group of each index (e.g. 0 for w > h, 1 otherwise).
        batch_size: Indices per batch.
    """

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int) -> None:
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler should be a torch.utils.data.Sampler, got sampler={sampler!r}.")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids)
        if self.group_ids.ndim != 1:
            raise ValueError(f"group_ids must be one id per index (1-D), got shape {self.group_ids.shape}.")
        self.batch_size = batch_size
        self.buffer_per_group: Dict[int, List[int]] = {k: [] for k in np.unique(self.group_ids).tolist()}

    def __iter__(self) -> Iterator[List[int]]:
        for idx in self.sampler:
            group_buffer = self.buffer_per_group[self.group_ids[idx].item()]
            group_buffer.append(idx)
            if len(group_buffer) == self.batch_size:
                yield group_buffer[:]  # a copy: the buffer is emptied next
                del group_buffer[:]

    def __len__(self) -> int:
        raise NotImplementedError("len() of GroupedBatchSampler is not well-defined.")

"""Helpers for multi-process (``torch.distributed``) runs that are no-ops in a single process.

Every function works without an initialised process group: it then behaves as "one process of
rank 0", so library code can call them unconditionally. Object collectives (``all_gather``,
``gather``) go through a gloo group, so they work with NCCL runs too and never touch a GPU.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size", "get_rank", "get_local_rank", "get_local_size", "is_main_process",
    "synchronize", "all_gather", "gather", "shared_random_seed", "reduce_dict",
    "create_local_process_group", "is_distributed",
]

# The group of the processes on this machine (set by ``create_local_process_group``).
_LOCAL_PROCESS_GROUP = None
_LOCAL_SIZE: Optional[int] = None


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def create_local_process_group(num_workers_per_machine: int) -> None:
    """Creates the group of the processes on this machine; every process must call it.

    Assumes ranks are laid out machine by machine: machine ``m`` holds ranks
    ``[m * num_workers_per_machine, (m + 1) * num_workers_per_machine)``.
    """
    global _LOCAL_PROCESS_GROUP, _LOCAL_SIZE
    if _LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("The local process group was already created.")
    world_size = get_world_size()
    if world_size % num_workers_per_machine != 0:
        raise ValueError(
            f"World size {world_size} is not a multiple of the {num_workers_per_machine} "
            "processes per machine."
        )
    num_machines = world_size // num_workers_per_machine
    machine_rank = get_rank() // num_workers_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_workers_per_machine, (i + 1) * num_workers_per_machine))
        group = dist.new_group(ranks)  # every process must take part in every new_group call
        if i == machine_rank:
            _LOCAL_PROCESS_GROUP = group
    _LOCAL_SIZE = num_workers_per_machine


def get_local_rank() -> int:
    """Rank of this process among the processes of its machine (the GPU it uses)."""
    if not is_distributed():
        return 0
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_rank(group=_LOCAL_PROCESS_GROUP)
    # Started by torchrun, which says it in the environment.
    return int(os.environ.get("LOCAL_RANK", 0))


def get_local_size() -> int:
    """Number of processes on this machine."""
    if not is_distributed():
        return 1
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_WORLD_SIZE", get_world_size()))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """A barrier across all processes (no-op in a single process)."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache()
def _get_global_gloo_group():
    """A gloo group of all processes: object collectives then stay on the CPU."""
    if dist.get_backend() == dist.Backend.NCCL:
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any, group=None) -> List[Any]:
    """Every process's ``data`` (any picklable object), in rank order, on every process."""
    if get_world_size() == 1:
        return [data]
    if group is None:
        group = _get_global_gloo_group()
    world_size = dist.get_world_size(group)
    if world_size == 1:
        return [data]
    output: List[Any] = [None] * world_size
    dist.all_gather_object(output, data, group=group)
    return output


def gather(data: Any, dst: int = 0, group=None) -> List[Any]:
    """Every process's ``data`` in rank order on rank ``dst``; ``[]`` on the others."""
    if get_world_size() == 1:
        return [data]
    if group is None:
        group = _get_global_gloo_group()
    world_size = dist.get_world_size(group=group)
    if world_size == 1:
        return [data]
    if dist.get_rank(group=group) == dst:
        output: List[Any] = [None] * world_size
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def shared_random_seed() -> int:
    """A random int in [0, 2**31) drawn by rank 0 and shared by all processes.

    All processes must call it; it draws from numpy's global generator.
    """
    ints = np.random.randint(2 ** 31)
    return int(all_gather(ints)[0])


def reduce_dict(input_dict: Dict[str, torch.Tensor], average: bool = True) -> Dict[str, torch.Tensor]:
    """Sums (or averages) scalar tensors over processes; the result is valid on rank 0 only.

    Args:
        input_dict: ``{name: 0-dim tensor}``, the same names on every process.
        average: Divide the sum by the world size.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))

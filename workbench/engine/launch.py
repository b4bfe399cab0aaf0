"""Starting multi-process training: one process per GPU (NCCL), or several CPU processes
(gloo) where there is no GPU, on one or more machines.

``launch(main, num_gpus_per_machine, ...)`` spawns the processes and calls ``main(*args)`` in
each after setting up ``torch.distributed``; with a world size of 1 (or 0 GPUs asked) it just
calls ``main(*args)``. Under ``torchrun`` (which sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK``), it joins the process group torchrun describes instead of spawning.
"""

from __future__ import annotations

import logging
import os
import time
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workbench.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    """A TCP port free on this machine right now (another process may take it later)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: Sequence[Any] = (),
           timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Runs ``main_func(*args)`` in every process of a (possibly) distributed job.

    Args:
        main_func: Must be picklable (a module-level function) when processes are spawned.
        num_gpus_per_machine: Processes per machine: one per GPU. Without CUDA, that many CPU
            processes communicating with gloo. 0 or 1 (on one machine): no extra process.
        num_machines: Machines in the job.
        machine_rank: This machine's index.
        dist_url: Rendezvous address, e.g. ``"tcp://10.0.0.1:29500"`` (the rank-0 machine);
            ``"auto"`` picks a free local port (one machine only).
        args: Arguments of ``main_func``.
        timeout: Timeout of collective operations.
    """
    if _launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        owns_group = not dist.is_initialized()
        _init_from_env(timeout)
        main_func(*args)
        if owns_group:
            _tear_down()
        return

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return

    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError('dist_url="auto" (or None) only works with num_machines=1; give the '
                             "rank-0 machine's address, e.g. tcp://10.0.0.1:29500.")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs. Prefer tcp://")
    if not torch.cuda.is_available():
        logger.info("No CUDA device: launching %d CPU processes per machine with the gloo backend.",
                    num_gpus_per_machine)
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


def _init_from_env(timeout: timedelta) -> None:
    """Joins the process group described by torchrun's environment variables."""
    has_gpu = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if has_gpu:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if has_gpu else "gloo", init_method="env://", timeout=timeout)
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    comm.create_local_process_group(local_size)
    if not has_gpu:
        _share_cpu_threads(local_size)
    comm.synchronize()


def _share_cpu_threads(num_local_processes: int) -> None:
    """Gives each CPU process its share of the cores (instead of all of them each)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(num_local_processes, 1)))


_TEARDOWN_GRACE_S = 0.5


def _distributed_worker(local_rank: int, main_func: Callable[..., Any], world_size: int,
                        num_gpus_per_machine: int, machine_rank: int, dist_url: str,
                        args: Sequence[Any], timeout: timedelta) -> None:
    has_gpu = torch.cuda.is_available()
    if has_gpu and num_gpus_per_machine > torch.cuda.device_count():
        raise RuntimeError(
            f"Asked for {num_gpus_per_machine} GPUs per machine, but only {torch.cuda.device_count()} are visible."
        )
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(backend="nccl" if has_gpu else "gloo", init_method=dist_url,
                                world_size=world_size, rank=global_rank, timeout=timeout)
    except Exception as e:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise e
    comm.create_local_process_group(num_gpus_per_machine)
    if has_gpu:
        torch.cuda.set_device(local_rank)
    else:
        _share_cpu_threads(num_gpus_per_machine)
    # Everyone is set up before anyone starts working.
    comm.synchronize()
    main_func(*args)
    # On an exception, no teardown: the failing rank exits and the spawner stops the others.
    _tear_down()


def _tear_down() -> None:
    """Leave the process group together. A rank that destroys its group while a peer is still
    inside a collective (or still owns gloo connections to it) can make that peer abort in C++
    ("terminate called without an active exception"); so can a rank that exits, closing its
    sockets, while the peer is still tearing down. Hence a barrier, then the destroy, then a
    moment alive."""
    comm.synchronize()
    dist.destroy_process_group()
    time.sleep(_TEARDOWN_GRACE_S)

"""Logging set-up for training scripts, and small table helpers for result logs."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections import Counter
from typing import Any, Dict, Optional

from tabulate import tabulate

__all__ = ["setup_logger", "log_every_n_seconds", "create_small_table"]


@functools.lru_cache()  # calling it twice with the same arguments must not add handlers twice
def setup_logger(output: Optional[str] = None, distributed_rank: int = 0, *,
                 name: str = "workbench", abbrev_name: Optional[str] = None) -> logging.Logger:
    """Sends logger ``name`` to the console (rank 0 only) and to a file.

    Args:
        output: A folder (the file is ``output/log.txt``) or a ``.txt`` / ``.log`` file name;
            ``None`` logs to the console only. Ranks > 0 write ``<file>.rank<r>``.
        distributed_rank: This process's rank.
        name: The logger to configure.
        abbrev_name: Shorter name shown in console lines (default: ``name``).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    abbrev_name = abbrev_name or name
    plain = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.DEBUG)
        ch.setFormatter(logging.Formatter(f"[%(asctime)s {abbrev_name}]: %(message)s", datefmt="%m/%d %H:%M:%S"))
        logger.addHandler(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(plain)
        logger.addHandler(fh)
    return logger


_LOG_TIMER: Dict[Any, float] = {}
_LOG_COUNTER: Counter = Counter()


def log_every_n_seconds(lvl: int, msg: str, n: float = 1, *, name: Optional[str] = None) -> None:
    """Logs ``msg`` at most once every ``n`` seconds from the same call site."""
    frame = sys._getframe(1)
    key = (frame.f_code.co_filename, frame.f_lineno)
    last = _LOG_TIMER.get(key)
    now = time.time()
    if last is None or now - last >= n:
        logging.getLogger(name or frame.f_globals.get("__name__", "workbench")).log(lvl, msg)
        _LOG_TIMER[key] = now


def create_small_table(small_dict: Dict[str, Any]) -> str:
    """A one-row table of ``{name: value}`` (floats with 3 decimals)."""
    keys, values = tuple(zip(*small_dict.items())) if small_dict else ((), ())
    return tabulate([values], headers=keys, tablefmt="pipe", floatfmt=".3f", stralign="center",
                    numalign="center")

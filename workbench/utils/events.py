"""Training statistics: ``EventStorage`` and the writers that print or save what it holds.

Models put scalars (losses, accuracies, counts) into the storage that is current while they
run in training mode; writers read the storage periodically::

    from workbench.utils.events import EventStorage
    with EventStorage() as storage:
        losses = model(inputs)      # model calls get_event_storage().put_scalar(...)
    storage.latest()                # {"rpn/num_pos_anchors": (23.25, 0), ...}
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "EventStorage", "get_event_storage", "has_event_storage", "HistoryBuffer", "EventWriter",
    "JSONWriter", "CommonMetricPrinter", "TensorboardXWriter",
]

_CURRENT_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The innermost ``EventStorage`` in use.

    Raises:
        RuntimeError: when called outside ``with EventStorage():`` (for example, a model called in
            training mode without a storage).
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() has to be called inside a 'with EventStorage(...)' context. "
            "Models in training mode record statistics there: wrap the call as\n"
            "    from workbench.utils.events import EventStorage\n"
            "    with EventStorage() as storage:\n"
            "        losses = model(inputs)\n"
            "or call model.eval() for inference."
        )
    return _CURRENT_STORAGE_STACK[-1]


def has_event_storage() -> bool:
    return bool(_CURRENT_STORAGE_STACK)


class HistoryBuffer:
    """The (value, iteration) history of one scalar, with its global average and median."""

    def __init__(self, max_length: int = 1000000) -> None:
        self._max_length = max_length
        self._data: List[Tuple[float, float]] = []
        self._count = 0
        self._global_avg = 0.0

    def update(self, value: float, iteration: Optional[float] = None) -> None:
        if iteration is None:
            iteration = self._count
        if len(self._data) == self._max_length:
            self._data.pop(0)
        self._data.append((value, iteration))
        self._count += 1
        self._global_avg += (value - self._global_avg) / self._count

    def latest(self) -> float:
        return self._data[-1][0]

    def median(self, window_size: int) -> float:
        return float(np.median([x[0] for x in self._data[-window_size:]]))

    def avg(self, window_size: int) -> float:
        return float(np.mean([x[0] for x in self._data[-window_size:]]))

    def global_avg(self) -> float:
        return self._global_avg

    def values(self) -> List[Tuple[float, float]]:
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"HistoryBuffer(count={self._count}, latest={self._data[-1][0] if self._data else None})"


class EventStorage:
    """Per-iteration metrics, images and histograms of a training run.

    Args:
        start_iter: the iteration number the storage starts counting from.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest_scalars: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self._current_prefix = ""
        self._vis_data: List[Tuple[str, np.ndarray, int]] = []
        self._histograms: List[Dict[str, Any]] = []

    # -- recording ---------------------------------------------------------------------------
    def put_image(self, img_name: str, img_tensor: Any) -> None:
        """Record an image, (3, H, W) in RGB with values in [0, 1] or [0, 255]."""
        if isinstance(img_tensor, torch.Tensor):
            img_tensor = img_tensor.detach().cpu().numpy()
        img = np.asarray(img_tensor)
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"put_image('{img_name}') expects a (3, H, W) image, got {img.shape}.")
        self._vis_data.append((img_name, img, self._iter))

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True,
                   cur_iter: Optional[int] = None) -> None:
        """Record ``value`` for ``name`` at the current (or ``cur_iter``) iteration.

        Args:
            smoothing_hint: whether writers should show a smoothed value (median over a window)
                rather than the raw latest one. A name keeps the hint it was first given.
        """
        name = self._current_prefix + name
        cur_iter = self._iter if cur_iter is None else cur_iter
        if isinstance(value, torch.Tensor):
            value = value.detach().item()
        value = float(value)
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)
        existing = self._smoothing_hints.get(name)
        if existing is not None and existing != smoothing_hint:
            raise ValueError(
                f"Scalar '{name}' was first put with smoothing_hint={existing}; "
                f"got smoothing_hint={smoothing_hint} now."
            )
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter: Optional[int] = None,
                    **kwargs: Any) -> None:
        """``put_scalars(loss_a=0.3, loss_b=1.2)``: several scalars at once."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def put_histogram(self, hist_name: str, hist_tensor: torch.Tensor, bins: int = 1000) -> None:
        t = hist_tensor.detach().float().cpu()
        ht_min, ht_max = t.min().item(), t.max().item()
        hist_counts = torch.histc(t, bins=bins)
        hist_edges = torch.linspace(start=ht_min, end=ht_max, steps=bins + 1, dtype=torch.float32)
        self._histograms.append(dict(
            tag=hist_name, min=ht_min, max=ht_max, num=len(t), sum=float(t.sum()),
            sum_squares=float(torch.sum(t ** 2)), bucket_limits=hist_edges[1:].tolist(),
            bucket_counts=hist_counts.tolist(), global_step=self._iter,
        ))

    # -- reading -----------------------------------------------------------------------------
    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No history for '{name}'. Recorded scalars: {sorted(self._history)}.")
        return self._history[name]

    def histories(self) -> Dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}``."""
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like :meth:`latest`, but hinted scalars are the median of their recent samples.

        The window counts *iterations*, not samples: every value put within the last
        ``window_size`` iterations (see :meth:`count_samples`) enters the median, so a scalar put
        every 5th iteration is smoothed over 2 samples with ``window_size=10``. (This differs from
        ``HistoryBuffer.median(n)``, whose ``n`` counts samples.)
        """
        result = {}
        # A copy: with SimpleTrainer(async_write_metrics=True) another thread may add scalars.
        for k, (v, itr) in list(self._latest_scalars.items()):
            if self._smoothing_hints[k]:
                v = self._history[k].median(self.count_samples(k, window_size))
            result[k] = (v, itr)
        return result

    def count_samples(self, name: str, window_size: int = 20) -> int:
        """How many values of ``name`` were put in the ``window_size`` iterations up to its latest.

        Raises:
            KeyError: when ``name`` was never put.
        """
        data = self.history(name).values()
        newest_iter = data[-1][1]
        samples = 0
        for _, itr in reversed(data):
            if itr <= newest_iter - window_size:
                break
            samples += 1
        return samples

    def smoothing_hints(self) -> Dict[str, bool]:
        return dict(self._smoothing_hints)

    def step(self) -> None:
        """Advance to the next iteration (a trainer calls this once per iteration)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    @property
    def iteration(self) -> int:
        return self._iter

    @property
    def vis_data(self) -> List[Tuple[str, np.ndarray, int]]:
        return self._vis_data

    def clear_images(self) -> None:
        self._vis_data = []

    def clear_histograms(self) -> None:
        self._histograms = []

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self, "EventStorage contexts exited out of order."
        _CURRENT_STORAGE_STACK.pop()

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix every scalar put inside the block with ``name + "/"``."""
        old_prefix = self._current_prefix
        self._current_prefix = name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def __repr__(self) -> str:
        return f"EventStorage(iter={self._iter}, scalars={sorted(self._latest_scalars)})"


class EventWriter:
    """Something that periodically reads the current ``EventStorage`` and writes it out."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration (``{"iteration": i, name: value, ...}``) to a file.

    Only scalars newer than the last write are written; with ``window_size`` > 1 hinted scalars
    are smoothed by a median like the console printer.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file_handle = open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        to_save: Dict[int, Dict[str, float]] = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr <= self._last_write:
                continue
            to_save[itr][k] = v
        if to_save:
            self._last_write = max(to_save)
        for itr, scalars in sorted(to_save.items()):
            scalars["iteration"] = itr
            self._file_handle.write(json.dumps(scalars, sort_keys=True) + "\n")
        self._file_handle.flush()

    def close(self) -> None:
        self._file_handle.close()


class CommonMetricPrinter(EventWriter):
    """Logs one line of common metrics: ETA, iteration, losses, ``[metric]`` scalars, time, lr.

    Every scalar whose name contains ``"loss"`` or ``"[metric]"`` is shown as the median of the
    samples put in the last ``window_size`` iterations. ``time`` is shown as its global average
    and its latest value, ``data_time`` as its windowed average and latest value.

    Args:
        max_iter: the number of training iterations, for the ETA (no ETA when None).
        window_size: iterations the losses and metrics are median-smoothed over.
        logger: where lines go; default ``logging.getLogger("workbench.utils.events")``.
    """

    def __init__(self, max_iter: Optional[int] = None, window_size: int = 20,
                 logger: Optional[logging.Logger] = None) -> None:
        self.logger = logger or logging.getLogger(__name__)
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: Optional[Tuple[int, float]] = None

    def _eta(self, storage: EventStorage) -> str:
        if self._max_iter is None:
            return ""
        iteration = storage.iter
        try:
            secs = storage.history("time").median(1000) * (self._max_iter - iteration - 1)
            storage.put_scalar("eta_seconds", secs, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(secs)))
        except KeyError:
            # Estimate from wall time between two writes when no per-iteration time is recorded.
            now = time.perf_counter()
            eta = ""
            if self._last_write is not None and iteration > self._last_write[0]:
                per_iter = (now - self._last_write[1]) / (iteration - self._last_write[0])
                eta = str(datetime.timedelta(seconds=int(per_iter * (self._max_iter - iteration - 1))))
            self._last_write = (iteration, now)
            return eta

    def _smoothed(self, storage: EventStorage, keep) -> str:
        return "  ".join(
            f"{k}: {h.median(storage.count_samples(k, self._window_size)):.4g}"
            for k, h in storage.histories().items() if keep(k)
        )

    def format_line(self) -> str:
        """The line :meth:`write` logs; empty once ``max_iter`` is reached (training is over)."""
        storage = get_event_storage()
        iteration = storage.iter
        if self._max_iter is not None and iteration == self._max_iter:
            return ""
        hist = storage.histories()
        eta = self._eta(storage)
        parts = [f"eta: {eta}" if eta else "", f"iter: {iteration}",
                 self._smoothed(storage, lambda k: "loss" in k),
                 self._smoothed(storage, lambda k: "[metric]" in k)]
        if "time" in hist:
            parts += [f"time: {hist['time'].global_avg():.4f}",
                      f"last_time: {hist['time'].latest():.4f}"]
        if "data_time" in hist:
            n = storage.count_samples("data_time", self._window_size)
            parts += [f"data_time: {hist['data_time'].avg(n):.4f}",
                      f"last_data_time: {hist['data_time'].latest():.4f}"]
        parts.append(f"lr: {hist['lr'].latest():.5g}" if "lr" in hist else "lr: N/A")
        if torch.cuda.is_available():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024 / 1024:.0f}M")
        return "  ".join(p for p in parts if p)

    def write(self) -> None:
        line = self.format_line()
        if line:
            self.logger.info(line)


class TensorboardXWriter(EventWriter):
    """Writes scalars to TensorBoard; needs the ``tensorboard`` package installed."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "TensorboardXWriter needs TensorBoard: pip install tensorboard"
            ) from e
        self._window_size = window_size
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(k, v, itr)
                new_last = max(new_last, itr)
        self._last_write = new_last
        for img_name, img, step in storage.vis_data:
            self._writer.add_image(img_name, img, step)
        storage.clear_images()

    def close(self) -> None:
        self._writer.close()

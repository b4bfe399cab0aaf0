"""Hooks for :class:`~.train_loop.TrainerBase`: timing, LR schedule, checkpoints, metric
writers, periodic evaluation, arbitrary callbacks."""

from __future__ import annotations

import datetime
import logging
import math
import operator
import time
from collections import Counter
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch

from workbench.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from workbench.evaluation.testing import flatten_results_dict
from workbench.solver import LRMultiplier, ParamScheduler
from workbench.utils import comm
from workbench.utils.events import EventWriter

from .train_loop import HookBase

__all__ = [
    "CallbackHook", "IterationTimer", "PeriodicWriter", "PeriodicCheckpointer", "LRScheduler",
    "EvalHook", "BestCheckpointer",
]

logger = logging.getLogger(__name__)


class CallbackHook(HookBase):
    """Calls the given functions (each taking the trainer) at the matching points."""

    def __init__(self, *, before_train: Optional[Callable] = None, after_train: Optional[Callable] = None,
                 before_step: Optional[Callable] = None, after_step: Optional[Callable] = None) -> None:
        self._before_train = before_train
        self._before_step = before_step
        self._after_step = after_step
        self._after_train = after_train

    def before_train(self) -> None:
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        if self._after_train:
            self._after_train(self.trainer)
        # The callbacks may hold references to the trainer (cycles); drop them.
        del self._before_train, self._after_train
        del self._before_step, self._after_step

    def before_step(self) -> None:
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self) -> None:
        if self._after_step:
            self._after_step(self.trainer)


class _Timer:
    """A pausable stopwatch."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._start = time.perf_counter()
        self._paused: Optional[float] = None
        self._total_paused = 0.0

    def pause(self) -> None:
        if self._paused is None:
            self._paused = time.perf_counter()

    def resume(self) -> None:
        if self._paused is not None:
            self._total_paused += time.perf_counter() - self._paused
            self._paused = None

    def seconds(self) -> float:
        end = self._paused if self._paused is not None else time.perf_counter()
        return end - self._start - self._total_paused


class IterationTimer(HookBase):
    """Records each iteration's duration as "time" (skipping ``warmup_iter`` first ones), and
    logs the overall speed and the time spent in hooks at the end.

    Register it first, so that its "time" covers the other hooks' ``before_step`` and
    ``after_step`` too.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = _Timer()
        self._start_time = time.perf_counter()
        self._total_timer = _Timer()

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total_time = time.perf_counter() - self._start_time
        total_time_minus_hooks = self._total_timer.seconds()
        hook_time = total_time - total_time_minus_hooks
        num_iter = self.trainer.storage.iter + 1 - self.trainer.start_iter - self._warmup_iter
        if num_iter > 0 and total_time_minus_hooks > 0:
            logger.info("Overall training speed: %d iterations in %s (%.4f s / it)", num_iter,
                        str(datetime.timedelta(seconds=int(total_time_minus_hooks))),
                        total_time_minus_hooks / num_iter)
        logger.info("Total training time: %s (%s on hooks)",
                    str(datetime.timedelta(seconds=int(total_time))),
                    str(datetime.timedelta(seconds=int(hook_time))))

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        iter_done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if iter_done >= self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
        else:
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


class PeriodicWriter(HookBase):
    """Calls each writer's ``write()`` every ``period`` iterations and at the last one; closes
    them at the end of training."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        for w in self._writers:
            if not isinstance(w, EventWriter):
                raise TypeError(f"Expected an EventWriter, got {type(w).__name__}.")
        self._period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            # Whatever was recorded since the last write (e.g. by after_train hooks) is written.
            writer.write()
            writer.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """Saves a checkpoint every ``period`` iterations and ``model_final`` at the last one.

    Same arguments as :class:`workbench.checkpoint.PeriodicCheckpointer`; ``max_iter`` is taken
    from the trainer.
    """

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        self.step(self.trainer.iter)


class LRScheduler(HookBase):
    """Records the LR as "lr" and steps the LR scheduler after every iteration.

    Args:
        optimizer: Default: the trainer's ``optimizer``.
        scheduler: A torch LR scheduler, or a :class:`~workbench.solver.ParamScheduler`
            (wrapped in an :class:`~workbench.solver.LRMultiplier`); default: the trainer's
            ``scheduler``.
    """

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        if isinstance(self.scheduler, ParamScheduler):
            self._scheduler = LRMultiplier(self._optimizer, self.scheduler, self.trainer.max_iter,
                                           last_iter=self.trainer.iter - 1)
        self._best_param_group_id = LRScheduler.get_best_param_group_id(self._optimizer)

    @staticmethod
    def get_best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
        """The param group whose LR is shown: the largest group, or (if every group has one
        parameter) one with the most common LR."""
        largest_group = max(len(g["params"]) for g in optimizer.param_groups)
        if largest_group == 1:
            lr_count = Counter([g["lr"] for g in optimizer.param_groups])
            lr = lr_count.most_common()[0][0]
            for i, g in enumerate(optimizer.param_groups):
                if g["lr"] == lr:
                    return i
        for i, g in enumerate(optimizer.param_groups):
            if len(g["params"]) == largest_group:
                return i
        return 0

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    @property
    def scheduler(self):
        return self._scheduler or self.trainer.scheduler

    def state_dict(self) -> Dict[str, Any]:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
            return self.scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
            logger.info("Loading scheduler from state_dict ...")
            self.scheduler.load_state_dict(state_dict)


class EvalHook(HookBase):
    """Runs ``eval_function`` every ``eval_period`` iterations and after the last one, and
    records its (flattened, float) results in the storage.

    ``eval_function`` is called on every rank (evaluation is usually distributed); it returns
    ``{task: {metric: value}}`` (or ``{}``) on each.
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Dict[str, Any]],
                 eval_after_train: bool = True) -> None:
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self) -> None:
        results = self._func()
        if results:
            if not isinstance(results, dict):
                raise TypeError(f"Eval function must return a dict. Got {results} instead.")
            flattened_results = flatten_results_dict(results)
            for k, v in flattened_results.items():
                try:
                    flattened_results[k] = float(v)
                except Exception as e:
                    raise ValueError(
                        "[EvalHook] eval_function should return a nested dict of float. "
                        f"Got '{k}: {v}' instead."
                    ) from e
            self.trainer.storage.put_scalars(**flattened_results, smoothing_hint=False)
        # Evaluation may differ in length across ranks; wait for all before training on.
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0:
            # The last iteration is evaluated in after_train.
            if next_iter != self.trainer.max_iter:
                self._do_eval()

    def after_train(self) -> None:
        # trainer.iter is max_iter only if training finished without an exception.
        if self._eval_after_train and self.trainer.iter + 1 >= self.trainer.max_iter:
            self._do_eval()
        del self._func  # may hold references to the trainer


class BestCheckpointer(HookBase):
    """Saves the model whenever a validation metric reaches a new best.

    Reads the metric from the trainer's storage, so register it *after* the hook that puts it
    there (usually :class:`EvalHook` with the same period). It checks at the same iterations
    as ``EvalHook``: every ``eval_period`` iterations and after the last one.

    Args:
        eval_period: The period the metric's ``EvalHook`` runs at.
        checkpointer: Saves ``<file_prefix>.pth`` (with ``iteration=`` the metric's iteration).
        val_metric: The storage key of the metric, e.g. ``"bbox/AP50"``.
        mode: ``"max"`` when larger is better (AP), ``"min"`` when smaller is (a loss).
        file_prefix: The checkpoint's file name without extension.

    Attributes:
        best_metric: The best value so far (None before the first finite one).
        best_iter: The iteration ``best_metric`` was recorded at.
    """

    def __init__(self, eval_period: int, checkpointer: Any, val_metric: str, mode: str = "max",
                 file_prefix: str = "model_best") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpointer mode must be 'max' or 'min', got {mode!r}.")
        self._period = eval_period
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._compare = operator.gt if mode == "max" else operator.lt
        self._file_prefix = file_prefix
        self.best_metric: Optional[float] = None
        self.best_iter: Optional[int] = None

    def _best_checking(self) -> None:
        entry = self.trainer.storage.latest().get(self._val_metric)
        if entry is None:
            logger.warning(
                "BestCheckpointer: metric '%s' is not in the event storage (is the hook that "
                "computes it registered before this one?); not checkpointing on it.",
                self._val_metric,
            )
            return
        value, metric_iter = entry
        if math.isnan(value) or math.isinf(value):
            logger.warning("BestCheckpointer: metric '%s' is %s at iteration %d; not saving.",
                           self._val_metric, value, metric_iter)
            return
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            logger.info(
                "Not saving as latest eval score for %s is %0.5f, not better than best score "
                "%0.5f @ iteration %d.", self._val_metric, value, self.best_metric, self.best_iter,
            )
            return
        previous = self.best_metric
        self.best_metric, self.best_iter = value, metric_iter
        self._checkpointer.save(self._file_prefix, iteration=metric_iter)
        if previous is None:
            logger.info("Saved first model at %0.5f @ %d steps", value, metric_iter)
        else:
            logger.info("Saved best model as latest eval score for %s is %0.5f, better than "
                        "last best score %0.5f.", self._val_metric, value, previous)

    def after_step(self) -> None:
        # The same iterations as EvalHook.
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._best_checking()

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._best_checking()

"""Learning-rate schedules as in detectron2: a *multiplier* of the base LR, written as a function
of training progress ``where`` in [0, 1) (fvcore's ``ParamScheduler``), applied per iteration by
:class:`LRMultiplier`.

``WarmupParamScheduler(MultiStepParamScheduler(...), warmup_factor, warmup_length)`` is the
default ``WarmupMultiStepLR``: linear from ``warmup_factor`` to 1 over the first
``warmup_length`` of training, then divided by 10 at each step. The legacy
:class:`WarmupMultiStepLR` / :class:`WarmupCosineLR` (torch schedulers) are kept too.
"""

from __future__ import annotations

import bisect
import math
from typing import List, Optional, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler  # detectron2 re-exports it from here

__all__ = [
    "ParamScheduler", "ConstantParamScheduler", "LinearParamScheduler", "CosineParamScheduler",
    "MultiStepParamScheduler", "StepWithFixedGammaParamScheduler", "CompositeParamScheduler",
    "WarmupParamScheduler", "LRMultiplier", "LRScheduler", "WarmupMultiStepLR", "WarmupCosineLR",
]


class ParamScheduler:
    """A value as a function of training progress ``where`` in [0, 1]."""

    # Guards against float error when converting ``where`` back to an iteration number.
    WHERE_EPSILON = 1e-6

    def __call__(self, where: float) -> float:
        raise NotImplementedError


class ConstantParamScheduler(ParamScheduler):
    def __init__(self, value: float) -> None:
        self._value = value

    def __call__(self, where: float) -> float:
        if where >= 1.0:
            raise RuntimeError(f"where in ParamScheduler must be in [0, 1): got {where}")
        return self._value


class LinearParamScheduler(ParamScheduler):
    """From ``start_value`` at 0 to ``end_value`` at 1, linearly."""

    def __init__(self, start_value: float, end_value: float) -> None:
        self._start_value = start_value
        self._end_value = end_value

    def __call__(self, where: float) -> float:
        return self._end_value * where + self._start_value * (1 - where)


class CosineParamScheduler(ParamScheduler):
    """Half a cosine from ``start_value`` at 0 to ``end_value`` at 1."""

    def __init__(self, start_value: float, end_value: float) -> None:
        self._start_value = start_value
        self._end_value = end_value

    def __call__(self, where: float) -> float:
        return self._end_value + 0.5 * (self._start_value - self._end_value) * (1 + math.cos(math.pi * where))


class MultiStepParamScheduler(ParamScheduler):
    """``values[i]`` between milestones ``i - 1`` and ``i`` (counted in updates).

    Args:
        values: ``len(milestones) + 1`` values.
        num_updates: Total number of updates (where = 1).
        milestones: Increasing update numbers in (0, num_updates); default: evenly spaced.
    """

    def __init__(self, values: Sequence[float], num_updates: Optional[int] = None,
                 milestones: Optional[Sequence[int]] = None) -> None:
        if num_updates is None and milestones is None:
            raise ValueError("num_updates and milestones cannot both be None")
        if milestones is None:
            step_width = math.ceil(num_updates / float(len(values)))
            milestones = [step_width * (i + 1) for i in range(len(values) - 1)]
        else:
            # fvcore's rule: without num_updates, the last milestone is the total number of
            # updates, so there are as many milestones as values (detectron2's coco_schedule.py
            # writes values=[1.0, 0.1, 0.01], milestones=[60000, 80000, 90000]).
            expected = len(values) - (1 if num_updates is not None else 0)
            if len(milestones) != expected:
                raise ValueError(
                    f"MultiStepParamScheduler expects {expected} milestones for {len(values)} "
                    f"values ({'with' if num_updates is not None else 'without'} num_updates), "
                    f"got {len(milestones)}: {list(milestones)}."
                )
            if num_updates is None:
                num_updates, milestones = milestones[-1], list(milestones[:-1])
        if num_updates < len(values):
            raise ValueError(f"MultiStepParamScheduler: num_updates={num_updates} is smaller than "
                             f"the number of values ({len(values)}).")
        self._param_schedule = list(values)
        self._num_updates = num_updates
        self._milestones = list(milestones)
        start = 0
        for milestone in self._milestones:
            if milestone >= self._num_updates:
                raise ValueError(
                    f"Milestone must be smaller than total number of updates: "
                    f"num_updates={self._num_updates}, milestone={milestone}")
            if start >= milestone:
                raise ValueError(f"Milestone must be larger than start epoch: start_epoch={start}, milestone={milestone}")
            start = milestone

    def __call__(self, where: float) -> float:
        if where > 1.0:
            raise RuntimeError(f"where in ParamScheduler must be in [0, 1]: got {where}")
        epoch_num = int((where + self.WHERE_EPSILON) * self._num_updates)
        return self._param_schedule[bisect.bisect_right(self._milestones, epoch_num)]


class StepWithFixedGammaParamScheduler(ParamScheduler):
    """``base_value * gamma ** k`` over ``num_decays + 1`` equal parts of training."""

    def __init__(self, base_value: float, num_decays: int, gamma: float, num_updates: int) -> None:
        if base_value <= 0 or gamma <= 0 or num_decays <= 0 or num_updates <= 0:
            raise ValueError("base_value, gamma, num_decays and num_updates must be positive.")
        values = [base_value * gamma ** i for i in range(num_decays + 1)]
        self._sched = MultiStepParamScheduler(values, num_updates=num_updates)

    def __call__(self, where: float) -> float:
        return self._sched(where)


class CompositeParamScheduler(ParamScheduler):
    """Schedulers one after another, the ``i``-th for a fraction ``lengths[i]`` of training.

    Args:
        interval_scaling: Per scheduler, ``"rescaled"`` (it sees its own interval as [0, 1)) or
            ``"fixed"`` (it sees the global ``where``).
    """

    def __init__(self, schedulers: Sequence[ParamScheduler], lengths: Sequence[float],
                 interval_scaling: Sequence[str]) -> None:
        if not (len(schedulers) == len(lengths) == len(interval_scaling)):
            raise ValueError("schedulers, lengths and interval_scaling must have the same length.")
        if abs(sum(lengths) - 1.0) >= 1e-3:
            raise ValueError(f"The sum of the lengths must be 1, got {sum(lengths)}.")
        for s in interval_scaling:
            if s not in ("rescaled", "fixed"):
                raise ValueError(f"Unsupported interval_scaling: {s}")
        self._lengths = list(lengths)
        self._schedulers = list(schedulers)
        self._interval_scaling = list(interval_scaling)

    def __call__(self, where: float) -> float:
        i = 0
        running_total = self._lengths[i]
        while (where + self.WHERE_EPSILON) > running_total and i < len(self._schedulers) - 1:
            i += 1
            running_total += self._lengths[i]
        scheduler_where = where
        if self._interval_scaling[i] == "rescaled":
            scheduler_start = running_total - self._lengths[i]
            scheduler_where = (where - scheduler_start) / self._lengths[i]
        return self._schedulers[i](scheduler_where)


class WarmupParamScheduler(CompositeParamScheduler):
    """``scheduler`` preceded by a warmup over the first ``warmup_length`` of training.

    The warmup goes from ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)``,
    linearly (``"linear"``) or stays at the start value (``"constant"``).
    """

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float,
                 warmup_method: str = "linear", rescale_interval: bool = False) -> None:
        end_value = scheduler(warmup_length)  # what the warmup must reach
        start_value = warmup_factor * scheduler(0.0)
        if warmup_method == "constant":
            warmup: ParamScheduler = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        else:
            raise ValueError(f"Unknown warmup method: {warmup_method}")
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets each param group's LR to ``base_lr * multiplier(iteration / max_iter)``; call
    :meth:`step` once per iteration.

    Its ``state_dict`` holds only ``base_lrs`` and ``last_epoch`` (plain numbers), so
    checkpoints can be loaded with ``torch.load(weights_only=True)``.

    Args:
        optimizer: The optimizer.
        multiplier: A :class:`ParamScheduler`.
        max_iter: Total iterations.
        last_iter: Iteration to resume from (-1: start).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_iter: int = -1) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(
                f"LRMultiplier(multiplier=) must be a ParamScheduler instance. Got {multiplier} instead."
            )
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self):
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        multiplier = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * multiplier for base_lr in self.base_lrs]


def _get_warmup_factor_at_iter(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """The LR factor at iteration ``it`` of a warmup of ``warmup_iters`` iterations."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError(f"Unknown warmup method: {method}")


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Legacy ``WarmupMultiStepLR``: ``base_lr * warmup(it) * gamma ** #(milestones <= it)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_factor: float = 0.001, warmup_iters: int = 1000, warmup_method: str = "linear",
                 last_epoch: int = -1) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"Milestones should be a list of increasing integers. Got {milestones}")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        warmup = _get_warmup_factor_at_iter(self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor)
        decay = self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch)
        return [base_lr * warmup * decay for base_lr in self.base_lrs]


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Legacy ``WarmupCosineLR``: ``base_lr * warmup(it) * 0.5 * (1 + cos(pi * it / max_iters))``."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_iters: int, warmup_factor: float = 0.001,
                 warmup_iters: int = 1000, warmup_method: str = "linear", last_epoch: int = -1) -> None:
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        warmup = _get_warmup_factor_at_iter(self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor)
        return [base_lr * warmup * 0.5 * (1.0 + math.cos(math.pi * self.last_epoch / self.max_iters))
                for base_lr in self.base_lrs]

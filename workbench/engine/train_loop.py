"""The training loop: ``TrainerBase`` runs iterations and calls hooks around them;
``SimpleTrainer`` implements one iteration (load a batch, compute losses, backward, step);
``AMPTrainer`` does it in mixed precision.

::

    trainer = SimpleTrainer(model, data_loader, optimizer)
    trainer.register_hooks([hooks.IterationTimer(), hooks.LRScheduler(scheduler=scheduler)])
    trainer.train(start_iter=0, max_iter=1000)   # storage: trainer.storage (EventStorage)

Hook order per iteration: ``before_step`` (all hooks) -> ``run_step`` (``after_backward``
inside it) -> ``after_step`` (all hooks). ``trainer.iter`` is the current iteration;
``trainer.storage.iter`` follows it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from workbench.utils import comm
from workbench.utils.events import EventStorage, get_event_storage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer"]

logger = logging.getLogger(__name__)


_MAX_NAMED = 32  # images named in a non-finite-loss message


def _batch_names(batch: Any) -> Optional[List[Dict[str, Any]]]:
    """The "image_id" / "file_name" of each dict of a ``list[dict]`` batch, else None."""
    if not isinstance(batch, (list, tuple)) or not batch or not all(isinstance(d, dict) for d in batch):
        return None
    return [{k: d[k] for k in ("image_id", "file_name") if k in d} for d in batch]


class HookBase:
    """Something to run at fixed points of training; override the methods you need.

    The trainer is available as ``self.trainer`` (a weak proxy) once registered.
    """

    trainer: "TrainerBase" = None  # set by TrainerBase.register_hooks

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration (also after an exception)."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_backward(self) -> None:
        """Called after the backward pass of each iteration, before the optimizer step."""

    def after_step(self) -> None:
        """Called after each iteration."""

    def state_dict(self) -> Dict[str, Any]:
        """State to save in checkpoints (e.g. an LR scheduler's); empty if none."""
        return {}


class TrainerBase:
    """Runs ``run_step`` from ``start_iter`` to ``max_iter - 1`` inside an ``EventStorage``,
    calling the hooks around each step.

    Attributes:
        iter: The current iteration; ``max_iter`` after a successful run.
        start_iter: First iteration of this run.
        max_iter: One past the last iteration.
        storage: The ``EventStorage`` of the run.
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int = 0
        self.storage: EventStorage

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Adds hooks (None entries are skipped); they run in registration order."""
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"Expected a HookBase, got {type(h).__name__}.")
            # A weak proxy avoids a trainer <-> hook reference cycle (and hooks that keep a
            # finished trainer alive).
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Runs iterations ``start_iter .. max_iter - 1``."""
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # iter == max_iter tells after_train hooks that training finished normally.
                self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        ret: Dict[str, Any] = {"iteration": self.iter}
        hooks_state = {}
        for h in self._hooks:
            sd = h.state_dict()
            if sd:
                name = type(h).__qualname__
                if name in hooks_state:
                    continue  # two hooks of one type: only the first is saved
                hooks_state[name] = sd
        if hooks_state:
            ret["hooks"] = hooks_state
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.iter = state_dict["iteration"]
        for key, value in state_dict.get("hooks", {}).items():
            for h in self._hooks:
                if type(h).__qualname__ == key:
                    h.load_state_dict(value)
                    break
            else:
                logger.warning("Cannot find the hook '%s', its state_dict is ignored.", key)


class SimpleTrainer(TrainerBase):
    """One iteration = one batch from ``data_loader``, ``model(batch)`` -> dict of losses, their
    sum's backward, ``optimizer.step()``.

    Losses are recorded in the storage (averaged over ranks, with ``total_loss``) along with
    ``data_time`` (the slowest rank's). A non-finite total loss stops training with
    ``FloatingPointError``; when the batch is a ``list[dict]`` the message names its images
    ("image_id" / "file_name" of each dict).

    Args:
        model: In training mode, returns ``{name: scalar loss}`` (or one scalar loss).
        data_loader: An iterable of batches (iterated once, so make it infinite).
        optimizer: The optimizer.
        gather_metric_period: Record metrics every this many iterations (1: every iteration).
            Metric gathering costs a device sync (``.item()``) and, with several ranks, a
            collective; a larger period saves both.
        zero_grad_before_forward: Zero the gradients before the forward pass instead of
            between forward and backward (e.g. for a model whose forward reads gradients).
        async_write_metrics: Record metrics in a background thread (one worker, so in
            iteration order) instead of blocking the step. Pending writes are flushed before
            the hooks' ``after_train`` runs. A non-finite loss found there still raises
            ``FloatingPointError`` naming its iteration, but at a later step (when the training
            thread notices the failed write) or at the end of training, not at once.
    """

    def __init__(self, model: torch.nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 gather_metric_period: int = 1, zero_grad_before_forward: bool = False,
                 async_write_metrics: bool = False) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.gather_metric_period = max(1, int(gather_metric_period))
        self.zero_grad_before_forward = zero_grad_before_forward
        self.async_write_metrics = async_write_metrics
        # Created on the first asynchronous write and shut down after training.
        self.concurrent_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._pending_writes: List[concurrent.futures.Future] = []

    @property
    def _data_loader_iter(self):
        # Created lazily: starting data-loader workers is deferred to the first step.
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def reset_data_loader(self, data_loader_builder: Callable[[], Iterable]) -> None:
        """Replaces the data loader by ``data_loader_builder()`` (called without arguments).

        The old loader (and its iterator, with any worker processes) is released first, so that
        two loaders never hold workers at the same time; the next step starts iterating the new
        one.
        """
        self._data_loader_iter_obj = None
        del self.data_loader
        self.data_loader = data_loader_builder()

    def run_step(self) -> None:
        if not self.model.training:
            raise RuntimeError("[SimpleTrainer] model was changed to eval mode!")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad(set_to_none=True)
        loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            losses = loss_dict
            loss_dict = {"total_loss": loss_dict}
        else:
            losses = sum(loss_dict.values())

        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad(set_to_none=True)
        losses.backward()
        self.after_backward()
        self._record_metrics(loss_dict, data_time, batch=data)
        self.optimizer.step()

    def _record_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float,
                        batch: Any = None) -> None:
        """Writes this iteration's metrics now, or queues them with ``async_write_metrics``.

        ``batch``: what the model was given, to name its images if the loss is not finite.
        """
        # Only the names are kept, not the batch's tensors (a queued write may wait a while).
        names = _batch_names(batch)
        if not self.async_write_metrics:
            self._write_metrics(loss_dict, data_time, batch_names=names)
            return
        self._raise_failed_writes(wait=False)
        if self.concurrent_executor is None:
            self.concurrent_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="write_metrics"
            )
        # Detached here: the worker must not touch the autograd graph of a later step.
        loss_dict = {k: v.detach() for k, v in loss_dict.items()}
        self._pending_writes.append(
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter,
                                            batch_names=names)
        )

    def _raise_failed_writes(self, wait: bool) -> None:
        """Drops finished background writes; re-raises the first that failed."""
        if wait:
            concurrent.futures.wait(self._pending_writes)
        done = [f for f in self._pending_writes if f.done()]
        self._pending_writes = [f for f in self._pending_writes if not f.done()]
        for f in done:
            if f.exception() is not None:
                raise f.exception()

    def after_train(self) -> None:
        # Flush queued metric writes first, so that hooks (e.g. the final PeriodicWriter
        # write) see every iteration's metrics.
        error: Optional[BaseException] = None
        try:
            self._raise_failed_writes(wait=True)
        except Exception as e:  # reported after the hooks ran
            error = e
        try:
            super().after_train()
        finally:
            if self.concurrent_executor is not None:
                self.concurrent_executor.shutdown(wait=True)
                self.concurrent_executor = None
        # Training that already failed keeps its own exception (after_train runs in a finally).
        if error is not None:
            if self.iter == self.max_iter:
                raise error
            logger.error("A background metric write failed too: %r", error)

    def _write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = "",
                       iter: Optional[int] = None, batch_names: Optional[List[Dict[str, Any]]] = None) -> None:
        cur_iter = self.iter if iter is None else iter
        if (cur_iter + 1) % self.gather_metric_period == 0:
            try:
                SimpleTrainer.write_metrics(loss_dict, data_time, cur_iter, prefix)
            except FloatingPointError as e:
                if batch_names is None:
                    logger.exception("Exception in writing metrics:")
                    raise
                err = FloatingPointError(f"{e}\n{self._describe_batch(batch_names, cur_iter)}")
                logger.error("Exception in writing metrics: %s", err)
                raise err from e
            except Exception:
                logger.exception("Exception in writing metrics:")
                raise

    def _describe_batch(self, names: List[Dict[str, Any]], cur_iter: int) -> str:
        shown = [f"[{i}] " + (", ".join(f"{k}={v!r}" for k, v in d.items()) or "(no image_id / file_name)")
                 for i, d in enumerate(names[:_MAX_NAMED])]
        more = f"; ... ({len(names) - len(shown)} more)" if len(names) > len(shown) else ""
        text = (f"The batch of iteration {cur_iter}, as given to the model"
                f"{' on this rank' if comm.get_world_size() > 1 else ''}: {'; '.join(shown)}{more}.")
        if self.gather_metric_period > 1:
            text += (f" Losses are only checked every {self.gather_metric_period} iterations "
                     "(gather_metric_period), so the first non-finite loss may have come from one "
                     f"of the {self.gather_metric_period - 1} batches before it.")
        return text

    @staticmethod
    def write_metrics(loss_dict: Mapping[str, torch.Tensor], data_time: float, cur_iter: Optional[int] = None,
                      prefix: str = "") -> None:
        """Gathers the losses of all ranks and records their mean on rank 0.

        Args:
            loss_dict: ``{name: scalar tensor}``.
            data_time: Seconds spent waiting for data this iteration.
            cur_iter: Iteration to record at (default: the storage's).
            prefix: Prefix of "total_loss".
        """
        metrics_dict = {k: v.detach().cpu().item() for k, v in loss_dict.items()}
        metrics_dict["data_time"] = data_time
        all_metrics_dict = comm.gather(metrics_dict)
        if comm.is_main_process():
            storage = get_event_storage()
            # data_time varies between ranks; the slowest one is what holds the step back.
            storage.put_scalar("data_time", np.max([x.pop("data_time") for x in all_metrics_dict]), cur_iter=cur_iter)
            metrics_dict = {k: float(np.mean([x[k] for x in all_metrics_dict])) for k in all_metrics_dict[0]}
            total_losses_reduced = sum(metrics_dict.values())
            if not np.isfinite(total_losses_reduced):
                raise FloatingPointError(
                    f"Loss became infinite or NaN at iteration={storage.iter if cur_iter is None else cur_iter}!\nloss_dict = {metrics_dict}"
                )
            storage.put_scalar(f"{prefix}total_loss", total_losses_reduced, cur_iter=cur_iter)
            if len(metrics_dict) > 1:
                storage.put_scalars(cur_iter=cur_iter, **metrics_dict)

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["optimizer"] = self.optimizer.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])


def _model_device_type(model: torch.nn.Module) -> str:
    try:
        return next(model.parameters()).device.type
    except StopIteration:
        return "cpu"


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` under ``torch.autocast``.

    On CUDA: float16 with a ``GradScaler`` (detectron2's behaviour). On CPU: bfloat16, which
    needs no loss scaling (the scaler is then disabled). Gradient clipping done inside the
    optimizer's ``step`` sees unscaled gradients (the scaler unscales before stepping).

    Args:
        model, data_loader, optimizer, gather_metric_period, zero_grad_before_forward,
            async_write_metrics: As for :class:`SimpleTrainer` (the argument order is
            detectron2's).
        grad_scaler: A ``torch.amp.GradScaler``; default: enabled on CUDA only.
        precision: Autocast dtype; default float16 on CUDA, bfloat16 on CPU.
        log_grad_scaler: Record the scaler's scale as ``[metric]grad_scaler`` every step.
    """

    def __init__(self, model: torch.nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 gather_metric_period: int = 1, zero_grad_before_forward: bool = False,
                 grad_scaler=None, precision: Optional[torch.dtype] = None,
                 log_grad_scaler: bool = False, async_write_metrics: bool = False) -> None:
        unsupported = "AMPTrainer does not support single-process multi-device training!"
        if isinstance(model, DistributedDataParallel) and model.device_ids and len(model.device_ids) > 1:
            raise ValueError(unsupported)
        if isinstance(model, DataParallel):
            raise ValueError(unsupported)
        super().__init__(model, data_loader, optimizer, gather_metric_period,
                         zero_grad_before_forward, async_write_metrics)
        self.log_grad_scaler = log_grad_scaler
        self.device_type = _model_device_type(model)
        if precision is None:
            precision = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        self.precision = precision
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device_type, enabled=self.precision == torch.float16)
        self.grad_scaler = grad_scaler

    def run_step(self) -> None:
        if not self.model.training:
            raise RuntimeError("[AMPTrainer] model was changed to eval mode!")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        self._record_metrics(loss_dict, data_time, batch=data)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "grad_scaler" in state_dict and state_dict["grad_scaler"]:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])

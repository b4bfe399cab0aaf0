"""Running a model over a dataset and feeding its outputs to evaluators.

::

    evaluator = COCOEvaluator("shapes_val", output_dir="out")
    loader = build_detection_test_loader(cfg, "shapes_val")
    results = inference_on_dataset(model, loader, evaluator)   # {"bbox": {"AP": ...}, ...}
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict, abc
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn
from tqdm import tqdm

from workbench.utils.comm import get_world_size, is_main_process

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]


class DatasetEvaluator:
    """Accumulates (inputs, outputs) pairs and computes metrics at the end.

    In a distributed run each rank sees its share of the dataset; ``evaluate`` gathers the
    shares and returns results on rank 0 (``{}`` elsewhere).
    """

    def reset(self) -> None:
        """Prepares for a new evaluation round."""

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Takes one batch of model inputs and the model's outputs for them."""

    def evaluate(self) -> Optional[Dict[str, Any]]:
        """Returns ``{task: {metric: value}}`` for everything processed since :meth:`reset`."""


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result keys must not collide."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs, outputs) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Dict[str, Any]:
        results: Dict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if is_main_process() and result is not None:
                for k, v in result.items():
                    if k in results:
                        raise KeyError(f"Different evaluators produce results with the same key {k}")
                    results[k] = v
        return results


def _model_on_cuda(model: Any) -> bool:
    if isinstance(model, nn.Module):
        try:
            return next(model.parameters()).is_cuda
        except StopIteration:
            return False
    return torch.cuda.is_available()


def inference_on_dataset(model: Union[nn.Module, Any], data_loader: Iterable,
                         evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
                         *, progress: Optional[bool] = None) -> Dict[str, Any]:
    """Runs ``model`` on every batch of ``data_loader`` (in eval mode, without gradients) and
    returns ``evaluator.evaluate()``.

    A tqdm progress bar shows on rank 0 (``progress=False`` hides it); the total and
    per-image times (excluding the first few warm-up batches) are logged.

    Args:
        model: Called as ``model(inputs)``; an ``nn.Module`` is put in eval mode for the run
            and back to its previous mode afterwards.
        data_loader: Batches of model inputs (e.g. :func:`build_detection_test_loader`).
        evaluator: An evaluator, a list of them, or None (just run the model).
        progress: Show the progress bar (default: on rank 0).

    Returns:
        The evaluator's results (``{}`` if none).
    """
    num_devices = get_world_size()
    logger = logging.getLogger(__name__)
    try:
        total = len(data_loader)  # inference loaders have a length
    except TypeError:
        total = None
    logger.info("Start inference on %s batches", total if total is not None else "?")

    if evaluator is None:
        evaluator = DatasetEvaluators([])
    if isinstance(evaluator, abc.MutableSequence):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    num_warmup = min(5, total - 1) if total else 0
    sync = _model_on_cuda(model)
    start_time = time.perf_counter()
    total_data_time = total_compute_time = total_eval_time = 0.0
    num_batches = 0
    show = is_main_process() if progress is None else progress
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        bar = stack.enter_context(tqdm(total=total, disable=not show, desc="inference", unit="batch",
                                       dynamic_ncols=True, leave=False))
        start_data_time = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            total_data_time += time.perf_counter() - start_data_time
            if idx == num_warmup:
                # Timings start after the warm-up batches (allocations, lazy inits).
                start_time = time.perf_counter()
                total_data_time = total_compute_time = total_eval_time = 0.0

            start_compute_time = time.perf_counter()
            outputs = model(inputs)
            if sync:
                torch.cuda.synchronize()
            total_compute_time += time.perf_counter() - start_compute_time

            start_eval_time = time.perf_counter()
            evaluator.process(inputs, outputs)
            total_eval_time += time.perf_counter() - start_eval_time

            iters_after_start = idx + 1 - num_warmup * int(idx >= num_warmup)
            bar.update(1)
            bar.set_postfix(data=f"{total_data_time / iters_after_start:.3f}s",
                            infer=f"{total_compute_time / iters_after_start:.3f}s",
                            eval=f"{total_eval_time / iters_after_start:.3f}s", refresh=False)
            num_batches = idx + 1
            start_data_time = time.perf_counter()

    total_time = time.perf_counter() - start_time
    timed = max(num_batches - num_warmup, 1)
    logger.info("Total inference time: %s (%.6f s / iter per device, on %d devices)",
                str(datetime.timedelta(seconds=int(total_time))), total_time / timed, num_devices)
    logger.info("Total inference pure compute time: %s (%.6f s / iter per device, on %d devices)",
                str(datetime.timedelta(seconds=int(total_compute_time))), total_compute_time / timed,
                num_devices)

    results = evaluator.evaluate()
    # An evaluator may return None on non-main ranks; callers expect a dict.
    return {} if results is None else results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Puts ``model`` in eval mode inside the block, then back to its previous mode."""
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)

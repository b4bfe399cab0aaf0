"""SimpleTrainer options on a tiny linear model: zero_grad placement, asynchronous metric
writes, and swapping the data loader."""

from __future__ import annotations

import itertools
import threading

import pytest
import torch
from torch import nn

from workbench.engine import AMPTrainer, SimpleTrainer
from workbench.engine.train_loop import HookBase
from workbench.utils.events import get_event_storage


class _LinearLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.grads_seen_in_forward = []

    def forward(self, x):
        self.grads_seen_in_forward.append(None if self.w.grad is None else self.w.grad.clone())
        return {"loss_a": (self.w * x).sum(), "loss_b": (self.w * 0).sum()}


def _loader(value=1.0):
    return itertools.repeat(torch.tensor([value]))


def _trainer(model, **kwargs):
    return SimpleTrainer(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


@pytest.mark.parametrize("zero_first, expect_grad_in_forward", [(False, True), (True, False)])
def test_zero_grad_before_forward(zero_first, expect_grad_in_forward):
    model = _LinearLoss()
    trainer = _trainer(model, zero_grad_before_forward=zero_first)
    assert trainer.zero_grad_before_forward is zero_first
    trainer.train(0, 3)
    seen = model.grads_seen_in_forward[1:]  # no gradient exists before the first backward
    assert all((g is not None) == expect_grad_in_forward for g in seen)
    # Either way every step uses one batch's gradient: w = 1 - 3 * 0.1.
    assert model.w.item() == pytest.approx(0.7)


def test_async_metrics_match_sync_metrics_and_are_flushed_before_hooks():
    results = {}
    for async_write in (False, True):
        model = _LinearLoss()
        trainer = _trainer(model, async_write_metrics=async_write)
        seen_at_after_train = {}

        class _Check(HookBase):
            def after_train(self):
                hist = self.trainer.storage.history("total_loss").values()
                seen_at_after_train["iters"] = [it for _, it in hist]

        trainer.register_hooks([_Check()])
        trainer.train(0, 5)
        assert seen_at_after_train["iters"] == [0, 1, 2, 3, 4]
        results[async_write] = trainer.storage.history("total_loss").values()
        # The thread pool is gone after training.
        assert trainer.concurrent_executor is None
    assert results[True] == results[False]


def test_async_metrics_are_written_off_the_training_thread():
    threads = set()
    real = SimpleTrainer.write_metrics

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)

    model = _LinearLoss()
    trainer = _trainer(model, async_write_metrics=True)
    try:
        SimpleTrainer.write_metrics = staticmethod(spy)
        trainer.train(0, 2)
    finally:
        SimpleTrainer.write_metrics = staticmethod(real)
    assert threads and threading.current_thread().name not in threads


def test_async_non_finite_loss_still_stops_training():
    class _NanAt2(_LinearLoss):
        def forward(self, x):
            out = super().forward(x)
            if len(self.grads_seen_in_forward) == 3:
                out["loss_a"] = out["loss_a"] * float("nan")
            return out

    model = _NanAt2()
    trainer = _trainer(model, async_write_metrics=True)
    # Raised when the training thread notices the failed write: at a later step or at the end.
    with pytest.raises(FloatingPointError, match="iteration=2"):
        trainer.train(0, 10)
    assert trainer.concurrent_executor is None


def test_async_non_finite_loss_on_last_iteration_raises_at_end():
    class _NanLast(_LinearLoss):
        def forward(self, x):
            out = super().forward(x)
            if len(self.grads_seen_in_forward) == 2:
                out["loss_a"] = out["loss_a"] * float("inf")
            return out

    trainer = _trainer(_NanLast(), async_write_metrics=True)
    with pytest.raises(FloatingPointError, match="iteration=1"):
        trainer.train(0, 2)


def test_reset_data_loader_switches_to_the_new_loader():
    model = _LinearLoss()
    trainer = _trainer(model)
    values = []

    class _Record(HookBase):
        def after_step(self):
            values.append(get_event_storage().latest()["loss_a"][0])

    trainer.register_hooks([_Record()])
    trainer.train(0, 1)
    built = []
    trainer.reset_data_loader(lambda: built.append(1) or _loader(0.0))
    assert built == [1] and trainer._data_loader_iter_obj is None
    trainer.train(1, 2)
    assert values[0] != 0.0 and values[1] == 0.0


def test_amp_trainer_takes_detectron2_argument_order():
    model = _LinearLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = AMPTrainer(model, _loader(), opt, 1, True, None, torch.bfloat16, True, True)
    assert trainer.zero_grad_before_forward and trainer.async_write_metrics
    assert trainer.log_grad_scaler and trainer.precision == torch.bfloat16
    trainer.train(0, 2)
    assert "[metric]grad_scaler" in trainer.storage.latest()
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1]


class _NanOnImage(nn.Module):
    """A loss that becomes NaN when the batch holds the image with id 7."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, batch):
        bad = any(d["image_id"] == 7 for d in batch)
        return {"loss": self.w.sum() * (float("nan") if bad else 1.0)}


def _named_batches():
    ids = [[1, 2], [3, 7]] + [[4, 5]] * 10
    return iter([[{"image_id": i, "file_name": f"img_{i}.jpg", "image": torch.zeros(1)} for i in b]
                 for b in ids])


@pytest.mark.parametrize("async_write", [False, True])
def test_non_finite_loss_names_the_batch_images(async_write):
    model = _NanOnImage()
    trainer = SimpleTrainer(model, _named_batches(), torch.optim.SGD(model.parameters(), lr=0.0),
                            async_write_metrics=async_write)
    with pytest.raises(FloatingPointError, match="Loss became infinite or NaN at iteration=1!") as info:
        trainer.train(0, 5)
    assert info.match(r"The batch of iteration 1, as given to the model: \[0\] image_id=3, "
                      r"file_name='img_3.jpg'; \[1\] image_id=7, file_name='img_7.jpg'\.$")


def test_non_finite_loss_says_when_losses_are_checked_every_few_iterations():
    model = _NanOnImage()
    trainer = SimpleTrainer(model, _named_batches(), torch.optim.SGD(model.parameters(), lr=0.0),
                            gather_metric_period=3)
    with pytest.raises(FloatingPointError, match="iteration=2") as info:
        trainer.train(0, 5)
    # The NaN came from iteration 1's batch; iteration 2's is named, with the caveat.
    assert info.match(r"image_id=4.*checked every 3 iterations \(gather_metric_period\), so the first "
                      r"non-finite loss may have come from one of the 2 batches before it\.")

"""BestCheckpointer: saves on improvement, at EvalHook's iterations, and warns on a missing or
non-finite metric."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from torch import nn

from workbench.checkpoint import DetectionCheckpointer
from workbench.engine import SimpleTrainer, hooks


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return {"loss": (self.w * x).sum()}


class _FakeCheckpointer:
    def __init__(self):
        self.saved = []

    def save(self, name, **kwargs):
        self.saved.append((name, kwargs))


def _train(scores, checkpointer, max_iter, period=2, mode="max", metric="val/AP"):
    """Trains with an EvalHook returning ``scores`` one after another, then BestCheckpointer."""
    model = _Model()
    trainer = SimpleTrainer(model, itertools.repeat(torch.ones(1)),
                            torch.optim.SGD(model.parameters(), lr=0.0))
    values = iter(scores)
    eval_hook = hooks.EvalHook(period, lambda: {"val": {"AP": next(values)}})
    best = hooks.BestCheckpointer(period, checkpointer, metric, mode=mode)
    trainer.register_hooks([eval_hook, best])
    trainer.train(0, max_iter)
    return best


def test_saves_only_on_improvement_with_the_metric_iteration():
    ckpt = _FakeCheckpointer()
    # Evaluations after iterations 1, 3, 5 (period) and 7 (the last, in after_train).
    best = _train([10.0, 5.0, 20.0, 20.0], ckpt, max_iter=8)
    assert ckpt.saved == [("model_best", {"iteration": 1}), ("model_best", {"iteration": 5})]
    assert (best.best_metric, best.best_iter) == (20.0, 5)


def test_min_mode_and_real_checkpoint_file(tmp_path):
    ckpt = DetectionCheckpointer(_Model(), save_dir=str(tmp_path), save_to_disk=True)
    best = _train([3.0, 1.0, 2.0], ckpt, max_iter=6, mode="min")
    assert (best.best_metric, best.best_iter) == (1.0, 3)
    saved = torch.load(tmp_path / "model_best.pth", weights_only=False)
    assert saved["iteration"] == 3


def test_missing_metric_warns_and_does_not_save(caplog):
    ckpt = _FakeCheckpointer()
    with caplog.at_level(logging.WARNING, logger="workbench.engine.hooks"):
        _train([1.0, 2.0], ckpt, max_iter=4, metric="val/nope")
    assert ckpt.saved == []
    assert "val/nope" in caplog.text


def test_nan_metric_warns_and_is_never_best(caplog):
    ckpt = _FakeCheckpointer()
    with caplog.at_level(logging.WARNING, logger="workbench.engine.hooks"):
        best = _train([float("nan"), 1.0, float("nan")], ckpt, max_iter=6)
    assert ckpt.saved == [("model_best", {"iteration": 3})]
    assert best.best_metric == 1.0
    assert "nan" in caplog.text and "val/AP" in caplog.text


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="'avg'"):
        hooks.BestCheckpointer(1, _FakeCheckpointer(), "x", mode="avg")

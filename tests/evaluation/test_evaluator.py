"""inference_on_dataset: every batch reaches the evaluators, eval mode and no_grad inside,
the model's mode restored after; DatasetEvaluators merges results; result helpers."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from workbench.evaluation import (
    DatasetEvaluator,
    flatten_results_dict,
    inference_context,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)
from workbench.config import get_cfg


@pytest.fixture(autouse=True)
def _propagate_logs():
    """setup_logger() (run by training tests) stops "workbench" records at its own handlers;
    let them reach caplog."""
    logger = logging.getLogger("workbench")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = []

    def forward(self, inputs):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [{"y": x["x"] * self.w} for x in inputs]


class _Sum(DatasetEvaluator):
    def __init__(self, key):
        self.key = key

    def reset(self):
        self.total, self.count = 0.0, 0

    def process(self, inputs, outputs):
        for o in outputs:
            self.total += float(o["y"])
            self.count += 1

    def evaluate(self):
        return {self.key: {"sum": self.total, "n": self.count}}


def test_inference_on_dataset(caplog):
    model = _Model().train()
    loader = [[{"x": torch.tensor(float(i))}] for i in range(8)]
    with caplog.at_level(logging.INFO, logger="workbench.evaluation.evaluator"):
        res = inference_on_dataset(model, loader, [_Sum("a"), _Sum("b")], progress=False)
    assert res == {"a": {"sum": 28.0, "n": 8}, "b": {"sum": 28.0, "n": 8}}
    assert set(model.calls) == {(False, False)}  # eval mode, no gradients
    assert model.training
    assert any("Total inference time" in r.message for r in caplog.records)
    assert inference_on_dataset(model, loader, None, progress=False) == {}


def test_evaluators_must_not_collide():
    with pytest.raises(KeyError, match="same key"):
        inference_on_dataset(_Model(), [[{"x": torch.tensor(1.0)}]], [_Sum("a"), _Sum("a")], progress=False)


def test_inference_context_restores_mode_on_error():
    model = _Model().train()
    with pytest.raises(RuntimeError):
        with inference_context(model):
            assert not model.training
            raise RuntimeError
    assert model.training


def test_result_helpers(caplog):
    results = {"bbox": {"AP": 50.0, "AP-cat": 40.0}, "sem_seg": {"mIoU": 12.5}}
    assert flatten_results_dict(results) == {"bbox/AP": 50.0, "bbox/AP-cat": 40.0, "sem_seg/mIoU": 12.5}
    with caplog.at_level(logging.INFO, logger="workbench.evaluation.testing"):
        print_csv_format(results)
    lines = [r.message for r in caplog.records]
    assert "copypaste: AP" in lines and "copypaste: 50.0000" in lines  # per-class "AP-cat" left out
    cfg = get_cfg()
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 50.5, 1.0]]
    assert verify_results(cfg, results)
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 60.0, 1.0]]
    with pytest.raises(SystemExit):
        verify_results(cfg, results)

"""Training loops and hooks: the loss falls, hooks run in order, checkpoints resume at the saved
iteration with the same LR, metric files are written, AMP runs on CPU."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from workbench.data import build_detection_train_loader
from workbench.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, hooks
from workbench.engine.train_loop import HookBase
from workbench.modeling import build_model
from workbench.solver import build_lr_scheduler, build_optimizer
from workbench.utils.env import seed_all_rng


def _simple_trainer(cfg, trainer_cls=SimpleTrainer):
    seed_all_rng(0)
    model = build_model(cfg)
    return trainer_cls(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))


def test_loss_falls_on_a_tiny_dataset(rect_dataset, make_tiny_cfg):
    cfg = make_tiny_cfg("DATASETS.TRAIN", (rect_dataset,))
    trainer = _simple_trainer(cfg)
    trainer.register_hooks([hooks.IterationTimer(), hooks.LRScheduler(scheduler=build_lr_scheduler(cfg, trainer.optimizer))])
    trainer.train(0, 24)
    assert trainer.iter == 24
    total = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(total) == 24 and all(np.isfinite(total))
    first, last = np.mean(total[:6]), np.mean(total[-6:])
    assert last < 0.75 * first, f"loss did not fall: {np.round(total, 3)}"
    latest = trainer.storage.latest()
    for key in ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc", "data_time", "time", "lr"):
        assert key in latest, key
    assert latest["lr"][0] == pytest.approx(0.005)


class _Recorder(HookBase):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def before_train(self):
        self.log.append((self.name, "before_train", self.trainer.iter))

    def before_step(self):
        self.log.append((self.name, "before_step", self.trainer.iter))

    def after_backward(self):
        grads = [p.grad for p in self.trainer.model.parameters() if p.requires_grad]
        assert any(g is not None for g in grads)
        self.log.append((self.name, "after_backward", self.trainer.iter))

    def after_step(self):
        self.log.append((self.name, "after_step", self.trainer.storage.iter))

    def after_train(self):
        self.log.append((self.name, "after_train", self.trainer.iter))


def test_hook_order_and_eval_hook(rect_dataset, make_tiny_cfg):
    cfg = make_tiny_cfg("DATASETS.TRAIN", (rect_dataset,))
    trainer = _simple_trainer(cfg)
    log, evals = [], []
    trainer.register_hooks([
        _Recorder(log, "a"), None, _Recorder(log, "b"),
        hooks.EvalHook(2, lambda: evals.append(trainer.iter) or {"task": {"metric": float(len(evals))}}),
        hooks.CallbackHook(after_step=lambda t: log.append(("cb", "after_step", t.iter))),
    ])
    trainer.train(5, 8)
    assert log[:2] == [("a", "before_train", 5), ("b", "before_train", 5)]
    assert log[2:8] == [("a", "before_step", 5), ("b", "before_step", 5), ("a", "after_backward", 5),
                        ("b", "after_backward", 5), ("a", "after_step", 5), ("b", "after_step", 5)]
    assert ("cb", "after_step", 7) in log
    assert log[-2:] == [("a", "after_train", 8), ("b", "after_train", 8)]
    # every 2 iterations (after iteration 5, i.e. at 6 done) and once after training
    assert evals == [5, 8]
    assert trainer.storage.latest()["task/metric"][0] == 2.0


def test_non_finite_loss_stops_training(rect_dataset, make_tiny_cfg):
    cfg = make_tiny_cfg("DATASETS.TRAIN", (rect_dataset,))
    trainer = _simple_trainer(cfg)

    class Poison(HookBase):
        def after_backward(self):
            pass

    trainer.model.roi_heads.box_predictor.cls_score.bias.data.fill_(float("nan"))
    trainer.register_hooks([Poison()])
    with pytest.raises(FloatingPointError, match="infinite or NaN at iteration=0") as info:
        trainer.train(0, 2)
    # The message names the images the model was given (the loader's "image_id" / "file_name").
    assert info.match(r"The batch of iteration 0, as given to the model: \[0\] image_id=\d, "
                      r"file_name='[^']*images/\d\.png'; \[1\] image_id=\d, file_name=")


def test_amp_trainer_runs_on_cpu(rect_dataset, make_tiny_cfg):
    cfg = make_tiny_cfg("DATASETS.TRAIN", (rect_dataset,))
    trainer = _simple_trainer(cfg, AMPTrainer)
    assert trainer.precision == torch.bfloat16 and not trainer.grad_scaler.is_enabled()
    trainer.train(0, 2)
    assert np.isfinite(trainer.storage.latest()["total_loss"][0])
    assert "grad_scaler" in trainer.state_dict()


def _default_trainer(cfg):
    seed_all_rng(cfg.SEED)
    return DefaultTrainer(cfg)


def test_default_trainer_checkpoints_metrics_and_resume(rect_dataset, make_tiny_cfg, tmp_path):
    out_a = str(tmp_path / "a")
    cfg = make_tiny_cfg("DATASETS.TRAIN", (rect_dataset,), "OUTPUT_DIR", out_a, "SOLVER.MAX_ITER", 8,
                        "SOLVER.CHECKPOINT_PERIOD", 4, "SOLVER.STEPS", (5,), "SOLVER.WARMUP_ITERS", 3,
                        "SOLVER.WARMUP_FACTOR", 0.1)
    DefaultTrainer.WRITER_PERIOD = 2
    try:
        trainer = _default_trainer(cfg)
        trainer.resume_or_load(resume=False)
        assert trainer.start_iter == 0
        trainer.train()
    finally:
        DefaultTrainer.WRITER_PERIOD = 20
    lr_a = dict((int(it), v) for v, it in trainer.storage.history("lr").values())
    assert lr_a[0] == pytest.approx(0.0005) and lr_a[4] == pytest.approx(0.005) and lr_a[5] == pytest.approx(0.0005)
    assert sorted(f for f in os.listdir(out_a) if f.endswith(".pth")) == ["model_0000003.pth", "model_0000007.pth",
                                                                         "model_final.pth"]
    with open(os.path.join(out_a, "metrics.json")) as f:
        records = [json.loads(line) for line in f]
    assert [r["iteration"] for r in records] == [1, 3, 5, 7]
    assert all("total_loss" in r and "lr" in r for r in records)

    # Resume from the checkpoint of iteration 3 in a fresh folder.
    out_b = str(tmp_path / "b")
    os.makedirs(out_b)
    shutil.copy(os.path.join(out_a, "model_0000003.pth"), out_b)
    with open(os.path.join(out_b, "last_checkpoint"), "w") as f:
        f.write("model_0000003.pth")
    cfg_b = cfg.clone()
    cfg_b.OUTPUT_DIR = out_b
    resumed = _default_trainer(cfg_b)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    saved = torch.load(os.path.join(out_b, "model_0000003.pth"), weights_only=True)
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, saved["model"][k], msg=k)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(lr_a[4])
    assert resumed.optimizer.state_dict()["state"], "momentum buffers were not restored"
    resumed.train()
    lr_b = dict((int(it), v) for v, it in resumed.storage.history("lr").values())
    assert sorted(lr_b) == [4, 5, 6, 7]
    for it in lr_b:
        assert lr_b[it] == pytest.approx(lr_a[it]), it
    assert resumed.scheduler.last_epoch == 8

    # Without --resume, MODEL.WEIGHTS is loaded and training starts at 0.
    cfg_c = cfg.clone()
    cfg_c.OUTPUT_DIR = out_b
    cfg_c.MODEL.WEIGHTS = os.path.join(out_a, "model_final.pth")
    fresh = _default_trainer(cfg_c)
    fresh.resume_or_load(resume=False)
    assert fresh.start_iter == 0


def test_auto_scale_workers(make_tiny_cfg):
    cfg = make_tiny_cfg("SOLVER.REFERENCE_WORLD_SIZE", 8, "SOLVER.IMS_PER_BATCH", 16, "SOLVER.BASE_LR", 0.02,
                        "SOLVER.MAX_ITER", 1000, "SOLVER.STEPS", (600, 800), "SOLVER.WARMUP_ITERS", 100)
    scaled = DefaultTrainer.auto_scale_workers(cfg, 2)
    assert (scaled.SOLVER.IMS_PER_BATCH, scaled.SOLVER.MAX_ITER, scaled.SOLVER.STEPS) == (4, 4000, (2400, 3200))
    assert scaled.SOLVER.BASE_LR == pytest.approx(0.005) and scaled.SOLVER.WARMUP_ITERS == 400
    assert DefaultTrainer.auto_scale_workers(cfg, 8) is cfg

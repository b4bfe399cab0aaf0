"""Optimizer parameter groups, gradient clipping and LR schedules from cfg.SOLVER."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from workbench.config import get_cfg
from workbench.solver import (
    LRMultiplier,
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
)


def _lrs(optimizer, scheduler, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _solver_cfg(**kw):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.STEPS = (60, 80)
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 0.01
    for k, v in kw.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_warmup_multistep_matches_the_legacy_scheduler():
    cfg = _solver_cfg()
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_lr_scheduler(cfg, opt)
    assert isinstance(sched, LRMultiplier)
    new = _lrs(opt, sched, 100)
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    legacy = _lrs(opt2, WarmupMultiStepLR(opt2, [60, 80], 0.1, 0.01, 10), 100)
    assert new == pytest.approx(legacy, rel=1e-6)
    assert new[0] == pytest.approx(0.001)
    assert new[5] == pytest.approx(0.1 * (0.01 * 0.5 + 0.5))  # linear warmup, half-way
    assert new[10:60] == pytest.approx([0.1] * 50)
    assert new[60:80] == pytest.approx([0.01] * 20)
    assert new[80:] == pytest.approx([0.001] * 20)


def test_cosine_schedule():
    cfg = _solver_cfg(LR_SCHEDULER_NAME="WarmupCosineLR", WARMUP_ITERS=0)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs = _lrs(opt, build_lr_scheduler(cfg, opt), 100)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * i / 100)) for i in range(100)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-9)
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert _lrs(opt2, WarmupCosineLR(opt2, 100, warmup_iters=0), 100) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_unknown_scheduler_and_steps_beyond_max_iter():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="Unknown LR scheduler"):
        build_lr_scheduler(_solver_cfg(LR_SCHEDULER_NAME="Nope"), opt)
    lrs = _lrs(opt, build_lr_scheduler(_solver_cfg(STEPS=(50, 100, 200), WARMUP_ITERS=0), opt), 100)
    assert lrs[49] == pytest.approx(0.1) and lrs[50] == pytest.approx(0.01) and lrs[99] == pytest.approx(0.01)


def test_scheduler_state_dict_resumes():
    cfg = _solver_cfg()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_lr_scheduler(cfg, opt)
    _lrs(opt, sched, 65)
    state = sched.state_dict()
    assert set(state) == {"base_lrs", "last_epoch"}
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(state)
    opt.step()
    opt2.step()
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.01)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.conv  # a module reachable twice


def test_param_groups_follow_solver_settings():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", 0.02, "SOLVER.WEIGHT_DECAY", 1e-4, "SOLVER.WEIGHT_DECAY_NORM", 0.0,
                         "SOLVER.BIAS_LR_FACTOR", 2.0, "SOLVER.WEIGHT_DECAY_BIAS", 0.0, "SOLVER.MOMENTUM", 0.9,
                         "SOLVER.NESTEROV", True])
    net = _Net()
    opt = build_optimizer(cfg, net)
    assert isinstance(opt, torch.optim.SGD)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(by_param) == 6  # conv w/b, bn w/b, gn w/b; frozen and duplicates left out
    assert sum(len(g["params"]) for g in opt.param_groups) == 6
    g = by_param[id(net.conv.weight)]
    assert (g["lr"], g["weight_decay"], g["momentum"], g["nesterov"]) == (0.02, 1e-4, 0.9, True)
    g = by_param[id(net.conv.bias)]
    assert (g["lr"], g["weight_decay"]) == (0.04, 0.0)
    g = by_param[id(net.bn.weight)]
    assert (g["lr"], g["weight_decay"]) == (0.02, 0.0)
    g = by_param[id(net.gn.bias)]
    assert (g["lr"], g["weight_decay"]) == (0.04, 0.0)
    # Identical hyper-parameters share a group.
    assert len(opt.param_groups) == 3


def test_default_params_without_norm_override():
    net = _Net()
    groups = get_default_optimizer_params(net, base_lr=1.0, weight_decay=0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.5


@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_gradient_clipping(clip_type):
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", 1.0, "SOLVER.MOMENTUM", 0.0, "SOLVER.WEIGHT_DECAY", 0.0,
                         "SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip_type,
                         "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.5 if clip_type == "value" else 1.0])
    net = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    opt = build_optimizer(cfg, net)
    assert type(opt).__name__ == "SGDWithGradientClip" and isinstance(opt, torch.optim.SGD)
    net.weight.grad = torch.tensor([[2.0, -4.0, 0.25]])
    opt.step()  # lr 1 from 0: the weight is minus the (clipped) gradient
    step = -net.weight.detach()[0]
    if clip_type == "value":
        torch.testing.assert_close(step, torch.tensor([0.5, -0.5, 0.25]))
    else:  # norm clipped to 1, direction kept
        torch.testing.assert_close(step, torch.tensor([2.0, -4.0, 0.25]) / math.sqrt(4 + 16 + 0.0625))

"""Optimizer and LR schedule from ``cfg.SOLVER``.

``build_optimizer`` makes SGD (momentum, Nesterov, weight decay) with per-parameter overrides:
normalisation layers' weight decay (``WEIGHT_DECAY_NORM``), biases' LR factor and weight decay
(``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``), and optional gradient clipping
(``CLIP_GRADIENTS``) done inside ``optimizer.step()``. ``build_lr_scheduler`` makes an
:class:`~.lr_scheduler.LRMultiplier` for ``LR_SCHEDULER_NAME``.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections import defaultdict
from enum import Enum
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Type, Union

import torch

from workbench.config import CfgNode

from .lr_scheduler import (
    CosineParamScheduler,
    LRMultiplier,
    MultiStepParamScheduler,
    StepWithFixedGammaParamScheduler,
    WarmupParamScheduler,
)

__all__ = [
    "build_optimizer", "build_lr_scheduler", "get_default_optimizer_params",
    "maybe_add_gradient_clipping", "reduce_param_groups", "GradientClipType",
]

_GradientClipperInput = Union[torch.Tensor, Iterable[torch.Tensor]]
_GradientClipper = Callable[[_GradientClipperInput], None]


class GradientClipType(Enum):
    VALUE = "value"  # clamp each gradient element to [-CLIP_VALUE, CLIP_VALUE]
    NORM = "norm"  # scale each parameter's gradient to norm <= CLIP_VALUE
    FULL_MODEL = "full_model"  # scale all gradients together to total norm <= CLIP_VALUE


def _create_gradient_clipper(clip_cfg: CfgNode) -> _GradientClipper:
    clip_cfg = copy.deepcopy(clip_cfg)

    def clip_grad_norm(p: _GradientClipperInput) -> None:
        torch.nn.utils.clip_grad_norm_(p, clip_cfg.CLIP_VALUE, clip_cfg.NORM_TYPE)

    def clip_grad_value(p: _GradientClipperInput) -> None:
        torch.nn.utils.clip_grad_value_(p, clip_cfg.CLIP_VALUE)

    clip_type = GradientClipType(clip_cfg.CLIP_TYPE)
    # FULL_MODEL uses the norm clipper, given all parameters at once.
    return clip_grad_value if clip_type == GradientClipType.VALUE else clip_grad_norm


def _generate_optimizer_class_with_gradient_clipping(
        optimizer: Type[torch.optim.Optimizer], *, per_param_clipper: Optional[_GradientClipper] = None,
        global_clipper: Optional[_GradientClipper] = None) -> Type[torch.optim.Optimizer]:
    """A subclass of ``optimizer`` whose ``step()`` clips the gradients first."""
    if (per_param_clipper is None) == (global_clipper is None):
        raise ValueError("Give exactly one of per_param_clipper and global_clipper.")

    def optimizer_wgc_step(self, closure=None):
        if per_param_clipper is not None:
            for group in self.param_groups:
                for p in group["params"]:
                    per_param_clipper(p)
        else:
            global_clipper(list(itertools.chain(*[g["params"] for g in self.param_groups])))
        return super(type(self), self).step(closure)

    return type(optimizer.__name__ + "WithGradientClip", (optimizer,), {"step": optimizer_wgc_step})


def maybe_add_gradient_clipping(cfg: CfgNode, optimizer: Union[Type[torch.optim.Optimizer], torch.optim.Optimizer]):
    """``optimizer`` (a class or an instance) made to clip gradients per
    ``cfg.SOLVER.CLIP_GRADIENTS``; unchanged if clipping is disabled.

    An instance has its class swapped in place (its state is kept).
    """
    clip_cfg = cfg.SOLVER.CLIP_GRADIENTS
    if not clip_cfg.ENABLED:
        return optimizer
    optimizer_type = type(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    if not issubclass(optimizer_type, torch.optim.Optimizer):
        raise TypeError(f"Expected an optimizer class or instance, got {optimizer}.")
    clipper = _create_gradient_clipper(clip_cfg)
    if GradientClipType(clip_cfg.CLIP_TYPE) == GradientClipType.FULL_MODEL:
        cls = _generate_optimizer_class_with_gradient_clipping(optimizer_type, global_clipper=clipper)
    else:
        cls = _generate_optimizer_class_with_gradient_clipping(optimizer_type, per_param_clipper=clipper)
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.__class__ = cls
        return optimizer
    return cls


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD from ``cfg.SOLVER`` (BASE_LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, WEIGHT_DECAY_NORM,
    BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS, CLIP_GRADIENTS)."""
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    sgd = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    return sgd(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
               nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY)


_NORM_MODULE_TYPES = (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm, torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm, torch.nn.LocalResponseNorm,
)


def get_default_optimizer_params(model: torch.nn.Module, base_lr: Optional[float] = None,
                                 weight_decay: Optional[float] = None,
                                 weight_decay_norm: Optional[float] = None,
                                 bias_lr_factor: Optional[float] = 1.0,
                                 weight_decay_bias: Optional[float] = None,
                                 lr_factor_func: Optional[Callable[[str], float]] = None,
                                 overrides: Optional[Dict[str, Dict[str, float]]] = None) -> List[Dict[str, Any]]:
    """Parameter groups for an optimizer, with detectron2's per-parameter hyper-parameters.

    Args:
        model: The model; frozen parameters (``requires_grad=False``) are left out, and shared
            ones counted once.
        base_lr: LR of every group (optimizer default if None).
        weight_decay: Weight decay of every group (optimizer default if None).
        weight_decay_norm: Weight decay of normalisation layers' parameters.
        bias_lr_factor: LR of parameters named "bias" is ``base_lr * bias_lr_factor``.
        weight_decay_bias: Weight decay of parameters named "bias".
        lr_factor_func: maps a parameter's full name ("backbone.net.blocks.3.attn.qkv.weight")
            to a factor on its LR (ViTDet's layer-wise decay, ``get_vit_lr_decay_rate``);
            requires ``base_lr``.
        overrides: ``{param name (last component, e.g. "bias"): {hyper-parameter: value}}``.

    Returns:
        Groups with identical hyper-parameters merged, in first-seen order.
    """
    overrides = dict(overrides or {})
    defaults: Dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: Dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("bias_lr_factor requires base_lr")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError("Conflicting overrides for 'bias'")
        overrides["bias"] = bias_overrides

    if lr_factor_func is not None and base_lr is None:
        raise ValueError("get_default_optimizer_params: lr_factor_func requires base_lr")

    params: List[Dict[str, Any]] = []
    memo: Set[torch.nn.parameter.Parameter] = set()
    for module_name, module in model.named_modules():
        for module_param_name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in memo:
                continue
            memo.add(value)
            hyperparams = copy.copy(defaults)
            if isinstance(module, _NORM_MODULE_TYPES) and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            if lr_factor_func is not None:
                hyperparams["lr"] *= lr_factor_func(f"{module_name}.{module_param_name}")
            hyperparams.update(overrides.get(module_param_name, {}))
            params.append({"params": [value], **hyperparams})
    return reduce_param_groups(params)


def reduce_param_groups(params: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Merges groups that have the same hyper-parameters (fewer groups, faster steps)."""
    # Expand to one group per parameter; later groups override earlier ones for a parameter.
    per_param: Dict[torch.Tensor, Dict[str, Any]] = {}
    for item in params:
        cur = {k: v for k, v in item.items() if k != "params"}
        for p in item["params"]:
            per_param.setdefault(p, {}).update(cur)
    groups: Dict[tuple, List[torch.Tensor]] = defaultdict(list)
    for p, hp in per_param.items():
        groups[tuple(sorted(hp.items()))].append(p)
    return [{"params": ps, **dict(key)} for key, ps in groups.items()]


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule of ``cfg.SOLVER.LR_SCHEDULER_NAME``, with warmup.

    ``WarmupMultiStepLR``: ``GAMMA ** k`` after the k-th of ``STEPS``; ``WarmupCosineLR``: cosine
    from ``BASE_LR`` to ``BASE_LR_END``; ``WarmupStepWithFixedGammaLR``: ``NUM_DECAYS`` equal
    steps. Warmup: ``WARMUP_ITERS`` iterations from ``WARMUP_FACTOR`` (``WARMUP_METHOD``).
    """
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    max_iter = cfg.SOLVER.MAX_ITER
    if name == "WarmupMultiStepLR":
        # detectron2 keeps steps <= MAX_ITER, but a step at MAX_ITER itself is rejected by the
        # schedule (it can never take effect); drop it too.
        steps = [x for x in cfg.SOLVER.STEPS if x < max_iter]
        if len(steps) != len(cfg.SOLVER.STEPS):
            logging.getLogger(__name__).warning(
                "SOLVER.STEPS contains values larger than or equal to SOLVER.MAX_ITER. These values will be ignored.")
        sched = MultiStepParamScheduler(
            values=[cfg.SOLVER.GAMMA ** k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=max_iter,
        )
    elif name == "WarmupCosineLR":
        end_value = cfg.SOLVER.BASE_LR_END / cfg.SOLVER.BASE_LR
        if not 0.0 <= end_value <= 1.0:
            raise ValueError(f"SOLVER.BASE_LR_END / SOLVER.BASE_LR must be in [0, 1], got {end_value}.")
        sched = CosineParamScheduler(1, end_value)
    elif name == "WarmupStepWithFixedGammaLR":
        sched = StepWithFixedGammaParamScheduler(
            1, gamma=cfg.SOLVER.GAMMA, num_decays=cfg.SOLVER.NUM_DECAYS, num_updates=max_iter)
    else:
        raise ValueError(
            f"Unknown LR scheduler: {name}. Use WarmupMultiStepLR, WarmupCosineLR or WarmupStepWithFixedGammaLR."
        )
    sched = WarmupParamScheduler(
        sched, cfg.SOLVER.WARMUP_FACTOR, min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0),
        cfg.SOLVER.WARMUP_METHOD, cfg.SOLVER.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)

"""Optimizers and learning-rate schedules built from ``cfg.SOLVER``."""

from .build import (
    GradientClipType,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)
from .lr_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    LRMultiplier,
    LRScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
    StepWithFixedGammaParamScheduler,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupParamScheduler,
)

__all__ = [
    "CompositeParamScheduler", "ConstantParamScheduler", "CosineParamScheduler", "GradientClipType",
    "LRMultiplier", "LRScheduler", "LinearParamScheduler", "MultiStepParamScheduler", "ParamScheduler",
    "StepWithFixedGammaParamScheduler", "WarmupCosineLR", "WarmupMultiStepLR", "WarmupParamScheduler",
    "build_lr_scheduler", "build_optimizer", "get_default_optimizer_params",
    "maybe_add_gradient_clipping", "reduce_param_groups",
]

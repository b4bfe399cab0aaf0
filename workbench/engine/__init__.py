"""Running models: ``DefaultPredictor`` for inference on single images; training loops
(``SimpleTrainer``, ``AMPTrainer``, ``DefaultTrainer``), their hooks, and ``launch`` for
multi-process / multi-machine runs."""

from . import hooks
from .defaults import (
    DefaultPredictor,
    DefaultTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
)
from .hooks import (BestCheckpointer, CallbackHook, EvalHook, HookBase, IterationTimer, LRScheduler,
                    PeriodicCheckpointer, PeriodicWriter)
from .launch import DEFAULT_TIMEOUT, launch
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer", "DefaultPredictor", "DefaultTrainer", "HookBase", "SimpleTrainer", "TrainerBase",
    "create_ddp_model", "default_argument_parser", "default_setup", "default_writers", "hooks", "launch",
    # as in detectron2.engine (its `from .hooks import *` / `from .launch import *`):
    "DEFAULT_TIMEOUT", "BestCheckpointer", "CallbackHook", "EvalHook", "IterationTimer", "LRScheduler",
    "PeriodicCheckpointer", "PeriodicWriter",
]

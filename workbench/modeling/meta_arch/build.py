"""The meta-architecture registry and ``build_model``."""

from __future__ import annotations

import torch
from torch import nn

from workbench.config.validate import check_config_values
from workbench.utils.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures, i.e. the whole model (``cfg.MODEL.META_ARCHITECTURE``).

Entries are called as ``obj(cfg)`` and must return an ``nn.Module``.
"""


def build_model(cfg) -> nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``.

    Parameters are randomly initialised; load weights with
    ``workbench.checkpoint.DetectionCheckpointer(model).load(path)``.
    """
    check_config_values(cfg)  # ConfigValueError naming the key of an impossible value
    meta_arch = cfg.MODEL.META_ARCHITECTURE
    model = META_ARCH_REGISTRY.get(meta_arch)(cfg)
    model.to(torch.device(cfg.MODEL.DEVICE))
    return model

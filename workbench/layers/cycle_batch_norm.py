"""Per-level ("domain-specific") batch norm with a shared affine transform.

A head shared by L feature levels (RetinaNet's subnets) sees inputs whose statistics differ per
level. ``CycleBatchNormList`` keeps L sets of running statistics and switches to the next set on
every call, so a head that is called once per level, in level order, normalises each level with
its own statistics; the scale and shift after normalisation stay shared.

Shapes: x is (N, C, Hi, Wi), the input of level i; C = ``num_features``.
State-dict names follow detectron2: ``{i}.running_mean`` ... for level i, ``weight``, ``bias``.
"""

from __future__ import annotations

from typing import Any, Type

import torch
from torch import nn

__all__ = ["CycleBatchNormList"]


class CycleBatchNormList(nn.ModuleList):
    """L batch-norm layers without affine parameters, used in turn, plus one shared affine.

    Call it exactly L times per forward pass, level by level: the position that selects the
    statistics advances by one on every call and wraps around after L calls.
    """

    def __init__(self, length: int, bn_class: Type[nn.Module] = nn.BatchNorm2d, **kwargs: Any) -> None:
        """
        Args:
            length: L, the number of feature levels (sets of statistics).
            bn_class: the norm to instantiate per level (``nn.BatchNorm2d``, ``nn.SyncBatchNorm``).
            **kwargs: arguments of ``bn_class`` (``num_features`` required); ``affine=True``
                (default) adds the shared ``weight`` and ``bias``.
        """
        if length < 1:
            raise ValueError(f"CycleBatchNormList needs length >= 1 (one per level), got {length}.")
        self._affine = kwargs.pop("affine", True)
        super().__init__([bn_class(**kwargs, affine=False) for _ in range(length)])
        if self._affine:
            channels = self[0].num_features
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self._pos = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ret = self[self._pos](x)
        self._pos = (self._pos + 1) % len(self)
        if self._affine:
            # (C,) -> (1, C, 1, 1) to broadcast over (N, C, Hi, Wi)
            return ret * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        return ret

    def extra_repr(self) -> str:
        return f"affine={self._affine}"

"""Weight initialisations used by Caffe2 / Detectron (fvcore.nn.weight_init semantics).

Shapes are those of the module's own ``weight`` (conv: (C_out, C_in/groups, kh, kw)).
"""

from __future__ import annotations

from torch import nn

__all__ = ["c2_msra_fill", "c2_xavier_fill"]


def c2_msra_fill(module: nn.Module) -> None:
    """He (MSRA) init for a layer followed by ReLU: N(0, 2 / fan_out); bias set to 0.

    Caffe2's "MSRAFill" uses fan_out, unlike ``nn.init.kaiming_normal_``'s default fan_in.
    """
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's "XavierFill": U(-sqrt(3 / fan_in), sqrt(3 / fan_in)); bias set to 0.

    This is ``kaiming_uniform_`` with ``a=1`` (gain 1), not ``nn.init.xavier_uniform_``,
    which would also count fan_out.
    """
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)

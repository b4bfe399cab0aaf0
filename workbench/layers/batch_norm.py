"""Normalisation layers: ``FrozenBatchNorm2d`` and ``get_norm``.

Shapes: N images, C channels, H x W spatial size.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .layer_norm import LayerNorm
# detectron2 defines CycleBatchNormList in layers/batch_norm.py; workbench in cycle_batch_norm.py.
from .cycle_batch_norm import CycleBatchNormList

__all__ = ["FrozenBatchNorm2d", "get_norm", "NaiveSyncBatchNorm", "CycleBatchNormList"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers.

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel.
    Nothing is trained, so nothing of it appears in ``parameters()``; the four tensors are
    buffers and load from checkpoints like those of ``nn.BatchNorm2d``.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)
        # Not a training-time statistic; kept so state dicts of nn.BatchNorm2d load unchanged.
        self.register_buffer("num_batches_tracked", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            # Gradients flow to the input only: fold into one scale and shift per channel.
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            # (C,) -> (1, C, 1, 1)
            return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=False, eps=self.eps,
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Very old checkpoints carry no running statistics: use the identity ones.
            if prefix + "running_mean" not in state_dict:
                state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
            if prefix + "running_var" not in state_dict:
                state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm / SyncBatchNorm replaced by a frozen copy.

        If ``module`` itself is a batch norm, a new ``FrozenBatchNorm2d`` is returned;
        otherwise children are replaced in place and ``module`` is returned.
        """
        bn_types = (nn.modules.batchnorm.BatchNorm2d, nn.modules.batchnorm.SyncBatchNorm)
        if isinstance(module, bn_types):
            res = cls(module.num_features, eps=module.eps)
            if module.affine:
                res.weight.data = module.weight.data.clone().detach()
                res.bias.data = module.bias.data.clone().detach()
            res.running_mean.data = module.running_mean.data.clone()
            res.running_var.data = module.running_var.data.clone()
            return res
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module

    @classmethod
    def convert_frozenbatchnorm2d_to_batchnorm2d(cls, module: nn.Module) -> nn.Module:
        """The inverse of :meth:`convert_frozen_batchnorm` (for fine-tuning the statistics)."""
        if isinstance(module, FrozenBatchNorm2d):
            res = nn.BatchNorm2d(module.num_features, eps=module.eps)
            res.weight.data = module.weight.data.clone().detach()
            res.bias.data = module.bias.data.clone().detach()
            res.running_mean.data = module.running_mean.data.clone().detach()
            res.running_var.data = module.running_var.data.clone().detach()
            return res
        for name, child in module.named_children():
            new_child = cls.convert_frozenbatchnorm2d_to_batchnorm2d(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics are averaged over all processes with all_reduce.

    Unlike ``nn.SyncBatchNorm`` it also works when there is only one process (it is then a
    plain BatchNorm2d) and on CPU with the gloo backend. The reduction is differentiable
    (``torch.distributed.nn.functional.all_reduce``), so every process's gradient sees the
    statistics' dependence on the others' inputs.

    Args:
        stats_mode: "" (every process's statistics weigh the same; each must have a non-empty
            batch) or "N" (weighted by each process's batch size, so empty batches are allowed:
            detectron2's new baselines use it).
    """

    def __init__(self, *args, stats_mode: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if stats_mode not in ("", "N"):
            raise ValueError(f"NaiveSyncBatchNorm: stats_mode must be '' or 'N', got {stats_mode!r}.")
        self._stats_mode = stats_mode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 \
                or not self.training:
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        # Statistics in fp32 under AMP: mean(x * x) of fp16 activations overflows past ~256.
        half_input = input.dtype == torch.float16
        if half_input:
            input = input.float()
        B, C = input.shape[0], input.shape[1]
        # (N, C, H, W) -> per-channel mean and mean of squares: (C,) each
        mean = torch.mean(input, dim=[0, 2, 3])
        meansqr = torch.mean(input * input, dim=[0, 2, 3])
        if self._stats_mode == "":
            if B == 0:
                raise ValueError('NaiveSyncBatchNorm(stats_mode="") got an empty batch; use '
                                 'stats_mode="N" to allow processes with no images.')
            vec = all_reduce(torch.cat([mean, meansqr], dim=0)) * (1.0 / dist.get_world_size())
            mean, meansqr = torch.split(vec, C)
            momentum = self.momentum
        else:
            if B == 0:  # zeros that still depend on the input, so backward reaches it
                vec = torch.zeros(2 * C + 1, device=input.device, dtype=input.dtype) + input.sum()
            else:
                one = torch.ones(1, device=input.device, dtype=input.dtype)
                vec = torch.cat([mean, meansqr, one], dim=0)
            vec = all_reduce(vec * B)  # (2C + 1,): sums of B * stats, and the total batch
            total = vec[-1].detach()
            momentum = total.clamp(max=1) * self.momentum  # no running update if nobody had images
            mean, meansqr, _ = torch.split(vec / total.clamp(min=1), C)
        var = meansqr - mean * mean
        invstd = torch.rsqrt(var + self.eps)
        scale = self.weight * invstd
        shift = self.bias - mean * scale
        self.running_mean += momentum * (mean.detach() - self.running_mean)
        self.running_var += momentum * (var.detach() - self.running_var)
        out = input * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        return out.half() if half_input else out


_NORMS: dict = {
    "BN": nn.BatchNorm2d,
    # detectron2 maps "SyncBN" to nn.SyncBatchNorm (CUDA only); workbench's works on the CPU
    # too (gloo), weighing each process's statistics by its batch size as nn.SyncBatchNorm does.
    "SyncBN": lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(32, channels),
    "nnSyncBN": nn.SyncBatchNorm,
    "naiveSyncBN": NaiveSyncBatchNorm,
    "naiveSyncBN_N": lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
    "LN": lambda channels: LayerNorm(channels),  # over channels at each position, as detectron2
}


def get_norm(norm: Union[str, Callable, None], out_channels: int) -> nn.Module | None:
    """Build a normalisation layer for ``out_channels`` channels.

    Args:
        norm: one of "BN", "SyncBN" (``NaiveSyncBatchNorm(stats_mode="N")``, which runs on
            the CPU too), "FrozenBN", "GN" (32 groups), "nnSyncBN", "naiveSyncBN",
            "naiveSyncBN_N", "LN" (channels-first :class:`LayerNorm`), "" / None (no norm,
            returns None), or a callable taking the channel count.
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if len(norm) == 0:
            return None
        if norm not in _NORMS:
            raise KeyError(f"Unknown norm '{norm}'; expected one of {sorted(_NORMS)} or ''.")
        norm = _NORMS[norm]
    return norm(out_channels)

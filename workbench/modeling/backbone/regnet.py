"""AnyNet and RegNet backbones (Radosavovic et al. 2020, "Designing Network Design Spaces"), as
detectron2's ``modeling/backbone/regnet.py`` (a port of pycls).

Shapes: N images, 3 x H x W input, w_i the width of stage i
(see :func:`generate_regnet_parameters`).

    stem  SimpleStem (3x3/2 conv, norm, act)            (N, 3, H, W) -> (N, stem_width, H/2, W/2)
          ResStem (7x7/2 conv, norm, act, 3x3/2 pool)   -> (N, stem_width, H/4, W/4)
    s1..s4 (first block of each stage strided by 2)     -> (N, w_i, H/s_i, W/s_i)

With ``SimpleStem`` and stride 2 everywhere, s1..s4 have strides 4, 8, 16, 32. Module names
(``stem.conv``, ``stem.bn``, ``s1.b1.f.a``, ``s1.b1.f.se.f_ex.0``, ``s1.b1.proj``, ``s1.b1.bn``,
...) are detectron2's (and pycls'), so their checkpoints load without renaming.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from workbench.layers import CNNBlockBase, get_norm

from .backbone import Backbone

__all__ = [
    "AnyNet",
    "RegNet",
    "ResStem",
    "SimpleStem",
    "VanillaBlock",
    "ResBasicBlock",
    "ResBottleneckBlock",
]

NormSpec = Union[str, Callable[[int], nn.Module], None]
ActivationClass = Callable[[], nn.Module]


def conv2d(w_in: int, w_out: int, k: int, *, stride: int = 1, groups: int = 1,
           bias: bool = False) -> nn.Conv2d:
    """A k x k conv with "same" padding (k must be odd), bias-free by default (a norm follows)."""
    if k % 2 != 1:
        raise ValueError(f"conv2d kernel size k must be odd so that padding is symmetric, got {k}.")
    return nn.Conv2d(w_in, w_out, k, stride=stride, padding=(k - 1) // 2, groups=groups,
                     bias=bias)


def gap2d() -> nn.Module:
    """Global average pooling to (N, C, 1, 1)."""
    return nn.AdaptiveAvgPool2d((1, 1))


def pool2d(k: int, *, stride: int = 1) -> nn.Module:
    """A k x k max pool with "same" padding (k must be odd)."""
    if k % 2 != 1:
        raise ValueError(f"pool2d kernel size k must be odd so that padding is symmetric, got {k}.")
    return nn.MaxPool2d(k, stride=stride, padding=(k - 1) // 2)


def init_weights(m: nn.Module) -> None:
    """pycls' ResNet-style init: convs N(0, 2 / fan_out), BN (1, 0), linears N(0, 0.01^2)."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, mean=0.0, std=0.01)
        nn.init.zeros_(m.bias)


def _run_children(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Blocks below are plain chains of their registered children, in definition order; a norm
    # of None ("" norm) is not registered as a child, so it is skipped.
    for layer in module.children():
        x = layer(x)
    return x


class ResStem(CNNBlockBase):
    """ResNet stem: 7x7 stride-2 conv, norm, activation, 3x3 stride-2 max pool (stride 4).

    Args:
        w_in: image channels.
        w_out: output channels.
        norm: see :func:`workbench.layers.get_norm`.
        activation_class: builds the activation, called without arguments.
    """

    def __init__(self, w_in: int, w_out: int, norm: NormSpec,
                 activation_class: ActivationClass) -> None:
        super().__init__(w_in, w_out, 4)
        self.conv = conv2d(w_in, w_out, 7, stride=2)
        self.bn = get_norm(norm, w_out)
        self.af = activation_class()
        self.pool = pool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_children(self, x)


class SimpleStem(CNNBlockBase):
    """RegNet stem: 3x3 stride-2 conv, norm, activation (stride 2); arguments as ResStem."""

    def __init__(self, w_in: int, w_out: int, norm: NormSpec,
                 activation_class: ActivationClass) -> None:
        super().__init__(w_in, w_out, 2)
        self.conv = conv2d(w_in, w_out, 3, stride=2)
        self.bn = get_norm(norm, w_out)
        self.af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_children(self, x)


class SE(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 conv, act, 1x1 conv, sigmoid, rescale channels.

    Args:
        w_in: channels of the input (and of the output).
        w_se: channels of the bottleneck.
        activation_class: builds the activation.
    """

    def __init__(self, w_in: int, w_se: int, activation_class: ActivationClass) -> None:
        super().__init__()
        self.avg_pool = gap2d()
        self.f_ex = nn.Sequential(
            conv2d(w_in, w_se, 1, bias=True),
            activation_class(),
            conv2d(w_se, w_in, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.f_ex(self.avg_pool(x))  # (N, C, H, W) * (N, C, 1, 1)


class VanillaBlock(CNNBlockBase):
    """[3x3 conv, norm, act] x 2, no residual; the first conv carries the stride.

    Args:
        w_in: input channels.
        w_out: output channels.
        stride: stride of the first conv.
        norm: see :func:`workbench.layers.get_norm`.
        activation_class: builds the activation.
        _params: unused; the block-specific parameters every AnyNet block receives.
    """

    def __init__(self, w_in: int, w_out: int, stride: int, norm: NormSpec,
                 activation_class: ActivationClass, _params: Optional[Dict[str, Any]] = None
                 ) -> None:
        super().__init__(w_in, w_out, stride)
        self.a = conv2d(w_in, w_out, 3, stride=stride)
        self.a_bn = get_norm(norm, w_out)
        self.a_af = activation_class()
        self.b = conv2d(w_out, w_out, 3)
        self.b_bn = get_norm(norm, w_out)
        self.b_af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_children(self, x)


def _mark_final(norm: Optional[nn.Module]) -> None:
    # pycls tags the last norm of a residual branch (its zero-gamma option); kept for parity.
    if norm is not None:
        norm.final_bn = True


class BasicTransform(nn.Module):
    """Residual branch of :class:`ResBasicBlock`: 3x3 conv, norm, act, 3x3 conv, norm."""

    def __init__(self, w_in: int, w_out: int, stride: int, norm: NormSpec,
                 activation_class: ActivationClass, _params: Optional[Dict[str, Any]] = None
                 ) -> None:
        super().__init__()
        self.a = conv2d(w_in, w_out, 3, stride=stride)
        self.a_bn = get_norm(norm, w_out)
        self.a_af = activation_class()
        self.b = conv2d(w_out, w_out, 3)
        self.b_bn = get_norm(norm, w_out)
        _mark_final(self.b_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_children(self, x)


class ResBasicBlock(CNNBlockBase):
    """act(shortcut(x) + f(x)) with f a :class:`BasicTransform`.

    The shortcut is a strided 1x1 conv + norm (``proj``, ``bn``) when the width or the
    resolution changes, else identity. Arguments as :class:`VanillaBlock`.
    """

    def __init__(self, w_in: int, w_out: int, stride: int, norm: NormSpec,
                 activation_class: ActivationClass, params: Optional[Dict[str, Any]] = None
                 ) -> None:
        super().__init__(w_in, w_out, stride)
        self.proj, self.bn = None, None
        if w_in != w_out or stride != 1:
            self.proj = conv2d(w_in, w_out, 1, stride=stride)
            self.bn = get_norm(norm, w_out)
        self.f = BasicTransform(w_in, w_out, stride, norm, activation_class, params)
        self.af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else _project(self.proj, self.bn, x)
        return self.af(shortcut + self.f(x))


def _project(proj: nn.Module, bn: Optional[nn.Module], x: torch.Tensor) -> torch.Tensor:
    x = proj(x)
    return x if bn is None else bn(x)


class BottleneckTransform(nn.Module):
    """Residual branch of :class:`ResBottleneckBlock`: 1x1, grouped 3x3 (stride) [+ SE], 1x1.

    ``params`` holds ``bot_mul`` (bottleneck width / w_out), ``group_w`` (channels per group of
    the 3x3 conv) and ``se_r`` (SE width / w_in; 0 disables SE).
    """

    def __init__(self, w_in: int, w_out: int, stride: int, norm: NormSpec,
                 activation_class: ActivationClass, params: Dict[str, Any]) -> None:
        super().__init__()
        w_b = int(round(w_out * params["bot_mul"]))
        w_se = int(round(w_in * params["se_r"]))
        groups = w_b // params["group_w"]
        if groups < 1:
            raise ValueError(f"Bottleneck width {w_b} (w_out={w_out} * bot_mul="
                             f"{params['bot_mul']}) is below group_w={params['group_w']}.")
        self.a = conv2d(w_in, w_b, 1)
        self.a_bn = get_norm(norm, w_b)
        self.a_af = activation_class()
        self.b = conv2d(w_b, w_b, 3, stride=stride, groups=groups)
        self.b_bn = get_norm(norm, w_b)
        self.b_af = activation_class()
        # The SE bottleneck is sized from the block *input* width w_in, as in pycls' RegNetY.
        self.se = SE(w_b, w_se, activation_class) if w_se else None
        self.c = conv2d(w_b, w_out, 1)
        self.c_bn = get_norm(norm, w_out)
        _mark_final(self.c_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_children(self, x)


class ResBottleneckBlock(CNNBlockBase):
    """act(shortcut(x) + f(x)) with f a :class:`BottleneckTransform` (RegNetX / RegNetY block).

    Shortcut and arguments as :class:`ResBasicBlock`; ``params`` as
    :class:`BottleneckTransform`.
    """

    def __init__(self, w_in: int, w_out: int, stride: int, norm: NormSpec,
                 activation_class: ActivationClass, params: Dict[str, Any]) -> None:
        super().__init__(w_in, w_out, stride)
        self.proj, self.bn = None, None
        if w_in != w_out or stride != 1:
            self.proj = conv2d(w_in, w_out, 1, stride=stride)
            self.bn = get_norm(norm, w_out)
        self.f = BottleneckTransform(w_in, w_out, stride, norm, activation_class, params)
        self.af = activation_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else _project(self.proj, self.bn, x)
        return self.af(shortcut + self.f(x))


class AnyStage(nn.Module):
    """``d`` blocks named ``b1``, ``b2``, ...; only the first changes width and resolution."""

    def __init__(self, w_in: int, w_out: int, stride: int, d: int, block_class: Callable,
                 norm: NormSpec, activation_class: ActivationClass,
                 params: Dict[str, Any]) -> None:
        super().__init__()
        for i in range(d):
            self.add_module(f"b{i + 1}",
                            block_class(w_in, w_out, stride, norm, activation_class, params))
            stride, w_in = 1, w_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_children(self, x)


class AnyNet(Backbone):
    """A stem and stages ``s1``, ``s2``, ... of identical blocks, each stage free in depth,
    width, stride, group width and bottleneck ratio (the AnyNet design space).

    Args:
        stem_class: called as ``stem_class(3, stem_width, norm, activation_class)``; returns a
            :class:`CNNBlockBase` (e.g. :class:`SimpleStem`, :class:`ResStem`).
        stem_width: stem output channels.
        block_class: called as ``block_class(w_in, w_out, stride, norm, activation_class,
            params)``; returns a :class:`CNNBlockBase` (e.g. :class:`ResBottleneckBlock`).
        depths: blocks per stage.
        widths: output channels per stage.
        group_widths: channels per group of the grouped conv, per stage.
        strides: stride of each stage (of its first block).
        bottleneck_ratios: bottleneck channels / output channels, per stage.
        se_ratio: SE channels / block input channels; 0 disables SE.
        activation_class: builds an activation, called without arguments.
        freeze_at: number of leading stages to freeze, the stem counting as 1 (see :meth:`freeze`).
        norm: norm after every conv; see :func:`workbench.layers.get_norm`.
        out_features: names to return among "stem", "s1", "s2", ...; default the last stage.
    """

    def __init__(self, *, stem_class: Callable, stem_width: int, block_class: Callable,
                 depths: Sequence[int], widths: Sequence[int], group_widths: Sequence[int],
                 strides: Sequence[int], bottleneck_ratios: Sequence[float], se_ratio: float,
                 activation_class: ActivationClass, freeze_at: int = 0, norm: NormSpec = "BN",
                 out_features: Optional[List[str]] = None) -> None:
        super().__init__()
        lengths = {"depths": len(depths), "widths": len(widths), "group_widths":
                   len(group_widths), "strides": len(strides),
                   "bottleneck_ratios": len(bottleneck_ratios)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"AnyNet per-stage arguments must have equal lengths, got {lengths}.")
        self.stem = stem_class(3, stem_width, norm, activation_class)

        current_stride = self.stem.stride
        self._out_feature_strides: Dict[str, int] = {"stem": current_stride}
        self._out_feature_channels: Dict[str, int] = {"stem": self.stem.out_channels}
        self.stages_and_names: List[Tuple[AnyStage, str]] = []  # modules registered by name
        prev_w, name = stem_width, "stem"
        for i, (d, w, s, b, g) in enumerate(zip(depths, widths, strides, bottleneck_ratios,
                                                 group_widths)):
            if d < 1:
                raise ValueError(f"AnyNet depths must be >= 1, got depths={list(depths)}.")
            params = {"bot_mul": b, "group_w": g, "se_r": se_ratio}
            stage = AnyStage(prev_w, w, s, d, block_class, norm, activation_class, params)
            name = f"s{i + 1}"
            self.add_module(name, stage)
            self.stages_and_names.append((stage, name))
            blocks = list(stage.children())
            current_stride = int(current_stride * math.prod(blk.stride for blk in blocks))
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels
            prev_w = w

        self.apply(init_weights)

        if out_features is None:
            out_features = [name]
        if len(out_features) == 0:
            raise ValueError("AnyNet needs at least one output feature, got out_features=[].")
        children = [n for n, _ in self.named_children()]
        for f in out_features:
            if f not in children:
                raise ValueError(f"AnyNet out_features entry '{f}' does not exist; available: "
                                 f"{children}.")
        self._out_features = list(out_features)
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Run the network on an (N, 3, H, W) batch (H, W multiples of the largest stride).

        Returns:
            Name -> (N, C_f, H / s_f, W / s_f) map, for each name in ``out_features``.
        """
        if x.dim() != 4:
            raise ValueError(f"AnyNet expects an input of shape (N, C, H, W), "
                             f"got {tuple(x.shape)}.")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for stage, name in self.stages_and_names:
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> "AnyNet":
        """Freeze the first ``freeze_at`` stages: 1 is the stem, 2 the stem and s1, and so on.

        Frozen blocks get ``requires_grad=False`` and ``FrozenBatchNorm2d`` in place of batch
        norm (see :meth:`CNNBlockBase.freeze`).

        Returns:
            This model.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, (stage, _) in enumerate(self.stages_and_names, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self


def adjust_block_compatibility(ws: Sequence[int], bs: Sequence[float], gs: Sequence[int]
                               ) -> Tuple[List[int], List[float], List[int]]:
    """Make widths, bottleneck ratios and group widths compatible, stage by stage.

    The group width is capped at the bottleneck width v = w * b, then v is rounded to the
    nearest multiple of the group width (of lcm(g, b) for integer b > 1), and w = v / b.

    Returns:
        ``(ws, bs, gs)`` with every ``w * b`` a multiple of ``g``.
    """
    if not len(ws) == len(bs) == len(gs):
        raise ValueError(f"ws, bs, gs must have equal lengths, got {len(ws)}, {len(bs)}, "
                         f"{len(gs)}.")
    if not all(w > 0 and b > 0 and g > 0 for w, b, g in zip(ws, bs, gs)):
        raise ValueError(f"Widths, bottleneck ratios and group widths must be > 0, got "
                         f"ws={list(ws)}, bs={list(bs)}, gs={list(gs)}.")
    vs = [int(max(1, w * b)) for w, b in zip(ws, bs)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs)]
    ms = []
    for g, b in zip(gs, bs):
        if b > 1 and b != int(b):
            raise ValueError(f"Bottleneck ratios above 1 must be integers, got {b}.")
        ms.append(math.lcm(g, int(b)) if b > 1 else g)
    # Python's round() rounds halves to even, as pycls (e.g. 96 / 64 = 1.5 -> 2).
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms)]
    ws = [int(v / b) for v, b in zip(vs, bs)]
    assert all(w * b % g == 0 for w, b, g in zip(ws, bs, gs))
    return ws, list(bs), gs


def generate_regnet_parameters(w_a: float, w_0: int, w_m: float, d: int, q: int = 8
                               ) -> Tuple[List[int], List[int], int, float, List[int],
                                          List[float]]:
    """Per-stage widths and depths of a RegNet (paper Sec. 3.3).

    Block j < d gets the linear width u_j = w_0 + w_a * j, which is snapped to the nearest
    w_0 * w_m ** k (k an integer, rounded in log space) and then to a multiple of ``q``;
    consecutive blocks of equal width form one stage.

    Returns:
        ``(ws, ds, num_stages, total_stages, ws_all, ws_cont)``: stage widths and depths, their
        count, the count of possible stages (max k + 1), and quantised / linear block widths.
    """
    if not (w_a >= 0 and w_0 > 0 and w_m > 1 and w_0 % q == 0):
        raise ValueError(f"RegNet parameters need w_a >= 0, w_0 > 0, w_m > 1 and w_0 a "
                         f"multiple of q={q}; got w_a={w_a}, w_0={w_0}, w_m={w_m}.")
    # numpy, as pycls, so that log / round give bit-identical stage boundaries.
    ws_cont = np.arange(d) * w_a + w_0  # (d,) linear widths u_j
    ks = np.round(np.log(ws_cont / w_0) / np.log(w_m))  # (d,) integer exponents
    ws_all = np.round(w_0 * np.power(w_m, ks) / q).astype(int) * q  # (d,) quantised widths
    ws, ds = np.unique(ws_all, return_counts=True)  # widths are non-decreasing in j
    num_stages, total_stages = len(ws), ks.max() + 1
    return (ws.tolist(), ds.tolist(), num_stages, total_stages, ws_all.tolist(),
            ws_cont.tolist())


class RegNet(AnyNet):
    """An AnyNet whose stage widths and depths come from the RegNet parameters (paper Sec. 3.3).

    Args:
        depth: total number of blocks d.
        w_a: slope of the linear block widths.
        w_0: initial width.
        w_m: width multiplier between stages (quantisation in log space).
        group_width: channels per group, all stages.
        stride: stride of every stage.
        bottleneck_ratio: bottleneck ratio, all stages.
        se_ratio: SE ratio (0.25 for RegNetY, 0 for RegNetX).
        activation_class: default ``nn.ReLU(inplace=True)``.
        stem_class, stem_width, block_class, freeze_at, norm, out_features: see :class:`AnyNet`.
    """

    def __init__(self, *, stem_class: Callable, stem_width: int, block_class: Callable,
                 depth: int, w_a: float, w_0: int, w_m: float, group_width: int, stride: int = 2,
                 bottleneck_ratio: float = 1.0, se_ratio: float = 0.0,
                 activation_class: Optional[ActivationClass] = None, freeze_at: int = 0,
                 norm: NormSpec = "BN", out_features: Optional[List[str]] = None) -> None:
        ws, ds = generate_regnet_parameters(w_a, w_0, w_m, depth)[:2]
        n = len(ws)
        ws, bs, gs = adjust_block_compatibility(ws, [bottleneck_ratio] * n, [group_width] * n)
        super().__init__(
            stem_class=stem_class, stem_width=stem_width, block_class=block_class, depths=ds,
            widths=ws, strides=[stride] * n, group_widths=gs, bottleneck_ratios=bs,
            se_ratio=se_ratio,
            activation_class=activation_class or _default_activation,
            freeze_at=freeze_at, norm=norm, out_features=out_features)


def _default_activation() -> nn.Module:
    return nn.ReLU(inplace=True)

"""Token-map helpers shared by the ViTDet (``vit.py``) and MViTv2 (``mvit.py``) backbones.

Shapes: B images (or B * heads, or B * windows), H x W token grid, C channels per token,
w the window side, Hp x Wp the grid padded up to multiples of w, nW = (Hp / w) * (Wp / w)
windows per image, L the number of rows of a relative-position table.

Transformer blocks here keep tokens channels-last, (B, H, W, C):

    PatchEmbed          (B, C_in, H_img, W_img) -> conv -> (B, H, W, C)
    window_partition    (B, H, W, C) -> pad -> (B * nW, w, w, C)
    window_unpartition  (B * nW, w, w, C) -> (B, Hp, Wp, C) -> crop -> (B, H, W, C)
    get_abs_pos         (1, [1 +] S*S, C) -> (1, H, W, C)   (bicubic resize when S != H or W)
    get_rel_pos         (L, C) -> (q, k, C)      (linear resize when L != 2 max(q, k) - 1)
    add_decomposed_rel_pos  attn (B, qh*qw, kh*kw) + q.R_h + q.R_w

Also holds the two timm pieces ViTDet uses, re-written so workbench needs no timm: ``Mlp``
(parameters ``fc1`` / ``fc2``, as timm names them) and ``DropPath`` (per-sample stochastic
depth, torchvision's ``StochasticDepth`` in "row" mode, whose maths is timm's ``DropPath``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Type

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

__all__ = [
    "window_partition",
    "window_unpartition",
    "add_decomposed_rel_pos",
    "get_rel_pos",
    "get_abs_pos",
    "PatchEmbed",
    "Mlp",
    "DropPath",
]


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Cut a token map into non-overlapping square windows, zero-padding the bottom and right.

    Args:
        x: (B, H, W, C) tokens.
        window_size: side w of each window.

    Returns:
        ``(windows, (Hp, Wp))``: the (B * nW, w, w, C) windows in row-major window order
        (image, window row, window column), and the padded grid size.
    """
    if window_size <= 0:
        raise ValueError(f"window_partition needs window_size > 0, got {window_size}.")
    if x.dim() != 4:
        raise ValueError(f"window_partition expects (B, H, W, C) tokens, got shape "
                         f"{tuple(x.shape)}.")
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        # F.pad pads from the last axis backwards: (C: 0, 0), (W: 0, pad_w), (H: 0, pad_h).
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    # (B, Hp, Wp, C) -> (B, Hp/w, w, Wp/w, w, C) -> (B, Hp/w, Wp/w, w, w, C) -> (B*nW, w, w, C)
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: stitch windows back and drop the padding.

    Args:
        windows: (B * nW, w, w, C) windows, in :func:`window_partition`'s order.
        window_size: side w of each window.
        pad_hw: padded grid size (Hp, Wp) returned by :func:`window_partition`.
        hw: original grid size (H, W).

    Returns:
        (B, H, W, C) tokens.
    """
    Hp, Wp = pad_hw
    H, W = hw
    num_windows = (Hp // window_size) * (Wp // window_size)
    if windows.shape[0] % num_windows != 0:
        raise ValueError(f"window_unpartition got {windows.shape[0]} windows, not a multiple "
                         f"of the {num_windows} windows of a padded {Hp}x{Wp} grid "
                         f"(pad_hw={pad_hw}).")
    B = windows.shape[0] // num_windows
    # (B*nW, w, w, C) -> (B, Hp/w, Wp/w, w, w, C) -> (B, Hp/w, w, Wp/w, w, C) -> (B, Hp, Wp, C)
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Look up the relative-position embedding of every (query, key) pair along one axis.

    The table has one row per relative offset, 2 max(q, k) - 1 rows; a table of another length
    (e.g. trained at another resolution) is first resized by linear interpolation. When q and k
    differ (pooled keys or queries), the shorter axis' coordinates are stretched by the size
    ratio so both span the same extent: row index = q_i * max(k/q, 1) - k_j * max(q/k, 1)
    + (k - 1) * max(q/k, 1), truncated to an integer.

    Args:
        q_size: number of query positions along the axis.
        k_size: number of key positions along the axis.
        rel_pos: (L, C) table.

    Returns:
        (q_size, k_size, C) embeddings.
    """
    if rel_pos.dim() != 2:
        raise ValueError(f"get_rel_pos expects an (L, C) rel_pos table, got shape "
                         f"{tuple(rel_pos.shape)}.")
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        # (L, C) -> (1, C, L): interpolate along L -> (1, C, M) -> (M, C)
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        resized = rel_pos

    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    device = rel_pos.device
    # (q, 1) - (1, k) -> (q, k) offsets, shifted to be >= 0.
    q_coords = torch.arange(q_size, device=device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=device)[None, :] * k_scale
    relative_coords = (q_coords - k_coords) + (k_size - 1) * k_scale
    return resized[relative_coords.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: Tuple[int, int],
    k_size: Tuple[int, int],
) -> torch.Tensor:
    """Add MViTv2's decomposed relative-position bias to attention logits.

    For query i at (ih, iw) and key j at (jh, jw):
    ``attn[b, i, j] += q[b, i] . R_h[ih, jh] + q[b, i] . R_w[iw, jw]`` with
    ``R_h = get_rel_pos(qh, kh, rel_pos_h)`` and ``R_w = get_rel_pos(qw, kw, rel_pos_w)``.

    Args:
        attn: (B, qh*qw, kh*kw) logits (B may be images * heads * windows).
        q: (B, qh*qw, C) queries, the unscaled ones.
        rel_pos_h: (Lh, C) table for the height axis.
        rel_pos_w: (Lw, C) table for the width axis.
        q_size: query grid (qh, qw).
        k_size: key grid (kh, kw).

    Returns:
        (B, qh*qw, kh*kw) logits with the bias added.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh = get_rel_pos(q_h, k_h, rel_pos_h)  # (qh, kh, C)
    Rw = get_rel_pos(q_w, k_w, rel_pos_w)  # (qw, kw, C)

    B, _, dim = q.shape
    r_q = q.reshape(B, q_h, q_w, dim)  # (B, qh*qw, C) -> (B, qh, qw, C)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)  # (B, qh, qw, kh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)  # (B, qh, qw, kw)
    # (B, qh*qw, kh*kw) -> (B, qh, qw, kh, kw); the height bias broadcasts over kw, the width
    # bias over kh; then back to (B, qh*qw, kh*kw).
    attn = attn.view(B, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(B, q_h * q_w, k_h * k_w)


def get_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw: Tuple[int, int]) -> torch.Tensor:
    """Fit pre-training absolute position embeddings to an H x W token grid.

    The embeddings of a square S x S pre-training grid (row-major) are resized bicubically
    (``align_corners=False``) when S differs from H or W; a class-token embedding, if any, is
    dropped.

    Args:
        abs_pos: (1, [1 +] S*S, C) embeddings.
        has_cls_token: whether ``abs_pos[:, 0]`` is the class token's.
        hw: target grid (H, W).

    Returns:
        (1, H, W, C) embeddings.
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    xy_num = abs_pos.shape[1]
    size = int(math.sqrt(xy_num))
    if size * size != xy_num:
        raise ValueError(f"get_abs_pos needs a square grid of position embeddings, got {xy_num} "
                         f"(has_cls_token={has_cls_token}).")
    if size != h or size != w:
        # (1, S*S, C) -> (1, S, S, C) -> (1, C, S, S) -> resize -> (1, C, H, W) -> (1, H, W, C)
        new_abs_pos = F.interpolate(
            abs_pos.reshape(1, size, size, -1).permute(0, 3, 1, 2),
            size=(h, w),
            mode="bicubic",
            align_corners=False,
        )
        return new_abs_pos.permute(0, 2, 3, 1)
    return abs_pos.reshape(1, h, w, -1)  # (1, S*S, C) -> (1, H, W, C)


class PatchEmbed(nn.Module):
    """Image to patch tokens: one strided conv, output channels-last.

    (B, C_in, H_img, W_img) -> (B, H, W, embed_dim) with H = floor((H_img + 2 pad - k) / s) + 1.
    The conv is ``proj``, as in detectron2.

    Args:
        kernel_size: conv kernel (kh, kw).
        stride: conv stride (sh, sw).
        padding: conv padding (ph, pw).
        in_chans: input image channels.
        embed_dim: token channels.
    """

    def __init__(
        self,
        kernel_size: Tuple[int, int] = (16, 16),
        stride: Tuple[int, int] = (16, 16),
        padding: Tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride,
                              padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)


class Mlp(nn.Module):
    """Two-layer perceptron of transformer blocks: ``fc2(act(fc1(x)))`` on the last axis.

    Parameter names ``fc1`` / ``fc2`` match timm's ``Mlp``, which detectron2's ViT and MViT use
    (and Swin's own), so their checkpoints load.

    Args:
        in_features: input channels.
        hidden_features: hidden channels (default: ``in_features``).
        out_features: output channels (default: ``in_features``).
        act_layer: activation class.
        drop: dropout after the activation and after ``fc2`` (Swin's ``drop_rate``).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def init_transformer_weights(m: nn.Module) -> None:
    """The init of ViT, MViT and Swin (``model.apply``): truncated normal (std 0.02) linear
    weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


class DropPath(StochasticDepth):
    """Per-sample stochastic depth on a residual branch (Huang et al. 2016), timm's ``DropPath``.

    In training, each sample's branch output is zeroed with probability ``drop_prob`` and the
    survivors are scaled by 1 / (1 - drop_prob); in eval it is the identity. This is
    ``torchvision.ops.StochasticDepth(p, mode="row")``, whose maths (and random draws:
    one Bernoulli per sample, shape (B, 1, ..., 1)) equal timm's ``DropPath``.

    Args:
        drop_prob: probability of dropping the branch for a sample.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"DropPath drop_prob must lie in [0, 1], got {drop_prob}.")
        super().__init__(p=drop_prob, mode="row")

    @property
    def drop_prob(self) -> float:
        """timm's name for ``p``."""
        return self.p

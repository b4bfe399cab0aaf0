"""Swin Transformer backbone (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted
Windows"), as detectron2's ``modeling/backbone/swin.py`` (itself the mmdet port of the authors'
detection code).

Shapes: N images, H x W input size, P patch size (4), C embed_dim, M window size (7),
S = M // 2 shift size, nH heads, nW windows per image.

    patch_embed  (P x P / P conv, LayerNorm)      (N, 3, H, W) -> (N, C, H/P, W/P)
    layers[i]    (depths[i] Swin blocks)          tokens (N, Hi*Wi, C_i), C_i = C * 2**i
    downsample   (2x2 patch merging, i < last)    (N, Hi*Wi, C_i) -> (N, Hi/2*Wi/2, 2 C_i)
    output "p{i}" (LayerNorm norm{i})             (N, C_i, Hi, Wi), stride 2**(i + 2) for P = 4

Inside a block, the (Hi, Wi) map is padded at the bottom/right to (Hp, Wp), multiples of M, and
cut into nW = Hp/M * Wp/M windows of M*M tokens; odd blocks first roll the map by (-S, -S) and
mask out pairs of tokens that were not neighbours before the roll (shifted windows, W-MSA vs
SW-MSA). Parameter and buffer names (``layers.0.blocks.1.attn.relative_position_bias_table``,
``norm0.weight``, ...) are detectron2's, so its checkpoints load without renaming.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import checkpoint

from .backbone import Backbone
from .utils import DropPath, Mlp, init_transformer_weights

__all__ = ["DropPath", "Mlp", "window_partition", "window_reverse", "relative_position_index",
           "WindowAttention", "shifted_window_attention_mask", "SwinTransformerBlock",
           "PatchMerging", "BasicLayer", "PatchEmbed", "SwinTransformer"]

# Logit added to token pairs that shifted-window attention must not connect. detectron2 and the
# reference implementation use -100 rather than -inf: exp(-100) is below float32 resolution next
# to any unmasked pair, and a finite value keeps fully padded rows NaN-free.
_MASK_VALUE = -100.0


def _pair(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut a map into non-overlapping square windows.

    Args:
        x: (N, H, W, C), H and W multiples of ``window_size`` M.

    Returns:
        (N * H/M * W/M, M, M, C): windows in row-major order, image after image.
    """
    n, h, w, c = x.shape
    m = window_size
    # (N, H, W, C) -> (N, H/M, M, W/M, M, C) -> (N, H/M, W/M, M, M, C) -> (N*H/M*W/M, M, M, C)
    x = x.view(n, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, m, m, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (N*H/M*W/M, M, M, C) -> (N, H, W, C)."""
    m = window_size
    n = windows.shape[0] // ((h // m) * (w // m))
    # (N*H/M*W/M, M, M, C) -> (N, H/M, W/M, M, M, C) -> (N, H/M, M, W/M, M, C) -> (N, H, W, C)
    x = windows.view(n, h // m, w // m, m, m, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, -1)


def relative_position_index(window_size: Tuple[int, int]) -> torch.Tensor:
    """(Mh*Mw, Mh*Mw) int64: for tokens p, q of a window (row-major), the row of the bias table
    for their offset p - q, ``(dy + Mh - 1) * (2 Mw - 1) + (dx + Mw - 1)``."""
    mh, mw = window_size
    ys, xs = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, Mh*Mw)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, Mh*Mw, Mh*Mw): p - q
    return (rel[0] + mh - 1) * (2 * mw - 1) + (rel[1] + mw - 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias (W-MSA).

    Args:
        dim: token channels C.
        window_size: (Mh, Mw) window height and width.
        num_heads: attention heads nH; must divide ``dim``.
        qkv_bias: learn a bias for the query, key and value projections.
        qk_scale: logit scale; default ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout on the output.
    """

    def __init__(self, dim: int, window_size: Tuple[int, int], num_heads: int,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"WindowAttention dim={dim} is not divisible by "
                             f"num_heads={num_heads}.")
        self.dim = dim
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        mh, mw = self.window_size
        # One learned bias per head for each of the (2 Mh - 1)(2 Mw - 1) possible offsets.
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * mh - 1) * (2 * mw - 1), num_heads))
        # Persistent, as in detectron2, so that its checkpoints load with strict=True.
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: (N*nW, T, C) tokens, T = Mh*Mw, windows of one image consecutive.
            mask: (nW, T, T) additive logits (0 or a large negative value), shared by all
                images, or None.

        Returns:
            (N*nW, T, C) tensor.
        """
        b, t, c = x.shape
        h = self.num_heads
        # (B, T, 3C) -> (B, T, 3, nH, C/nH) -> (3, B, nH, T, C/nH)
        qkv = self.qkv(x).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nH, T, T)

        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        # (T*T, nH) -> (T, T, nH) -> (nH, T, T)
        bias = bias.view(t, t, h).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)

        if mask is not None:
            nw = mask.shape[0]
            if b % nw != 0:
                raise ValueError(f"WindowAttention got {b} windows, not a multiple of the "
                                 f"mask's {nw} windows per image.")
            # (B, nH, T, T) -> (N, nW, nH, T, T), + mask (1, nW, 1, T, T), then back.
            attn = attn.view(b // nw, nw, h, t, t) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(b, h, t, t)
        attn = self.attn_drop(self.softmax(attn))

        x = (attn @ v).transpose(1, 2).reshape(b, t, c)  # (B, nH, T, C/nH) -> (B, T, C)
        return self.proj_drop(self.proj(x))


def shifted_window_attention_mask(Hp: int, Wp: int, window_size: int, shift_size: int,
                                  device: Optional[torch.device] = None) -> torch.Tensor:
    """Additive mask that keeps SW-MSA from mixing tokens the cyclic shift made adjacent.

    After rolling an Hp x Wp map by (-S, -S), the last M rows of the rolled map hold two bands:
    rows [Hp - M, Hp - S) that were already there, and rows [Hp - S, Hp) that wrapped around
    from the top; likewise for columns. Each token gets the label of its (row band, column band)
    among 3 x 3; two tokens of a window may attend to each other only if their labels agree.

    Returns:
        (nW, M*M, M*M) float tensor of 0 (allowed) and -100 (masked), nW = Hp/M * Wp/M.
    """
    m, s = window_size, shift_size

    def bands(n: int) -> torch.Tensor:
        lab = torch.zeros(n, device=device)
        lab[n - m: n - s] = 1
        lab[n - s:] = 2
        return lab

    labels = bands(Hp)[:, None] * 3 + bands(Wp)[None, :]  # (Hp, Wp), values in 0..8
    # (1, Hp, Wp, 1) -> (nW, M, M, 1) -> (nW, M*M)
    windows = window_partition(labels[None, :, :, None], m).reshape(-1, m * m)
    different = windows.unsqueeze(1) != windows.unsqueeze(2)  # (nW, M*M, M*M)
    return torch.zeros(different.shape, device=device).masked_fill_(different, _MASK_VALUE)


class SwinTransformerBlock(nn.Module):
    """One Swin block: (shifted) window attention then an MLP, each pre-norm and residual.

    The caller sets ``block.H`` and ``block.W`` (the token grid size) before ``forward``, as
    detectron2's :class:`BasicLayer` does.

    Args:
        dim: token channels C.
        shift_size: cyclic shift S, in [0, M); 0 gives W-MSA, > 0 SW-MSA.
        drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of both residual branches.
        act_layer: MLP activation class.
        num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, norm_layer: see
            :class:`SwinTransformer`.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer: Callable[[], nn.Module] = nn.GELU,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformerBlock shift_size must be in [0, window_size="
                             f"{window_size}), got {shift_size}.")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size=_pair(window_size), num_heads=num_heads,
                                    qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                    proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer,
                       drop=drop)
        self.H: Optional[int] = None
        self.W: Optional[int] = None

    def forward(self, x: torch.Tensor, mask_matrix: Optional[torch.Tensor]) -> torch.Tensor:
        """Run the block on (N, H*W, C) tokens.

        Args:
            x: tokens, row-major over the ``self.H`` x ``self.W`` grid.
            mask_matrix: (nW, M*M, M*M) mask of :func:`shifted_window_attention_mask` for the
                padded grid; used only when ``shift_size > 0``.

        Returns:
            (N, H*W, C) tensor.
        """
        n, length, c = x.shape
        H, W = self.H, self.W
        if H is None or W is None or length != H * W:
            raise ValueError(f"SwinTransformerBlock got {length} tokens but H, W = {H}, {W}; "
                             f"set block.H and block.W to the token grid size first.")
        m, s = self.window_size, self.shift_size

        shortcut = x
        x = self.norm1(x).view(n, H, W, c)  # (N, H*W, C) -> (N, H, W, C)
        # Pad bottom/right with zero tokens up to multiples of M (after the norm, as detectron2).
        pad_b, pad_r = (m - H % m) % m, (m - W % m) % m
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = H + pad_b, W + pad_r

        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        # (N, Hp, Wp, C) -> (N*nW, M, M, C) -> (N*nW, M*M, C)
        windows = window_partition(x, m).reshape(-1, m * m, c)
        windows = self.attn(windows, mask=mask_matrix if s > 0 else None)
        # (N*nW, M*M, C) -> (N*nW, M, M, C) -> (N, Hp, Wp, C)
        x = window_reverse(windows.reshape(-1, m, m, c), m, hp, wp)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = x[:, :H, :W, :].reshape(n, H * W, c)  # drop padding; (N, H, W, C) -> (N, H*W, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve the token grid: concatenate each 2 x 2 group of tokens, norm, project 4C -> 2C.

    An odd H or W is padded by one zero row / column first.

    Args:
        dim: input channels C.
        norm_layer: norm class, called with 4C.
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Map (N, H*W, C) tokens to (N, ceil(H/2)*ceil(W/2), 2C)."""
        n, length, c = x.shape
        if length != H * W:
            raise ValueError(f"PatchMerging got {length} tokens for an H x W = {H} x {W} grid.")
        x = x.view(n, H, W, c)
        if H % 2 == 1 or W % 2 == 1:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # The channel order (top-left, bottom-left, top-right, bottom-right) is the one the
        # pretrained reduction weights expect.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)  # (N, H/2, W/2, 4C)
        x = x.view(n, -1, 4 * c)  # (N, H/2, W/2, 4C) -> (N, H/2*W/2, 4C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating W-MSA and SW-MSA, then optional merging.

    Args:
        dim: token channels.
        depth: number of blocks; block ``i`` is shifted by ``window_size // 2`` when ``i`` is odd.
        num_heads: attention heads.
        window_size: window side M.
        mlp_ratio, qkv_bias, qk_scale, drop, attn_drop: see :class:`SwinTransformerBlock`.
        drop_path: stochastic depth rate, or a list of one rate per block.
        norm_layer: norm class.
        downsample: class of the layer applied at the end (:class:`PatchMerging`), or None.
        use_checkpoint: recompute the blocks in the backward pass to save memory.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Union[float, List[float]] = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 downsample: Optional[Callable[..., nn.Module]] = None,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        if isinstance(drop_path, (list, tuple)) and len(drop_path) != depth:
            raise ValueError(f"BasicLayer drop_path has {len(drop_path)} rates for "
                             f"depth={depth} blocks.")
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim=dim, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                norm_layer=norm_layer)
            for i in range(depth)
        ])
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor, H: int, W: int
                ) -> Tuple[torch.Tensor, int, int, torch.Tensor, int, int]:
        """Run the stage on (N, H*W, C) tokens.

        Returns:
            ``(x, H, W, x_down, Wh, Ww)``: the stage output and its grid size, then the merged
            (N, Wh*Ww, 2C) tokens and their grid (the stage output again, and H, W, if there is
            no downsampling).
        """
        m = self.window_size
        hp, wp = math.ceil(H / m) * m, math.ceil(W / m) * m
        attn_mask = None
        if self.shift_size > 0:
            attn_mask = shifted_window_attention_mask(hp, wp, m, self.shift_size, x.device)
            attn_mask = attn_mask.to(x.dtype)
        for blk in self.blocks:
            blk.H, blk.W = H, W
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint.checkpoint(blk, x, attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask)
        if self.downsample is None:
            return x, H, W, x, H, W
        return x, H, W, self.downsample(x, H, W), (H + 1) // 2, (W + 1) // 2


class PatchEmbed(nn.Module):
    """Split the image into P x P patches and project each to C channels (a strided conv).

    The image is padded at the bottom/right to multiples of P first.

    Args:
        patch_size: P, an int or (Ph, Pw).
        in_chans: image channels.
        embed_dim: C.
        norm_layer: norm class applied to the tokens, or None.
    """

    def __init__(self, patch_size: Union[int, Tuple[int, int]] = 4, in_chans: int = 3,
                 embed_dim: int = 96, norm_layer: Optional[Callable[[int], nn.Module]] = None
                 ) -> None:
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size,
                              stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_chans, H, W) images to (N, C, ceil(H/Ph), ceil(W/Pw)) maps."""
        ph, pw = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (pw - w % pw) % pw, 0, (ph - h % ph) % ph))
        x = self.proj(x)
        if self.norm is not None:
            wh, ww = x.shape[-2:]
            # (N, C, Wh, Ww) -> (N, Wh*Ww, C), norm over C, then back to (N, C, Wh, Ww).
            x = self.norm(x.flatten(2).transpose(1, 2))
            x = x.transpose(1, 2).reshape(-1, self.embed_dim, wh, ww)
        return x


class SwinTransformer(Backbone):
    """Swin Transformer backbone with outputs "p0".."p3" (strides 4..32 for ``patch_size=4``).

    Args:
        pretrain_img_size: image size of the pretraining, which sizes the absolute position
            embedding (only with ``ape``).
        patch_size: patch side P.
        in_chans: image channels.
        embed_dim: channels C of stage 0; stage ``i`` has ``C * 2**i``.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: window side M.
        mlp_ratio: MLP hidden channels / token channels.
        qkv_bias: learn a bias for q, k, v.
        qk_scale: logit scale; default ``head_dim ** -0.5``.
        drop_rate: dropout on the embedded patches, attention outputs and MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth rate of the last block, rising linearly from 0.
        norm_layer: norm class (called with a channel count).
        ape: add a learned absolute position embedding, resized bicubically to the input.
        patch_norm: norm the patch embedding.
        out_indices: stages whose outputs are returned, as "p{i}".
        frozen_stages: -1 freezes nothing; 0 the patch embedding; 1 also the absolute position
            embedding; k >= 2 also stages 0..k-2 (detectron2's counting).
        use_checkpoint: recompute blocks in the backward pass to save memory.
    """

    def __init__(self, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, ape: bool = False,
                 patch_norm: bool = True, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, use_checkpoint: bool = False) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinTransformer depths {list(depths)} and num_heads "
                             f"{list(num_heads)} must have the same length.")
        for i in out_indices:
            if not 0 <= i < len(depths):
                raise ValueError(f"SwinTransformer out_indices {list(out_indices)} must lie in "
                                 f"[0, {len(depths)}).")
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages

        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim,
                                      norm_layer=norm_layer if patch_norm else None)
        if ape:
            (ih, iw), (ph, pw) = _pair(pretrain_img_size), _pair(patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, ih // ph, iw // pw))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Stochastic depth rises linearly from 0 at the first block to drop_path_rate at the last.
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(BasicLayer(
                dim=embed_dim * 2 ** i, depth=depth, num_heads=num_heads[i],
                window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[start: start + depth], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None,
                use_checkpoint=use_checkpoint))
        self.num_features = [embed_dim * 2 ** i for i in range(self.num_layers)]
        for i in out_indices:  # one output norm per returned stage: norm0, norm1, ...
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self._freeze_stages()
        self._out_features = [f"p{i}" for i in out_indices]
        self._out_feature_channels = {f"p{i}": self.num_features[i] for i in out_indices}
        # Patches give stride P, each merging doubles it (4, 8, 16, 32 for P = 4; detectron2
        # hard-codes 2 ** (i + 2), which is the same for the default P).
        p = self.patch_embed.patch_size[0]
        self._out_feature_strides = {f"p{i}": p * 2 ** i for i in out_indices}
        self._size_divisibility = 32
        self.apply(self._init_weights)

    def _frozen_modules(self) -> List[nn.Module]:
        mods: List[nn.Module] = []
        if self.frozen_stages >= 0:
            mods.append(self.patch_embed)
        if self.frozen_stages >= 2:
            mods.append(self.pos_drop)
            mods.extend(self.layers[: self.frozen_stages - 1])
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False

    def train(self, mode: bool = True) -> "SwinTransformer":
        """Set train/eval mode, keeping frozen stages in eval mode.

        detectron2 puts frozen stages in eval mode only once, at construction, so a later
        ``model.train()`` re-enables their dropout and stochastic depth; the reference Swin
        detection code (mmdet) re-freezes them here, which is what "frozen" should mean.
        """
        super().train(mode)
        for m in self._frozen_modules() if mode else []:
            m.eval()
        return self

    _init_weights = staticmethod(init_transformer_weights)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Compute "p{i}" for i in ``out_indices`` from an (N, in_chans, H, W) batch.

        Returns:
            "p{i}" -> (N, C * 2**i, ceil(H / s_i), ceil(W / s_i)), s_i = P * 2**i.
        """
        if x.dim() != 4 or x.shape[1] != self.patch_embed.in_chans:
            raise ValueError(f"SwinTransformer expects an input of shape (N, "
                             f"{self.patch_embed.in_chans}, H, W), got {tuple(x.shape)}.")
        x = self.patch_embed(x)
        wh, ww = x.shape[-2:]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(wh, ww), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (N, C, Wh, Ww) -> (N, Wh*Ww, C)

        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, h, w, x, wh, ww = layer(x, wh, ww)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)
                # (N, h*w, C_i) -> (N, h, w, C_i) -> (N, C_i, h, w)
                outs[f"p{i}"] = x_out.view(-1, h, w, self.num_features[i]).permute(
                    0, 3, 1, 2).contiguous()
        return outs

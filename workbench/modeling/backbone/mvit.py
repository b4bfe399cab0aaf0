"""MViTv2: multiscale vision transformer backbone with pooling attention (Li et al. 2022), as in
detectron2.

Shapes: N images, H_img x W_img input, s0 the patch stride (4), H x W = H_img/s0 x W_img/s0
the first token grid, D embedding channels (doubling per stage), h heads (doubling per stage),
d = D/h channels per head, w the attention window side.

    patch_embed   (N, 3, H_img, W_img) -> 7x7/4 conv -> (N, H, W, D)
    stage k = 2..5, blocks up to last_block_indexes[k-2]:
      the first block of stages 3..5 pools queries by 2 (and doubles D and h), so stage k
      runs on an (H / 2^(k-2)) x (W / 2^(k-2)) grid;
      attention per block, in heads: q, k, v (N*h, Hq, Wq, d) are each pooled by a depthwise
      3x3 conv (q stride 1 or 2, k/v stride stride_kv) and normalised; attention runs within
      windows (stage 2 and the non-last blocks of later stages) or globally; with
      residual_pooling the pooled q is added back to the attention output.
    output "scale{k}" = norm(last block of stage k): (N, D_k, H_img / 2^k, W_img / 2^k)

Module and parameter names are detectron2's (``blocks.1.attn.pool_q``, ``blocks.1.attn.norm_q``,
``blocks.1.proj``, ``scale2_norm`` ...), so its MViTv2 checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Type

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .backbone import Backbone
from .utils import (
    DropPath,
    Mlp,
    init_transformer_weights,
    PatchEmbed,
    add_decomposed_rel_pos,
    get_abs_pos,
    window_partition,
    window_unpartition,
)

__all__ = ["MViT"]


def attention_pool(x: torch.Tensor, pool: nn.Module,
                   norm: Optional[nn.Module] = None) -> torch.Tensor:
    """Pool a channels-last map with a channels-first module, then optionally normalise it.

    (B, H, W, C) -> (B, H1, W1, C), H1 x W1 being ``pool``'s output size.
    """
    x = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    x = pool(x)
    x = x.permute(0, 2, 3, 1)  # (B, C, H1, W1) -> (B, H1, W1, C)
    if norm:
        x = norm(x)
    return x


class MultiScaleAttention(nn.Module):
    """Pooling multi-head attention: q, k and v are pooled (depthwise conv + norm) per head.

    Args:
        dim: input channels.
        dim_out: output channels; ``dim_out`` must be a multiple of ``num_heads``.
        num_heads: heads h.
        qkv_bias: whether the qkv projection has a bias.
        norm_layer: norm class applied to the pooled q, k, v (over the last axis, d channels).
        pool_kernel: kernel of the pooling convs (padding kernel // 2).
        stride_q: query pooling stride (2 in a stage's first block, else 1).
        stride_kv: key / value pooling stride.
        residual_pooling: add the pooled queries to the attention output (MViTv2).
        window_size: attend within windows of this side (before pooling); 0 for global.
        use_rel_pos: add decomposed relative-position bias.
        rel_pos_zero_init: zero-initialise the rel-pos tables.
        input_size: (H, H) square grid of the block's input, sizing the rel-pos tables
            (2 max(H / stride_q, H / stride_kv) - 1 rows). Required when ``use_rel_pos``.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, qkv_bias: bool = True,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 pool_kernel: Tuple[int, int] = (3, 3), stride_q: int = 1, stride_kv: int = 1,
                 residual_pooling: bool = True, window_size: int = 0, use_rel_pos: bool = False,
                 rel_pos_zero_init: bool = True,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        if num_heads <= 0 or dim_out % num_heads != 0:
            raise ValueError(f"MultiScaleAttention dim_out={dim_out} must be a multiple of "
                             f"num_heads={num_heads}.")
        self.num_heads = num_heads
        head_dim = dim_out // num_heads
        self.scale = head_dim**-0.5

        self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        # Depthwise pooling convs over each head's d channels.
        pool_padding = [k // 2 for k in pool_kernel]
        dim_conv = head_dim
        self.pool_q = nn.Conv2d(dim_conv, dim_conv, pool_kernel, stride=stride_q,
                                padding=pool_padding, groups=dim_conv, bias=False)
        self.norm_q = norm_layer(dim_conv)
        self.pool_k = nn.Conv2d(dim_conv, dim_conv, pool_kernel, stride=stride_kv,
                                padding=pool_padding, groups=dim_conv, bias=False)
        self.norm_k = norm_layer(dim_conv)
        self.pool_v = nn.Conv2d(dim_conv, dim_conv, pool_kernel, stride=stride_kv,
                                padding=pool_padding, groups=dim_conv, bias=False)
        self.norm_v = norm_layer(dim_conv)

        self.window_size = window_size
        if window_size:
            # Windows are cut after pooling, so their sides shrink by the pooling strides.
            self.q_win_size = window_size // stride_q
            self.kv_win_size = window_size // stride_kv
            if self.q_win_size == 0 or self.kv_win_size == 0:
                raise ValueError(f"MultiScaleAttention window_size={window_size} is smaller than "
                                 f"stride_q={stride_q} or stride_kv={stride_kv}.")
        self.residual_pooling = residual_pooling

        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None or input_size[0] != input_size[1]:
                raise ValueError(f"MultiScaleAttention with use_rel_pos=True needs a square "
                                 f"input_size, got {input_size}.")
            size = input_size[0]
            rel_dim = 2 * max(size // stride_q, size // stride_kv) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(rel_dim, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(rel_dim, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, Hq, Wq, dim_out), Hq = ceil(H / stride_q) for a 3x3 pool."""
        B, H, W, _ = x.shape
        # (B, H, W, 3 dim_out) -> (B, H, W, 3, h, d) -> (3, B, h, H, W, d)
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, -1).permute(3, 0, 4, 1, 2, 5)
        # each of q, k, v: (B*h, H, W, d)
        q, k, v = qkv.reshape(3, B * self.num_heads, H, W, -1).unbind(0)

        q = attention_pool(q, self.pool_q, self.norm_q)  # (B*h, Hq, Wq, d)
        k = attention_pool(k, self.pool_k, self.norm_k)  # (B*h, Hk, Wk, d)
        v = attention_pool(v, self.pool_v, self.norm_v)  # (B*h, Hk, Wk, d)

        ori_q = q
        if self.window_size:
            # (B*h, Hq, Wq, d) -> (B*h*nW, wq, wq, d); keys likewise with wk (same nW).
            q, q_hw_pad = window_partition(q, self.q_win_size)
            k, _ = window_partition(k, self.kv_win_size)
            v, _ = window_partition(v, self.kv_win_size)
            q_hw = (self.q_win_size, self.q_win_size)
            kv_hw = (self.kv_win_size, self.kv_win_size)
        else:
            q_hw = tuple(q.shape[1:3])
            kv_hw = tuple(k.shape[1:3])

        # (b, qh, qw, d) -> (b, qh*qw, d); keys and values likewise.
        q = q.reshape(q.shape[0], q_hw[0] * q_hw[1], -1)
        k = k.reshape(k.shape[0], kv_hw[0] * kv_hw[1], -1)
        v = v.reshape(v.shape[0], kv_hw[0] * kv_hw[1], -1)

        attn = (q * self.scale) @ k.transpose(-2, -1)  # (b, qh*qw, kh*kw)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, q_hw, kv_hw)
        attn = attn.softmax(dim=-1)
        x = attn @ v  # (b, qh*qw, d)
        x = x.view(x.shape[0], q_hw[0], q_hw[1], -1)  # -> (b, qh, qw, d)

        if self.window_size:
            # (B*h*nW, wq, wq, d) -> (B*h, Hq, Wq, d)
            x = window_unpartition(x, self.q_win_size, q_hw_pad, ori_q.shape[1:3])
        if self.residual_pooling:
            x = x + ori_q

        H, W = x.shape[1], x.shape[2]
        # (B*h, Hq, Wq, d) -> (B, h, Hq, Wq, d) -> (B, Hq, Wq, h, d) -> (B, Hq, Wq, dim_out)
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    """Pre-norm MViTv2 block: pooling attention and MLP, each with a residual connection.

    The shortcut of the attention branch is the input, projected (``proj``, on the normed input)
    when ``dim != dim_out`` and max-pooled (``pool_skip``, kernel stride_q + 1) when
    ``stride_q > 1``, so it matches the attention output's shape.

    Args:
        dim: input channels.
        dim_out: output channels.
        num_heads: attention heads.
        mlp_ratio: MLP hidden channels / dim_out.
        qkv_bias: whether the qkv projection has a bias.
        drop_path: stochastic-depth probability of both residual branches.
        norm_layer: token norm class.
        act_layer: MLP activation class.
        qkv_pool_kernel: kernel of the q / k / v pooling convs.
        stride_q: query pooling stride.
        stride_kv: key / value pooling stride.
        residual_pooling: add pooled queries to the attention output.
        window_size: attention window side (0 for global).
        use_rel_pos: add decomposed relative-position bias.
        rel_pos_zero_init: zero-initialise the rel-pos tables.
        input_size: square grid of the block's input (for the rel-pos tables).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: Type[nn.Module] = nn.GELU, qkv_pool_kernel: Tuple[int, int] = (3, 3),
                 stride_q: int = 1, stride_kv: int = 1, residual_pooling: bool = True,
                 window_size: int = 0, use_rel_pos: bool = False, rel_pos_zero_init: bool = True,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = MultiScaleAttention(
            dim,
            dim_out,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            norm_layer=norm_layer,
            pool_kernel=qkv_pool_kernel,
            stride_q=stride_q,
            stride_kv=stride_kv,
            residual_pooling=residual_pooling,
            window_size=window_size,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim_out)
        self.mlp = Mlp(in_features=dim_out, hidden_features=int(dim_out * mlp_ratio),
                       out_features=dim_out, act_layer=act_layer)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        if stride_q > 1:
            kernel_skip = stride_q + 1
            padding_skip = int(kernel_skip // 2)
            self.pool_skip = nn.MaxPool2d(kernel_skip, stride_q, padding_skip, ceil_mode=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, Hq, Wq, dim_out)."""
        x_norm = self.norm1(x)
        x_block = self.attn(x_norm)
        if hasattr(self, "proj"):
            x = self.proj(x_norm)
        if hasattr(self, "pool_skip"):
            x = attention_pool(x, self.pool_skip)
        x = x + self.drop_path(x_block)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class MViT(Backbone):
    """Multiscale Vision Transformer v2 backbone ("MViTv2: Improved Multiscale Vision
    Transformers for Classification and Detection", arXiv:2112.01526), as used by detectron2.

    Four stages end at ``last_block_indexes``; the block after each stage end pools queries by
    2 and doubles channels and heads. Stage 2 blocks, and every block of later stages but their
    last, attend within windows whose side starts at ``adaptive_window_size`` (in stage-2
    tokens) and halves per stage; the last blocks of stages 3 to 5 attend globally. Key/value
    pooling starts at ``adaptive_kv_stride`` and halves per stage (doubled in the last blocks
    of stages 3 and 4).

    Args:
        img_size: input side the rel-pos tables are sized for.
        patch_kernel: patch-embedding conv kernel.
        patch_stride: patch-embedding conv stride (stage-2 stride).
        patch_padding: patch-embedding conv padding.
        in_chans: image channels.
        embed_dim: stage-2 channels.
        depth: number of blocks.
        num_heads: stage-2 heads.
        last_block_indexes: index of the last block of each of the four stages.
        qkv_pool_kernel: kernel of the q / k / v pooling convs.
        adaptive_kv_stride: stage-2 key / value pooling stride.
        adaptive_window_size: stage-2 window side.
        residual_pooling: add pooled queries to attention outputs.
        mlp_ratio: MLP hidden channels / block channels.
        qkv_bias: whether qkv projections have a bias.
        drop_path_rate: stochastic depth of the last block; rises linearly from 0.
        norm_layer: token norm class (e.g. ``partial(nn.LayerNorm, eps=1e-6)``).
        act_layer: activation class (detectron2 builds the blocks with their default, GELU,
            whatever is passed here; so does this port).
        use_abs_pos: add absolute position embeddings, resized to the grid.
        use_rel_pos: add decomposed relative-position bias.
        rel_pos_zero_init: zero-initialise the rel-pos tables.
        use_act_checkpoint: recompute block activations in backward (``torch.utils.checkpoint``
            in place of detectron2's fairscale wrapper; module names unchanged).
        pretrain_img_size: image side ``pos_embed`` was pre-trained at.
        pretrain_use_cls_token: whether ``pos_embed`` has a leading class-token row.
        out_features: stages to output, among "scale2" .. "scale5".
    """

    def __init__(self, img_size: int = 224, patch_kernel: Tuple[int, int] = (7, 7),
                 patch_stride: Tuple[int, int] = (4, 4), patch_padding: Tuple[int, int] = (3, 3),
                 in_chans: int = 3, embed_dim: int = 96, depth: int = 16, num_heads: int = 1,
                 last_block_indexes: Sequence[int] = (0, 2, 11, 15),
                 qkv_pool_kernel: Tuple[int, int] = (3, 3), adaptive_kv_stride: int = 4,
                 adaptive_window_size: int = 56, residual_pooling: bool = True,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: Type[nn.Module] = nn.GELU, use_abs_pos: bool = False,
                 use_rel_pos: bool = True, rel_pos_zero_init: bool = True,
                 use_act_checkpoint: bool = False, pretrain_img_size: int = 224,
                 pretrain_use_cls_token: bool = True,
                 out_features: Sequence[str] = ("scale2", "scale3", "scale4", "scale5")) -> None:
        super().__init__()
        last_block_indexes = tuple(last_block_indexes)
        increasing = list(last_block_indexes) == sorted(set(last_block_indexes))
        if len(last_block_indexes) != 4 or not increasing:
            raise ValueError(f"MViT last_block_indexes must be 4 increasing block indexes (one per "
                             f"stage), got {last_block_indexes}.")
        if last_block_indexes[0] < 0 or last_block_indexes[-1] >= depth:
            raise ValueError(f"MViT last_block_indexes {last_block_indexes} out of range for "
                             f"depth={depth}.")
        bad = [f for f in out_features if f not in ("scale2", "scale3", "scale4", "scale5")]
        if bad:
            raise ValueError(f"MViT out_features {bad} unknown; choose among scale2 .. scale5.")
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint

        self.patch_embed = PatchEmbed(kernel_size=patch_kernel, stride=patch_stride,
                                      padding=patch_padding, in_chans=in_chans, embed_dim=embed_dim)
        if use_abs_pos:
            # One embedding per pre-training patch (plus the class token's): (1, [1 +] S*S, D).
            num_patches = ((pretrain_img_size // patch_stride[0])
                           * (pretrain_img_size // patch_stride[1]))
            num_positions = num_patches + 1 if pretrain_use_cls_token else num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        # Stochastic depth rises linearly over the blocks.
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        dim_out = embed_dim
        stride_kv = adaptive_kv_stride
        window_size = adaptive_window_size
        input_size = (img_size // patch_stride[0], img_size // patch_stride[1])
        stage = 2
        stride = patch_stride[0]
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        self.blocks = nn.ModuleList()
        for i in range(depth):
            # The last blocks of stages 3 and 4 pool keys / values twice as much.
            if i == last_block_indexes[1] or i == last_block_indexes[2]:
                stride_kv_ = stride_kv * 2
            else:
                stride_kv_ = stride_kv
            # Hybrid window attention: the last block of stages 3..5 is global.
            window_size_ = 0 if i in last_block_indexes[1:] else window_size
            # act_layer is not forwarded, as in detectron2 (blocks use their GELU default).
            block = MultiScaleBlock(
                dim=embed_dim,
                dim_out=dim_out,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                norm_layer=norm_layer,
                qkv_pool_kernel=qkv_pool_kernel,
                stride_q=2 if i - 1 in last_block_indexes else 1,
                stride_kv=stride_kv_,
                residual_pooling=residual_pooling,
                window_size=window_size_,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                input_size=input_size,
            )
            self.blocks.append(block)

            embed_dim = dim_out
            if i in last_block_indexes:
                name = f"scale{stage}"
                if name in out_features:
                    self._out_feature_channels[name] = dim_out
                    self._out_feature_strides[name] = stride
                    self.add_module(f"{name}_norm", norm_layer(dim_out))
                # The next stage starts with twice the channels and heads, half the resolution.
                dim_out *= 2
                num_heads *= 2
                stride_kv = max(stride_kv // 2, 1)
                stride *= 2
                stage += 1
            if i - 1 in last_block_indexes:
                # This block pooled q by 2: later blocks see half the grid.
                window_size = window_size // 2
                input_size = [s // 2 for s in input_size]

        self._out_features = list(out_features)
        self._last_block_indexes = last_block_indexes

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    _init_weights = staticmethod(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C_in, H_img, W_img) -> ``scale{k}``: (N, D_k, ~H_img / 2^k, ~W_img / 2^k)."""
        if x.dim() != 4:
            raise ValueError(f"MViT expects an (N, C, H, W) image batch, got shape "
                             f"{tuple(x.shape)}.")
        x = self.patch_embed(x)  # (N, H, W, D)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, x.shape[1:3])

        outputs = {}
        stage = 2
        for i, blk in enumerate(self.blocks):
            if self.use_act_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in self._last_block_indexes:
                name = f"scale{stage}"
                if name in self._out_features:
                    x_out = getattr(self, f"{name}_norm")(x)
                    outputs[name] = x_out.permute(0, 3, 1, 2)  # (N, h, w, D) -> (N, D, h, w)
                stage += 1
        return outputs

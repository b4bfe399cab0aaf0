"""ViTDet: a plain ViT backbone and its simple feature pyramid (Li et al. 2022), as in detectron2.

Shapes: N images, H_img x W_img input, p the patch size, H x W = H_img/p x W_img/p token grid,
D embedding channels, h heads, w the attention window side, C_out pyramid channels.

    ViT
      patch_embed  (N, 3, H_img, W_img) -> (N, H, W, D)        (+ pos_embed resized to H x W)
      blocks[i]    (N, H, W, D) -> (N, H, W, D): x + attn(norm1(x)), then x + mlp(norm2(x));
                   attention is global, or within w x w windows for i in window_block_indexes;
                   blocks in residual_block_indexes end with a conv ResBottleneckBlock
      output       {"last_feat": (N, D, H, W)}                 stride p
    SimpleFeaturePyramid (from the single stride-16 map of a ViT with p = 16)
      simfp_2  scale 4    2 deconvs      -> (N, C_out, H_img/4,  W_img/4)   "p2"
      simfp_3  scale 2    1 deconv       -> (N, C_out, H_img/8,  W_img/8)   "p3"
      simfp_4  scale 1    identity       -> (N, C_out, H_img/16, W_img/16)  "p4"
      simfp_5  scale 0.5  2x2 max pool   -> (N, C_out, H_img/32, W_img/32)  "p5"
      top_block (e.g. LastLevelMaxPool)  -> "p6" ...
    each simfp stage ends with a 1x1 and a 3x3 conv, each followed by a channels-first norm.

Module and parameter names are detectron2's (``blocks.0.attn.qkv``, ``blocks.0.attn.rel_pos_h``,
``blocks.0.mlp.fc1``, ``net.patch_embed.proj``, ``simfp_2.0``, ``simfp_2.4.norm`` ...), so
ViTDet checkpoints load unchanged.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from workbench.layers import Conv2d, get_norm
from workbench.layers.blocks import CNNBlockBase
from workbench.layers.weight_init import c2_msra_fill

from .backbone import Backbone
from .fpn import _assert_strides_are_log2_contiguous
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

__all__ = ["ViT", "SimpleFeaturePyramid", "get_vit_lr_decay_rate"]


class Attention(nn.Module):
    """Multi-head self-attention over an H x W token grid, with optional decomposed rel-pos bias.

    Args:
        dim: token channels D.
        num_heads: number of heads h; D must be a multiple of it.
        qkv_bias: whether the qkv projection has a bias.
        use_rel_pos: add MViTv2's decomposed relative-position bias to the logits.
        rel_pos_zero_init: start the rel-pos tables at zero (else truncated normal, std 0.02).
        input_size: (H, W) grid the rel-pos tables are sized for (2H - 1 and 2W - 1 rows);
            other grids interpolate them. Required when ``use_rel_pos``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 use_rel_pos: bool = False, rel_pos_zero_init: bool = True,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        if num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(f"Attention dim={dim} must be a multiple of num_heads={num_heads}.")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("Attention with use_rel_pos=True needs input_size=(H, W).")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) -> (B, H, W, D); B counts windows when called on windows."""
        B, H, W, _ = x.shape
        # (B, H, W, 3D) -> (B, H*W, 3, h, D/h) -> (3, B, h, H*W, D/h)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        # each of q, k, v: (3, B, h, H*W, D/h) -> (B*h, H*W, D/h)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)

        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*h, H*W, H*W)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
        attn = attn.softmax(dim=-1)
        # (B*h, H*W, D/h) -> (B, h, H, W, D/h) -> (B, H, W, h, D/h) -> (B, H, W, D)
        x = (attn @ v).view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class ResBottleneckBlock(CNNBlockBase):
    """Conv bottleneck (1x1, 3x3, 1x1, each followed by a norm) plus identity, no last activation.

    (N, C_in, H, W) -> (N, C_out, H, W); needs C_in == C_out for the identity. The last norm
    starts at zero, so a new block is the identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bottleneck_channels: channels of the 3x3 conv.
        norm: norm after each conv (see :func:`workbench.layers.get_norm`; "LN" is the
            channels-first :class:`~workbench.layers.LayerNorm`).
        act_layer: activation class after the first two norms.
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int,
                 norm: Union[str, Callable] = "LN", act_layer: Type[nn.Module] = nn.GELU) -> None:
        super().__init__(in_channels, out_channels, 1)
        if in_channels != out_channels:
            raise ValueError(f"ResBottleneckBlock adds its input back: in_channels={in_channels} "
                             f"must equal out_channels={out_channels}.")
        # Children run in registration order in forward; keep this order.
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, bias=False)
        self.norm1 = get_norm(norm, bottleneck_channels)
        self.act1 = act_layer()
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, padding=1, bias=False)
        self.norm2 = get_norm(norm, bottleneck_channels)
        self.act2 = act_layer()
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = get_norm(norm, out_channels)

        for layer in (self.conv1, self.conv2, self.conv3):
            c2_msra_fill(layer)
        for layer in (self.norm1, self.norm2):
            layer.weight.data.fill_(1.0)
            layer.bias.data.zero_()
        self.norm3.weight.data.zero_()
        self.norm3.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.children():
            out = layer(out)
        return x + out


class Block(nn.Module):
    """Pre-norm transformer block with optional window attention and a trailing conv block.

    Args:
        dim: token channels D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden channels / D.
        qkv_bias: whether the qkv projection has a bias.
        drop_path: stochastic-depth probability of both residual branches.
        norm_layer: token norm class (over the last axis).
        act_layer: activation class of the MLP (and of the residual conv block).
        use_rel_pos: add decomposed relative-position bias in attention.
        rel_pos_zero_init: zero-initialise the rel-pos tables.
        window_size: attend within w x w windows (padding the grid as needed); 0 for global.
        use_residual_block: append a :class:`ResBottleneckBlock` (bottleneck D/2, "LN" norm).
        input_size: token grid (H, W) that global attention's rel-pos tables are sized for.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: Type[nn.Module] = nn.GELU, use_rel_pos: bool = False,
                 rel_pos_zero_init: bool = True, window_size: int = 0,
                 use_residual_block: bool = False,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        if window_size < 0:
            raise ValueError(f"Block window_size must be >= 0 (0 = global attention), "
                             f"got {window_size}.")
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)
        self.window_size = window_size
        self.use_residual_block = use_residual_block
        if use_residual_block:
            self.residual = ResBottleneckBlock(
                in_channels=dim, out_channels=dim, bottleneck_channels=dim // 2, norm="LN",
                act_layer=act_layer,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) -> (B, H, W, D)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)  # -> (B*nW, w, w, D)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))  # -> (B, H, W, D)

        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_residual_block:
            # (B, H, W, D) -> (B, D, H, W) for the convs, and back.
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class ViT(Backbone):
    """Plain Vision Transformer backbone of ViTDet ("Exploring Plain Vision Transformer
    Backbones for Object Detection", arXiv:2203.16527). One output: the last block's map.

    Args:
        img_size: input side the global blocks' rel-pos tables are sized for (img_size / p).
        patch_size: patch side p, also the output stride.
        in_chans: image channels.
        embed_dim: token channels D.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden channels / D.
        qkv_bias: whether qkv projections have a bias.
        drop_path_rate: stochastic depth of the last block; rises linearly from 0 at block 0.
        norm_layer: token norm class (e.g. ``partial(nn.LayerNorm, eps=1e-6)`` in ViTDet).
        act_layer: activation class.
        use_abs_pos: add absolute position embeddings (``pos_embed``), resized to the grid.
        use_rel_pos: add decomposed relative-position bias in every block's attention.
        rel_pos_zero_init: zero-initialise the rel-pos tables.
        window_size: window side w of the windowed blocks.
        window_block_indexes: blocks using window attention (if ``window_size`` > 0); the
            others attend globally. Indexes >= depth are ignored, as in detectron2.
        residual_block_indexes: blocks followed by a conv :class:`ResBottleneckBlock`.
        use_act_checkpoint: recompute block activations in backward (training memory saver;
            ``torch.utils.checkpoint`` stands in for detectron2's fairscale wrapper, module
            names are unchanged).
        pretrain_img_size: image side ``pos_embed`` was pre-trained at.
        pretrain_use_cls_token: whether ``pos_embed`` has a leading class-token row.
        out_feature: name of the output map.
    """

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: Type[nn.Module] = nn.GELU, use_abs_pos: bool = True,
                 use_rel_pos: bool = False, rel_pos_zero_init: bool = True, window_size: int = 0,
                 window_block_indexes: Sequence[int] = (),
                 residual_block_indexes: Sequence[int] = (), use_act_checkpoint: bool = False,
                 pretrain_img_size: int = 224, pretrain_use_cls_token: bool = True,
                 out_feature: str = "last_feat") -> None:
        super().__init__()
        # As in detectron2, indexes >= depth are ignored (configs shrink ``depth`` by override)
        # and window_size=0 turns the "windowed" blocks global.
        if window_size < 0:
            raise ValueError(f"ViT window_size must be >= 0 (0 = global attention), "
                             f"got {window_size}.")
        if not 0.0 <= drop_path_rate <= 1.0:
            raise ValueError(f"ViT drop_path_rate must lie in [0, 1], got {drop_path_rate}.")
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint

        self.patch_embed = PatchEmbed(kernel_size=(patch_size, patch_size),
                                      stride=(patch_size, patch_size), in_chans=in_chans,
                                      embed_dim=embed_dim)
        if use_abs_pos:
            # One embedding per pre-training patch (plus the class token's): (1, [1 +] S*S, D).
            num_patches = (pretrain_img_size // patch_size) * (pretrain_img_size // patch_size)
            num_positions = num_patches + 1 if pretrain_use_cls_token else num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        # Stochastic depth rises linearly over the blocks.
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=window_size if i in window_block_indexes else 0,
                use_residual_block=i in residual_block_indexes,
                input_size=(img_size // patch_size, img_size // patch_size),
            )
            for i in range(depth)
        )

        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}
        self._out_features = [out_feature]

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    _init_weights = staticmethod(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C_in, H_img, W_img) -> {out_feature: (N, D, H_img // p, W_img // p)}."""
        if x.dim() != 4:
            raise ValueError(f"ViT expects an (N, C, H, W) image batch, got shape "
                             f"{tuple(x.shape)}.")
        x = self.patch_embed(x)  # (N, H, W, D)
        if self.pos_embed is not None:
            hw = (x.shape[1], x.shape[2])
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, hw)
        for blk in self.blocks:
            if self.use_act_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return {self._out_features[0]: x.permute(0, 3, 1, 2)}  # (N, H, W, D) -> (N, D, H, W)


class SimpleFeaturePyramid(Backbone):
    """ViTDet's simple feature pyramid: rescale one backbone map into strided levels ``p{k}``.

    Scale 4 is two 2x2 stride-2 transposed convs (``simfp_k.0`` and ``.3``, a norm and GELU
    between them), scale 2 one such deconv, scale 1 nothing, scale 0.5 a 2x2 max pool; every
    stage then applies a 1x1 conv and a 3x3 conv (registered as the stage's last two children),
    each with ``norm``. Stages are named ``simfp_{log2(stride)}``.

    Args:
        net: backbone producing ``in_feature``.
        in_feature: name of the map of ``net`` to build on.
        out_channels: channels C_out of every level.
        scale_factors: upsampling factors, from 4.0, 2.0, 1.0 and 0.5, finest first; the
            resulting strides must double from one to the next.
        top_block: optional module adding coarser levels; it has ``num_levels`` and
            ``in_feature`` (a level such as "p5" or a map of ``net``) and returns a list of maps.
        norm: norm after each conv ("LN" is the channels-first LayerNorm; "" for none, and then
            the convs have a bias).
        square_pad: if > 0, inputs are padded to a square of this side (reported through
            ``padding_constraints``).
    """

    def __init__(self, net: Backbone, in_feature: str, out_channels: int,
                 scale_factors: Sequence[float], top_block: Optional[nn.Module] = None,
                 norm: Union[str, Callable] = "LN", square_pad: int = 0) -> None:
        super().__init__()
        if not isinstance(net, Backbone):
            raise TypeError(f"SimpleFeaturePyramid's net must be a Backbone, got "
                            f"{type(net).__name__}.")
        input_shapes = net.output_shape()
        if in_feature not in input_shapes:
            raise ValueError(f"SimpleFeaturePyramid in_feature '{in_feature}' is not produced by "
                             f"net, which outputs {list(input_shapes)}.")
        if not scale_factors:
            raise ValueError("SimpleFeaturePyramid needs at least one scale factor, got "
                             "scale_factors=[].")
        self.scale_factors = scale_factors

        strides = [int(input_shapes[in_feature].stride / scale) for scale in scale_factors]
        _assert_strides_are_log2_contiguous(strides)

        dim = input_shapes[in_feature].channels
        # A plain list, as in detectron2: the stages are registered once, as simfp_{k}.
        self.stages = []
        use_bias = norm == ""
        for idx, scale in enumerate(scale_factors):
            out_dim = dim
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                    get_norm(norm, dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
                ]
                out_dim = dim // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
                out_dim = dim // 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                raise NotImplementedError(f"SimpleFeaturePyramid scale_factors entry {scale} is "
                                          f"not supported; use 4.0, 2.0, 1.0 or 0.5.")
            layers.extend([
                Conv2d(out_dim, out_channels, kernel_size=1, bias=use_bias,
                       norm=get_norm(norm, out_channels)),
                Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias,
                       norm=get_norm(norm, out_channels)),
            ])
            stage_module = nn.Sequential(*layers)
            stage = int(math.log2(strides[idx]))
            self.add_module(f"simfp_{stage}", stage_module)
            self.stages.append(stage_module)

        self.net = net
        self.in_feature = in_feature
        self.top_block = top_block
        # Output names are "p<k>" with stride 2^k, finest first, then the top block's levels.
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            for s in range(stage, stage + top_block.num_levels):
                self._out_feature_strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """``{"size_divisiblity": coarsest stride, "square_size": square_pad}``.

        The first key is misspelt on purpose: detectron2's SimpleFeaturePyramid returns it so,
        hence ``ImageList.from_tensors`` (which reads "size_divisibility") never applies it, and
        ``size_divisibility`` stays 0. Keeping the key keeps the padding, and so the outputs,
        identical to detectron2's; ViTDet configs pad to a square anyway (``square_pad``).
        """
        return {"size_divisiblity": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C_in, H_img, W_img) -> ``p{k}``: (N, C_out, H_img / 2^k, W_img / 2^k), finest
        first."""
        bottom_up_features = self.net(x)
        features = bottom_up_features[self.in_feature]
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_in_feature = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_in_feature = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_in_feature))
        assert len(self._out_features) == len(results)
        return dict(zip(self._out_features, results))


def get_vit_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """Layer-wise learning-rate decay factor of a ViT parameter (as in BEiT / ViTDet).

    Layer ids: 0 for ``pos_embed`` / ``patch_embed``, i + 1 for ``blocks.i`` (except its conv
    ``residual`` block), and ``num_layers + 1`` for everything else (residual blocks, pyramid,
    heads, and any name not starting with "backbone"). The factor is
    ``lr_decay_rate ** (num_layers + 1 - layer_id)``.

    Args:
        name: full parameter name, e.g. "backbone.net.blocks.3.attn.qkv.weight".
        lr_decay_rate: decay per layer.
        num_layers: number of ViT blocks.
    """
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name[name.find(".blocks."):].split(".")[2]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)

"""ViTDet pieces: token-map helpers, attention maths, ViT + SimpleFeaturePyramid shapes, names.

Attention is checked against slow reference loops written from the papers' formulas
(softmax(scale q.k + q.R_h + q.R_w) v per head, per window); checkpoint compatibility against
key names and shapes read off detectron2's ``modeling/backbone/vit.py`` for a tiny model.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench.layers import LayerNorm
from workbench.modeling import SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate
from workbench.modeling.backbone import LastLevelMaxPool
from workbench.modeling.backbone.utils import (
    DropPath,
    PatchEmbed,
    add_decomposed_rel_pos,
    get_abs_pos,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from workbench.modeling.backbone.vit import Attention, Block, ResBottleneckBlock

# ---------------------------------------------------------------- reference maths (slow loops)


def rel_index(qi, kj, q_len, k_len):
    """Row of the rel-pos table for query qi and key kj: offsets measured on the finer grid."""
    fine = max(q_len, k_len)
    qc, kc = qi * fine / q_len, kj * fine / k_len
    return int(qc - kc + (k_len - 1) * fine / k_len)


def ref_attention_head(q, k, v, scale, q_hw, k_hw, rel_h=None, rel_w=None):
    """One head: out_i = sum_j softmax_j(scale q_i.k_j + q_i.Rh[ih, jh] + q_i.Rw[iw, jw]) v_j."""
    out = torch.zeros(q.shape[0], v.shape[1], dtype=q.dtype)
    for i in range(q.shape[0]):
        ih, iw = divmod(i, q_hw[1])
        logits = torch.zeros(k.shape[0], dtype=q.dtype)
        for j in range(k.shape[0]):
            jh, jw = divmod(j, k_hw[1])
            logits[j] = scale * torch.dot(q[i], k[j])
            if rel_h is not None:
                logits[j] += torch.dot(q[i], rel_h[rel_index(ih, jh, q_hw[0], k_hw[0])])
                logits[j] += torch.dot(q[i], rel_w[rel_index(iw, jw, q_hw[1], k_hw[1])])
        out[i] = torch.softmax(logits, 0) @ v
    return out


def ref_attention(attn: Attention, tokens):
    """Global attention of ``attn`` on one (h, w, D) map, head by head."""
    h, w, dim = tokens.shape
    heads, dh = attn.num_heads, dim // attn.num_heads
    qkv = attn.qkv(tokens.reshape(h * w, dim))  # channels: [q | k | v], each [head][dh]
    q, k, v = qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:]
    outs = []
    for head in range(heads):
        sl = slice(head * dh, (head + 1) * dh)
        rel = (attn.rel_pos_h, attn.rel_pos_w) if attn.use_rel_pos else (None, None)
        outs.append(ref_attention_head(q[:, sl], k[:, sl], v[:, sl], dh**-0.5, (h, w), (h, w),
                                       *rel))
    return attn.proj(torch.cat(outs, 1)).reshape(h, w, dim)


def tiny_vit(**kw):
    args = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, window_size=3,
                window_block_indexes=[0], residual_block_indexes=[1], use_rel_pos=True,
                pretrain_img_size=32)
    args.update(kw)
    return ViT(**args)


def tiny_sfp(**kw):
    torch.manual_seed(0)
    return SimpleFeaturePyramid(tiny_vit(**kw), "last_feat", out_channels=16,
                                scale_factors=(4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool(),
                                square_pad=64)


# ---------------------------------------------------------------- utils


def test_window_partition_pads_and_round_trips():
    x = torch.randn(2, 7, 5, 3)
    windows, (hp, wp) = window_partition(x, 3)
    assert (hp, wp) == (9, 6)
    assert windows.shape == (2 * 3 * 2, 3, 3, 3)
    padded = F.pad(x, (0, 0, 0, 1, 0, 2))  # zeros at the bottom and right
    n = 0
    for b in range(2):
        for r in range(3):
            for c in range(2):
                torch.testing.assert_close(windows[n], padded[b, 3 * r:3 * r + 3, 3 * c:3 * c + 3])
                n += 1
    torch.testing.assert_close(window_unpartition(windows, 3, (hp, wp), (7, 5)), x, rtol=0, atol=0)
    # No padding needed: still a round trip, and no padding reported.
    w2, pad2 = window_partition(x[:, :6, :3], 3)
    assert pad2 == (6, 3)
    torch.testing.assert_close(window_unpartition(w2, 3, pad2, (6, 3)), x[:, :6, :3])


def test_window_partition_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window_size"):
        window_partition(torch.zeros(1, 4, 4, 2), 0)
    with pytest.raises(ValueError, match="pad_hw"):
        window_unpartition(torch.zeros(5, 2, 2, 1), 2, (4, 4), (4, 4))


@pytest.mark.parametrize("q_len,k_len", [(4, 4), (4, 2), (2, 4), (3, 3)])
def test_get_rel_pos_indexes_by_relative_offset(q_len, k_len):
    table = torch.randn(2 * max(q_len, k_len) - 1, 5)
    out = get_rel_pos(q_len, k_len, table)
    assert out.shape == (q_len, k_len, 5)
    for i in range(q_len):
        for j in range(k_len):
            torch.testing.assert_close(out[i, j], table[rel_index(i, j, q_len, k_len)])
    if q_len == k_len:  # the textbook form: row i - j + (k - 1)
        assert torch.equal(out[2, 0], table[2 + q_len - 1])
        assert torch.equal(out[0, 2], table[q_len - 3])


def test_get_rel_pos_linearly_resizes_a_table_of_another_length():
    table = torch.randn(5, 3)
    out = get_rel_pos(4, 4, table)  # needs 7 rows
    src = np.arange(5)
    # linear, align_corners=False: row m samples the table at (m + 0.5) * 5/7 - 0.5, clamped.
    pos = np.clip((np.arange(7) + 0.5) * 5 / 7 - 0.5, 0, 4)
    resized = np.stack([np.interp(pos, src, table[:, c].numpy()) for c in range(3)], 1)
    for i in range(4):
        for j in range(4):
            np.testing.assert_allclose(out[i, j].numpy(), resized[i - j + 3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("q_size,k_size", [((3, 4), (3, 4)), ((4, 4), (2, 2)), ((2, 3), (4, 6))])
def test_add_decomposed_rel_pos_matches_explicit_sum(q_size, k_size):
    torch.manual_seed(0)
    B, C = 3, 4
    nq, nk = q_size[0] * q_size[1], k_size[0] * k_size[1]
    q, attn = torch.randn(B, nq, C), torch.randn(B, nq, nk)
    rel_h = torch.randn(2 * max(q_size[0], k_size[0]) - 1, C)
    rel_w = torch.randn(2 * max(q_size[1], k_size[1]) - 1, C)
    out = add_decomposed_rel_pos(attn.clone(), q, rel_h, rel_w, q_size, k_size)
    expected = attn.clone()
    for b in range(B):
        for i in range(nq):
            ih, iw = divmod(i, q_size[1])
            for j in range(nk):
                jh, jw = divmod(j, k_size[1])
                expected[b, i, j] += q[b, i] @ rel_h[rel_index(ih, jh, q_size[0], k_size[0])]
                expected[b, i, j] += q[b, i] @ rel_w[rel_index(iw, jw, q_size[1], k_size[1])]
    torch.testing.assert_close(out, expected)


def test_get_abs_pos_layout_cls_token_and_bicubic_resize():
    s, C = 3, 3
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    grid = torch.stack([rows, cols, torch.full_like(rows, 7)], -1).float().reshape(1, s * s, C)
    with_cls = torch.cat([torch.full((1, 1, C), 100.0), grid], 1)
    # Same size: a row-major reshape, class token dropped.
    out = get_abs_pos(with_cls, True, (s, s))
    assert out.shape == (1, s, s, C)
    torch.testing.assert_close(out[0, :, :, 0], rows.float())
    torch.testing.assert_close(out[0, :, :, 1], cols.float())
    torch.testing.assert_close(get_abs_pos(grid, False, (s, s)), out)
    # Non-square target: channel 0 (row index) varies along H only, channel 1 along W only.
    big = get_abs_pos(with_cls, True, (6, 4))
    assert big.shape == (1, 6, 4, C)
    assert torch.allclose(big[0, :, :, 0], big[0, :, :1, 0].expand(6, 4))
    assert torch.allclose(big[0, :, :, 1], big[0, :1, :, 1].expand(6, 4))
    assert (big[0, 1:, 0, 0] >= big[0, :-1, 0, 0]).all() and big[0, -1, 0, 0] > big[0, 0, 0, 0]
    assert (big[0, 0, 1:, 1] >= big[0, 0, :-1, 1]).all() and big[0, 0, -1, 1] > big[0, 0, 0, 1]
    torch.testing.assert_close(big[..., 2], torch.full((1, 6, 4), 7.0))  # constants survive
    with pytest.raises(ValueError, match="square"):
        get_abs_pos(grid[:, :8], False, (3, 3))


def test_patch_embed_is_channels_last():
    pe = PatchEmbed(kernel_size=(4, 4), stride=(4, 4), in_chans=3, embed_dim=6)
    x = torch.randn(2, 3, 8, 12)
    out = pe(x)
    assert out.shape == (2, 2, 3, 6)
    torch.testing.assert_close(out, pe.proj(x).permute(0, 2, 3, 1))


def test_layer_norm_normalises_channels_at_each_position():
    ln = LayerNorm(4)
    assert ln.eps == 1e-6
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        ln.bias.copy_(torch.tensor([0.0, 1.0, 0.0, -1.0]))
    x = torch.randn(2, 4, 3, 5) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (4,), ln.weight, ln.bias, 1e-6)
    expected = expected.permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected)
    # Not GroupNorm(1, C), which pools over H and W too.
    assert not torch.allclose(nn.GroupNorm(1, 4)(x), LayerNorm(4)(x), atol=1e-3)
    with pytest.raises(ValueError, match=r"\(N, 4"):
        ln(torch.randn(2, 3, 4, 4))


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    x = torch.ones(64, 3, 2, 2)
    out = dp(x)
    per_sample = out.flatten(1)
    kept = per_sample[:, 0] > 0
    assert torch.all((per_sample == 0) | (per_sample == 2.0))  # survivors scaled by 1 / (1 - p)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))  # whole samples
    assert 0 < int(kept.sum()) < 64
    assert torch.equal(dp.eval()(x), x)
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.5)


# ---------------------------------------------------------------- attention and blocks


def test_global_attention_matches_explicit_formula():
    torch.manual_seed(0)
    attn = Attention(8, num_heads=2, use_rel_pos=True, rel_pos_zero_init=False, input_size=(3, 4))
    x = torch.randn(2, 3, 4, 8)
    out = attn(x)
    for b in range(2):
        torch.testing.assert_close(out[b], ref_attention(attn, x[b]), rtol=1e-4, atol=1e-5)


def test_windowed_block_is_global_attention_within_each_padded_window():
    torch.manual_seed(0)
    ws, H, W, D = 3, 7, 8, 8
    blk = Block(D, num_heads=2, use_rel_pos=True, rel_pos_zero_init=False, window_size=ws).eval()
    assert blk.attn.rel_pos_h.shape == (2 * ws - 1, D // 2)
    x = torch.randn(2, H, W, D)
    out = blk(x)
    with torch.no_grad():
        xn = F.pad(blk.norm1(x), (0, 0, 0, 9 - W, 0, 9 - H))  # zero tokens fill the last windows
        attn_out = torch.zeros_like(xn)
        for b in range(2):
            for r in range(0, 9, ws):
                for c in range(0, 9, ws):
                    window = xn[b, r:r + ws, c:c + ws]
                    attn_out[b, r:r + ws, c:c + ws] = ref_attention(blk.attn, window)
        y = x + attn_out[:, :H, :W]
        expected = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_window_covering_the_grid_equals_global_attention():
    torch.manual_seed(0)
    glob = Block(8, 2, use_rel_pos=True, rel_pos_zero_init=False, input_size=(4, 4))
    win = Block(8, 2, use_rel_pos=True, window_size=4)
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 4, 4, 8)
    torch.testing.assert_close(win(x), glob(x))
    # A smaller window changes the result (the check above could fail).
    small = Block(8, 2, use_rel_pos=False, window_size=2)
    small.load_state_dict({k: v for k, v in glob.state_dict().items() if "rel_pos" not in k})
    glob_norel = Block(8, 2)
    glob_norel.load_state_dict(small.state_dict())
    assert not torch.allclose(small(x), glob_norel(x))


def test_res_bottleneck_block_starts_as_identity_and_uses_channel_layernorm():
    torch.manual_seed(0)
    blk = ResBottleneckBlock(8, 8, 4)
    assert isinstance(blk.norm1, LayerNorm) and blk.stride == 1
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(blk(x), x)
    nn.init.ones_(blk.norm3.weight)
    assert not torch.allclose(blk(x), x)
    with pytest.raises(ValueError, match="in_channels"):
        ResBottleneckBlock(8, 16, 4)


# ---------------------------------------------------------------- ViT and SimpleFeaturePyramid


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_vit_sfp_shapes_match_output_shape(hw):
    model = tiny_sfp()
    shapes = model.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert model.net.output_shape()["last_feat"].channels == 32
    # detectron2's (misspelt) key, so ImageList applies no divisibility: see the property.
    assert model.padding_constraints == {"size_divisiblity": 32, "square_size": 64}
    assert model.size_divisibility == 0
    out = model(torch.randn(2, 3, *hw))
    assert list(out) == list(shapes)
    for name, f in out.items():
        s = shapes[name].stride
        assert f.shape == (2, 16, math.ceil(hw[0] / s), math.ceil(hw[1] / s)), name
        assert torch.isfinite(f).all()


def test_sfp_without_norm_uses_biased_convs_and_other_scale_sets():
    torch.manual_seed(0)
    model = SimpleFeaturePyramid(tiny_vit(), "last_feat", 8, (2.0, 1.0), norm="")
    assert list(model.output_shape()) == ["p3", "p4"]
    assert model.simfp_4[0].bias is not None and model.simfp_4[0].norm is None
    out = model(torch.randn(1, 3, 64, 64))
    assert out["p3"].shape == (1, 8, 8, 8) and out["p4"].shape == (1, 8, 4, 4)


def test_vit_adds_resized_abs_pos_to_patch_tokens():
    torch.manual_seed(0)
    vit = tiny_vit(depth=0, window_block_indexes=[], residual_block_indexes=[])
    assert vit.pos_embed.shape == (1, 2 * 2 + 1, 32)  # 32 / 16 = 2 per side, plus class token
    x = torch.randn(1, 3, 64, 80)
    tokens = vit.patch_embed(x)  # (1, 4, 5, 32)
    expected = (tokens + get_abs_pos(vit.pos_embed, True, (4, 5))).permute(0, 3, 1, 2)
    torch.testing.assert_close(vit(x)["last_feat"], expected)
    no_cls = tiny_vit(depth=0, window_block_indexes=[], residual_block_indexes=[],
                      pretrain_use_cls_token=False)
    assert no_cls.pos_embed.shape == (1, 4, 32)
    assert tiny_vit(use_abs_pos=False).pos_embed is None


def test_vit_drop_path_schedule_and_act_checkpoint():
    vit = tiny_vit(depth=3, drop_path_rate=0.2, window_block_indexes=[0, 2],
                   residual_block_indexes=[])
    assert isinstance(vit.blocks[0].drop_path, nn.Identity)
    assert [b.drop_path.p for b in vit.blocks[1:]] == pytest.approx([0.1, 0.2])
    torch.manual_seed(0)
    plain = tiny_vit()
    ckpt = tiny_vit(use_act_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    outs = []
    for m in (plain, ckpt):
        m.train()
        y = m(x)["last_feat"]
        y.square().sum().backward()
        outs.append((y, m.blocks[0].attn.qkv.weight.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_gradient_reaches_every_parameter():
    model = tiny_sfp(rel_pos_zero_init=False)
    out = model(torch.randn(2, 3, 64, 64))
    sum(f.sum() for f in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def expected_tiny_sfp_state_shapes():
    """Keys and shapes detectron2's ViT + SimpleFeaturePyramid would save for ``tiny_sfp()``.

    D = 32, 2 heads (16 channels each), MLP 4D, 16x16 patches, 64 px -> 4x4 tokens; block 0
    windowed (w = 3), block 1 global with a conv residual block; C_out = 16.
    """
    D, dh = 32, 16
    shapes = {"net.pos_embed": (1, 5, D), "net.patch_embed.proj.weight": (D, 3, 16, 16),
              "net.patch_embed.proj.bias": (D,)}
    for i, rel_rows in ((0, 2 * 3 - 1), (1, 2 * 4 - 1)):
        p = f"net.blocks.{i}."
        shapes.update({
            p + "norm1.weight": (D,), p + "norm1.bias": (D,),
            p + "attn.qkv.weight": (3 * D, D), p + "attn.qkv.bias": (3 * D,),
            p + "attn.proj.weight": (D, D), p + "attn.proj.bias": (D,),
            p + "attn.rel_pos_h": (rel_rows, dh), p + "attn.rel_pos_w": (rel_rows, dh),
            p + "norm2.weight": (D,), p + "norm2.bias": (D,),
            p + "mlp.fc1.weight": (4 * D, D), p + "mlp.fc1.bias": (4 * D,),
            p + "mlp.fc2.weight": (D, 4 * D), p + "mlp.fc2.bias": (D,),
        })
    r = "net.blocks.1.residual."
    shapes.update({r + "conv1.weight": (D // 2, D, 1, 1),
                   r + "conv2.weight": (D // 2, D // 2, 3, 3),
                   r + "conv3.weight": (D, D // 2, 1, 1)})
    for n, c in (("norm1", D // 2), ("norm2", D // 2), ("norm3", D)):
        shapes.update({r + n + ".weight": (c,), r + n + ".bias": (c,)})

    def convs(prefix, i, cin):  # the 1x1 then 3x3 conv, bias-free, each with a LayerNorm
        return {f"{prefix}.{i}.weight": (16, cin, 1, 1), f"{prefix}.{i}.norm.weight": (16,),
                f"{prefix}.{i}.norm.bias": (16,), f"{prefix}.{i + 1}.weight": (16, 16, 3, 3),
                f"{prefix}.{i + 1}.norm.weight": (16,), f"{prefix}.{i + 1}.norm.bias": (16,)}

    shapes.update({"simfp_2.0.weight": (D, D // 2, 2, 2), "simfp_2.0.bias": (D // 2,),
                   "simfp_2.1.weight": (D // 2,), "simfp_2.1.bias": (D // 2,),
                   "simfp_2.3.weight": (D // 2, D // 4, 2, 2), "simfp_2.3.bias": (D // 4,)})
    shapes.update(convs("simfp_2", 4, D // 4))
    shapes.update({"simfp_3.0.weight": (D, D // 2, 2, 2), "simfp_3.0.bias": (D // 2,)})
    shapes.update(convs("simfp_3", 1, D // 2))
    shapes.update(convs("simfp_4", 0, D))
    shapes.update(convs("simfp_5", 1, D))  # simfp_5.0 is the parameter-free max pool
    return shapes


def test_state_dict_names_and_shapes_match_detectron2():
    state = tiny_sfp().state_dict()
    expected = expected_tiny_sfp_state_shapes()
    assert sorted(state) == sorted(expected)
    for k, shape in expected.items():
        assert tuple(state[k].shape) == shape, k


def test_detectron2_style_checkpoint_loads_strictly():
    torch.manual_seed(1)
    ckpt = {k: torch.randn(s) for k, s in expected_tiny_sfp_state_shapes().items()}
    model = tiny_sfp()
    before = model(torch.ones(1, 3, 64, 64))["p4"]
    model.load_state_dict(ckpt, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt[k]), k
    assert not torch.allclose(model(torch.ones(1, 3, 64, 64))["p4"], before)


def test_get_vit_lr_decay_rate():
    rate = 0.5
    assert get_vit_lr_decay_rate("backbone.net.pos_embed", rate, 12) == rate**13
    assert get_vit_lr_decay_rate("backbone.net.patch_embed.proj.weight", rate, 12) == rate**13
    assert get_vit_lr_decay_rate("backbone.net.blocks.0.attn.qkv.weight", rate, 12) == rate**12
    assert get_vit_lr_decay_rate("backbone.net.blocks.11.mlp.fc1.bias", rate, 12) == rate**1
    assert get_vit_lr_decay_rate("backbone.net.blocks.3.norm1.weight", rate, 4) == rate**1
    assert get_vit_lr_decay_rate("backbone.net.blocks.3.residual.conv1.weight", rate, 12) == 1.0
    assert get_vit_lr_decay_rate("backbone.simfp_2.0.weight", rate, 12) == 1.0
    assert get_vit_lr_decay_rate("roi_heads.box_predictor.cls_score.weight", rate, 12) == 1.0
    assert get_vit_lr_decay_rate("net.pos_embed", rate, 12) == 1.0  # only under "backbone"
    assert get_vit_lr_decay_rate("backbone.net.blocks.5.attn.qkv.weight") == 1.0


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="window_size"):
        tiny_vit(window_size=-1)
    # detectron2 semantics, kept: window_size=0 makes every block global, and indexes past the
    # depth (left over after shrinking ``depth``) are ignored.
    vit = tiny_vit(window_size=0, window_block_indexes=[0, 7], residual_block_indexes=[5])
    assert [b.window_size for b in vit.blocks] == [0, 0]
    assert not any(b.use_residual_block for b in vit.blocks)
    with pytest.raises(ValueError, match="num_heads"):
        tiny_vit(num_heads=3)
    with pytest.raises(NotImplementedError, match="scale_factors"):
        SimpleFeaturePyramid(tiny_vit(), "last_feat", 8, (3.0,))
    with pytest.raises(ValueError, match="in_feature"):
        SimpleFeaturePyramid(tiny_vit(), "res5", 8, (1.0,))
    with pytest.raises(ValueError, match="log2 contiguous"):
        SimpleFeaturePyramid(tiny_vit(), "last_feat", 8, (4.0, 1.0))
    with pytest.raises(TypeError, match="net"):
        SimpleFeaturePyramid(nn.Identity(), "last_feat", 8, (1.0,))

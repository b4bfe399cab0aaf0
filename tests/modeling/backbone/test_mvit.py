"""MViTv2 backbone: pooling attention maths, the stage schedule, shapes, names and gradients.

Pooling attention is checked against a slow per-head loop written from the MViTv2 paper:
Q, K, V pooled by depthwise convs and normalised, softmax(scale q.k + q.R_h + q.R_w) V, plus the
pooled Q (residual pooling), heads concatenated then projected. The schedule and checkpoint
names are those of detectron2's ``modeling/backbone/mvit.py``.
"""

import math

import pytest
import torch
from torch.nn import functional as F

from workbench.modeling import MViT
from workbench.modeling.backbone.mvit import MultiScaleAttention, MultiScaleBlock


def rel_index(qi, kj, q_len, k_len):
    """Row of the rel-pos table for query qi and key kj: offsets measured on the finer grid."""
    fine = max(q_len, k_len)
    return int(qi * fine / q_len - kj * fine / k_len + (k_len - 1) * fine / k_len)


def ref_head(q, k, v, scale, q_hw, k_hw, rel_h, rel_w):
    """out_i = sum_j softmax_j(scale q_i.k_j + q_i.Rh[ih, jh] + q_i.Rw[iw, jw]) v_j."""
    out = torch.zeros(q.shape[0], v.shape[1])
    for i in range(q.shape[0]):
        ih, iw = divmod(i, q_hw[1])
        logits = torch.zeros(k.shape[0])
        for j in range(k.shape[0]):
            jh, jw = divmod(j, k_hw[1])
            logits[j] = scale * torch.dot(q[i], k[j])
            logits[j] += torch.dot(q[i], rel_h[rel_index(ih, jh, q_hw[0], k_hw[0])])
            logits[j] += torch.dot(q[i], rel_w[rel_index(iw, jw, q_hw[1], k_hw[1])])
        out[i] = torch.softmax(logits, 0) @ v
    return out


def pooled_heads(attn, x):
    """Per-head pooled, normalised q, k, v of one (H, W, dim) map: lists of (h, w, d)."""
    dim_out, heads = attn.proj.out_features, attn.num_heads
    d = dim_out // heads
    qkv = attn.qkv(x)  # channels [q | k | v], each [head][d]
    result = []
    for part, conv, norm in ((0, attn.pool_q, attn.norm_q), (1, attn.pool_k, attn.norm_k),
                             (2, attn.pool_v, attn.norm_v)):
        maps = []
        for h in range(heads):
            t = qkv[..., part * dim_out + h * d: part * dim_out + (h + 1) * d]
            t = F.conv2d(t.permute(2, 0, 1)[None], conv.weight, None, conv.stride, conv.padding,
                         groups=d)[0].permute(1, 2, 0)
            maps.append(norm(t))
        result.append(maps)
    return result


def windows(t, w):
    """Zero-pad an (h, w_, d) map to multiples of w; list of (w, w, d) windows, row-major."""
    h, wd, d = t.shape
    t = F.pad(t, (0, 0, 0, (-wd) % w, 0, (-h) % w))
    return [t[r:r + w, c:c + w] for r in range(0, t.shape[0], w) for c in range(0, t.shape[1], w)]


def ref_mvit_attention(attn, x):
    """Reference of ``MultiScaleAttention`` on one (H, W, dim) map."""
    qs, ks, vs = pooled_heads(attn, x)
    d = qs[0].shape[-1]
    outs = []
    for q, k, v in zip(qs, ks, vs):
        if attn.window_size:
            qw, kw = attn.q_win_size, attn.kv_win_size
            padded = torch.zeros(math.ceil(q.shape[0] / qw) * qw,
                                 math.ceil(q.shape[1] / qw) * qw, d)
            ncols = padded.shape[1] // qw
            triples = zip(windows(q, qw), windows(k, kw), windows(v, kw))
            for n, (qwin, kwin, vwin) in enumerate(triples):
                o = ref_head(qwin.reshape(-1, d), kwin.reshape(-1, d), vwin.reshape(-1, d), d**-0.5,
                             (qw, qw), (kw, kw), attn.rel_pos_h, attn.rel_pos_w)
                r, c = divmod(n, ncols)
                padded[r * qw:(r + 1) * qw, c * qw:(c + 1) * qw] = o.reshape(qw, qw, d)
            o = padded[:q.shape[0], :q.shape[1]]
        else:
            o = ref_head(q.reshape(-1, d), k.reshape(-1, d), v.reshape(-1, d), d**-0.5,
                         q.shape[:2], k.shape[:2], attn.rel_pos_h, attn.rel_pos_w)
            o = o.reshape(q.shape)
        outs.append(o + q if attn.residual_pooling else o)
    return attn.proj(torch.cat(outs, -1))


@pytest.mark.parametrize("stride_q,stride_kv,residual_pooling", [(2, 2, True), (1, 2, True),
                                                                  (2, 1, False)])
def test_pooling_attention_matches_explicit_formula(stride_q, stride_kv, residual_pooling):
    torch.manual_seed(0)
    attn = MultiScaleAttention(8, 8, num_heads=2, stride_q=stride_q, stride_kv=stride_kv,
                               residual_pooling=residual_pooling, use_rel_pos=True,
                               rel_pos_zero_init=False, input_size=(6, 6))
    assert attn.rel_pos_h.shape == (2 * max(6 // stride_q, 6 // stride_kv) - 1, 4)
    x = torch.randn(2, 6, 6, 8)
    out = attn(x)
    assert out.shape == (2, 6 // stride_q, 6 // stride_q, 8)
    with torch.no_grad():
        for b in range(2):
            torch.testing.assert_close(out[b], ref_mvit_attention(attn, x[b]), rtol=1e-4, atol=1e-5)


def test_windowed_pooling_attention_is_per_window_attention_after_pooling():
    torch.manual_seed(0)
    # 7x6 grid: q windows of 4 (grid padded to 8x8), keys pooled by 2 to 4x3, windows of 2.
    attn = MultiScaleAttention(8, 16, num_heads=2, stride_kv=2, window_size=4, use_rel_pos=True,
                               rel_pos_zero_init=False, input_size=(4, 4))
    assert (attn.q_win_size, attn.kv_win_size) == (4, 2)
    x = torch.randn(2, 7, 6, 8)
    out = attn(x)
    assert out.shape == (2, 7, 6, 16)
    with torch.no_grad():
        for b in range(2):
            torch.testing.assert_close(out[b], ref_mvit_attention(attn, x[b]), rtol=1e-4, atol=1e-5)


def test_block_shortcut_is_projected_and_max_pooled():
    torch.manual_seed(0)
    blk = MultiScaleBlock(8, 16, num_heads=2, stride_q=2, stride_kv=2, use_rel_pos=False).eval()
    x = torch.randn(2, 6, 5, 8)
    out = blk(x)
    assert out.shape == (2, 3, 3, 16)
    with torch.no_grad():
        xn = blk.norm1(x)
        shortcut = F.max_pool2d(blk.proj(xn).permute(0, 3, 1, 2), 3, 2, 1).permute(0, 2, 3, 1)
        y = shortcut + blk.attn(xn)
        torch.testing.assert_close(out, y + blk.mlp(blk.norm2(y)))
        same = MultiScaleBlock(8, 8, num_heads=2)
        assert not hasattr(same, "proj") and not hasattr(same, "pool_skip")
        y = x + same.attn(same.norm1(x))  # identity shortcut on the un-normalised input
        torch.testing.assert_close(same(x), y + same.mlp(same.norm2(y)))


def test_stage_schedule_matches_detectron2():
    """Per block: (stride_q, stride_kv, window, heads, dim -> dim_out, rel-pos rows) for the
    MViTv2-T layout (depth 10, stages ending at 0, 2, 7, 9) at 224 px, worked out by hand."""
    model = MViT(img_size=224, embed_dim=8, depth=10, num_heads=1, last_block_indexes=(0, 2, 7, 9))
    expected = [
        (1, 4, 56, 1, 8, 8, 111), (2, 2, 56, 2, 8, 16, 55), (1, 4, 0, 2, 16, 16, 55),
        (2, 1, 28, 4, 16, 32, 55), (1, 1, 14, 4, 32, 32, 27), (1, 1, 14, 4, 32, 32, 27),
        (1, 1, 14, 4, 32, 32, 27), (1, 2, 0, 4, 32, 32, 27), (2, 1, 14, 8, 32, 64, 27),
        (1, 1, 0, 8, 64, 64, 13),
    ]
    for i, (blk, exp) in enumerate(zip(model.blocks, expected)):
        a = blk.attn
        got = (a.pool_q.stride[0], a.pool_k.stride[0], a.window_size, a.num_heads,
               a.qkv.in_features, a.proj.out_features, a.rel_pos_h.shape[0])
        assert got == exp, f"block {i}: {got} != {exp}"
        assert hasattr(blk, "pool_skip") == (exp[0] == 2)
    shapes = model.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "scale2": (8, 4), "scale3": (16, 8), "scale4": (32, 16), "scale5": (64, 32)}


def tiny_mvit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=64, embed_dim=8, depth=5, num_heads=1, last_block_indexes=(1, 2, 3, 4),
                adaptive_window_size=8)
    args.update(kw)
    return MViT(**args)


@pytest.mark.parametrize("hw", [(64, 64), (80, 64)])
def test_output_shapes_match_output_shape(hw):
    model = tiny_mvit()
    assert model.size_divisibility == 0 and model.padding_constraints == {}
    shapes = model.output_shape()
    out = model(torch.randn(2, 3, *hw))
    assert list(out) == list(shapes) == ["scale2", "scale3", "scale4", "scale5"]
    for name, f in out.items():
        s = shapes[name].stride
        expected = (2, shapes[name].channels, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        assert f.shape == expected, name
        assert torch.isfinite(f).all()


def test_out_features_subset_and_abs_pos():
    model = tiny_mvit(out_features=("scale3", "scale5"), use_abs_pos=True, pretrain_img_size=32)
    assert model.pos_embed.shape == (1, 8 * 8 + 1, 8)
    assert not hasattr(model, "scale2_norm") and hasattr(model, "scale5_norm")
    out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == list(model.output_shape()) == ["scale3", "scale5"]
    assert out["scale3"].shape == (1, 16, 8, 8)


def test_gradient_reaches_every_parameter():
    model = tiny_mvit(rel_pos_zero_init=False, use_abs_pos=True, drop_path_rate=0.1)
    out = model(torch.randn(2, 3, 64, 64))
    sum(f.sum() for f in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def expected_tiny_state_shapes():
    """Keys and shapes detectron2's MViT saves for ``tiny_mvit()``: stages end at blocks 1..4,
    channels 8, 8 | 16 | 32 | 64, heads 1, 1 | 2 | 4 | 8 (head width 8), 16x16 stage-2 grid."""
    shapes = {"patch_embed.proj.weight": (8, 3, 7, 7), "patch_embed.proj.bias": (8,)}
    # (dim, dim_out, rel-pos rows) per block
    layout = [(8, 8, 31), (8, 8, 31), (8, 16, 15), (16, 32, 7), (32, 64, 7)]
    for i, (dim, dim_out, rows) in enumerate(layout):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim_out, dim), p + "attn.qkv.bias": (3 * dim_out,),
            p + "attn.proj.weight": (dim_out, dim_out), p + "attn.proj.bias": (dim_out,),
            p + "attn.rel_pos_h": (rows, 8), p + "attn.rel_pos_w": (rows, 8),
            p + "norm2.weight": (dim_out,), p + "norm2.bias": (dim_out,),
            p + "mlp.fc1.weight": (4 * dim_out, dim_out), p + "mlp.fc1.bias": (4 * dim_out,),
            p + "mlp.fc2.weight": (dim_out, 4 * dim_out), p + "mlp.fc2.bias": (dim_out,),
        })
        for t in "qkv":
            shapes.update({p + f"attn.pool_{t}.weight": (8, 1, 3, 3),
                           p + f"attn.norm_{t}.weight": (8,), p + f"attn.norm_{t}.bias": (8,)})
        if dim != dim_out:
            shapes.update({p + "proj.weight": (dim_out, dim), p + "proj.bias": (dim_out,)})
    for k, c in zip(range(2, 6), (8, 16, 32, 64)):
        shapes.update({f"scale{k}_norm.weight": (c,), f"scale{k}_norm.bias": (c,)})
    return shapes


def test_state_dict_names_and_shapes_match_detectron2():
    state = tiny_mvit().state_dict()
    expected = expected_tiny_state_shapes()
    assert sorted(state) == sorted(expected)
    for k, shape in expected.items():
        assert tuple(state[k].shape) == shape, k


def test_detectron2_style_checkpoint_loads_strictly():
    torch.manual_seed(1)
    ckpt = {k: torch.randn(s) * 0.1 for k, s in expected_tiny_state_shapes().items()}
    model = tiny_mvit()
    x = torch.ones(1, 3, 64, 64)
    before = model(x)["scale5"]
    model.load_state_dict(ckpt, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt[k]), k
    assert not torch.allclose(model(x)["scale5"], before)


def test_act_checkpoint_gives_same_outputs_and_grads():
    plain, ckpt = tiny_mvit(), tiny_mvit(use_act_checkpoint=True)
    x = torch.randn(1, 3, 64, 64)
    results = []
    for m in (plain, ckpt):
        y = m(x)["scale4"]
        y.square().sum().backward()
        results.append((y, m.blocks[1].attn.pool_q.weight.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="last_block_indexes"):
        tiny_mvit(last_block_indexes=(1, 2, 4))
    with pytest.raises(ValueError, match="last_block_indexes"):
        tiny_mvit(last_block_indexes=(1, 2, 3, 7))
    with pytest.raises(ValueError, match="out_features"):
        tiny_mvit(out_features=("res5",))
    with pytest.raises(ValueError, match="num_heads"):
        MultiScaleAttention(8, 12, num_heads=8)
    with pytest.raises(ValueError, match="input_size"):
        MultiScaleAttention(8, 8, num_heads=2, use_rel_pos=True, input_size=(4, 6))
    with pytest.raises(ValueError, match="window_size"):
        MultiScaleAttention(8, 8, num_heads=2, stride_kv=4, window_size=2)

"""Swin Transformer backbone: window attention against the paper's definition, shapes, freezing,
gradients, and detectron2's state-dict layout.

The shifted-window reference below does not use the cyclic roll or the mask at all: it splits the
padded map into the paper's shifted windows (boundaries at S, S + M, ... in image coordinates,
edge windows smaller) and runs softmax attention over each token's window with explicit loops.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from golden_outputs import check_golden, fill_deterministically  # same folder
from workbench.modeling.backbone import FPN, Backbone, LastLevelMaxPool, SwinTransformer
from workbench.modeling.backbone.swin import (
    DropPath,
    SwinTransformerBlock,
    WindowAttention,
    relative_position_index,
    shifted_window_attention_mask,
    window_partition,
    window_reverse,
)


def tiny_swin(**kwargs):
    torch.manual_seed(0)
    args = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4,
                drop_path_rate=0.0)
    args.update(kwargs)
    return SwinTransformer(**args)


@pytest.mark.parametrize("window", [(3, 3), (2, 5), (7, 7)])
def test_relative_position_index_matches_formula(window):
    mh, mw = window
    index = relative_position_index(window)
    coords = [(i, j) for i in range(mh) for j in range(mw)]  # row-major, as the window tokens
    expected = torch.tensor([[(p[0] - q[0] + mh - 1) * (2 * mw - 1) + (p[1] - q[1] + mw - 1)
                              for q in coords] for p in coords])
    assert torch.equal(index, expected)
    # Every entry of the bias table is used, so every entry gets a gradient.
    assert sorted(set(index.flatten().tolist())) == list(range((2 * mh - 1) * (2 * mw - 1)))
    attn = WindowAttention(dim=4, window_size=window, num_heads=2)
    assert torch.equal(attn.relative_position_index, expected)
    assert attn.relative_position_bias_table.shape == ((2 * mh - 1) * (2 * mw - 1), 2)


def test_window_partition_is_a_tiling_and_reverse_inverts_it():
    x = torch.randn(2, 6, 9, 5)
    windows = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 3, 3, 5)
    k = 0
    for n in range(2):
        for i in range(2):
            for j in range(3):
                assert torch.equal(windows[k], x[n, 3 * i: 3 * i + 3, 3 * j: 3 * j + 3])
                k += 1
    assert torch.equal(window_reverse(windows, 3, 6, 9), x)


def _shifted_group(i, m, s):
    # Index of the paper's shifted window holding image row (or column) i: boundaries at
    # S, S + M, ...; rows [0, S) form a smaller first window (floor division gives -1).
    return (i - s) // m


def test_shift_mask_allows_exactly_the_pairs_of_one_shifted_window():
    hp, wp, m, s = 8, 12, 4, 2
    mask = shifted_window_attention_mask(hp, wp, m, s)
    assert mask.shape == ((hp // m) * (wp // m), m * m, m * m)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    for w in range(mask.shape[0]):
        wi, wj = divmod(w, wp // m)
        # Image position of each token of rolled window w (the roll was by (-S, -S)).
        pos = [((wi * m + a + s) % hp, (wj * m + b + s) % wp) for a in range(m) for b in range(m)]
        for t1, (i1, j1) in enumerate(pos):
            for t2, (i2, j2) in enumerate(pos):
                same = (_shifted_group(i1, m, s) == _shifted_group(i2, m, s)
                        and _shifted_group(j1, m, s) == _shifted_group(j2, m, s))
                assert (mask[w, t1, t2] == 0) == same, (w, t1, t2)


def _reference_block(blk, x, H, W):
    """The Swin block computed token by token on the padded map, without roll or mask."""
    m, s, heads = blk.window_size, blk.shift_size, blk.num_heads
    n, _, c = x.shape
    hp, wp = math.ceil(H / m) * m, math.ceil(W / m) * m
    y = F.pad(blk.norm1(x).view(n, H, W, c), (0, 0, 0, wp - W, 0, hp - H))
    q, k, v = blk.attn.qkv(y).chunk(3, dim=-1)  # (N, Hp, Wp, C) each, heads side by side
    d = c // heads
    table = blk.attn.relative_position_bias_table
    out = torch.zeros_like(y)
    for i in range(hp):
        for j in range(wp):
            gi, gj = _shifted_group(i, m, s), _shifted_group(j, m, s)
            keys = [(a, b) for a in range(hp) for b in range(wp)
                    if _shifted_group(a, m, s) == gi and _shifted_group(b, m, s) == gj]
            assert len(keys) <= m * m
            for h in range(heads):
                hs = slice(h * d, (h + 1) * d)
                logits = torch.stack([
                    (q[:, i, j, hs] * k[:, a, b, hs]).sum(-1) * d ** -0.5
                    + table[(i - a + m - 1) * (2 * m - 1) + (j - b + m - 1), h]
                    for a, b in keys], dim=-1)  # (N, len(keys))
                weights = logits.softmax(-1)
                values = torch.stack([v[:, a, b, hs] for a, b in keys], dim=1)  # (N, K, d)
                out[:, i, j, hs] = (weights[:, :, None] * values).sum(1)
    out = blk.attn.proj(out)[:, :H, :W].reshape(n, H * W, c)
    x = x + out
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(6, 7), (8, 8)])
def test_block_matches_explicit_shifted_window_attention(shift, hw):
    torch.manual_seed(0)
    H, W = hw
    blk = SwinTransformerBlock(dim=8, num_heads=2, window_size=4, shift_size=shift).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_()  # make the bias matter
    x = torch.randn(2, H * W, 8) * 3
    hp, wp = math.ceil(H / 4) * 4, math.ceil(W / 4) * 4
    mask = shifted_window_attention_mask(hp, wp, 4, 2)
    blk.H, blk.W = H, W
    with torch.no_grad():
        out = blk(x, mask)
        ref = _reference_block(blk, x, H, W)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        if shift:
            # The comparison can fail: rolled windows without the mask are not the paper's.
            assert (blk(x, torch.zeros_like(mask)) - ref).abs().max() > 1e-2


@pytest.mark.parametrize("hw", [(64, 96), (50, 37)])
def test_output_shapes_match_output_shape(hw):
    model = tiny_swin().eval()
    assert isinstance(model, Backbone) and model.size_divisibility == 32
    shapes = model.output_shape()
    assert list(shapes) == ["p0", "p1", "p2", "p3"]
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = model(x)
    assert list(out) == list(shapes)
    for i, (name, spec) in enumerate(shapes.items()):
        assert (spec.channels, spec.stride) == (8 * 2 ** i, 4 * 2 ** i)
        expected = (2, spec.channels) + tuple(math.ceil(n / spec.stride) for n in hw)
        assert tuple(out[name].shape) == expected, name
        assert torch.isfinite(out[name]).all()


def test_out_indices_subset_and_ape():
    model = tiny_swin(out_indices=(1, 3), ape=True, pretrain_img_size=32).eval()
    assert list(model.output_shape()) == ["p1", "p3"]
    assert not hasattr(model, "norm0") and hasattr(model, "norm3")
    assert model.absolute_pos_embed.shape == (1, 8, 8, 8)
    out = model(torch.randn(1, 3, 64, 32))
    assert list(out) == ["p1", "p3"] and out["p3"].shape == (1, 64, 2, 1)


def test_gradient_reaches_every_parameter():
    model = tiny_swin(ape=True, pretrain_img_size=32).train()
    out = model(torch.randn(2, 3, 40, 56))
    sum((o * torch.randn_like(o)).sum() for o in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_checkpointing_gives_the_same_outputs_and_gradients():
    x = torch.randn(1, 3, 32, 32)
    grads = []
    for use_checkpoint in (False, True):
        model = tiny_swin(use_checkpoint=use_checkpoint)
        out = model(x)
        sum(o.sum() for o in out.values()).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2, 3])
def test_frozen_stages(frozen_stages):
    model = tiny_swin(ape=True, pretrain_img_size=32, frozen_stages=frozen_stages)
    model.train()  # must not wake the frozen stages up
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = set()
    if frozen_stages >= 0:
        expected |= {n for n, _ in model.named_parameters() if n.startswith("patch_embed.")}
    if frozen_stages >= 1:
        expected.add("absolute_pos_embed")
    for i in range(frozen_stages - 1):  # detectron2's counting: 2 freezes layers[0]
        expected |= {n for n, _ in model.named_parameters() if n.startswith(f"layers.{i}.")}
    assert frozen == expected
    for i, layer in enumerate(model.layers):
        assert layer.training == (i >= frozen_stages - 1)
    assert model.patch_embed.training == (frozen_stages < 0)
    assert model.norm0.training  # output norms are never frozen


def test_drop_path():
    torch.manual_seed(0)
    x = torch.randn(4000, 3, 2)
    dp = DropPath(0.25)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = (y != 0).flatten(1).all(1)
    assert torch.equal(kept, (y != 0).flatten(1).any(1))  # whole samples kept or dropped
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.5)
    model = tiny_swin(drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0
             for layer in model.layers for b in layer.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 8))


def _detectron2_keys(depths, out_indices, ape):
    # Written from detectron2's swin.py module tree.
    keys = ["absolute_pos_embed"] if ape else []
    keys += [f"patch_embed.{m}.{p}" for m in ("proj", "norm") for p in ("weight", "bias")]
    for i, depth in enumerate(depths):
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            keys += [b + "attn.relative_position_bias_table", b + "attn.relative_position_index"]
            for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys += [b + m + ".weight", b + m + ".bias"]
        if i < len(depths) - 1:
            keys += [f"layers.{i}.downsample.{k}"
                     for k in ("reduction.weight", "norm.weight", "norm.bias")]
    keys += [f"norm{i}.{p}" for i in out_indices for p in ("weight", "bias")]
    return keys


def test_state_dict_matches_detectron2_layout_and_loads_strictly():
    kwargs = dict(embed_dim=4, depths=(1, 2), num_heads=(1, 2), window_size=3, ape=True,
                  pretrain_img_size=24, out_indices=(0, 1), drop_path_rate=0.0)
    torch.manual_seed(0)
    src = SwinTransformer(**kwargs).eval()
    sd = src.state_dict()
    assert sorted(sd) == sorted(_detectron2_keys((1, 2), (0, 1), ape=True))
    assert sd["layers.1.blocks.1.attn.relative_position_bias_table"].shape == (25, 2)
    assert sd["layers.1.blocks.0.attn.relative_position_index"].dtype == torch.int64
    assert sd["layers.0.downsample.reduction.weight"].shape == (8, 16)
    assert sd["layers.1.blocks.0.attn.qkv.weight"].shape == (24, 8)
    assert sd["absolute_pos_embed"].shape == (1, 4, 6, 6)
    torch.manual_seed(1)
    dst = SwinTransformer(**kwargs).eval()
    result = dst.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        for name, value in src(x).items():
            torch.testing.assert_close(dst(x)[name], value, rtol=0, atol=0)


def test_with_fpn():
    fpn = FPN(bottom_up=tiny_swin(), in_features=["p0", "p1", "p2", "p3"], out_channels=16,
              top_block=LastLevelMaxPool())
    out = fpn(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 16, 16, 16), "p3": (1, 16, 8, 8), "p4": (1, 16, 4, 4), "p5": (1, 16, 2, 2),
        "p6": (1, 16, 1, 1)}


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="depths .* num_heads"):
        SwinTransformer(depths=(2, 2), num_heads=(1,))
    with pytest.raises(ValueError, match="out_indices"):
        tiny_swin(out_indices=(0, 4))
    with pytest.raises(ValueError, match="num_heads=3"):
        tiny_swin(num_heads=(3, 2, 2, 4))
    with pytest.raises(ValueError, match="shift_size"):
        SwinTransformerBlock(dim=4, num_heads=1, window_size=4, shift_size=4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny_swin()(torch.randn(1, 1, 32, 32))
    blk = SwinTransformerBlock(dim=4, num_heads=1, window_size=4)
    with pytest.raises(ValueError, match="block.H"):
        blk(torch.randn(1, 16, 4), None)
    assert isinstance(tiny_swin().layers[0].blocks[0].drop_path, nn.Identity)


def test_golden_outputs_computed_with_detectron2():
    # Golden values: detectron2's swin.py (timm DropPath unused) given the same state dict and
    # input, {name: (sum, mean |x|)}. Regenerate from the failure message if the math changes
    # on purpose.
    model = fill_deterministically(tiny_swin(ape=True, pretrain_img_size=32)).eval()
    x = torch.randn(1, 3, 50, 37, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    check_golden(out, {"p0": (41.8584, 0.173307), "p1": (-25.0418, 0.217827),
                        "p2": (-0.8845, 0.215897), "p3": (11.223, 0.214692)})

"""DeformConv / ModulatedDeformConv against a slow numpy reference of detectron2's CUDA kernel.

The reference follows ``deform_conv_cuda_kernel.cu`` literally: offset channel
``(g * K + k) * 2`` is dy and ``+ 1`` is dx for deformable group g and kernel position
k = i * kw + j; the mask channel is ``g * K + k``; a point is read by bilinear interpolation
when -1 < y < H and -1 < x < W, corners outside the image counting as 0.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench.layers import DeformConv, ModulatedDeformConv


def _bilinear(img, py, px):
    """Sample the (H, W) array ``img`` at fractional points (py, px), zero outside."""
    h, w = img.shape
    out = np.zeros(py.shape)
    inside = (py > -1) & (py < h) & (px > -1) & (px < w)
    y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
    ly, lx = py - y0, px - x0
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yc, xc = y0 + dy, x0 + dx
            ok = inside & (yc >= 0) & (yc < h) & (xc >= 0) & (xc < w)
            vals = np.where(ok, img[np.clip(yc, 0, h - 1), np.clip(xc, 0, w - 1)], 0.0)
            out += wy * wx * vals
    return out


def reference(x, offset, weight, bias=None, mask=None, stride=1, padding=0, dilation=1,
              groups=1, deformable_groups=1):
    """Deformable conv in float64 numpy, one (image, channel, kernel tap) at a time."""
    x, offset, weight = (np.asarray(t, dtype=np.float64) for t in (x, offset, weight))
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    n, c, _, _ = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    k_count = kh * kw
    ho, wo = offset.shape[2:]
    base_y = (np.arange(ho) * sh - ph)[:, None]
    base_x = (np.arange(wo) * sw - pw)[None, :]
    cols = np.zeros((n, c, k_count, ho, wo))
    for b in range(n):
        for ch in range(c):
            g = ch // (c // deformable_groups)
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    dy = offset[b, (g * k_count + k) * 2]
                    dx = offset[b, (g * k_count + k) * 2 + 1]
                    val = _bilinear(x[b, ch], base_y + i * dh + dy, base_x + j * dw + dx)
                    if mask is not None:
                        val = val * np.asarray(mask, dtype=np.float64)[b, g * k_count + k]
                    cols[b, ch, k] = val
    out = np.zeros((n, c_out, ho, wo))
    o_per_group = c_out // groups
    for gi in range(groups):
        w_g = weight[gi * o_per_group:(gi + 1) * o_per_group].reshape(o_per_group, c_per_group,
                                                                       k_count)
        cols_g = cols[:, gi * c_per_group:(gi + 1) * c_per_group]
        out[:, gi * o_per_group:(gi + 1) * o_per_group] = np.einsum("nckhw,ock->nohw", cols_g,
                                                                    w_g)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out


def _out_hw(h, w, k, stride, padding, dilation):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return [(s + 2 * p - (d * (kk - 1) + 1)) // st + 1
            for s, p, d, kk, st in zip((h, w), pair(padding), pair(dilation), pair(k),
                                       pair(stride))]


# (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, deformable_groups)
CASES = [
    (2, 4, 6, 7, 9, 3, 1, 1, 1, 1, 1),
    (1, 4, 4, 8, 6, 3, 2, 1, 1, 2, 2),
    (2, 6, 4, 9, 9, (3, 2), (1, 2), (2, 1), (2, 1), 2, 3),
    (1, 4, 2, 5, 6, 1, 1, 0, 1, 1, 4),
    (1, 2, 3, 6, 6, 3, 1, 2, 2, 1, 2),
]


def _inputs(case, seed, modulated):
    n, c_in, _, h, w, k, stride, padding, dilation, _, dg = case
    g = torch.Generator().manual_seed(seed)
    ho, wo = _out_hw(h, w, k, stride, padding, dilation)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    # Offsets of a few pixels: some taps fall outside the image, some between pixels.
    offset = 2.5 * torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=torch.float64)
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=torch.float64) if modulated \
        else None
    return x, offset, mask


def _module(cls, case, **kwargs):
    _, c_in, c_out, _, _, k, stride, padding, dilation, groups, dg = case
    return cls(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
               deformable_groups=dg, **kwargs).double()


@pytest.mark.parametrize("case", CASES)
def test_deform_conv_matches_reference(case):
    torch.manual_seed(0)
    m = _module(DeformConv, case)
    x, offset, _ = _inputs(case, 1, modulated=False)
    got = m(x, offset).detach().numpy()
    want = reference(x, offset, m.weight.detach(), stride=m.stride, padding=m.padding,
                     dilation=m.dilation, groups=m.groups, deformable_groups=m.deformable_groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_modulated_deform_conv_matches_reference(case):
    torch.manual_seed(0)
    m = _module(ModulatedDeformConv, case)
    with torch.no_grad():
        m.bias.normal_()
    x, offset, mask = _inputs(case, 2, modulated=True)
    got = m(x, offset, mask).detach().numpy()
    want = reference(x, offset, m.weight.detach(), bias=m.bias.detach(), mask=mask,
                     stride=case[6], padding=case[7], dilation=case[8], groups=m.groups,
                     deformable_groups=m.deformable_groups)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_float32_matches_reference():
    case = CASES[1]
    torch.manual_seed(0)
    m = _module(ModulatedDeformConv, case).float()
    x, offset, mask = (t.float() for t in _inputs(case, 3, modulated=True))
    got = m(x, offset, mask).detach().numpy()
    want = reference(x, offset, m.weight.detach(), bias=m.bias.detach(), mask=mask, stride=2,
                     padding=1, groups=2, deformable_groups=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_offset_order_is_dy_then_dx():
    """A single centre tap with dx = +1 everywhere reads the pixel to the right."""
    x = torch.arange(30, dtype=torch.float32).reshape(1, 1, 5, 6)
    m = DeformConv(1, 1, 3, padding=1)
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, 0, 1, 1] = 1.0
    offset = torch.zeros(1, 18, 5, 6)
    offset[:, 1::2] = 1.0  # dx of every tap
    shifted = torch.cat([x[..., 1:], torch.zeros(1, 1, 5, 1)], dim=3)
    torch.testing.assert_close(m(x, offset), shifted)
    offset = torch.zeros(1, 18, 5, 6)
    offset[:, 0::2] = 1.0  # dy of every tap
    shifted = torch.cat([x[:, :, 1:], torch.zeros(1, 1, 1, 6)], dim=2)
    torch.testing.assert_close(m(x, offset), shifted)


def test_detectron2_cpu_golden_numbers():
    """detectron2's tests/layers/test_deformable.py: arange input, offsets 0.5, unit weights."""
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    offset = torch.full((1, 18, 5, 5), 0.5)
    want = torch.tensor([
        [30, 41.25, 48.75, 45, 28.75],
        [62.25, 81, 90, 80.25, 50.25],
        [99.75, 126, 135, 117.75, 72.75],
        [105, 131.25, 138.75, 120, 73.75],
        [71.75, 89.25, 93.75, 80.75, 49.5],
    ]).reshape(1, 1, 5, 5)
    deform = DeformConv(1, 1, kernel_size=3, padding=1)
    deform.weight = nn.Parameter(torch.ones_like(deform.weight))
    torch.testing.assert_close(deform(x, offset), want)
    modulated = ModulatedDeformConv(1, 1, 3, padding=1, bias=False)
    modulated.weight = deform.weight
    torch.testing.assert_close(modulated(x, offset, torch.full((1, 9, 5, 5), 0.5)), want * 0.5)


@pytest.mark.parametrize("case", CASES)
def test_zero_offsets_equal_plain_conv(case):
    torch.manual_seed(0)
    m = _module(ModulatedDeformConv, case)
    with torch.no_grad():
        m.bias.normal_()
    x, offset, mask = _inputs(case, 4, modulated=True)
    plain = F.conv2d(x, m.weight, m.bias, stride=case[6], padding=case[7], dilation=case[8],
                     groups=case[9])
    torch.testing.assert_close(m(x, torch.zeros_like(offset), torch.ones_like(mask)), plain)
    d = _module(DeformConv, case)
    plain = F.conv2d(x, d.weight, None, stride=case[6], padding=case[7], dilation=case[8],
                     groups=case[9])
    torch.testing.assert_close(d(x, torch.zeros_like(offset)), plain)


def test_norm_and_activation_are_applied():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.weight.normal_()
    m = DeformConv(4, 6, 3, padding=1, norm=norm, activation=F.relu)
    x, offset = torch.randn(2, 4, 5, 5), torch.randn(2, 18, 5, 5)
    bare = DeformConv(4, 6, 3, padding=1)
    bare.weight = m.weight
    torch.testing.assert_close(m(x, offset), F.relu(norm(bare(x, offset))))
    assert set(m.state_dict()) == {"weight", "norm.weight", "norm.bias", "norm.running_mean",
                                   "norm.running_var", "norm.num_batches_tracked"}


def test_empty_batch():
    m = ModulatedDeformConv(4, 6, 3, stride=2, padding=1, deformable_groups=2,
                            norm=nn.GroupNorm(2, 6), activation=F.relu)
    x = torch.zeros(0, 4, 9, 7, requires_grad=True)
    offset = torch.zeros(0, 36, 5, 4, requires_grad=True)
    mask = torch.zeros(0, 18, 5, 4, requires_grad=True)
    out = m(x, offset, mask)
    assert out.shape == (0, 6, 5, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and offset.grad.shape == offset.shape
    assert mask.grad.shape == mask.shape
    assert m.weight.grad is not None and m.weight.grad.abs().sum() == 0
    d = DeformConv(4, 6, 3, padding=1)
    assert d(torch.zeros(0, 4, 5, 5), torch.zeros(0, 18, 5, 5)).shape == (0, 6, 5, 5)


def test_gradients_flow_and_are_correct():
    torch.manual_seed(0)
    case = (1, 4, 2, 4, 5, 3, 1, 1, 1, 2, 2)
    m = _module(ModulatedDeformConv, case)
    x, offset, mask = _inputs(case, 5, modulated=True)
    # Keep taps away from integer positions, where bilinear sampling has kinks.
    offset = (offset.floor() + 0.3 + 0.4 * torch.rand_like(offset)).requires_grad_()
    x.requires_grad_()
    mask.requires_grad_()

    out = m(x, offset, mask)
    out.square().sum().backward()
    for name, t in [("input", x), ("offset", offset), ("mask", mask), ("weight", m.weight),
                    ("bias", m.bias)]:
        assert t.grad is not None and t.grad.abs().sum() > 0, name
    # Analytic gradients of the module itself (weight and bias passed functionally).
    assert torch.autograd.gradcheck(
        lambda a, o, k, w, b: torch.func.functional_call(m, {"weight": w, "bias": b}, (a, o, k)),
        tuple(t.detach().requires_grad_() for t in (x, offset, mask, m.weight, m.bias)))


def test_init_and_state_dict_names():
    torch.manual_seed(0)
    m = ModulatedDeformConv(4, 8, 3, groups=2)
    torch.manual_seed(0)
    w = torch.empty(8, 2, 3, 3)
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    torch.testing.assert_close(m.weight.detach(), w)
    assert (m.bias == 0).all() and m.with_bias
    assert set(m.state_dict()) == {"weight", "bias"}
    d = DeformConv(4, 8, 3)
    assert set(d.state_dict()) == {"weight"} and d.bias is None


def test_repr_like_detectron2():
    assert repr(DeformConv(3, 10, kernel_size=3, padding=1, deformable_groups=3)) == (
        "DeformConv(in_channels=3, out_channels=10, kernel_size=(3, 3), stride=(1, 1), "
        "padding=(1, 1), dilation=(1, 1), groups=1, deformable_groups=3, bias=False)")
    assert repr(ModulatedDeformConv(3, 10, kernel_size=3, padding=1, deformable_groups=3)) == (
        "ModulatedDeformConv(in_channels=3, out_channels=10, kernel_size=(3, 3), stride=1, "
        "padding=1, dilation=1, groups=1, deformable_groups=3, bias=True)")


def test_loud_errors():
    with pytest.raises(ValueError, match="groups"):
        DeformConv(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="deformable_groups"):
        DeformConv(4, 6, 3, deformable_groups=3)
    m = ModulatedDeformConv(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="offset of shape"):
        m(x, torch.zeros(1, 9, 5, 5), torch.zeros(1, 9, 5, 5))
    with pytest.raises(ValueError, match="mask of shape"):
        m(x, torch.zeros(1, 18, 5, 5), torch.zeros(1, 18, 5, 5))
    with pytest.raises(ValueError, match="input of shape"):
        m(torch.randn(1, 3, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(1, 9, 5, 5))

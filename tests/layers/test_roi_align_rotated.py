"""ROIAlignRotated against a slow per-sample loop, torchvision's roi_align at angle 0, and
detectron2's hand-computed outputs."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch.autograd import gradcheck
from torchvision.ops import roi_align

from workbench.layers import ROIAlignRotated, roi_align_rotated


def _slow(img, roi, out_hw, scale, ratio):
    """detectron2's CPU kernel, one sample at a time (img (C, H, W), roi (5,))."""
    C, H, W = img.shape
    ph, pw = out_hw
    cx, cy = roi[0] * scale - 0.5, roi[1] * scale - 0.5
    rw, rh = roi[2] * scale, roi[3] * scale
    t = roi[4] * math.pi / 180
    c, s = math.cos(t), math.sin(t)
    gh = ratio if ratio > 0 else math.ceil(rh / ph)
    gw = ratio if ratio > 0 else math.ceil(rw / pw)
    out = torch.zeros(C, ph, pw, dtype=torch.float64)
    for i in range(ph):
        for j in range(pw):
            acc = torch.zeros(C, dtype=torch.float64)
            for iy in range(gh):
                yy = -rh / 2 + i * rh / ph + (iy + 0.5) * rh / ph / gh
                for ix in range(gw):
                    xx = -rw / 2 + j * rw / pw + (ix + 0.5) * rw / pw / gw
                    y, x = yy * c - xx * s + cy, yy * s + xx * c + cx
                    if y < -1 or y > H or x < -1 or x > W:
                        continue
                    y, x = max(y, 0.0), max(x, 0.0)
                    y0, x0 = int(y), int(x)
                    if y0 >= H - 1:
                        y0 = y1 = H - 1
                        y = float(y0)
                    else:
                        y1 = y0 + 1
                    if x0 >= W - 1:
                        x0 = x1 = W - 1
                        x = float(x0)
                    else:
                        x1 = x0 + 1
                    ly, lx = y - y0, x - x0
                    acc += ((1 - ly) * (1 - lx) * img[:, y0, x0] + (1 - ly) * lx * img[:, y0, x1]
                            + ly * (1 - lx) * img[:, y1, x0] + ly * lx * img[:, y1, x1])
            out[:, i, j] = acc / max(gh * gw, 1)
    return out


def _rot90(img, num):
    for _ in range(num % 4):
        img = img.transpose(0, 1).flip(0)
    return img


@pytest.mark.parametrize("i", range(4))
def test_detectron2_output_at_0_90_180_270_degrees(i):
    img = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    roi = torch.tensor([[0, 2.0, 2.0, 2.0, 2.0, 90.0 * i]])
    out = ROIAlignRotated((4, 4), 1.0, 0)(img, roi)[0, 0]
    expected = torch.tensor([[4.5, 5.0, 5.5, 6.0], [7.0, 7.5, 8.0, 8.5],
                             [9.5, 10.0, 10.5, 11.0], [12.0, 12.5, 13.0, 13.5]])
    assert torch.allclose(out, _rot90(expected, -i), atol=1e-5)


def test_matches_a_slow_per_sample_loop():
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(2, 3, 12, 15, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 10.0, 8.0, 12.0, 6.0, 30.0], [1, 20.0, 14.0, 9.0, 15.0, -75.0],
                         [0, 2.0, 3.0, 20.0, 4.0, 160.0],  # partly off the map
                         [1, 29.0, 23.0, 5.0, 7.0, 10.0], [0, 5.0, 5.0, 0.0, 0.0, 0.0]],
                        dtype=torch.float64)
    for ratio in (2, 0):
        out = roi_align_rotated(feat, rois, (3, 4), 0.5, ratio)
        assert out.shape == (5, 3, 3, 4)
        for r, roi in enumerate(rois):
            ref = _slow(feat[int(roi[0])], roi[1:].tolist(), (3, 4), 0.5, ratio)
            assert torch.allclose(out[r], ref, atol=1e-6), (ratio, r)
    assert (out[4] == 0).all()  # an empty box has no adaptive samples: zeros (ratio 0)


@pytest.mark.parametrize("ratio", [0, 1, 2])
def test_angle_0_equals_torchvision_aligned_roi_align(ratio):
    g = torch.Generator().manual_seed(1)
    feat = torch.rand(2, 4, 20, 30, generator=g)
    xyxy = torch.tensor([[0, 3.0, 4.0, 15.0, 12.0], [1, 0.0, 0.0, 59.0, 39.0], [1, -5.0, -3.0, 10.0, 8.0],
                         [0, 30.0, 20.0, 70.0, 50.0]])
    rot = torch.cat([xyxy[:, :1], (xyxy[:, 1:3] + xyxy[:, 3:5]) / 2, xyxy[:, 3:5] - xyxy[:, 1:3],
                     torch.zeros(4, 1)], 1)
    ref = roi_align(feat, xyxy, (5, 6), 0.5, ratio, aligned=True)
    assert torch.allclose(roi_align_rotated(feat, rot, (5, 6), 0.5, ratio), ref, atol=1e-5)


def test_gradients_flow_and_match_roi_align():
    feat = torch.rand(1, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 4.5, 4.5, 9, 9, 0], [0, 2, 7, 4, 4, 0], [0, 7, 7, 4, 4, 0]],
                        dtype=torch.float64)
    op = ROIAlignRotated((5, 5), 0.5, 1)
    assert gradcheck(lambda x: op(x, rois), (feat,))
    rot_grad, = torch.autograd.grad(ROIAlignRotated((5, 5), 1.0, 2)(feat, rois).sum(), feat)
    xyxy = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9]], dtype=torch.float64)
    ref_grad, = torch.autograd.grad(roi_align(feat, xyxy, (5, 5), 1.0, 2, aligned=True).sum(), feat)
    assert torch.allclose(rot_grad, ref_grad)


def test_huge_adaptive_grid_is_pooled_in_pieces(monkeypatch):
    # The package exports the function under the module's name: reach the module itself.
    mod = sys.modules["workbench.layers.roi_align_rotated"]
    feat = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    rois = torch.tensor([[0, 4.0, 4.0, 60.0, 50.0, 20.0]], dtype=torch.float64)
    full = roi_align_rotated(feat, rois, (2, 2), 1.0, 0)
    monkeypatch.setattr(mod, "_VALUES_PER_CHUNK", 2 * 2 * 2 * 30 * 2)  # a few grid rows at a time
    assert torch.allclose(roi_align_rotated(feat, rois, (2, 2), 1.0, 0), full)
    assert torch.allclose(full[0], _slow(feat[0], rois[0, 1:].tolist(), (2, 2), 1.0, 0), atol=1e-9)


def test_bad_rois_name_the_problem():
    with pytest.raises(ValueError, match="\\(R, 6\\)"):
        ROIAlignRotated(7, 1.0, 0)(torch.zeros(1, 1, 4, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="non-negative"):
        roi_align_rotated(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 1.0, 1.0, -1.0, 1.0, 0.0]]), 2, 1.0, 0)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align_rotated(torch.zeros(1, 1, 4, 4), torch.tensor([[3, 1.0, 1.0, 1.0, 1.0, 0.0]]), 2, 1.0, 0)


def test_non_finite_rois_name_the_roi():
    rois = torch.tensor([[0, 1.0, 1.0, 1.0, 1.0, 0.0], [0, 1.0, 1.0, float("nan"), 1.0, 0.0]])
    with pytest.raises(ValueError, match="ROI 1 is not finite"):
        roi_align_rotated(torch.zeros(1, 1, 4, 4), rois, 2, 1.0, 2)
    rois[1, 3] = float("inf")
    with pytest.raises(ValueError, match="ROI 1 is not finite"):
        roi_align_rotated(torch.zeros(1, 1, 4, 4), rois, 2, 1.0, 0)


def test_a_single_huge_roi_is_chunked_along_both_grid_axes(monkeypatch):
    mod = sys.modules["workbench.layers.roi_align_rotated"]
    feat = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    rois = torch.tensor([[0, 4.0, 4.0, 60.0, 50.0, 20.0]], dtype=torch.float64)
    full = roi_align_rotated(feat, rois, (2, 2), 1.0, 0)
    seen = []
    sample_points = mod._sample_points

    def spy(rois, spatial_scale, pooled, rows, cols, grid_hw):
        seen.append((rows[1] - rows[0]) * (cols[1] - cols[0]))
        return sample_points(rois, spatial_scale, pooled, rows, cols, grid_hw)

    monkeypatch.setattr(mod, "_sample_points", spy)
    monkeypatch.setattr(mod, "_VALUES_PER_CHUNK", 2 * 2 * 2 * 7)  # less than one grid row (Gw 30)
    assert torch.allclose(roi_align_rotated(feat, rois, (2, 2), 1.0, 0), full)
    assert max(seen) <= 7 and len(seen) > 25  # never a whole grid row at once


def test_an_absurdly_large_adaptive_roi_is_refused_not_run_for_hours():
    rois = torch.tensor([[0, 5.0, 5.0, 1.0, 3.0, 0.0], [0, 5.0, 5.0, 1e9, 1e9, 0.0]])
    with pytest.raises(ValueError, match="ROI 1 .*sampling_ratio"):
        roi_align_rotated(torch.rand(1, 2, 8, 8), rois, 7, 1.0, 0)
    # A fixed sampling ratio bounds the work: it runs.
    assert roi_align_rotated(torch.rand(1, 2, 8, 8), rois, 7, 1.0, 2).shape == (2, 2, 7, 7)

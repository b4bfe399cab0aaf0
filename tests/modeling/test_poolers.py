"""ROIPooler: level assignment, ROIAlign / ROIAlignV2 / ROIPool values, order, empty inputs.

Expected values are computed by hand from the definitions (comments give the arithmetic).
"""

import math

import pytest
import torch

from workbench.modeling.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from workbench.structures import Boxes


def _square(side, x0=0.0, y0=0.0):
    return [x0, y0, x0 + side, y0 + side]


def test_assign_boxes_to_levels_by_canonical_size():
    # level = floor(4 + log2(side / 224)), clamped to [2, 5], returned as offset from 2.
    boxes = Boxes(torch.tensor([
        _square(224),     # 4 + 0                 -> 4 -> offset 2
        _square(112),     # 4 - 1                 -> 3 -> offset 1
        _square(448),     # 4 + 1                 -> 5 -> offset 3
        _square(223),     # 4 + log2(0.9955) < 4  -> 3 -> offset 1
        _square(50),      # 4 - 2.16 = 1.84       -> 1 -> clamped to 2 -> offset 0
        _square(1000),    # 4 + 2.16 = 6.16       -> 6 -> clamped to 5 -> offset 3
        _square(56),      # 4 - 2                 -> 2 -> offset 0
    ]))
    levels = assign_boxes_to_levels([boxes], min_level=2, max_level=5, canonical_box_size=224,
                                    canonical_level=4)
    assert levels.dtype == torch.int64
    assert levels.tolist() == [2, 1, 3, 1, 0, 3, 0]


def test_assign_boxes_to_levels_other_canonical_and_images():
    # canonical 100 px on level 3; non-square box 50 x 200 has sqrt(area) = 100 -> level 3.
    img0 = Boxes(torch.tensor([[0.0, 0.0, 50.0, 200.0]]))
    img1 = Boxes(torch.tensor([_square(200), _square(0)]))  # 3 + 1 = 4; zero area -> min
    levels = assign_boxes_to_levels([img0, img1], min_level=2, max_level=4,
                                    canonical_box_size=100, canonical_level=3)
    assert levels.tolist() == [1, 2, 0]


def test_convert_boxes_to_pooler_format():
    b0 = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    b1 = Boxes(torch.zeros(0, 4))
    b2 = Boxes(torch.tensor([[5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 1.0, 1.0]]))
    rois = convert_boxes_to_pooler_format([b0, b1, b2])
    assert rois.tolist() == [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 0, 0, 1, 1]]


def _x_ramp(n=1, c=1, h=8, w=8):
    # f(y, x) = x: bilinear interpolation of a linear ramp is exact inside the map.
    return torch.arange(w, dtype=torch.float32).expand(n, c, h, w).contiguous()


def test_roialign_v1_vs_v2_half_pixel_shift():
    x = _x_ramp()
    box = [Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))]
    v1 = ROIPooler(1, scales=[1.0], sampling_ratio=2, pooler_type="ROIAlign")([x], box)
    v2 = ROIPooler(1, scales=[1.0], sampling_ratio=2, pooler_type="ROIAlignV2")([x], box)
    assert v1.shape == (1, 1, 1, 1)
    # One 4-px bin, 2 samples per axis at bin_start + (i + 0.5) * 2:
    # ROIAlign samples x = 1, 3 -> mean 2; ROIAlignV2 shifts the box by -0.5 -> x = 0.5, 2.5.
    assert v1.item() == pytest.approx(2.0)
    assert v2.item() == pytest.approx(1.5)


def test_roialign_scale_and_output_size():
    x = _x_ramp(h=4, w=4)  # stride-2 map of an 8 x 8 image
    box = [Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]]))]
    out = ROIPooler(2, scales=[0.5], sampling_ratio=1, pooler_type="ROIAlignV2")([x], box)
    # Box on the map: [0, 4] shifted to [-0.5, 3.5]; two 2-px bins sampled at their centres
    # x = 0.5 and 2.5, on every row.
    assert out.shape == (1, 1, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.5, 2.5], [0.5, 2.5]]))


def test_roipool_takes_max():
    x = _x_ramp()
    box = [Boxes(torch.tensor([[1.0, 1.0, 3.0, 5.0]]))]
    out = ROIPooler(1, scales=[1.0], sampling_ratio=0, pooler_type="ROIPool")([x], box)
    # Quantised box covers columns 1..3 -> max of f = x is 3.
    assert out.item() == 3.0


def test_multilevel_routes_boxes_and_keeps_order():
    # Levels 2 and 3 (strides 4 and 8); every map is constant = 10 * image + level.
    n, c = 2, 3
    feats = [torch.full((n, c, 64, 64), float(lvl)) for lvl in (2, 3)]
    for lvl, f in zip((2, 3), feats):
        f[1] += 10
    # floor(4 + log2(32 / 224)) = 1 -> clamped to 2; floor(4 + log2(160 / 224)) = 3.
    small, large = _square(32, 4, 4), _square(160, 8, 8)
    boxes = [Boxes(torch.tensor([large, small, large])), Boxes(torch.tensor([small]))]
    pooler = ROIPooler(7, scales=[1 / 4, 1 / 8], sampling_ratio=2, pooler_type="ROIAlignV2")
    assert (pooler.min_level, pooler.max_level) == (2, 3)
    out = pooler(feats, boxes)
    assert out.shape == (4, c, 7, 7)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.tensor([3.0, 2.0, 3.0, 12.0]))


@pytest.mark.parametrize("pooler_type", ["ROIAlign", "ROIAlignV2", "ROIPool"])
@pytest.mark.parametrize("num_levels", [1, 3])
def test_zero_rois_give_empty_output(pooler_type, num_levels):
    scales = [1 / 2 ** (2 + i) for i in range(num_levels)]
    feats = [torch.rand(2, 5, 8, 8) for _ in scales]
    pooler = ROIPooler((7, 5), scales=scales, sampling_ratio=0, pooler_type=pooler_type)
    out = pooler(feats, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))])
    assert out.shape == (0, 5, 7, 5)
    # A batch of no image at all.
    out = pooler([f[:0] for f in feats], [])
    assert out.shape == (0, 5, 7, 5)


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="pooler_type"):
        ROIPooler(7, scales=[1 / 4], sampling_ratio=0, pooler_type="ROIMax")
    with pytest.raises(ValueError, match="pyramid"):
        ROIPooler(7, scales=[1 / 4, 1 / 16], sampling_ratio=0, pooler_type="ROIAlignV2")
    with pytest.raises(ValueError, match="powers of 2"):
        ROIPooler(7, scales=[1 / 3], sampling_ratio=0, pooler_type="ROIAlignV2")
    pooler = ROIPooler(7, scales=[1 / 4], sampling_ratio=0, pooler_type="ROIAlignV2")
    with pytest.raises(ValueError, match="batch of 2"):
        pooler([torch.rand(2, 1, 4, 4)], [Boxes(torch.zeros(0, 4))])


def test_gradient_flows_to_features():
    x = torch.rand(1, 2, 8, 8, requires_grad=True)
    out = ROIPooler(2, scales=[1.0], sampling_ratio=2, pooler_type="ROIAlignV2")(
        [x], [Boxes(torch.tensor([[1.0, 1.0, 6.0, 6.0]]))]
    )
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert math.isfinite(x.grad.sum().item())

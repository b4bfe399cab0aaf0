"""DefaultAnchorGenerator: cell anchors, grid order, broadcasting, config wiring.

Expected values are computed by hand in the comments (detectron2's definitions).
"""

import math

import pytest
import torch

from workbench.config import get_cfg
from workbench.layers import ShapeSpec
from workbench.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    DefaultAnchorGenerator,
    build_anchor_generator,
)
from workbench.structures import Boxes

S2 = math.sqrt(2.0)


def test_cell_anchors_size32_three_ratios():
    g = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4])
    # ratio r = h / w with w * h = 32^2: r=0.5 -> w = 32*sqrt(2), h = 16*sqrt(2).
    expected = torch.tensor([
        [-16 * S2, -8 * S2, 16 * S2, 8 * S2],
        [-16.0, -16.0, 16.0, 16.0],
        [-8 * S2, -16 * S2, 8 * S2, 16 * S2],
    ])
    (cell,) = list(g.cell_anchors)
    assert cell.dtype == torch.float32
    torch.testing.assert_close(cell, expected, rtol=0, atol=1e-5)
    assert g.num_anchors == [3] and g.num_cell_anchors == [3]
    assert g.box_dim == 4


def test_cell_anchor_order_is_size_major():
    g = DefaultAnchorGenerator(sizes=[[16, 64]], aspect_ratios=[[1.0, 4.0]], strides=[8])
    cell = g.cell_anchors[0]
    # size 16: r=1 -> 16x16, r=4 -> w=8, h=32; size 64: r=1 -> 64x64, r=4 -> w=32, h=128.
    expected = torch.tensor([
        [-8.0, -8.0, 8.0, 8.0],
        [-4.0, -16.0, 4.0, 16.0],
        [-32.0, -32.0, 32.0, 32.0],
        [-16.0, -64.0, 16.0, 64.0],
    ])
    torch.testing.assert_close(cell, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_grid_shifts_stride4(offset):
    g = DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[[1.0, 0.25]], strides=[4],
                               offset=offset)
    feature = torch.zeros(2, 5, 2, 3)  # N=2, C=5, H=2, W=3
    (anchors,) = g([feature])
    assert isinstance(anchors, Boxes)
    A = 2
    assert anchors.tensor.shape == (2 * 3 * A, 4)
    cell = g.cell_anchors[0]
    # Row (y * W + x) * A + a is cell anchor a centred at (offset*4 + 4x, offset*4 + 4y).
    for y in range(2):
        for x in range(3):
            for a in range(A):
                shift = torch.tensor([4 * x, 4 * y, 4 * x, 4 * y], dtype=torch.float32)
                shift += offset * 4
                torch.testing.assert_close(anchors.tensor[(y * 3 + x) * A + a], cell[a] + shift)
    # First two rows by hand for offset 0.5: centre (2, 2); 8x8 and (w=16, h=4) boxes.
    if offset == 0.5:
        torch.testing.assert_close(anchors.tensor[:2], torch.tensor(
            [[-2.0, -2.0, 6.0, 6.0], [-6.0, 0.0, 10.0, 4.0]]))


def test_broadcast_sizes_and_ratios():
    # One nested list: used on every level.
    g = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4, 8])
    assert g.num_anchors == [3, 3]
    # One list per level.
    g = DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[1.0]], strides=[4, 8])
    torch.testing.assert_close(g.cell_anchors[1], torch.tensor([[-32.0, -32.0, 32.0, 32.0]]))
    # A flat list: all sizes on every level.
    g = DefaultAnchorGenerator(sizes=[32, 64], aspect_ratios=[1.0, 2.0], strides=[4, 8, 16])
    assert g.num_anchors == [4, 4, 4]


def test_bad_arguments_are_loud():
    with pytest.raises(ValueError, match="levels"):
        DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[1.0]], strides=[4, 8, 16])
    with pytest.raises(ValueError, match="offset"):
        DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4], offset=1.0)
    g = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4, 8])
    with pytest.raises(ValueError, match="2 feature maps"):
        g([torch.zeros(1, 1, 4, 4)])


def test_cell_anchors_are_not_in_state_dict_but_follow_to():
    g = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4])
    assert len(g.state_dict()) == 0
    g = g.to(torch.float64)
    assert g.cell_anchors[0].dtype == torch.float64


def test_levels_and_sizes_from_config():
    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.5
    shapes = [ShapeSpec(channels=4, stride=s) for s in (4, 8, 16)]
    g = build_anchor_generator(cfg, shapes)
    assert isinstance(g, DefaultAnchorGenerator)
    assert ANCHOR_GENERATOR_REGISTRY.get("DefaultAnchorGenerator") is DefaultAnchorGenerator
    assert g.strides == [4, 8, 16] and g.offset == 0.5 and g.num_anchors == [3, 3, 3]
    features = [torch.zeros(1, 4, 8 // k, 8 // k) for k in (1, 2, 4)]
    anchors = g(features)
    assert [len(a) for a in anchors] == [64 * 3, 16 * 3, 4 * 3]
    # Level 2 (stride 16, size 128, ratio 1) at grid (0, 0): centre (8, 8), half side 64.
    torch.testing.assert_close(anchors[2].tensor[1], torch.tensor([-56.0, -56.0, 72.0, 72.0]))

"""Tests for workbench.structures.masks and mask_ops: polygons, bitmaps, ROI masks, pasting.

Expected masks are derived by hand from two conventions:
- COCO rasterisation fills pixel (r, c) when its centre (c + 0.5, r + 0.5) is inside the polygon
  (a centre exactly on a left/top edge counts as inside, on a right/bottom edge as outside).
- ``paste_masks_in_image`` samples the ROI mask at each pixel centre; for a constant mask of ones
  the bilinear value falls to 0.5 exactly on the box edge, so with threshold 0.5 the pasted mask
  is the set of pixels whose centre lies in [x0, x1] x [y0, y1].
"""

import numpy as np
import pytest
import torch

from workbench.structures import (
    BitMasks,
    Boxes,
    PolygonMasks,
    ROIMasks,
    paste_masks_in_image,
    polygon_area,
    polygons_to_bitmask,
    rasterize_polygons_within_box,
)
from workbench.structures.mask_ops import _do_paste_mask

# pycocotools' decode trips a NumPy 2 deprecation inside its own code; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _box_mask(h, w, rows, cols):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[rows, cols] = True
    return m


# ----------------------------------------------------------------------------- polygons


def test_polygons_to_bitmask_rectangle():
    m = polygons_to_bitmask([np.array(_rect(1, 1, 5, 4), dtype=np.float64)], 8, 8)
    assert m.dtype == bool and m.shape == (8, 8)
    assert np.array_equal(m, _box_mask(8, 8, slice(1, 4), slice(1, 5)).numpy())


def test_polygons_to_bitmask_several_parts_and_inner_polygon():
    parts = [np.array(_rect(0, 0, 2, 2), float), np.array(_rect(5, 5, 8, 7), float)]
    m = polygons_to_bitmask(parts, 8, 8)
    expected = _box_mask(8, 8, slice(0, 2), slice(0, 2)) | _box_mask(8, 8, slice(5, 7), slice(5, 8))
    assert np.array_equal(m, expected.numpy())
    # COCO polygons cannot cut holes: an inner polygon is merged as a union.
    outer_inner = [np.array(_rect(0, 0, 8, 8), float), np.array(_rect(2, 2, 6, 6), float)]
    assert polygons_to_bitmask(outer_inner, 8, 8).all()


def test_polygons_to_bitmask_empty():
    m = polygons_to_bitmask([], 3, 4)
    assert m.shape == (3, 4) and not m.any()


def test_polygon_area():
    assert polygon_area(np.array([0.0, 4.0, 0.0]), np.array([0.0, 0.0, 3.0])) == 6.0
    assert polygon_area(np.array([0.0, 0.0, 4.0]), np.array([0.0, 3.0, 0.0])) == 6.0  # clockwise


def test_polygon_masks_validation_names_the_culprit():
    with pytest.raises(ValueError, match="got ndarray"):
        PolygonMasks(np.zeros((1, 6)))
    with pytest.raises(ValueError, match="instance 1 should be a list"):
        PolygonMasks([[_rect(0, 0, 1, 1)], np.zeros(6)])
    with pytest.raises(ValueError, match="polygon 1 of instance 0"):
        PolygonMasks([[_rect(0, 0, 1, 1), [0, 0, 1, 1]]])  # only 2 points
    with pytest.raises(ValueError, match="polygon 0 of instance 0"):
        PolygonMasks([[[0, 0, 1, 1, 2]]])  # odd number of coordinates


def test_polygon_masks_basics():
    pm = PolygonMasks(
        [
            [torch.tensor(_rect(0, 0, 4, 2), dtype=torch.float32)],
            [],
            [np.array(_rect(1, 1, 3, 3)), _rect(5, 0, 6, 4)],
        ]
    )
    assert len(pm) == 3
    assert all(p.dtype == np.float64 for inst in pm.polygons for p in inst)
    assert pm.to("anything") is pm
    assert isinstance(pm.device, torch.device)
    assert repr(pm) == "PolygonMasks(num_instances=3)"
    assert pm.nonempty().tolist() == [True, False, True]
    assert [len(p) for p in pm] == [1, 0, 2]
    torch.testing.assert_close(pm.area(), torch.tensor([8.0, 0.0, 8.0], dtype=torch.float64))
    boxes = pm.get_bounding_boxes()
    assert boxes.tensor[0].tolist() == [0.0, 0.0, 4.0, 2.0]
    assert boxes.tensor[2].tolist() == [1.0, 0.0, 6.0, 4.0]
    assert boxes.tensor[1].tolist() == [float("inf"), float("inf"), 0.0, 0.0]  # as detectron2


def test_polygon_masks_area_counts_inner_polygon_twice():
    pm = PolygonMasks([[_rect(0, 0, 8, 8), _rect(2, 2, 6, 6)]])
    assert pm.area().tolist() == [80.0]


def test_polygon_masks_indexing():
    pm = PolygonMasks([[_rect(0, 0, i + 1, 1)] for i in range(4)])
    first_x1 = lambda m: [inst[0][2] for inst in m.polygons]  # noqa: E731
    assert first_x1(pm[2]) == [3.0]
    assert first_x1(pm[1:3]) == [2.0, 3.0]
    assert first_x1(pm[[3, 0]]) == [4.0, 1.0]
    assert first_x1(pm[torch.tensor([True, False, False, True])]) == [1.0, 4.0]
    assert first_x1(pm[torch.tensor([2, 1])]) == [3.0, 2.0]
    assert first_x1(pm[torch.tensor([1, 0], dtype=torch.int32)]) == [2.0, 1.0]
    with pytest.raises(ValueError, match="Unsupported tensor dtype"):
        pm[torch.tensor([0.0])]
    with pytest.raises(ValueError, match="1-D bool mask"):
        pm[torch.ones(2, 2, dtype=torch.bool)]


def test_polygon_masks_cat():
    a = PolygonMasks([[_rect(0, 0, 1, 1)]])
    b = PolygonMasks([[_rect(0, 0, 2, 2)], []])
    c = PolygonMasks.cat([a, b])
    assert len(c) == 3 and c.nonempty().tolist() == [True, True, False]
    with pytest.raises(ValueError):
        PolygonMasks.cat([])
    with pytest.raises(TypeError, match="element 1"):
        PolygonMasks.cat([a, "x"])


# ----------------------------------------------------------------------------- crop_and_resize


def test_polygon_crop_and_resize_rectangle():
    pm = PolygonMasks([[_rect(2, 2, 6, 6)]] * 3)
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 4.0, 6.0]])
    out = pm.crop_and_resize(boxes, 4)
    assert out.shape == (3, 4, 4) and out.dtype == torch.bool
    assert out[0].all()  # the box is the rectangle
    assert torch.equal(out[1], _box_mask(4, 4, slice(1, 3), slice(1, 3)))  # scale 1/2
    assert out[2].all()  # box inside the rectangle
    assert out.device == boxes.device


def test_polygon_crop_and_resize_degenerate_box():
    # Zero-width box: ratio = M / 0.1 instead of a division by zero.
    pm = PolygonMasks([[_rect(2, 2, 6, 6)]])
    out = pm.crop_and_resize(Boxes(torch.tensor([[3.0, 2.0, 3.0, 6.0]])), 4)
    assert out.shape == (1, 4, 4) and out.all()
    out = pm.crop_and_resize(torch.tensor([[7.0, 2.0, 7.0, 6.0]]), 4)  # right of the polygon
    assert not out.any()


def test_polygon_crop_and_resize_uses_float32_ratio():
    # Box side 0.8 (float32: 0.800000011920929). detectron2 under NumPy 2 computes
    # 28 / side in float32 = 35.0 exactly, so the left edge x = 0.1 maps to 3.5, the centre of
    # column 3, which COCO leaves out. A float64 ratio (34.99999948) would fill column 3.
    pm = PolygonMasks([[_rect(0.1, 0.0, 0.8, 0.8)]])
    out = pm.crop_and_resize(torch.tensor([[0.0, 0.0, 0.8, 0.8]]), 28)[0]
    assert torch.equal(out, _box_mask(28, 28, slice(0, 28), slice(4, 28)))


def test_rasterize_does_not_modify_input():
    poly = [np.array(_rect(2.0, 2.0, 6.0, 6.0))]
    rasterize_polygons_within_box(poly, np.array([1.0, 1.0, 5.0, 5.0], np.float32), 4)
    assert poly[0].tolist() == _rect(2.0, 2.0, 6.0, 6.0)


def test_crop_and_resize_empty():
    out = PolygonMasks([]).crop_and_resize(torch.empty(0, 4), 7)
    assert out.shape == (0, 7, 7) and out.dtype == torch.bool
    out = BitMasks(torch.zeros(0, 5, 5)).crop_and_resize(torch.empty(0, 4), 7)
    assert out.shape == (0, 7, 7)


def test_bitmask_crop_and_resize_roi_align():
    # Box (0, 0, 8, 8) into 4 x 4: with aligned roi_align every output cell averages exactly
    # the 2 x 2 pixels it covers.
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    masks[1, :, 0] = True  # covers half of the first column of cells: 0.5 -> True (>= 0.5)
    bm = BitMasks(masks)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    out = bm.crop_and_resize(boxes, 4)
    assert torch.equal(out[0], _box_mask(4, 4, slice(1, 3), slice(1, 3)))
    assert torch.equal(out[1], _box_mask(4, 4, slice(0, 4), slice(0, 1)))
    # A box equal to the object gives a full mask.
    full = bm[0].crop_and_resize(torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 4)
    assert full.all()
    with pytest.raises(ValueError, match="Got 1 boxes for 2 masks"):
        bm.crop_and_resize(boxes[:1], 4)


def test_bitmask_and_polygon_targets_agree_on_aligned_rectangle():
    pm = PolygonMasks([[_rect(2, 2, 6, 6)]])
    bm = BitMasks.from_polygon_masks(pm, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    assert torch.equal(bm.crop_and_resize(boxes, 4), pm.crop_and_resize(boxes, 4))


# ----------------------------------------------------------------------------- BitMasks


def test_bitmasks_basics():
    arr = np.zeros((3, 4, 5), dtype=np.uint8)
    arr[0, 1:3, 2:4] = 1
    arr[2, 3, 0] = 7
    bm = BitMasks(arr)
    assert bm.tensor.dtype == torch.bool and bm.image_size == (4, 5)
    assert len(bm) == 3 and repr(bm) == "BitMasks(num_instances=3)"
    assert bm.nonempty().tolist() == [True, False, True]
    assert bm.area().tolist() == [4, 0, 1]
    assert bm[0].tensor.shape == (1, 4, 5)
    assert bm[1:].tensor.shape == (2, 4, 5)
    assert len(bm[torch.tensor([True, False, True])]) == 2
    assert [m.shape for m in bm] == [(4, 5)] * 3
    assert bm.to(bm.device).device == bm.device
    boxes = bm.get_bounding_boxes()
    assert boxes.tensor.tolist() == [
        [2.0, 1.0, 4.0, 3.0],
        [0.0, 0.0, 0.0, 0.0],  # empty mask
        [0.0, 3.0, 1.0, 4.0],
    ]
    with pytest.raises(ValueError, match=r"\(N, H, W\), got \(4, 5\)"):
        BitMasks(torch.zeros(4, 5))
    with pytest.raises(IndexError, match="expected \\(n, H, W\\)"):
        bm[0, 1]


def test_bitmasks_from_polygons_and_cat():
    bm = BitMasks.from_polygon_masks([[_rect(1, 1, 5, 4)], []], 8, 8)
    assert bm.tensor.shape == (2, 8, 8)
    assert torch.equal(bm.tensor[0], _box_mask(8, 8, slice(1, 4), slice(1, 5)))
    assert not bm.tensor[1].any()
    assert BitMasks.from_polygon_masks([], 3, 4).tensor.shape == (0, 3, 4)
    c = BitMasks.cat([bm, bm[0]])
    assert c.tensor.shape == (3, 8, 8)
    with pytest.raises(ValueError):
        BitMasks.cat([])


# ----------------------------------------------------------------------------- pasting


def test_paste_constant_mask():
    masks = torch.ones(2, 28, 28)
    boxes = Boxes(torch.tensor([[2.0, 3.0, 7.0, 9.0], [2.6, 3.2, 6.4, 8.4]]))
    out = paste_masks_in_image(masks, boxes, (12, 12))
    assert out.shape == (2, 12, 12) and out.dtype == torch.bool
    # pixels whose centre c + 0.5 lies inside [x0, x1] x [y0, y1]
    assert torch.equal(out[0], _box_mask(12, 12, slice(3, 9), slice(2, 7)))
    assert torch.equal(out[1], _box_mask(12, 12, slice(3, 8), slice(3, 6)))


def test_paste_boxes_partly_and_fully_outside():
    masks = torch.ones(2, 14, 14)
    boxes = torch.tensor([[-3.0, -2.0, 2.0, 3.0], [20.0, 20.0, 25.0, 25.0]])
    out = paste_masks_in_image(masks, boxes, (6, 6))
    assert torch.equal(out[0], _box_mask(6, 6, slice(0, 3), slice(0, 2)))
    assert not out[1].any()


def test_paste_threshold_and_uint8_mode():
    masks = torch.full((1, 4, 4), 0.4)
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    assert not paste_masks_in_image(masks, box, (4, 4)).any()
    assert paste_masks_in_image(masks, box, (4, 4), threshold=0.3).all()
    raw = paste_masks_in_image(masks, box, (4, 4), threshold=-1)
    assert raw.dtype == torch.uint8 and raw[0, 1, 1].item() == 102  # int(0.4 * 255)


def test_paste_empty():
    out = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6))
    assert out.shape == (0, 5, 6) and out.dtype == torch.bool


def test_paste_per_box_window_equals_full_image_sampling():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 28, 28, generator=g)
    xy = torch.rand(5, 2, generator=g) * 30
    wh = torch.rand(5, 2, generator=g) * 20 + 0.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    out = paste_masks_in_image(masks, boxes, (40, 45))
    full, _ = _do_paste_mask(masks[:, None], boxes, 40, 45, skip_empty=False)
    assert torch.equal(out, full >= 0.5)


def test_paste_input_checks():
    with pytest.raises(ValueError, match=r"square masks .* got \(1, 28, 14\)"):
        paste_masks_in_image(torch.zeros(1, 28, 14), torch.zeros(1, 4), (5, 5))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        paste_masks_in_image(torch.zeros(2, 28, 28), torch.zeros(1, 4), (5, 5))


# ----------------------------------------------------------------------------- ROIMasks


def test_roi_masks():
    rm = ROIMasks(torch.ones(3, 28, 28))
    assert len(rm) == 3 and repr(rm) == "ROIMasks(num_instances=3)"
    assert rm[1:].tensor.shape == (2, 28, 28) and rm[0].tensor.shape == (1, 28, 28)
    assert rm.to(rm.device).device == rm.device
    boxes = Boxes(torch.tensor([[2.0, 3.0, 7.0, 9.0]] * 3))
    bm = rm.to_bitmasks(boxes, 12, 12)
    assert isinstance(bm, BitMasks) and bm.tensor.shape == (3, 12, 12)
    assert torch.equal(bm.tensor[2], _box_mask(12, 12, slice(3, 9), slice(2, 7)))
    via_static = BitMasks.from_roi_masks(rm, 12, 12, boxes=boxes)
    assert torch.equal(via_static.tensor, bm.tensor)
    with pytest.raises(TypeError, match="boxes"):
        BitMasks.from_roi_masks(rm, 12, 12)
    with pytest.raises(ValueError, match=r"\(N, M, M\), got \(28, 28\)"):
        ROIMasks(torch.ones(28, 28))

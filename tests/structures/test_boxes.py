"""Tests for workbench.structures.boxes: BoxMode conversions, Boxes and pairwise box maths."""

import math

import numpy as np
import pytest
import torch

from workbench.structures import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)

# ----------------------------------------------------------------------------- BoxMode.convert


def test_convert_list_and_tuple_keep_type():
    out = BoxMode.convert([1, 2, 3, 4], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert out == [1, 2, 4, 6] and isinstance(out, list)
    out = BoxMode.convert((1.0, 2.0, 4.0, 6.0), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert out == (1.0, 2.0, 3.0, 4.0) and isinstance(out, tuple)


def test_convert_list_goes_through_float32_like_detectron2():
    # A float list becomes a default-dtype (float32) tensor, so 0.1 comes back rounded.
    out = BoxMode.convert([0.1, 0.0, 1.0, 1.0], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert out[0] == float(np.float32(0.1))
    assert out[2] == float(np.float32(1.1))


def test_convert_numpy_batch_and_single_row():
    arr = np.array([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 4.0, 4.0]], dtype=np.float64)
    out = BoxMode.convert(arr, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0, 0, 10, 5], [2, 3, 6, 7]])
    np.testing.assert_array_equal(arr[1], [2, 3, 4, 4])  # input untouched

    single = BoxMode.convert(np.array([2.0, 3.0, 6.0, 7.0]), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert single.shape == (4,)
    np.testing.assert_array_equal(single, [2, 3, 4, 4])


def test_convert_tensor_batch_and_single_row():
    t = torch.tensor([[1.0, 1.0, 3.0, 4.0]])
    out = BoxMode.convert(t, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [[1.0, 1.0, 2.0, 3.0]]
    assert t.tolist() == [[1.0, 1.0, 3.0, 4.0]]  # input untouched
    single = BoxMode.convert(torch.tensor([1, 1, 2, 3]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert single.tolist() == [1, 1, 3, 4] and single.dtype == torch.int64


@pytest.mark.parametrize(
    "box",
    [[5.0, 7.0, 20.0, 30.0], np.array([[5.0, 7.0, 20.0, 30.0], [0.0, 0.0, 1.0, 2.0]])],
)
def test_convert_round_trip(box):
    there = BoxMode.convert(box, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    back = BoxMode.convert(there, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    np.testing.assert_allclose(np.asarray(back), np.asarray(box))


def test_convert_same_mode_is_identity_even_for_relative():
    box = [1, 2, 3, 4]
    assert BoxMode.convert(box, BoxMode.XYXY_REL, BoxMode.XYXY_REL) is box


def test_convert_rotated():
    # 90 degrees swaps width and height of the enclosing upright box.
    out = BoxMode.convert(
        torch.tensor([[10.0, 20.0, 4.0, 2.0, 90.0]]), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS
    )
    torch.testing.assert_close(out, torch.tensor([[9.0, 18.0, 11.0, 22.0]]))
    # 0 degrees: centre +- half size.
    out = BoxMode.convert([10.0, 20.0, 4.0, 2.0, 0.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    assert out == [8.0, 19.0, 12.0, 21.0]
    out = BoxMode.convert([0.0, 0.0, 4.0, 2.0], BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    assert out == [2.0, 1.0, 4.0, 2.0, 0.0]


@pytest.mark.parametrize(
    "from_mode,to_mode",
    [(BoxMode.XYXY_REL, BoxMode.XYXY_ABS), (BoxMode.XYXY_ABS, BoxMode.XYWH_REL)],
)
def test_convert_relative_modes_raise(from_mode, to_mode):
    with pytest.raises(NotImplementedError, match="Relative"):
        BoxMode.convert([0.1, 0.1, 0.5, 0.5], from_mode, to_mode)


def test_convert_rejects_bad_sizes():
    with pytest.raises(ValueError, match="length 3"):
        BoxMode.convert([1, 2, 3], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        BoxMode.convert(np.zeros((2, 3)), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    with pytest.raises(NotImplementedError):
        BoxMode.convert([1, 2, 3, 4], BoxMode.XYXY_ABS, BoxMode.XYWHA_ABS)


# ----------------------------------------------------------------------------- Boxes


def _boxes():
    # the third box has zero width
    return Boxes(
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 20.0], [2.0, 3.0, 2.0, 8.0]])
    )


def test_boxes_construction_casts_to_float32():
    b = Boxes([[1, 2, 3, 4]])
    assert b.tensor.dtype == torch.float32 and b.tensor.shape == (1, 4)
    b = Boxes(torch.tensor([[1, 2, 3, 4]], dtype=torch.float64))
    assert b.tensor.dtype == torch.float32
    b = Boxes(np.array([[1, 2, 3, 4]], dtype=np.int32))
    assert b.tensor.tolist() == [[1.0, 2.0, 3.0, 4.0]]


@pytest.mark.parametrize("empty", [torch.empty(0), [], np.zeros((0, 4)), torch.zeros(0, 4)])
def test_boxes_empty_inputs_have_shape_0x4(empty):
    b = Boxes(empty)
    assert b.tensor.shape == (0, 4) and b.tensor.dtype == torch.float32
    assert len(b) == 0
    assert b.area().shape == (0,)
    assert b.nonempty().shape == (0,)
    assert b.get_centers().shape == (0, 2)
    assert list(b) == []


def test_boxes_rejects_bad_shape_naming_it():
    with pytest.raises(ValueError, match=r"Expected boxes of shape \(N, 4\), got \(2, 3\)"):
        Boxes(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"got \(4,\)"):
        Boxes(torch.zeros(4))


def test_clone_and_to():
    b = _boxes()
    c = b.clone()
    c.tensor[0, 0] = 100
    assert b.tensor[0, 0] == 0
    moved = b.to(b.device)
    assert isinstance(moved, Boxes) and moved.device == b.device
    torch.testing.assert_close(moved.tensor, b.tensor)


def test_area_including_degenerate():
    assert _boxes().area().tolist() == [100.0, 150.0, 0.0]


def test_clip():
    b = Boxes(torch.tensor([[-5.0, -1.0, 30.0, 8.0], [1.0, 2.0, 3.0, 4.0]]))
    b.clip((6, 20))  # (height, width)
    assert b.tensor.tolist() == [[0.0, 0.0, 20.0, 6.0], [1.0, 2.0, 3.0, 4.0]]
    with pytest.raises(ValueError, match="infinite or NaN"):
        Boxes(torch.tensor([[0.0, 0.0, float("nan"), 1.0]])).clip((5, 5))


def test_nonempty_with_threshold():
    b = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 5.0], [0, 0, 2.0, 5.0]]))
    assert b.nonempty().tolist() == [True, False, True]
    assert b.nonempty(threshold=2.0).tolist() == [True, False, False]  # side must be > 2


def test_getitem_variants_always_2d():
    b = _boxes()
    one = b[1]
    assert isinstance(one, Boxes) and one.tensor.shape == (1, 4)
    assert one.tensor.tolist() == [[5.0, 5.0, 15.0, 20.0]]
    assert b[-1].tensor.tolist() == [[2.0, 3.0, 2.0, 8.0]]
    assert b[np.int64(0)].tensor.shape == (1, 4)
    assert b[1:].tensor.shape == (2, 4)
    assert b[torch.tensor([True, False, True])].tensor[:, 0].tolist() == [0.0, 2.0]
    assert b[torch.tensor([2, 0])].tensor[:, 0].tolist() == [2.0, 0.0]
    assert len(b[torch.zeros(3, dtype=torch.bool)]) == 0
    with pytest.raises(IndexError, match="expected \\(n, 4\\)"):
        b[0, 1]


def test_len_iter_repr():
    b = _boxes()
    assert len(b) == 3
    rows = list(b)
    assert len(rows) == 3 and rows[1].tolist() == [5.0, 5.0, 15.0, 20.0]
    assert repr(Boxes([[1, 2, 3, 4]])).startswith("Boxes(tensor([[1., 2., 3., 4.]]")


def test_inside_box():
    b = Boxes(torch.tensor([[0.0, 0.0, 9.0, 9.0], [-1.0, 0.0, 5.0, 5.0], [0.0, 0.0, 10.0, 5.0]]))
    assert b.inside_box((10, 10)).tolist() == [True, False, False]  # x1 < width is strict
    assert b.inside_box((10, 10), boundary_threshold=1).tolist() == [True, True, True]


def test_get_centers_and_scale():
    b = _boxes()
    assert b.get_centers().tolist() == [[5.0, 5.0], [10.0, 12.5], [2.0, 5.5]]
    b.scale(2.0, 0.5)
    assert b.tensor[1].tolist() == [10.0, 2.5, 30.0, 10.0]


def test_cat():
    a, b = Boxes([[0, 0, 1, 1]]), Boxes([[1, 1, 2, 2], [2, 2, 3, 3]])
    c = Boxes.cat([a, b])
    assert c.tensor.shape == (3, 4) and c.tensor[2].tolist() == [2.0, 2.0, 3.0, 3.0]
    c.tensor[0, 0] = 9  # never shares storage with the inputs
    assert a.tensor[0, 0] == 0
    assert Boxes.cat([]).tensor.shape == (0, 4)
    assert Boxes.cat([Boxes(torch.empty(0)), a]).tensor.shape == (1, 4)
    with pytest.raises(TypeError, match="element 1"):
        Boxes.cat([a, torch.zeros(1, 4)])


# ----------------------------------------------------------------------------- pairwise


def test_pairwise_intersection_iou_ioa():
    b1 = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]]))
    b2 = Boxes(
        torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 2.0, 2.0]])
    )
    inter = pairwise_intersection(b1, b2)
    assert inter.tolist() == [[25.0, 0.0, 4.0], [0.0, 0.0, 4.0]]
    iou = pairwise_iou(b1, b2)
    torch.testing.assert_close(
        iou, torch.tensor([[25 / 175, 0.0, 4 / 100], [0.0, 0.0, 4 / 16]])
    )
    ioa = pairwise_ioa(b1, b2)  # over the area of the boxes2 box
    torch.testing.assert_close(ioa, torch.tensor([[0.25, 0.0, 1.0], [0.0, 0.0, 1.0]]))


def test_pairwise_iou_degenerate_and_empty():
    zero_w = Boxes(torch.tensor([[3.0, 0.0, 3.0, 5.0]]))
    iou = pairwise_iou(zero_w, zero_w)
    assert iou.tolist() == [[0.0]]  # no 0/0 NaN
    assert pairwise_ioa(zero_w, zero_w).tolist() == [[0.0]]
    empty = Boxes(torch.empty(0, 4))
    assert pairwise_iou(empty, _boxes()).shape == (0, 3)
    assert pairwise_iou(_boxes(), empty).shape == (3, 0)


def test_pairwise_point_box_distance():
    points = torch.tensor([[5.0, 5.0], [12.0, -1.0]])
    boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 2.0, 6.0, 8.0]]))
    d = pairwise_point_box_distance(points, boxes)
    assert d.shape == (2, 2, 4)
    assert d[0, 0].tolist() == [5.0, 5.0, 5.0, 5.0]
    assert d[0, 1].tolist() == [1.0, 3.0, 1.0, 3.0]
    assert d[1, 0].tolist() == [12.0, -1.0, -2.0, 11.0]  # outside: some distances negative
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        pairwise_point_box_distance(torch.zeros(3), boxes)


def test_matched_pairwise_iou():
    b1 = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0]]))
    b2 = Boxes(torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 2.0, 2.0]]))
    torch.testing.assert_close(matched_pairwise_iou(b1, b2), torch.tensor([25 / 175, 1.0]))
    # Two zero-area boxes: 0 / 0, like detectron2 (pairwise_iou special-cases this, this does not)
    z = Boxes(torch.tensor([[1.0, 1.0, 1.0, 3.0]]))
    assert math.isnan(matched_pairwise_iou(z, z).item())
    with pytest.raises(ValueError, match="got 2 and 1"):
        matched_pairwise_iou(b1, z)

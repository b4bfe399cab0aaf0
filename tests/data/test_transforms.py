"""ResizeShortestEdge / ResizeTransform: detectron2's sizes and pixels, bit for bit."""


import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data import transforms as T
from fixture_paths import FIXTURES



@pytest.mark.parametrize(
    "hw, size, max_size, expected",
    [
        ((512, 512), 320, 533, (320, 320)),
        ((300, 451), 320, 533, (320, 481)),  # 451 * 320 / 300 = 481.07 -> 481
        ((400, 600), 320, 533, (320, 480)),
        ((427, 640), 320, 533, (320, 480)),  # 479.63 -> 480 (half up)
        ((480, 640), 800, 1333, (800, 1067)),  # 1066.67 -> 1067
        ((100, 1000), 800, 1333, (133, 1333)),  # capped by max_size: 133.3 -> 133
        ((1000, 100), 800, 1333, (1333, 133)),
        ((3, 2), 5, 10 ** 9, (8, 5)),  # 7.5 -> 8: int(x + 0.5), not round-half-even
        ((1, 1), 1, 1, (1, 1)),
    ],
)
def test_get_output_shape(hw, size, max_size, expected):
    assert T.ResizeShortestEdge.get_output_shape(*hw, size, max_size) == expected


def test_resize_reproduces_fixture_inputs_bit_exactly():
    # The fixtures' model inputs were made by detectron2's ResizeShortestEdge(320, 533) (PIL
    # bilinear on uint8) followed by astype(float32).transpose(2, 0, 1).

    data = np.load(FIXTURES / "mask_rcnn_R_50_FPN" / "inputs.npz")
    aug = T.ResizeShortestEdge([320, 320], 533)
    for i in range(4):
        img = data[f"img{i}/image_uint8_hwc"]
        tfm = aug.get_transform(img)
        assert isinstance(tfm, T.ResizeTransform)
        out = tfm.apply_image(img)
        assert out.dtype == np.uint8
        chw = out.astype("float32").transpose(2, 0, 1)
        expected = data[f"img{i}/image_chw_float32"]
        assert chw.shape == expected.shape, (i, chw.shape, expected.shape)
        assert np.array_equal(chw, expected), f"img{i}: max diff {np.abs(chw - expected).max()}"
        assert tuple(data[f"img{i}/resized_hw"]) == out.shape[:2]


def test_uint8_resize_is_pil_bilinear():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    out = T.ResizeTransform(37, 53, 20, 29).apply_image(img)
    expected = np.asarray(Image.fromarray(img).resize((29, 20), Image.BILINEAR))
    assert np.array_equal(out, expected)


def test_single_channel_uint8_keeps_its_channel_axis():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(10, 12, 1), dtype=np.uint8)
    out = T.ResizeTransform(10, 12, 5, 6).apply_image(img)
    assert out.shape == (5, 6, 1)
    expected = np.asarray(Image.fromarray(img[:, :, 0]).resize((6, 5), Image.BILINEAR))
    assert np.array_equal(out[:, :, 0], expected)


def test_float_images_use_interpolate():
    rng = np.random.default_rng(2)
    img = rng.random((8, 6, 3)).astype(np.float32)
    out = T.ResizeTransform(8, 6, 16, 12).apply_image(img)
    assert out.shape == (16, 12, 3) and out.dtype == np.float32
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None], (16, 12), mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out, expected)
    gray = T.ResizeTransform(8, 6, 4, 3).apply_image(img[:, :, 0])
    assert gray.shape == (4, 3)


def test_segmentation_uses_nearest_so_labels_survive():
    seg = np.zeros((4, 4), dtype=np.uint8)
    seg[:2, :2] = 7
    seg[2:, 2:] = 3
    out = T.ResizeTransform(4, 4, 9, 9).apply_segmentation(seg)
    assert set(np.unique(out)) == {0, 3, 7}
    out_f = T.ResizeTransform(4, 4, 9, 9).apply_segmentation(seg.astype(np.float32))
    assert set(np.unique(out_f)) == {0.0, 3.0, 7.0}


def test_coords_boxes_and_inverse():
    tfm = T.ResizeTransform(100, 200, 50, 300)
    coords = np.array([[10.0, 20.0], [200.0, 100.0]])
    out = tfm.apply_coords(coords)
    np.testing.assert_allclose(out, [[15.0, 10.0], [300.0, 50.0]])
    assert coords[0, 0] == 10.0, "apply_coords must not modify its input"
    boxes = tfm.apply_box(np.array([[0.0, 0.0, 200.0, 100.0], [10.0, 20.0, 30.0, 40.0]]))
    np.testing.assert_allclose(boxes, [[0, 0, 300, 50], [15, 10, 45, 20]])
    back = tfm.inverse()
    np.testing.assert_allclose(back.apply_coords(out), coords)
    polys = tfm.apply_polygons([np.array([[0.0, 0.0], [200.0, 100.0], [0.0, 100.0]])])
    np.testing.assert_allclose(polys[0], [[0, 0], [300, 50], [0, 50]])


def test_wrong_image_size_is_reported():
    with pytest.raises(ValueError, match=r"Expected an image of shape \(10, 12\)"):
        T.ResizeTransform(10, 12, 5, 6).apply_image(np.zeros((12, 10, 3), np.uint8))


def test_sampling_styles_and_no_op():
    np.random.seed(0)
    aug = T.ResizeShortestEdge((10, 20), sample_style="range")
    sizes = {aug.get_transform(np.zeros((30, 40, 3), np.uint8)).new_h for _ in range(50)}
    assert sizes <= set(range(10, 21)) and len(sizes) > 3
    aug = T.ResizeShortestEdge([12, 24], sample_style="choice")
    sizes = {aug.get_transform(np.zeros((30, 40, 3), np.uint8)).new_h for _ in range(30)}
    assert sizes == {12, 24}
    assert isinstance(T.ResizeShortestEdge(0).get_transform(np.zeros((5, 5, 3))), T.NoOpTransform)
    with pytest.raises(ValueError, match="sample_style"):
        T.ResizeShortestEdge(10, sample_style="uniform")
    with pytest.raises(ValueError, match="two values"):
        T.ResizeShortestEdge([1, 2, 3])


def test_range_draw_uses_numpy_global_rng_like_detectron2():
    # detectron2 draws np.random.randint(lo, hi + 1) even when lo == hi; seeded sequences of
    # later draws therefore match detectron2's.
    np.random.seed(123)
    T.ResizeShortestEdge([320, 320], 533).get_transform(np.zeros((4, 4, 3), np.uint8))
    after = np.random.rand()
    np.random.seed(123)
    np.random.randint(320, 321)
    assert np.random.rand() == after

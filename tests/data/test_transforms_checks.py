"""Input checks and edge cases of the extra transforms: nearest-neighbour extent segmentation,
FixedSizeCrop / RandomExtent argument checks, empty and 1-pixel rotations, and golden rotation
numbers computed once with OpenCV (detectron2's ``cv2.getRotationMatrix2D`` / ``cv2.transform``
/ ``cv2.warpAffine``), hardcoded here so the tests do not need OpenCV."""

import numpy as np
import pytest
from PIL import Image

import workbench.data.transforms as T


def test_extent_segmentation_is_nearest_not_bilinear():
    seg = np.zeros((8, 8), np.uint8)
    seg[:, 4:] = 10
    ext = T.ExtentTransform((0.3, 0.3, 7.7, 7.7), (13, 13))
    out = ext.apply_segmentation(seg)
    assert out.shape == (13, 13)
    assert set(np.unique(out).tolist()) == {0, 10}  # detectron2 (interp=0 taken as "not given"): {0, 4, 10}
    # An explicit interp=Image.NEAREST (== 0) wins over the bilinear default for images too.
    img = np.dstack([seg] * 3)
    assert set(np.unique(ext.apply_image(img, interp=Image.NEAREST)).tolist()) == {0, 10}
    assert len(np.unique(ext.apply_image(img))) > 2  # the default stays bilinear


@pytest.mark.parametrize("crop_size", [(0, 10), (-5, 10), (10,), None, (10.5, 10), (10, 10, 3), "ab", (True, 4)])
def test_fixed_size_crop_rejects_bad_crop_size(crop_size):
    with pytest.raises(ValueError, match=r"crop_size.*two positive ints"):
        T.FixedSizeCrop(crop_size=crop_size)


def test_fixed_size_crop_accepts_lists_and_numpy_ints():
    aug = T.FixedSizeCrop(crop_size=[np.int64(4), 6])
    assert aug.crop_size == (4, 6)
    assert T.apply_augmentations([aug], np.zeros((10, 10, 3), np.uint8))[0].shape == (4, 6, 3)


def test_fixed_size_crop_inverse_on_small_image_names_both_sizes():
    aug = T.FixedSizeCrop(crop_size=(80, 80))
    tfm = aug.get_transform(np.zeros((60, 60, 3), np.uint8))
    with pytest.raises(ValueError, match=r"crop window \(x0=0, y0=0, w=80, h=80\) was larger than the image "
                                         r"\(w=60, h=60\)"):
        tfm.inverse()
    # A crop that fits inverts to padding.
    big = aug.get_transform(np.zeros((100, 90, 3), np.uint8))
    assert big.inverse().apply_image(np.zeros((80, 80, 3), np.uint8)).shape == (100, 90, 3)


@pytest.mark.parametrize("scale_range", [(0, 0.5), (-1, 1), (0.5, 0.2), (0.5,), None])
def test_random_extent_rejects_bad_scale_range(scale_range):
    with pytest.raises(ValueError, match="scale_range"):
        T.RandomExtent(scale_range, (0, 0))


def test_random_extent_too_small_output_is_reported():
    np.random.seed(0)
    aug = T.RandomExtent((0.001, 0.01), (0, 0))
    with pytest.raises(ValueError, match=r"scale_range=\(0.001, 0.01\).*60x100.*at least 1x1"):
        aug.get_transform(np.zeros((60, 100, 3), np.uint8))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (0, 0, 3), (4, 0)])
def test_rotation_of_empty_image_returns_it_unchanged(shape):
    img = np.zeros(shape, np.uint8)
    np.random.seed(0)
    aug = T.RandomRotation([10, 20])
    out_img, tfm = T.apply_augmentations([aug], img)
    assert out_img.shape == shape and isinstance(tfm[0], T.RotationTransform)
    assert tfm[0].apply_segmentation(img).shape == shape


def test_rotation_of_one_pixel_high_and_wide_images_matches_opencv():
    # cv2.warpAffine of [1, 2, 3, 4] rotated 10 degrees, expand=False.
    golden = [0.7563804, 1.8332884, 2.7325912, 2.9412582]
    row = np.array([[1, 2, 3, 4]], np.float32)
    np.testing.assert_allclose(T.RotationTransform(1, 4, 10, expand=False).apply_image(row)[0], golden, atol=1e-3)
    col = row.T.copy()
    np.testing.assert_allclose(T.RotationTransform(4, 1, 10, expand=False).apply_image(col)[:, 0], golden,
                               atol=1e-3)


_IMG = np.arange(20, dtype=np.float32).reshape(4, 5) * 10 + 5
_PTS = np.array([[0.0, 0.0], [5.0, 4.0], [2.5, 1.0], [1.2, 3.7]])
# OpenCV 5.1 through detectron2's RotationTransform: angle 37.3, center (1.5, 2.25).
_GOLDEN = {
    False: dict(
        coords=[[-1.0567, 1.3692], [5.3446, 1.5211], [1.538, 0.6497], [2.14, 3.5852]],
        image=[[13.2717, 43.5009, 81.755, 120.0092, 85.0636],
               [38.9605, 77.2147, 115.4688, 153.723, 191.9771],
               [72.6743, 110.9285, 149.1826, 150.5398, 43.6836],
               [50.0318, 144.6422, 107.4423, 7.5715, 0.0]],
        uint8=[[13, 44, 82, 120, 85], [39, 77, 115, 154, 192], [73, 111, 149, 151, 44], [50, 145, 107, 8, 0]]),
    True: dict(
        coords=[[-0.2007, 2.924], [6.2007, 3.076], [2.394, 2.2045], [2.9961, 5.1401]],
        image=[[0.0, 0.0, 7.5355, 35.9331, 19.2644, 0.0],
               [0.0, 8.8145, 30.3022, 68.5564, 94.9778, 13.9264],
               [4.7824, 25.7619, 64.016, 102.2702, 140.5243, 124.5667],
               [17.0977, 59.4757, 97.7298, 135.984, 174.2381, 112.6761],
               [6.5403, 84.5837, 131.4436, 169.6978, 70.7469, 0.0],
               [0.0, 39.0994, 126.929, 34.1289, 0.0, 0.0]],
        uint8=[[0, 0, 8, 36, 19, 0], [0, 9, 30, 69, 95, 14], [5, 26, 64, 102, 141, 125],
               [17, 59, 98, 136, 174, 113], [7, 85, 131, 170, 71, 0], [0, 39, 127, 34, 0, 0]]),
}


@pytest.mark.parametrize("expand", [False, True])
def test_rotation_at_arbitrary_angle_matches_opencv_golden_numbers(expand):
    golden = _GOLDEN[expand]
    tfm = T.RotationTransform(4, 5, 37.3, expand=expand, center=(1.5, 2.25))
    np.testing.assert_allclose(tfm.apply_coords(_PTS), golden["coords"], atol=1e-3)
    out = tfm.apply_image(_IMG)
    assert out.shape == np.shape(golden["image"]) and out.dtype == np.float32
    np.testing.assert_allclose(out, golden["image"], atol=1e-2)
    out8 = tfm.apply_image(_IMG.astype(np.uint8)).astype(int)
    assert np.abs(out8 - np.array(golden["uint8"])).max() <= 1  # OpenCV's fixed point: 1 grey level

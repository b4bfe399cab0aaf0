"""detectron2's remaining transforms and augmentations: rotation, extent, scale, pad, blend,
colour, LSJ (ResizeScale + FixedSizeCrop), RandomApply, and input_args read from signatures."""

import random

import numpy as np
import pytest
from PIL import ImageOps

import workbench.data.transforms as T

# detectron2.data.transforms.__all__ (fvcore's transforms + detectron2's), as of detectron2 main.
DETECTRON2_TRANSFORMS_ALL = [
    "Transform", "TransformList", "BlendTransform", "CropTransform", "PadTransform",
    "GridSampleTransform", "HFlipTransform", "VFlipTransform", "NoOpTransform", "ScaleTransform",
    "ExtentTransform", "ResizeTransform", "RotationTransform", "ColorTransform", "PILColorTransform",
    "Augmentation", "AugmentationList", "AugInput", "TransformGen", "apply_transform_gens",
    "StandardAugInput", "apply_augmentations", "FixedSizeCrop", "RandomApply", "RandomBrightness",
    "RandomContrast", "RandomCrop", "RandomExtent", "RandomFlip", "RandomSaturation",
    "RandomLighting", "RandomRotation", "Resize", "ResizeScale", "ResizeShortestEdge",
    "RandomCrop_CategoryAreaConstraint", "RandomResize", "MinIoURandomCrop",
]


def test_every_detectron2_transform_name_is_exported():
    missing = [n for n in DETECTRON2_TRANSFORMS_ALL if n not in T.__all__ or not hasattr(T, n)]
    assert not missing, missing


class _NeedsSemSeg(T.Augmentation):
    def get_transform(self, image, sem_seg):
        self.seen = (image.shape, int(sem_seg.sum()))
        return T.NoOpTransform()


def test_input_args_read_from_get_transform_signature():
    aug = _NeedsSemSeg()
    aug(T.AugInput(np.zeros((2, 3, 3), np.uint8), sem_seg=np.ones((2, 3), np.uint8)))
    assert aug.input_args == ("image", "sem_seg")
    assert aug.seen == ((2, 3, 3), 6)
    assert T.ResizeShortestEdge(4)._get_input_args() == ("image",)


def test_random_apply():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert isinstance(T.RandomApply(T.HFlipTransform(3), prob=0.0)(T.AugInput(img)), T.NoOpTransform)
    aug_input = T.AugInput(img)
    tfm = T.RandomApply(T.RandomFlip(prob=1.0), prob=1.0)(aug_input)
    assert isinstance(tfm, T.HFlipTransform) and (aug_input.image == img[:, ::-1]).all()
    with pytest.raises(ValueError, match="probability"):
        T.RandomApply(T.RandomFlip(), prob=1.5)


def test_rotation_by_90_matches_rot90():
    img = np.arange(6, dtype=np.float32).reshape(2, 3)
    tfm = T.RotationTransform(2, 3, 90)
    assert (tfm.bound_h, tfm.bound_w) == (3, 2)
    np.testing.assert_allclose(tfm.apply_image(img), np.rot90(img), atol=1e-4)
    np.testing.assert_allclose(tfm.apply_image(img.astype(np.uint8)), np.rot90(img))
    # Counter-clockwise: the top-left corner goes to the bottom-left.
    np.testing.assert_allclose(tfm.apply_coords(np.array([[0.0, 0.0], [3.0, 0.0]])), [[0, 3], [0, 0]], atol=1e-9)
    pts = np.array([[0.5, 1.5], [2.0, 0.25]])
    np.testing.assert_allclose(tfm.inverse().apply_coords(tfm.apply_coords(pts)), pts, atol=1e-9)
    assert isinstance(T.RandomRotation([0, 0]).get_transform(img), T.NoOpTransform)


def test_rotation_without_expand_keeps_size():
    img = np.random.RandomState(0).randint(0, 255, (5, 7, 3)).astype(np.uint8)
    out = T.RotationTransform(5, 7, 30, expand=False).apply_image(img)
    assert out.shape == img.shape and out.dtype == np.uint8


def test_extent_identity_and_scale_transform():
    img = np.random.RandomState(0).randint(0, 255, (4, 6, 3)).astype(np.uint8)
    ext = T.ExtentTransform((0, 0, 6, 4), (4, 6))
    np.testing.assert_array_equal(ext.apply_image(img), img)
    np.testing.assert_allclose(ext.apply_coords(np.array([[1.0, 2.0]])), [[1.0, 2.0]])
    ext2 = T.ExtentTransform((0, 0, 6, 4), (8, 12))
    np.testing.assert_allclose(ext2.apply_coords(np.array([[1.0, 2.0]])), [[2.0, 4.0]])

    sc = T.ScaleTransform(4, 6, 8, 12)
    assert sc.apply_image(img).shape == (8, 12, 3)
    seg = np.arange(24, dtype=np.uint8).reshape(4, 6)
    assert set(np.unique(sc.apply_segmentation(seg))) <= set(seg.ravel())  # nearest
    np.testing.assert_allclose(sc.apply_coords(np.array([[1.0, 1.0]])), [[2.0, 2.0]])
    assert isinstance(sc.inverse(), T.ScaleTransform) and sc.inverse().new_h == 4


def test_pad_and_crop_are_inverses():
    img = np.ones((2, 3), dtype=np.uint8)
    pad = T.PadTransform(1, 2, 3, 0, orig_w=3, orig_h=2, pad_value=7, seg_pad_value=255)
    out = pad.apply_image(img)
    assert out.shape == (4, 7) and out[0, 0] == 7 and pad.apply_segmentation(img)[0, 0] == 255
    np.testing.assert_array_equal(pad.inverse().apply_image(out), img)
    crop = T.CropTransform(1, 1, 2, 2, orig_w=5, orig_h=4)
    back = crop.inverse()
    assert isinstance(back, T.PadTransform) and back.apply_image(np.zeros((2, 2))).shape == (4, 5)


def test_fixed_size_crop_pads_small_and_crops_large_images():
    small = T.AugInput(np.zeros((4, 5, 3), np.uint8), sem_seg=np.zeros((4, 5), np.uint8))
    T.FixedSizeCrop(crop_size=(8, 8))(small)
    assert small.image.shape == (8, 8, 3) and small.image[7, 7, 0] == 128 and small.sem_seg[7, 7] == 255
    assert small.image[3, 4, 0] == 0
    large = T.AugInput(np.zeros((20, 30, 3), np.uint8))
    T.FixedSizeCrop(crop_size=(8, 8), pad=False)(large)
    assert large.image.shape == (8, 8, 3)


def test_lsj_chain_resize_scale_then_fixed_size_crop():
    np.random.seed(0)
    augs = [T.ResizeScale(min_scale=0.1, max_scale=2.0, target_height=80, target_width=80),
            T.FixedSizeCrop(crop_size=(80, 80))]
    image, tfms = T.apply_augmentations(augs, np.zeros((60, 100, 3), np.uint8))
    # detectron2's formulas, re-derived by hand from the same two draws of numpy's generator.
    np.random.seed(0)
    scale = np.random.uniform(0.1, 2.0)  # 1.1427...
    output_scale = min(80 * scale / 60, 80 * scale / 100)  # fit in scale * (80, 80)
    new_h, new_w = int(np.round(60 * output_scale)), int(np.round(100 * output_scale))
    offset_x = int(np.round(max(new_w - 80, 0) * np.random.uniform(0.0, 1.0)))
    assert (new_h, new_w, offset_x) == (55, 91, 8)
    resize, crop, pad = tfms
    assert (resize.h, resize.w, resize.new_h, resize.new_w) == (60, 100, 55, 91)
    assert (crop.x0, crop.y0, crop.w, crop.h) == (8, 0, 80, 80)
    assert (pad.x0, pad.y0, pad.x1, pad.y1) == (0, 0, 0, 25)
    assert image.shape == (80, 80, 3) and image[54, 0, 0] == 0 and image[55, 0, 0] == 128


def test_blend_and_color_transforms():
    img = np.full((2, 2, 3), 200, np.uint8)
    assert T.BlendTransform(0, 0.0, 2.0).apply_image(img).max() == 255  # clipped
    np.random.seed(0)
    out = T.RandomBrightness(0.5, 0.5).get_transform(img).apply_image(img)
    assert (out == 100).all()
    ct = T.ColorTransform(lambda x: 255 - x)
    assert (ct.apply_image(img) == 55).all()
    np.testing.assert_array_equal(ct.apply_coords(np.ones((1, 2))), np.ones((1, 2)))
    assert (T.PILColorTransform(ImageOps.invert).apply_image(img) == 55).all()
    sat = T.RandomSaturation(0.0, 0.0).get_transform(np.dstack([img[..., 0], img[..., 1] * 0, img[..., 2] * 0]))
    assert sat.src_weight == 1.0


def test_category_area_constraint_reads_sem_seg():
    np.random.seed(0)
    sem_seg = np.zeros((10, 10), np.uint8)
    sem_seg[:, 5:] = 1
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4), single_category_max_area=0.8)
    tfm = aug(T.AugInput(np.zeros((10, 10), np.uint8), sem_seg=sem_seg))
    assert isinstance(tfm, T.CropTransform) and (tfm.h, tfm.w) == (4, 4)
    assert aug.input_args == ("image", "sem_seg")


def _iou(window, boxes):
    x0 = np.maximum(window[0], boxes[:, 0])
    y0 = np.maximum(window[1], boxes[:, 1])
    x1 = np.minimum(window[2], boxes[:, 2])
    y1 = np.minimum(window[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(np.asarray(window, float)) + area(boxes) - inter)


def test_min_iou_random_crop_and_random_resize():
    random.seed(0)
    boxes = np.array([[20.0, 20.0, 80.0, 85.0], [30.0, 25.0, 85.0, 75.0]])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    aug = T.MinIoURandomCrop(min_crop_size=0.3)
    modes = []
    for _ in range(30):
        tfm = aug(T.AugInput(np.zeros((100, 100, 3), np.uint8), boxes=boxes))
        if aug.mode == 1:
            assert isinstance(tfm, T.NoOpTransform)
            continue
        assert isinstance(tfm, T.CropTransform), tfm
        modes.append(aug.mode)
        assert tfm.x0 >= 0 and tfm.y0 >= 0 and tfm.x0 + tfm.w <= 100 and tfm.y0 + tfm.h <= 100
        assert 0.5 <= tfm.h / tfm.w <= 2 + 0.1 and min(tfm.h, tfm.w) >= 30 - 1
        # The window checked is (int(left), int(top), int(left + w), int(top + h)); the transform
        # keeps int(w), int(h), so its right / bottom edge may be one pixel short of it.
        ok = []
        for dx in (0, 1):
            for dy in (0, 1):
                window = (tfm.x0, tfm.y0, tfm.x0 + tfm.w + dx, tfm.y0 + tfm.h + dy)
                inside = ((centres[:, 0] > window[0]) & (centres[:, 1] > window[1])
                          & (centres[:, 0] < window[2]) & (centres[:, 1] < window[3]))
                ok.append(_iou(window, boxes).min() >= aug.mode and inside.any())
        assert any(ok), (tfm, aug.mode, _iou((tfm.x0, tfm.y0, tfm.x0 + tfm.w, tfm.y0 + tfm.h), boxes))
    assert len(modes) >= 10 and max(modes) >= 0.5  # the draws did exercise the crop path
    np.random.seed(0)
    assert T.RandomResize([(5, 7)]).get_transform(np.zeros((3, 3))).new_w == 7


def test_random_extent_output_size():
    np.random.seed(0)
    tfm = T.RandomExtent(scale_range=(0.5, 0.5), shift_range=(0, 0)).get_transform(np.zeros((8, 12, 3), np.uint8))
    assert tfm.output_size == (4, 6) and tfm.src_rect == (3.0, 2.0, 9.0, 6.0)
    assert tfm.apply_image(np.zeros((8, 12, 3), np.uint8)).shape == (4, 6, 3)

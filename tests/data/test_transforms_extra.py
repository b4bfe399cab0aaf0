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
    augs = [T.ResizeScale(min_scale=1.0, max_scale=1.0, target_height=32, target_width=64),
            T.FixedSizeCrop(crop_size=(32, 64))]
    image, tfms = T.apply_augmentations(augs, np.zeros((16, 16, 3), np.uint8))
    assert tfms[0].new_h == 32 and tfms[0].new_w == 32  # fits 32 x 64 keeping the aspect ratio
    assert image.shape == (32, 64, 3)


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


def test_min_iou_random_crop_and_random_resize():
    random.seed(0)
    boxes = np.array([[2.0, 2.0, 8.0, 8.0]])
    aug = T.MinIoURandomCrop()
    for _ in range(5):
        tfm = aug(T.AugInput(np.zeros((20, 20, 3), np.uint8), boxes=boxes))
        assert isinstance(tfm, (T.CropTransform, T.NoOpTransform))
    np.random.seed(0)
    assert T.RandomResize([(5, 7)]).get_transform(np.zeros((3, 3))).new_w == 7


def test_random_extent_output_size():
    np.random.seed(0)
    tfm = T.RandomExtent(scale_range=(0.5, 0.5), shift_range=(0, 0)).get_transform(np.zeros((8, 12, 3), np.uint8))
    assert tfm.output_size == (4, 6) and tfm.src_rect == (3.0, 2.0, 9.0, 6.0)
    assert tfm.apply_image(np.zeros((8, 12, 3), np.uint8)).shape == (4, 6, 3)

"""Bad model inputs get an error naming the image and the key, and what was expected (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.modeling.meta_arch.preprocess import PixelNormalizer, check_batched_inputs, output_size


def _img():
    return torch.full((3, 8, 10), 100.0)


@pytest.mark.parametrize("value, where", [(float("nan"), "nan"), (float("inf"), "inf")])
def test_non_finite_pixels_are_refused(value, where):
    img = _img()
    img[1, 2, 3] = value
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\] has a non-finite value .* \(1, 2, 3\)"):
        check_batched_inputs([{"image": _img()}, {"image": img}], 3)


@pytest.mark.parametrize("value", [0, -64, 64.5, -64.0, 0.0, float("nan"), float("inf"), "64", True,
                                   np.float32(64.5), np.bool_(True), torch.tensor(64.5),
                                   torch.tensor(True), torch.tensor([64, 64]), None])
def test_impossible_output_sizes_are_refused(value):
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['height'\] must be a positive int"):
        check_batched_inputs([{"image": _img(), "height": value, "width": 10}], 3)


def test_good_inputs_pass():
    check_batched_inputs([{"image": _img(), "height": 16, "width": torch.tensor(20)},
                          {"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}], 3)


# Images the backbone cannot take: empty, wrong channel count, 2-D, channels-last, bool.
@pytest.mark.parametrize("shape, dtype, message", [
    ((3, 0, 10), torch.float32, r"\['image'\] is empty: expected a \(3, H, W\) tensor with H, W >= 1.*got shape \(3, 0, 10\)"),
    ((3, 8, 0), torch.uint8, r"\['image'\] is empty: .*got shape \(3, 8, 0\), dtype torch.uint8"),
    ((4, 8, 10), torch.float32, r"3 channels, one per value of cfg.MODEL.PIXEL_MEAN.*got shape \(4, 8, 10\)"),
    ((8, 10), torch.float32, r"got shape \(8, 10\), dtype torch.float32\. A 2-D image has no channel dimension: "
                             r"use image\[None\] .* image.expand\(3, -1, -1\)"),
    ((8, 10, 3), torch.float32, r"got shape \(8, 10, 3\).*channels-last \(H, W, C\): use image.permute\(2, 0, 1\)"),
])
def test_bad_image_shapes_name_image_shape_and_expectation(shape, dtype, message):
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\]") as info:
        check_batched_inputs([{"image": _img()}, {"image": torch.zeros(shape, dtype=dtype)}], 3)
    assert info.match(message)


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 10, dtype=torch.bool), np.zeros((3, 8, 10))])
def test_images_that_are_not_real_tensors_are_refused(bad):
    with pytest.raises(TypeError, match=r"batched_inputs\[0\]\['image'\].*expected a \(3, H, W\) tensor"):
        check_batched_inputs([{"image": bad}], 3)


class _Normalizer(PixelNormalizer, torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = type("B", (), {"size_divisibility": 0, "padding_constraints": {}})()
        self._register_pixel_stats([103.53, 116.28, 123.675], [57.375, 57.12, 58.395])


def test_float64_images_are_normalised_then_given_the_models_dtype():
    # detectron2 gives the batch its first image's dtype: float64 first failed in the backbone
    # ("expected scalar type Double but found Float"), float64 later was cast after normalising.
    m = _Normalizer()
    img = torch.randint(0, 256, (3, 8, 10), generator=torch.Generator().manual_seed(0)).double()
    alone = m.preprocess_image([{"image": img}]).tensor
    after_float32 = m.preprocess_image([{"image": img.float()}, {"image": img}]).tensor[1]
    assert alone.dtype == torch.float32
    assert torch.equal(alone[0], after_float32)  # the numbers a mixed batch gave before
    assert torch.equal(alone[0], ((img - m.pixel_mean.double()) / m.pixel_std.double()).float())
    m.double()  # a float64 model keeps float64 images as they are
    assert m.preprocess_image([{"image": img}]).tensor.dtype == torch.float64


@pytest.mark.parametrize("height", [64, 64.0, np.int64(64), np.int32(64), np.float64(64.0), np.float32(64.0),
                                    torch.tensor(64), torch.tensor([64]), torch.tensor(64.0)])
def test_integral_output_sizes_of_any_type_are_plain_ints(height):
    # COCO jsons may store "height": 480.0; load_coco_json keeps it and detectron2 takes it.
    check_batched_inputs([{"image": _img(), "height": height, "width": 96.0}], 3)
    size = output_size({"height": height, "width": 96.0}, (8, 10))
    assert size == (64, 96) and all(type(v) is int for v in size)
    assert output_size({}, (8, 10)) == (8, 10)


@pytest.mark.parametrize("name", ["faster_rcnn_fpn", "semantic", "panoptic_fpn"])
def test_models_give_integral_float_and_tensor_sizes_the_int_results(name):
    from tests.modeling.test_model_e2e import make_inputs, tiny_cfg
    from workbench.modeling import build_model

    cfg = tiny_cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = [{"image": x["image"]} for x in make_inputs(cfg)]

    def run(height, width):
        with torch.no_grad():
            return model([{**x, "height": height, "width": width} for x in images])

    want = run(64, 96)
    for height, width in [(64.0, 96.0), (torch.tensor(64), np.int64(96)), (np.float64(64.0), torch.tensor(96))]:
        got = run(height, width)
        for w, g in zip(want, got):
            assert w.keys() == g.keys()
            if "instances" in w:
                assert g["instances"].image_size == (64, 96)
                assert all(type(v) is int for v in g["instances"].image_size)
                assert torch.equal(w["instances"].pred_boxes.tensor, g["instances"].pred_boxes.tensor)
                assert torch.equal(w["instances"].scores, g["instances"].scores)
            if "sem_seg" in w:
                assert g["sem_seg"].shape[-2:] == (64, 96)
                assert torch.equal(w["sem_seg"], g["sem_seg"])
            if "panoptic_seg" in w:
                assert torch.equal(w["panoptic_seg"][0], g["panoptic_seg"][0])
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['height'\] must be a positive int .* got 64.5"):
        run(64.5, 96)

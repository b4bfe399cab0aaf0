"""read_image names the file it cannot read (not an image, truncated), refuses to clip a
16-bit image into 8 bits, applies EXIF orientation and converts CMYK as detectron2 does; an
annotation with an impossible box / polygon / RLE raises AnnotationError instead of becoming
another instance."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from workbench.data import DatasetMapper
from workbench.data import detection_utils as utils
from workbench.data import transforms as T
from workbench.structures import BoxMode


def _rgb(h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_not_an_image_names_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels")
    with pytest.raises(ValueError, match=rf"Cannot read image file '{path}': it is not an image"):
        utils.read_image(str(path), "BGR")


def test_a_truncated_jpeg_names_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match=rf"Cannot read image file '{path}': it is truncated or corrupt"):
        utils.read_image(str(path), "BGR")


def test_a_16_bit_png_is_not_clipped_to_255(tmp_path):
    arr = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    for fmt in ["BGR", "RGB", "L"]:
        with pytest.raises(ValueError, match=rf"'{path}' is a I;16 .* values in \[0, 65535\].*would clip"):
            utils.read_image(str(path), fmt)
    # format=None keeps the stored values.
    out = utils.read_image(str(path), None)
    assert out.dtype == np.uint16 and out.tolist() == arr.tolist()


def test_a_16_bit_png_within_8_bits_reads_as_today(tmp_path):
    # e.g. a label map saved as 16-bit: values <= 255 convert exactly, as before.
    arr = np.array([[0, 3, 17, 255]], dtype=np.uint16)
    path = tmp_path / "labels.png"
    Image.fromarray(arr).save(path)
    assert utils.read_image(str(path), "L")[..., 0].tolist() == arr.tolist()
    assert utils.read_image(str(path), "BGR")[..., 2].tolist() == arr.tolist()


# Orientation tag -> what the stored pixels become (detectron2's _apply_exif_orientation).
ORIENTATIONS = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _rgb(4, 7)
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / "rotated.png"
    Image.fromarray(stored).save(path, exif=exif)
    out = utils.read_image(str(path), "RGB")
    np.testing.assert_array_equal(out, ORIENTATIONS[orientation](stored))
    np.testing.assert_array_equal(utils.read_image(str(path), "BGR"), out[:, :, ::-1])


def test_cmyk_is_converted_like_detectron2(tmp_path):
    cmyk = Image.fromarray(np.random.default_rng(1).integers(0, 256, (5, 8, 4), dtype=np.uint8), "CMYK")
    path = tmp_path / "print.tif"
    cmyk.save(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(utils.read_image(str(path), "RGB"), expected)
    np.testing.assert_array_equal(utils.read_image(str(path), "BGR"), expected[:, :, ::-1])
    assert utils.read_image(str(path), None).shape == (5, 8, 4)  # the file's own mode: CMYK


def _anno(**kw):
    a = {"bbox": [2, 3, 4, 5], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}
    a.update(kw)
    return a


BAD = {
    "negative_width": (_anno(bbox=[10, 3, -4, 5]), r"negative width or height"),
    "xyxy_reversed": (_anno(bbox=[10, 3, 6, 8], bbox_mode=BoxMode.XYXY_ABS), r"x1 < x0 or y1 < y0"),
    "bbox_of_3": (_anno(bbox=[2, 3, 4]), r"is not 4 finite numbers"),
    "nan_bbox": (_anno(bbox=[2, float("nan"), 4, 5]), r"is not 4 finite numbers"),
    "odd_polygon": (_anno(segmentation=[[1, 1, 5, 1, 5, 5, 1]]), r"odd number \(7\)"),
    "rle_sum": (_anno(segmentation={"size": [20, 30], "counts": [5, 10]}), r"sum to 15, .* H x W = 600"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_transform_refuses_an_impossible_annotation(case):
    anno, problem = BAD[case]
    with pytest.raises(utils.AnnotationError, match=problem):
        utils.transform_instance_annotations(dict(anno), [T.NoOpTransform()], (20, 30))


@pytest.mark.parametrize("case", ["negative_width", "xyxy_reversed", "bbox_of_3"])
def test_annotations_to_instances_refuses_an_impossible_box(case):
    anno, problem = BAD[case]
    with pytest.raises(utils.AnnotationError, match=rf"Annotation 1 .*{problem}"):
        utils.annotations_to_instances([_anno(bbox_mode=BoxMode.XYWH_ABS), dict(anno)], (20, 30))


def test_the_mapper_names_the_image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(_rgb(20, 30)).save(path)
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    d = {"file_name": str(path), "image_id": 42, "height": 20, "width": 30,
         "annotations": [_anno(), _anno(bbox=[10, 3, -4, 5])]}
    with pytest.raises(utils.AnnotationError, match=rf"{path} \(image_id=42\): .*negative width"):
        mapper(d)
    # Zero-area boxes stay legal (filtered later, as in detectron2).
    d["annotations"] = [_anno(), _anno(bbox=[10, 3, 0, 0])]
    assert len(mapper(d)["instances"]) == 1

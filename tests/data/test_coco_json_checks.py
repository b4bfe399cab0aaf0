"""A COCO json that breaks the format raises CocoJsonError naming the file, the annotation id
and the image id; what detectron2 accepts (test sets without annotations, zero-area boxes,
crowd annotations, degenerate polygons that are dropped) still loads."""

from __future__ import annotations

import copy
import re
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from workbench.data import MetadataCatalog
from workbench.data.datasets import CocoJsonError, load_coco_json

H, W = 20, 30


@pytest.fixture(autouse=True)
def _forget_metadata():
    before = set(MetadataCatalog.list())
    yield
    for name in set(MetadataCatalog.list()) - before:
        MetadataCatalog.remove(name)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _base() -> dict:
    mask = np.zeros((H, W), np.uint8)
    mask[2:6, 3:9] = 1
    return {
        "images": [{"id": 5, "file_name": "a.png", "height": H, "width": W},
                   {"id": 6, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 4, "name": "other"}],
        "annotations": [
            {"id": 11, "image_id": 5, "category_id": 1, "iscrowd": 0, "bbox": [3, 2, 6, 4],
             "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]], "area": 24.0},
            {"id": 12, "image_id": 6, "category_id": 4, "iscrowd": 0, "bbox": [3, 2, 6, 4],
             "segmentation": _rle(mask), "area": 24.0},
            {"id": 13, "image_id": 6, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 4, 4],
             "segmentation": {"size": [H, W], "counts": [0, 4] + [16, 4] * 3 + [H * W - 16 - 48]},
             "area": 16.0},
        ],
    }


def _write(tmp_path, data, name="instances.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def test_the_valid_base_loads(tmp_path):
    dicts = load_coco_json(_write(tmp_path, _base()), str(tmp_path))
    assert [len(d["annotations"]) for d in dicts] == [1, 2]


def _set(key, value):
    def edit(data, ann_id):
        _ann(data, ann_id)[key] = value
    return edit


# (annotation id, edit, the problem the message names)
BAD_ANNOTATIONS = {
    "negative_width": (11, _set("bbox", [3, 2, -6, 4]), r"bbox \[3, 2, -6, 4\] has a negative width or height"),
    "negative_height": (12, _set("bbox", [3, 2, 6, -1]), r"negative width or height"),
    "bbox_of_3_numbers": (11, _set("bbox", [3, 2, 6]), r"bbox \[3, 2, 6\] is not 4 finite numbers"),
    "empty_bbox": (11, _set("bbox", []), r"bbox \[\] is not 4 finite numbers"),
    "bbox_of_strings": (11, _set("bbox", ["3", 2, 6, 4]), r"is not 4 finite numbers"),
    "rle_sum_too_small": (13, _set("segmentation", {"size": [H, W], "counts": [0, 4, 16]}),
                          r"RLE run lengths sum to 20, but 'size' \[20, 30\] needs H x W = 600"),
    "compressed_rle_of_other_size": (12, _set("segmentation", _rle(np.ones((H, W - 1)))),
                                     r"RLE 'size' \[20, 29\] differs from the image's"),
    "odd_polygon": (11, _set("segmentation", [[3, 2, 9, 2, 9, 6, 3]]),
                    r"odd number \(7\) of coordinates"),
    "polygon_of_strings": (11, _set("segmentation", [["3", "2", "9", "2", "9", "6"]]),
                           r"not a flat list of finite numbers"),
    "segmentation_string": (11, _set("segmentation", "mask.png"), r"segmentation is a str"),
    "keypoints_not_triples": (11, _set("keypoints", [1, 2, 2, 4]), r"not a multiple of 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
@pytest.mark.parametrize("dataset_name", [None, "named"])
def test_a_bad_annotation_names_file_annotation_and_image(tmp_path, case, dataset_name):
    ann_id, edit, problem = BAD_ANNOTATIONS[case]
    data = _base()
    edit(data, ann_id)
    path = _write(tmp_path, data)
    image_id = _ann(data, ann_id)["image_id"]
    name = None if dataset_name is None else f"coco_checks_{tmp_path.name}"
    with pytest.raises(CocoJsonError) as info:
        load_coco_json(path, str(tmp_path), name)
    msg = str(info.value)
    assert f"'{path}'" in msg and f"annotation id={ann_id} of image id={image_id}" in msg, msg
    assert re.search(problem, msg), msg


def test_annotations_of_images_not_in_images_are_dropped_with_a_warning(tmp_path, caplog):
    # A subset json made by filtering only "images": detectron2 warns and leaves them out.
    data = _base()
    _ann(data, 12)["image_id"] = 77
    data["annotations"].append({"id": 20, "image_id": 78, "category_id": 1, "iscrowd": 0,
                                "bbox": [1, 1, 2, 2], "area": 4.0})
    path = _write(tmp_path, data)
    with caplog.at_level("WARNING", logger="workbench.data.datasets.coco"):
        dicts = load_coco_json(path, str(tmp_path), f"coco_subset_{tmp_path.name}")
    assert [d["image_id"] for d in dicts] == [5, 6]
    assert [len(d["annotations"]) for d in dicts] == [1, 1]  # 12 (of image 77) and 20 are gone
    assert dicts[1]["annotations"][0]["bbox"] == [0, 0, 4, 4]  # annotation 13 kept
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "contains 4 annotations, but only 2 of them match to images" in msg, msg
    assert "annotation ids [12, 20]" in msg and "image ids [77, 78]" in msg, msg


def test_an_unknown_category_with_a_dataset_name_is_an_error(tmp_path):
    # detectron2's id map would fail later with a bare KeyError.
    data = _base()
    _ann(data, 12)["category_id"] = 9
    path = _write(tmp_path, data)
    with pytest.raises(CocoJsonError, match=rf"'{path}', annotation id=12 of image id=6: "
                       r"category_id=9 is not the id of any entry of 'categories' \(ids \[1, 4\]\)"):
        load_coco_json(path, str(tmp_path), f"coco_unknown_cat_{tmp_path.name}")


def test_an_unknown_category_without_a_dataset_name_is_kept(tmp_path, caplog):
    # detectron2 keeps category ids as they are without a dataset name.
    data = _base()
    _ann(data, 12)["category_id"] = 9
    with caplog.at_level("WARNING", logger="workbench.data.datasets.coco"):
        dicts = load_coco_json(_write(tmp_path, data), str(tmp_path))
    assert [a["category_id"] for a in dicts[1]["annotations"]] == [9, 1]
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "1 annotations have a category_id that is not in 'categories' (ids [9]" in msg, msg


def test_missing_images(tmp_path):
    data = _base()
    del data["images"]
    path = _write(tmp_path, data)
    with pytest.raises(CocoJsonError, match=rf"COCO json '{path}' has no 'images'"):
        load_coco_json(path, str(tmp_path))


def test_missing_categories(tmp_path):
    # Needed with a dataset name (thing_classes, id map); without one detectron2 loads the
    # annotations with their category ids as they are.
    data = _base()
    del data["categories"]
    path = _write(tmp_path, data)
    with pytest.raises(CocoJsonError, match=rf"COCO json '{path}' has no 'categories'"):
        load_coco_json(path, str(tmp_path), f"coco_nocats_{tmp_path.name}")
    dicts = load_coco_json(path, str(tmp_path))
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[1], [4, 1]]


def test_a_test_set_json_without_annotations_loads(tmp_path):
    # detectron2 loads image_info_test*.json (no "annotations") as images with no instances.
    data = _base()
    del data["annotations"]
    dicts = load_coco_json(_write(tmp_path, data), str(tmp_path), f"coco_test_{tmp_path.name}")
    assert [(d["image_id"], d["annotations"]) for d in dicts] == [(5, []), (6, [])]
    # Without annotations and without a dataset name, categories are not needed either.
    del data["categories"]
    assert len(load_coco_json(_write(tmp_path, data), str(tmp_path))) == 2


def test_a_name_needs_categories_even_without_annotations(tmp_path):
    data = _base()
    del data["annotations"], data["categories"]
    path = _write(tmp_path, data)
    with pytest.raises(CocoJsonError, match="has no 'categories'"):
        load_coco_json(path, str(tmp_path), f"coco_nocat_{tmp_path.name}")


def test_a_duplicate_image_id(tmp_path):
    data = _base()
    data["images"][1]["id"] = 5
    path = _write(tmp_path, data)
    with pytest.raises(CocoJsonError, match=rf"'{path}': image id=5 appears more than once"):
        load_coco_json(path, str(tmp_path))


def test_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(CocoJsonError, match=rf"COCO json '{path}' is not valid JSON"):
        load_coco_json(str(path), str(tmp_path))


def test_what_detectron2_accepts_still_loads(tmp_path):
    data = _base()
    _ann(data, 11)["bbox"] = [3, 2, 0, 0]  # zero-area box
    data["annotations"].append(  # only a degenerate polygon (2 points): dropped, as detectron2 does
        {"id": 14, "image_id": 5, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 2, 2],
         "segmentation": [[1, 1, 3, 3]], "area": 0.0})
    dicts = load_coco_json(_write(tmp_path, data), str(tmp_path))
    assert [len(d["annotations"]) for d in dicts] == [1, 2]
    assert dicts[0]["annotations"][0]["bbox"] == [3, 2, 0, 0]
    crowd = [a for a in dicts[1]["annotations"] if a.get("iscrowd")]
    assert len(crowd) == 1 and mask_util.area(crowd[0]["segmentation"]) == 16


def test_valid_loading_is_unchanged(tmp_path):
    # Same dicts as pycocotools-based detectron2 loading gives (uncompressed RLE compressed).
    data = _base()
    dicts = load_coco_json(_write(tmp_path, copy.deepcopy(data)), str(tmp_path), f"coco_same_{tmp_path.name}")
    a11 = dicts[0]["annotations"][0]
    assert a11 == {"iscrowd": 0, "bbox": [3, 2, 6, 4], "category_id": 0,
                   "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]], "bbox_mode": a11["bbox_mode"]}
    a12 = dicts[1]["annotations"][0]
    assert a12["segmentation"] == data["annotations"][1]["segmentation"] and a12["category_id"] == 1

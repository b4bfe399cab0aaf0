"""DatasetCatalog / MetadataCatalog, COCO json loading and exporting back to COCO json."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.datasets import convert_to_coco_dict, convert_to_coco_json, load_coco_json
from workbench.structures import BoxMode


def test_unknown_dataset_lists_registered_names():
    DatasetCatalog.register("cat_test_a", lambda: [{"file_name": "a"}])
    try:
        with pytest.raises(KeyError, match="not registered.*cat_test_a"):
            DatasetCatalog.get("cat_test_missing")
        assert DatasetCatalog.get("cat_test_a") == [{"file_name": "a"}]
        assert "cat_test_a" in DatasetCatalog.list()
        with pytest.raises(KeyError, match="already registered"):
            DatasetCatalog.register("cat_test_a", lambda: [])
    finally:
        DatasetCatalog.remove("cat_test_a")
    assert "cat_test_a" not in DatasetCatalog.list()


def test_metadata_is_set_once_and_reports_missing_keys():
    meta = MetadataCatalog.get("cat_test_meta")
    try:
        meta.set(thing_classes=["a", "b"])
        meta.thing_classes = ["a", "b"]  # same value: fine
        with pytest.raises(AttributeError, match="cannot be set to a different value"):
            meta.thing_classes = ["a"]
        with pytest.raises(AttributeError, match="'stuff_classes'.*Available keys"):
            meta.stuff_classes
        assert meta.get("stuff_classes", "default") == "default"
        assert MetadataCatalog.get("cat_test_meta") is meta
        assert meta.as_dict()["thing_classes"] == ["a", "b"]
    finally:
        MetadataCatalog.remove("cat_test_meta")


def test_load_coco_json(coco_dataset):
    dicts = DatasetCatalog.get(coco_dataset["name"])
    meta = MetadataCatalog.get(coco_dataset["name"])
    assert meta.thing_classes == ["square", "blob"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert [d["image_id"] for d in dicts] == [100, 101, 102, 103]
    d0 = dicts[0]
    assert (d0["height"], d0["width"]) == (40, 60)
    assert d0["file_name"].endswith("images/img0.png")
    assert len(d0["annotations"]) == 3
    square, blob, crowd = d0["annotations"]
    assert square["category_id"] == 0 and blob["category_id"] == 1 and crowd["iscrowd"] == 1
    assert square["bbox_mode"] == BoxMode.XYWH_ABS and square["bbox"] == [2, 3, 12, 10]
    # Keypoints: COCO pixel indices + 0.5; visibility untouched.
    assert square["keypoints"][:3] == [2.5, 3.5, 2]
    assert isinstance(blob["segmentation"], dict)
    assert mask_util.decode(blob["segmentation"]).sum() == coco_dataset["data"]["annotations"][1]["area"]
    # Image 1's invalid polygon (2 points) is dropped, the valid one kept.
    assert len(dicts[1]["annotations"][0]["segmentation"]) == 1


def test_uncompressed_rle_is_compressed(tmp_path):
    mask = np.zeros((6, 5), dtype=np.uint8)
    mask[1:4, 2:4] = 1
    counts = []
    flat = mask.flatten(order="F")
    run, cur = 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 5}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [2, 1, 2, 3],
                         "area": 6, "segmentation": {"size": [6, 5], "counts": counts}}],
        "categories": [{"id": 1, "name": "x"}],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    (ann,) = load_coco_json(str(path), str(tmp_path))[0]["annotations"]
    np.testing.assert_array_equal(mask_util.decode(ann["segmentation"]), mask)
    assert ann["category_id"] == 1  # no dataset name: ids kept


def test_convert_to_coco_dict_round_trip(coco_dataset, tmp_path):
    coco = convert_to_coco_dict(coco_dataset["name"])
    original = coco_dataset["data"]
    assert coco["categories"] == [{"id": 3, "name": "square"}, {"id": 7, "name": "blob"}]
    assert [im["id"] for im in coco["images"]] == [im["id"] for im in original["images"]]
    assert len(coco["annotations"]) == len(original["annotations"])
    for got, want in zip(coco["annotations"], original["annotations"]):
        assert got["image_id"] == want["image_id"]
        assert got["category_id"] == want["category_id"]
        assert got["iscrowd"] == want["iscrowd"]
        assert got["bbox"] == pytest.approx(want["bbox"])
        assert got["keypoints"] == pytest.approx(want["keypoints"])  # the 0.5 offset is removed
        assert got["num_keypoints"] == want["num_keypoints"]
        assert got["area"] == pytest.approx(want["area"])
    # The json loads back into the same dicts.
    out = tmp_path / "export" / "coco.json"
    convert_to_coco_json(coco_dataset["name"], str(out), allow_cached=False)
    again = load_coco_json(str(out), "")
    first = DatasetCatalog.get(coco_dataset["name"])
    for a, b in zip(first, again):
        assert len(a["annotations"]) == len(b["annotations"])
        for x, y in zip(a["annotations"], b["annotations"]):
            assert x["keypoints"] == pytest.approx(y["keypoints"])
            assert x["bbox"] == pytest.approx(y["bbox"])

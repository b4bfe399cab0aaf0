"""Built-in dataset names and metadata (COCO, LVIS, Cityscapes, VOC), registered on import
without touching the disk, and loaded from $DETECTRON2_DATASETS when the files are there."""

import builtins
import json
import os

import pytest

import workbench.data  # noqa: F401  (registers the built-in names)
from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.datasets import builtin
from workbench.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata


def test_coco_metadata():
    meta = MetadataCatalog.get("coco_2017_train")
    assert len(meta.thing_classes) == 80 and meta.thing_classes[0] == "person"
    assert meta.thing_dataset_id_to_contiguous_id[1] == 0
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79 and meta.thing_classes[79] == "toothbrush"
    assert meta.thing_colors[0] == [220, 20, 60]
    assert meta.evaluator_type == "coco"
    kp = MetadataCatalog.get("keypoints_coco_2017_val")
    assert len(kp.keypoint_names) == 17 and kp.keypoint_names[0] == "nose"
    assert ("left_eye", "right_eye") in kp.keypoint_flip_map and len(kp.keypoint_flip_map) == 8
    assert len(kp.keypoint_connection_rules) == 14 and kp.thing_classes == ["person"]
    pan = MetadataCatalog.get("coco_2017_val_panoptic_separated")
    assert len(pan.stuff_classes) == 54 and pan.stuff_classes[0] == "things"
    std = _get_builtin_metadata("coco_panoptic_standard")
    assert len(std["thing_classes"]) == 133 and len(std["stuff_dataset_id_to_contiguous_id"]) == 53


def test_lvis_cityscapes_voc_metadata():
    v1 = MetadataCatalog.get("lvis_v1_val")
    assert len(v1.thing_classes) == 1203 and v1.thing_classes[0] == "aerosol_can"
    assert len(v1.class_image_count) == 1203 and v1.evaluator_type == "lvis"
    assert len(MetadataCatalog.get("lvis_v0.5_val").thing_classes) == 1230
    assert len(MetadataCatalog.get("lvis_v0.5_val_cocofied").thing_classes) == 80
    city = MetadataCatalog.get("cityscapes_fine_instance_seg_val")
    assert len(city.thing_classes) == 8 and len(city.stuff_classes) == 19
    voc = MetadataCatalog.get("voc_2007_trainval")
    assert len(voc.thing_classes) == 20 and voc.thing_classes[0] == "aeroplane" and voc.year == 2007


# Every name detectron2's builtin.py registers (register_all_coco / _lvis / _cityscapes /
# _cityscapes_panoptic / _pascal_voc / _ade20k, incl. coco_panoptic.py's "_separated" and
# "_stuffonly" names), read from detectron2 main.
DETECTRON2_BUILTIN_NAMES = [
    "coco_2014_train", "coco_2014_val", "coco_2014_minival", "coco_2014_valminusminival",
    "coco_2017_train", "coco_2017_val", "coco_2017_test", "coco_2017_test-dev", "coco_2017_val_100",
    "keypoints_coco_2014_train", "keypoints_coco_2014_val", "keypoints_coco_2014_minival",
    "keypoints_coco_2014_valminusminival", "keypoints_coco_2017_train", "keypoints_coco_2017_val",
    "keypoints_coco_2017_val_100",
    "coco_2017_train_panoptic", "coco_2017_train_panoptic_separated", "coco_2017_train_panoptic_stuffonly",
    "coco_2017_val_panoptic", "coco_2017_val_panoptic_separated", "coco_2017_val_panoptic_stuffonly",
    "coco_2017_val_100_panoptic", "coco_2017_val_100_panoptic_separated", "coco_2017_val_100_panoptic_stuffonly",
    "lvis_v1_train", "lvis_v1_val", "lvis_v1_test_dev", "lvis_v1_test_challenge",
    "lvis_v0.5_train", "lvis_v0.5_val", "lvis_v0.5_val_rand_100", "lvis_v0.5_test",
    "lvis_v0.5_train_cocofied", "lvis_v0.5_val_cocofied",
    "cityscapes_fine_instance_seg_train", "cityscapes_fine_sem_seg_train",
    "cityscapes_fine_instance_seg_val", "cityscapes_fine_sem_seg_val",
    "cityscapes_fine_instance_seg_test", "cityscapes_fine_sem_seg_test",
    "cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val",
    "voc_2007_trainval", "voc_2007_train", "voc_2007_val", "voc_2007_test",
    "voc_2012_trainval", "voc_2012_train", "voc_2012_val",
    "ade20k_sem_seg_train", "ade20k_sem_seg_val",
]


def test_every_detectron2_builtin_name_is_registered():
    assert len(DETECTRON2_BUILTIN_NAMES) == len(set(DETECTRON2_BUILTIN_NAMES)) == 52
    names = set(DatasetCatalog.list())
    missing = [n for n in DETECTRON2_BUILTIN_NAMES if n not in names]
    assert not missing, missing
    for n in ["shapes_train", "shapes_val"]:
        assert n in names, n


def test_cityscapes_metadata_says_masks_are_rle_and_panoptic_metadata():
    for split in ("train", "val", "test"):
        meta = MetadataCatalog.get(f"cityscapes_fine_instance_seg_{split}")
        assert meta.mask_format == "bitmask" and meta.evaluator_type == "cityscapes_instance"
    assert "RLE" in builtin.register_all_cityscapes.__doc__ and "MASK_FORMAT bitmask" in builtin.__doc__
    pan = MetadataCatalog.get("cityscapes_fine_panoptic_val")
    assert pan.evaluator_type == "cityscapes_panoptic_seg" and pan.label_divisor == 1000 and pan.ignore_label == 255
    assert len(pan.thing_classes) == len(pan.stuff_classes) == 19
    assert pan.thing_dataset_id_to_contiguous_id == {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert pan.stuff_dataset_id_to_contiguous_id[7] == 0 and len(pan.stuff_dataset_id_to_contiguous_id) == 11
    assert pan.gt_dir.endswith(os.path.join("gtFine", "val"))
    assert pan.panoptic_json.endswith("cityscapes_panoptic_val.json")


def test_registration_does_not_touch_disk(empty_catalogs, monkeypatch, tmp_path):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"registration touched the disk: {args}")

    for mod, name in [(builtins, "open"), (os, "stat"), (os, "listdir"), (os, "scandir"), (os.path, "exists"),
                      (os.path, "isfile"), (os.path, "isdir")]:
        monkeypatch.setattr(mod, name, forbidden)
    builtin.register_all(str(tmp_path / "nowhere"))
    monkeypatch.undo()
    assert "coco_2017_val" in DatasetCatalog.list()


def test_missing_file_error_names_path_and_env_variable(empty_catalogs, tmp_path):
    builtin.register_all(str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("coco_2017_val")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "coco/annotations/instances_val2017.json") in msg
    assert "DETECTRON2_DATASETS" in msg
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        DatasetCatalog.get("voc_2007_test")


def test_loads_files_under_the_root(empty_catalogs, tmp_path):
    # COCO: one image, one box of category 90 (toothbrush -> 79).
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    coco = {"images": [{"id": 5, "file_name": "a.jpg", "height": 4, "width": 6}],
            "annotations": [{"id": 1, "image_id": 5, "bbox": [0, 0, 2, 2], "category_id": 90, "iscrowd": 0,
                             "area": 4, "segmentation": [[0, 0, 2, 0, 2, 2]]}],
            # The json's category names must agree with the built-in metadata (they are checked).
            "categories": [{"id": k["id"], "name": k["name"]} for k in COCO_CATEGORIES if k["isthing"]]}
    (tmp_path / "coco" / "annotations" / "instances_val2017_100.json").write_text(json.dumps(coco))
    # LVIS: same image found through its coco_url.
    (tmp_path / "lvis").mkdir()
    lvis = {"images": [{"id": 5, "coco_url": "http://x/val2017/a.jpg", "height": 4, "width": 6,
                        "neg_category_ids": [3]}],
            "annotations": [{"id": 1, "image_id": 5, "bbox": [0, 0, 2, 2], "category_id": 3,
                             "segmentation": [[0, 0, 2, 0, 2, 2]]}], "categories": []}
    (tmp_path / "lvis" / "lvis_v1_val.json").write_text(json.dumps(lvis))
    # VOC: one image, one object.
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (voc / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>6</width><height>4</height></size><object><name>dog</name>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>4</ymax></bndbox></object></annotation>")
    builtin.register_all(str(tmp_path))

    (d,) = DatasetCatalog.get("coco_2017_val_100")
    assert d["file_name"] == os.path.join(str(tmp_path), "coco/val2017", "a.jpg")
    assert d["annotations"][0]["category_id"] == 79
    (d,) = DatasetCatalog.get("lvis_v1_val")
    assert d["file_name"] == os.path.join(str(tmp_path), "coco", "val2017", "a.jpg")
    assert d["annotations"][0]["category_id"] == 2 and d["neg_category_ids"] == [3]
    (d,) = DatasetCatalog.get("voc_2007_test")
    assert d["image_id"] == "000001" and (d["height"], d["width"]) == (4, 6)
    assert d["annotations"][0]["category_id"] == 11 and d["annotations"][0]["bbox"] == [0.0, 1.0, 5.0, 4.0]

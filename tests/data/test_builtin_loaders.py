"""Built-in loaders on tiny files: Cityscapes instances (RLE, so MASK_FORMAT polygon fails with
a hint) and panoptic, and the errors of malformed LVIS jsons and VOC xmls."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import workbench.data  # noqa: F401  (registers the built-in names)
from workbench.data import DatasetCatalog, DatasetMapper
from workbench.data import transforms as T
from workbench.data.datasets import builtin, load_voc_instances
from workbench.data.datasets.cityscapes import load_cityscapes_instances
from workbench.data.datasets.cityscapes_panoptic import get_cityscapes_panoptic_meta, load_cityscapes_panoptic
from workbench.data.datasets.lvis import load_lvis_json


def _cityscapes_image(root, split="val", city="aachen", base="aachen_000000_000019"):
    image_dir = root / "cityscapes" / "leftImg8bit" / split / city
    image_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(image_dir / f"{base}_leftImg8bit.png")
    gt = root / "cityscapes" / "gtFine" / split / city
    gt.mkdir(parents=True)
    return gt, base


def test_cityscapes_instances_are_rle_and_polygon_format_says_use_bitmask(tmp_path):
    gt, base = _cityscapes_image(tmp_path)
    inst = np.zeros((6, 8), np.uint16)
    inst[1:4, 2:6] = 26001  # car #1
    inst[4:6, 0:3] = 24  # a person group region (crowd)
    Image.fromarray(inst).save(gt / f"{base}_gtFine_instanceIds.png")
    for suffix in ("labelIds.png", "polygons.json"):
        (gt / f"{base}_gtFine_{suffix}").write_text("")
    city = tmp_path / "cityscapes"
    (d,) = load_cityscapes_instances(str(city / "leftImg8bit/val"), str(city / "gtFine/val"))
    assert [(a["category_id"], a["iscrowd"], a["bbox"]) for a in d["annotations"]] == [(0, True, (0, 4, 2, 5)),
                                                                                      (2, False, (2, 1, 5, 3))]
    assert all(isinstance(a["segmentation"], dict) for a in d["annotations"])  # RLE
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(6, 100)], image_format="RGB",
                           use_instance_mask=True, instance_mask_format="polygon")
    with pytest.raises(ValueError, match="set INPUT.MASK_FORMAT bitmask"):
        mapper(dict(d))
    mapper.instance_mask_format = "bitmask"
    assert mapper(dict(d))["instances"].gt_masks.tensor.sum() == 12


def _write_panoptic(tmp_path, segments_info):
    gt, base = _cityscapes_image(tmp_path)
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(gt / f"{base}_gtFine_labelTrainIds.png")
    pan_dir = tmp_path / "cityscapes" / "gtFine" / "cityscapes_panoptic_val"
    pan_dir.mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(pan_dir / f"{base}_gtFine_panoptic.png")
    ann = {"image_id": base, "file_name": f"{base}_gtFine_panoptic.png", "segments_info": segments_info}
    (tmp_path / "cityscapes" / "gtFine" / "cityscapes_panoptic_val.json").write_text(
        json.dumps({"annotations": [ann], "categories": []}))
    return base


def test_cityscapes_panoptic_loads_through_the_builtin_name(tmp_path, empty_catalogs):
    base = _write_panoptic(tmp_path, [{"id": 7, "category_id": 7, "iscrowd": 0},
                                      {"id": 26001, "category_id": 26, "iscrowd": 0}])
    builtin.register_all_cityscapes_panoptic(str(tmp_path))
    (d,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    city = tmp_path / "cityscapes"
    assert d["file_name"] == str(city / "leftImg8bit/val/aachen" / f"{base}_leftImg8bit.png")
    assert d["image_id"] == base
    assert d["sem_seg_file_name"] == str(city / "gtFine/val/aachen" / f"{base}_gtFine_labelTrainIds.png")
    assert d["pan_seg_file_name"] == str(city / "gtFine/cityscapes_panoptic_val" / f"{base}_gtFine_panoptic.png")
    # road (id 7) -> train id 0 (stuff); car (id 26) -> train id 13 (thing).
    assert [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]] == [(7, 0, False),
                                                                                     (26001, 13, True)]


def test_cityscapes_panoptic_errors_name_the_file(tmp_path):
    _write_panoptic(tmp_path, [{"id": 1, "category_id": 3, "iscrowd": 0}])
    city = tmp_path / "cityscapes"
    args = (str(city / "leftImg8bit/val"), str(city / "gtFine/cityscapes_panoptic_val"))
    gt_json = str(city / "gtFine/cityscapes_panoptic_val.json")
    with pytest.raises(ValueError, match=r"cityscapes_panoptic_val.json: segment 1 .* category_id 3"):
        load_cityscapes_panoptic(*args, gt_json, get_cityscapes_panoptic_meta())
    with pytest.raises(FileNotFoundError, match="createPanopticImgs"):
        load_cityscapes_panoptic(*args, str(city / "missing.json"), get_cityscapes_panoptic_meta())
    (city / "gtFine/cityscapes_panoptic_val.json").write_text(json.dumps(
        {"annotations": [{"image_id": "nowhere_1_2", "file_name": "x.png", "segments_info": []}]}))
    with pytest.raises(FileNotFoundError, match=r"no image 'nowhere_1_2_leftImg8bit.png'"):
        load_cityscapes_panoptic(*args, gt_json, get_cityscapes_panoptic_meta())


def test_lvis_image_without_coco_url_names_json_and_image(tmp_path):
    lvis = {"images": [{"id": 5, "coco_url": "http://x/val2017/a.jpg", "height": 4, "width": 6},
                       {"id": 9, "file_name": "b.jpg", "height": 4, "width": 6}],
            "annotations": [], "categories": []}
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(lvis))
    with pytest.raises(ValueError, match=r"Image 9 in '.*lvis.json' has no 'coco_url' key"):
        load_lvis_json(str(path), str(tmp_path))
    lvis["images"].pop()
    lvis["annotations"] = [{"id": 1, "image_id": 5, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2]]}]
    path.write_text(json.dumps(lvis))
    with pytest.raises(ValueError, match=r"Annotation 1 of image 5 in '.*lvis.json' has no 'category_id' key"):
        load_lvis_json(str(path), str(tmp_path))


@pytest.mark.parametrize("xml, missing", [
    ("<annotation><object><name>dog</name></object></annotation>", "size/height"),
    ("<annotation><size><height>4</height></size></annotation>", "size/width"),
    ("<annotation><size><width>6</width><height>4</height></size><object><name>dog</name>"
     "<bndbox><xmin>1</xmin></bndbox></object></annotation>", "bndbox/ymin"),
])
def test_voc_xml_without_size_or_box_names_xml_and_image(tmp_path, xml, missing):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("000042\n")
    (tmp_path / "Annotations" / "000042.xml").write_text(xml)
    with pytest.raises(ValueError) as e:
        load_voc_instances(str(tmp_path), "test", ["dog"])
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "Annotations", "000042.xml") in msg and "'000042'" in msg
    assert f"<{missing}>" in msg

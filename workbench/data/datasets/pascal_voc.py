"""Pascal VOC detection: reading ``Annotations/*.xml`` of a VOC year folder into dataset dicts."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Sequence

from workbench.structures import BoxMode

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = ["load_voc_instances", "register_pascal_voc", "CLASS_NAMES"]

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _xml_text(node: ET.Element, path: str, anno_file: str, fileid: str) -> str:
    """Text of ``node.find(path)``; a missing or empty element is an error naming the xml file."""
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise ValueError(f"VOC annotation {anno_file} (image id {fileid!r}) has no <{path}> "
                         f"{'under <' + node.tag + '>' if node.tag != 'annotation' else ''}; expected VOC's "
                         "<size><width/><height/></size> and <object><name/><bndbox>xmin..ymax</bndbox></object>.")
    return found.text.strip()


def _xml_number(node: ET.Element, path: str, anno_file: str, fileid: str, kind: type) -> float:
    text = _xml_text(node, path, anno_file, fileid)
    try:
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise ValueError(f"VOC annotation {anno_file} (image id {fileid!r}): <{path}> is {text!r}, "
                         "expected a number.") from None


def load_voc_instances(dirname: str, split: str, class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """Reads the VOC images listed in ``ImageSets/Main/<split>.txt``.

    Args:
        dirname: A VOC year folder with "Annotations", "ImageSets" and "JPEGImages".
        split: "train", "val", "trainval" or "test".
        class_names: Class names; ``category_id`` is the index of the object's name here.

    Returns:
        One dict per image (in the split file's order) with XYXY_ABS boxes. VOC boxes are
        1-based inclusive pixel indices; as detectron2 does, 1 is subtracted from xmin and ymin
        only, which turns them into continuous coordinates.
    """
    split_file = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    with open(split_file) as f:
        fileids = [line.strip() for line in f if line.strip()]
    class_names = list(class_names)
    dicts = []
    for fileid in fileids:
        anno_file = os.path.join(dirname, "Annotations", fileid + ".xml")
        try:
            tree = ET.parse(anno_file)
        except ET.ParseError as e:
            raise ValueError(f"VOC annotation {anno_file} (image id {fileid!r}) is not valid XML: {e}") from None
        root = tree.getroot()
        record: Dict[str, Any] = {
            "file_name": os.path.join(dirname, "JPEGImages", fileid + ".jpg"),
            "image_id": fileid,
            "height": _xml_number(root, "size/height", anno_file, fileid, int),
            "width": _xml_number(root, "size/width", anno_file, fileid, int),
        }
        instances = []
        for obj in root.findall("object"):
            cls = _xml_text(obj, "name", anno_file, fileid)
            if cls not in class_names:
                raise KeyError(f"Unknown class {cls!r} in {anno_file}; known classes: {class_names}.")
            bbox = [_xml_number(obj, "bndbox/" + k, anno_file, fileid, float) for k in ("xmin", "ymin", "xmax", "ymax")]
            bbox[0] -= 1.0
            bbox[1] -= 1.0
            instances.append({"category_id": class_names.index(cls), "bbox": bbox, "bbox_mode": BoxMode.XYXY_ABS})
        record["annotations"] = instances
        dicts.append(record)
    return dicts


def register_pascal_voc(name: str, dirname: str, split: str, year: int,
                        class_names: Sequence[str] = CLASS_NAMES) -> None:
    """Registers a VOC split under ``name``; metadata: ``thing_classes``, ``dirname``, ``year``,
    ``split``."""
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
    MetadataCatalog.get(name).set(thing_classes=list(class_names), dirname=dirname, year=year, split=split)

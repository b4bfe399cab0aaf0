"""Hand-built COCO datasets and predictions shared by the analysis tests."""

from __future__ import annotations

import json
from typing import Iterable, Sequence, Tuple

import torch

from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.datasets import register_coco_instances
from workbench.structures import Boxes, Instances

H, W = 60, 80
CATEGORIES = [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]


def write_dataset(tmp_path, gt: Iterable[Tuple], image_ids: Sequence[int], prefix: str, *,
                  load: bool = True, masks: bool = True) -> str:
    """Register a COCO json of ``gt`` rows (annotation id, image id, category id, XYXY, iscrowd)
    under a fresh name; ``load`` fills the metadata's id mapping, as a training run would.
    Remove it with :func:`remove_dataset`."""
    anns = []
    for a, i, c, (x0, y0, x1, y1), crowd in gt:
        ann = {"id": a, "image_id": i, "category_id": c, "iscrowd": crowd,
               "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0))}
        if masks:
            ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        anns.append(ann)
    data = {"images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in image_ids],
            "annotations": anns, "categories": CATEGORIES}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    name = f"{prefix}_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    if load:
        DatasetCatalog.get(name)
    return name


def remove_dataset(name: str) -> None:
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def instances(entries) -> Instances:
    """[(XYXY box, score, contiguous class)] -> predicted Instances at (H, W)."""
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([e[0] for e in entries], dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor([e[1] for e in entries], dtype=torch.float32)
    inst.pred_classes = torch.tensor([e[2] for e in entries], dtype=torch.int64)
    return inst

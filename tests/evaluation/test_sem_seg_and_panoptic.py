"""SemSegEvaluator (mIoU) and COCOPanopticEvaluator (PQ) on hand-made maps with results
computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.datasets.coco_panoptic import id2rgb, rgb2id
from workbench.evaluation import COCOPanopticEvaluator, SemSegEvaluator, pq_compute_single_image


@pytest.fixture
def register(tmp_path):
    names = []

    def _register(name, dicts, **meta):
        name = f"{name}_{tmp_path.name}"
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(**meta)
        names.append(name)
        return name

    yield _register
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def _logits(pred, k):
    """(H, W) class ids -> (K, H, W) scores whose argmax is ``pred``."""
    return torch.nn.functional.one_hot(torch.as_tensor(pred), k).permute(2, 0, 1).float()


def test_sem_seg_miou_by_hand(tmp_path, register):
    gt1 = np.array([[0, 0, 1, 1], [0, 255, 1, 2]], dtype=np.uint8)
    pred1 = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    gt2 = np.zeros((2, 2), dtype=np.uint8)
    pred2 = np.zeros((2, 2), dtype=np.int64)
    for i, gt in enumerate((gt1, gt2)):
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
    dicts = [{"file_name": f"img{i}.png", "sem_seg_file_name": str(tmp_path / f"gt{i}.png")} for i in range(2)]
    name = register("semseg", dicts, stuff_classes=["a", "b", "c"], ignore_label=255)
    ev = SemSegEvaluator(name, distributed=False)
    ev.reset()
    ev.process([{"file_name": "img0.png"}], [{"sem_seg": _logits(pred1, 3)}])
    ev.process([{"file_name": "img1.png"}], [{"sem_seg": _logits(pred2, 3)}])
    res = ev.evaluate()["sem_seg"]
    # Without the ignored pixel: tp = [6, 2, 1], gt pixels = [7, 3, 1], predicted = [6, 3, 2].
    iou = [6 / 7, 2 / 4, 1 / 2]
    assert res["IoU-a"] == pytest.approx(100 * iou[0]) and res["IoU-b"] == pytest.approx(50.0)
    assert res["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    assert res["fwIoU"] == pytest.approx(100 * (iou[0] * 7 + iou[1] * 3 + iou[2] * 1) / 11)
    assert res["pACC"] == pytest.approx(100 * 9 / 11)
    assert res["mACC"] == pytest.approx(100 * (6 / 7 + 2 / 3 + 1) / 3)
    assert res["ACC-c"] == pytest.approx(100.0)


def test_sem_seg_absent_class_is_nan_and_shape_check(tmp_path, register):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "gt.png")
    name = register("semseg2", [{"file_name": "x", "sem_seg_file_name": str(tmp_path / "gt.png")}],
                    stuff_classes=["a", "b"])
    ev = SemSegEvaluator(name, distributed=False)
    ev.process([{"file_name": "x"}], [{"sem_seg": _logits(np.array([[0, 0], [0, 1]]), 2)}])
    res = ev.evaluate()["sem_seg"]
    assert math.isnan(res["IoU-b"])
    # detectron2's convention: a class only predicted still counts in the mIoU denominator.
    assert res["mIoU"] == pytest.approx(100 * (3 / 4) / 2)
    ev.reset()
    with pytest.raises(ValueError, match="does not match"):
        ev.process([{"file_name": "x"}], [{"sem_seg": torch.zeros(2, 3, 3)}])


# ---------------------------------------------------------------------------------- panoptic
def _panoptic_maps():
    """10 x 10 ground truth and prediction; see test_panoptic_quality_by_hand."""
    gt = np.zeros((10, 10), dtype=np.int64)  # 0 = void
    gt[0:3, :] = 3  # sky, 30 px
    gt[3:7, 0:4] = 1  # person A, 16 px
    gt[3:7, 5:7] = 2  # person B, 8 px
    gt[7:10, 0:5] = 4  # crowd of cars, 15 px
    gt_segments = [
        {"id": 1, "category_id": 0, "isthing": True, "iscrowd": 0},
        {"id": 2, "category_id": 0, "isthing": True, "iscrowd": 0},
        {"id": 3, "category_id": 1, "isthing": False, "iscrowd": 0},
        {"id": 4, "category_id": 1, "isthing": True, "iscrowd": 1},
    ]
    pred = np.zeros((10, 10), dtype=np.int32)
    pred[0:3, :] = 10
    pred[3, 7:10] = 10  # sky spilling onto void: left out of the union
    pred[3:7, 0:3] = 11  # person, IoU 12 / 16 with A
    pred[3:7, 6:8] = 12  # person, half on B, half on void: IoU 4 / 8 = 0.5, not a match
    pred[8:10, 0:3] = 13  # car inside the crowd region: ignored
    pred[7:10, 7:10] = 14  # grass on void: ignored
    pred_segments = [
        {"id": 10, "category_id": 1, "isthing": False},
        {"id": 11, "category_id": 0, "isthing": True},
        {"id": 12, "category_id": 0, "isthing": True},
        {"id": 13, "category_id": 1, "isthing": True},
        {"id": 14, "category_id": 2, "isthing": False},
    ]
    return gt, gt_segments, pred, pred_segments


PANOPTIC_META = dict(thing_classes=["person", "car"], stuff_classes=["things", "sky", "grass"])


def _panoptic_dataset(tmp_path, register, gt, gt_segments, name="pan"):
    Image.fromarray(id2rgb(gt)).save(tmp_path / f"{name}.png")
    dicts = [{"file_name": "img.jpg", "image_id": 5, "pan_seg_file_name": str(tmp_path / f"{name}.png"),
              "segments_info": gt_segments}]
    return register(name, dicts, **PANOPTIC_META)


def test_panoptic_quality_by_hand(tmp_path, register):
    gt, gt_segments, pred, pred_segments = _panoptic_maps()
    name = _panoptic_dataset(tmp_path, register, gt, gt_segments)
    ev = COCOPanopticEvaluator(name, output_dir=str(tmp_path / "out"))
    ev.reset()
    ev.process([{"image_id": 5, "file_name": "img.jpg"}], [{"panoptic_seg": (torch.from_numpy(pred), pred_segments)}])
    res = ev.evaluate()["panoptic_seg"]
    # person: TP 1 (IoU 0.75), FP 1 (segment 12), FN 1 (B) -> PQ 0.75 / 2, SQ 0.75, RQ 0.5
    # sky: TP 1 with IoU 30 / 30 (the 3 px on void leave the union) -> 1, 1, 1
    # car: only a crowd region and a prediction inside it -> not counted; grass on void -> not counted
    assert res["PQ_th"] == pytest.approx(37.5) and res["SQ_th"] == pytest.approx(75.0)
    assert res["RQ_th"] == pytest.approx(50.0)
    assert (res["PQ_st"], res["SQ_st"], res["RQ_st"]) == pytest.approx((100.0, 100.0, 100.0))
    assert res["PQ"] == pytest.approx((37.5 + 100) / 2)
    assert res["SQ"] == pytest.approx((75 + 100) / 2) and res["RQ"] == pytest.approx((50 + 100) / 2)
    per_cat = json.loads((tmp_path / "out" / "panoptic_results.json").read_text())["per_category"]
    assert per_cat["thing:person"]["pq"] == pytest.approx(0.375)


def test_perfect_panoptic_prediction_and_label_divisor_format(tmp_path, register):
    gt, gt_segments, _, _ = _panoptic_maps()
    name = _panoptic_dataset(tmp_path, register, gt, gt_segments)
    pred = np.where(gt == 4, 0, gt).astype(np.int32)  # the crowd region left unpredicted
    segs = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in gt_segments if not s["iscrowd"]]
    ev = COCOPanopticEvaluator(name)
    ev.process([{"image_id": 5}], [{"panoptic_seg": (torch.from_numpy(pred), segs)}])
    res = ev.evaluate()["panoptic_seg"]
    assert (res["PQ"], res["PQ_th"], res["PQ_st"]) == pytest.approx((100.0, 100.0, 100.0))

    # ids = category * label_divisor + instance, -1 = void; a class is a thing if it is among
    # the contiguous thing ids.
    gt[gt == 4] = 0
    name2 = _panoptic_dataset(tmp_path, register, gt, gt_segments[:3], name="pan_div")
    MetadataCatalog.get(name2).set(label_divisor=1000, thing_dataset_id_to_contiguous_id={1: 0},
                                   stuff_dataset_id_to_contiguous_id={0: 0, 100: 1, 101: 2})
    ids = np.full(gt.shape, -1, dtype=np.int64)
    ids[gt == 1] = 0 * 1000 + 1
    ids[gt == 2] = 0 * 1000 + 2
    ids[gt == 3] = 1 * 1000
    ev = COCOPanopticEvaluator(name2)
    ev.process([{"image_id": 5}], [{"panoptic_seg": (ids, None)}])
    assert ev.evaluate()["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_panoptic_json_ground_truth_with_dataset_ids(tmp_path, register):
    gt, gt_segments, pred, pred_segments = _panoptic_maps()
    Image.fromarray(id2rgb(gt)).save(tmp_path / "0005.png")
    to_dataset = {(True, 0): 1, (True, 1): 3, (False, 1): 100, (False, 2): 101}
    json_segments = [{"id": s["id"], "category_id": to_dataset[(s["isthing"], s["category_id"])],
                      "iscrowd": s["iscrowd"]} for s in gt_segments]
    (tmp_path / "panoptic.json").write_text(json.dumps({
        "annotations": [{"image_id": 5, "file_name": "0005.png", "segments_info": json_segments}]}))
    name = register("panjson", [], panoptic_json=str(tmp_path / "panoptic.json"), panoptic_root=str(tmp_path),
                    thing_dataset_id_to_contiguous_id={1: 0, 3: 1},
                    stuff_dataset_id_to_contiguous_id={0: 0, 100: 1, 101: 2}, **PANOPTIC_META)
    ev = COCOPanopticEvaluator(name)
    ev.process([{"image_id": 5}], [{"panoptic_seg": (torch.from_numpy(pred), pred_segments)}])
    assert ev.evaluate()["panoptic_seg"]["PQ"] == pytest.approx((37.5 + 100) / 2)


def test_pq_input_checks():
    gt, gt_segments, pred, pred_segments = _panoptic_maps()
    gt_segs = [dict(s, category_id=(s["isthing"], s["category_id"])) for s in gt_segments]
    pred_segs = [dict(s, category_id=(s["isthing"], s["category_id"])) for s in pred_segments]
    with pytest.raises(KeyError, match="not in its segments_info"):
        pq_compute_single_image(gt, gt_segs, pred, pred_segs[:-1])
    with pytest.raises(KeyError, match="not in the predicted map"):
        pq_compute_single_image(gt, gt_segs, pred, pred_segs + [{"id": 99, "category_id": (True, 0)}])
    with pytest.raises(ValueError, match="does not match"):
        pq_compute_single_image(gt, gt_segs, pred[:5], pred_segs)
    assert rgb2id(id2rgb(np.array([[0, 70000]])))[0, 1] == 70000

"""COCOEvaluator against hand-made predictions with AP known by hand, and against pycocotools
called directly."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.data import DatasetCatalog, MetadataCatalog
from workbench.data.datasets import register_coco_instances
from workbench.evaluation import COCOEvaluator, instances_to_coco_json
from workbench.structures import Boxes, Instances, polygons_to_bitmask

H, W = 60, 80
SIGMAS = [0.5, 0.8, 1.0]  # 3 keypoints with their own OKS sigmas


def _box_poly(x0, y0, x1, y1):
    return [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


# (image id, category id in the json, XYXY box, keypoints as COCO pixel indices)
GT = [
    (1, 5, (10, 10, 30, 30), [12, 12, 2, 20, 20, 2, 28, 28, 2]),
    (1, 5, (40, 20, 70, 50), [45, 25, 2, 55, 35, 2, 65, 45, 1]),
    (2, 9, (5, 5, 25, 45), [10, 10, 2, 15, 25, 2, 20, 40, 2]),
]


@pytest.fixture
def gt_dataset(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2)]
    anns = []
    for k, (img, cat, (x0, y0, x1, y1), kp) in enumerate(GT):
        anns.append({"id": k + 1, "image_id": img, "category_id": cat, "iscrowd": 0,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                     "segmentation": [_box_poly(x0, y0, x1, y1)], "keypoints": kp,
                     "num_keypoints": sum(v > 0 for v in kp[2::3])})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 5, "name": "cat_a"}, {"id": 9, "name": "cat_b"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    name = f"coco_eval_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    DatasetCatalog.get(name)  # fills thing_classes / the id mapping, as a training run would
    yield name, str(path)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(entries, with_masks=False, keypoints=None):
    """entries: [(XYXY box, score, contiguous class)] -> Instances at (H, W)."""
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([e[0] for e in entries], dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor([e[1] for e in entries], dtype=torch.float32)
    inst.pred_classes = torch.tensor([e[2] for e in entries], dtype=torch.int64)
    if with_masks:
        inst.pred_masks = torch.stack([
            torch.from_numpy(polygons_to_bitmask([np.array(_box_poly(*e[0]))], H, W)) for e in entries])
    if keypoints is not None:
        inst.pred_keypoints = torch.tensor(keypoints, dtype=torch.float32)
    return inst


def _perfect_keypoints(image_id):
    # Dataset / model coordinates are COCO pixel indices + 0.5; score in the third column.
    out = []
    for img, _, _, kp in GT:
        if img == image_id:
            k = np.array(kp, dtype=np.float32).reshape(-1, 3)
            k[:, :2] += 0.5
            k[:, 2] = 1.0
            out.append(k.tolist())
    return out


def _evaluate(name, per_image_entries, tmp_path, **kwargs):
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"), **kwargs)
    evaluator.reset()
    for image_id, inst in per_image_entries.items():
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()


def test_perfect_predictions_give_ap_100(gt_dataset, tmp_path):
    name, _ = gt_dataset
    preds = {
        1: _instances([(GT[0][2], 0.9, 0), (GT[1][2], 0.8, 0)], with_masks=True, keypoints=_perfect_keypoints(1)),
        2: _instances([(GT[2][2], 0.7, 1)], with_masks=True, keypoints=_perfect_keypoints(2)),
    }
    res = _evaluate(name, preds, tmp_path, kpt_oks_sigmas=SIGMAS)
    assert set(res) == {"bbox", "segm", "keypoints"}
    for task in ("bbox", "segm", "keypoints"):
        assert res[task]["AP"] == pytest.approx(100.0), (task, res[task])
        assert res[task]["AP50"] == pytest.approx(100.0)
    assert res["bbox"]["AP-cat_a"] == pytest.approx(100.0) and res["bbox"]["AP-cat_b"] == pytest.approx(100.0)
    assert math.isnan(res["bbox"]["APl"])  # no large objects (area > 96^2) in the ground truth
    # Results are written with the dataset's category ids.
    written = json.loads((tmp_path / "eval" / "coco_instances_results.json").read_text())
    assert sorted({r["category_id"] for r in written}) == [5, 9]


def test_shifted_box_ap_by_hand(gt_dataset, tmp_path):
    name, _ = gt_dataset
    # Only image 2 is evaluated; its 20 x 40 box shifted right by 5 px:
    # IoU = (15 * 40) / (800 + 800 - 600) = 0.6, so it matches at IoU thresholds 0.50, 0.55, 0.60
    # (>= 0.6 counts) and not at 0.65 ... 0.95: AP = 3 / 10.
    x0, y0, x1, y1 = GT[2][2]
    preds = {2: _instances([((x0 + 5, y0, x1 + 5, y1), 0.9, 1)])}
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"), tasks=("bbox",))
    evaluator.process([{"image_id": 2}], [{"instances": preds[2]}])
    res = evaluator.evaluate(img_ids=[2])["bbox"]
    assert res["AP"] == pytest.approx(30.0)
    assert res["AP50"] == pytest.approx(100.0) and res["AP75"] == pytest.approx(0.0)


def test_false_positive_ranked_first_ap_by_hand(gt_dataset, tmp_path):
    name, _ = gt_dataset
    # Image 1, class a: 2 gt boxes; a false positive (score 0.95) ranked above a perfect match
    # (0.9). Precision at recall 0.5 is 1/2 and recall never exceeds 0.5, so the interpolated
    # precision is 0.5 at the 51 recall points 0, 0.01, ..., 0.50 and 0 at the other 50:
    # AP = 0.5 * 51 / 101 at every IoU threshold.
    preds = {1: _instances([((0, 40, 8, 58), 0.95, 0), (GT[0][2], 0.9, 0)])}
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"), tasks=("bbox",))
    evaluator.process([{"image_id": 1}], [{"instances": preds[1]}])
    res = evaluator.evaluate(img_ids=[1])["bbox"]
    assert res["AP"] == pytest.approx(100 * 0.5 * 51 / 101)


def test_matches_pycocotools_directly(gt_dataset, tmp_path):
    name, json_path = gt_dataset
    rng = np.random.RandomState(0)
    preds = {}
    for image_id in (1, 2):
        entries = []
        for img, cat, (x0, y0, x1, y1), _ in GT:
            if img == image_id:
                jitter = rng.uniform(-4, 4, size=4)
                entries.append(((x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3]),
                                float(rng.uniform(0.3, 1)), 0 if cat == 5 else 1))
        entries.append(((30, 5, 50, 20), 0.5, 1))  # a false positive
        preds[image_id] = _instances(entries)
    res = _evaluate(name, preds, tmp_path, tasks=("bbox",))["bbox"]

    coco_results = []
    for image_id, inst in preds.items():
        for r in instances_to_coco_json(inst, image_id):
            r["category_id"] = {0: 5, 1: 9}[r["category_id"]]
            coco_results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_path)
        ev = COCOeval(gt, gt.loadRes(coco_results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for i, key in enumerate(["AP", "AP50", "AP75", "APs", "APm"]):
        expected = ev.stats[i] * 100 if ev.stats[i] >= 0 else float("nan")
        assert res[key] == pytest.approx(expected, nan_ok=True), key
    assert 0 < res["AP"] < 100


def _oks(pred_xy, gt_kp, area, sigmas):
    """pycocotools' OKS, written out: mean over labelled keypoints of exp(-d^2 / (2 s^2 k^2))
    with s^2 = area and k = 2 sigma."""
    g = np.array(gt_kp, dtype=float).reshape(-1, 3)
    d2 = ((np.array(pred_xy) - g[:, :2]) ** 2).sum(1)
    k2 = (2 * np.array(sigmas)) ** 2
    e = d2 / k2 / (area + np.spacing(1)) / 2
    return float(np.mean(np.exp(-e)[g[:, 2] > 0]))


def test_keypoint_ap_uses_the_given_sigmas(gt_dataset, tmp_path):
    name, _ = gt_dataset
    # Image 2's one instance (area 800); every keypoint off by (3, 4) px.
    kp = np.array(_perfect_keypoints(2)[0])
    kp[:, 0] += 3
    kp[:, 1] += 4
    aps = []
    for sigmas in (SIGMAS, [0.1, 0.1, 0.1], [0.05, 0.1, 0.2]):
        oks = _oks(kp[:, :2] - 0.5, GT[2][3], 800.0, sigmas)
        expected_ap = 100 * sum(t <= oks + 1e-12 for t in np.linspace(0.5, 0.95, 10)) / 10
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"), tasks=("keypoints",),
                                  kpt_oks_sigmas=sigmas)
        evaluator.process([{"image_id": 2}], [{"instances": _instances([(GT[2][2], 0.9, 1)], keypoints=[kp.tolist()])}])
        res = evaluator.evaluate(img_ids=[2])["keypoints"]
        assert res["AP"] == pytest.approx(expected_ap), (sigmas, oks)
        aps.append(res["AP"])
    assert aps[0] == pytest.approx(100.0) and 0 < aps[1] < 99 and abs(aps[2] - aps[1]) > 1

    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"), tasks=("keypoints",),
                              kpt_oks_sigmas=[0.5, 0.5])
    evaluator.process([{"image_id": 2}], [{"instances": _instances([(GT[2][2], 0.9, 1)], keypoints=[kp.tolist()])}])
    with pytest.raises(ValueError, match="KEYPOINT_OKS_SIGMAS"):
        evaluator.evaluate()


def test_dataset_without_json_is_converted(tmp_path):
    name = f"coco_eval_dicts_{tmp_path.name}"
    dicts = [{"file_name": "a.png", "image_id": 7, "height": H, "width": W,
              "annotations": [{"bbox": [10, 10, 30, 30], "bbox_mode": 0, "category_id": 0, "iscrowd": 0}]}]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["only"])
    try:
        with pytest.raises(ValueError, match="output_dir"):
            COCOEvaluator(name)
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path))
        evaluator.process([{"image_id": 7}], [{"instances": _instances([((10, 10, 30, 30), 0.9, 0)])}])
        assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)
        assert (tmp_path / f"{name}_coco_format.json").exists()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_no_predictions_and_bad_class(gt_dataset, tmp_path):
    name, _ = gt_dataset
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"))
    assert evaluator.evaluate() == {}
    evaluator.process([{"image_id": 1}], [{"instances": _instances([])}])
    res = evaluator.evaluate()
    assert math.isnan(res["bbox"]["AP"])
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [{"instances": _instances([((0, 0, 5, 5), 0.5, 2)])}])
    with pytest.raises(ValueError, match="only has 2 classes"):
        evaluator.evaluate()

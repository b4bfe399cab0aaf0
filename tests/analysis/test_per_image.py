"""Per-image results read from the evaluation itself: hand-built detections whose matching is
known (a tp, a duplicate, a mislabel, a loose box, a detection inside a crowd region), the same
answer as a fresh evaluation of that one image, and the evaluator's bad-input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coco_cases import H, W, instances, remove_dataset, write_dataset
from workbench.data.datasets import register_coco_instances
from workbench.evaluation import COCOEvaluator

# annotation id, image id, dataset category id, XYXY box, iscrowd
GT = [(1, 1, 5, (10, 10, 30, 30), 0), (2, 1, 5, (40, 20, 70, 50), 0),
      (3, 2, 9, (5, 5, 25, 45), 0), (4, 2, 9, (50, 5, 78, 55), 1)]


@pytest.fixture
def dataset(tmp_path):
    name = write_dataset(tmp_path, GT, (1, 2), "per_image")
    yield name
    remove_dataset(name)


_inst = instances


PREDS = {
    # image 1: a tp on object 1, its duplicate, and object 2's box called class b (mislabel)
    1: [((10, 10, 30, 30), 0.9, 0), ((11, 10, 30, 31), 0.8, 0), ((40, 20, 70, 50), 0.7, 1)],
    # image 2: object 3 shifted right by 5 px (IoU 0.6), and a detection inside the crowd
    2: [((10, 5, 30, 45), 0.6, 1), ((55, 10, 75, 50), 0.5, 1)],
}


def _evaluator(name, img_ids=None, preds=PREDS):
    ev = COCOEvaluator(name, tasks=("bbox",), distributed=False)
    ev.reset()
    for image_id, entries in preds.items():
        ev.process([{"image_id": image_id}], [{"instances": _inst(entries)}])
    ev.evaluate(img_ids=img_ids)
    return ev


def test_matching_of_every_hand_built_case(dataset):
    res = _evaluator(dataset).per_image("bbox", 0.5)
    one, two = res[1], res[2]
    assert one.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])  # decreasing score
    assert one.tp.tolist() == [True, False, False] and one.matched_gt.tolist() == [1, -1, -1]
    assert one.iou[0] == pytest.approx(1.0) and one.fp.tolist() == [False, True, True]
    assert one.categories.tolist() == [0, 0, 1]  # contiguous ids
    assert dict(zip(one.gt_ids.tolist(), one.gt_matched.tolist())) == {1: one.dt_ids[0], 2: -1}
    assert one.missed.tolist() == [False, True]
    assert two.tp.tolist() == [True, False] and two.iou[0] == pytest.approx(0.6, abs=1e-6)
    assert two.ignored.tolist() == [False, True]  # inside the crowd: neither tp nor fp
    gt = dict(zip(two.gt_ids.tolist(), two.gt_ignored.tolist()))
    assert gt == {3: False, 4: True} and not two.missed.any()
    strict = _evaluator(dataset).per_image("bbox", 0.7)[2]
    assert strict.tp.tolist() == [False, False] and strict.missed.tolist() == [True, False]
    assert "1 tp, 2 fp, 1 missed of 2 objects" in repr(one)


def test_per_image_equals_a_fresh_evaluation_of_that_image(dataset):
    whole = _evaluator(dataset).per_image("bbox", 0.5)
    for image_id in (1, 2):
        alone = _evaluator(dataset, img_ids=[image_id]).per_image("bbox", 0.5)
        assert set(alone) == {image_id}
        a, b = whole[image_id], alone[image_id]
        for f in ("scores", "categories", "matched_gt", "iou", "tp", "ignored", "gt_ids", "gt_ignored"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_bad_requests_and_bad_predictions_are_named(dataset):
    ev = _evaluator(dataset)
    with pytest.raises(ValueError, match="one of the evaluation's thresholds"):
        ev.per_image("bbox", 0.42)
    with pytest.raises(ValueError, match="No 'segm' evaluation"):
        ev.per_image("segm")
    nan = COCOEvaluator(dataset, tasks=("bbox",), distributed=False)
    nan.reset()
    with pytest.raises(ValueError, match=r"Prediction 1 of image 2 has a non-finite pred_boxes"):
        nan.process([{"image_id": 2}], [{"instances": _inst([((0, 0, 5, 5), 0.9, 0),
                                                              ((float("nan"), 0, 5, 5), 0.8, 0)])}])
    with pytest.raises(ValueError, match=r"image id\(s\) \[7\]"):
        _evaluator(dataset, preds={**PREDS, 7: [((0, 0, 5, 5), 0.9, 0)]})


def test_a_dataset_never_loaded_is_not_silently_ap_0(tmp_path, caplog):
    name = write_dataset(tmp_path, GT, (1, 2), "never_loaded", load=False, masks=False)
    try:
        perfect = {1: [((10, 10, 30, 30), 0.9, 0), ((40, 20, 70, 50), 0.8, 0)],
                   2: [((5, 5, 25, 45), 0.7, 1)]}
        ev = COCOEvaluator(name, tasks=("bbox",), distributed=False)
        ev.reset()
        for image_id, entries in perfect.items():
            ev.process([{"image_id": image_id}], [{"instances": _inst(entries)}])
        with caplog.at_level("WARNING"):
            res = ev.evaluate()
        assert res["bbox"]["AP"] == pytest.approx(100.0)
        assert "never loaded" in caplog.text
    finally:
        remove_dataset(name)


def test_a_dataset_without_annotations_says_so(tmp_path, caplog):
    data = {"images": [{"id": 1, "file_name": "1.png", "height": H, "width": W}],
            "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    name = f"no_annotations_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    try:
        with caplog.at_level("WARNING"):
            ev = COCOEvaluator(name, tasks=("bbox",), distributed=False)
        assert "has no annotations" in caplog.text
        ev.reset()
        ev.process([{"image_id": 1}], [{"instances": _inst([((0, 0, 5, 5), 0.9, 0)])}])
        res = ev.evaluate()
        assert "bbox" not in res  # no NaN AP
    finally:
        remove_dataset(name)


def test_evaluate_twice_and_reset(dataset):
    ev = _evaluator(dataset)
    first = ev.per_image("bbox")
    assert all(type(k) is int for k in first)  # not numpy ints: json-serialisable
    assert [r["category_id"] for r in ev.predictions[0]["instances"]] == [0, 0, 1]  # still contiguous
    again = ev.evaluate(img_ids=[1])  # maps the ids again from the stored predictions
    assert again["bbox"]["AP50"] >= 0 and set(ev.per_image("bbox")) == {1}
    ev.reset()
    with pytest.raises(ValueError, match="No evaluation yet"):
        ev.output_row(1)


def test_class_agnostic_evaluations_are_refused(dataset):
    from workbench.analysis import per_image_results

    ev = _evaluator(dataset)
    e = ev.coco_evals["bbox"]
    e.params.useCats = 0
    with pytest.raises(ValueError, match="useCats"):
        per_image_results(e)

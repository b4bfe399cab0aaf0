"""TIDE-style breakdown on hand-built detections whose error types and dAP are known by hand;
its identities (nothing fixed = the evaluator's AP, everything fixed = 100)."""

from __future__ import annotations

import pytest

from coco_cases import instances, remove_dataset, write_dataset
from workbench.analysis import ERROR_TYPES
from workbench.evaluation import COCOEvaluator

# annotation id, image id, category id (5 = a, 9 = b), XYXY, iscrowd
GT = [(1, 1, 5, (10, 10, 30, 30), 0), (2, 1, 5, (40, 20, 70, 50), 0),
      (3, 2, 9, (5, 5, 25, 45), 0), (4, 2, 9, (50, 5, 78, 55), 1),
      (5, 3, 5, (10, 10, 50, 50), 0), (6, 3, 9, (60, 10, 75, 25), 0)]
A, B = 0, 1  # contiguous ids
PREDS = {  # (box, score, class): the type each one must get
    1: [((10, 10, 30, 30), 0.9, A),   # tp on 1
        ((11, 10, 30, 31), 0.8, A),   # duplicate of 1
        ((40, 20, 70, 50), 0.7, B)],  # cls on 2 (an a called b)
    2: [((10, 5, 30, 45), 0.6, B),    # tp on 3 (IoU 0.6)
        ((55, 10, 75, 50), 0.58, B),  # inside the crowd: ignored
        ((5, 5, 25, 45), 0.55, A)],   # cls on 3, which the b above already took: two classes on it
    3: [((10, 10, 30, 30), 0.5, A),   # loc on 5 (IoU 0.25)
        ((0, 40, 8, 58), 0.4, B),     # bkg
        ((60, 10, 70, 20), 0.45, A)],  # both on 6 (other class, IoU 0.44); 6 is then a miss
}
KINDS = {1: [None, "duplicate", "cls"], 2: [None, "cls"], 3: ["loc", "both", "bkg"]}  # crowd one ignored


@pytest.fixture
def dataset(tmp_path):
    name = write_dataset(tmp_path, GT, (1, 2, 3), "errors")
    yield name
    remove_dataset(name)


def _evaluate(name, img_ids=None):
    ev = COCOEvaluator(name, tasks=("bbox",), distributed=False)
    ev.reset()
    for image_id, entries in PREDS.items():
        ev.process([{"image_id": image_id}], [{"instances": instances(entries)}])
    return ev, ev.evaluate(img_ids=img_ids)


def test_every_error_type_on_hand_built_detections(dataset):
    ev, res = _evaluate(dataset)
    b = ev.error_breakdown("bbox")
    results = ev.per_image("bbox")
    for img, kinds in KINDS.items():
        r = results[img]
        got = [k for k, ign in zip(b.errors[img], r.ignored) if not ign]
        assert got == [k for k in kinds], (img, got)
    assert b.counts == {"cls": 2, "loc": 1, "both": 1, "duplicate": 1, "bkg": 1, "miss": 1}
    assert b.missed[3] == [int((results[3].gt_ids == 6).nonzero()[0][0])]
    # The identities: nothing fixed is the evaluator's AP50, everything fixed is 100.
    assert b.ap == pytest.approx(res["bbox"]["AP50"], abs=1e-6)
    assert b.ap_if_fixed() == pytest.approx(b.ap, abs=1e-9)
    assert b.ap_if_fixed(*ERROR_TYPES) == pytest.approx(100.0)
    assert all(v >= -1e-9 for v in b.dap.values())
    assert set(b.per_class_ap) == {A, B} and b.per_class_dap[A]["duplicate"] >= 0
    assert "duplicate" in b.summary() and b.plot().to_png_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="Unknown error type"):
        b.ap_if_fixed("oops")


def test_dap_by_hand_on_one_image(dataset):
    # Image 1 alone: class a has objects 1, 2; detections a .9 (tp), a .8 (duplicate), b .7 (cls
    # on 2). AP_a = 51/101 (precision 1 up to recall 0.5); class b has no object.
    ev, res = _evaluate(dataset, img_ids=[1])
    b = ev.error_breakdown("bbox")
    assert b.ap == pytest.approx(100 * 51 / 101) == pytest.approx(res["bbox"]["AP50"])
    assert b.dap["duplicate"] == pytest.approx(0.0)       # it ranks after the only tp
    # cls fixed: the b becomes a tp of a on 2: precision 2/3 from recall 0.5 to 1.
    assert b.dap["cls"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101 - 100 * 51 / 101)
    assert b.dap["miss"] == pytest.approx(0.0) and b.counts["miss"] == 0  # 2 is the cls error's
    # FN fixed: object 2 leaves the ground truth -> AP_a 100.
    assert b.dap["FN"] == pytest.approx(100 - 100 * 51 / 101)
    # FP fixed: the duplicate is suppressed, the cls error becomes a tp -> AP_a 100.
    assert b.dap["FP"] == pytest.approx(100 - 100 * 51 / 101)


def test_confusion_matrix_rows_are_the_objects(dataset):
    from workbench.analysis import confusion_matrix

    ev, _ = _evaluate(dataset)
    results = ev.per_image("bbox")
    cm = confusion_matrix(results, 2, class_names=["a", "b"])
    bg = 2
    expected = [[1, 1, 1],   # a: tp, called b (cls), missed (object 5, under a loc error)
                [0, 1, 1],   # b: tp, missed (object 6)
                [4, 1, 0]]   # no object: duplicate, a on the b's object, loc, both | bkg
    assert cm.counts.tolist() == expected
    assert cm.counts[:bg].sum(axis=1).tolist() == [3, 2]  # the objects of each class
    assert cm.normalized()[0].sum() == pytest.approx(1.0) and cm.labels[-1] == "background"
    strict = confusion_matrix(results, 2, score_thresh=0.6)
    assert strict.counts.tolist() == [[1, 1, 1], [0, 1, 1], [1, 0, 0]]
    # Above 0.65 the tp on object 3 (score 0.6) is gone: 3 counts as not detected.
    stricter = confusion_matrix(results, 2, score_thresh=0.65)
    assert stricter.counts.tolist() == [[1, 1, 1], [0, 0, 2], [1, 0, 0]]
    assert "background" in repr(cm) and cm.plot().to_png_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="class 1 is outside"):
        confusion_matrix(results, 1)


def test_pr_curves_and_best_f1(dataset):
    from workbench.analysis import pr_curves

    ev, _ = _evaluate(dataset)
    a, b = pr_curves(ev.per_image("bbox"), 2, ["a", "b"])
    assert a.num_gt == 3 and a.scores.tolist() == pytest.approx([0.9, 0.8, 0.55, 0.5, 0.45])
    assert a.precision.tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert a.recall.tolist() == pytest.approx([1 / 3] * 5)
    assert a.best_f1 == pytest.approx(0.5) and a.best_f1_score == pytest.approx(0.9)
    assert b.num_gt == 2 and b.best_f1_score == pytest.approx(0.6)
    assert a.ap == pytest.approx(100 * 34 / 101)  # precision 1 up to recall 1/3: 34 of 101 points
    from workbench.analysis import plot_pr_curves

    assert plot_pr_curves([a, b]).to_png_bytes()[:4] == b"\x89PNG"


def test_mask_results_need_their_coco_eval_and_empty_classes_have_no_threshold(dataset):
    from workbench.analysis import confusion_matrix, error_breakdown, pr_curves

    ev = COCOEvaluator(dataset, tasks=("bbox", "segm"), distributed=False)
    ev.reset()
    import numpy as np
    import torch

    for image_id, entries in PREDS.items():
        inst = instances(entries)
        h, w = inst.image_size
        masks = torch.zeros(len(inst), h, w, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(inst.pred_boxes.tensor.round().int().tolist()):
            masks[k, y0:y1, x0:x1] = True
        inst.pred_masks = masks
        ev.process([{"image_id": image_id}], [{"instances": inst}])
    res = ev.evaluate()
    with pytest.raises(ValueError, match="mask results"):
        error_breakdown(ev.per_image("segm"))
    with pytest.raises(ValueError, match="mask results"):
        confusion_matrix(ev.per_image("segm"), 2)
    b = ev.error_breakdown("segm")
    assert b.ap == pytest.approx(res["segm"]["AP50"], abs=1e-6)
    cm = ev.confusion_matrix("segm")
    assert cm.counts[:2].sum(axis=1).tolist() == [3, 2]
    no_objects = pr_curves({k: r for k, r in ev.per_image("bbox").items() if k == 1}, 2)[1]
    assert no_objects.num_gt == 0 and np.isnan(no_objects.best_f1_score)

"""trace(dataset dict / path / array) is the pass that was scored: DefaultPredictor's and the
evaluator's, with the test-time resize; its ground truth is joined to the detections."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from inspect_fixtures import assert_same
from workbench import inspect as wi
from workbench import model_zoo
from workbench.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from workbench.data.detection_utils import read_image
from workbench.engine import DefaultPredictor
from workbench.evaluation import DatasetEvaluator, inference_on_dataset

EMBEDDED = "Shapes/panoptic_kp_R_50_FPN_small.yaml"


@functools.lru_cache(maxsize=None)
def shapes():
    import workbench.data.datasets  # noqa: F401  (registers shapes_val_100)

    cfg = model_zoo.get_config(EMBEDDED, trained=True)
    cfg.MODEL.DEVICE = "cpu"
    dicts = DatasetCatalog.get("shapes_val_100")
    return DefaultPredictor(cfg), [dicts[0], dicts[2]]  # neither at the test size: resized


class _Keep(DatasetEvaluator):
    def reset(self):
        self.outputs = []

    def process(self, inputs, outputs):
        self.outputs.extend(outputs)

    def evaluate(self):
        return {}


def test_trace_of_a_dataset_dict_is_the_predictors_and_the_evaluators_pass():
    predictor, dicts = shapes()
    keep = _Keep()
    loader = build_detection_test_loader(dicts, mapper=DatasetMapper(predictor.cfg, is_train=False))
    inference_on_dataset(predictor.model, loader, keep)
    for d, scored in zip(dicts, keep.outputs):
        tr = wi.trace(predictor, d)
        assert tr.preprocess.image_sizes[0] != (d["height"], d["width"]), "the test resize applies"
        assert tr.preprocess.original_sizes[0] == (d["height"], d["width"])
        assert_same(tr.outputs[0], scored)
        with torch.no_grad():
            assert_same(tr.outputs[0], predictor(read_image(d["file_name"], "BGR")))
        # A path and a BGR array give the same pass.
        assert_same(wi.trace(predictor, d["file_name"]).outputs[0], scored)
        arr = wi.trace(predictor.model, read_image(d["file_name"], "BGR"), cfg=predictor.cfg)
        assert_same(arr.outputs[0]["instances"], scored["instances"])


def test_ground_truth_is_joined_to_every_detection():
    predictor, dicts = shapes()
    tr = wi.trace(predictor, dicts[0])
    gt = tr.ground_truth[0]
    assert len(gt) == len(dicts[0]["annotations"]) > 0
    matches = tr.matches(0)
    out = tr.outputs[0]["instances"]
    assert len(matches) == len(out)
    kinds = {m.kind for m in matches}
    assert kinds <= {"tp", "duplicate", "mislabel", "localisation", "both", "background", "crowd"}
    assert "tp" in kinds
    for j, m in enumerate(matches):
        if m.kind == "tp":
            assert int(out.pred_classes[j]) == m.gt_class and m.iou >= 0.5
    # Every object is taken by at most one tp, and missed() lists the others.
    taken = [m.gt for m in matches if m.kind == "tp"]
    assert len(taken) == len(set(taken))
    assert sorted(set(range(len(gt))) - set(taken)) == tr.missed(0)
    d = tr.detection(0)
    assert d.match is matches[0] and d.class_names == tr.class_names
    text = repr(d)
    assert tr.class_names[d.cls] in text and "original px" in text and "input px" in text
    assert "ground truth" in repr(tr)


def test_needs_a_cfg_for_non_model_inputs_and_names_bad_ones(tmp_path):
    predictor, dicts = shapes()
    with pytest.raises(ValueError, match="cfg="):
        wi.trace(predictor.model, dicts[0])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        wi.trace(predictor, str(tmp_path / "nope.png"))
    with pytest.raises(TypeError, match=r"inputs\[1\]"):
        wi.trace(predictor, [dicts[0], 3.5])
    with pytest.raises(TypeError, match="uint8"):
        wi.trace(predictor, np.zeros((8, 8, 3), np.float32))


def test_explorer_of_a_predictor_and_dataset_dicts_shows_the_scored_pass():
    from workbench import vis
    from workbench.data import MetadataCatalog

    predictor, dicts = shapes()
    ex = vis.TraceExplorer(predictor, dicts[:1], MetadataCatalog.get("shapes_val"))
    tr = ex.detections.trace
    assert tr.preprocess.image_sizes[0] != (dicts[0]["height"], dicts[0]["width"])
    assert_same(tr.outputs[0], wi.trace(predictor, dicts[0]).outputs[0])
    assert ex.masks.controls["detection"].options[0] == ("none", -1)  # linked: the detections tab chooses
    label, row = ex.masks.controls["detection"].options[1]
    cls = int(tr.outputs[0]["instances"].pred_classes[0])
    assert row == 0 and tr.class_names[cls] in label


def test_trace_of_a_predictor_uses_the_predictors_own_inputs():
    predictor, dicts = shapes()
    bgr = read_image(dicts[0]["file_name"], "BGR")
    saved = predictor.aug
    try:
        predictor.aug = type(saved)([256, 256], 1000)  # another test-time size
        tr = wi.trace(predictor, bgr)
        assert min(tr.preprocess.image_sizes[0]) == 256
        with torch.no_grad():
            assert_same(tr.outputs[0], predictor(bgr))
    finally:
        predictor.aug = saved

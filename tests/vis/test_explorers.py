"""Explorers driven headless by setting widget values: what was drawn, and that the PNG changed."""

from __future__ import annotations

import numpy as np
import pytest

from inspect_fixtures import fixture, traced
from workbench import inspect as wi
from workbench import vis
from workbench.data import Metadata


@pytest.fixture(scope="module")
def mask_case():
    model, _, _ = fixture("mask_rcnn_R_50_FPN")
    return model, traced("mask_rcnn_R_50_FPN")


@pytest.fixture(scope="module")
def det_explorer(mask_case):
    model, tr = mask_case
    return vis.DetectionExplorer(model, tr)


def _scores(tr, image):
    return tr.outputs[image]["instances"].scores.numpy()


def test_score_slider_counts_boxes_without_rerun(det_explorer, mask_case):
    model, tr = mask_case
    ex = det_explorer
    ex.set(image=0, nms_thresh=0.5, topk=100, classes=[], detection=-1)
    before = ex.png
    for t in (0.6, 0.3, 0.1):
        ex.set(score_thresh=t)
        assert len(ex.last.drawn["boxes"]) == int((_scores(tr, 0) > t).sum()) > 0
        assert ex.current is tr  # above the model's own threshold: the trace itself, filtered
        assert ex.png != before and ex.image.value == ex.png
        before = ex.png
    ex.set(image=1, score_thresh=0.2)
    assert len(ex.last.drawn["boxes"]) == int((_scores(tr, 1) > 0.2).sum())


def test_low_threshold_nms_topk_match_rethreshold(det_explorer, mask_case):
    model, tr = mask_case
    ex = det_explorer
    ex.set(image=0, score_thresh=0.02, nms_thresh=0.3, topk=40, classes=[])
    ref = wi.rethreshold(model, tr, score_thresh=0.02, nms_thresh=0.3, topk=40).outputs[0]["instances"]
    np.testing.assert_allclose(ex.last.drawn["boxes"], ref.pred_boxes.tensor.numpy(), rtol=0, atol=1e-4)
    pools = len(ex._pools)
    ex.set(score_thresh=0.5)  # same NMS / top-k: filtered from the cached pool
    assert len(ex._pools) == pools
    ref = wi.rethreshold(model, tr, score_thresh=0.5, nms_thresh=0.3, topk=40).outputs[0]["instances"]
    np.testing.assert_allclose(ex.last.drawn["boxes"], ref.pred_boxes.tensor.numpy(), rtol=0, atol=1e-4)


def test_class_filter_and_toggles(det_explorer, mask_case):
    _, tr = mask_case
    ex = det_explorer
    ex.set(image=0, score_thresh=0.1, nms_thresh=0.5, topk=100, classes=[])
    inst = tr.outputs[0]["instances"]
    cls = inst.pred_classes.numpy()
    target = int(cls[0])
    ex.set(classes=[target])
    want = int(((_scores(tr, 0) > 0.1) & (cls == target)).sum())
    assert len(ex.last.drawn["boxes"]) == want
    assert ex.last.drawn["masks"] == want
    ex.set(show_masks=False, show_labels=False)
    assert ex.last.drawn["masks"] == 0 and ex.last.drawn["labels"] == []
    ex.set(show_masks=True, show_labels=True, classes=[])
    assert ex.state["classes"] == []


def test_choosing_a_detection_shows_provenance(det_explorer, mask_case):
    _, tr = mask_case
    ex = det_explorer
    ex.set(image=0, score_thresh=0.3, nms_thresh=0.5, topk=100, classes=[], detection=-1)
    ex.set(detection=1)
    d = tr.detection(1, image=0)
    assert ex.provenance.roi_index == d.roi_index and ex.provenance.anchor_index == d.anchor_index
    assert f"from proposal {d.roi_index}" in ex.info.value
    assert ex.crop.value[:4] == b"\x89PNG"
    assert ex.last.drawn["highlight"] == 1
    assert len(ex.last.drawn["boxes"]) == int((_scores(tr, 0) > 0.3).sum())  # highlight not counted
    ex.set(score_thresh=0.99)  # detection 1 is no longer shown: the selection is cleared
    assert ex.state["detection"] == -1 and ex.info.value == ""


def test_feature_explorer_shows_the_trace_tensor(mask_case):
    model, tr = mask_case
    ex = vis.FeatureExplorer(tr, model)
    ex.set(image=1, level="p3", channel=7, view="level")
    np.testing.assert_array_equal(ex.last.drawn["arrays"]["p3"], tr.backbone.features["p3"][1, 7].numpy())
    png = ex.png
    ex.set(channel=-1, reduce="max")
    np.testing.assert_array_equal(ex.last.drawn["arrays"]["p3"], tr.backbone.features["p3"][1].max(0).values.numpy())
    assert ex.png != png
    ex.set(source="bottom_up")
    assert ex.state["level"] == "res2"
    ex.set(level="res4", channel=3)
    np.testing.assert_array_equal(ex.last.drawn["arrays"]["res4"], tr.backbone.bottom_up["res4"][1, 3].numpy())
    for view in ("levels", "montage", "pca", "histograms", "rois"):
        before = ex.png
        ex.set(view=view, source="features")
        assert ex.png != before
    assert sum(ex.last.drawn["counts"].values()) == len(tr.box.stages[-1].proposals[1])


def test_proposal_explorer_topk_and_anchors(mask_case):
    _, tr = mask_case
    ex = vis.ProposalExplorer(tr)
    ex.set(image=0, topk=25)
    assert len(ex.last.drawn["proposals"]) == 25
    props = tr.rpn.proposals[0]
    top = props.objectness_logits.argsort(descending=True)[:25].numpy()
    scale = 1 / tr.preprocess.scales[0][0]
    np.testing.assert_allclose(np.sort(ex.last.drawn["proposals"], axis=0),
                               np.sort(props.proposal_boxes.tensor[top].numpy() * scale, axis=0), rtol=1e-5)
    ex.set(show_anchors=True, level="p4", cell_y=5, cell_x=7)
    hi, wi = tr.backbone.features["p4"].shape[-2:]
    a = tr.rpn.anchors[2].tensor.numpy()
    num = len(a) // (hi * wi)
    rows = (5 * wi + 7) * num + np.arange(num)
    np.testing.assert_allclose(ex.last.drawn["anchors"], a[rows] * scale, rtol=1e-5)
    # The cell sliders' ranges follow the level's grid: past its edge is an error, not a clamp.
    assert (ex.controls["cell_y"].max, ex.controls["cell_x"].max) == (hi - 1, wi - 1)
    with pytest.raises(ValueError, match=r"'cell_y' takes a value in \[0, %d\]" % (hi - 1)):
        ex.set(cell_y=hi)
    ex.set(level="p6")
    h6, w6 = tr.backbone.features["p6"].shape[-2:]
    assert (ex.controls["cell_y"].max, ex.controls["cell_x"].max) == (h6 - 1, w6 - 1)
    assert ex.last.drawn["cell"] == ("p6", min(5, h6 - 1), min(7, w6 - 1))


def test_mask_and_keypoint_explorers(mask_case):
    _, tr = mask_case
    ex = vis.MaskExplorer(tr)
    ex.set(detection=3)
    d = tr.detection(3)
    np.testing.assert_array_equal(ex.last.drawn["logits"], d.mask_logits[d.cls].numpy())
    png = ex.png
    ex.set(image=1)
    assert ex.png != png and ex.state["detection"] == 0

    ktr = traced("keypoint_rcnn_R_50_FPN")
    meta = Metadata(name="vis_kp_test")
    meta.set(keypoint_names=[f"k{i}" for i in range(17)])
    kx = vis.KeypointExplorer(ktr, meta)
    kx.set(detection=2, keypoints=[1, 4])
    np.testing.assert_array_equal(kx.last.drawn["heatmaps"], ktr.detection(2).keypoint_heatmap[[1, 4]].numpy())


def test_trace_explorer_tabs_share_the_image(mask_case):
    model, tr = mask_case
    ex = vis.TraceExplorer(model, tr)
    assert list(ex.tabs) == ["features", "proposals", "detections", "masks"]
    ex.set_image(2)
    assert all(t.state["image"] == 2 for t in ex.tabs.values())
    # One image selector: it is every tab's image control, left out of the tabs' own rows.
    assert all(t.controls["image"] is ex.image and "image" in t.shared for t in ex.tabs.values())
    ex.detections.set(image=0)  # from any tab: every tab follows
    assert ex.image.value == 0 and all(t.state["image"] == 0 for t in ex.tabs.values())
    assert ex.tab.children and ex.widget is not None
    with pytest.raises(KeyError, match="Unknown control"):
        ex.detections.set(threshold=0.3)


def test_segmentation_explorer_on_panoptic_fpn():
    model, _, _ = fixture("panoptic_fpn_R_50")
    tr = traced("panoptic_fpn_R_50")
    ex = vis.TraceExplorer(model, tr)
    assert "segmentation" in ex.tabs
    seg = ex.segmentation
    pan, info = tr.outputs[0]["panoptic_seg"]
    drawn_ids = sorted(s["id"] for s in seg.last.drawn["segments"])
    present = set(np.unique(pan.numpy()).tolist())
    assert drawn_ids == sorted(s["id"] for s in info if s["id"] in present)
    png = seg.png
    seg.set(kind="semantic")
    want = sorted(np.unique(tr.outputs[0]["sem_seg"].argmax(0).numpy()).tolist())
    assert sorted(s["category_id"] for s in seg.last.drawn["segments"]) == want
    assert seg.png != png
    seg.set(show_labels=False)
    assert seg.last.drawn["labels"] == []

"""The explorers' shared behaviour, headless, on the embedded model: values snapped before they
are sent, clear errors, one redraw per action, native-size pictures, clicks, names, and one
selection across the tabs of a TraceExplorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import inspect as wi
from workbench import model_zoo, vis
from workbench.data import MetadataCatalog
from workbench.data.datasets.shapes import get_shapes_dicts
from workbench.vis.explorer_base import png_size, snap_to_control

CONFIG = "Shapes/panoptic_kp_R_50_FPN_small.yaml"


@pytest.fixture(scope="module")
def shapes_case():
    cfg = model_zoo.get_config(CONFIG, trained=True)
    model = model_zoo.get(CONFIG, trained=True).eval()
    with torch.no_grad():
        tr = wi.trace(model, get_shapes_dicts("val", 2), cfg=cfg)
    return model, tr, MetadataCatalog.get("shapes_val")


@pytest.fixture()
def explorer(shapes_case):
    model, tr, meta = shapes_case
    return vis.TraceExplorer(model, tr, meta)


def test_values_are_snapped_to_the_step_before_they_are_sent():
    import ipywidgets as w

    s = w.FloatSlider(min=0.0, max=1.0, step=0.01)
    assert snap_to_control("score", s, 0.333) == 0.33
    assert snap_to_control("score", s, 0.025) in (0.02, 0.03)
    assert repr(snap_to_control("score", s, 0.1 + 0.2)) == "0.3"  # the decimal the browser shows
    n = w.FloatSlider(min=0.05, max=1.0, step=0.05)
    assert snap_to_control("nms", n, 0.62) == 0.6
    with pytest.raises(ValueError, match=r"'nms' takes a value in \[0.05, 1.0\]; got 1.5"):
        snap_to_control("nms", n, 1.5)
    with pytest.raises(TypeError, match="'nms' takes a number"):
        snap_to_control("nms", n, "0.5")
    d = w.Dropdown(options=[("a", 1), ("b", 2)], value=1)
    with pytest.raises(ValueError, match=r"'pick' has no option 3; it offers \[1 \(a\), 2 \(b\)\]"):
        snap_to_control("pick", d, 3)


def test_set_from_python_holds_the_snapped_value(shapes_case):
    model, tr, meta = shapes_case
    det = vis.DetectionExplorer(model, tr, meta)
    det.set(score_thresh=0.333)
    assert det.controls["score_thresh"].value == 0.33 == det.state["score_thresh"]
    renders = det.renders
    det.set(score_thresh=0.33)  # the browser sending back what it holds changes nothing
    assert det.renders == renders
    with pytest.raises(KeyError, match="Unknown control"):
        det.set(threshold=0.3)


def test_one_redraw_per_action_and_hidden_tabs_wait(explorer):
    ex = explorer
    assert ex.tab.get_title(ex.tab.selected_index) == "detections"
    det, feats = ex.detections, ex.features
    before = {k: t.renders for k, t in ex.tabs.items()}
    ex.set_image(1)
    assert det.renders == before["detections"] + 1  # on screen: once
    assert feats.renders == before["features"] and feats._stale  # hidden: when shown
    ex.select("features")
    assert feats.renders == before["features"] + 1 and feats.state["image"] == 1
    ex.select("detections")
    det.set(score_thresh=0.4, nms_thresh=0.5, classes=[0, 1])
    assert det.renders == before["detections"] + 2  # three controls, one redraw


def test_pictures_are_shown_at_native_size_times_zoom(explorer):
    ex = explorer
    for name, tab in ex.tabs.items():
        wd, ht = png_size(tab.png)
        assert (tab.image.layout.width, tab.image.layout.height) == (f"{wd}px", f"{ht}px"), name
        assert tab.image.layout.max_width == "none" and "wb-native" in tab.image._dom_classes
    det = ex.detections
    renders = det.renders
    det.set(zoom=3)
    wd, ht = png_size(det.png)
    assert det.image.layout.width == f"{3 * wd}px" and det.renders == renders  # display only
    h, w = ex.trace.preprocess.original_sizes[int(det.state["image"])]
    assert (wd, ht) == (w, h)  # the detections are drawn at the image's own size


def test_click_on_a_box_selects_that_detection(shapes_case):
    model, tr, meta = shapes_case
    det = vis.DetectionExplorer(model, tr, meta)
    det.set(image=0, score_thresh=0.5)
    inst = tr.outputs[0]["instances"]
    kept = det.last.drawn["kept"]
    assert len(kept) >= 2
    for r in kept[:3]:
        x0, y0, x1, y1 = inst.pred_boxes.tensor[r].tolist()
        got = det.click((x0 + x1) / 2, (y0 + y1) / 2)
        # the box holding the click wins; where boxes overlap, the one centred nearest
        assert got is not None and det.state["detection"] == got and det.last.drawn["highlight"] == got
        bx = inst.pred_boxes.tensor[got].tolist()
        assert bx[0] <= (x0 + x1) / 2 <= bx[2] and bx[1] <= (y0 + y1) / 2 <= bx[3]
    boxes = inst.pred_boxes.tensor[kept].numpy()
    free = np.argwhere(np.ones(png_size(det.png)[::-1], bool))
    for y, x in free[:: max(len(free) // 5000, 1)]:
        if not vis.detection_explorer.boxes_containing(boxes, x, y).size:
            assert det.click(float(x), float(y)) is None and det.state["detection"] == -1
            break
    else:
        pytest.fail("no free pixel")
    with pytest.raises(ValueError, match="outside the"):
        det.click(10_000, 5)


def test_click_on_proposals_picks_the_anchor_cell(shapes_case):
    model, tr, meta = shapes_case
    px = vis.ProposalExplorer(tr, model=model)
    px.set(level="p4")
    hi, wi = tr.backbone.features["p4"].shape[-2:]
    assert (px.controls["cell_y"].max, px.controls["cell_x"].max) == (hi - 1, wi - 1)
    sx, sy = tr.preprocess.scales[0]
    a = tr.rpn.anchors[tr.rpn.in_features.index("p4")].tensor.numpy().reshape(hi * wi, -1, 4)[:, 0]
    cy, cx = 3, 5
    centre = (a[cy * wi + cx, :2] + a[cy * wi + cx, 2:]) / 2
    assert px.click(centre[0] / sx, centre[1] / sy) == ("p4", cy, cx)
    assert px.state["show_anchors"] and px.last.drawn["cell"] == ("p4", cy, cx)


def test_click_on_a_feature_map_shows_the_channel_vector(shapes_case):
    model, tr, _ = shapes_case
    fx = vis.FeatureExplorer(tr, model)
    fx.set(level="p3", view="level")
    out = fx.last
    ax = out.axes[0]
    _, height = out.canvas.get_width_height()
    y, x = 4, 6
    dx, dy = ax.transData.transform([[x, y]])[0]
    assert fx.click(dx, height - dy) == ("p3", y, x)
    np.testing.assert_array_equal(fx.last.drawn["vector"], tr.backbone.features["p3"][0, :, y, x].numpy())
    assert fx.vector.layout.display != "none" and fx.vector.value[:4] == b"\x89PNG"
    fx.set(level="p6")
    h6, w6 = tr.backbone.features["p6"].shape[-2:]
    assert (fx.controls["cell_y"].max, fx.controls["cell_x"].max) == (h6 - 1, w6 - 1)


def test_class_and_keypoint_names_not_ids(explorer):
    ex = explorer
    names = MetadataCatalog.get("shapes_val").thing_classes
    det = ex.detections
    labels = [label for label, v in det.controls["classes"].options]
    assert labels == list(names) and det.controls["classes"].rows == len(names)  # all 7 on screen
    det.set(image=0, score_thresh=0.5)
    row = det.last.drawn["kept"][0]
    det.set(detection=int(row))
    cls = names[int(ex.trace.outputs[0]["instances"].pred_classes[row])]
    assert any(cls in label for label, _ in det.controls["detection"].options)
    titles = [ex.tab.get_title(k) for k in range(len(ex.tabs))]
    assert f"masks: {cls}" in titles and f"keypoints: {cls}" in titles
    kp_names = [label for label, _ in ex.keypoints.controls["keypoints"].options]
    assert kp_names == list(MetadataCatalog.get("shapes_val").keypoint_names)


def test_one_detection_and_one_threshold_for_every_tab(explorer):
    ex = explorer
    det, masks, kps = ex.detections, ex.masks, ex.keypoints
    det.set(image=0, score_thresh=0.5, classes=[])
    rows = det.last.drawn["kept"]
    det.set(detection=int(rows[1]))
    assert masks.state["detection"] == kps.state["detection"] == int(rows[1])
    masks.set(detection=int(rows[0]))  # a choice in the masks tab comes back to the others
    assert det.state["detection"] == kps.state["detection"] == int(rows[0])
    # The heads offer what the detections tab shows: its threshold and class filter.
    det.set(score_thresh=0.9)
    shown = set(det.shown_rows().tolist())
    offered = {v for _, v in masks.controls["detection"].options} - {-1}  # hidden, yet up to date
    assert offered == shown and masks._stale


def test_one_action_one_redraw_with_a_detection_chosen(explorer):
    """A chosen detection, then another image: the tab on screen redraws once, the choice is
    cleared everywhere (a row number would name another object there)."""
    ex = explorer
    det, masks = ex.detections, ex.masks
    det.set(image=0, score_thresh=0.5)
    det.set(detection=int(det.last.drawn["kept"][1]))
    before = {k: t.renders for k, t in ex.tabs.items()}
    ex.image.value = 1  # as the browser's slider does
    after = {k: t.renders for k, t in ex.tabs.items()}
    assert {k: after[k] - before[k] for k in after} == {k: int(k == "detections") for k in after}
    assert det.state["detection"] == masks.state["detection"] == ex.keypoints.state["detection"] == -1
    ex.select("masks")
    before = masks.renders
    ex.image.value = 0
    assert masks.renders == before + 1
    masks.set(detection=int(det.shown_rows()[0]))  # chosen on the masks tab: one redraw there
    assert masks.renders == before + 2 and det.state["detection"] == masks.state["detection"]
    before = masks.renders
    det.set(score_thresh=0.99, classes=[])  # filters from Python while the masks tab is shown
    assert masks.renders == before + 1


def test_set_checks_a_detection_against_the_values_before_it(shapes_case):
    model, tr, meta = shapes_case
    det = vis.DetectionExplorer(model, tr, meta)
    det.set(score_thresh=0.9)
    row = int(vis.detection_explorer.rows_passing(tr.outputs[1]["instances"], 0.3, ())[-1])
    det.set(image=1, score_thresh=0.3, detection=row)  # listed only once image and threshold are set
    assert det.state["detection"] == row and det.last.drawn["highlight"] == row
    with pytest.raises(ValueError, match="'detection' has no option"):
        det.set(score_thresh=0.99, detection=row)


def test_source_change_keeps_the_level_and_opens_the_channels(shapes_case):
    model, tr, _ = shapes_case
    fx = vis.FeatureExplorer(tr, model)
    renders = fx.renders
    fx.set(source="bottom_up")
    assert fx.renders == renders + 1 and fx.state["level"] == "res2"
    assert fx.controls["channel"].max == max(int(f.shape[1]) for f in tr.backbone.bottom_up.values()) - 1
    fx.set(level="res4", channel=200)
    np.testing.assert_array_equal(fx.last.drawn["arrays"]["res4"], tr.backbone.bottom_up["res4"][0, 200].numpy())
    renders = fx.renders
    fx.controls["level"].value = "res5"  # as the browser does: one redraw, cells fitted quietly
    assert fx.renders == renders + 1

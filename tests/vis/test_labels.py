"""Label placement: labels never overlap while there is room, stay inside their panel, and a
label moved away from its box has a leader line back to it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from workbench.data import Metadata
from workbench.structures import Boxes, Instances
from workbench.vis import Visualizer
from workbench.vis.labels import LabelPlacer, _font, _overlap_area, fit_text


def _meta():
    m = Metadata(name="labels_test")
    m.set(thing_classes=["cross", "ring", "square"])
    return m


def _crowd(n=30, hw=(320, 400), seed=0):
    """``n`` boxes heaped around the middle of an (H, W) image, random scores and classes."""
    rng = np.random.default_rng(seed)
    h, w = hw
    centre = rng.uniform([0.4 * w, 0.4 * h], [0.6 * w, 0.6 * h], (n, 2))
    half = rng.uniform(15, 45, (n, 2))
    inst = Instances(hw)
    inst.pred_boxes = Boxes(torch.tensor(np.concatenate([centre - half, centre + half], 1),
                                         dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0.01, 1, n), dtype=torch.float32)
    inst.pred_classes = torch.tensor(rng.integers(0, 3, n))
    return inst


def _assert_apart_and_inside(rects, panel):
    px0, py0, px1, py1 = panel
    for i, (x0, y0, x1, y1) in enumerate(rects):
        assert px0 <= x0 < x1 <= px1 and py0 <= y0 < y1 <= py1, (i, rects[i], panel)
        for j in range(i):
            assert _overlap_area(rects[i], rects[j]) < 1e-6, (i, j, rects[i], rects[j])


def _corner_distance(rect, box):
    """Distance from ``rect`` to the nearest corner of ``box``."""
    corners = np.array([(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])])
    on_rect = np.stack([np.clip(corners[:, 0], rect[0], rect[2]),
                        np.clip(corners[:, 1], rect[1], rect[3])], 1)
    return float(np.hypot(*(corners - on_rect).T).min())


def test_crowded_labels_never_overlap_and_stay_inside():
    hw = (320, 400)
    vis = Visualizer(np.zeros(hw + (3,), np.uint8), _meta())
    vis.draw_instance_predictions(_crowd(30, hw))
    layout = vis.drawn["label_layout"]
    assert len(layout) == len(vis.drawn["labels"]) == 30
    assert [(d["text"], d["rect"]) for d in layout] == vis.drawn["labels"]
    _assert_apart_and_inside([d["rect"] for d in layout], (0, 0, hw[1], hw[0]))
    assert sum(d["moved"] for d in layout) > 0  # the heap forces some labels away


def test_moved_labels_have_leaders_to_a_corner_of_their_box():
    vis = Visualizer(np.zeros((320, 400, 3), np.uint8), _meta())
    vis.draw_instance_predictions(_crowd(30))
    h = vis.output.font_px * 1.35
    leaders = {d["box_index"]: d["line"] for d in vis.drawn["leaders"]}
    boxes = vis.drawn["boxes"]
    for d in vis.drawn["label_layout"]:
        i, rect = d["box_index"], d["rect"]
        np.testing.assert_allclose(d["box"], boxes[i])
        if not d["moved"]:
            assert i not in leaders and _corner_distance(rect, boxes[i]) <= 0.25 * h
            continue
        xl, yl, xb, yb = leaders[i]
        assert rect[0] <= xl <= rect[2] and rect[1] <= yl <= rect[3]  # starts on the label
        assert xb in (boxes[i][0], boxes[i][2]) and yb in (boxes[i][1], boxes[i][3])  # ends on a corner
        assert np.hypot(xb - xl, yb - yl) == pytest.approx(_corner_distance(rect, boxes[i]))
    assert len(leaders) == sum(d["moved"] for d in vis.drawn["label_layout"]) > 0


def test_leader_lines_are_drawn():
    """A label pushed away from its box: a line in the box colour runs between the two."""
    img = np.full((200, 200, 3), 255, np.uint8)
    vis = Visualizer(img)
    # Taken space (a placed label, not drawn) all round the box: its label must go elsewhere.
    vis._label_placer.place(100, 100, (50, 150, 60, 160), (0, 0, 200, 200))
    np.testing.assert_allclose(vis._label_placer.placed, [[50, 50, 150, 150]])
    vis.overlay_instances(boxes=np.array([[100.0, 100, 140, 140]]), labels=["lonely"],
                          assigned_colors=[[1.0, 0.0, 0.0]])
    (d,) = vis.drawn["label_layout"]
    assert d["moved"] and _overlap_area(d["rect"], (50, 50, 150, 150)) == 0
    (leader,) = vis.drawn["leaders"]
    xl, yl, xb, yb = leader["line"]
    assert (xb, yb) == (100.0, 100.0) and yl == d["rect"][3]  # label above: to the top-left corner
    out = vis.output.get_image().astype(int)
    for t in np.linspace(0.3, 0.7, 5):  # between the box outline and the label
        x, y = int(round(xl + t * (xb - xl))), int(round(yl + t * (yb - yl)))
        patch = out[y - 1:y + 2, x - 1:x + 2]
        redness = (patch[..., 0] - np.maximum(patch[..., 1], patch[..., 2])).max()
        assert redness > 60, (x, y, patch)
    plain = Visualizer(img).overlay_instances(boxes=np.array([[100.0, 100, 140, 140]]),
                                              labels=["lonely"], assigned_colors=[[1.0, 0.0, 0.0]])
    assert plain.drawn["leaders"] == []  # with room by the box, no leader
    assert (plain.get_image()[143:148, 98:103] == 255).all()


def test_higher_scores_keep_the_spot_by_their_box():
    inst = Instances((200, 200))
    inst.pred_boxes = Boxes(torch.tensor([[60.0, 60, 120, 120]] * 6))
    inst.scores = torch.tensor([0.1, 0.2, 0.95, 0.3, 0.4, 0.5])
    inst.pred_classes = torch.tensor([0] * 6)
    vis = Visualizer(np.zeros((200, 200, 3), np.uint8), _meta())
    vis.draw_instance_predictions(inst)
    first = vis.drawn["label_layout"][0]
    assert first["text"] == "cross 95%" and first["box_index"] == 2 and not first["moved"]
    h = vis.output.font_px * 1.35
    np.testing.assert_allclose(first["rect"][:2], [60.0, 60.0 - h])  # above the top-left corner
    assert [d["text"] for d in vis.drawn["label_layout"]] == \
        ["cross 95%", "cross 50%", "cross 40%", "cross 30%", "cross 20%", "cross 10%"]


def test_placer_candidates_in_order_and_clamped():
    placer = LabelPlacer()
    panel = (0.0, 0.0, 100.0, 100.0)
    a = placer.place(30, 10, (20, 40, 60, 80), panel)
    assert a.rect == (20, 30, 50, 40) and not a.moved  # above the top-left corner
    b = placer.place(30, 10, (20, 40, 60, 80), panel)
    assert b.rect == (20, 40, 50, 50) and not b.moved  # inside the top-left corner
    c = placer.place(30, 10, (20, 40, 60, 80), panel)
    assert c.rect == (20, 80, 50, 90) and not c.moved  # below the bottom-left corner
    top = placer.place(30, 10, (70, 2, 95, 20), panel)  # no room above: clamped, still at the corner
    assert top.rect == (70, 0, 100, 10) and not top.moved and top.leader is None
    for _ in range(6):  # the same box again and again: the spots at its corners run out
        last = placer.place(30, 10, (20, 40, 60, 80), panel)
    assert last.moved and last.leader is not None
    _assert_apart_and_inside(placer.placed.tolist(), panel)


def test_full_panel_falls_back_to_the_least_overlap():
    placer = LabelPlacer()
    panel = (0.0, 0.0, 40.0, 20.0)
    for _ in range(4):  # exactly fills the panel
        placer.place(20, 10, (0, 0, 40, 20), panel)
    _assert_apart_and_inside(placer.placed.tolist(), panel)
    extra = placer.place(20, 10, (0, 0, 40, 20), panel)
    x0, y0, x1, y1 = extra.rect
    assert 0 <= x0 and x1 <= 40 and 0 <= y0 and y1 <= 20  # still inside
    overlap = sum(_overlap_area(extra.rect, r) for r in placer.placed[:-1].tolist())
    assert overlap == pytest.approx(200.0)  # on exactly one earlier label, not across several


def test_compare_labels_stay_in_their_own_panel():
    H, W, gap = 200, 240, 8
    inst = Instances((H, W))
    # Boxes hugging the left edge: their "left of the box" spot would fall in the gap or in the
    # ground-truth panel without the panel bound.
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 60 + 3 * k, 40, 100 + 3 * k] for k in range(12)]))
    inst.scores = torch.linspace(0.9, 0.3, 12)
    inst.pred_classes = torch.tensor([k % 3 for k in range(12)])
    gt = Instances((H, W))
    gt.gt_boxes = Boxes(torch.tensor([[200.0, 60, 240, 100], [0, 60, 40, 100]]))
    gt.gt_classes = torch.tensor([1, 0])
    out = Visualizer(np.zeros((H, W, 3), np.uint8), _meta()).compare(gt, inst, gap=gap)
    layout = out.drawn["label_layout"]
    gt_rects = [d["rect"] for d in layout[:2]]
    pred_rects = [d["rect"] for d in layout[2:]]
    assert len(pred_rects) == 12
    _assert_apart_and_inside(gt_rects, (0, 0, W, H))
    _assert_apart_and_inside(pred_rects, (W + gap, 0, 2 * W + gap, H))


def test_text_wider_than_its_panel_is_shortened():
    vis = Visualizer(np.zeros((60, 80, 3), np.uint8))
    long = "a very long label that cannot fit in eighty pixels"
    vis.overlay_instances(boxes=np.array([[10.0, 20, 30, 40]]), labels=[long])
    (text, (x0, _, x1, _)), = vis.drawn["labels"]
    assert text.endswith("\u2026") and long.startswith(text[:-1]) and len(text) > 2
    assert 0 <= x0 < x1 <= 80
    font = _font(20)
    assert fit_text("ok", font, 1000) == ("ok", font.getlength("ok"))


def test_bad_label_inputs_are_refused():
    vis = Visualizer(np.zeros((60, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="panel"):
        vis._draw_labels(["a"], np.array([[0.0, 0, 5, 5]]), np.zeros((1, 3)), panel=(10, 0, 5, 60))
    with pytest.raises(ValueError, match="2 texts, 1 boxes"):
        vis._draw_labels(["a", "b"], np.array([[0.0, 0, 5, 5]]), np.zeros((2, 3)))


def test_hundred_labels_are_cheap():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (100, 2))
    inst = Instances((512, 512))
    inst.pred_boxes = Boxes(torch.tensor(np.concatenate([xy, xy + rng.uniform(20, 110, (100, 2))], 1),
                                         dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0, 1, 100), dtype=torch.float32)
    inst.pred_classes = torch.tensor(rng.integers(0, 3, 100))
    img = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)

    def cost(show_labels):
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            Visualizer(img, _meta()).draw_instance_predictions(inst, show_labels=show_labels).get_image()
            best = min(best, time.perf_counter() - t)
        return best

    label_part = cost(True) - cost(False)  # placement and rendering of the 100 labels
    # ~50 ms on an idle core; the bound leaves room for a busy machine, not for a slow algorithm.
    assert label_part < 0.3, f"100 labels took {label_part * 1e3:.0f} ms"


def test_non_finite_box_is_refused():
    with pytest.raises(ValueError, match="finite"):
        LabelPlacer().place(10, 5, (0.0, float("nan"), 4.0, 4.0), (0, 0, 50, 50))

"""Visualizer on synthetic inputs: what is drawn, where, and that the pictures are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import Metadata
from workbench.structures import Boxes, Instances
from workbench.vis import Visualizer, box_iou_matrix, match_by_iou
from workbench.vis.visualizer import _overlap_area


def _image(h=120, w=160):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _meta(**kw):
    m = Metadata(name="vis_test")
    m.set(thing_classes=["cat", "dog", "bird"], thing_colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], **kw)
    return m


def _preds(h=120, w=160):
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([[10., 10, 50, 50], [12, 12, 52, 52], [14, 14, 54, 54],
                                          [90, 60, 150, 110], [100, 20, 140, 40]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.7, 0.4, 0.2])
    inst.pred_classes = torch.tensor([0, 1, 0, 2, 1])
    masks = torch.zeros(5, h, w, dtype=torch.bool)
    masks[3, 70:100, 100:140] = True
    inst.pred_masks = masks
    return inst


@pytest.mark.parametrize("thresh,expected", [(0.0, 5), (0.5, 3), (0.75, 2), (0.95, 0)])
def test_score_filter_counts_boxes(thresh, expected):
    vis = Visualizer(_image(), _meta())
    vis.draw_instance_predictions(_preds(), score_thresh=thresh)
    assert len(vis.drawn["boxes"]) == expected
    assert len(vis.drawn["labels"]) == expected
    assert list(vis.drawn["kept"]) == list(range(expected))


def test_class_filter_and_label_text():
    vis = Visualizer(_image(), _meta())
    vis.draw_instance_predictions(_preds(), classes=[1])
    texts = sorted(t for t, _ in vis.drawn["labels"])
    assert texts == ["dog 20%", "dog 80%"]
    np.testing.assert_allclose(vis.drawn["box_colors"], [[0, 1, 0], [0, 1, 0]])


def test_labels_do_not_overlap_and_stay_inside():
    vis = Visualizer(_image(), _meta())
    vis.draw_instance_predictions(_preds())
    rects = [r for _, r in vis.drawn["labels"]]
    for i in range(len(rects)):
        x0, y0, x1, y1 = rects[i]
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120
        for j in range(i):
            assert _overlap_area(rects[i], rects[j]) == 0, (rects[i], rects[j])


def test_masks_blend_inside_only_and_toggle():
    img = np.full((120, 160, 3), 128, np.uint8)
    on = Visualizer(img, _meta()).draw_instance_predictions(_preds(), show_labels=False).get_image()
    off = Visualizer(img, _meta()).draw_instance_predictions(_preds(), show_labels=False,
                                                             show_masks=False).get_image()
    assert on.shape == (120, 160, 3) and on.dtype == np.uint8
    inside = on[80:90, 110:130].astype(int)
    assert (inside[..., 2] > 160).all() and (inside[..., 0] < 100).all()  # class 2 is blue
    np.testing.assert_array_equal(on[115:, :5], off[115:, :5])  # far from everything: untouched
    np.testing.assert_array_equal(off[80:90, 110:130], img[80:90, 110:130])


def test_bgr_input_and_scale():
    img = _image()
    a = Visualizer(img, input_format="RGB").output.get_image()
    b = Visualizer(np.ascontiguousarray(img[:, :, ::-1]), input_format="BGR").output.get_image()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, img)  # no artists: the image comes back unchanged
    big = Visualizer(img, scale=2.0).draw_instance_predictions(_preds()).get_image()
    assert big.shape == (240, 320, 3)
    chw = torch.from_numpy(img).permute(2, 0, 1).float()  # (3, H, W) tensors are accepted
    np.testing.assert_array_equal(Visualizer(chw).output.get_image(), img)


def test_png_is_deterministic_and_save_is_atomic(tmp_path):
    p1 = Visualizer(_image(), _meta()).draw_instance_predictions(_preds()).to_png_bytes()
    out = Visualizer(_image(), _meta()).draw_instance_predictions(_preds())
    assert out.to_png_bytes() == p1
    assert p1[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"tIME" not in p1 and b"Software" not in p1
    path = tmp_path / "x.png"
    out.save(str(path))
    assert path.read_bytes() == p1
    assert [f.name for f in tmp_path.iterdir()] == ["x.png"]
    p2 = Visualizer(_image(), _meta()).draw_instance_predictions(_preds(), score_thresh=0.5).to_png_bytes()
    assert p2 != p1


def test_keypoints_threshold_and_skeleton():
    meta = _meta(keypoint_names=["a", "b", "c"],
                 keypoint_connection_rules=[("a", "b", (255, 0, 0)), ("b", "c", (0, 255, 0))])
    inst = Instances((120, 160))
    inst.pred_boxes = Boxes(torch.tensor([[10., 10, 60, 60], [80, 10, 150, 90]]))
    inst.scores = torch.tensor([0.9, 0.8])
    inst.pred_classes = torch.tensor([0, 0])
    inst.pred_keypoints = torch.tensor([[[20., 20, 1.0], [30, 30, 1.0], [40, 40, 0.01]],
                                        [[90, 20, 1.0], [100, 30, 1.0], [110, 40, 1.0]]])
    vis = Visualizer(_image(), meta)
    vis.draw_instance_predictions(inst)
    assert len(vis.drawn["keypoints"]) == 5  # one point under the 0.05 threshold
    assert vis.drawn["skeleton"] == 3  # a-b of both, b-c of the second
    vis = Visualizer(_image(), meta)
    vis.draw_instance_predictions(inst, kpt_thresh=2.0)
    assert len(vis.drawn["keypoints"]) == 0 and vis.drawn["skeleton"] == 0
    vis = Visualizer(_image(), meta)
    vis.draw_instance_predictions(inst, show_keypoints=False)
    assert len(vis.drawn["keypoints"]) == 0


def test_sem_seg_and_panoptic():
    meta = _meta(stuff_classes=["sky", "grass"], stuff_colors=[[0, 0, 255], [0, 255, 0]])
    seg = np.zeros((120, 160), np.int64)
    seg[60:] = 1
    seg[:10, :10] = 255  # ignored
    img = np.zeros((120, 160, 3), np.uint8)
    vis = Visualizer(img, meta)
    out = vis.draw_sem_seg(seg, alpha=1.0, show_labels=False).get_image()
    assert tuple(out[30, 80]) == (0, 0, 255) and tuple(out[100, 80]) == (0, 255, 0)
    assert tuple(out[5, 5]) == (0, 0, 0)
    assert [s["category_id"] for s in vis.drawn["segments"]] == [0, 1]
    logits = torch.zeros(2, 120, 160)
    logits[1, 60:] = 1.0
    vis2 = Visualizer(img, meta)
    vis2.draw_sem_seg(logits)  # (K, H, W) scores: argmax
    assert [s["category_id"] for s in vis2.drawn["segments"]] == [0, 1]

    pan = np.zeros((120, 160), np.int64)
    pan[:60] = 1
    pan[20:40, 20:60] = 2
    info = [{"id": 1, "category_id": 0, "isthing": False},
            {"id": 2, "category_id": 2, "isthing": True, "score": 0.9}]
    vis3 = Visualizer(img, meta)
    out = vis3.draw_panoptic_seg(pan, info, alpha=1.0).get_image()
    assert tuple(out[55, 150]) == (0, 0, 255)  # stuff "sky"
    assert tuple(out[30, 25]) == (0, 0, 255)  # thing class 2 has thing colour blue too
    assert sorted(t for t, _ in vis3.drawn["labels"]) == ["bird 90%", "sky"]
    assert len(vis3.drawn["segments"]) == 2


def test_proposals_topk_coloured_by_objectness():
    inst = Instances((120, 160))
    inst.proposal_boxes = Boxes(torch.tensor([[0., 0, 10, 10], [20, 20, 40, 40], [50, 50, 80, 80]]))
    inst.objectness_logits = torch.tensor([-2.0, 5.0, 0.0])
    vis = Visualizer(_image())
    vis.draw_proposals(inst, topk=2)
    assert len(vis.drawn["boxes"]) == 2
    np.testing.assert_allclose(vis.drawn["boxes"][-1], [20, 20, 40, 40])  # strongest drawn last
    from matplotlib import colormaps

    np.testing.assert_allclose(vis.drawn["box_colors"][-1], colormaps["viridis"](1 / (1 + np.exp(-5.0)))[:3])


def test_anchors_of_a_cell():
    hi, wi, a = 3, 4, 2
    anchors = torch.arange(hi * wi * a * 4, dtype=torch.float32).view(-1, 4)
    vis = Visualizer(_image())
    vis.draw_anchors(anchors, (hi, wi), (1, 2), box_scale=0.5)
    rows = (1 * wi + 2) * a + np.arange(a)
    np.testing.assert_allclose(vis.drawn["boxes"], anchors[rows].numpy() * 0.5)
    with pytest.raises(IndexError, match="outside"):
        vis.draw_anchors(anchors, (hi, wi), (3, 0))


def test_compare_matches_with_iou():
    gt = Instances((120, 160))
    gt.gt_boxes = Boxes(torch.tensor([[10., 10, 50, 50], [90, 60, 150, 110], [0, 100, 20, 119]]))
    gt.gt_classes = torch.tensor([0, 2, 1])
    pred = _preds()
    out = Visualizer(_image(240, 320), _meta()).compare(gt, pred, iou_thresh=0.5)  # room for the texts
    matches = out.drawn["matches"]
    assert [(g, p) for g, p, _ in matches] == [(0, 0), (1, 3)]
    assert matches[0][2] == pytest.approx(1.0)
    assert out.drawn["missed"] == [2]
    # Row 1 (a dog) lies on the cat of gt 0, which row 0 took: a mislabel, not a false positive.
    assert [(g, p) for g, p, _ in out.drawn["mislabels"]] == [(0, 1)]
    assert out.drawn["false_positives"] == [2, 4]  # row 2: a second cat on gt 0; row 4: nothing
    assert out.get_image().shape == (240, 2 * 320 + 8, 3)
    texts = [t for t, _ in out.drawn["labels"]]
    assert "cat 90% IoU 1.00" in texts and "dog missed" in texts
    assert "dog 80% mislabel (gt: cat)" in texts and "cat 70% FP duplicate" in texts
    assert "dog 20% FP" in texts
    assert "cat" in texts  # gt 0 was found, so it is not "mislabelled"


def _one_gt_one_pred(gt_cls, pred_cls, pred_box=(20.0, 20, 60, 60)):
    gt = Instances((120, 160))
    gt.gt_boxes = Boxes(torch.tensor([[20.0, 20, 60, 60]]))
    gt.gt_classes = torch.tensor([gt_cls])
    pred = Instances((120, 160))
    pred.pred_boxes = Boxes(torch.tensor([pred_box]))
    pred.scores = torch.tensor([0.9])
    pred.pred_classes = torch.tensor([pred_cls])
    return gt, pred


def test_compare_mislabel_is_not_a_false_positive():
    gt, pred = _one_gt_one_pred(0, 1)  # a cat predicted as a dog, same box
    out = Visualizer(_image(240, 320), _meta()).compare(gt, pred)
    assert out.drawn["matches"] == []
    assert [(g, p) for g, p, _ in out.drawn["mislabels"]] == [(0, 0)]
    assert out.drawn["mislabels"][0][2] == pytest.approx(1.0)
    assert out.drawn["false_positives"] == []
    assert out.drawn["missed"] == [0]  # no same-class prediction found it
    texts = [t for t, _ in out.drawn["labels"]]
    assert texts == ["cat mislabelled as dog", "dog 90% mislabel (gt: cat)"]
    # Without class matching any overlap is a match, so nothing is mislabelled.
    loose = Visualizer(_image(), _meta()).compare(gt, pred, match_classes=False)
    assert [(g, p) for g, p, _ in loose.drawn["matches"]] == [(0, 0)] and loose.drawn["mislabels"] == []


@pytest.mark.parametrize("pred_box,kind", [((22.0, 22, 62, 62), "mislabel"),  # IoU 0.82
                                           ((45.0, 45, 85, 85), "FP")])  # IoU 0.08
def test_compare_mislabel_needs_the_iou_threshold(pred_box, kind):
    gt, pred = _one_gt_one_pred(2, 0, pred_box)
    out = Visualizer(_image(240, 320), _meta()).compare(gt, pred, iou_thresh=0.5)
    assert (len(out.drawn["mislabels"]), out.drawn["false_positives"]) == \
        ((1, []) if kind == "mislabel" else (0, [0]))
    gt_text = out.drawn["labels"][0][0]
    assert gt_text == ("bird mislabelled as cat" if kind == "mislabel" else "bird missed")


def test_match_by_iou_is_greedy_by_score_within_class():
    rng = np.random.default_rng(3)
    for _ in range(20):
        g = rng.uniform(0, 50, (6, 2)); g = np.concatenate([g, g + rng.uniform(5, 30, (6, 2))], 1)
        p = g[rng.integers(0, 6, 9)] + rng.normal(0, 3, (9, 4))
        s, gc, pc = rng.uniform(0, 1, 9), rng.integers(0, 2, 6), rng.integers(0, 2, 9)
        iou = box_iou_matrix(g, p)
        want, taken = [], set()  # a plain greedy loop as the reference
        for j in np.argsort(-s, kind="stable"):
            cands = [(iou[i, j], -i) for i in range(6) if i not in taken and gc[i] == pc[j]]
            if cands and max(cands)[0] >= 0.5:
                i = -max(cands)[1]
                taken.add(i)
                want.append((i, int(j)))
        got = match_by_iou(g, p, s, gc, pc, iou_thresh=0.5)
        assert [(a, b) for a, b, _ in got] == want
        for a, b, v in got:
            assert v == pytest.approx(iou[a, b], abs=1e-6)
    iou = box_iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10]])
    assert iou[0, 0] == pytest.approx(1 / 3)
    assert match_by_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]], iou_thresh=0.5) == []


def test_draw_dataset_dict():
    dic = {"height": 120, "width": 160, "annotations": [
        {"bbox": [10, 10, 40, 30], "bbox_mode": 1, "category_id": 1,
         "segmentation": [[10, 10, 50, 10, 50, 40, 10, 40]], "keypoints": [20, 20, 2, 30, 30, 0, 40, 35, 1]},
        {"bbox": [80, 50, 150, 100], "bbox_mode": 0, "category_id": 2,
         "segmentation": [[80, 50, 150, 50, 150, 100, 80, 100]], "keypoints": [90, 60, 2, 0, 0, 0, 0, 0, 0]},
    ]}
    vis = Visualizer(_image(), _meta())
    vis.draw_dataset_dict(dic)
    np.testing.assert_allclose(vis.drawn["boxes"], [[10, 10, 50, 40], [80, 50, 150, 100]])
    assert vis.drawn["masks"] == 2
    assert len(vis.drawn["keypoints"]) == 3  # v > 0 only
    assert sorted(t for t, _ in vis.drawn["labels"]) == ["bird", "dog"]


def test_bad_inputs_name_the_culprit():
    with pytest.raises(ValueError, match="input_format"):
        Visualizer(_image(), input_format="HSV")
    with pytest.raises(ValueError, match="image of shape"):
        Visualizer(np.zeros((4, 5, 6, 7)))
    vis = Visualizer(_image())
    with pytest.raises(ValueError, match="masks of shape"):
        vis.draw_masks(np.zeros((1, 10, 10), bool), [[1, 0, 0]])


def test_png_encoder_round_trips():
    import io

    from PIL import Image

    from workbench.vis import encode_png

    img = _image(7, 9)
    back = np.asarray(Image.open(io.BytesIO(encode_png(img))).convert("RGB"))
    np.testing.assert_array_equal(back, img)
    with pytest.raises(ValueError, match="H, W, 3"):
        encode_png(np.zeros((4, 4), np.uint8))


def test_artists_land_on_image_pixels_without_an_axes():
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    v = Visualizer(img)
    v.draw_boxes(np.array([[10.0, 5.0, 30.0, 25.0]]), [[1.0, 0.0, 0.0]], linewidth=1.0)
    v.output.scatter([[50.0, 35.0]], size=9.0, facecolors=[[0.0, 1.0, 0.0]])
    out = v.output.get_image()
    assert v.output.fig.axes == []  # nothing built an Axes
    red = out[..., 0] > 128
    ys, xs = np.nonzero(red)
    # The box outline, in image pixels with y down: its edges at x 10 / 30 and y 5 / 25.
    assert abs(xs.min() - 10) <= 1 and abs(xs.max() - 30) <= 1
    assert abs(ys.min() - 5) <= 1 and abs(ys.max() - 25) <= 1
    green = np.argwhere(out[..., 1] > 128)
    assert len(green) and np.abs(green.mean(0) - [35.0, 50.0]).max() <= 1.0  # (y, x) of the marker
    # Drawing of one's own goes through the lazily made Axes, in the same coordinates.
    v.output.ax.plot([0, 59], [39, 39], color=(0.0, 0.0, 1.0), linewidth=2)
    again = v.output.get_image()
    assert len(v.output.fig.axes) == 1
    assert (again[-2:, :, 2] > 128).mean() > 0.5 and not (out[..., 2] > 128).any()

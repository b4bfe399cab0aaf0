"""Visualizer colour modes (detectron2's ``instance_mode``), single binary / soft masks, and
instance masks given as polygons."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import Metadata
from workbench.structures import Boxes, Instances
from workbench.vis.masks import connected_components, masks_to_array
from workbench.vis.visualizer import ColorMode, Visualizer

H, W = 60, 80


def _colourful(h=H, w=W):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # strongly red: grey is easy to tell apart
    img[..., 1] = 40
    return img


def _meta():
    m = Metadata(name="vis_masks_test")
    m.set(thing_classes=["a", "b"], thing_colors=[[0, 0, 255], [0, 255, 0]])
    return m


def _preds():
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10, 30, 30]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    inst.pred_masks = masks
    return inst


def _is_grey(px):
    return np.abs(px.astype(int) - px.astype(int).mean(-1, keepdims=True)).max() <= 1


def test_color_mode_values_are_detectron2s():
    assert [(m.name, m.value) for m in ColorMode] == [("IMAGE", 0), ("SEGMENTATION", 1),
                                                      ("IMAGE_BW", 2)]


def test_image_bw_greys_out_the_background_only():
    img = _colourful()
    out = Visualizer(img, _meta(), instance_mode=ColorMode.IMAGE_BW).draw_instance_predictions(
        _preds(), show_labels=False).get_image()
    assert _is_grey(out[50:58, 50:78])  # far outside the mask: grey, (200 + 40 + 0) / 3 = 80
    assert abs(int(out[55, 70, 0]) - 80) <= 1
    inside = out[15:25, 15:25].astype(int)  # blended with blue at alpha 0.3: still reddish
    assert (inside[..., 0] > 120).all() and (inside[..., 2] > 60).all()
    plain = Visualizer(img, _meta()).draw_instance_predictions(_preds(), show_labels=False)
    assert not _is_grey(plain.get_image()[50:58, 50:78])


def test_image_bw_positional_like_detectron2_and_no_masks_greys_everything():
    preds = _preds()
    preds.remove("pred_masks")
    vis = Visualizer(_colourful(), _meta(), 1.0, ColorMode.IMAGE_BW)  # detectron2's argument order
    out = vis.draw_instance_predictions(preds, show_labels=False).get_image()
    assert _is_grey(out[40:58, 40:78]) and _is_grey(out[0:8, 0:8])


def test_segmentation_mode_is_more_opaque():
    img = np.full((H, W, 3), 128, np.uint8)
    seg = Visualizer(img, _meta(), instance_mode=ColorMode.SEGMENTATION)
    seg_px = seg.draw_instance_predictions(_preds(), show_labels=False).get_image()[20, 20]
    img_px = Visualizer(img, _meta()).draw_instance_predictions(_preds(), show_labels=False).get_image()[20, 20]
    # Blue (0, 0, 255) over 128 grey: 0.8 opacity vs 0.5.
    assert abs(int(seg_px[2]) - round(128 * 0.2 + 255 * 0.8)) <= 1
    assert abs(int(img_px[2]) - round(128 * 0.5 + 255 * 0.5)) <= 1


def test_panoptic_image_bw_greys_void_pixels():
    pan = np.zeros((H, W), np.int64)
    pan[:, : W // 2] = 1
    vis = Visualizer(_colourful(), _meta(), instance_mode=ColorMode.IMAGE_BW)
    out = vis.draw_panoptic_seg(pan, [{"id": 1, "category_id": 0, "isthing": True}],
                                show_labels=False).get_image()
    assert _is_grey(out[:, W // 2 + 2:])
    assert not _is_grey(out[:, : W // 2 - 2])


def test_draw_binary_mask_drops_small_parts_and_outlines():
    img = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 10:40] = 1  # 600 pixels
    mask[50, 70] = mask[51, 71] = 1  # 2 pixels, diagonal: one part below area_threshold
    vis = Visualizer(img)
    out = vis.draw_binary_mask(mask, color="red", edge_color=(0, 0, 1), text="thing",
                               alpha=0.5).get_image()
    assert tuple(out[20, 25]) == (178, 50, 50)  # red at alpha 0.5 over 100
    assert tuple(out[29, 12]) == (0, 0, 255)  # boundary: the edge colour, opaque
    assert tuple(out[50, 70]) == (100, 100, 100)  # small part not drawn
    assert vis.drawn["masks"] == 1
    (text, (x0, y0, x1, y1)), = vis.drawn["labels"]
    # One label, at the mask's median pixel (24.5, 19.5), not on the small part.
    assert text == "thing" and x0 == pytest.approx(24.5) and y1 == pytest.approx(19.5)


def test_draw_binary_mask_area_threshold_none_keeps_everything_and_checks_shape():
    mask = np.zeros((H, W), bool)
    mask[50, 70] = True
    out = Visualizer(np.full((H, W, 3), 100, np.uint8)).draw_binary_mask(
        mask, color=(0, 1, 0), area_threshold=None).get_image()
    assert tuple(out[50, 70]) == (0, 255, 0)  # a one-pixel part is all edge
    with pytest.raises(ValueError, match="binary_mask.*60, 80"):
        Visualizer(np.zeros((H, W, 3), np.uint8)).draw_binary_mask(np.zeros((5, 5)))


def test_draw_soft_mask_opacity_follows_values():
    img = np.zeros((H, W, 3), np.uint8)
    soft = np.zeros((H, W), np.float32)
    soft[:, :40] = 1.0
    soft[:, 40:] = 0.25
    vis = Visualizer(img)
    out = vis.draw_soft_mask(soft, color=(1.0, 1.0, 1.0), text="soft", alpha=0.8).get_image()
    assert abs(int(out[5, 5, 0]) - round(255 * 0.8)) <= 1
    assert abs(int(out[5, 60, 0]) - round(255 * 0.2)) <= 1
    assert [t for t, _ in vis.drawn["labels"]] == ["soft"]  # on the > 0.5 part only
    (_, (x0, _, x1, _)), = vis.drawn["labels"]
    assert x0 < 40


def test_overlay_instances_accepts_polygons_per_instance():
    img = np.full((H, W, 3), 128, np.uint8)
    square = [10.0, 10, 30, 10, 30, 30, 10, 30]
    triangle = np.array([[50.0, 40], [70, 40], [60, 55]])  # (N, 2) also accepted
    polygons = [[square], [triangle.reshape(-1).tolist(), [0, 0, 1, 1]]]  # 2-point polygon dropped
    vis = Visualizer(img)
    out = vis.overlay_instances(masks=polygons, labels=["sq", "tri"],
                                assigned_colors=[[1, 0, 0], [0, 0, 1]]).get_image()
    assert vis.drawn["masks"] == 2
    assert out[20, 20, 0] > 180 and out[20, 20, 2] < 100  # red square
    assert out[45, 60, 2] > 180 and out[45, 60, 0] < 100  # blue triangle
    np.testing.assert_array_equal(out[55:, :5], img[55:, :5])
    assert sorted(t for t, _ in vis.drawn["labels"]) == ["sq", "tri"]


def test_masks_to_array_forms_agree():
    from workbench.structures import BitMasks, PolygonMasks

    square = [[10.0, 10, 30, 10, 30, 30, 10, 30]]
    from_polys = masks_to_array([square], H, W)
    from_struct = masks_to_array(PolygonMasks([square]), H, W)
    from_bits = masks_to_array(BitMasks(torch.from_numpy(from_polys)), H, W)
    from_arrays = masks_to_array([from_polys[0].astype(np.uint8)], H, W)
    for other in (from_struct, from_bits, from_arrays):
        np.testing.assert_array_equal(other, from_polys)
    assert from_polys.shape == (1, H, W) and 300 < from_polys.sum() < 500
    with pytest.raises(ValueError, match="Instance mask 0"):
        masks_to_array([np.zeros((3, 3))], H, W)


def test_connected_components_eight_connectivity():
    m = np.zeros((6, 8), bool)
    m[0, 0] = m[1, 1] = True  # diagonal neighbours: one part
    m[3:5, 3:6] = True
    m[0, 7] = True
    labels, areas = connected_components(m)
    assert labels[0, 0] == labels[1, 1] != 0
    assert sorted(areas[1:].tolist()) == [1, 2, 6]
    assert (labels > 0).sum() == m.sum()

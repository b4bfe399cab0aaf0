"""Feature views against the traced tensors they show: one shape convention, colour bars, the
trace's colour order and names, cell lookups, and the weight-statistics flags."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from inspect_fixtures import fixture, traced
from workbench import vis
from workbench.vis.features import channel_vector_plot, feature_vector, pixel_to_cell


@pytest.fixture(scope="module")
def mask_trace():
    model, _, _ = fixture("mask_rcnn_R_50_FPN")
    return model, traced("mask_rcnn_R_50_FPN")


@pytest.fixture(scope="module")
def shapes_trace():
    """The embedded Shapes model (RGB input; masks, keypoints, class and keypoint names) traced
    on one validation image given at its original size, so the trace's image is the file's."""
    from workbench import inspect as wi
    from workbench import model_zoo
    from workbench.data import MetadataCatalog
    from workbench.data.datasets.shapes import get_shapes_dicts
    from workbench.data.detection_utils import read_image

    model = model_zoo.get("Shapes/panoptic_kp_R_50_FPN_small.yaml", trained=True).eval()
    d = get_shapes_dicts("val", 1)[0]
    rgb = read_image(d["file_name"], format="RGB")  # (H, W, 3) uint8
    inputs = [{"image": torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float(),
               "height": rgb.shape[0], "width": rgb.shape[1]}]
    meta = MetadataCatalog.get("shapes_val")
    with torch.no_grad():
        tr = wi.trace(model, inputs, class_names=meta.thing_classes)
    return model, tr, rgb, meta


def _extra_axes(out) -> int:
    """Axes of the figure beyond its panels: its colour bars."""
    return len(out.fig.axes) - len(out.axes)


# -- one shape convention ------------------------------------------------------------------------

def test_level_grid_shows_the_trace_tensors(mask_trace):
    _, tr = mask_trace
    feats = tr.backbone.features
    out = vis.level_grid(feats, image=1, channel=3)
    assert list(out.drawn["arrays"]) == list(feats)
    for name, f in feats.items():
        np.testing.assert_array_equal(out.drawn["arrays"][name], f[1, 3].numpy())
    assert out.drawn["colorbars"] == ["activation (channel 3)"] * len(feats)
    assert _extra_axes(out) == len(feats)
    out = vis.level_grid(feats, image=0, reduce="norm", levels=["p4"])
    np.testing.assert_allclose(out.drawn["arrays"]["p4"], feats["p4"][0].norm(dim=0).numpy(), rtol=1e-5)
    assert out.drawn["colorbars"] == ["L2 norm over channels"]
    img = out.get_image()
    assert img.ndim == 3 and img.dtype == np.uint8
    assert 250 <= img.shape[1] <= 450 and img.shape[0] <= 450  # one map: a compact picture
    with pytest.raises(IndexError, match="channel"):
        vis.level_grid(feats, channel=10_000)


def test_every_shape_form_gives_the_same_picture(mask_trace):
    _, tr = mask_trace
    p3 = tr.backbone.features["p3"]  # (N, C, H, W)
    # Level-named forms: the trace, a dict of batches, a dict of one image's maps.
    named = [dict(features=tr, image=1), dict(features={"p3": p3}, image=1),
             dict(features={"p3": p3[1]})]
    # Lone tensors (the level "feature"): a batch, one image, an ndarray.
    lone = [dict(features=p3, image=1), dict(features=p3[1]), dict(features=p3[1].numpy())]
    for forms in (named, lone):
        level = {"level": "p3"} if forms is named else {}
        levels = {"levels": ["p3"]} if forms is named else {}
        pics = {"grid": [], "montage": []}
        hists, pcas = [], []
        for f in forms:
            feats, image = f["features"], f.get("image", 0)
            pics["grid"].append(vis.level_grid(feats, image=image, reduce="max", **levels))
            pics["montage"].append(vis.channel_montage(feats, [0, 5, 9], image=image, **level))
            pcas.append(vis.pca_image(feats, image=image, **levels).drawn["arrays"])
            hists.append(vis.activation_histograms(feats, image=image, bins=16, **levels).drawn["hist"])
            np.testing.assert_array_equal(vis.feature_map(feats, 4, image=image, **level), p3[1, 4].numpy())
            np.testing.assert_array_equal(vis.pca_rgb(feats, image=image, **level), list(pcas[-1].values())[0])
        for kind, outs in pics.items():  # the same pixels
            for out in outs[1:]:
                np.testing.assert_array_equal(out.get_image(), outs[0].get_image(), err_msg=kind)
        for pca, hist in zip(pcas[1:], hists[1:]):  # the same arrays (titles aside)
            np.testing.assert_array_equal(list(pca.values())[0], list(pcas[0].values())[0])
            np.testing.assert_array_equal(list(hist.values())[0][0], list(hists[0].values())[0][0])
    # Both groups show the same arrays.
    a = vis.level_grid(tr, image=1, levels=["p3"]).drawn["arrays"]["p3"]
    np.testing.assert_array_equal(vis.level_grid(p3, image=1).drawn["arrays"]["feature"], a)
    np.testing.assert_allclose(a, p3[1].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    # source="bottom_up" reads the FPN's bottom-up maps.
    out = vis.activation_histograms(tr, image=2, source="bottom_up", bins=10)
    assert list(out.drawn["hist"]) == list(tr.backbone.bottom_up)
    assert out.drawn["hist"]["res3"][0].sum() == tr.backbone.bottom_up["res3"][2].numel()


@pytest.mark.parametrize("call, error, match", [
    (lambda tr: vis.level_grid(torch.zeros(4, 5)), ValueError, r"shape \(4, 5\).*\(C, H, W\).*\(N, C, H, W\)"),
    (lambda tr: vis.pca_image(torch.zeros(1, 2, 3, 4, 5)), ValueError, r"shape \(1, 2, 3, 4, 5\)"),
    (lambda tr: vis.level_grid({"p2": np.zeros((7, 7))}), ValueError, r"features\['p2'\] has shape \(7, 7\)"),
    (lambda tr: vis.channel_montage({}), ValueError, "features is an empty dict"),
    (lambda tr: vis.activation_histograms({}), ValueError, "activations is an empty dict"),
    (lambda tr: vis.level_grid(tr, image=4), IndexError, r"image=4 out of range.*\(4, 64, .*0 <= image < 4"),
    (lambda tr: vis.channel_montage(torch.zeros(3, 4, 4), image=1), IndexError, r"image=1 given.*\(3, 4, 4\)"),
    (lambda tr: vis.level_grid(tr, levels=["p9"]), ValueError, r"unknown level 'p9'.*'p2'"),
    (lambda tr: vis.channel_montage(tr), ValueError, "level: features has levels"),
    (lambda tr: vis.feature_map(torch.zeros(3, 4, 4), level="p3"), ValueError, r"level='p3'.*\(3, 4, 4\)"),
    (lambda tr: vis.level_grid({"p2": torch.zeros(1, 3, 4, 4)}, source="bottom_up"), ValueError, "source"),
    (lambda tr: vis.level_grid(tr, source="top_down"), ValueError, "source must be one of"),
    (lambda tr: vis.level_grid([torch.zeros(3, 4, 4)]), TypeError, "got list"),
    (lambda tr: vis.channel_montage(tr, [70], level="p3"), IndexError, r"channels: 70.*64 channels"),
])
def test_bad_shapes_raise_naming_what_was_expected(mask_trace, call, error, match):
    _, tr = mask_trace
    with pytest.raises(error, match=match):
        call(tr)


# -- colour bars, colour order and names ------------------------------------------------------------

def test_colour_bars_on_every_heat_map(mask_trace, shapes_trace):
    model, tr = mask_trace
    out = vis.channel_montage(tr, level="p4", image=2)
    assert out.drawn["colorbars"] == ["per-channel min-max"] and _extra_axes(out) == 1
    out = vis.rois_per_level(tr, model, image=0)
    assert out.drawn["colorbars"] == ["mean |activation|"] * len(out.drawn["counts"])
    assert _extra_axes(out) == len(out.drawn["counts"])
    _, str_, _, meta = shapes_trace
    out = vis.mask_logits_view(str_, 0)
    assert out.drawn["colorbars"] == ["mask logit", "mask probability"] and _extra_axes(out) == 2
    out = vis.keypoint_heatmaps_view(str_, 0, metadata=meta, value="softmax")
    assert out.drawn["colorbars"] == ["probability (softmax over 56x56)"] and _extra_axes(out) == 1
    assert out.get_image().shape[0] < 300


def test_mask_view_keeps_the_trace_colour_order(shapes_trace):
    model, tr, rgb, _ = shapes_trace
    assert tr.input_format == model.input_format == "RGB"
    out = vis.mask_logits_view(tr, 0)
    x0, y0, x1, y1 = np.floor(tr.detection(0).box.numpy()).astype(int)
    crop = out.drawn["crop"]
    np.testing.assert_array_equal(crop, rgb[y0: y0 + crop.shape[0], x0: x0 + crop.shape[1]])
    assert (crop[..., 0] != crop[..., 2]).any()  # a swap would show
    bgr = dataclasses.replace(tr, input_format="BGR")  # the same pixels read by a BGR model
    np.testing.assert_array_equal(vis.mask_logits_view(bgr, 0).drawn["crop"], crop[..., ::-1])
    np.testing.assert_array_equal(vis.mask_logits_view(tr, 0, input_format="BGR").drawn["crop"], crop[..., ::-1])
    unknown = dataclasses.replace(tr, input_format=None, model_ref=None)
    for view in (vis.mask_logits_view, vis.keypoint_heatmaps_view):
        with pytest.raises(ValueError, match="input_format='RGB' or 'BGR'"):
            view(unknown, 0)
    with pytest.raises(ValueError, match="input_format"):
        vis.trace_image(unknown, 0)


def test_mask_view_titles_the_class_by_name(shapes_trace, mask_trace):
    _, tr, _, meta = shapes_trace
    d = tr.detection(1)
    out = vis.mask_logits_view(tr, 1)
    name = meta.thing_classes[d.cls]
    assert out.drawn["title"] == f"{name} (class {d.cls}): mask logits 28x28"
    np.testing.assert_array_equal(out.drawn["logits"], d.mask_logits[d.cls].numpy())
    _, unnamed = mask_trace  # no class names: the id alone
    d = unnamed.detection(2)
    out = vis.mask_logits_view(unnamed, 2)
    assert out.drawn["title"].startswith(f"class {d.cls}: mask logits")
    np.testing.assert_array_equal(out.drawn["logits"], d.mask_logits[d.cls].numpy())
    assert out.drawn["pasted"].any()


def test_keypoint_panels_are_named(shapes_trace):
    _, tr, _, meta = shapes_trace
    names = list(meta.keypoint_names)
    hm = tr.detection(0).keypoint_heatmap
    out = vis.keypoint_heatmaps_view(tr, 0, metadata=meta)
    assert out.drawn["titles"] == names and [ax.get_title() for ax in out.axes[:len(names)]] == names
    np.testing.assert_array_equal(out.drawn["heatmaps"], hm.numpy())
    assert out.drawn["colorbars"] == ["keypoint logit"]
    out = vis.keypoint_heatmaps_view(tr, 0, keypoints=[4, 1], names=["a", "b", "c", "d", "e"], value="softmax")
    assert out.drawn["titles"] == ["e", "b"]
    want = torch.softmax(hm[[4, 1]].flatten(1), dim=1).reshape(2, *hm.shape[1:]).numpy()
    np.testing.assert_allclose(out.drawn["values"], want, rtol=1e-4, atol=1e-7)
    assert vis.keypoint_heatmaps_view(tr, 0, keypoints=[2]).drawn["titles"] == ["keypoint 2"]
    with pytest.raises(ValueError, match="names has 2 names.*K=5"):
        vis.keypoint_heatmaps_view(tr, 0, names=["a", "b"])
    with pytest.raises(IndexError, match=r"keypoints: 7.*\[0, 5\)"):
        vis.keypoint_heatmaps_view(tr, 0, keypoints=[7])


# -- cells and channel vectors ---------------------------------------------------------------------

def test_feature_vector_is_the_tensor_slice(mask_trace):
    _, tr = mask_trace
    p4 = tr.backbone.features["p4"]
    for feats in (tr, tr.backbone.features, p4):
        level = None if feats is p4 else "p4"
        np.testing.assert_array_equal(feature_vector(feats, 2, level, 3, 5), p4[2, :, 3, 5].numpy())
    np.testing.assert_array_equal(feature_vector(tr, 1, "res3", 0, 0, source="bottom_up"),
                                  tr.backbone.bottom_up["res3"][1, :, 0, 0].numpy())
    h, w = p4.shape[-2:]
    with pytest.raises(IndexError, match=rf"cell y={h} out of range for level 'p4' of {h} x {w}"):
        feature_vector(tr, 0, "p4", h, 0)
    with pytest.raises(IndexError, match=r"cell x=-1 .*0 <= x < "):
        feature_vector(tr, 0, "p4", 0, -1)


def test_pixel_to_cell(shapes_trace):
    _, tr, _, _ = shapes_trace
    assert tr.feature_strides["p3"] == 8 and tr.feature_strides["res4"] == 16
    assert pixel_to_cell(8, x=17.5, y=63.9) == (7, 2)
    assert pixel_to_cell(((44, 40), (352, 320)), x=319, y=351) == (43, 39)
    h, w = tr.preprocess.image_sizes[0]
    assert pixel_to_cell(tr, w - 1, h - 1, level="p6") == ((h - 1) // 64, (w - 1) // 64)
    assert pixel_to_cell(tr, 100, 37, level="p3") == (4, 12)
    assert pixel_to_cell(tr, 100, 37, level="res4") == (2, 6)
    # Original pixels go through the trace's scales (1 here: the image was given at its size).
    assert tr.preprocess.scales[0] == (1.0, 1.0)
    assert pixel_to_cell(tr, 100, 37, level="p3", space="original") == (4, 12)
    # Without recorded strides: the map shape against the padded batch (same for p2..p5).
    bare = dataclasses.replace(tr, feature_strides=None)
    assert pixel_to_cell(bare, 100, 37, level="p3") == (4, 12)
    assert pixel_to_cell(tr, 150, 90, level="p4") == (5, 9)
    with pytest.raises(ValueError, match=rf"pixel x={w} outside image 0's input {h} x {w}"):
        pixel_to_cell(tr, w, 0, level="p3")
    with pytest.raises(ValueError, match="level: name the level"):
        pixel_to_cell(tr, 0, 0)
    with pytest.raises(ValueError, match="No feature 'p9'"):
        pixel_to_cell(tr, 0, 0, level="p9")
    with pytest.raises(ValueError, match="pixel y=-1 is negative"):
        pixel_to_cell(4, 0, -1)
    with pytest.raises(TypeError, match="grid must be"):
        pixel_to_cell("p3", 0, 0)


def test_channel_vector_plot(mask_trace):
    _, tr = mask_trace
    v = tr.backbone.features["p3"][0, :, 2, 2]
    out = channel_vector_plot(v, title="p3 (2, 2)")
    np.testing.assert_array_equal(out.drawn["vector"], v.numpy())
    assert out.drawn["top_channel"] == int(v.argmax()) and out.drawn["title"] == "p3 (2, 2)"
    assert out.get_image().shape == (170, 400, 3)
    with pytest.raises(ValueError, match=r"vec has shape \(2, 3\); expected .*\(C,\)"):
        channel_vector_plot(np.zeros((2, 3)))


# -- histograms, ROIs ----------------------------------------------------------------------------------

def test_histograms_and_rois(mask_trace):
    model, tr = mask_trace
    out = vis.activation_histograms({k: v[0] for k, v in tr.backbone.bottom_up.items()}, bins=20)
    counts, _ = out.drawn["hist"]["res3"]
    assert counts.sum() == tr.backbone.bottom_up["res3"][0].numel()
    out = vis.rois_per_level(tr, model, image=0)
    assert list(out.drawn["counts"]) == list(model.roi_heads.box_in_features)
    assert sum(out.drawn["counts"].values()) == len(tr.box.stages[-1].proposals[0])
    assert len(out.to_png_bytes()) > 100


# -- weights ---------------------------------------------------------------------------------------

def test_weight_stats_flags():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.ok = nn.Linear(4, 3)
            self.dead = nn.Parameter(torch.zeros(5))
            self.const = nn.Parameter(torch.full((2, 2), 0.5))
            self.big = nn.Parameter(torch.tensor([1.0, 1e6]))
            self.register_buffer("bad", torch.tensor([1.0, float("nan")]))

    stats = vis.weight_stats(Net())
    flags = {r["name"]: r["flags"] for r in stats.rows}
    assert flags["ok.weight"] == [] and flags["ok.bias"] == []
    assert flags["dead"] == ["dead"]
    assert flags["const"] == ["constant"]
    assert flags["big"] == ["overflow"]
    assert flags["bad"] == ["nonfinite"]
    assert {r["name"] for r in stats.flagged()} == {"dead", "const", "big", "bad"}
    assert "dead" in repr(stats) and "<table>" in stats._repr_html_()


def test_fixture_weights_are_healthy():
    model, _, _ = fixture("mask_rcnn_R_50_FPN")
    stats = vis.weight_stats(model)
    assert len(stats) > 50
    assert stats.flagged() == [], stats.flagged()[:5]

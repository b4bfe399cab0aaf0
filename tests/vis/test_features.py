"""Feature views against the traced tensors they show, and the weight-statistics flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from inspect_fixtures import fixture, traced
from workbench import vis


@pytest.fixture(scope="module")
def mask_trace():
    model, _, _ = fixture("mask_rcnn_R_50_FPN")
    return model, traced("mask_rcnn_R_50_FPN")


def test_level_grid_shows_the_trace_tensors(mask_trace):
    _, tr = mask_trace
    feats = tr.backbone.features
    out = vis.level_grid(feats, image=1, channel=3)
    assert list(out.drawn["arrays"]) == list(feats)
    for name, f in feats.items():
        np.testing.assert_array_equal(out.drawn["arrays"][name], f[1, 3].numpy())
    out = vis.level_grid(feats, image=0, reduce="norm", levels=["p4"])
    np.testing.assert_allclose(out.drawn["arrays"]["p4"], feats["p4"][0].norm(dim=0).numpy(), rtol=1e-5)
    img = out.get_image()
    assert img.ndim == 3 and img.dtype == np.uint8
    with pytest.raises(IndexError, match="channel"):
        vis.level_grid(feats, channel=10_000)


def test_channel_montage_and_pca(mask_trace):
    _, tr = mask_trace
    f = tr.backbone.features["p3"][0]  # (C, Hi, Wi)
    out = vis.channel_montage(f, [4, 5, 6], ncols=2)
    h, w = f.shape[-2:]
    tile = out.drawn["tiles"][h + 1: 2 * h + 1, :w]  # third channel: row 1, column 0
    a = f[6].numpy()
    np.testing.assert_allclose(tile, (a - a.min()) / (a.max() - a.min()), rtol=1e-5, atol=1e-6)
    rgb = vis.pca_rgb(f)
    assert rgb.shape == (h, w, 3) and rgb.min() >= 0 and rgb.max() <= 1
    # The first component is the top right-singular vector's projection (up to sign and scale).
    x = f.reshape(f.shape[0], -1).T.double()
    x = x - x.mean(0)
    v = torch.linalg.svd(x, full_matrices=False).Vh[0]
    pc1 = (x @ v).numpy()
    corr = np.corrcoef(pc1, rgb[..., 0].reshape(-1))[0, 1]
    assert abs(corr) > 0.999


def test_histograms_rois_and_heads(mask_trace):
    model, tr = mask_trace
    out = vis.activation_histograms({k: v[0] for k, v in tr.backbone.bottom_up.items()}, bins=20)
    counts, _ = out.drawn["hist"]["res3"]
    assert counts.sum() == tr.backbone.bottom_up["res3"][0].numel()
    out = vis.rois_per_level(tr, model, image=0)
    assert list(out.drawn["counts"]) == list(model.roi_heads.box_in_features)
    assert sum(out.drawn["counts"].values()) == len(tr.box.stages[-1].proposals[0])
    out = vis.mask_logits_view(tr, 2, image=0)
    d = tr.detection(2, image=0)
    np.testing.assert_array_equal(out.drawn["logits"], d.mask_logits[d.cls].numpy())
    assert out.drawn["pasted"].any()
    assert len(out.to_png_bytes()) > 100


def test_keypoint_heatmaps_view():
    tr = traced("keypoint_rcnn_R_50_FPN")
    out = vis.keypoint_heatmaps_view(tr, 0, keypoints=[0, 5])
    np.testing.assert_array_equal(out.drawn["heatmaps"], tr.detection(0).keypoint_heatmap[[0, 5]].numpy())
    out.get_image()


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

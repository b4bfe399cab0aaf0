"""capture() / list_modules(): hooks by name or glob, nested outputs kept, always removed."""

from __future__ import annotations

import io

import pytest
import torch

from inspect_fixtures import tiny
from workbench import inspect as wi
from workbench.structures import ImageList, Instances


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_capture_by_glob_keeps_nested_outputs():
    model, inputs, expected = tiny("faster_rcnn_fpn")
    names = ["backbone.bottom_up.res*", "backbone", "proposal_generator.rpn_head", "roi_heads",
             "roi_heads.box_head"]
    with wi.capture(model, names, inputs=True) as cap, torch.no_grad():
        out = model(inputs)
    assert _no_hooks(model)
    assert [n for n in cap.names if n.startswith("backbone.bottom_up.res")] == \
        ["backbone.bottom_up.res2", "backbone.bottom_up.res3", "backbone.bottom_up.res4",
         "backbone.bottom_up.res5"]
    feats = cap["backbone"]
    assert isinstance(feats, dict) and list(feats) == ["p2", "p3", "p4", "p5", "p6"]
    logits, deltas = cap["proposal_generator.rpn_head"]  # a tuple of two per-level lists
    assert isinstance(logits, list) and len(logits) == 5
    results, losses = cap["roi_heads"]  # (list[Instances], dict)
    assert isinstance(results[0], Instances) and losses == {}
    assert cap["roi_heads.box_head"].shape[1] == 32
    (args, kwargs), = cap.inputs["backbone"]
    assert args[0].shape == (2, 3, 96, 96) and kwargs == {}  # the padded, normalised batch
    # Hooks do not change the result.
    for a, b in zip(out, expected):
        assert torch.equal(a["instances"].scores, b["instances"].scores)
    assert "roi_heads.box_head" in repr(cap)


def test_detach_to_and_clone():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    with wi.capture(model, "roi_heads.box_head", detach=False) as cap:
        model(inputs[:1])
    assert cap["roi_heads.box_head"].requires_grad
    with wi.capture(model, "roi_heads.box_head", to="cpu", clone=True) as cap2:
        model(inputs[:1])
    t = cap2["roi_heads.box_head"]
    assert not t.requires_grad and t.device.type == "cpu"
    # clone: the recorded tensor does not share memory with the module's output
    assert t.data_ptr() != cap["roi_heads.box_head"].data_ptr()
    # Structures are rebuilt, not flattened
    il = ImageList(torch.ones(1, 3, 4, 4, requires_grad=True), [(4, 3)])
    out = wi.map_tensors({"a": (il, [Instances((4, 4), s=torch.ones(2, requires_grad=True))])},
                         lambda x: x.detach())
    assert isinstance(out["a"][0], ImageList) and out["a"][0].image_sizes == [(4, 3)]
    assert not out["a"][1][0].s.requires_grad


def test_hooks_are_removed_when_the_forward_raises():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    with pytest.raises(ValueError):
        with wi.capture(model, ["backbone.**", "roi_heads.*"], inputs=True):
            assert not _no_hooks(model)
            model([{"image": torch.zeros(1, 8, 8)}])  # wrong channel count: the model raises
    assert _no_hooks(model)


def test_errors_name_the_culprit():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    with pytest.raises(ValueError, match="roi_heads.box_head"):
        with wi.capture(model, "roi_heads.box_haed"):
            pass
    with wi.capture(model, "proposal_generator.rpn_head.conv") as cap, torch.no_grad():
        model(inputs)
    assert len(cap.outputs["proposal_generator.rpn_head.conv"]) == 5  # once per level
    with pytest.raises(ValueError, match="called 5 times"):
        cap["proposal_generator.rpn_head.conv"]
    with pytest.raises(KeyError):
        cap["backbone"]


def test_list_modules_prints_names_with_shapes():
    model, inputs, _ = tiny("faster_rcnn_fpn")
    buf = io.StringIO()
    rows = wi.list_modules(model, inputs, max_depth=4, file=buf)
    text = buf.getvalue()
    names = [r[0] for r in rows]
    assert "backbone.bottom_up.res2" in names and "roi_heads.box_head" in names
    assert "backbone.bottom_up.res2.0.conv1" not in names and "backbone.bottom_up.res2.0" in names
    row = dict((r[0], r[2]) for r in rows)
    assert row["backbone.bottom_up.res2"] == "(2, 32, 24, 24)"
    assert row["proposal_generator.rpn_head.conv"].startswith("5 calls")
    assert "roi_heads.box_head" in text
    assert _no_hooks(model)

"""Caffe2 name conversion and suffix matching (detectron2's c2_model_loading)."""

import json
import logging
import pickle

import numpy as np
import pytest
import torch

from workbench.checkpoint.c2_model_loading import (
    align_and_update_state_dicts,
    convert_basic_c2_names,
    convert_c2_detectron_names,
)
from fixture_paths import FIXTURES

C2_FIXTURE = (FIXTURES / "mask_rcnn_R_50_FPN_c2")
D2_WEIGHTS = (FIXTURES / "mask_rcnn_R_50_FPN/model_final.pkl")


@pytest.mark.parametrize("c2, d2", [
    ("conv1_w", "stem.conv1.weight"),
    ("res_conv1_bn_s", "stem.conv1.norm.weight"),
    ("res_conv1_bn_riv", "stem.conv1.norm.running_var"),
    ("res2_0_branch1_w", "res2.0.shortcut.weight"),
    ("res2_0_branch2a_w", "res2.0.conv1.weight"),
    ("res3_1_branch2b_bn_b", "res3.1.conv2.norm.bias"),
    ("res5_2_branch2c_bn_rm", "res5.2.conv3.norm.running_mean"),
    ("res4_0_branch2a_gn_s", "res4.0.conv1.norm.weight"),
    ("pred_w", "linear.weight"),
])
def test_basic_names(c2, d2):
    assert convert_basic_c2_names([c2]) == [d2]


@pytest.mark.parametrize("c2, d2", [
    ("fpn_inner_res5_2_sum_w", "fpn_lateral5.weight"),
    ("fpn_inner_res2_2_sum_lateral_b", "fpn_lateral2.bias"),
    ("fpn_res3_3_sum_w", "fpn_output3.weight"),
    ("fpn_inner_res4_5_sum_lateral_gn_s", "fpn_lateral4.norm.weight"),
    ("conv_rpn_fpn2_w", "proposal_generator.rpn_head.conv.weight"),
    ("conv_rpn_w", "proposal_generator.rpn_head.conv.weight"),
    ("rpn_cls_logits_fpn2_b", "proposal_generator.rpn_head.objectness_logits.bias"),
    ("rpn_bbox_pred_w", "proposal_generator.rpn_head.anchor_deltas.weight"),
    ("fc6_w", "box_head.fc1.weight"),
    ("fc7_b", "box_head.fc2.bias"),
    ("head_conv1_gn_s", "box_head.conv1.norm.weight"),
    ("_[mask]_fcn1_w", "mask_head.mask_fcn1.weight"),
    ("conv5_mask_w", "mask_head.deconv.weight"),
    ("conv_fcn3_w", "roi_heads.keypoint_head.conv_fcn3.weight"),
    ("kps_score_lowres_w", "roi_heads.keypoint_head.score_lowres.weight"),
    ("kps_score_w", "roi_heads.keypoint_head.score.weight"),
])
def test_detector_head_names(c2, d2):
    renamed, original = convert_c2_detectron_names({c2: np.zeros(4, np.float32)})
    assert list(renamed) == [d2]
    assert original == {d2: c2}


def test_predictor_class_layouts():
    k = 3  # foreground classes
    cls = np.arange((k + 1) * 2, dtype=np.float32).reshape(k + 1, 2)  # row 0: background
    box = np.arange(4 * (k + 1), dtype=np.float32)
    mask = np.arange(k + 1, dtype=np.float32)
    renamed, _ = convert_c2_detectron_names(
        {"cls_score_w": cls, "bbox_pred_b": box, "mask_fcn_logits_b": mask}
    )
    np.testing.assert_array_equal(renamed["cls_score.weight"], np.concatenate([cls[1:], cls[:1]]))
    np.testing.assert_array_equal(renamed["bbox_pred.bias"], box[4:])
    np.testing.assert_array_equal(renamed["mask_head.predictor.bias"], mask[1:])
    # Tensors too (the checkpointer converts arrays first).
    renamed, _ = convert_c2_detectron_names({"cls_score_w": torch.from_numpy(cls)})
    assert torch.equal(renamed["cls_score.weight"], torch.from_numpy(np.roll(cls, -1, axis=0)))


def test_names_that_collide_are_reported():
    with pytest.raises(ValueError, match="conv_rpn_fpn2_w and conv_rpn_w"):
        convert_c2_detectron_names({"conv_rpn_fpn2_w": np.zeros(1), "conv_rpn_w": np.zeros(1)})


def _fixture_state(path):
    with open(path, "rb") as f:
        return pickle.load(f)  # trusted fixture


def test_fixture_name_map_is_reproduced():
    """Every Caffe2 blob of the fixture lands on the detectron2 key c2_name_map.json names, with
    the documented class-layout transform, bit for bit equal to the detectron2 weights."""
    name_map = json.loads((C2_FIXTURE / "c2_name_map.json").read_text())
    c2 = _fixture_state(C2_FIXTURE / "model_final_c2.pkl")
    assert c2["__author__"] == "Caffe2" and c2["matching_heuristics"] is True
    d2 = _fixture_state(D2_WEIGHTS)["model"]
    assert set(name_map) == set(c2["model"])

    renamed, original = convert_c2_detectron_names(c2["model"])
    for new, old in original.items():
        target = name_map[old]["d2"]
        assert target == new or target.endswith("." + new), (old, new, target)

    model_state = {k: torch.empty(v.shape) for k, v in d2.items()}
    aligned = align_and_update_state_dicts(model_state, c2["model"], c2_conversion=True)
    assert set(aligned) == set(d2)
    transforms = {
        None: lambda a: a,
        "cls_bg_first": lambda a: np.concatenate([a[1:], a[:1]]),
        "add_bg_box": lambda a: a[4:],
        "add_bg_mask": lambda a: a[1:],
    }
    for old, entry in name_map.items():
        assert list(c2["model"][old].shape) == entry["c2_shape"]
        expected = transforms[entry["transform"]](c2["model"][old])
        got = np.asarray(aligned[entry["d2"]])
        assert got.tobytes() == expected.tobytes(), old
        assert got.tobytes() == d2[entry["d2"]].tobytes(), old


def test_longest_whole_component_suffix_wins():
    model = {
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(2),
        "backbone.bottom_up.res2.0.conv1.weight": torch.zeros(3),
        "roi_heads.mesh_head.whatever_conv1.weight": torch.zeros(4),
    }
    ckpt = {"stem.conv1.weight": torch.ones(2), "res2.0.conv1.weight": torch.full((3,), 2.0),
            "conv1.weight": torch.full((4,), 3.0)}
    out = align_and_update_state_dicts(model, ckpt, c2_conversion=False)
    assert torch.equal(out["backbone.bottom_up.stem.conv1.weight"], torch.ones(2))
    assert torch.equal(out["backbone.bottom_up.res2.0.conv1.weight"], torch.full((3,), 2.0))
    # "whatever_conv1" does not end with ".conv1": no match, and the checkpoint key stays as it is.
    assert "roi_heads.mesh_head.whatever_conv1.weight" not in out
    assert torch.equal(out["conv1.weight"], torch.full((4,), 3.0))


def test_ambiguous_match_is_an_error():
    model = {"a.x.weight": torch.zeros(2), "b.x.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"Ambiguity found for x\.weight.*a\.x\.weight.*b\.x\.weight"):
        align_and_update_state_dicts(model, {"x.weight": torch.ones(2)}, c2_conversion=False)


def test_shape_mismatch_is_skipped_with_a_warning(caplog):
    model = {"head.cls_score.weight": torch.zeros(9, 4), "head.fc.weight": torch.zeros(4, 4)}
    ckpt = {"cls_score.weight": torch.ones(81, 4), "fc.weight": torch.ones(4, 4)}
    with caplog.at_level(logging.INFO, logger="workbench.checkpoint.c2_model_loading"):
        out = align_and_update_state_dicts(model, ckpt, c2_conversion=False)
    assert "head.cls_score.weight" not in out
    assert torch.equal(out["cls_score.weight"], torch.ones(81, 4))  # left for load_state_dict to report
    assert torch.equal(out["head.fc.weight"], torch.ones(4, 4))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cls_score.weight" in w and "(81, 4)" in w and "(9, 4)" in w for w in warnings)
    assert "Names in Model" in caplog.text  # the table of matches


def test_nothing_matched_returns_the_checkpoint(caplog):
    with caplog.at_level(logging.WARNING):
        out = align_and_update_state_dicts({"a.w": torch.zeros(1)}, {"b": torch.ones(1)}, c2_conversion=False)
    assert list(out) == ["b"]
    assert "No weights in checkpoint matched" in caplog.text

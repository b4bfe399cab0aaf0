"""Tests for workbench.model_zoo: shipped YAML copies against detectron2 dumps, lookups, URLs.

Each reference fixture (``$WORKBENCH_FIXTURES`` or ``<repo>/../shared/fixtures``) is a full
detectron2 dump of a model-zoo config with the changes listed in its ``meta.json``; rebuilding it
from our YAML copy proves the copy carries detectron2's values. Configs without a fixture are
checked against a fixture-verified sibling plus the documented difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from workbench import model_zoo
from workbench.config import CfgNode, get_cfg

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("WORKBENCH_FIXTURES", REPO.parent / "shared" / "fixtures")).resolve()


def _fixture_cases() -> List[str]:
    if not FIXTURES.is_dir():
        return ["<fixtures missing>"]  # one failing case rather than a silently empty run
    return sorted(
        p.name
        for p in FIXTURES.iterdir()
        if (p / "meta.json").is_file() and (p / "config.yaml").is_file()
    )


CASES = _fixture_cases()

REQUIRED = [
    "Base-RCNN-FPN.yaml",
    "Base-RCNN-C4.yaml",
    "Base-RetinaNet.yaml",
    "Base-RCNN-DilatedC5.yaml",
    *(
        f"COCO-Detection/{n}.yaml"
        for n in [
            "faster_rcnn_R_50_C4_1x", "faster_rcnn_R_50_C4_3x", "faster_rcnn_R_50_FPN_1x",
            "faster_rcnn_R_50_FPN_3x", "faster_rcnn_R_101_C4_3x", "faster_rcnn_R_101_FPN_3x",
            "faster_rcnn_X_101_32x8d_FPN_3x", "retinanet_R_50_FPN_1x", "retinanet_R_50_FPN_3x",
            "retinanet_R_101_FPN_3x", "rpn_R_50_FPN_1x", "rpn_R_50_C4_1x", "fast_rcnn_R_50_FPN_1x",
        ]
    ),
    *(
        f"COCO-InstanceSegmentation/{n}.yaml"
        for n in [
            "mask_rcnn_R_50_C4_1x", "mask_rcnn_R_50_C4_3x", "mask_rcnn_R_50_FPN_1x",
            "mask_rcnn_R_50_FPN_3x", "mask_rcnn_R_101_C4_3x", "mask_rcnn_R_101_FPN_3x",
            "mask_rcnn_X_101_32x8d_FPN_3x",
        ]
    ),
    *(
        f"COCO-Keypoints/{n}.yaml"
        for n in [
            "Base-Keypoint-RCNN-FPN", "keypoint_rcnn_R_50_FPN_1x", "keypoint_rcnn_R_50_FPN_3x",
            "keypoint_rcnn_R_101_FPN_3x", "keypoint_rcnn_X_101_32x8d_FPN_3x",
        ]
    ),
    *(
        f"COCO-PanopticSegmentation/{n}.yaml"
        for n in [
            "Base-Panoptic-FPN", "panoptic_fpn_R_50_1x", "panoptic_fpn_R_50_3x",
            "panoptic_fpn_R_101_3x",
        ]
    ),
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
    "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
]

SHIPPED = model_zoo.list_configs(".yaml")  # the .py LazyConfigs: test_lazy_configs.py
# workbench's own configs (the embedded model) are not copies of detectron2's model zoo.
OWN_PREFIXES = ("Shapes/",)
MODELS = [p for p in SHIPPED
          if not os.path.basename(p).startswith("Base-") and not p.startswith(OWN_PREFIXES)]


def test_own_configs_load_and_round_trip():
    own = [p for p in SHIPPED if p.startswith(OWN_PREFIXES)]
    assert own, "the embedded model's config is shipped"
    for path in own:
        cfg = model_zoo.get_config(path)
        again = type(cfg)(cfg)
        again.merge_from_other_cfg(cfg)
        assert again == cfg


def _flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _canon(value: Any) -> Any:
    """Comparable form: lists and tuples alike, but int / float / bool kept apart."""
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return (type(value).__name__, value)


def _diff(actual: CfgNode, expected: Dict[str, Any]) -> List[str]:
    got = _flatten(actual)
    want = _flatten(expected)
    lines = [f"{k}: missing from ours" for k in sorted(set(want) - set(got))]
    lines += [f"{k}: not in the reference" for k in sorted(set(got) - set(want))]
    lines += [
        f"{k}: ours {got[k]!r}, reference {want[k]!r}"
        for k in sorted(set(got) & set(want))
        if _canon(got[k]) != _canon(want[k])
    ]
    return lines


# ----------------------------------------------------------------------------- shipped files
def test_required_configs_are_shipped():
    missing = sorted(set(REQUIRED) - set(SHIPPED))
    assert not missing, f"not shipped: {missing}"


@pytest.mark.parametrize("config_path", SHIPPED)
def test_every_shipped_config_loads_safely_and_round_trips(config_path, tmp_path):
    path = model_zoo.get_config_file(config_path)
    assert os.path.isabs(path) and os.path.isfile(path)
    cfg = model_zoo.get_config(config_path)  # safe YAML only: no Python tags in our copies
    dumped = tmp_path / "dump.yaml"
    dumped.write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(dumped))
    assert again == cfg


# ---------------------------------------------------------------- fixtures: exact reference
@pytest.mark.parametrize("case", CASES)
def test_config_rebuilt_from_our_yaml_equals_reference_dump(case):
    folder = FIXTURES / case
    assert folder.is_dir(), f"Reference fixtures not found at {FIXTURES}; set WORKBENCH_FIXTURES."
    meta = json.loads((folder / "meta.json").read_text())
    cfg = model_zoo.get_config(meta["source_config"])
    for change in meta["config_changes"]:  # in order: a key may be changed twice
        cfg.merge_from_list([change["key"], change["new"]])
    reference = yaml.safe_load((folder / "config.yaml").read_text())
    differences = _diff(cfg, reference)
    header = f"{meta['source_config']} vs {case}/config.yaml:\n"
    assert not differences, header + "\n".join(differences)


def test_retinanet_anchor_sizes_equal_detectrons_eval_expression():
    # detectron2 writes them as !!python/object/apply:eval; our copy spells out the numbers.
    expected = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    cfg = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == expected


# ----------------------------------------- configs without a fixture: a verified sibling + delta
SCHEDULE_1X = {"SOLVER.STEPS": (60000, 80000), "SOLVER.MAX_ITER": 90000}
R101 = {
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
    "MODEL.RESNETS.DEPTH": 101,
}
NO_MASK = {"MODEL.MASK_ON": False}
MASK = {"MODEL.MASK_ON": True}
X101 = {
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl",
    "MODEL.PIXEL_STD": [57.375, 57.120, 58.395],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RESNETS.NUM_GROUPS": 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 8,
    "MODEL.RESNETS.DEPTH": 101,
}
DILATED_C5 = {  # Base-RCNN-DilatedC5 relative to Base-RCNN-C4
    "MODEL.RESNETS.OUT_FEATURES": ["res5"],
    "MODEL.RESNETS.RES5_DILATION": 2,
    "MODEL.RPN.IN_FEATURES": ["res5"],
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["res5"],
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,
}
CASCADE = {
    "MODEL.ROI_HEADS.NAME": "CascadeROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000,
}
MASK_FPN_3X = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
FASTER_C4_3X = "COCO-Detection/faster_rcnn_R_50_C4_3x.yaml"
RETINA_3X = "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
KEYPOINT_3X = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml"
PANOPTIC_3X = "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml"
RPN_FPN_1X = "COCO-Detection/rpn_R_50_FPN_1x.yaml"

SIBLINGS = {
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml": (FASTER_C4_3X, SCHEDULE_1X),
    "COCO-Detection/faster_rcnn_R_101_C4_3x.yaml": (FASTER_C4_3X, R101),
    "COCO-Detection/faster_rcnn_R_50_DC5_1x.yaml": (FASTER_C4_3X, {**DILATED_C5, **SCHEDULE_1X}),
    "COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml": (FASTER_C4_3X, DILATED_C5),
    "COCO-Detection/faster_rcnn_R_101_DC5_3x.yaml": (FASTER_C4_3X, {**DILATED_C5, **R101}),
    "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml": (MASK_FPN_3X, {**NO_MASK, **SCHEDULE_1X}),
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml": (MASK_FPN_3X, NO_MASK),
    "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml": (MASK_FPN_3X, {**NO_MASK, **R101}),
    "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml": (MASK_FPN_3X, {**NO_MASK, **X101}),
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml": (RETINA_3X, SCHEDULE_1X),
    "COCO-Detection/retinanet_R_101_FPN_3x.yaml": (RETINA_3X, R101),
    "COCO-Detection/rpn_R_50_C4_1x.yaml": (
        FASTER_C4_3X,
        {"MODEL.META_ARCHITECTURE": "ProposalNetwork", "MODEL.RPN.PRE_NMS_TOPK_TEST": 12000,
         "MODEL.RPN.POST_NMS_TOPK_TEST": 2000, **SCHEDULE_1X},
    ),
    "COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml": (
        RPN_FPN_1X,
        {
            "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
            "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
            "MODEL.LOAD_PROPOSALS": True,
            "MODEL.PROPOSAL_GENERATOR.NAME": "PrecomputedProposals",
            "DATASETS.PROPOSAL_FILES_TRAIN": (
                "detectron2://COCO-Detection/rpn_R_50_FPN_1x/137258492/coco_2017_train_box_proposals_21bc3a.pkl",
            ),
            "DATASETS.PROPOSAL_FILES_TEST": (
                "detectron2://COCO-Detection/rpn_R_50_FPN_1x/137258492/coco_2017_val_box_proposals_ee0dad.pkl",
            ),
            "DATALOADER.NUM_WORKERS": 2,
        },
    ),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml": (FASTER_C4_3X, {**MASK, **SCHEDULE_1X}),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml": (FASTER_C4_3X, MASK),
    "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x.yaml": (FASTER_C4_3X, {**MASK, **R101}),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_1x.yaml": (
        FASTER_C4_3X, {**MASK, **DILATED_C5, **SCHEDULE_1X}
    ),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_3x.yaml": (FASTER_C4_3X, {**MASK, **DILATED_C5}),
    "COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x.yaml": (
        FASTER_C4_3X, {**MASK, **DILATED_C5, **R101}
    ),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": (MASK_FPN_3X, SCHEDULE_1X),
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml": (MASK_FPN_3X, R101),
    "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml": (MASK_FPN_3X, X101),
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml": (KEYPOINT_3X, SCHEDULE_1X),
    "COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x.yaml": (KEYPOINT_3X, R101),
    "COCO-Keypoints/keypoint_rcnn_X_101_32x8d_FPN_3x.yaml": (KEYPOINT_3X, X101),
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml": (PANOPTIC_3X, SCHEDULE_1X),
    "COCO-PanopticSegmentation/panoptic_fpn_R_101_3x.yaml": (PANOPTIC_3X, R101),
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml": (MASK_FPN_3X, {**CASCADE, **SCHEDULE_1X}),
    "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml": (MASK_FPN_3X, CASCADE),
}
# The siblings themselves are checked exactly by the fixtures.
FIXTURE_VERIFIED = {MASK_FPN_3X, FASTER_C4_3X, RETINA_3X, KEYPOINT_3X, PANOPTIC_3X, RPN_FPN_1X}


# Copied byte for byte from detectron2's configs/ at commit 02b5c4e2, below a one-line header
# naming the source: path -> first 16 hex digits of the SHA-256 of detectron2's file.
VERBATIM = {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_giou.yaml": "03933e31af4be583",
    "Cityscapes/mask_rcnn_R_50_FPN.yaml": "627d38f363d08494",
    "Detectron1-Comparisons/faster_rcnn_R_50_FPN_noaug_1x.yaml": "dbbad67baf01d9af",
    "Detectron1-Comparisons/keypoint_rcnn_R_50_FPN_1x.yaml": "3ae9caab1af5a05e",
    "Detectron1-Comparisons/mask_rcnn_R_50_FPN_noaug_1x.yaml": "d10ebbf63330b9ee",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_R_101_FPN_1x.yaml": "581bffb3eb15b077",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": "347f4119ab98a2ee",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_1x.yaml": "38dafac40ff410ab",
    "LVISv1-InstanceSegmentation/mask_rcnn_R_101_FPN_1x.yaml": "799c2f2297a33a86",
    "LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": "fdf7a1d3a68f04ca",
    "LVISv1-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_1x.yaml": "46c0cf484f0d7054",
    "Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml": "d98728818d4457bf",
    "Misc/mask_rcnn_R_50_FPN_1x_cls_agnostic.yaml": "1222dc1df916e260",
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml": "d09eeef678ca97f7",
    "Misc/mask_rcnn_R_50_FPN_3x_dconv_c3-c5.yaml": "6036bdea02795c5e",
    "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml": "2823f26f9ece3514",
    "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml": "95da4bbd7fc98c6c",
    "Misc/panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml": "57168b474172d2a0",
    "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml": "6b6da783805ab589",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_gn.yaml": "2f3e330e4cbb5d00",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn.yaml": "d7fca25c2c796080",
    "Misc/semantic_R_50_FPN_1x.yaml": "edfc63c29c2f18bb",
    "PascalVOC-Detection/faster_rcnn_R_50_C4.yaml": "e7d87e7157aa06d9",
    "PascalVOC-Detection/faster_rcnn_R_50_FPN.yaml": "f373b1d1fc426a66",
    "quick_schedules/cascade_mask_rcnn_R_50_FPN_inference_acc_test.yaml": "16cf156783cc03ba",
    "quick_schedules/cascade_mask_rcnn_R_50_FPN_instant_test.yaml": "ce5e172fb6b2af6c",
    "quick_schedules/fast_rcnn_R_50_FPN_inference_acc_test.yaml": "d6eff6797076d229",
    "quick_schedules/fast_rcnn_R_50_FPN_instant_test.yaml": "47b49317a3cb7b06",
    "quick_schedules/keypoint_rcnn_R_50_FPN_inference_acc_test.yaml": "ab9329ee81e0bff5",
    "quick_schedules/keypoint_rcnn_R_50_FPN_instant_test.yaml": "b0522bf2fc6ef34a",
    "quick_schedules/keypoint_rcnn_R_50_FPN_normalized_training_acc_test.yaml": "379882a116c7a435",
    "quick_schedules/keypoint_rcnn_R_50_FPN_training_acc_test.yaml": "a22270952f2b7eaf",
    "quick_schedules/mask_rcnn_R_50_C4_GCV_instant_test.yaml": "264d5e20c9ea5dd2",
    "quick_schedules/mask_rcnn_R_50_C4_inference_acc_test.yaml": "9133b305d6050174",
    "quick_schedules/mask_rcnn_R_50_C4_instant_test.yaml": "6c0086748bcad9b2",
    "quick_schedules/mask_rcnn_R_50_C4_training_acc_test.yaml": "25396c7a07ed712c",
    "quick_schedules/mask_rcnn_R_50_DC5_inference_acc_test.yaml": "f2d2ca756ffa9a4d",
    "quick_schedules/mask_rcnn_R_50_FPN_inference_acc_test.yaml": "be217e6f773f8865",
    "quick_schedules/mask_rcnn_R_50_FPN_instant_test.yaml": "4875b5eb68c4db43",
    "quick_schedules/mask_rcnn_R_50_FPN_pred_boxes_training_acc_test.yaml": "5255a770f5bc69bd",
    "quick_schedules/mask_rcnn_R_50_FPN_training_acc_test.yaml": "ec6bbb6bdcf567d2",
    "quick_schedules/panoptic_fpn_R_50_inference_acc_test.yaml": "047d139adb7faf3d",
    "quick_schedules/panoptic_fpn_R_50_instant_test.yaml": "3f3afadc0e5cade0",
    "quick_schedules/panoptic_fpn_R_50_training_acc_test.yaml": "1c7b6577a547de4f",
    "quick_schedules/retinanet_R_50_FPN_inference_acc_test.yaml": "4c8c4553d7e073ad",
    "quick_schedules/retinanet_R_50_FPN_instant_test.yaml": "e755601c09b85214",
    "quick_schedules/rpn_R_50_FPN_inference_acc_test.yaml": "2d99c012ec5f5bcd",
    "quick_schedules/rpn_R_50_FPN_instant_test.yaml": "faa25adee6a7d12a",
    "quick_schedules/semantic_R_50_FPN_inference_acc_test.yaml": "1ffc5fa8e0af7e68",
    "quick_schedules/semantic_R_50_FPN_instant_test.yaml": "5f837ed1cda63531",
    "quick_schedules/semantic_R_50_FPN_training_acc_test.yaml": "d2b9168cb4046ed7",
}
VERBATIM_HEADER = b"# Copied unchanged from detectron2 configs/"


@pytest.mark.parametrize("config_path", sorted(VERBATIM))
def test_verbatim_copies_are_detectrons_files(config_path):
    data = open(model_zoo.get_config_file(config_path), "rb").read()
    header, body = data.split(b"\n", 1)
    assert header.startswith(VERBATIM_HEADER + config_path.encode()), header
    assert hashlib.sha256(body).hexdigest()[:16] == VERBATIM[config_path], (
        f"{config_path} differs from detectron2's file")


def test_every_model_config_is_verified():
    unverified = sorted(set(MODELS) - set(SIBLINGS) - FIXTURE_VERIFIED - set(VERBATIM))
    assert not unverified, f"add these to SIBLINGS: {unverified}"


@pytest.mark.parametrize("config_path", sorted(SIBLINGS))
def test_config_equals_verified_sibling_plus_delta(config_path):
    sibling, delta = SIBLINGS[config_path]
    expected = model_zoo.get_config(sibling)
    for key, value in delta.items():
        expected.merge_from_list([key, value])
    differences = _diff(model_zoo.get_config(config_path), expected)
    assert not differences, f"{config_path} vs {sibling} + delta:\n" + "\n".join(differences)


# ------------------------------------------------------------------------ lookups and errors
def test_unknown_config_lists_close_names():
    with pytest.raises(RuntimeError) as err:
        model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yml")
    assert "'COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml'" in str(err.value)
    with pytest.raises(RuntimeError) as err:  # right file name, wrong folder
        model_zoo.get_config_file("COCO-Detection/mask_rcnn_R_50_FPN_3x.yaml")
    assert "Closest: 'COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml'" in str(err.value)
    with pytest.raises(RuntimeError, match="not in workbench's model zoo"):
        model_zoo.get_config_file("../model_zoo.py")


def test_checkpoint_urls():
    url = model_zoo.get_checkpoint_url("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert url == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/"
        "mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl"
    )
    assert model_zoo.get_checkpoint_url("COCO-Detection/faster_rcnn_R_50_FPN_3x") == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/"
        "faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl"
    )
    with pytest.raises(RuntimeError, match="No trained weights"):
        model_zoo.get_checkpoint_url("Base-RCNN-FPN.yaml")


# detectron2 released no weights for these (the quick-schedule test configs, LVIS v1 in YAML,
# and a few variants).
NO_RELEASED_WEIGHTS = {p for p in MODELS if p.startswith(("quick_schedules/", "LVISv1-"))} | {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_giou.yaml",
    "Misc/mask_rcnn_R_50_FPN_1x_cls_agnostic.yaml",
    "Misc/semantic_R_50_FPN_1x.yaml",
    "PascalVOC-Detection/faster_rcnn_R_50_FPN.yaml",
}


@pytest.mark.parametrize("config_path", sorted(NO_RELEASED_WEIGHTS))
def test_configs_without_released_weights_say_so(config_path):
    with pytest.raises(RuntimeError, match="No trained weights"):
        model_zoo.get_checkpoint_url(config_path)


@pytest.mark.parametrize("config_path", sorted(set(MODELS) - NO_RELEASED_WEIGHTS))
def test_every_model_config_has_a_checkpoint_url(config_path):
    url = model_zoo.get_checkpoint_url(config_path)
    name = config_path[: -len(".yaml")]
    assert url.startswith(f"https://dl.fbaipublicfiles.com/detectron2/{name}/")
    assert url.rsplit("/", 1)[-1].startswith(("model_final_", "model_0039999_")) and url.endswith(".pkl")


def test_get_config_trained_sets_weights():
    path = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml"
    imagenet = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert model_zoo.get_config(path).MODEL.WEIGHTS == imagenet
    trained = model_zoo.get_config(path, trained=True)
    assert trained.MODEL.WEIGHTS == model_zoo.get_checkpoint_url(path)


def test_get_builds_then_loads_weights(monkeypatch):
    # build_model and DetectionCheckpointer belong to other modules; stand-ins record the calls.
    calls: Dict[str, Any] = {}

    def build_model(cfg):
        calls["device"] = cfg.MODEL.DEVICE
        calls["arch"] = cfg.MODEL.META_ARCHITECTURE
        return "the model"

    class DetectionCheckpointer:
        def __init__(self, model):
            calls["checkpointer_model"] = model

        def load(self, path):
            calls["weights"] = path

    fake_modeling = types.SimpleNamespace(build_model=build_model)
    fake_checkpoint = types.SimpleNamespace(DetectionCheckpointer=DetectionCheckpointer)
    monkeypatch.setitem(sys.modules, "workbench.modeling", fake_modeling)
    monkeypatch.setitem(sys.modules, "workbench.checkpoint", fake_checkpoint)
    path = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"
    model = model_zoo.get(path, trained=True, device="cpu")
    assert model == "the model"
    assert calls == {
        "device": "cpu",
        "arch": "RetinaNet",
        "checkpointer_model": "the model",
        "weights": model_zoo.get_checkpoint_url(path),
    }

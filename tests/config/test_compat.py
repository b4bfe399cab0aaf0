"""Config versions: upgrade / downgrade and reading old-VERSION files (detectron2's
tests/config/test_yacs_config.py, TestConfigVersioning)."""

import logging

import pytest

from workbench.config import downgrade_config, get_cfg, upgrade_config
from workbench.config.compat import ConverterV1, ConverterV2, guess_version

_V0_CFG = """
MODEL:
  RPN_HEAD:
    NAME: "TEST"
VERSION: 0
"""

_V1_CFG = """
MODEL:
  WEIGHT: "/path/to/weight"
"""


def _merge_text(tmp_path, text, cfg=None):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    cfg = cfg if cfg is not None else get_cfg()
    cfg.merge_from_file(str(path))
    return cfg


@pytest.mark.parametrize("meta_arch", ["GeneralizedRCNN", "RetinaNet"])
def test_downgrade_then_upgrade_is_identity(meta_arch):
    cfg = get_cfg()
    cfg.USER_CUSTOM = 1  # a user key survives the round trip
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    down = downgrade_config(cfg, to_version=0)
    assert down.VERSION == 0 and cfg.VERSION == 2  # a copy; the input is untouched
    assert upgrade_config(down) == cfg


def test_downgrade_recovers_old_key_names():
    cfg = get_cfg()
    cfg.MODEL.WEIGHTS = "w.pkl"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16, 32]]
    v1 = downgrade_config(cfg, to_version=1)
    assert v1.MODEL.WEIGHT == "w.pkl" and "WEIGHTS" not in v1.MODEL
    assert v1.MODEL.RPN.ANCHOR_SIZES == [[16, 32]] == v1.MODEL.RETINANET.ANCHOR_SIZES
    assert "SIZES" not in v1.MODEL.ANCHOR_GENERATOR
    assert v1.TEST.DETECTIONS_PER_IMG == cfg.TEST.DETECTIONS_PER_IMAGE
    assert v1.TEST.AUG_ON == cfg.TEST.AUG.ENABLED and "AUG" not in v1.TEST  # empty group removed
    v0 = downgrade_config(v1, to_version=0)
    assert v0.MODEL.RPN_HEAD.NAME == cfg.MODEL.RPN.HEAD_NAME and "HEAD_NAME" not in v0.MODEL.RPN


def test_upgrade_from_v1_keeps_the_anchors_of_the_architecture_in_use():
    v1 = downgrade_config(get_cfg(), to_version=1)
    v1.MODEL.META_ARCHITECTURE = "RetinaNet"
    v1.MODEL.RETINANET.ANCHOR_SIZES = [[7]]
    v1.MODEL.RPN.ANCHOR_SIZES = [[99]]
    up = upgrade_config(v1)
    assert up.VERSION == 2 and up.MODEL.ANCHOR_GENERATOR.SIZES == [[7]]
    assert "ANCHOR_SIZES" not in up.MODEL.RPN and "ANCHOR_STRIDES" not in up.MODEL.RETINANET


def test_wrong_direction_and_unknown_versions_raise():
    with pytest.raises(ValueError, match="upgrade"):
        upgrade_config(get_cfg(), to_version=1)
    with pytest.raises(ValueError, match="downgrade"):
        downgrade_config(downgrade_config(get_cfg(), 0), to_version=2)
    with pytest.raises(ValueError, match="VERSION 3"):
        upgrade_config(get_cfg(), to_version=3)


def test_converter_renames_are_detectron2s():
    assert ConverterV1.RENAME == [("MODEL.RPN_HEAD.NAME", "MODEL.RPN.HEAD_NAME")]
    renames = dict(ConverterV2.RENAME)
    assert renames["MODEL.WEIGHT"] == "MODEL.WEIGHTS"
    assert renames["MODEL.ROI_HEADS.NMS"] == "MODEL.ROI_HEADS.NMS_THRESH_TEST"
    assert renames["TEST.AUG_FLIP"] == "TEST.AUG.FLIP"
    assert len(ConverterV2.RENAME) == 18


def test_merge_from_file_upgrades_a_v0_file(tmp_path, caplog):
    cfg = get_cfg()
    cfg.USER_CUSTOM = 1
    rpn_group = cfg.MODEL.RPN
    with caplog.at_level(logging.WARNING, logger="workbench.config"):
        _merge_text(tmp_path, _V0_CFG, cfg)
    assert cfg.MODEL.RPN.HEAD_NAME == "TEST"
    assert cfg.VERSION == 2 and cfg.USER_CUSTOM == 1
    assert "RPN_HEAD" not in cfg.MODEL
    assert cfg.MODEL.RPN is rpn_group  # updated in place
    assert "old v0 config" in caplog.text


def test_merge_from_file_guesses_v1_from_old_keys(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="workbench.config"):
        cfg = _merge_text(tmp_path, _V1_CFG)
    assert cfg.VERSION == 2 and cfg.MODEL.WEIGHTS == "/path/to/weight"
    assert "WEIGHT" not in cfg.MODEL
    assert "Assuming it to be v1" in caplog.text


def test_guess_version_defaults_to_latest():
    assert guess_version({"MODEL": {"WEIGHTS": "x"}}, "f.yaml") == 2
    assert guess_version({"TEST": {"AUG_ON": True}}, "f.yaml") == 1


def test_failed_old_file_merge_leaves_config_unchanged_and_names_file(tmp_path):
    from workbench.config import ConfigKeyError

    cfg = get_cfg()
    before = cfg.clone()
    with pytest.raises(ConfigKeyError) as err:
        _merge_text(tmp_path, "VERSION: 1\nMODEL:\n  WEIGHTS: new_name_in_old_file\n", cfg)
    assert "MODEL.WEIGHTS" in str(err.value) and "cfg.yaml" in str(err.value)
    assert cfg == before

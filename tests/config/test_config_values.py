"""Impossible config values raise ConfigValueError naming the key, from build_model, from the
data loaders (INPUT.* / SOLVER.IMS_PER_BATCH) and from DatasetMapper; detectron2's sentinels
and every model-zoo value stay legal."""

from __future__ import annotations

import pytest

from workbench.config import ConfigValueError, check_config_values, get_cfg
from workbench.config.validate import CHECKED_KEYS, INPUT_KEYS
from workbench.data import DatasetCatalog, DatasetMapper, build_detection_test_loader, build_detection_train_loader
from workbench.modeling import build_model

# key, impossible value, what the message expects
BAD = [
    ("MODEL.ROI_HEADS.NUM_CLASSES", -3, "an integer >= 1"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", 0, "an integer >= 1"),
    ("MODEL.RETINANET.NUM_CLASSES", 0, "an integer >= 1"),
    ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", -1, "an integer >= 1"),
    ("SOLVER.IMS_PER_BATCH", -4, "an integer >= 1"),
    ("MODEL.RPN.POST_NMS_TOPK_TEST", -1, "an integer >= 1"),
    ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 0, "an integer >= 1"),
    ("INPUT.MIN_SIZE_TEST", -800, r"a size >= 0 \(0: no resizing\)"),
    ("INPUT.MIN_SIZE_TRAIN", (640, -800), r"a non-empty list of sizes >= 0"),
    ("INPUT.MAX_SIZE_TEST", 0, "a size > 0"),
    ("MODEL.PIXEL_STD", [57.375, 0.0, 58.395], r"a non-empty list of numbers > 0"),
    ("MODEL.PIXEL_STD", [57.375, -1.0, 58.395], r"a non-empty list of numbers > 0"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.5, r"a number in \[0, 1\]"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", -0.1, r"a number in \[0, 1\]"),
    ("MODEL.RETINANET.SCORE_THRESH_TEST", 2.0, r"a number in \[0, 1\]"),
    ("MODEL.RPN.NMS_THRESH", 1.2, r"a number in \[0, 1\]"),
    ("MODEL.RPN.NMS_THRESH", -0.7, r"a number in \[0, 1\]"),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", 5.0, r"a number in \[0, 1\]"),
    ("INPUT.FORMAT", "XYZ", r"one of \('BGR', 'RGB', 'L', 'YUV-BT.601'"),
    ("INPUT.FORMAT", "bgr", r"one of \('BGR'"),
]


def _cfg(key, value):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "meta"
    cfg.merge_from_list([key, value])
    return cfg


@pytest.mark.parametrize("key,value,expected", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_build_model_names_the_key(key, value, expected):
    cfg = _cfg(key, value)
    with pytest.raises(ConfigValueError, match=rf"^Config key {key} is .*, expected {expected}"):
        build_model(cfg)


@pytest.mark.parametrize("mean,std", [([103.5, 116.3], [1.0, 1.0, 1.0]), ([103.5, 116.3, 123.7], [57.4, 57.1])])
def test_pixel_mean_and_std_lengths_must_match(mean, std):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "meta"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = mean, std
    with pytest.raises(ConfigValueError, match=r"MODEL.PIXEL_MEAN \(\d values: .*MODEL.PIXEL_STD "
                       r"\(\d values: .*must have the same length"):
        build_model(cfg)


@pytest.mark.parametrize("key,value,expected", [b for b in BAD if b[0] in INPUT_KEYS],
                         ids=[f"{k}={v}" for k, v, _ in BAD if k in INPUT_KEYS])
def test_loaders_and_mapper_name_input_keys(key, value, expected):
    cfg = _cfg(key, value)
    DatasetCatalog.register("cfg_values_never_loaded", lambda: pytest.fail("dataset loaded before the check"))
    try:
        cfg.DATASETS.TRAIN = ("cfg_values_never_loaded",)
        for build in [lambda: build_detection_train_loader(cfg),
                      lambda: build_detection_test_loader(cfg, "cfg_values_never_loaded"),
                      lambda: DatasetMapper(cfg, True), lambda: DatasetMapper(cfg, False)]:
            with pytest.raises(ConfigValueError, match=rf"Config key {key} is"):
                build()
    finally:
        DatasetCatalog.remove("cfg_values_never_loaded")


def test_train_loader_names_ims_per_batch():
    cfg = _cfg("SOLVER.IMS_PER_BATCH", 0)
    with pytest.raises(ConfigValueError, match=r"Config key SOLVER.IMS_PER_BATCH is 0, expected an integer >= 1"):
        build_detection_train_loader(cfg)


def test_detectron2_sentinels_stay_legal():
    cfg = get_cfg()
    cfg.merge_from_list([
        "INPUT.MIN_SIZE_TEST", 0,  # no resizing at test time
        "INPUT.MIN_SIZE_TRAIN", (0,),
        "TEST.DETECTIONS_PER_IMAGE", -1,  # keep all
        "SEED", -1,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "MODEL.RPN.NMS_THRESH", 1.0,
        "SOLVER.CLIP_GRADIENTS.ENABLED", False,
        "INPUT.FORMAT", "RGB",
    ])
    check_config_values(cfg)
    check_config_values(get_cfg())  # the defaults


def test_the_error_is_a_value_error_and_unknown_keys_are_refused():
    assert issubclass(ConfigValueError, ValueError)
    assert "MODEL.RPN.NMS_THRESH" in CHECKED_KEYS and set(INPUT_KEYS) <= set(CHECKED_KEYS)
    with pytest.raises(ValueError, match="does not know key 'MODEL.NOPE'"):
        check_config_values(get_cfg(), ["MODEL.NOPE"])

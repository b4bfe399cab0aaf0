"""Tests for workbench.config: the default tree against detectron2 dumps, and CfgNode behaviour.

The reference dumps are the ``config.yaml`` files of the shared fixtures (full ``cfg.dump()``
output of detectron2 0.6, see the fixtures' README), found at ``$WORKBENCH_FIXTURES`` or
``<repo>/../shared/fixtures``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from workbench.config import (
    CfgNode,
    ConfigKeyError,
    configurable,
    get_cfg,
    global_cfg,
    set_global_cfg,
)
from workbench.config import config as config_module
from workbench.config.defaults import _C

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


def _case(name: str):
    folder = FIXTURES / name
    assert folder.is_dir(), f"Reference fixtures not found at {FIXTURES}; set WORKBENCH_FIXTURES."
    meta = json.loads((folder / "meta.json").read_text())
    return folder / "config.yaml", meta


def _flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested mapping -> {"A.B.C": leaf value}."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _canon(value: Any) -> Any:
    """Comparable form: lists and tuples alike, but int / float / bool kept apart."""
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return (type(value).__name__, value)


def _mismatches(actual: Dict[str, Any], expected: Dict[str, Any]) -> List[str]:
    return [
        f"{k}: got {actual[k]!r}, reference {expected[k]!r}"
        for k in sorted(expected)
        if k in actual and _canon(actual[k]) != _canon(expected[k])
    ]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -------------------------------------------------------------------------- default key set
def test_default_version_is_the_one_the_loader_reads():
    assert _C.VERSION == 2 == config_module._LATEST_VERSION


@pytest.mark.parametrize("case", CASES)
def test_default_keys_equal_reference_dump_keys(case):
    config_yaml, _ = _case(case)
    reference = set(_flatten(yaml.safe_load(config_yaml.read_text())))
    ours = set(_flatten(get_cfg()))
    assert not (reference - ours), f"keys missing from defaults.py: {sorted(reference - ours)}"
    assert not (ours - reference), f"keys detectron2 does not have: {sorted(ours - reference)}"


@pytest.mark.parametrize("case", CASES)
def test_reference_dump_merges_and_every_value_lands(case):
    config_yaml, _ = _case(case)
    assert "&id001" in config_yaml.read_text(), "expected the dump to contain YAML anchors"
    cfg = get_cfg()
    cfg.merge_from_file(str(config_yaml))
    expected = _flatten(yaml.safe_load(config_yaml.read_text()))
    assert not _mismatches(_flatten(cfg), expected)


def _keys_set_by_source(meta: Dict[str, Any]) -> set:
    from workbench.model_zoo import get_config_file

    loaded = CfgNode.load_yaml_with_base(get_config_file(meta["source_config"]))
    return set(_flatten(loaded))


@pytest.mark.parametrize("case", CASES)
def test_defaults_equal_reference_where_nothing_overrides_them(case):
    # A key that neither the model-zoo YAML chain nor the fixture generator set keeps
    # detectron2's default in the dump, so it checks our default directly.
    config_yaml, meta = _case(case)
    reference = _flatten(yaml.safe_load(config_yaml.read_text()))
    overridden = _keys_set_by_source(meta) | {c["key"] for c in meta["config_changes"]}
    untouched = {k: v for k, v in reference.items() if k not in overridden}
    assert len(untouched) > 120  # of 192 keys
    assert not _mismatches(_flatten(get_cfg()), untouched)


# Defaults that every fixture's YAML chain overrides, so no dump shows them; values from
# detectron2's defaults.py.
DEFAULTS_NOT_VISIBLE_IN_DUMPS = {
    "DATASETS.TEST": (),
    "DATASETS.TRAIN": (),
    "INPUT.MIN_SIZE_TRAIN": (800,),
    "MODEL.DEVICE": "cuda",
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": (512,) * 8,
    "MODEL.RETINANET.NUM_CLASSES": 80,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 128,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 54,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "MODEL.WEIGHTS": "",
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.MAX_ITER": 40000,
    "SOLVER.STEPS": (30000,),
    "SOLVER.IMS_PER_BATCH": 16,
    "MODEL.RESNETS.DEPTH": 50,
    "VERSION": 2,
}


def test_defaults_that_no_dump_shows():
    cfg = _flatten(get_cfg())
    assert not _mismatches(cfg, DEFAULTS_NOT_VISIBLE_IN_DUMPS)
    assert isinstance(cfg["SOLVER.STEPS"], tuple) and isinstance(cfg["DATASETS.TRAIN"], tuple)


def test_every_default_is_checked_by_a_dump_or_the_table():
    # Without the fixtures, _case() fails with the path it looked for: no silent pass.
    checked = set(DEFAULTS_NOT_VISIBLE_IN_DUMPS)
    for case in CASES:
        _, meta = _case(case)
        overridden = _keys_set_by_source(meta) | {c["key"] for c in meta["config_changes"]}
        checked |= set(_flatten(get_cfg())) - overridden
    unchecked = set(_flatten(get_cfg())) - checked
    assert not unchecked, f"add these to DEFAULTS_NOT_VISIBLE_IN_DUMPS: {sorted(unchecked)}"


# -------------------------------------------------------------------------------- round trip
def _round_trip(cfg: CfgNode, tmp_path: Path) -> CfgNode:
    dumped = _write(tmp_path / "dumped.yaml", cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(dumped))
    return again


def test_dump_round_trip_of_defaults(tmp_path):
    cfg = get_cfg()
    assert _round_trip(cfg, tmp_path) == cfg


@pytest.mark.parametrize("case", CASES)
def test_dump_round_trip_of_reference_configs(case, tmp_path):
    config_yaml, _ = _case(case)
    cfg = get_cfg()
    cfg.merge_from_file(str(config_yaml))
    again = _round_trip(cfg, tmp_path)
    assert again == cfg
    # Nested tuples come back as nested tuples, not tuples of lists.
    weights = again.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
    assert weights == _C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
    assert all(isinstance(w, tuple) for w in weights)


def test_yaml_aliases_do_not_share_values_after_merge(tmp_path):
    path = _write(
        tmp_path / "alias.yaml",
        "MODEL:\n  PIXEL_MEAN: &m [1.0, 2.0, 3.0]\n  PIXEL_STD: *m\n",
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.PIXEL_MEAN[0] = 9.0
    assert cfg.MODEL.PIXEL_STD == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------------------------ _BASE_
def test_base_relative_to_including_file_and_group_merge(tmp_path):
    _write(
        tmp_path / "bases" / "base.yaml",
        "MODEL:\n  DEVICE: cpu\n  RPN:\n    NMS_THRESH: 0.6\n    PRE_NMS_TOPK_TEST: 5\n"
        "SOLVER:\n  BASE_LR: 0.5\n",
    )
    child = _write(
        tmp_path / "leaf" / "child.yaml",
        '_BASE_: "../bases/base.yaml"\n'
        "MODEL:\n  RPN:\n    PRE_NMS_TOPK_TEST: 10\nSOLVER:\n  BASE_LR: 0.1\n",
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(child))
    assert cfg.MODEL.DEVICE == "cpu"  # only in the base
    assert cfg.MODEL.RPN.NMS_THRESH == 0.6  # sibling of an overridden key survives
    assert cfg.MODEL.RPN.PRE_NMS_TOPK_TEST == 10  # child wins
    assert cfg.SOLVER.BASE_LR == 0.1
    assert "_BASE_" not in CfgNode.load_yaml_with_base(str(child))


def test_base_chain_of_three_files(tmp_path):
    _write(tmp_path / "a.yaml", "SEED: 1\nOUTPUT_DIR: a\nVIS_PERIOD: 1\n")
    _write(tmp_path / "sub" / "b.yaml", "_BASE_: ../a.yaml\nSEED: 2\nOUTPUT_DIR: b\n")
    c = _write(tmp_path / "sub" / "deeper" / "c.yaml", "_BASE_: ../b.yaml\nSEED: 3\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(c))
    assert (cfg.SEED, cfg.OUTPUT_DIR, cfg.VIS_PERIOD) == (3, "b", 1)


def test_base_absolute_and_home_paths(tmp_path, monkeypatch):
    base = _write(tmp_path / "home" / "base.yaml", "SEED: 7\n")
    absolute = _write(tmp_path / "x" / "abs.yaml", f"_BASE_: {base}\nVIS_PERIOD: 3\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(absolute))
    assert (cfg.SEED, cfg.VIS_PERIOD) == (7, 3)

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = _write(tmp_path / "y" / "home.yaml", "_BASE_: ~/base.yaml\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(home))
    assert cfg.SEED == 7


def test_missing_base_names_both_files(tmp_path):
    child = _write(tmp_path / "child.yaml", "_BASE_: nowhere/base.yaml\n")
    with pytest.raises(FileNotFoundError) as err:
        get_cfg().merge_from_file(str(child))
    assert str(child) in str(err.value)
    assert str(tmp_path / "nowhere" / "base.yaml") in str(err.value)


def test_circular_base_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    b = _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ValueError, match="Circular _BASE_"):
        get_cfg().merge_from_file(str(b))


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        get_cfg().merge_from_file("/definitely/no_such.yaml")


# ---------------------------------------------------------------------------- unknown keys
def test_unknown_key_names_full_key_and_file(tmp_path):
    path = _write(tmp_path / "typo.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASSE: 3\n")
    with pytest.raises(KeyError) as err:
        get_cfg().merge_from_file(str(path))
    assert isinstance(err.value, ConfigKeyError)
    message = str(err.value)
    assert "MODEL.ROI_HEADS.NUM_CLASSE" in message
    assert str(path) in message
    assert "MODEL.ROI_HEADS.NUM_CLASSES" in message  # the suggestion


def test_unknown_key_in_a_base_names_the_base(tmp_path):
    base = _write(tmp_path / "base.yaml", "MODEL:\n  NOT_A_KEY: 1\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSEED: 4\n")
    with pytest.raises(ConfigKeyError) as err:
        get_cfg().merge_from_file(str(child))
    assert "MODEL.NOT_A_KEY" in str(err.value) and f"'{base}'" in str(err.value)


def test_failed_merge_leaves_config_unchanged(tmp_path):
    path = _write(tmp_path / "bad.yaml", "SEED: 5\nMODEL:\n  DEVICE: cpu\n  NOPE: 1\n")
    cfg = get_cfg()
    model_node = cfg.MODEL
    with pytest.raises(ConfigKeyError):
        cfg.merge_from_file(str(path))
    assert cfg == get_cfg()
    good = _write(tmp_path / "good.yaml", "MODEL:\n  DEVICE: cpu\n")
    cfg.merge_from_file(str(good))
    assert cfg.MODEL is model_node and model_node.DEVICE == "cpu"  # sub-nodes updated in place


def test_type_mismatch_in_file_names_key_and_file(tmp_path):
    path = _write(tmp_path / "types.yaml", "SOLVER:\n  BASE_LR: 1\n")
    with pytest.raises(ValueError) as err:
        get_cfg().merge_from_file(str(path))
    message = str(err.value)
    assert "SOLVER.BASE_LR" in message and str(path) in message and "1.0" in message


def test_group_replaced_by_value_is_an_error(tmp_path):
    path = _write(tmp_path / "group.yaml", "MODEL:\n  RPN: 3\n")
    with pytest.raises(ValueError, match="MODEL.RPN' is a group of keys"):
        get_cfg().merge_from_file(str(path))


# -------------------------------------------------------------------------------- VERSION
def test_version_2_and_missing_version_load(tmp_path):
    for text in ("VERSION: 2\nSEED: 1\n", "SEED: 1\n", ""):
        cfg = get_cfg()
        cfg.merge_from_file(str(_write(tmp_path / "v.yaml", text)))
        assert cfg.VERSION == 2


def test_newer_version_is_refused(tmp_path):
    # Older versions are upgraded (tests/config/test_compat.py); a newer one cannot be read.
    path = _write(tmp_path / "new.yaml", "VERSION: 3\nMODEL:\n  DEVICE: cpu\n")
    with pytest.raises(ValueError) as err:
        get_cfg().merge_from_file(str(path))
    assert "VERSION: 3" in str(err.value) and str(path) in str(err.value)


# --------------------------------------------------------------------------- unsafe YAML
def test_python_tags_need_allow_unsafe(tmp_path):
    # An eval tag that is not plain arithmetic over literals, and any other Python tag.
    for i, tag in enumerate(['!!python/object/apply:os.getcwd []',
                             '!!python/object/apply:eval ["[[len(__import__(\'os\').sep) * 8]]"]']):
        path = _write(tmp_path / f"unsafe{i}.yaml", f"MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: {tag}\n")
        with pytest.raises(ValueError, match="allow_unsafe=True"):
            get_cfg().merge_from_file(str(path))
    cfg = get_cfg()
    cfg.merge_from_file(str(path), allow_unsafe=True)
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[8]]


def test_detectron2_retinanet_eval_tag_loads_safely(tmp_path):
    # detectron2's configs/Base-RetinaNet.yaml, as written there.
    path = _write(tmp_path / "retina.yaml", "MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: "
                  '!!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] '
                  'for x in [32, 64, 128, 256, 512 ]]"]\n')
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    expected = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == expected


# ------------------------------------------------------------------------- merge_from_list
def test_merge_from_list_parses_literals_and_coerces():
    cfg = get_cfg()
    cfg.merge_from_list(
        ["SOLVER.STEPS", "(10, 20)", "MODEL.ROI_HEADS.NUM_CLASSES", "3", "SOLVER.BASE_LR", 0.5,
         "MODEL.PIXEL_STD", (1.0, 2.0, 3.0), "OUTPUT_DIR", "123", "SOLVER.WEIGHT_DECAY_BIAS", "0.0"]
    )
    assert cfg.SOLVER.STEPS == (10, 20) and isinstance(cfg.SOLVER.STEPS, tuple)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert cfg.SOLVER.BASE_LR == 0.5
    assert cfg.MODEL.PIXEL_STD == [1.0, 2.0, 3.0]  # tuple given, list default: list kept
    assert cfg.OUTPUT_DIR == "123"  # string key: not parsed as an int
    assert cfg.SOLVER.WEIGHT_DECAY_BIAS == 0.0  # None default accepts any type


@pytest.mark.parametrize(
    "pairs, fragment",
    [
        (["SOLVER.BASE_LR", "1"], "SOLVER.BASE_LR"),  # int into float
        (["MODEL.MASK_ON", 1], "MODEL.MASK_ON"),  # int into bool
        (["MODEL.ROI_HEADS.NUM_CLASSES", "3.5"], "MODEL.ROI_HEADS.NUM_CLASSES"),  # float into int
        (["MODEL.PIXEL_MEAN", "cpu"], "MODEL.PIXEL_MEAN"),  # str into list
    ],
)
def test_merge_from_list_type_errors_name_the_key(pairs, fragment):
    cfg = get_cfg()
    with pytest.raises(ValueError, match="Type mismatch") as err:
        cfg.merge_from_list(pairs)
    assert fragment in str(err.value) and "merge_from_list" in str(err.value)
    assert cfg == get_cfg()


def test_merge_from_list_unknown_keys_name_the_full_key():
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError, match=r"'MODEL\.RPN\.NMS_THRES'.*'MODEL\.RPN\.NMS_THRESH'"):
        cfg.merge_from_list(["MODEL.RPN.NMS_THRES", 0.5])
    with pytest.raises(ConfigKeyError, match=r"'MODEL\.NOPE\.DEEPER'"):
        cfg.merge_from_list(["MODEL.NOPE.DEEPER", 0.5])
    with pytest.raises(ConfigKeyError, match=r"'MODEL\.DEVICE\.X'.*'MODEL\.DEVICE' is a value"):
        cfg.merge_from_list(["MODEL.DEVICE.X", 0.5])


def test_merge_from_list_is_all_or_nothing_and_checks_length():
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError):
        cfg.merge_from_list(["SEED", 3, "NOT.A_KEY", 1])
    assert cfg.SEED == -1
    with pytest.raises(ValueError, match="odd number"):
        cfg.merge_from_list(["SEED"])


# -------------------------------------------------------------------- merge_from_other_cfg
def test_merge_from_other_cfg():
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode({"MODEL": {"DEVICE": "cpu"}, "SOLVER": {"STEPS": [1, 2]}}))
    assert cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.STEPS == (1, 2)
    with pytest.raises(ConfigKeyError, match="MODEL.NOPE"):
        cfg.merge_from_other_cfg({"MODEL": {"NOPE": 1}})
    with pytest.raises(ConfigKeyError, match="_BASE_"):
        cfg.merge_from_other_cfg({"_BASE_": "x.yaml"})


def test_new_allowed_nodes_accept_new_keys():
    cfg = get_cfg()
    cfg.EXTRA = CfgNode(new_allowed=True)
    cfg.merge_from_other_cfg({"EXTRA": {"A": 1, "B": {"C": "x"}}})
    assert cfg.EXTRA.A == 1 and cfg.EXTRA.B.C == "x"


# ------------------------------------------------------------------------ freeze and clone
def test_freeze_makes_assignment_and_merging_fail():
    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(AttributeError, match="immutable"):
        cfg.SEED = 3
    with pytest.raises(AttributeError, match="immutable"):
        cfg.MODEL.RPN.NMS_THRESH = 0.1
    with pytest.raises(AttributeError, match="frozen"):
        cfg.merge_from_list(["SEED", 3])
    cfg.defrost()
    cfg.SEED = 3
    assert cfg.SEED == 3


def test_clone_is_independent():
    cfg = get_cfg()
    copy_ = cfg.clone()
    copy_.MODEL.DEVICE = "cpu"
    copy_.MODEL.PIXEL_MEAN[0] = 0.0
    copy_.MODEL.ANCHOR_GENERATOR.SIZES[0].append(1024)
    assert cfg.MODEL.DEVICE == "cuda"
    assert cfg.MODEL.PIXEL_MEAN[0] == 103.53
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32, 64, 128, 256, 512]]
    assert get_cfg() == cfg  # the defaults themselves were not touched
    frozen = get_cfg()
    frozen.freeze()
    assert frozen.clone().is_frozen()


# ------------------------------------------------------------------------------- the rest
def test_global_cfg_keeps_identity():
    before = global_cfg
    cfg = get_cfg()
    cfg.GLOBAL.HACK = 2.0
    set_global_cfg(cfg)
    try:
        assert global_cfg is before and global_cfg.GLOBAL.HACK == 2.0
    finally:
        set_global_cfg(CfgNode())


def test_configurable_is_exported():
    assert callable(configurable)

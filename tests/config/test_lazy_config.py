"""LazyConfig: LazyCall / instantiate semantics, .py loading (relative imports, detectron2 names),
safe YAML, save round trips, overrides."""

import dataclasses
import importlib.util
import logging
import os
import sys
import textwrap
from functools import partial

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from workbench.config import LazyCall as L
from workbench.config import LazyConfig, configurable, instantiate
from workbench.config import lazy as lazy_module
from workbench.modeling.matcher import Matcher
from workbench.solver import lr_scheduler


class Inner:
    def __init__(self, x, y=0):
        self.x, self.y = x, y


class Outer:
    def __init__(self, inner, items=(), options=None):
        self.inner, self.items, self.options = inner, items, options


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Configured:
    @configurable
    def __init__(self, *, depth: int, width: int = 8):
        self.depth, self.width = depth, width

    @classmethod
    def from_config(cls, cfg):
        return {"depth": cfg.MODEL.RESNETS.DEPTH}


def _from_cfg(cfg):
    return {"n": cfg.MODEL.RESNETS.DEPTH}


@configurable(from_config=_from_cfg)
def configured_function(*, n, scale=2):
    return n * scale


def _write(folder, rel, text):
    path = os.path.join(str(folder), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------ LazyCall / instantiate
def test_lazycall_records_an_editable_call():
    cfg = L(nn.Conv2d)(in_channels=3, out_channels=4, kernel_size=3)
    assert isinstance(cfg, DictConfig) and cfg._target_ is nn.Conv2d
    cfg.out_channels = 6
    conv = instantiate(cfg)
    assert isinstance(conv, nn.Conv2d) and conv.out_channels == 6 and conv.in_channels == 3


def test_lazycall_takes_keywords_only_and_a_callable():
    with pytest.raises(TypeError):
        L(nn.ReLU)(True)  # positional arguments are not supported, as in detectron2
    with pytest.raises(TypeError, match="LazyCall needs a callable"):
        L(42)


def test_instantiate_nested_calls_lists_and_plain_dicts():
    cfg = L(Outer)(
        inner=L(Inner)(x=1, y=L(Inner)(x=5)),
        items=[L(Inner)(x=2), 3, [L(Inner)(x=4)]],
        options={"a": 1, "b": L(Inner)(x=9)},
    )
    obj = instantiate(cfg)
    assert isinstance(obj.inner, Inner) and obj.inner.x == 1 and obj.inner.y.x == 5
    assert type(obj.items) is list and obj.items[0].x == 2 and obj.items[1] == 3
    assert obj.items[2][0].x == 4
    # A dict without _target_ describes no call: returned as is (detectron2's semantics).
    assert obj.options.a == 1 and OmegaConf.is_config(obj.options.b)
    assert instantiate([L(Inner)(x=7)])[0].x == 7
    assert instantiate(5) == 5


def test_instantiate_resolves_interpolations():
    cfg = OmegaConf.create({"lr": 0.5, "opt": L(Inner)(x="${..lr}", y=2)}, flags={"allow_objects": True})
    assert instantiate(cfg.opt).x == 0.5


def test_instantiate_string_targets_and_detectron2_names():
    assert isinstance(instantiate({"_target_": "torch.nn.ReLU"}), nn.ReLU)
    m = instantiate({"_target_": "detectron2.modeling.matcher.Matcher",
                     "thresholds": [0.5], "labels": [0, 1]})
    assert type(m) is Matcher
    sched = instantiate({"_target_": "fvcore.common.param_scheduler.MultiStepParamScheduler",
                         "values": [1.0, 0.1], "milestones": [5], "num_updates": 10})
    if importlib.util.find_spec("fvcore") is None:
        assert type(sched) is lr_scheduler.MultiStepParamScheduler
    assert sched(0.9) == pytest.approx(0.1)


def test_instantiate_dataclass_targets():
    cfg = L(Point)(x=3)
    assert isinstance(cfg._target_, str)  # omegaconf cannot hold a dataclass type
    assert instantiate(cfg) == Point(3, 0)


def test_instantiate_errors_name_the_key():
    cfg = L(Outer)(inner=L(Outer)(inner=1, items=[2, L(Inner)(x=1, bogus=2)]))
    with pytest.raises(TypeError, match=r"Inner at key 'inner\.items\.1'.*bogus"):
        instantiate(cfg)
    with pytest.raises(ImportError, match=r"at key 'net'.*no_such_module_xyz"):
        instantiate({"_target_": dict, "net": {"_target_": "no_such_module_xyz.Thing"}})
    with pytest.raises(TypeError, match="not callable"):
        instantiate({"_target_": 3})


def test_instantiate_configurable_class_and_function():
    obj = instantiate(L(Configured)(depth=50))
    assert (obj.depth, obj.width) == (50, 8)
    assert instantiate(L(configured_function)(n=3, scale=5)) == 15
    # The cfg path of @configurable still works beside it.
    from workbench.config import get_cfg

    assert Configured(get_cfg()).depth == get_cfg().MODEL.RESNETS.DEPTH


# --------------------------------------------------------------------------------- .py loading
def test_load_py_with_relative_imports_and_keys(tmp_path):
    _write(tmp_path, "common/models.py", """
        from torch import nn
        from workbench.config import LazyCall as L
        model = L(nn.Linear)(in_features=1, out_features=2)
        settings = dict(lr=0.1, steps=[1, 2])
        _private = dict(a=1)
        """)
    _write(tmp_path, "common/sibling.py", """
        from .models import settings
        settings.lr = 0.2
        """)
    main = _write(tmp_path, "exp/main.py", """
        from ..common.models import model, settings
        from ..common.sibling import settings as sibling_settings
        model.in_features = 10
        number = 3
        """)
    cfg = LazyConfig.load(main)
    assert set(cfg.keys()) == {"model", "settings", "sibling_settings"}
    assert cfg.model.in_features == 10 and cfg.settings.lr == 0.1 and cfg.sibling_settings.lr == 0.2
    assert isinstance(cfg.settings, DictConfig)  # imported dicts become configs
    # Each import runs the file again: the edit in main.py did not leak into a fresh load.
    assert LazyConfig.load(str(tmp_path / "common/models.py")).model.in_features == 1
    assert LazyConfig.load(main, keys="number") == 3
    model, settings = LazyConfig.load(main, keys=("model", "settings"))
    assert model.out_features == 2 and settings.steps == [1, 2]
    with pytest.raises(KeyError, match="nope"):
        LazyConfig.load(main, keys="nope")


def test_relative_import_errors_name_the_file(tmp_path):
    missing = _write(tmp_path, "a.py", "from .not_there import x\n")
    with pytest.raises(ImportError, match=r"a\.py.*not_there\.py does not exist"):
        LazyConfig.load(missing)
    os.makedirs(tmp_path / "pkg")
    folder = _write(tmp_path, "b.py", "from .pkg import x\n")
    with pytest.raises(ImportError, match="is a folder"):
        LazyConfig.load(folder)
    bare = _write(tmp_path, "c.py", "from . import x\n")
    with pytest.raises(ImportError, match="not supported"):
        LazyConfig.load(bare)
    _write(tmp_path, "d.py", "value = dict(a=1)\n")
    bad_name = _write(tmp_path, "e.py", "from .d import other\n")
    with pytest.raises(ImportError, match=r"cannot import name 'other' from config file .*d\.py"):
        LazyConfig.load(bad_name)
    _write(tmp_path, "f.py", "from .g import y\nx = dict()\n")
    cycle = _write(tmp_path, "g.py", "from .f import x\ny = dict()\n")
    with pytest.raises(ImportError, match="Circular import"):
        LazyConfig.load(cycle)


def test_detectron2_names_map_to_workbench_only_inside_configs(tmp_path):
    path = _write(tmp_path, "d2.py", """
        import detectron2
        import detectron2.data.transforms as T
        from detectron2.config import LazyCall as L
        from detectron2.modeling.matcher import Matcher
        from detectron2.model_zoo import get_config
        from fvcore.common.param_scheduler import MultiStepParamScheduler

        matcher = L(Matcher)(thresholds=[0.5], labels=[0, 1])
        flip = L(T.RandomFlip)(horizontal=True)
        sched = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[5], num_updates=10)
        train = get_config("common/train.py").train
        names = dict(top=detectron2.__name__)
        """)
    cfg = LazyConfig.load(path)
    import workbench.data.transforms as wT

    assert cfg.matcher._target_ is Matcher and cfg.flip._target_ is wT.RandomFlip
    assert cfg.names.top == "workbench" and cfg.train.max_iter == 90000
    if importlib.util.find_spec("fvcore") is None:
        assert cfg.sched._target_ is lr_scheduler.MultiStepParamScheduler
    assert isinstance(instantiate(cfg.matcher), Matcher)
    # The mapping is scoped to config code: nothing named detectron2 was imported globally.
    assert not any(k == "detectron2" or k.startswith("detectron2.") for k in sys.modules)
    assert builtins_import_is_untouched()


def builtins_import_is_untouched():
    import builtins

    return builtins.__import__ is not lazy_module._config_import


def test_missing_name_in_config_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.py", """
        from detectron2.config import LazyCall as L

        from detectron2.modeling import NoSuchBackbone
        """)
    with pytest.raises(ImportError, match=r"bad\.py, line 4: cannot import name 'NoSuchBackbone'"):
        LazyConfig.load(path)
    path = _write(tmp_path, "bad_module.py", "import detectron2.no_such_module\n")
    with pytest.raises(ModuleNotFoundError, match=r"bad_module\.py, line 1.*detectron2\.no_such"):
        LazyConfig.load(path)
    # An error inside an imported config names the imported file.
    outer = _write(tmp_path, "outer.py", "from .bad import L\n")
    with pytest.raises(ImportError, match=r"bad\.py, line 4"):
        LazyConfig.load(outer)


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="must be a .py or .yaml"):
        LazyConfig.load(str(tmp_path / "x.json"))
    with pytest.raises(FileNotFoundError, match="nothere.py"):
        LazyConfig.load(str(tmp_path / "nothere.py"))
    broken = _write(tmp_path, "broken.py", "model = dict(\n")
    with pytest.raises(SyntaxError, match=r"broken\.py has a syntax error"):
        LazyConfig.load(broken)


# ----------------------------------------------------------------------------------- YAML
def test_yaml_with_python_tag_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model:\n  x: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match=r"evil\.yaml \(line 2\).*python/object/apply"):
        LazyConfig.load(str(path))
    assert not marker.exists()


def test_save_load_round_trip(tmp_path):
    cfg = OmegaConf.create(
        {
            "model": L(Outer)(inner=L(nn.Conv2d)(in_channels=3, out_channels=4, kernel_size=(3, 3)),
                              items=[L(Inner)(x=1)], options={"lr": "${..inner.in_channels}"}),
            "train": {"max_iter": 10, "name": "run", "amp": {"enabled": False}, "ratio": 0.5},
        },
        flags={"allow_objects": True},
    )
    path = str(tmp_path / "cfg.yaml")
    LazyConfig.save(cfg, path)
    assert cfg.model._target_ is Outer  # the caller's config is not modified
    text = open(path).read()
    assert "_target_: torch.nn.Conv2d" in text and "${..inner.in_channels}" in text
    again = LazyConfig.load(path)
    assert again.model._target_.endswith("test_lazy_config.Outer")
    assert OmegaConf.to_container(again.train) == OmegaConf.to_container(cfg.train)
    assert list(again.model.inner.kernel_size) == [3, 3]
    obj = instantiate(again.model)
    assert isinstance(obj.inner, nn.Conv2d) and obj.items[0].x == 1
    LazyConfig.save(again, path)  # saving a loaded config gives the same file
    assert open(path).read() == text


def test_save_and_reload_a_model_zoo_config(tmp_path):
    from workbench import model_zoo

    cfg = model_zoo.get_config("common/models/mask_rcnn_fpn.py")
    path = str(tmp_path / "mask_rcnn.yaml")
    LazyConfig.save(cfg, path)
    again = LazyConfig.load(path)
    assert again.model._target_ == "workbench.modeling.GeneralizedRCNN"
    assert again.model.backbone.bottom_up.stages._target_ == (
        "workbench.modeling.ResNet.make_default_stages")
    assert again.model.roi_heads.num_classes == cfg.model.roi_heads.num_classes
    # A detectron2-saved file names detectron2 modules: they build workbench objects.
    text = open(path).read().replace("workbench.modeling", "detectron2.modeling")
    (tmp_path / "d2.yaml").write_text(text)
    d2 = LazyConfig.load(str(tmp_path / "d2.yaml"))
    matcher = instantiate(d2.model.proposal_generator.anchor_matcher)
    assert type(matcher) is Matcher


def test_save_marks_values_yaml_cannot_hold(tmp_path, caplog):
    cfg = OmegaConf.create({"model": L(Inner)(x=partial(nn.LayerNorm, eps=1e-6))},
                           flags={"allow_objects": True})
    path = str(tmp_path / "cfg.yaml")
    with caplog.at_level(logging.WARNING, logger="workbench.config.lazy"):
        LazyConfig.save(cfg, path)
    assert "model.x (partial)" in caplog.text
    assert "!unsaved" in open(path).read()
    with pytest.raises(ValueError, match="!unsaved"):
        LazyConfig.load(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text("old: 1\n")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(lazy_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        LazyConfig.save(OmegaConf.create({"new": 2}), str(path))
    assert os.listdir(tmp_path) == ["cfg.yaml"]  # no temporary file left behind
    assert path.read_text() == "old: 1\n"


# ----------------------------------------------------------------------------- overrides, to_py
def _cfg():
    return OmegaConf.create(
        {"train": {"max_iter": 10, "lr": 0.1, "name": "a", "steps": [1]},
         "model": L(Inner)(x=1)}, flags={"allow_objects": True})


def test_apply_overrides_values():
    cfg = LazyConfig.apply_overrides(_cfg(), [
        "train.max_iter=20", "train.lr=1e-3", "train.name=resnet", "train.steps=[5, 6]",
        "model.y=None", "model.x='3'", "train.extra=true",
    ])
    assert cfg.train.max_iter == 20 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.name == "resnet" and list(cfg.train.steps) == [5, 6]
    assert cfg.model.y is None and cfg.model.x == "3"
    assert cfg.train.extra == "true"  # not a Python literal: kept as a string
    cfg = LazyConfig.apply_overrides(_cfg(), ["train.name=a=b"])
    assert cfg.train.name == "a=b"


def test_apply_overrides_errors_name_the_key():
    with pytest.raises(KeyError, match=r"'trian\.max_iter': 'trian' does not exist.*'train'"):
        LazyConfig.apply_overrides(_cfg(), ["trian.max_iter=1"])
    with pytest.raises(KeyError, match=r"'train\.max_iter\.x'.*'train\.max_iter' is a int"):
        LazyConfig.apply_overrides(_cfg(), ["train.max_iter.x=1"])
    with pytest.raises(ValueError, match="not of the form 'key=value'"):
        LazyConfig.apply_overrides(_cfg(), ["train.max_iter"])
    with pytest.raises(TypeError, match="list of 'key=value'"):
        LazyConfig.apply_overrides(_cfg(), "train.max_iter=1")


def test_to_py_reads_like_code():
    text = LazyConfig.to_py(_cfg())
    assert "cfg.train.max_iter=10" in text.replace(" ", "")
    assert "test_lazy_config.Inner(x=1)" in text

"""LazyConfig: LazyCall / instantiate semantics, .py loading (relative imports, detectron2 names),
safe YAML, save round trips, overrides."""

import builtins
import dataclasses
import importlib.util
import logging
import os
import sys
import textwrap
import uuid
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
    # A tuple in a config (a TupleConfig in omegaconf >= 2.4) comes back as a tuple.
    pair = instantiate(L(Outer)(inner=(1024, L(Inner)(x=3)))).inner
    assert type(pair) is tuple and pair[0] == 1024 and pair[1].x == 3
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
    import_before = builtins.__import__
    cfg = LazyConfig.load(path)
    import workbench.data.transforms as wT

    assert cfg.matcher._target_ is Matcher and cfg.flip._target_ is wT.RandomFlip
    assert cfg.names.top == "workbench" and cfg.train.max_iter == 90000
    if importlib.util.find_spec("fvcore") is None:
        assert cfg.sched._target_ is lr_scheduler.MultiStepParamScheduler
    assert isinstance(instantiate(cfg.matcher), Matcher)
    # The mapping is scoped to config code: nothing named detectron2 was imported globally.
    assert not any(k == "detectron2" or k.startswith("detectron2.") for k in sys.modules)
    assert builtins.__import__ is import_before  # nothing global was patched


def test_each_config_gets_its_own_builtins(tmp_path):
    real_len = builtins.len
    evil = _write(tmp_path, "evil.py", """
        __builtins__["len"] = lambda x: 42
        __builtins__["__import__"] = None
        x = dict(n=len([1]))
        """)
    assert LazyConfig.load(evil).x.n == 42
    other = _write(tmp_path, "other.py", "import os\nx = dict(n=len([1, 2]))\n")
    assert LazyConfig.load(other).x.n == 2  # the edit in evil.py did not leak
    assert builtins.len is real_len and builtins.__import__ is not None


def test_configs_load_through_a_registered_path_handler(tmp_path):
    from workbench.utils.file_io import PathHandler, PathManager

    prefix = f"wbtest{uuid.uuid4().hex[:8]}://"
    opened = []

    class FolderHandler(PathHandler):
        def _get_supported_prefixes(self):
            return [prefix]

        def _get_local_path(self, path, **kwargs):
            opened.append(path)
            return os.path.join(str(tmp_path), path[len(prefix):])

    _write(tmp_path, "common/models.py", "model = dict(depth=50)\n")
    _write(tmp_path, "exp/main.py", "from ..common.models import model\nmodel.depth = 101\n")
    (tmp_path / "cfg.yaml").write_text("train: {max_iter: 5}\n")
    PathManager.register_handler(FolderHandler())
    try:
        assert LazyConfig.load(prefix + "exp/main.py").model.depth == 101
        assert prefix + "common/models.py" in opened  # the relative import went through it
        assert LazyConfig.load(prefix + "cfg.yaml").train.max_iter == 5
        with pytest.raises(ImportError, match=r"common/nope\.py"):
            _write(tmp_path, "exp/bad.py", "from ..common.nope import x\n")
            LazyConfig.load(prefix + "exp/bad.py")
        with pytest.raises(ValueError, match="local files only"):
            LazyConfig.save(OmegaConf.create({"a": 1}), prefix + "out.yaml")
    finally:
        PathManager._path_handlers.pop(prefix)


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


def _make_local_class():
    class Local:
        def __init__(self, a=1):
            self.a = a

    return Local


def test_save_marks_values_yaml_cannot_hold(tmp_path, caplog):
    cfg = OmegaConf.create(
        {"model": L(Inner)(x=lambda c: c, y=partial(Inner, y=lambda: 0)),
         "other": {"obj": Inner(1), "opts": partial(Inner, options={"a": 1})}},
        flags={"allow_objects": True})
    path = str(tmp_path / "cfg.yaml")
    with caplog.at_level(logging.WARNING, logger="workbench.config.lazy"):
        LazyConfig.save(cfg, path)
    for key in ("model.x (function", "model.y (partial)", "other.obj (Inner)",
                "other.opts (partial)"):
        assert key in caplog.text
    assert open(path).read().count("!unsaved") == 4
    with pytest.raises(ValueError, match="!unsaved"):
        LazyConfig.load(path)


def test_save_refuses_targets_that_cannot_be_located_again(tmp_path, caplog):
    cfg = OmegaConf.create({"m": L(_make_local_class())(a=2), "n": L(lambda a: a)(a=3),
                            "ok": L(Inner)(x=1)}, flags={"allow_objects": True})
    path = str(tmp_path / "cfg.yaml")
    with caplog.at_level(logging.WARNING, logger="workbench.config.lazy"):
        LazyConfig.save(cfg, path)
    assert "m._target_ (type" in caplog.text and "<locals>.Local" in caplog.text
    assert "n._target_ (function" in caplog.text and "ok._target_" not in caplog.text
    text = open(path).read()
    assert "_target_: !unsaved" in text and "test_lazy_config.Inner" in text
    # A class defined inside a .py config lives in a module that cannot be imported again.
    py = _write(tmp_path, "net.py", """
        from detectron2.config import LazyCall as L
        class Net:
            def __init__(self, depth):
                self.depth = depth
        model = L(Net)(depth=3)
        """)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workbench.config.lazy"):
        LazyConfig.save(LazyConfig.load(py), path)
    assert "model._target_ (type" in caplog.text and ".net.Net" in caplog.text
    assert "_cfg_loader" not in open(path).read().split("!unsaved")[0]


def test_save_writes_classes_functions_and_partials_as_nodes(tmp_path, caplog):
    import torch.nn.functional as F

    from workbench.modeling.backbone import ResNet

    cfg = OmegaConf.create({"model": L(Outer)(
        inner=nn.ReLU,  # a class as a value: instantiate must give the class, not an instance
        items=[F.relu, partial(nn.LayerNorm, eps=1e-6), partial(Inner, 1, y=nn.GELU),
               ResNet.make_default_stages, torch.cat],
        options=L(Outer)(inner=partial(partial(Inner, y=(1, 2)), x=3)),
    )}, flags={"allow_objects": True})
    path = str(tmp_path / "cfg.yaml")
    with caplog.at_level(logging.WARNING, logger="workbench.config.lazy"):
        LazyConfig.save(cfg, path)
    assert caplog.text == ""
    text = open(path).read()
    assert "!unsaved" not in text and "!!" not in text
    assert "{_target_: workbench.utils.registry.locate, name: torch.nn.ReLU}" in text
    assert "_target_: workbench.config.partial_of" in text
    obj = instantiate(LazyConfig.load(path).model)
    assert obj.inner is nn.ReLU
    relu, norm, inner, stages, cat = obj.items
    assert relu is F.relu and cat is torch.cat and stages == ResNet.make_default_stages
    assert norm.func is nn.LayerNorm and norm.args == () and norm.keywords == {"eps": 1e-6}
    assert isinstance(norm(4), nn.LayerNorm) and norm(4).eps == 1e-6
    assert inner.func is Inner and inner.args == (1,) and inner.keywords == {"y": nn.GELU}
    act = obj.options.inner
    assert act.func is Inner and act.keywords == {"y": [1, 2], "x": 3}
    assert instantiate(LazyConfig.load(path).model.inner) is nn.ReLU  # on its own, too


def test_loading_a_saved_class_imports_nothing(tmp_path):
    assert "tabnanny" not in sys.modules
    path = tmp_path / "cfg.yaml"
    path.write_text("check: {_target_: workbench.utils.registry.locate, name: tabnanny.check}\n")
    cfg = LazyConfig.load(str(path))
    assert "tabnanny" not in sys.modules  # loading is data only; instantiate imports
    import tabnanny

    assert instantiate(cfg.check) is tabnanny.check


def test_save_into_a_missing_folder_names_the_path(tmp_path):
    target = tmp_path / "no_such_dir" / "cfg.yaml"
    with pytest.raises(FileNotFoundError, match=r"no_such_dir/cfg\.yaml.*no_such_dir does not"):
        LazyConfig.save(OmegaConf.create({"a": 1}), str(target))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value, key", [
    ("${oc.env:HOME}", "a"),
    ("prefix ${oc.env:HOME,x} suffix", "a"),
    ("${oc.decode:'[1, 2]'}", "a"),
    ("${some_resolver:${b}}", "a"),
])
def test_yaml_interpolations_that_call_resolvers_are_refused(tmp_path, value, key):
    path = tmp_path / "env.yaml"
    path.write_text(f"b: 1\nmodel:\n  items: [1, {{x: \"{value}\"}}]\n{key}: \"{value}\"\n")
    with pytest.raises(ValueError, match=r"env\.yaml: the value of 'model\.items\.1\.x'.*resolver"):
        LazyConfig.load(str(path))
    path.write_text(f"{key}: \"{value}\"\n")
    with pytest.raises(ValueError, match=rf"env\.yaml: the value of '{key}'"):
        LazyConfig.load(str(path))


def test_yaml_plain_references_still_load(tmp_path):
    path = tmp_path / "ref.yaml"
    path.write_text("a: 1\nm: {b: '${..a}', c: '${a}', d: 'x \\${oc.env:HOME}'}\n")
    cfg = LazyConfig.load(str(path))
    assert cfg.m.b == 1 and cfg.m.c == 1 and cfg.m.d == "x ${oc.env:HOME}"
    path.write_text("a: '${oops'\n")
    with pytest.raises(ValueError, match=r"ref\.yaml: the value of 'a'.*not a valid"):
        LazyConfig.load(str(path))


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
        "model.y=None", "model.x='3'", "+train.extra=true",
    ])
    assert cfg.train.max_iter == 20 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.name == "resnet" and list(cfg.train.steps) == [5, 6]
    assert cfg.model.y is None and cfg.model.x == "3"  # a quoted string, on purpose
    assert cfg.train.extra is True  # Hydra's true, not the string "true"
    cfg = LazyConfig.apply_overrides(_cfg(), ["train.name=a=b"])
    assert cfg.train.name == "a=b"


def _d2_cfg():
    return OmegaConf.create({
        "train": {"amp": {"enabled": True}, "init_checkpoint": "x.pkl", "max_iter": 10,
                  "ddp": {"fp16_compression": False}, "lr": 0.1, "name": "run",
                  "output_dir": "???"},
        "dataloader": {"names": "coco_2017_train", "extra": {}},
    })


def test_apply_overrides_reads_hydra_words_and_lists():
    cfg = LazyConfig.apply_overrides(_d2_cfg(), [
        "train.amp.enabled=false", "train.init_checkpoint=null",
        "train.ddp.fp16_compression=TRUE", "train.max_iter=1e3", "train.lr=2",
        "dataloader.names=[coco_2017_train,coco_2017_val]",
        "dataloader.extra={a: 1, b: [x, true, Null], c: 1e-3, d: yes, e: 2020-01-01}",
        "train.name=abc def",
    ])
    assert cfg.train.amp.enabled is False and cfg.train.init_checkpoint is None
    assert cfg.train.ddp.fp16_compression is True
    assert cfg.train.max_iter == 1000.0 and cfg.train.lr == 2
    assert list(cfg.dataloader.names) == ["coco_2017_train", "coco_2017_val"]
    assert OmegaConf.to_container(cfg.dataloader.extra) == {
        "a": 1, "b": ["x", True, None], "c": 0.001, "d": "yes", "e": "2020-01-01"}
    assert cfg.train.name == "abc def"


def test_apply_overrides_refuses_a_string_in_place_of_a_number_or_bool():
    with pytest.raises(ValueError, match=r"'train\.max_iter' is 10 \(int\).*'abc'"):
        LazyConfig.apply_overrides(_d2_cfg(), ["train.max_iter=abc"])
    with pytest.raises(ValueError, match=r"'train\.amp\.enabled' is True \(bool\).*'yes'"):
        LazyConfig.apply_overrides(_d2_cfg(), ["train.amp.enabled=yes"])
    with pytest.raises(ValueError, match=r"'train\.lr' is 0\.1 \(float\).*'1e-3x'"):
        LazyConfig.apply_overrides(_d2_cfg(), ["train.lr=1e-3x"])
    with pytest.raises(ValueError, match=r"cannot read '\[1, 2' as a list"):
        LazyConfig.apply_overrides(_d2_cfg(), ["dataloader.names=[1, 2"])
    cfg = LazyConfig.apply_overrides(_d2_cfg(), ["train.max_iter='abc'", "train.lr=${train.max_iter}"])
    assert cfg.train.max_iter == "abc" and cfg.train.lr == "abc"  # quoted / interpolation: kept


def test_apply_overrides_typos_in_the_last_key_are_errors():
    with pytest.raises(KeyError, match=r"'train\.max_iterr'.*closest existing keys: \['max_iter'\]"
                                        r".*'\+train\.max_iterr=\.\.\.'"):
        LazyConfig.apply_overrides(_d2_cfg(), ["train.max_iterr=5"])
    with pytest.raises(KeyError, match=r"'max_itr' in 'the top level'"):
        LazyConfig.apply_overrides(_d2_cfg(), ["max_itr=5"])
    with pytest.raises(KeyError, match=r"'\+train\.max_iter': 'train\.max_iter' already exists"):
        LazyConfig.apply_overrides(_d2_cfg(), ["+train.max_iter=5"])
    with pytest.raises(ValueError, match=r"'\+\+key=value' and '~key' are not"):
        LazyConfig.apply_overrides(_d2_cfg(), ["++train.max_iter=5"])
    # "+" adds keys (and the nodes on their way); a call node takes new arguments without it.
    cfg = LazyConfig.apply_overrides(_d2_cfg(), ["+train.seed=3", "+new.group.x=[a]"])
    assert cfg.train.seed == 3 and list(cfg.new.group.x) == ["a"]
    struct = _d2_cfg()
    OmegaConf.set_struct(struct, True)
    cfg = LazyConfig.apply_overrides(struct, ["+train.seed=3", "train.output_dir=out"])
    assert cfg.train.seed == 3 and cfg.train.output_dir == "out"  # a "???" value exists too
    cfg = LazyConfig.apply_overrides(_cfg(), ["model.y=4", "train.steps.0=7"])
    assert cfg.model.y == 4 and list(cfg.train.steps) == [7]
    with pytest.raises(KeyError, match=r"'train\.steps\.3'.*1 items"):
        LazyConfig.apply_overrides(_cfg(), ["train.steps.3=1"])


def test_to_py_reads_like_code():
    text = LazyConfig.to_py(_cfg())
    assert "cfg.train.max_iter=10" in text.replace(" ", "")
    assert "test_lazy_config.Inner(x=1)" in text

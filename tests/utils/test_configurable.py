import pytest

from workbench.config import configurable, get_cfg


class Head:
    @configurable
    def __init__(self, *, in_channels: int, num_classes: int, norm: str = ""):
        self.in_channels, self.num_classes, self.norm = in_channels, num_classes, norm

    @classmethod
    def from_config(cls, cfg, in_channels):
        return {"in_channels": in_channels, "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}


def test_class_from_cfg_and_from_explicit_args():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 7
    h = Head(cfg, 256)
    assert (h.in_channels, h.num_classes, h.norm) == (256, 7, "")
    h = Head(cfg, in_channels=64, norm="GN")  # extra kwargs beside a cfg override / add
    assert (h.in_channels, h.num_classes, h.norm) == (64, 7, "GN")
    h = Head(in_channels=3, num_classes=2)
    assert (h.in_channels, h.num_classes) == (3, 2)
    h = Head(cfg=cfg, in_channels=5)
    assert h.num_classes == 7


def test_function_with_from_config():
    def _from_cfg(cfg, scale=1):
        return {"n": cfg.MODEL.ROI_HEADS.NUM_CLASSES * scale}

    @configurable(from_config=_from_cfg)
    def make(*, n):
        return n

    cfg = get_cfg()
    assert make(cfg) == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert make(cfg, scale=2) == 2 * cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert make(n=4) == 4


def test_missing_from_config_is_clear():
    class NoFromConfig:
        @configurable
        def __init__(self, *, a=1):
            self.a = a

    with pytest.raises(AttributeError, match="NoFromConfig.*from_config"):
        NoFromConfig(get_cfg())
    # detectron2 rejects the class at every construction, not only when given a cfg.
    with pytest.raises(AttributeError, match="NoFromConfig.*from_config"):
        NoFromConfig(a=2)


def test_from_config_that_is_not_a_classmethod_is_rejected_at_construction():
    class PlainMethod:
        @configurable
        def __init__(self, *, a=1):
            self.a = a

        def from_config(self, cfg):  # noqa: D102 - deliberately not a classmethod
            return {}

    with pytest.raises(TypeError, match="PlainMethod.*classmethod"):
        PlainMethod(a=1)


def test_omegaconf_dictconfig_counts_as_a_cfg():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(get_cfg().dump())
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    h = Head(cfg, 16)
    assert (h.in_channels, h.num_classes) == (16, 5)
    h = Head(cfg=cfg, in_channels=4)
    assert h.num_classes == 5

    @configurable(from_config=lambda cfg: {"n": cfg.MODEL.ROI_HEADS.NUM_CLASSES})
    def make(*, n):
        return n

    assert make(cfg) == 5


def test_model_from_dictconfig_matches_model_from_cfgnode():
    # detectron2's testOmegaConf: a whole model builds from an omegaconf copy of the cfg.
    import torch
    from omegaconf import OmegaConf

    from workbench.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    torch.manual_seed(0)
    from_cfgnode = build_model(cfg)
    from_omegaconf = build_model(OmegaConf.create(cfg.dump()))
    shapes = {k: v.shape for k, v in from_cfgnode.state_dict().items()}
    assert {k: v.shape for k, v in from_omegaconf.state_dict().items()} == shapes
    assert from_omegaconf.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES


def test_from_config_with_var_positional_gets_every_argument():
    class VarArgs:
        @configurable
        def __init__(self, *, a, b=0):
            self.a, self.b = a, b

        @classmethod
        def from_config(cls, cfg, *args):
            return {"a": len(args), "b": cfg.SEED}

    cfg = get_cfg()
    cfg.SEED = 3
    v = VarArgs(cfg, "x", "y")
    assert (v.a, v.b) == (2, 3)


def test_decorating_a_non_init_function_without_from_config_fails():
    def f():
        pass

    with pytest.raises(TypeError):
        configurable(f)

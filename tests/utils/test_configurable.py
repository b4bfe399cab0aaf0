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

    with pytest.raises(AttributeError, match="from_config"):
        NoFromConfig(get_cfg())
    assert NoFromConfig(a=2).a == 2


def test_decorating_a_non_init_function_without_from_config_fails():
    def f():
        pass

    with pytest.raises(TypeError):
        configurable(f)

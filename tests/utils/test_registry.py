import pytest

from workbench.utils.registry import Registry


def test_register_as_decorator_and_call():
    reg = Registry("THING")

    @reg.register()
    class A:
        pass

    def make_b():
        return "b"

    reg.register(make_b)
    reg.register(make_b, name="b_alias")
    assert reg.get("A") is A
    assert reg.get("make_b")() == "b"
    assert reg.get("b_alias") is make_b
    assert "A" in reg and "nope" not in reg
    assert dict(iter(reg)) == {"A": A, "make_b": make_b, "b_alias": make_b}
    assert len(reg) == 3
    assert "THING" in repr(reg) and "make_b" in repr(reg)


def test_register_decorator_with_name():
    reg = Registry("THING")

    @reg.register(name="custom")
    def f():
        return 1

    assert reg.get("custom") is f
    assert "f" not in reg


def test_get_unknown_lists_known_names_and_suggests():
    reg = Registry("BACKBONE")
    reg.register(lambda: None, name="build_resnet_backbone")
    reg.register(lambda: None, name="build_resnet_fpn_backbone")
    with pytest.raises(KeyError) as e:
        reg.get("build_resnet_fpn_backbon")
    msg = str(e.value)
    assert "BACKBONE" in msg and "build_resnet_backbone" in msg and "Did you mean" in msg


def test_double_registration_of_other_object_fails():
    reg = Registry("THING")
    reg.register(lambda: 1, name="x")
    with pytest.raises(KeyError, match="already registered"):
        reg.register(lambda: 2, name="x")


def test_modeling_registries_know_builtins():
    import workbench.modeling as m

    assert "GeneralizedRCNN" in m.META_ARCH_REGISTRY and "ProposalNetwork" in m.META_ARCH_REGISTRY
    assert "build_resnet_fpn_backbone" in m.BACKBONE_REGISTRY
    assert "build_resnet_backbone" in m.BACKBONE_REGISTRY
    assert "RPN" in m.PROPOSAL_GENERATOR_REGISTRY
    assert "StandardRPNHead" in m.RPN_HEAD_REGISTRY
    assert "DefaultAnchorGenerator" in m.ANCHOR_GENERATOR_REGISTRY
    assert {"StandardROIHeads", "Res5ROIHeads"} <= set(m.ROI_HEADS_REGISTRY.keys())
    assert "FastRCNNConvFCHead" in m.ROI_BOX_HEAD_REGISTRY
    assert "MaskRCNNConvUpsampleHead" in m.ROI_MASK_HEAD_REGISTRY
    assert "KRCNNConvDeconvUpsampleHead" in m.ROI_KEYPOINT_HEAD_REGISTRY


# ----------------------------------------------------------------------------- locate


def test_locate_module_class_and_nested_attribute():
    import collections
    import os.path

    import torch

    from workbench.utils.registry import locate

    assert locate("os.path.join") is os.path.join
    assert locate("collections.OrderedDict") is collections.OrderedDict
    assert locate("torch.optim.sgd.SGD") is torch.optim.SGD
    # Class attribute after the module part.
    assert locate("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys
    assert locate("workbench.utils.registry.Registry.get") is Registry.get
    assert locate("int") is int


def test_locate_maps_detectron2_prefix_to_workbench():
    from workbench.utils.registry import locate

    assert locate("detectron2.utils.registry.Registry") is Registry


def test_locate_imports_submodule_the_package_does_not_import():
    import sys

    from workbench.utils.registry import locate

    sys.modules.pop("json.tool", None)
    import json

    if hasattr(json, "tool"):
        delattr(json, "tool")
    obj = locate("json.tool.main")
    assert obj is sys.modules["json.tool"].main


@pytest.mark.parametrize(
    "bad", ["no_such_module_xyz.Thing", "workbench.utils.registry.NoSuchThing", "a..b", ""]
)
def test_locate_unknown_names_the_string(bad):
    from workbench.utils.registry import locate

    with pytest.raises(ImportError) as e:
        locate(bad)
    assert repr(bad) in str(e.value)


def test_convert_target_to_string_is_shortest_locatable_path():
    import torch

    from workbench.utils.registry import _convert_target_to_string, locate

    s = _convert_target_to_string(torch.optim.SGD)
    assert s == "torch.optim.SGD"
    assert locate(s) is torch.optim.SGD

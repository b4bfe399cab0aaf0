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

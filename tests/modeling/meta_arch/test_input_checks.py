"""Bad training ground truth gets an error naming the image, the instance and what was expected
(issue 18), raised before the backbone runs, from every meta-architecture's training path."""

from __future__ import annotations

import pytest
import torch

from tests.modeling.meta_arch.test_fcos import make_inputs as fcos_inputs
from tests.modeling.meta_arch.test_fcos import tiny_fcos
from tests.modeling.test_model_e2e import make_inputs, tiny_cfg
from workbench.modeling import build_model
from workbench.modeling.meta_arch.input_checks import check_gt_instances
from workbench.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks, RotatedBoxes
from workbench.utils.events import EventStorage

B1 = r"batched_inputs\[1\]\['instances'\]"


def _inputs(**fields_of_image_1):
    """Two images; image 1's fields replaced by ``fields_of_image_1``."""
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        inst = Instances((h, w), gt_boxes=Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]])),
                         gt_classes=torch.tensor([0, 2]))
        batch.append({"image": torch.zeros(3, h, w), "instances": inst})
    inst = batch[1]["instances"]
    for k, v in fields_of_image_1.items():
        if inst.has(k):
            inst.remove(k)
        inst.set(k, v)
    return batch


def _boxes(row1):
    return Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], row1]))


@pytest.mark.parametrize("fields, error, message", [
    ({"gt_boxes": _boxes([60.0, 10.0, 20.0, 40.0])}, ValueError,
     B1 + r"\.gt_boxes\[1\] = \(60.0, 10.0, 20.0, 40.0\) has x2 < x1 or y2 < y1 \(a reversed box\).*"
          r"Expected \(x1, y1, x2, y2\) in absolute pixels with x1 <= x2 and y1 <= y2"),
    ({"gt_boxes": _boxes([20.0, 40.0, 60.0, 10.0])}, ValueError, B1 + r"\.gt_boxes\[1\] .* reversed box"),
    ({"gt_boxes": _boxes([20.0, float("nan"), 60.0, 40.0])}, ValueError,
     B1 + r"\.gt_boxes\[1\] = \(20.0, nan, 60.0, 40.0\) has a non-finite coordinate"),
    ({"gt_boxes": _boxes([20.0, 10.0, float("inf"), 40.0])}, ValueError, B1 + r"\.gt_boxes\[1\] .* non-finite"),
    ({"gt_classes": torch.tensor([0, 3])}, ValueError,
     B1 + r"\.gt_classes\[1\] = 3 is outside \[0, 3\) \(num_classes is the background label"),
    ({"gt_classes": torch.tensor([-1, 0])}, ValueError, B1 + r"\.gt_classes\[0\] = -1 is outside \[0, 3\)"),
    ({"gt_classes": torch.tensor([0.0, 2.0])}, TypeError,
     B1 + r"\.gt_classes must be an int64 .* got Tensor of shape \(2,\) and dtype torch.float32"),
    ({"gt_classes": torch.tensor([0, 2], dtype=torch.uint8)}, TypeError, B1 + r"\.gt_classes must be an int64"),
    ({"gt_masks": BitMasks(torch.zeros(2, 64, 96, dtype=torch.bool))}, ValueError,
     B1 + r"\.gt_masks are BitMasks of size \(64, 96\) \(H, W\), but batched_inputs\[1\]\['image'\] is \(80, 64\)"),
    ({"gt_masks": torch.zeros(2, 80, 64, dtype=torch.bool)}, TypeError,
     B1 + r"\.gt_masks must be BitMasks or PolygonMasks \(wrap a \(N, H, W\) tensor: BitMasks\(masks\)\); "
          r"got Tensor of shape \(2, 80, 64\) and dtype torch.bool"),
    ({"gt_keypoints": Keypoints(torch.zeros(2, 7, 3))}, ValueError,
     B1 + r"\.gt_keypoints must be Keypoints of shape \(N, 4, 3\) .* got Keypoints of shape \(2, 7, 3\)"),
    ({"gt_keypoints": torch.zeros(2, 4, 3)}, ValueError, B1 + r"\.gt_keypoints must be Keypoints"),
])
def test_bad_ground_truth_names_image_and_instance(fields, error, message):
    with pytest.raises(error, match=message):
        check_gt_instances(_inputs(**fields), num_classes=3, masks=True, num_keypoints=4)


def test_bad_containers_name_the_image():
    batch = _inputs()
    batch[1]["instances"] = batch[1]["instances"].gt_boxes
    with pytest.raises(TypeError, match=B1 + r" must be an Instances .* got Boxes of shape \(2, 4\)"):
        check_gt_instances(batch)
    del batch[1]["instances"]
    with pytest.raises(KeyError, match=r"batched_inputs\[1\] has no 'instances'.*an empty Instances: "
                                       r"Instances\(\(h, w\), gt_boxes=Boxes\(torch.zeros\(0, 4\)\)"):
        check_gt_instances(batch)


def test_instances_without_fields_say_how_to_build_an_empty_one():
    from workbench.data.detection_utils import annotations_to_instances

    batch = _inputs()
    batch[1]["instances"] = Instances((80, 64))
    with pytest.raises(KeyError) as e:
        check_gt_instances(batch, num_classes=3)
    msg = e.value.args[0]
    assert msg.startswith("batched_inputs[1]['instances'] has no 'gt_boxes' (its fields: [])")
    hint = "Instances((h, w), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))"
    assert hint in msg and "annotations_to_instances([], (h, w))" in msg
    # Both suggestions pass.
    batch[1]["instances"] = eval(hint, {"Instances": Instances, "Boxes": Boxes, "torch": torch, "h": 80, "w": 64})
    check_gt_instances(batch, num_classes=3)
    batch[1]["instances"] = annotations_to_instances([], (80, 64))
    check_gt_instances(batch, num_classes=3)


def test_legal_ground_truth_passes():
    # Zero-area boxes are legal (detectron2 allows them; the dataset mapper filters them).
    check_gt_instances(_inputs(gt_boxes=_boxes([20.0, 10.0, 20.0, 10.0])), num_classes=3)
    check_gt_instances(_inputs(gt_masks=BitMasks(torch.zeros(2, 80, 64, dtype=torch.bool)),
                               gt_keypoints=Keypoints(torch.zeros(2, 4, 3))), num_classes=3, masks=True,
                       num_keypoints=4)
    check_gt_instances(_inputs(gt_masks=PolygonMasks([[[0.0, 0, 4, 0, 4, 4]]] * 2)), num_classes=3, masks=True)
    empty = _inputs()
    empty[1]["instances"] = Instances((80, 64), gt_boxes=Boxes(torch.zeros(0, 4)),
                                      gt_classes=torch.zeros(0, dtype=torch.long))
    check_gt_instances(empty, num_classes=3)
    # What a model does not read is not checked: the RPN reads boxes only.
    check_gt_instances(_inputs(gt_classes=torch.tensor([-1, 7]), gt_masks=torch.zeros(2, 1, 1)))


def test_rotated_boxes_refuse_negative_extents_only():
    rot = RotatedBoxes(torch.tensor([[20.0, 20.0, 10.0, 0.0, 30.0], [30.0, 30.0, 8.0, 6.0, -150.0]]))
    check_gt_instances(_inputs(gt_boxes=rot), num_classes=3)  # zero height, any angle: legal
    rot.tensor[1, 2] = -8.0
    with pytest.raises(ValueError, match=B1 + r"\.gt_boxes\[1\] = \(30.0, 30.0, -8.0, 6.0, -150.0\) has a "
                                          r"negative width or height.*\(x_center, y_center, width, height"):
        check_gt_instances(_inputs(gt_boxes=rot), num_classes=3)


def _reverse_box(cfg, inputs):
    inst = inputs[1]["instances"]
    t = inst.gt_boxes.tensor.clone()
    if isinstance(inst.gt_boxes, RotatedBoxes):
        t[0, 2] = -t[0, 2]
        inst.gt_boxes = RotatedBoxes(t)
    else:
        t[0] = t[0][[2, 1, 0, 3]]
        inst.gt_boxes = Boxes(t)
    return r"\.gt_boxes\[0\] = .* (reversed box|negative width)"


def _background_class(cfg, inputs):
    n = cfg.MODEL.RETINANET.NUM_CLASSES if cfg.MODEL.META_ARCHITECTURE == "RetinaNet" else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    inputs[1]["instances"].gt_classes = torch.tensor([0, n])
    return rf"\.gt_classes\[1\] = {n} is outside \[0, {n}\)"


def _wrong_size_bitmasks(cfg, inputs):
    inst = inputs[1]["instances"]
    inst.remove("gt_masks")
    inst.gt_masks = BitMasks(torch.zeros(2, 88, 64, dtype=torch.bool))
    return r"\.gt_masks are BitMasks of size \(88, 64\)"


def _keypoints_of_another_model(cfg, inputs):
    inst = inputs[1]["instances"]
    inst.remove("gt_keypoints")
    inst.gt_keypoints = Keypoints(torch.zeros(2, 17, 3))
    return r"\.gt_keypoints must be Keypoints of shape \(N, 4, 3\)"


@pytest.mark.parametrize("name, mutate", [
    ("faster_rcnn_fpn", _reverse_box), ("faster_rcnn_fpn", _background_class),
    ("rpn_only", _reverse_box), ("retinanet", _reverse_box), ("retinanet", _background_class),
    ("cascade", _background_class), ("mask_rcnn_c4", _wrong_size_bitmasks),
    ("keypoint_rcnn", _keypoints_of_another_model), ("panoptic_fpn", _wrong_size_bitmasks),
    ("rotated_faster_rcnn", _reverse_box),
])
def test_every_training_path_checks_before_the_backbone(name, mutate):
    cfg = tiny_cfg(name)
    model = build_model(cfg).train()
    calls = []
    model.backbone.register_forward_pre_hook(lambda m, args: calls.append(1))
    inputs = make_inputs(cfg)
    message = mutate(cfg, inputs)
    with EventStorage(), pytest.raises((ValueError, TypeError), match=B1 + message):
        model(inputs)
    assert not calls, "the backbone ran before the ground truth was checked"


def test_fcos_checks_its_ground_truth():
    inputs = fcos_inputs()
    inputs[1]["instances"].gt_classes = torch.tensor([-1, 2])
    with EventStorage(), pytest.raises(ValueError, match=B1 + r"\.gt_classes\[0\] = -1 is outside \[0, 3\)"):
        tiny_fcos().train()(inputs)


def test_given_proposals_must_be_instances():
    cfg = tiny_cfg("faster_rcnn_fpn")
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)
    for x in inputs:
        x["proposals"] = Instances(x["instances"].image_size, proposal_boxes=x["instances"].gt_boxes,
                                   objectness_logits=torch.zeros(2))
    with EventStorage():
        assert torch.isfinite(sum(model(inputs).values()))
    inputs[1]["proposals"] = inputs[1]["proposals"].proposal_boxes
    with EventStorage(), pytest.raises(TypeError, match=r"batched_inputs\[1\]\['proposals'\] must be an Instances "
                                                        r"with 'proposal_boxes'.* got Boxes of shape \(2, 4\)"):
        model(inputs)
    with pytest.raises(TypeError, match=r"batched_inputs\[1\]\['proposals'\] must be an Instances"):
        model.eval()(inputs)


@pytest.mark.parametrize("name", ["semantic", "panoptic_fpn"])
@pytest.mark.parametrize("mutate, error, message", [
    (lambda t: t[:-3], ValueError,
     r"batched_inputs\[1\]\['sem_seg'\] has size \(77, 64\), but batched_inputs\[1\]\['image'\] is \(80, 64\)"),
    (lambda t: t.float(), TypeError, r"batched_inputs\[1\]\['sem_seg'\] must hold integer class ids .* got torch.float32"),
    (lambda t: t.index_put((torch.tensor([2]), torch.tensor([3])), torch.tensor(9)), ValueError,
     r"batched_inputs\[1\]\['sem_seg'\]\[2, 3\] = 9: class ids must be in \[0, 4\) or the ignore value 255"),
    (lambda t: t.index_put((torch.tensor([5]), torch.tensor([6])), torch.tensor(-1)), ValueError,
     r"batched_inputs\[1\]\['sem_seg'\]\[5, 6\] = -1"),
])
def test_bad_semantic_targets_name_image_and_pixel(name, mutate, error, message):
    cfg = tiny_cfg(name)
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)
    inputs[1]["sem_seg"] = mutate(inputs[1]["sem_seg"])
    with EventStorage(), pytest.raises(error, match=message):
        model(inputs)


def test_semantic_targets_with_ignore_value_and_any_integer_dtype_train():
    cfg = tiny_cfg("semantic")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)  # (64, 96) and (80, 64) maps: the batch pads image 1 with 255

    def loss(dtype):
        for x in inputs:
            x["sem_seg"] = x["sem_seg"].to(dtype)
        with EventStorage():
            return model(inputs)["loss_sem_seg"].item()

    want = loss(torch.int64)
    # int8 cannot hold the padding value 255: such maps are made int64 before padding.
    assert loss(torch.int32) == loss(torch.int8) == loss(torch.uint8) == want
    inputs[0]["sem_seg"][:5] = 255  # the ignore value is legal
    assert loss(torch.int64) != want


@pytest.mark.parametrize("name", ["semantic", "panoptic_fpn"])
def test_semantic_targets_are_checked_as_given_before_any_move(name, monkeypatch):
    # Data loaders give CPU maps: checking them there never waits for the GPU. The padded batch
    # on the model's device is not checked again (its padding holds the ignore value).
    from workbench.modeling.meta_arch import semantic_seg

    cfg = tiny_cfg(name)
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)
    moved, backbone = [], []
    real_move = semantic_seg.move_device_like
    monkeypatch.setattr(semantic_seg, "move_device_like",
                        lambda t, like: moved.append(t) or real_move(t, like))
    model.backbone.register_forward_pre_hook(lambda m, args: backbone.append(1))
    inputs[1]["sem_seg"] = inputs[1]["sem_seg"].index_put((torch.tensor([7]), torch.tensor([8])),
                                                          torch.tensor(4))
    with EventStorage(), pytest.raises(ValueError, match=r"batched_inputs\[1\]\['sem_seg'\]\[7, 8\] = 4: "):
        model(inputs)
    assert not moved and not backbone, "the maps were moved (or the backbone ran) before the check"
    inputs[1]["sem_seg"][7, 8] = 255
    with EventStorage():
        assert torch.isfinite(sum(model(inputs).values()))
    assert len(moved) == 2 and all(t.device.type == "cpu" for t in moved)


def test_semantic_value_check_does_not_wrap_small_dtypes():
    from workbench.modeling.meta_arch.input_checks import check_sem_seg_targets

    batch = [{"image": torch.zeros(3, 4, 5), "sem_seg": torch.zeros(4, 5, dtype=torch.int8)}]
    check_sem_seg_targets(batch, num_classes=200)
    batch[0]["sem_seg"][1, 2] = -56  # 200 in uint8; int8 >= 200 would wrap around
    with pytest.raises(ValueError, match=r"\['sem_seg'\]\[1, 2\] = -56: class ids must be in \[0, 200\)"):
        check_sem_seg_targets(batch, num_classes=200)
    batch[0]["sem_seg"] = torch.full((4, 5), 255, dtype=torch.uint8)
    check_sem_seg_targets(batch, num_classes=3)  # all ignored
    batch[0]["sem_seg"][3, 4] = 3
    with pytest.raises(ValueError, match=r"\['sem_seg'\]\[3, 4\] = 3: .* 1 pixel\(s\) of this image"):
        check_sem_seg_targets(batch, num_classes=3)

"""SemSegFPNHead and SemanticSegmentor: layout, reference names, loss by hand, tiny end to end."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from workbench.layers import ShapeSpec
from workbench.model_zoo import get_config
from workbench.modeling import build_model
from workbench.modeling.meta_arch.semantic_seg import (
    SEM_SEG_HEADS_REGISTRY,
    SemanticSegmentor,
    SemSegFPNHead,
    build_sem_seg_head,
)
from workbench.utils.events import EventStorage

# The reference fixtures (see tests/parity/reference.py): $WORKBENCH_FIXTURES or <repo>/../shared/fixtures.
FIXTURES = Path(os.environ.get("WORKBENCH_FIXTURES",
                               Path(__file__).resolve().parents[3].parent / "shared" / "fixtures"))
FIXTURE_WEIGHTS = FIXTURES / "panoptic_fpn_R_50" / "model_final.pkl"
FPN_SHAPES = {f"p{i}": ShapeSpec(channels=16, stride=2 ** i) for i in range(2, 7)}

TINY = [
    "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]


def tiny_cfg():
    cfg = get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    cfg.merge_from_list(TINY)
    return cfg


def small_head(**kw):
    args = dict(num_classes=3, conv_dims=32, common_stride=4, norm="GN", ignore_value=255)
    args.update(kw)
    return SemSegFPNHead({k: v for k, v in FPN_SHAPES.items() if k != "p6"}, **args)


def test_scale_heads_layout():
    head = small_head()
    assert head.in_features == ["p2", "p3", "p4", "p5"]
    # log2(stride / 4) conv+upsample repeats, at least one conv; p2 has no upsampling.
    assert [len(getattr(head, f)) for f in head.in_features] == [1, 2, 4, 6]
    assert isinstance(head.p5[1], torch.nn.Upsample)
    assert head.p2[0].bias is None and isinstance(head.p2[0].norm, torch.nn.GroupNorm)
    no_norm = small_head(norm="")
    assert no_norm.p2[0].bias is not None and no_norm.p2[0].norm is None


def test_input_order_follows_stride_not_dict_order():
    shapes = {"p4": FPN_SHAPES["p4"], "p2": FPN_SHAPES["p2"]}
    head = SemSegFPNHead(shapes, num_classes=2, conv_dims=32, common_stride=4)
    assert head.in_features == ["p2", "p4"]
    with pytest.raises(ValueError, match="common_stride"):
        SemSegFPNHead({"p3": ShapeSpec(channels=16, stride=12)}, num_classes=2, conv_dims=32, common_stride=4)
    with pytest.raises(ValueError, match="cannot be empty"):
        SemSegFPNHead({}, num_classes=2, conv_dims=32, common_stride=4)


def test_head_loads_the_reference_weights_by_name():
    with open(FIXTURE_WEIGHTS, "rb") as f:
        sd = pickle.load(f)["model"]
    prefix = "sem_seg_head."
    head_sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in sd.items() if k.startswith(prefix)}
    shapes = {f"p{i}": ShapeSpec(channels=64, stride=2 ** i) for i in range(2, 6)}
    head = SemSegFPNHead(shapes, num_classes=5, conv_dims=64, common_stride=4)
    head.load_state_dict(head_sd, strict=True)


def test_forward_shapes_and_loss_by_hand():
    torch.manual_seed(0)
    head = small_head()
    feats = {f"p{i}": torch.randn(2, 16, 64 // 2 ** i, 96 // 2 ** i) for i in range(2, 7)}
    head.eval()
    logits, losses = head(feats)
    assert logits.shape == (2, 3, 64, 96) and losses == {}
    stride4 = head.layers(feats)
    assert stride4.shape == (2, 3, 16, 24)

    head.train()
    targets = torch.randint(0, 3, (2, 64, 96))
    targets[:, :, 80:] = 255  # padding / unlabelled
    none, losses = head(feats, targets)
    assert none is None
    up = F.interpolate(head.layers(feats), size=(64, 96), mode="bilinear", align_corners=False)
    logp = up.log_softmax(dim=1)
    valid = targets != 255
    picked = logp.gather(1, targets.clamp(max=2)[:, None])[:, 0]  # (N, H, W)
    want = -(picked[valid]).mean()
    assert losses["loss_sem_seg"].item() == pytest.approx(want.item(), rel=1e-5)
    head.loss_weight = 0.5
    assert head(feats, targets)[1]["loss_sem_seg"].item() == pytest.approx(0.5 * want.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs targets"):
        head(feats)
    with pytest.raises(ValueError, match=r"Expected sem_seg targets of shape \(2, 64, 96\)"):
        head(feats, targets[:, :32])


def test_registry_and_builder():
    assert "SemSegFPNHead" in SEM_SEG_HEADS_REGISTRY
    cfg = tiny_cfg()
    head = build_sem_seg_head(cfg, FPN_SHAPES)
    assert head.in_features == ["p2", "p3", "p4", "p5"]  # p6 not in IN_FEATURES
    assert head.ignore_value == 255 and head.loss_weight == 0.5 and head.common_stride == 4
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "res9"]
    with pytest.raises(KeyError, match="res9"):
        build_sem_seg_head(cfg, FPN_SHAPES)


def make_inputs():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, h, w), generator=g).float(),
             "sem_seg": torch.randint(0, 4, (h, w), generator=g)} for h, w in [(64, 96), (80, 64)]]


def test_targets_are_padded_with_the_ignore_value():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    seen = {}
    model.sem_seg_head.register_forward_pre_hook(lambda m, args: seen.update(t=args[1]))
    with EventStorage():
        model(make_inputs())
    t = seen["t"]
    assert t.shape == (2, 96, 96)  # padded to a multiple of 32
    assert (t[0, 64:] == 255).all() and (t[1, :, 64:] == 255).all() and (t[1, 80:] == 255).all()
    assert (t[0, :64, :96] < 4).all()


def test_tiny_semantic_segmentor_trains_two_steps_with_gradient_everywhere():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    assert isinstance(model, SemanticSegmentor)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    inputs = make_inputs()
    for step in range(2):
        with EventStorage(step):
            losses = model(inputs)
        assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
        opt.zero_grad()
        losses["loss_sem_seg"].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        opt.step()


def test_inference_on_a_blank_image():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    inputs = [{"image": torch.full((3, 64, 96), 128.0), "height": 32, "width": 48},
              {"image": torch.full((3, 50, 40), 128.0)}]
    with torch.no_grad():
        out = model(inputs)
    assert out[0]["sem_seg"].shape == (4, 32, 48)
    assert out[1]["sem_seg"].shape == (4, 50, 40)
    assert all(torch.isfinite(o["sem_seg"]).all() for o in out)
    with pytest.raises(KeyError, match="sem_seg"):
        model.train()
        with EventStorage():
            model([{"image": torch.zeros(3, 32, 32)}])

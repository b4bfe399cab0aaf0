"""PanopticFPN: the instance / semantic combination by hand, config compatibility, tiny end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.model_zoo import get_config
from workbench.modeling import build_model
from workbench.modeling.meta_arch.panoptic_fpn import PanopticFPN, combine_semantic_and_instance_outputs
from workbench.structures import BitMasks, Boxes, Instances
from workbench.utils.events import EventStorage

TINY = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]


def tiny_cfg(*extra):
    cfg = get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    cfg.merge_from_list(TINY + list(extra))
    return cfg


def make_inputs():
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]])
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            m[y0:y1, x0:x1] = True
        inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2]),
                         gt_masks=BitMasks(masks))
        batch.append({"image": torch.randint(0, 256, (3, h, w), generator=g).float(),
                      "instances": inst, "sem_seg": torch.randint(0, 4, (h, w), generator=g)})
    return batch


def _instances(masks, scores, classes):
    masks = torch.as_tensor(np.array(masks, dtype=bool))
    return Instances(tuple(masks.shape[1:]), pred_masks=masks, scores=torch.tensor(scores),
                     pred_classes=torch.tensor(classes))


def test_combine_two_instances_and_two_stuff_by_hand():
    H, W = 6, 8
    sem = torch.zeros(H, W, dtype=torch.long)
    sem[:, 2:5] = 1
    sem[:, 5:] = 2
    a = np.zeros((H, W), bool)
    a[0:3, 0:4] = True  # 12 px, best score
    b = np.zeros((H, W), bool)
    b[1:5, 2:4] = True  # 8 px, 4 of them under a: overlap 0.5 is not > 0.5, so b keeps 4 px
    c = np.ones((H, W), bool)  # below the score threshold: never placed
    inst = _instances([b, a, c], [0.6, 0.9, 0.3], [3, 5, 7])

    seg, info = combine_semantic_and_instance_outputs(inst, sem, overlap_threshold=0.5,
                                                      stuff_area_thresh=4, instances_score_thresh=0.5)
    want = torch.tensor([
        [1, 1, 1, 1, 3, 4, 4, 4],
        [1, 1, 1, 1, 3, 4, 4, 4],
        [1, 1, 1, 1, 3, 4, 4, 4],
        [0, 0, 2, 2, 3, 4, 4, 4],
        [0, 0, 2, 2, 3, 4, 4, 4],
        [0, 0, 3, 3, 3, 4, 4, 4],
    ], dtype=torch.int32)
    assert seg.dtype == torch.int32
    assert torch.equal(seg, want), seg
    assert info == [
        {"id": 1, "isthing": True, "score": pytest.approx(0.9), "category_id": 5, "instance_id": 1},
        {"id": 2, "isthing": True, "score": pytest.approx(0.6), "category_id": 3, "instance_id": 0},
        {"id": 3, "isthing": False, "category_id": 1, "area": 8},
        {"id": 4, "isthing": False, "category_id": 2, "area": 18},
    ]


def test_combine_skips_covered_empty_and_small_segments():
    H, W = 4, 4
    sem = torch.zeros(H, W, dtype=torch.long)
    sem[3, :] = 1  # 4 px of stuff class 1, below the area threshold of 5
    big = np.zeros((H, W), bool)
    big[:3, :3] = True
    covered = np.zeros((H, W), bool)
    covered[:2, :3] = True
    covered[:2, 3] = True  # 6 of 8 px under `big`: 0.75 > 0.5, dropped
    empty = np.zeros((H, W), bool)
    inst = _instances([covered, big, empty], [0.8, 0.95, 0.9], [1, 2, 0])
    seg, info = combine_semantic_and_instance_outputs(inst, sem, 0.5, 5, 0.5)
    assert [s["instance_id"] for s in info] == [1]
    assert int((seg == 1).sum()) == 9 and int((seg == 0).sum()) == 7
    # With a lower area threshold the stuff segment appears, and only on free pixels.
    seg, info = combine_semantic_and_instance_outputs(inst, sem, 0.5, 4, 0.5)
    assert info[-1] == {"id": 2, "isthing": False, "category_id": 1, "area": 4}
    # No instances at all: stuff only (class 0, the "things" class, is never a segment).
    none = _instances(np.zeros((0, H, W), bool), [], [])
    seg, info = combine_semantic_and_instance_outputs(none, sem, 0.5, 1, 0.5)
    assert info == [{"id": 1, "isthing": False, "category_id": 1, "area": 4}]


def test_combine_checks_mask_resolution():
    inst = _instances(np.zeros((1, 4, 4), bool), [0.9], [0])
    with pytest.raises(ValueError, match=r"\(R, 5, 5\)"):
        combine_semantic_and_instance_outputs(inst, torch.zeros(5, 5, dtype=torch.long), 0.5, 1, 0.5)


def test_from_config():
    model = build_model(tiny_cfg())
    assert isinstance(model, PanopticFPN)
    assert model.combine_overlap_thresh == 0.5
    assert model.combine_stuff_area_thresh == 4096
    assert model.combine_instances_score_thresh == 0.5
    assert model.sem_seg_head.ignore_value == 255 and model.sem_seg_head.in_features == ["p2", "p3", "p4", "p5"]


def test_instance_loss_weight_scales_the_roi_head_losses():
    """The old PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT multiplies the ROI heads' loss weights.

    As in detectron2, the box predictor's loss_weight from the config is {"loss_box_reg": w}, so
    the scaling reaches loss_box_reg and loss_mask but not loss_cls; RPN and semantic losses are
    untouched.
    """
    torch.manual_seed(0)
    base = build_model(tiny_cfg()).train()
    scaled = build_model(tiny_cfg("MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT", 2.0)).train()
    scaled.load_state_dict(base.state_dict())
    assert scaled.roi_heads.box_predictor.loss_weight["loss_box_reg"] == 2.0
    assert scaled.roi_heads.mask_head.loss_weight == 2.0
    results = []
    for model in (base, scaled):
        torch.manual_seed(1)
        with EventStorage():
            results.append({k: v.item() for k, v in model(make_inputs()).items()})
    a, b = results
    assert set(a) == {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    for k in ("loss_box_reg", "loss_mask"):
        assert b[k] == pytest.approx(2 * a[k], rel=1e-5), k
    for k in ("loss_cls", "loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc"):
        assert b[k] == pytest.approx(a[k], rel=1e-5), k


def test_tiny_panoptic_fpn_trains_two_steps_with_gradient_everywhere():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    inputs = make_inputs()
    for step in range(2):
        with EventStorage(step):
            losses = model(inputs)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        opt.zero_grad()
        sum(losses.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        opt.step()
    with EventStorage(), pytest.raises(KeyError, match="sem_seg"):
        model([{k: v for k, v in x.items() if k != "sem_seg"} for x in inputs])


def test_inference_on_a_blank_image():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)).eval()
    model.combine_instances_score_thresh = 0.0
    model.combine_stuff_area_thresh = 1
    inputs = [{"image": torch.full((3, 64, 96), 128.0), "height": 32, "width": 48},
              {"image": torch.full((3, 50, 40), 128.0)}]
    with torch.no_grad():
        out = model(inputs)
        raw_instances, raw_sem_seg = model.inference(inputs, do_postprocess=False)
    for o, size in zip(out, [(32, 48), (50, 40)]):
        assert set(o) == {"sem_seg", "instances", "panoptic_seg"}
        assert o["sem_seg"].shape == (4, *size)
        assert o["instances"].image_size == size
        seg, info = o["panoptic_seg"]
        assert seg.shape == size and seg.dtype == torch.int32
        assert set(torch.unique(seg).tolist()) - {0} == {s["id"] for s in info}
        assert [s["id"] for s in info] == list(range(1, len(info) + 1))
        stuff = [s for s in info if not s["isthing"]]
        assert all(s["area"] == int((seg == s["id"]).sum()) for s in stuff)
    assert raw_sem_seg.shape == (2, 4, 64, 96)  # padded batch
    assert [r.image_size for r in raw_instances] == [(64, 96), (50, 40)]
    with pytest.raises(TypeError, match="do_postprocess"):
        model.inference(inputs, False)


def test_inference_with_given_boxes():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    given = Instances((64, 96), pred_boxes=Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0]])),
                      pred_classes=torch.tensor([1]), scores=torch.tensor([0.9]))
    with torch.no_grad():
        out = model.inference([{"image": torch.full((3, 64, 96), 128.0)}], [given])
    inst = out[0]["instances"]
    assert len(inst) == 1 and inst.pred_masks.shape == (1, 64, 96)
    assert out[0]["panoptic_seg"][0].shape == (64, 96)

"""Shared, cached models for the inspection tests: the reference fixtures and tiny random models.

Every model is built once per pytest process (``functools.lru_cache``) and used in eval mode;
tests must not change a model's settings without restoring them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, List, Tuple

import torch

from reference import build_reference_model, load_case
from workbench.model_zoo import get_config
from workbench.modeling import build_model
from workbench.structures import Boxes, Instances

# Fixture name -> (images used, cfg overrides). Fewer images / proposals where a model is slow
# on one core; the comparison is still the model against itself with the fixture's weights.
FIXTURES = {
    "mask_rcnn_R_50_FPN": (4, []),
    "mask_rcnn_R_50_FPN_rescale": (2, []),
    "keypoint_rcnn_R_50_FPN": (2, []),
    "faster_rcnn_R_50_C4": (1, ["MODEL.RPN.POST_NMS_TOPK_TEST", 300]),
    "rpn_R_50_FPN": (2, []),
    "retinanet_R_50_FPN": (2, []),
    "panoptic_fpn_R_50": (2, []),
}

SMALL = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16], "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.RETINANET.NUM_CLASSES", 3,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4, "MODEL.RPN.POST_NMS_TOPK_TEST", 64,
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]
TINY = {
    "cascade": "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
    "faster_rcnn_fpn": "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
    "semantic": "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
}


@functools.lru_cache(maxsize=None)
def fixture(name: str) -> Tuple[torch.nn.Module, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(model in eval mode, inputs, model(inputs)) for a reference fixture."""
    num_images, overrides = FIXTURES[name]
    case = load_case(name)
    if overrides:  # on a copy: load_case is cached and shared with the parity tests
        cfg = case.cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(overrides)
        case = dataclasses.replace(case, cfg=cfg)
    model = build_reference_model(case)
    inputs = case.model_inputs()[:num_images]
    with torch.no_grad():
        outputs = model(inputs)
    return model, inputs, outputs


@functools.lru_cache(maxsize=None)
def traced(name: str):
    """``workbench.inspect.trace`` of a fixture (or of a tiny model, with a "tiny:" prefix), cached.

    Traces are never modified by the functions under test (resume / rethreshold return new ones).
    """
    from workbench import inspect as wi

    model, inputs, _ = tiny(name[5:]) if name.startswith("tiny:") else fixture(name)
    return wi.trace(model, inputs)


def tiny_cfg(name: str, extra=()):
    cfg = get_config(TINY[name])
    cfg.merge_from_list(SMALL + list(extra))
    if name == "semantic":
        cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    return cfg


def tiny_inputs(with_gt: bool = False, num_classes: int = 3) -> List[Dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w, oh, ow in [(64, 96, 128, 192), (80, 64, 80, 64)]:
        d: Dict[str, Any] = {"image": torch.randint(0, 256, (3, h, w), generator=g).float(),
                             "height": oh, "width": ow}
        if with_gt:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]]))
            inst.gt_classes = torch.tensor([0, 1]) % num_classes
            d["instances"] = inst
        batch.append(d)
    return batch


@functools.lru_cache(maxsize=None)
def tiny(name: str) -> Tuple[torch.nn.Module, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(tiny random model in eval mode, inputs, model(inputs))."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(name)).eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        outputs = model(inputs)
    return model, inputs, outputs


def assert_same(got: Any, want: Any, path: str = "outputs") -> None:
    """Bit-for-bit equality of nested outputs (tensors with torch.equal, same dtypes and fields)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{path}: {type(got).__name__} is not a tensor"
        assert got.dtype == want.dtype and got.shape == want.shape, \
            f"{path}: {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
        assert torch.equal(got, want), f"{path}: values differ (max abs diff " \
            f"{(got.double() - want.double()).abs().max().item() if got.numel() else 0})"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), \
            f"{path}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), f"{path}: {got!r:.80} != {want!r:.80}"
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(want, Instances):
        assert isinstance(got, Instances) and got.image_size == want.image_size, path
        assert_same(got.get_fields(), want.get_fields(), path)
    elif hasattr(want, "tensor"):
        assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
        assert_same(got.tensor, want.tensor, path)
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"

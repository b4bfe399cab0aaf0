"""The models the benchmark compares, built deterministically, and their inputs.

Each model is wrapped in a :class:`Subject`: three callables on one fixed image, so that the
timing code never needs to know whose model it holds.

* ``full()``: one complete inference (pre-processing, backbone, RPN, ROI heads, post-processing
  with mask pasting / keypoint decoding), under ``torch.no_grad()``.
* ``backbone()``: the backbone (ResNet-50 + FPN) alone, on the already normalised and padded
  batch tensor that ``full()`` would feed it.
* ``count(out)``: the number of detections in ``full()``'s output.

Inputs: both libraries see the same H x W photo-like image (a smooth random field, so the RPN
does not face a constant image). workbench takes it as a (3, H, W) float tensor, BGR, 0-255,
with ``height``/``width`` equal to the input size (no rescaling of the outputs); torchvision
takes the RGB image scaled to 0-1, with ``min_size``/``max_size`` equal to the image's short and
long side so that its transform keeps the size. Both then pad to a multiple of 32.

Weights are random (``torch.manual_seed(0)`` before building), with the score threshold at 0 so
that the box heads keep ``detections`` boxes per image, as trained weights would on a busy photo.
For workbench's COCO configs, whose PIXEL_STD of 1 suits the caffe2 checkpoints only, the input
is normalised to unit scale instead (see :func:`build_workbench`): same cost, sane activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import torch

# name -> (workbench model-zoo config, torchvision builder name)
PAIRS: Dict[str, Tuple[str, str]] = {
    "mask_rcnn": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "maskrcnn_resnet50_fpn"),
    "keypoint_rcnn": ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml", "keypointrcnn_resnet50_fpn"),
}
EMBEDDED_CONFIG = "Shapes/panoptic_kp_R_50_FPN_small.yaml"
LIBRARIES = ("workbench", "torchvision", "workbench-unopt")


@dataclass
class Subject:
    """One model on one image; see the module docstring."""

    name: str
    model: torch.nn.Module
    full: Callable[[], Any]
    backbone: Callable[[], Any]
    count: Callable[[Any], int]


def make_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A (3, H, W) uint8-valued float tensor in RGB order, 0-255: smooth blobs plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 64, 2), max(width // 64, 2), generator=g)
    # (1, 3, h, w) -> (1, 3, H, W): upsampled blobs give edges and regions at many scales
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear",
                                             align_corners=False)[0]
    noise = torch.rand(3, height, width, generator=g)
    return (255.0 * (0.8 * smooth + 0.2 * noise)).round().clamp(0, 255)


def build_workbench(config: str, *, detections: int = 100, seed: int = 0) -> torch.nn.Module:
    """A model-zoo model on CPU, random weights from ``seed``, keeping ``detections`` boxes."""
    from workbench import model_zoo
    from workbench.modeling import build_model

    cfg = model_zoo.get_config(config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    if list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]:
        # The MSRA/caffe2 weights these configs name expect 0-255 inputs (std 1). Random weights
        # do not: on inputs ~60x larger than unit scale, the 50 identity-initialised FrozenBN
        # layers let activations reach thousands, the RPN collapses to a handful of proposals
        # and the class softmax saturates. Unit-scale inputs (ImageNet std, in the config's
        # channel order, as torchvision uses) keep random weights well behaved; an elementwise
        # division costs the same either way.
        std = [57.375, 57.12, 58.395]  # B, G, R
        cfg.MODEL.PIXEL_STD = std if cfg.INPUT.FORMAT == "BGR" else std[::-1]
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    model.bench_input_format = cfg.INPUT.FORMAT  # type: ignore[attr-defined]
    return model


def build_torchvision(builder: str, *, height: int, width: int, detections: int = 100,
                      seed: int = 0) -> torch.nn.Module:
    """A torchvision detection model without pretrained weights, keeping the input size."""
    import torchvision

    torch.manual_seed(seed)
    fn = getattr(torchvision.models.detection, builder)
    return fn(weights=None, weights_backbone=None, box_score_thresh=0.0,
              box_detections_per_img=detections, min_size=min(height, width),
              max_size=max(height, width)).eval()


def workbench_subject(name: str, model: torch.nn.Module, rgb: torch.Tensor, *,
                      optimised: bool = True) -> Subject:
    """Wraps a workbench GeneralizedRCNN / PanopticFPN fed ``rgb`` ((3, H, W), 0-255).

    With ``optimised=False`` every call runs with all of ``workbench.utils.perf``'s inference
    optimisations off (the code as it was before them); otherwise with the options in force.
    """
    from workbench.utils import perf

    fmt = getattr(model, "bench_input_format", "BGR")
    image = rgb if fmt == "RGB" else rgb.flip(0)  # (3, H, W) channel order RGB -> BGR
    inputs = [{"image": image.contiguous(), "height": image.shape[1], "width": image.shape[2]}]

    def options():
        return perf.inference_options() if optimised else perf.inference_options(enabled=False)

    def full():
        with torch.no_grad(), options():
            return model(inputs)

    def backbone():
        with torch.no_grad(), options():
            return model.backbone(model.preprocess_image(inputs).tensor)

    return Subject(name, model, full, backbone, lambda out: len(out[0]["instances"]))


def torchvision_subject(name: str, model: torch.nn.Module, rgb: torch.Tensor) -> Subject:
    """Wraps a torchvision detection model fed ``rgb`` ((3, H, W), 0-255)."""
    images = [(rgb / 255.0).contiguous()]

    def full():
        with torch.no_grad():
            return model(images)

    def backbone():
        with torch.no_grad():
            batch, _ = model.transform(images)
            return model.backbone(batch.tensors)

    return Subject(name, model, full, backbone, lambda out: int(out[0]["boxes"].shape[0]))


def build_subject(key: str, *, height: int, width: int, detections: int = 100) -> Subject:
    """``key`` is ``"<library>:<pair>"``, e.g. ``"workbench:mask_rcnn"``.

    Libraries: "workbench", "torchvision", and "workbench-unopt" (workbench with every inference
    optimisation of ``workbench.utils.perf`` off: the before/after baseline, same process).
    """
    rgb = make_image(height, width)
    lib, pair = key.split(":")
    if pair not in PAIRS:
        raise ValueError(f"Unknown model pair {pair!r} in {key!r}; expected one of {sorted(PAIRS)}")
    config, builder = PAIRS[pair]
    if lib in ("workbench", "workbench-unopt"):
        return workbench_subject(key, build_workbench(config, detections=detections), rgb,
                                 optimised=lib == "workbench")
    if lib == "torchvision":
        model = build_torchvision(builder, height=height, width=width, detections=detections)
        return torchvision_subject(key, model, rgb)
    raise ValueError(f"Unknown library {lib!r} in {key!r}; expected one of {LIBRARIES}")

"""Device correctness of inference: everything a forward makes lives on the model's device, the
host waits for the device only where it must, and the CPU-only switches step aside off the CPU.

Runs on an emulated CUDA device everywhere (``device_audit.FakeCuda``: CPU data that reports
``cuda:0``, so every CUDA branch of the code is taken) and, where a GPU is present, on it too
(``bench/gpu_check.sh`` runs these tests there). ``test_the_audit_catches_a_host_factory`` shows
that the audit fails on the bug class it guards: a tensor made on the CPU inside the forward.

Synchronisations kept (per image unless said otherwise), each the price of a data-dependent size
or of a clear error; the ceilings below fail the suite if one is added:

================  =============================================================================
dynamic_shape     NMS x2 (RPN, box head: torchvision's kernel reads its mask on the host), the
                  RPN's non-empty boxes, the box head's score filter, ``detector_postprocess``'s
                  non-empty boxes (``Instances[mask]`` searches once for all fields), the panoptic
                  stuff labels (``unique``); RetinaNet: its score filter per level.
scalar_read       ``Boxes.clip``'s finiteness check x3 (RPN, box head, rescale) and the RPN's and
                  box head's ``valid_mask.all()`` (non-finite predictions take another path).
to_device         the input image (it comes from the host).
to_host           per batch: each ROI pooler's boxes per level (box, mask, keypoint heads) and the
                  keypoint decoder's resize sizes; per image, panoptic combine: the sorted scores,
                  ids + classes, the stuff areas, the stuff labels, and one read per instance
                  placed (its area and overlap depend on the instances placed before it).
================  =============================================================================
"""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch

from device_audit import DeviceAudit, FakeCuda, tensors_on, to_fake_cuda
from workbench import model_zoo
from workbench.data.datasets.shapes import generate_shapes_image
from workbench.modeling import build_model
from workbench.utils import perf

EMBEDDED = "Shapes/panoptic_kp_R_50_FPN_small.yaml"
DEVICES = ["emulated-cuda"] + (["cuda"] if torch.cuda.is_available() else [])

# Sync ceilings: kind -> (per batch, per image); "to_host" also gets one per panoptic instance placed.
EMBEDDED_SYNCS = {"dynamic_shape": (0, 6), "scalar_read": (0, 5), "to_device": (0, 1), "to_host": (4, 4)}
RETINANET_SYNCS = {"dynamic_shape": (0, 7), "scalar_read": (0, 1), "to_device": (0, 1), "to_host": (0, 0)}


def _shapes_image(height=192, width=224) -> np.ndarray:
    rgb, _ = generate_shapes_image([2026, 12, 2], height=height, width=width)
    return rgb


def _inputs(fmt: str = "RGB"):
    rgb = _shapes_image()
    img = torch.as_tensor((rgb if fmt == "RGB" else rgb[:, :, ::-1]).copy()).permute(2, 0, 1).float()
    # two sizes (padding) and an output size that differs from the input (rescaling)
    return [{"image": img}, {"image": img[:, :160], "height": 240, "width": 320}]


def _on(device: str, model: torch.nn.Module):
    """(a copy of ``model`` on ``device``, the audit for it)."""
    model = copy.deepcopy(model)
    if device == "cuda":
        return model.to("cuda"), DeviceAudit(emulate=False)
    return to_fake_cuda(model), DeviceAudit(emulate=True)


def _run(model, audit, inputs):
    with torch.no_grad(), audit:
        out = model(inputs)
    return out


def _check_outputs_on_device(outputs, device: str):
    off = [(path, str(t.device)) for path, t in tensors_on(outputs) if t.device.type != "cuda"]
    assert not off, f"{device}: outputs left on another device: {off}"
    if device == "emulated-cuda":
        assert all(isinstance(t, FakeCuda) for _, t in tensors_on(outputs))


def _check_syncs(report, ceilings, num_images: int, extra_to_host: int = 0):
    counts = report.sync_counts()
    for kind, (per_batch, per_image) in ceilings.items():
        ceiling = per_batch + per_image * num_images + (extra_to_host if kind == "to_host" else 0)
        assert counts.get(kind, 0) <= ceiling, (
            f"{counts.get(kind, 0)} {kind} syncs, ceiling {ceiling}: a new wait for the device; "
            f"where they are:\n{report.describe()}")
    unknown = set(counts) - set(ceilings)
    assert not unknown, f"unexpected sync kinds {unknown}:\n{report.describe()}"


@pytest.fixture(scope="module")
def embedded():
    return model_zoo.get(EMBEDDED, trained=True, device="cpu").eval()


@pytest.mark.parametrize("device", DEVICES)
def test_embedded_model_stays_on_device(embedded, device):
    """Panoptic FPN with mask and keypoint heads: anchors, ImageList padding, proposals, ROI
    pooling, box / mask / keypoint heads, mask pasting, keypoint decoding, semantic rescaling and
    the panoptic combination all on the device, with the syncs counted."""
    model, audit = _on(device, embedded)
    inputs = _inputs(model.input_format)
    outputs = _run(model, audit, inputs)
    assert not audit.report.mixing, f"{device}: host tensors met device ones:\n{audit.report.describe()}"
    _check_outputs_on_device(outputs, device)
    assert all(len(o["instances"]) > 0 and o["panoptic_seg"][1] for o in outputs), "nothing detected"
    thresh = model.combine_instances_score_thresh
    placed = sum(int((o["instances"].scores >= thresh).sum()) for o in outputs)
    _check_syncs(audit.report, EMBEDDED_SYNCS, len(inputs), extra_to_host=placed)


def test_emulated_cuda_gives_the_cpu_numbers(embedded):
    """The CUDA branches (mask pasting over the whole image, NMS by class offsets) give exactly
    what the CPU branches give, on the same kernels."""
    model, audit = _on("emulated-cuda", embedded)
    inputs = _inputs(embedded.input_format)
    got = _run(model, audit, inputs)
    with torch.no_grad():
        want = embedded(inputs)
    got, want = tensors_on(got), tensors_on(want)
    assert [p for p, _ in got] == [p for p, _ in want]
    for (path, g), (_, w) in zip(got, want):
        assert torch.equal(g.elem, w), path


def _retinanet():
    cfg = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # random weights: keep detections to decode
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _semantic():
    cfg = model_zoo.get_config(EMBEDDED, trained=False)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("build, ceilings", [(_retinanet, RETINANET_SYNCS), (_semantic, {"to_device": (0, 1)})],
                         ids=["retinanet", "semantic_seg"])
def test_other_architectures_stay_on_device(build, ceilings, device):
    model, audit = _on(device, build())
    inputs = [{"image": torch.randint(0, 256, (3, 128, 160)).float()},
              {"image": torch.randint(0, 256, (3, 96, 160)).float(), "height": 200, "width": 320}]
    outputs = _run(model, audit, inputs)
    assert not audit.report.mixing, f"{device}: host tensors met device ones:\n{audit.report.describe()}"
    _check_outputs_on_device(outputs, device)
    _check_syncs(audit.report, ceilings, len(inputs))


# Factories of the forward, each made to forget its device= (the bug class the audit guards).
INJECTIONS = [
    ("workbench.modeling.anchor_generator", "arange", "anchor_generator.py"),
    ("workbench.modeling.poolers", "full", "poolers.py"),
    ("workbench.modeling.proposal_generator.proposal_utils", "full", "proposal_utils.py"),
    ("workbench.structures.mask_ops", "arange", "mask_ops.py"),
]


class _TorchWithoutDevice:
    """The ``torch`` module as one module sees it, with one factory ignoring ``device=``."""

    def __init__(self, factory: str) -> None:
        self._factory = factory

    def __getattr__(self, name):
        fn = getattr(torch, name)
        if name != self._factory:
            return fn
        return lambda *args, device=None, **kwargs: fn(*args, **kwargs)  # made on the CPU


@pytest.mark.parametrize("module, factory, where", INJECTIONS, ids=[i[0].split(".")[-1] for i in INJECTIONS])
def test_the_audit_catches_a_host_factory(embedded, monkeypatch, module, factory, where):
    monkeypatch.setattr(importlib.import_module(module), "torch", _TorchWithoutDevice(factory))
    model, audit = _on("emulated-cuda", embedded)
    try:
        _run(model, audit, _inputs(model.input_format))
    except RuntimeError:
        pass  # an op may also refuse the mix outright; the audit has recorded it by then
    assert audit.report.mixing, f"a CPU-made {factory}() in {module} went unnoticed"
    assert any(where in f.where for f in audit.report.mixing), audit.report.describe()


@pytest.mark.parametrize("device", DEVICES)
def test_default_predictor_batch_on_device(device):
    """``DefaultPredictor.predict_batch`` on the device: images go over as uint8, one batch."""
    from workbench.engine import DefaultPredictor

    cfg = model_zoo.get_config(EMBEDDED, trained=True)
    cfg.MODEL.DEVICE = "cuda" if device == "cuda" else "cpu"
    predictor = DefaultPredictor(cfg)
    audit = DeviceAudit(emulate=device != "cuda")
    if device != "cuda":
        to_fake_cuda(predictor.model)
    bgr = np.ascontiguousarray(_shapes_image()[:, :, ::-1])
    with audit:
        outputs = predictor.predict_batch([bgr, bgr[:150]])
    assert not audit.report.mixing, audit.report.describe()
    _check_outputs_on_device(outputs, device)
    copies = audit.report.syncs["to_device"]
    # (H', W', 3) uint8 each: the pixels as decoded, converted to float32 on the device
    assert len(copies) == 2 and all(f.detail.endswith(", 3) uint8") for f in copies), [str(f) for f in copies]


@pytest.mark.parametrize("device", DEVICES)
def test_cpu_only_switches_step_aside(embedded, monkeypatch, device):
    """With every switch on, the oneDNN layout, the threaded box ops and the CPU paste run on
    the CPU (the control) and not on the device."""
    from workbench.structures import mask_ops

    calls = {"threads": 0, "onednn": 0, "cpu_paste": 0}

    def spy(key, fn):
        def wrapped(*args, **kwargs):
            calls[key] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(perf, "map_in_threads", spy("threads", perf.map_in_threads))
    monkeypatch.setattr(torch.Tensor, "to_mkldnn", spy("onednn", torch.Tensor.to_mkldnn))
    monkeypatch.setattr(mask_ops, "_paste_masks_cpu", spy("cpu_paste", mask_ops._paste_masks_cpu))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the threaded ops need two
    try:
        with perf.inference_options(enabled=True):
            with torch.no_grad():
                embedded(_inputs(embedded.input_format))
            assert all(calls.values()), f"control on the CPU: every CPU switch should act: {calls}"
            calls.update(dict.fromkeys(calls, 0))
            model, audit = _on(device, embedded)
            _run(model, audit, _inputs(model.input_format))
    finally:
        torch.set_num_threads(threads)
    assert not any(calls.values()), f"CPU-only paths ran on {device}: {calls}"

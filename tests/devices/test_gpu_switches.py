"""The GPU switches of ``workbench.utils.perf`` (``tf32``, ``autocast``, ``channels_last``), checked
without a GPU: the options themselves, the CUDA flags they set around a forward (on an emulated
CUDA model), autocast's float32 post-processing (CPU autocast takes the same code path), and that
none of them touches a CPU inference."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from device_audit import DeviceAudit, tensors_on, to_fake_cuda
from workbench import model_zoo
from workbench.data.datasets.shapes import generate_shapes_image
from workbench.utils import perf
from workbench.utils.perf import InferenceOptions

EMBEDDED = "Shapes/panoptic_kp_R_50_FPN_small.yaml"
HALF = (torch.bfloat16, torch.float16)


@pytest.fixture(scope="module")
def embedded():
    return model_zoo.get(EMBEDDED, trained=True, device="cpu").eval()


def _inputs():
    rgb, _ = generate_shapes_image([2026, 12, 2], height=192, width=224)  # RGB, the model's format
    img = torch.as_tensor(rgb.copy()).permute(2, 0, 1).float()
    return [{"image": img}, {"image": img[:, :160], "height": 240, "width": 320}]


def test_options():
    d = InferenceOptions()
    assert (d.channels_last, d.tf32, d.autocast) == (False, False, "off")
    on, off = InferenceOptions.all_on(), InferenceOptions.all_off()
    # all_on is what the parity suite checks at the fixtures' tolerances: layouts yes, the
    # approximate arithmetic no.
    assert on.channels_last and on.fold_batchnorm and not on.tf32 and on.autocast == "off"
    assert not off.channels_last and not off.tf32 and off.autocast == "off"
    env = InferenceOptions.from_env("autocast=bf16, tf32=1")
    assert env.autocast == "bf16" and env.tf32 and env.fast_paste
    with pytest.raises(ValueError, match="autocast=bf16"):
        InferenceOptions.from_env("autocast=int8")
    with pytest.raises(ValueError, match="autocast must be one of"):
        InferenceOptions(autocast="fp8")
    with perf.inference_options(enabled=True, autocast="fp16") as opts:
        assert opts.autocast == "fp16" and not opts.tf32
    assert perf.get_inference_options().autocast == "off"


def test_float32_helper():
    t32, t16 = torch.ones(2), torch.ones(2, dtype=torch.bfloat16)
    assert perf.float32(t32) is t32
    same = [[t32], (t32, t32)]
    assert perf.float32(same) is same
    cast = perf.float32([[t16], (t32, t16)])
    assert [[x.dtype for x in cast[0]], [x.dtype for x in cast[1]]] == [[torch.float32]] + [[torch.float32] * 2]
    assert cast[1][0] is t32 and isinstance(cast[1], tuple)


def _cuda_flags():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def _backbone_sees(model, what):
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(what(args[0])))
    return seen, handle


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_switch_sets_the_cuda_flags_for_the_forward(embedded, tf32):
    """On a CUDA model, convolutions and matmuls run with TF32 exactly when the switch says so
    (torch lets cuDNN use TF32 by default: off must turn that off), and the flags are back
    afterwards; a CPU model leaves them alone."""
    before = _cuda_flags()
    legacy = isinstance(before[0], bool)
    want = (tf32, tf32) if legacy else (("tf32",) * 2 if tf32 else ("ieee",) * 2)
    cuda_model = to_fake_cuda(copy.deepcopy(embedded))
    seen, handle = _backbone_sees(cuda_model, lambda x: _cuda_flags())
    cpu_seen, cpu_handle = _backbone_sees(embedded, lambda x: _cuda_flags())
    try:
        with perf.inference_options(tf32=tf32), torch.no_grad():
            with DeviceAudit(emulate=True):
                cuda_model(_inputs())
            embedded(_inputs())
    finally:
        handle.remove()
        cpu_handle.remove()
    assert seen == [want], seen
    assert cpu_seen == [before]
    assert _cuda_flags() == before


def test_channels_last_switch(embedded):
    """The CUDA backbone gets its batch in channels-last memory format with the switch on, and
    only then; a CPU model never does (oneDNN's layout is the CPU's switch)."""
    def layout(x):
        return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()

    cuda_model = to_fake_cuda(copy.deepcopy(embedded))
    results = {}
    for on in (False, True):
        for name, model, audit in (("cuda", cuda_model, DeviceAudit(emulate=True)), ("cpu", embedded, None)):
            seen, handle = _backbone_sees(model, layout)
            try:
                with perf.inference_options(channels_last=on), torch.no_grad():
                    if audit is None:
                        model(_inputs())
                    else:
                        with audit:
                            model(_inputs())
            finally:
                handle.remove()
            results[(name, on)] = seen
    assert results == {("cuda", False): [False], ("cpu", False): [False],
                       ("cuda", True): [True], ("cpu", True): [False]}


def test_gpu_switches_leave_cpu_inference_bit_identical(embedded):
    inputs = _inputs()
    with torch.no_grad():
        want = tensors_on(embedded(inputs))
        with perf.inference_options(tf32=True, channels_last=True):
            got = tensors_on(embedded(inputs))
    assert len(got) == len(want)
    for (path, g), (_, w) in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w), path


# The post-processing steps: box decoding and selection (RPN, box head), mask and keypoint
# decoding, mask pasting, rescaling, the panoptic combination.
POSTPROCESSING = {
    "predict_proposals", "_decode_proposals", "find_top_rpn_proposals", "predict_boxes",
    "predict_probs", "select", "fast_rcnn_inference", "fast_rcnn_inference_single_image",
    "batched_nms", "mask_rcnn_inference", "keypoint_rcnn_inference", "heatmaps_to_keypoints",
    "detector_postprocess", "sem_seg_postprocess", "paste_masks_in_image",
    "combine_semantic_and_instance_outputs",
}


aten = torch.ops.aten
# Ops that move or select values without computing (a step may pick its rows before the cast).
EXACT = {aten.index.Tensor, aten.unsqueeze.default, aten.detach.default, aten.slice.Tensor,
         aten.select.int, aten.view.default}


class _DtypeLog(TorchDispatchMode):
    """Which float dtypes each op met, and whether it ran inside a post-processing step."""

    def __init__(self):
        super().__init__()
        self.half_in_postprocessing = []
        self.half_convolutions = 0
        self.postprocessing_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        half = any(t.dtype in HALF for t in tensors)
        if func is torch.ops.aten.convolution.default and half:
            self.half_convolutions += 1
        step = self._postprocessing_step()
        # the casts at each step's entry, and selections made before them, aside
        upcast = func is torch.ops.aten._to_copy.default and out.dtype == torch.float32
        if step is not None and not upcast and func not in EXACT:
            self.postprocessing_ops += 1
            if half:
                self.half_in_postprocessing.append(f"{func} in {step}")
        return out

    @staticmethod
    def _postprocessing_step():
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name in POSTPROCESSING and "workbench" in frame.f_code.co_filename:
                return frame.f_code.co_name
            frame = frame.f_back
        return None


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_autocast_keeps_postprocessing_in_float32(embedded, device):
    """With ``autocast=bf16`` the convolutions run in bfloat16, every post-processing op sees
    float32 only, and the outputs are float32 (bool masks, int32 panoptic ids), close to the
    float32 run's. CPU autocast takes the code path of CUDA's."""
    embedded = copy.deepcopy(embedded).to(device)
    inputs = _inputs()
    with torch.no_grad():
        want = embedded(inputs)
        log = _DtypeLog()
        with perf.inference_options(autocast="bf16"), log:
            got = embedded(inputs)
    assert log.half_convolutions > 50, "autocast did not reach the backbone and heads"
    assert log.postprocessing_ops > 100
    assert not log.half_in_postprocessing, log.half_in_postprocessing[:10]
    for (path, g), (_, w) in zip(tensors_on(got), tensors_on(want)):
        assert g.dtype == w.dtype, (path, g.dtype, w.dtype)
    for g, w in zip(got, want):
        # approximate, not garbage: the best detection is the same object
        gi, wi = g["instances"], w["instances"]
        assert gi.pred_classes[0] == wi.pred_classes[0]
        assert (gi.pred_boxes.tensor[0] - wi.pred_boxes.tensor[0]).abs().max() < 4.0
        assert abs(float(gi.scores[0]) - float(wi.scores[0])) < 0.05

"""The inference optimisations of ``workbench.utils.perf``: each one against its switched-off path.

* batch-norm folding: same conv output (<= 1e-5 relative), state dict keys and values untouched,
  weight edits of any kind take effect at once, no folding under autograd / training / hooks
  on the norm;
* oneDNN blocked layout: bit-identical ResNet / head outputs, handed back dense NCHW; skipped
  under hooks, autograd, unfolded norms or unknown modules;
* ROIPooler, mask pasting, keypoint decoding: bit-identical to the general code;
* the options themselves: environment parsing, context manager, process-wide setter.

Numerical parity with the reference, with everything on and with everything off, is
``tests/parity``'s job.
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import get_cfg
from workbench.layers import Conv2d, FrozenBatchNorm2d, NaiveSyncBatchNorm
from workbench.layers.wrappers import _fold_allowed
from workbench.layers import ShapeSpec
from workbench.modeling.backbone import build_resnet_backbone, build_resnet_fpn_backbone
from workbench.modeling.poolers import ROIPooler
from workbench.structures import Boxes, heatmaps_to_keypoints
from workbench.structures.mask_ops import paste_masks_in_image
from workbench.utils import perf
from workbench.utils.perf import InferenceOptions, inference_options


@pytest.fixture(autouse=True)
def _every_switch_on():
    # fold_batchnorm is off by default; these tests exercise every switch, so all start on.
    with inference_options(enabled=True):
        yield


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _randomise_norm(norm, g):
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=g) * 1.5 + 0.5)
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=g))
        norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=g))
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g) * 2 + 0.1)


def _conv(norm_kind, bias=False, groups=1, dilation=1, stride=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    if norm_kind == "FrozenBN":
        norm = FrozenBatchNorm2d(16)
    elif norm_kind == "BN":
        norm = nn.BatchNorm2d(16)
    else:
        norm = NaiveSyncBatchNorm(16)
    conv = Conv2d(8, 16, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                  bias=bias, norm=norm, activation=F.relu)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
        if bias:
            conv.bias.copy_(torch.randn(16, generator=g))
    _randomise_norm(norm, g)
    return conv.eval()


def _both(module, x):
    """(optimised output, output with every switch off), without autograd."""
    with torch.no_grad():
        with inference_options(enabled=True):
            on = module(x)
        with inference_options(enabled=False):
            off = module(x)
    return on, off


# -- batch-norm folding -----------------------------------------------------------------------

@pytest.mark.parametrize("norm_kind", ["FrozenBN", "BN", "NaiveSyncBN"])
@pytest.mark.parametrize("bias,groups,dilation,stride", [(False, 1, 1, 1), (True, 1, 1, 2),
                                                          (False, 4, 2, 1)])
def test_folded_conv_matches_conv_then_norm(norm_kind, bias, groups, dilation, stride):
    conv = _conv(norm_kind, bias=bias, groups=groups, dilation=dilation, stride=stride)
    x = torch.randn(2, 8, 13, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _fold_allowed(conv, x) and conv.folded_weight_bias() is not None
    on, off = _both(conv, x)
    assert _rel(on, off) <= 1e-5
    # The folded weight and bias are what the docstring says.
    w, b = conv.folded_weight_bias()
    n = conv.norm
    s = n.weight / torch.sqrt(n.running_var + n.eps)
    torch.testing.assert_close(w, conv.weight * s[:, None, None, None], rtol=1e-6, atol=1e-7)
    b_conv = conv.bias if bias else torch.zeros(16)
    torch.testing.assert_close(b, (b_conv - n.running_mean) * s + n.bias, rtol=1e-6, atol=1e-6)


def test_folding_leaves_state_dict_parameters_and_modules_alone():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3"]
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    net = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):
            _randomise_norm(m, g)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modules_before = [n for n, _ in net.named_modules()]
    params_before = [n for n, _ in net.named_parameters()]
    buffers_before = [n for n, _ in net.named_buffers()]
    x = torch.randn(1, 3, 64, 64, generator=g)
    attrs_before = [sorted(m.__dict__) for m in net.modules()]
    on, off = _both(net, x)
    for k in on:
        assert _rel(on[k], off[k]) <= 1e-5, k
    after = net.state_dict()
    assert list(after) == list(before)
    for k, v in after.items():
        assert torch.equal(v, before[k]), k
    assert [n for n, _ in net.named_modules()] == modules_before
    assert [n for n, _ in net.named_parameters()] == params_before
    assert [n for n, _ in net.named_buffers()] == buffers_before
    # Nothing is stored on the modules either (the folded tensors live for one call).
    assert [sorted(m.__dict__) for m in net.modules()] == attrs_before


def test_weight_edits_take_effect_at_once():
    conv = _conv("FrozenBN")
    x = torch.randn(1, 8, 9, 9)
    _both(conv, x)
    # In-place edit under no_grad.
    with torch.no_grad():
        conv.norm.weight[0] = 7.0
        conv.weight[3].mul_(-2)
    on, off = _both(conv, x)
    assert _rel(on, off) <= 1e-5
    # load_state_dict.
    other = _conv("FrozenBN", seed=5)
    conv.load_state_dict(other.state_dict())
    on, off = _both(conv, x)
    assert _rel(on, off) <= 1e-5 and _rel(on, _both(other, x)[1]) <= 1e-5
    # New storage, and edits through .data (which PyTorch's version counter does not see).
    conv.weight.data = torch.randn_like(conv.weight)
    conv.norm.bias.data.add_(1.0)
    conv.norm.running_var.data[2] = 9.0
    on, off = _both(conv, x)
    assert _rel(on, off) <= 1e-5
    # A deep copy folds its own weights.
    twin = copy.deepcopy(conv)
    with torch.no_grad():
        twin.norm.weight.fill_(0.25)
    assert _rel(_both(twin, x)[0], _both(twin, x)[1]) <= 1e-5
    assert _rel(_both(conv, x)[0], off) <= 1e-5


def test_no_folding_under_autograd_training_or_norm_hooks():
    conv = _conv("FrozenBN")
    x = torch.randn(1, 8, 9, 9, requires_grad=True)
    assert not _fold_allowed(conv, x)  # grad enabled and x requires grad
    with torch.no_grad():
        assert _fold_allowed(conv, x)
    # Gradients in eval mode are those of the unfused conv + norm.
    y = conv(x)
    y.sum().backward()
    assert x.grad is not None and y.grad_fn is not None
    with torch.no_grad(), inference_options(enabled=False):
        torch.testing.assert_close(y, conv(x))
    # BatchNorm in training mode uses batch statistics: never folded.
    bn_conv = _conv("BN").train()
    with torch.no_grad():
        assert bn_conv.folded_weight_bias() is None
    # A hook on the norm must fire with the conv's output: no folding while it is there.
    conv.eval()
    seen = []
    handle = conv.norm.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    with torch.no_grad():
        out = conv(x)
    handle.remove()
    assert len(seen) == 1
    with torch.no_grad():
        raw = F.conv2d(x, conv.weight, None, 1, 1)
    torch.testing.assert_close(seen[0][0], raw)
    torch.testing.assert_close(out, F.relu(seen[0][1]))
    # Hooks on the conv itself keep working with folding.
    seen.clear()
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = conv(x)
    handle.remove()
    assert len(seen) == 1 and seen[0] is out
    with torch.no_grad():
        assert _fold_allowed(conv, x)


def test_folding_off_by_switch():
    conv = _conv("FrozenBN")
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad(), inference_options(fold_batchnorm=False):
        assert not _fold_allowed(conv, x)
    with torch.no_grad(), inference_options(enabled=False, fold_batchnorm=True):
        assert _fold_allowed(conv, x)


# -- oneDNN blocked layout -------------------------------------------------------------------

def _tiny_fpn(norm="FrozenBN"):
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.WIDTH_PER_GROUP = 8, 16, 4
    r.NORM = norm
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 8
    torch.manual_seed(0)
    net = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            _randomise_norm(m, g)
    return net


@pytest.fixture
def two_threads():
    # oneDNN picks the same kernel for NCHW and blocked inputs at the parity suite's two threads
    # (and for every conv of the R50 models at 2 threads); at one thread the NCHW path of some
    # 1x1 convs is a plain GEMM, which rounds differently.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_onednn_layout_is_bit_identical(norm, two_threads):
    net = _tiny_fpn(norm)
    resnet = net.bottom_up
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with inference_options(fold_batchnorm=False):
            assert not perf.enter_onednn(resnet, x)[1]  # unfolded norms: plain NCHW
        with inference_options(enabled=False, fold_batchnorm=True, onednn_layout=True):
            assert perf.enter_onednn(resnet, x)[1]
            on = resnet(x)
        with inference_options(enabled=False, fold_batchnorm=True):
            assert not perf.enter_onednn(resnet, x)[1]
            off = resnet(x)
    for k in off:
        assert not on[k].is_mkldnn and on[k].is_contiguous(), k
        assert torch.equal(on[k], off[k]), k


def test_onednn_layout_steps_aside():
    net = _tiny_fpn()
    resnet = net.bottom_up
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), inference_options(fold_batchnorm=True):
        # Norms must be folded for the ResNet body to stay blocked.
        with inference_options(fold_batchnorm=False):
            assert not perf.enter_onednn(resnet, x)[1]
        # A hook anywhere inside must see ordinary tensors.
        seen = []
        h = resnet.res3[0].conv2.register_forward_hook(lambda m, i, o: seen.append(o))
        assert not perf.enter_onednn(resnet, x)[1]
        resnet(x)
        h.remove()
        assert len(seen) == 1 and not seen[0].is_mkldnn
        h = resnet.res3[0].conv2.norm.register_forward_hook(lambda m, i, o: None)
        assert not perf.enter_onednn(resnet, x)[1]
        h.remove()
        # Modules of unknown kinds are not assumed to take blocked tensors.
        resnet.res2[0].conv1.activation = torch.sigmoid
        assert not perf.enter_onednn(resnet, x)[1]
        resnet.res2[0].conv1.activation = None
        assert perf.enter_onednn(resnet, x)[1]
    # Autograd and training mode: plain tensors.
    with inference_options(fold_batchnorm=True):
        assert not perf.enter_onednn(resnet, x)[1]  # grad enabled here
        with torch.no_grad():
            assert not perf.enter_onednn(resnet.train(), x)[1]


def test_onednn_heads_are_bit_identical(two_threads):
    from workbench.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
    from workbench.modeling.roi_heads.keypoint_head import KRCNNConvDeconvUpsampleHead

    torch.manual_seed(0)
    mask_head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=16), num_classes=3,
                                         conv_dims=[16, 16, 16]).eval()
    kp_head = KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=16), num_keypoints=5,
                                          conv_dims=[16, 16]).eval()
    x = torch.randn(7, 16, 14, 14)
    for head in (mask_head, kp_head):
        with torch.no_grad():
            assert perf.enter_onednn(head, x)[1]
            on = head.layers(x)
            with inference_options(onednn_layout=False):
                off = head.layers(x)
        assert not on.is_mkldnn and torch.equal(on, off)


# -- ROIPooler, mask pasting, keypoints ------------------------------------------------------

@pytest.mark.parametrize("pooler_type", ["ROIAlign", "ROIAlignV2", "ROIPool"])
def test_fast_pooler_is_identical(pooler_type):
    g = torch.Generator().manual_seed(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    feats = [torch.randn(2, 4, 256 // (2 ** i), 192 // (2 ** i), generator=g) for i in range(4)]
    boxes = []
    for n in (40, 7):
        xy = torch.rand(n, 2, generator=g) * 150
        wh = torch.rand(n, 2, generator=g) ** 3 * 700 + 1
        boxes.append(Boxes(torch.cat([xy, xy + wh], dim=1)))
    pooler = ROIPooler(7, scales=scales, sampling_ratio=0, pooler_type=pooler_type)
    on, off = _both(lambda b: pooler(feats, b), boxes)
    assert torch.equal(on, off)
    # A box with a NaN side has no level: its row stays zero, as in the general path.
    boxes[1].tensor[0, 2] = float("nan")
    on, off = _both(lambda b: pooler(feats, b), boxes)
    assert torch.equal(on, off)


@pytest.mark.parametrize("num_levels", [1, 4])
def test_pooling_on_threads_is_identical(num_levels, two_threads):
    g = torch.Generator().manual_seed(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32][:num_levels]
    feats = [torch.randn(2, 4, 128 // (2 ** i), 96 // (2 ** i), generator=g) for i in range(num_levels)]
    boxes = []
    for n in (300, 101):
        xy = torch.rand(n, 2, generator=g) * 200
        wh = torch.rand(n, 2, generator=g) ** 2 * 300 + 1
        boxes.append(Boxes(torch.cat([xy, xy + wh], dim=1)))
    pooler = ROIPooler(7, scales=scales, sampling_ratio=0, pooler_type="ROIAlignV2")
    on, off = _both(lambda b: pooler(feats, b), boxes)
    assert torch.equal(on, off)
    with torch.inference_mode():
        assert torch.equal(pooler(feats, boxes), off)


def test_threaded_batched_nms_is_identical(two_threads):
    from torchvision.ops import boxes as box_ops

    from workbench.layers import batched_nms

    g = torch.Generator().manual_seed(0)
    n = 3000
    xy = torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 1], dim=1)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 20, (n,), generator=g)
    want = box_ops._batched_nms_vanilla(boxes, scores, idxs, 0.5)
    with torch.no_grad():
        got = batched_nms(boxes, scores, idxs, 0.5)
        with inference_options(threaded_box_ops=False):
            plain = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got, want) and torch.equal(plain, want)


@pytest.mark.parametrize("threshold", [0.5, -1.0])
def test_fast_paste_is_identical(threshold):
    g = torch.Generator().manual_seed(0)
    h, w, n = 120, 170, 40
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 20
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.7 + 0.2
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[0] = torch.tensor([3.3, 4.7, 4.1, 5.2])  # sub-pixel box
    boxes[1] = torch.tensor([-30.0, -40.0, w + 30.0, h + 20.0])  # larger than the image
    boxes[2] = torch.tensor([w + 5.0, 3.0, w + 50.0, 40.0])  # outside the image
    masks = F.avg_pool2d(torch.rand(n, 1, 28, 28, generator=g), 3, 1, 1)[:, 0]
    on, off = _both(lambda m: paste_masks_in_image(m, boxes, (h, w), threshold=threshold), masks)
    assert on.dtype == off.dtype and on.shape == off.shape == (n, h, w)
    assert torch.equal(on, off)
    assert not on[2].any()


def test_fast_keypoint_decoding_is_identical():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 17, 56, 56, generator=g) * 3
    xy = torch.rand(6, 2, generator=g) * 300
    wh = torch.rand(6, 2, generator=g) * 200 + 0.3
    rois = torch.cat([xy, xy + wh], dim=1)
    rois[0] = torch.tensor([5.0, 5.0, 5.3, 5.4])  # smaller than a pixel: clamped to 1
    fast, ref = _both(lambda m: heatmaps_to_keypoints(m, rois), maps)
    assert torch.equal(fast, ref)
    for enabled in (True, False):
        with inference_options(enabled=enabled):
            assert heatmaps_to_keypoints(maps[:0], rois[:0]).shape == (0, 17, 4)


# -- the options ---------------------------------------------------------------------------------

def test_options_env_context_and_setter():
    assert not InferenceOptions().fold_batchnorm and not InferenceOptions().onednn_layout
    assert InferenceOptions().fast_paste and InferenceOptions().threaded_box_ops
    assert InferenceOptions.from_env(None) == InferenceOptions()
    assert InferenceOptions.from_env("0") == InferenceOptions.all_off()
    opts = InferenceOptions.from_env("fold_batchnorm=0, onednn_layout=0")
    assert not opts.fold_batchnorm and not opts.onednn_layout and opts.fast_paste
    with pytest.raises(ValueError, match="unknown option"):
        InferenceOptions.from_env("fold_bn=0")
    with pytest.raises(ValueError, match="=0 or"):
        InferenceOptions.from_env("fold_batchnorm=maybe")
    start = perf.get_inference_options()
    with inference_options(enabled=False, fast_paste=True) as o:
        assert o.fast_paste and not o.fold_batchnorm and perf.get_inference_options() == o
    assert perf.get_inference_options() == start
    old = perf.set_inference_options(onednn_layout=False)
    try:
        assert not perf.get_inference_options().onednn_layout
    finally:
        perf.set_inference_options(old)
    assert perf.get_inference_options() == start

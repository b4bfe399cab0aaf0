import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench.layers import (
    Conv2d,
    FrozenBatchNorm2d,
    ROIAlign,
    ShapeSpec,
    batched_nms,
    cat,
    ciou_loss,
    cross_entropy,
    diou_loss,
    get_norm,
    giou_loss,
    move_device_like,
    nonzero_tuple,
    sigmoid_focal_loss,
    smooth_l1_loss,
)


def test_shape_spec_defaults():
    s = ShapeSpec(channels=256, stride=4)
    assert (s.channels, s.height, s.width, s.stride) == (256, None, None, 4)


def test_frozen_bn_matches_eval_batchnorm_with_and_without_grad():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d)
    x = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(frozen(x), bn(x))
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(frozen(xg), bn(x))
    assert list(frozen.parameters()) == []
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


def test_convert_frozen_bn_recursive_and_back():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    m = FrozenBatchNorm2d.convert_frozen_batchnorm(m)
    assert isinstance(m[1], FrozenBatchNorm2d) and isinstance(m[2][0], FrozenBatchNorm2d)
    m = FrozenBatchNorm2d.convert_frozenbatchnorm2d_to_batchnorm2d(m)
    assert isinstance(m[1], nn.BatchNorm2d) and isinstance(m[2][0], nn.BatchNorm2d)


def test_frozen_bn_loads_batchnorm_state_dict():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(2.0)
    f = FrozenBatchNorm2d(3)
    f.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    assert torch.equal(f.running_mean, torch.full((3,), 2.0))


@pytest.mark.parametrize("norm,cls", [("BN", nn.BatchNorm2d), ("FrozenBN", FrozenBatchNorm2d),
                                      ("GN", nn.GroupNorm), ("SyncBN", nn.BatchNorm2d)])
def test_get_norm(norm, cls):
    assert isinstance(get_norm(norm, 64), cls)


def test_get_norm_empty_and_unknown():
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    with pytest.raises(KeyError, match="XN"):
        get_norm("XN", 8)
    assert isinstance(get_norm(lambda c: nn.LayerNorm(c), 8), nn.LayerNorm)


def test_conv2d_norm_activation_order():
    conv = Conv2d(1, 1, 1, bias=False, norm=FrozenBatchNorm2d(1), activation=F.relu)
    conv.weight.data.fill_(2.0)
    conv.norm.bias.fill_(-3.0)
    x = torch.tensor([[[[1.0, 2.0]]]])
    # conv: 2, 4 -> norm (~identity) + bias -3: -1, 1 -> relu: 0, 1
    torch.testing.assert_close(conv(x), torch.tensor([[[[0.0, 1.0]]]]), atol=1e-4, rtol=0)


def test_cat_nonzero_move():
    a = torch.ones(2)
    assert cat([a]) is a
    assert cat([a, a]).shape == (4,)
    with pytest.raises(TypeError):
        cat(a)
    (idx,) = nonzero_tuple(torch.tensor([0, 1, 1]))
    assert idx.tolist() == [1, 2]
    assert move_device_like(a, torch.zeros(1)).device == a.device


def test_cross_entropy_empty_is_zero_with_grad():
    x = torch.zeros(0, 3, requires_grad=True)
    loss = cross_entropy(x, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()


def test_batched_nms_per_class():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5)
    assert keep.tolist() == [0, 2]
    with pytest.raises(ValueError, match="\\(N, 4\\)"):
        batched_nms(boxes[:, :3], scores, torch.tensor([0, 0, 1]), 0.5)


def test_roi_align_aligned_flag():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])
    out_aligned = ROIAlign((1, 1), 1.0, 1, aligned=True)(x, rois)
    # The box centre (2, 2) in pixel-corner coordinates is the corner of four pixels: mean 7.5.
    assert out_aligned.item() == pytest.approx(7.5)
    out_legacy = ROIAlign((1, 1), 1.0, 1, aligned=False)(x, rois)
    assert out_legacy.item() == pytest.approx(10.0)  # sampled at (2, 2) as a pixel index
    with pytest.raises(ValueError, match="\\(R, 5\\)"):
        ROIAlign((1, 1), 1.0, 1)(x, rois[:, 1:])


def test_smooth_l1_and_l1_limit():
    x, y = torch.tensor([0.0, 0.05, 2.0]), torch.zeros(3)
    torch.testing.assert_close(smooth_l1_loss(x, y, beta=0.1),
                               torch.tensor([0.0, 0.5 * 0.05 ** 2 / 0.1, 2.0 - 0.05]))
    torch.testing.assert_close(smooth_l1_loss(x, y, beta=0.0, reduction="sum"), torch.tensor(2.05))


def test_iou_losses_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    # IoU = 2 / 6; enclosing box area 6 == union, so GIoU = IoU.
    assert giou_loss(a, b).item() == pytest.approx(1 - 1 / 3, abs=1e-6)
    # DIoU: centre distance 1, enclosing diagonal^2 = 9 + 4 = 13.
    assert diou_loss(a, b).item() == pytest.approx(1 - 1 / 3 + 1 / 13, abs=1e-6)
    # Same aspect ratio: CIoU == DIoU.
    assert ciou_loss(a, b).item() == pytest.approx(diou_loss(a, b).item(), abs=1e-6)
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_sigmoid_focal_loss_reduces_to_bce_with_gamma_0():
    logits = torch.tensor([0.3, -1.2, 2.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    got = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0, reduction="sum")
    want = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    torch.testing.assert_close(got, want)
    p = torch.sigmoid(logits)
    focal = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2)
    expected0 = 0.25 * (1 - p[0]) ** 2 * -torch.log(p[0])
    assert focal[0].item() == pytest.approx(expected0.item(), rel=1e-5)

"""DefaultPredictor against the mask_rcnn_R_50_FPN fixture, plus its input handling.

About single images vs. the fixture: the fixture's outputs come from ONE batched call on four
photos, padded together to 320 x 512. Padding changes what every deep feature sees (ResNet's
receptive field covers the whole 320 x 320 astronaut, and FrozenBN biases make the padded area
non-zero after the first layer), so running the astronaut alone (padded to 320 x 320) gives
other detections. Hence:

- the batched call on photos that pad to the fixture's 320 x 512 reproduces the fixture's
  per-image outputs;
- the single-image call feeds the model exactly the fixture's input tensor, and the model's
  features on it equal the fixture's features of image 0 (which were computed on it alone).
"""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import workbench.engine.defaults as defaults
from workbench.config import get_cfg
from workbench.engine import DefaultPredictor
from fixture_paths import FIXTURES

FIXTURE = (FIXTURES / "mask_rcnn_R_50_FPN")
IMAGES = (FIXTURES / "images")


def read_bgr(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))[:, :, ::-1]


def fixture_cfg(**changes):
    cfg = get_cfg()
    cfg.merge_from_file(str(FIXTURE / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = str(FIXTURE / "model_final.pkl")
    for key, value in changes.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


@pytest.fixture(scope="module", autouse=True)
def reference_threads():
    """The fixture outputs were computed with two intra-op threads; with another count the
    convolutions sum in another order and two detections whose scores differ by ~1e-7 can swap
    places (see tests/parity/conftest.py). The suite's default is one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def predictor():
    return DefaultPredictor(fixture_cfg())


@pytest.fixture(scope="module")
def outputs():
    return np.load(FIXTURE / "outputs.npz")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def assert_matches_fixture(instances, outputs, i):
    boxes = instances.pred_boxes.tensor.numpy()
    ref_boxes = outputs[f"img{i}/pred_boxes"]
    assert boxes.shape == ref_boxes.shape, f"img{i}: {len(boxes)} detections, fixture {len(ref_boxes)}"
    assert np.abs(boxes - ref_boxes).max() <= 1e-2
    assert np.abs(instances.scores.numpy() - outputs[f"img{i}/scores"]).max() <= 1e-4
    assert np.array_equal(instances.pred_classes.numpy(), outputs[f"img{i}/pred_classes"])
    masks = instances.pred_masks.numpy()
    ref_masks = outputs[f"img{i}/pred_masks"]
    assert masks.shape == ref_masks.shape
    ious = [mask_iou(m, r) for m, r in zip(masks, ref_masks)]
    assert min(ious) >= 0.99, f"img{i}: worst mask IoU {min(ious):.4f}"


def test_batched_call_reproduces_fixture_outputs(predictor, outputs):
    # astronaut (320 x 320 after resize) and chelsea (320 x 481) pad to 320 x 512 together,
    # the fixture's batch size; each image's outputs do not depend on the other image.
    assert tuple(outputs["batch/padded_image_tensor_shape"][2:]) == (320, 512)
    results = predictor([read_bgr("astronaut.png"), read_bgr("chelsea.png")])
    assert isinstance(results, list) and len(results) == 2
    for i, result in enumerate(results):
        assert_matches_fixture(result["instances"], outputs, i)


class Recorder(nn.Module):
    """Stands in for the model: records its inputs and whether gradients were on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, batched_inputs):
        self.calls.append((batched_inputs, torch.is_grad_enabled()))
        return [{"index": i} for i in range(len(batched_inputs))]


def test_single_image_gets_exactly_the_fixture_input(predictor, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(predictor, "model", recorder)
    out = predictor(read_bgr("astronaut.png"))
    assert out == {"index": 0}
    (inputs, grad_enabled), = recorder.calls
    assert not grad_enabled
    (inp,) = inputs
    expected = np.load(FIXTURE / "inputs.npz")["img0/image_chw_float32"]
    assert inp["image"].dtype == torch.float32
    assert np.array_equal(inp["image"].numpy(), expected)
    assert (inp["height"], inp["width"]) == (512, 512)

    predictor.predict_batch([read_bgr("coffee.png"), read_bgr("rocket.jpg")])
    inputs, _ = recorder.calls[-1]
    ref = np.load(FIXTURE / "inputs.npz")
    for inp, i in zip(inputs, (2, 3)):
        assert np.array_equal(inp["image"].numpy(), ref[f"img{i}/image_chw_float32"])
        assert (inp["height"], inp["width"]) == tuple(ref[f"img{i}/requested_hw"])
    assert predictor.predict_batch([]) == []


def test_single_image_features_match_fixture(predictor, outputs):
    inputs = [predictor._prepare(read_bgr("astronaut.png"))]
    with torch.no_grad():
        images = predictor.model.preprocess_image(inputs)
        assert np.array_equal(images.tensor[0].numpy(), outputs["features_input/image0_normalized_padded"])
        features = predictor.model.backbone(images.tensor)
    for name in ("p2", "p3", "p4", "p5", "p6"):
        ref = outputs[f"features/{name}"]
        got = features[name][0].numpy()
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), name


def test_single_call_end_to_end():
    # A smaller test size keeps this fast; outputs come back at the photo's own size.
    small = DefaultPredictor(fixture_cfg(**{"INPUT.MIN_SIZE_TEST": 128, "INPUT.MAX_SIZE_TEST": 213}))
    assert not small.model.training
    img = read_bgr("chelsea.png")
    out = small(img)
    instances = out["instances"]
    assert instances.image_size == img.shape[:2]
    assert len(instances) > 0
    assert instances.pred_masks.shape == (len(instances), *img.shape[:2])
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= img.shape[1]).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= img.shape[0]).all()

    # One image at a time inside predict_batch gives exactly the single-image results.
    other = np.ascontiguousarray(read_bgr("rocket.jpg")[100:220, 200:360])  # small: quick to paste
    both = small.predict_batch([img, other], batched=False)
    assert len(both) == 2
    for field in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(getattr(both[0]["instances"], field), getattr(instances, field)), field
    assert torch.equal(both[0]["instances"].pred_boxes.tensor, boxes)
    assert both[1]["instances"].image_size == other.shape[:2]


def test_weights_are_loaded(predictor):
    with open(FIXTURE / "model_final.pkl", "rb") as f:
        ref = pickle.load(f)["model"]
    state = predictor.model.state_dict()
    assert sorted(state) == sorted(ref)
    for key in ("backbone.bottom_up.stem.conv1.weight", "roi_heads.box_predictor.cls_score.bias"):
        assert state[key].numpy().tobytes() == ref[key].tobytes()
    assert not predictor.model.training


def test_cfg_is_copied(monkeypatch):
    monkeypatch.setattr(defaults, "build_model", lambda cfg: Recorder())
    cfg = fixture_cfg()
    cfg.MODEL.WEIGHTS = ""
    p = DefaultPredictor(cfg)
    cfg.INPUT.MIN_SIZE_TEST = 999
    assert p.cfg.INPUT.MIN_SIZE_TEST == 320 and p.aug.short_edge_length == (320, 320)


@pytest.fixture
def stub_predictor(monkeypatch):
    """A DefaultPredictor factory whose model is a Recorder (no weights)."""
    def make(fmt):
        monkeypatch.setattr(defaults, "build_model", lambda cfg: Recorder())
        cfg = fixture_cfg(**{"INPUT.FORMAT": fmt, "INPUT.MIN_SIZE_TEST": 4, "INPUT.MAX_SIZE_TEST": 100})
        cfg.MODEL.WEIGHTS = ""
        return DefaultPredictor(cfg)
    return make


def constant_bgr(b, g, r, h=6, w=8):
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (b, g, r)
    return img


@pytest.mark.parametrize("fmt, expected", [
    ("BGR", [10, 20, 30]),
    ("RGB", [30, 20, 10]),
    ("L", [round(30 * 0.299 + 20 * 0.587 + 10 * 0.114)]),
])
def test_input_format(stub_predictor, fmt, expected):
    p = stub_predictor(fmt)
    p(constant_bgr(10, 20, 30))
    (inp,), _ = p.model.calls[-1]
    image = inp["image"]
    assert image.shape == (len(expected), 4, 5)  # short edge 6 -> 4, 8 -> 5.33 -> 5
    for c, value in enumerate(expected):
        assert torch.all(image[c] == value), (fmt, c, image[c].unique())
    assert (inp["height"], inp["width"]) == (6, 8)


def test_grayscale_matches_pil(stub_predictor):
    p = stub_predictor("L")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    p.aug = type(p.aug)([20, 20], 1000)  # no resize: compare the conversion itself
    p(img)
    (inp,), _ = p.model.calls[-1]
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, ::-1])).convert("L"))
    assert np.array_equal(inp["image"][0].numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("image, error, message", [
    (np.zeros((6, 8, 3), np.float32), TypeError, "dtype uint8"),
    (np.zeros((6, 8), np.uint8), ValueError, r"shape \(H, W, 3\).*grayscale"),
    (np.zeros((6, 8, 4), np.uint8), ValueError, r"shape \(H, W, 3\)"),
    (np.zeros((6, 8, 1), np.uint8), ValueError, r"shape \(H, W, 3\)"),
    (np.zeros((2, 6, 8, 3), np.uint8), ValueError, r"shape \(H, W, 3\)"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "non-empty"),
    (torch.zeros(6, 8, 3, dtype=torch.uint8), TypeError, "numpy array"),
])
def test_bad_images_are_reported(stub_predictor, image, error, message):
    p = stub_predictor("BGR")
    with pytest.raises(error, match=message):
        p(image)


def test_bad_image_in_a_batch_is_named(stub_predictor):
    p = stub_predictor("BGR")
    with pytest.raises(TypeError, match="image 1 with dtype uint8"):
        p([constant_bgr(1, 2, 3), np.zeros((6, 8, 3), np.float64)])
    assert p.model.calls == []  # nothing ran
    with pytest.raises(TypeError, match="list of images"):
        p.predict_batch(constant_bgr(1, 2, 3))


def test_unsupported_format(monkeypatch):
    monkeypatch.setattr(defaults, "build_model", lambda cfg: Recorder())
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        DefaultPredictor(fixture_cfg(**{"INPUT.FORMAT": "YUV-BT.601"}))

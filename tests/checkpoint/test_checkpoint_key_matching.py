"""What a checkpoint that fits the model partly, or not at all, does: keys that did not load are
warnings (as in fvcore), and a file of which nothing loads is an error unless asked for."""

import logging
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from workbench.checkpoint import (
    CheckpointLoadError,
    CheckpointMismatchError,
    Checkpointer,
    DetectionCheckpointer,
)


class Net(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, classes)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def write_pth(path, state):
    torch.save({"model": state, "iteration": 5}, path)
    return str(path)


def test_missing_and_unexpected_keys_are_warnings(tmp_path, caplog):
    state = {k: v for k, v in Net().state_dict().items() if not k.startswith("head.")}
    state["extra.weight"] = torch.zeros(2)
    path = write_pth(tmp_path / "partial.pth", state)
    ckpt = DetectionCheckpointer(Net())
    with caplog.at_level(logging.WARNING, logger="workbench.checkpoint"):
        assert ckpt.load(path) == {"iteration": 5}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = "\n".join(r.getMessage() for r in warnings)
    assert "not found in the checkpoint" in text and "| head " in text
    assert "not used by the model" in text and "| extra " in text
    assert sorted(ckpt.incompatible_keys.missing_keys) == ["head.bias", "head.weight"]


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_a_checkpoint_matching_nothing_is_an_error(tmp_path, suffix):
    other = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / f"other_model{suffix}"
    if suffix == ".pth":
        write_pth(path, other.state_dict())
    else:
        arrays = {k: v.numpy() for k, v in other.state_dict().items()}
        path.write_bytes(pickle.dumps({"model": arrays, "__author__": "someone"}))
    model = Net()
    before = snapshot(model)
    ckpt = DetectionCheckpointer(model)
    with pytest.raises(CheckpointMismatchError) as err:
        ckpt.load(str(path))
    msg = str(err.value)
    assert str(path) in msg and "matches none of the model's keys" in msg
    assert "'0.bias'" in msg and "'backbone.bias'" in msg  # a few keys of each side
    assert "4 keys in the file" in msg and "4 in the model" in msg
    assert "allow_no_match=True" in msg
    assert isinstance(err.value, CheckpointLoadError)
    assert_unchanged(model, before)


def test_allow_no_match_as_keyword_and_attribute(tmp_path, caplog):
    path = write_pth(tmp_path / "other.pth", {"x.weight": torch.ones(2)})
    model = Net()
    before = snapshot(model)
    ckpt = DetectionCheckpointer(model)
    with caplog.at_level(logging.WARNING, logger="workbench.checkpoint"):
        assert ckpt.load(path, allow_no_match=True) == {"iteration": 5}
    assert ckpt.incompatible_keys.unexpected_keys == ["x.weight"]
    assert "not used by the model" in caplog.text  # still reported
    assert_unchanged(model, before)

    ckpt.allow_no_match = True
    assert ckpt.load(path) == {"iteration": 5}
    with pytest.raises(CheckpointMismatchError):
        ckpt.load(path, allow_no_match=False)  # the keyword wins over the attribute


def test_only_wrong_shapes_is_a_mismatch_that_names_a_shape(tmp_path):
    path = write_pth(tmp_path / "ten_classes.pth", Net(classes=10).state_dict())
    # The backbone fits: a partial load is fine (fine-tuning to another class count).
    ckpt = DetectionCheckpointer(Net())
    ckpt.load(path)
    assert {k for k, _, _ in ckpt.incompatible_keys.incorrect_shapes} == {"head.weight", "head.bias"}

    head_only = {k: v for k, v in Net(classes=10).state_dict().items() if k.startswith("head.")}
    path = write_pth(tmp_path / "head_only.pth", head_only)
    with pytest.raises(CheckpointMismatchError, match=r"other shapes \(e\.g\. 'head\.\w+': \(10"):
        DetectionCheckpointer(Net()).load(path)


def test_an_empty_model_entry_is_a_mismatch_unless_the_model_has_no_keys(tmp_path):
    path = write_pth(tmp_path / "empty.pth", {})
    with pytest.raises(CheckpointMismatchError, match=r"0 keys in the file \(none\)"):
        DetectionCheckpointer(Net()).load(path)
    assert DetectionCheckpointer(nn.ReLU()).load(path) == {"iteration": 5}


def test_detectron2_signature_still_works(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = Checkpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000001", iteration=1)
    path = str(tmp_path / "model_0000001.pth")
    assert set(ckpt.load(path, ["optimizer"])) == {"iteration"}
    assert set(ckpt.load(path, checkpointables=[])) == {"iteration", "optimizer"}
    assert ckpt.resume_or_load("", resume=True) == {"iteration": 1}


def test_resume_or_load_refuses_another_models_weights(tmp_path):
    path = write_pth(tmp_path / "other.pth", {"x.weight": torch.ones(2)})
    with pytest.raises(CheckpointMismatchError, match="other.pth"):
        DetectionCheckpointer(Net(), save_dir=str(tmp_path / "out")).resume_or_load(path)


def test_caffe2_names_without_heuristics_are_a_mismatch_with_a_hint(tmp_path):
    blobs = {"conv1_w": np.zeros((4, 3, 1, 1), np.float32), "conv1_b": np.zeros(4, np.float32)}
    path = tmp_path / "c2.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in blobs.items()}}, path)
    with pytest.raises(CheckpointMismatchError, match=r"matching_heuristics=True"):
        DetectionCheckpointer(Net()).load(str(path))

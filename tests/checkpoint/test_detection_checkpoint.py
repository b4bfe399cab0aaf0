"""DetectionCheckpointer on the reference fixtures, saving, resuming and periodic checkpoints."""

import json
import logging
import os
import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

from workbench.checkpoint import DetectionCheckpointer, PeriodicCheckpointer
from workbench.config import get_cfg
from workbench.modeling import build_model
from fixture_paths import FIXTURES

FOLDERS = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.yaml").is_file())
WEIGHT_FILES = ("model_final.pkl", "model_final.pth", "model_final_c2.pkl")


def weights_folder(folder: str) -> str:
    """The folder whose model_final.pkl holds this folder's weights."""
    meta = json.loads((FIXTURES / folder / "meta.json").read_text())
    return meta.get("weights", {}).get("same_as_fixture") or folder


def weight_files(folder: str):
    """This folder's weight files, or those of the folder it shares its weights with."""
    own = [f for f in WEIGHT_FILES if (FIXTURES / folder / f).is_file()]
    if own:
        return [FIXTURES / folder / f for f in own]
    source = weights_folder(folder)
    return [FIXTURES / source / f for f in WEIGHT_FILES if (FIXTURES / source / f).is_file()]


CASES = [(folder, path) for folder in FOLDERS for path in weight_files(folder)]


def reference_state(folder: str):
    with open(FIXTURES / weights_folder(folder) / "model_final.pkl", "rb") as f:
        return pickle.load(f)["model"]  # trusted fixture: plain pickle as an independent reader


def fixture_cfg(folder: str, **changes):
    cfg = get_cfg()
    cfg.merge_from_file(str(FIXTURES / folder / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    for key, value in changes.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return cfg


_MODELS = {}


def fixture_model(folder: str) -> nn.Module:
    """The folder's model with every parameter and buffer set to NaN (or -1), so that any
    entry the checkpoint does not overwrite is caught by the bitwise comparison."""
    if folder not in _MODELS:
        _MODELS[folder] = build_model(fixture_cfg(folder))
    model = _MODELS[folder]
    with torch.no_grad():
        for t in model.state_dict().values():
            t.fill_(float("nan") if t.is_floating_point() else -1)
    return model


def assert_bitwise_equal(state_dict, reference):
    assert sorted(state_dict) == sorted(reference)
    for k, ref in reference.items():
        got = state_dict[k].detach().cpu().numpy()
        assert got.dtype == ref.dtype and got.shape == ref.shape, k
        assert got.tobytes() == ref.tobytes(), f"{k} differs"


@pytest.mark.parametrize("folder, path", CASES, ids=[f"{f}/{p.name}" for f, p in CASES])
def test_fixture_weights_load_bit_exactly(folder, path):
    model = fixture_model(folder)
    ckpt = DetectionCheckpointer(model)
    extra = ckpt.load(str(path))
    inc = ckpt.incompatible_keys
    assert inc.missing_keys == [], inc.missing_keys
    assert inc.unexpected_keys == [], inc.unexpected_keys
    assert inc.incorrect_shapes == [], inc.incorrect_shapes
    assert_bitwise_equal(model.state_dict(), reference_state(folder))
    assert "model" not in extra


def test_detectron1_blobs_layout_loads_bit_exactly(tmp_path):
    """The c2 fixture's arrays in the raw Detectron1 layout: {"blobs": ..., "cfg": ...}, no
    "__author__", with optimizer momentum blobs that must be ignored."""
    with open(FIXTURES / "mask_rcnn_R_50_FPN_c2" / "model_final_c2.pkl", "rb") as f:
        blobs = dict(pickle.load(f)["model"])
    blobs.update({k + "_momentum": np.zeros_like(v) for k, v in list(blobs.items())[:5]})
    path = tmp_path / "detectron1.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs, "cfg": "MODEL: {}"}, protocol=2))
    folder = "mask_rcnn_R_50_FPN_c2"
    model = fixture_model(folder)
    ckpt = DetectionCheckpointer(model)
    assert ckpt.load(str(path)) == {"__author__": "Caffe2", "matching_heuristics": True}
    assert ckpt.incompatible_keys == ([], [], [])
    assert_bitwise_equal(model.state_dict(), reference_state(folder))


def test_every_folder_has_weights_to_test():
    assert {"mask_rcnn_R_50_FPN", "mask_rcnn_R_50_FPN_c2"} <= set(FOLDERS)
    for folder in FOLDERS:
        assert weight_files(folder), folder
    names = {p.name for _, p in CASES}
    assert set(WEIGHT_FILES) <= names


def test_save_reloads_bit_identically(tmp_path):
    folder = "mask_rcnn_R_50_FPN"
    model = fixture_model(folder)
    DetectionCheckpointer(model).load(str(FIXTURES / folder / "model_final.pkl"))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_999", iteration=999)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_999.pth"]

    model = fixture_model(folder)  # NaN again
    ckpt = DetectionCheckpointer(model)
    extra = ckpt.load(str(tmp_path / "model_999.pth"))
    assert extra == {"iteration": 999}
    assert ckpt.incompatible_keys == ([], [], [])
    assert_bitwise_equal(model.state_dict(), reference_state(folder))


def test_seed_snippets(tmp_path, monkeypatch):
    folder = "mask_rcnn_R_50_FPN"
    model = fixture_model(folder)
    file_path = str(FIXTURES / folder / "model_final.pkl")
    monkeypatch.chdir(tmp_path)

    DetectionCheckpointer(model).load(file_path)  # load a file, usually from cfg.MODEL.WEIGHTS

    checkpointer = DetectionCheckpointer(model, save_dir="output")
    checkpointer.save("model_999")  # save to output/model_999.pth

    assert (tmp_path / "output" / "model_999.pth").is_file()
    assert (tmp_path / "output" / "last_checkpoint").read_text() == "model_999.pth"
    saved = torch.load(tmp_path / "output" / "model_999.pth", weights_only=True)
    assert_bitwise_equal(saved["model"], reference_state(folder))


def test_finetuning_with_another_class_count(caplog):
    folder = "mask_rcnn_R_50_FPN"
    model = build_model(fixture_cfg(folder, **{"MODEL.ROI_HEADS.NUM_CLASSES": 3}))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = DetectionCheckpointer(model)
    with caplog.at_level(logging.WARNING, logger="workbench.checkpoint"):
        ckpt.load(str(FIXTURES / folder / "model_final.pth"))
    skipped = {
        "roi_heads.box_predictor.cls_score.weight": ((9, 128), (4, 128)),
        "roi_heads.box_predictor.cls_score.bias": ((9,), (4,)),
        "roi_heads.box_predictor.bbox_pred.weight": ((32, 128), (12, 128)),
        "roi_heads.box_predictor.bbox_pred.bias": ((32,), (12,)),
        "roi_heads.mask_head.predictor.weight": ((8, 64, 1, 1), (3, 64, 1, 1)),
        "roi_heads.mask_head.predictor.bias": ((8,), (3,)),
    }
    assert {k: (a, b) for k, a, b in ckpt.incompatible_keys.incorrect_shapes} == skipped
    # As in fvcore, what was skipped for its shape is also missing, and nothing else is.
    assert sorted(ckpt.incompatible_keys.missing_keys) == sorted(skipped)
    for key in skipped:
        assert key in caplog.text  # the warning names it
        assert torch.equal(model.state_dict()[key], init[key])  # left as initialised
    reference = reference_state(folder)
    for k, v in model.state_dict().items():
        if k not in skipped:
            assert v.numpy().tobytes() == reference[k].tobytes(), k


def test_finetuning_through_matching_heuristics(caplog):
    folder = "mask_rcnn_R_50_FPN"
    model = build_model(fixture_cfg(folder, **{"MODEL.ROI_HEADS.NUM_CLASSES": 3}))
    ckpt = DetectionCheckpointer(model)
    with caplog.at_level(logging.WARNING, logger="workbench.checkpoint"):
        ckpt.load(str(FIXTURES / folder / "model_final.pkl") + "?matching_heuristics=True")
    assert "roi_heads.box_predictor.cls_score.weight" in caplog.text
    shapes = {k for k, _, _ in ckpt.incompatible_keys.incorrect_shapes}
    assert "roi_heads.box_predictor.cls_score.weight" in shapes
    assert sorted(ckpt.incompatible_keys.missing_keys) == sorted(shapes)
    assert len(shapes) == 6 and ckpt.incompatible_keys.unexpected_keys == []


class TinyDetector(nn.Module):
    """A model with persistent pixel_mean / pixel_std buffers, like old detectron2 models."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))
        self.register_buffer("pixel_std", torch.ones(3, 1, 1))
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1))
        self.head = nn.Linear(4, 2)


def state_arrays(model, skip=()):
    return {k: v.numpy().copy() for k, v in model.state_dict().items() if k not in skip}


def test_pixel_stats_and_stale_cell_anchors_are_not_reported(tmp_path, caplog):
    source = TinyDetector()
    state = state_arrays(source, skip=("pixel_mean", "pixel_std"))
    state["proposal_generator.anchor_generator.cell_anchors.0"] = np.zeros((3, 4), np.float32)
    state["extra.weight"] = np.zeros(2, np.float32)
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "old"}))
    ckpt = DetectionCheckpointer(TinyDetector())
    with caplog.at_level(logging.INFO, logger="workbench.checkpoint"):
        ckpt.load(str(path))
    assert ckpt.incompatible_keys.missing_keys == []
    assert ckpt.incompatible_keys.unexpected_keys == ["extra.weight"]
    assert "not used by the model" in caplog.text
    assert re.search(r"\|\s*extra\s*\|\s*weight\s*\|", caplog.text)  # a row of the table


def test_missing_keys_are_reported_readably(tmp_path, caplog):
    state = state_arrays(TinyDetector(), skip=("head.weight", "head.bias"))
    path = tmp_path / "partial.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "x"}))
    ckpt = DetectionCheckpointer(TinyDetector())
    with caplog.at_level(logging.INFO, logger="workbench.checkpoint"):
        ckpt.load(str(path))
    assert sorted(ckpt.incompatible_keys.missing_keys) == ["head.bias", "head.weight"]
    assert "not found in the checkpoint" in caplog.text
    row = [ln for ln in caplog.text.splitlines() if ln.startswith("| head ")]
    assert len(row) == 1 and ("{weight, bias}" in row[0] or "{bias, weight}" in row[0]), caplog.text


def test_data_parallel_prefix_is_stripped(tmp_path):
    source = TinyDetector()
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, tmp_path / "dp.pth")
    model = TinyDetector()
    with torch.no_grad():
        model.head.weight.fill_(7)
    ckpt = DetectionCheckpointer(model)
    ckpt.load(str(tmp_path / "dp.pth"))
    assert ckpt.incompatible_keys == ([], [], [])
    assert torch.equal(model.head.weight, source.head.weight)


def test_bare_state_dict_pth(tmp_path):
    source = TinyDetector()
    torch.save(source.state_dict(), tmp_path / "bare.pt")
    model = TinyDetector()
    assert DetectionCheckpointer(model).load(str(tmp_path / "bare.pt")) == {}
    assert torch.equal(model.head.bias, source.head.bias)


def test_bad_queries_and_paths(tmp_path):
    torch.save(TinyDetector().state_dict(), tmp_path / "w.pth")
    ckpt = DetectionCheckpointer(TinyDetector())
    with pytest.raises(ValueError, match="Unsupported query"):
        ckpt.load(str(tmp_path / "w.pth") + "?foo=1")
    with pytest.raises(ValueError, match="True or False"):
        ckpt.load(str(tmp_path / "w.pth") + "?matching_heuristics=yes")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ckpt.load(str(tmp_path / "nope.pth"))
    assert ckpt.load("") == {}


def test_resume_or_load_restores_checkpointables(tmp_path):
    model = TinyDetector()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model.head(model.backbone(torch.ones(1, 3, 2, 2)).mean((2, 3))).sum()
    loss.backward()
    opt.step()
    ckpt = DetectionCheckpointer(model, save_dir=str(tmp_path), optimizer=opt)
    assert not ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == ""
    ckpt.save("model_0000004", iteration=4)
    ckpt.save("model_0000009", iteration=9)
    assert ckpt.has_checkpoint()
    assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000009.pth")
    assert ckpt.get_all_checkpoint_files() == [str(tmp_path / "model_0000004.pth"),
                                               str(tmp_path / "model_0000009.pth")]

    other = TinyDetector()
    torch.save(TinyDetector().state_dict(), tmp_path / "init.pth.bak")
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    resumed = DetectionCheckpointer(other, save_dir=str(tmp_path), optimizer=opt2)
    extra = resumed.resume_or_load(str(tmp_path / "init.pth.bak"), resume=True)
    assert extra == {"iteration": 9}
    assert torch.equal(other.head.weight, model.head.weight)
    assert opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()

    fresh = TinyDetector()
    opt3 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    not_resumed = DetectionCheckpointer(fresh, save_dir=str(tmp_path), optimizer=opt3)
    extra = not_resumed.resume_or_load(str(tmp_path / "model_0000004.pth"), resume=False)
    assert set(extra) == {"iteration", "optimizer"}  # the optimizer state is returned, not restored
    assert opt3.state_dict()["state"] == {}


def test_save_is_atomic(tmp_path, monkeypatch):
    model = TinyDetector()
    ckpt = DetectionCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model")
    before = (tmp_path / "model.pth").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("model", iteration=1)
    assert (tmp_path / "model.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model.pth"]  # no temp files


def test_saving_can_be_disabled(tmp_path):
    DetectionCheckpointer(TinyDetector(), save_dir=str(tmp_path), save_to_disk=False).save("m")
    DetectionCheckpointer(TinyDetector(), save_dir="").save("m")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="plain file name"):
        DetectionCheckpointer(TinyDetector(), save_dir=str(tmp_path)).save("sub/m")


def test_periodic_checkpointer(tmp_path):
    ckpt = DetectionCheckpointer(TinyDetector(), save_dir=str(tmp_path))
    periodic = PeriodicCheckpointer(ckpt, period=2, max_iter=7, max_to_keep=2)
    for it in range(7):
        periodic.step(it, lr=0.5)
    files = sorted(os.listdir(tmp_path))
    # Saved after 1, 3, 5 (the oldest deleted: max_to_keep=2) and model_final at 6.
    assert files == ["last_checkpoint", "model_0000003.pth", "model_0000005.pth", "model_final.pth"]
    extra = DetectionCheckpointer(TinyDetector()).load(str(tmp_path / "model_final.pth"))
    assert extra == {"iteration": 6, "lr": 0.5}
    periodic.save("manual", note="x")
    assert (tmp_path / "manual.pth").is_file()
    with pytest.raises(ValueError):
        PeriodicCheckpointer(ckpt, period=0)

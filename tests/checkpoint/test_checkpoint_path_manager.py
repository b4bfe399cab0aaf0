"""Checkpointers resolve registered path prefixes through their ``path_manager``."""

import pytest
import torch
from torch import nn

from workbench.checkpoint import DetectionCheckpointer
from workbench.utils.file_io import PathHandler, PathManager, PathManagerBase


class FakeHandler(PathHandler):
    PREFIX = "fake://"

    def __init__(self, root):
        self.root = root

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path, force=False, **kwargs):
        return str(self.root / path[len(self.PREFIX):])


def _saved_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    torch.save({"model": model.state_dict(), "iteration": 7}, tmp_path / "w.pth")
    return model


def test_default_path_manager_is_the_global_one():
    assert DetectionCheckpointer(nn.Linear(1, 1)).path_manager is PathManager


def test_load_through_a_registered_prefix(tmp_path):
    source = _saved_model(tmp_path)
    pm = PathManagerBase()
    pm.register_handler(FakeHandler(tmp_path))
    target = nn.Linear(3, 2)
    ckpt = DetectionCheckpointer(target)
    ckpt.path_manager = pm
    extra = ckpt.load("fake://w.pth")
    assert extra == {"iteration": 7}
    assert torch.equal(target.weight, source.weight)


def test_unregistered_prefix_is_still_refused(tmp_path):
    ckpt = DetectionCheckpointer(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="fake://"):
        ckpt.load("fake://w.pth")


def test_registered_prefix_resolving_to_nothing_names_both_paths(tmp_path):
    pm = PathManagerBase()
    pm.register_handler(FakeHandler(tmp_path))
    ckpt = DetectionCheckpointer(nn.Linear(3, 2))
    ckpt.path_manager = pm
    with pytest.raises(FileNotFoundError) as err:
        ckpt.load("fake://missing.pth")
    assert "fake://missing.pth" in str(err.value) and "FakeHandler" in str(err.value)

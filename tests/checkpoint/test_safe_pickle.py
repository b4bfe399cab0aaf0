"""Loading a checkpoint never runs code from the file.

Every malicious file below is checked twice: the checkpointer refuses it and the marker file
its payload would create stays absent; then plain ``pickle.load`` / ``torch.load(weights_only=
False)`` on the same file does create the marker, proving the file was really malicious.
"""

import collections
import io
import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workbench.checkpoint import CheckpointLoadError, DetectionCheckpointer, UnsafePickleError
from workbench.checkpoint.safe_pickle import RestrictedUnpickler, safe_load_pickle
from fixture_paths import FIXTURES



class RunCommand:
    """Unpickling this calls os.system(cmd)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def touch_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 2))


def params_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def malicious_layouts(payload):
    """Checkpoint layouts with the payload nested where weights go."""
    good = np.zeros((2, 2), np.float32)
    return {
        "d2_model": {"model": {"0.weight": good, "0.bias": payload}, "__author__": "x"},
        "c2_blobs": {"blobs": {"0_w": good, "0_b": payload}},
        "top_level": payload,
    }


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("layout", ["d2_model", "c2_blobs", "top_level"])
def test_malicious_pkl_is_refused_and_nothing_runs(tmp_path, protocol, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pkl"
    obj = malicious_layouts(RunCommand(touch_command(marker)))[layout]
    path.write_bytes(pickle.dumps(obj, protocol=protocol))

    model = tiny_model()
    before = params_of(model)
    with pytest.raises(UnsafePickleError) as err:
        DetectionCheckpointer(model).load(str(path))
    msg = str(err.value)
    assert f"{os.system.__module__}.system" in msg  # names module.name ("posix.system")
    assert str(path) in msg
    assert not marker.exists(), "the payload ran"
    assert_unchanged(model, before)

    # The same file under plain pickle.load does run the payload.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on legacy files
@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("container", ["zip", "legacy", "raw_pickle"])
def test_malicious_pth_is_refused_and_nothing_runs(tmp_path, protocol, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pth"
    # The payload comes first so that the proof below reaches it: torch cannot read back the
    # tensors of a protocol 0 / 1 file it wrote itself.
    obj = {"model": {"0.bias": RunCommand(touch_command(marker)), "0.weight": torch.zeros(2, 2)},
           "iteration": 3}
    if container == "raw_pickle":
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    else:
        torch.save(obj, path, pickle_protocol=protocol,
                   _use_new_zipfile_serialization=(container == "zip"))

    model = tiny_model()
    before = params_of(model)
    with pytest.raises(UnsafePickleError) as err:
        DetectionCheckpointer(model).load(str(path))
    msg = str(err.value)
    assert "system" in msg and str(path) in msg
    assert not marker.exists(), "the payload ran"
    assert_unchanged(model, before)

    try:
        if container == "raw_pickle":
            with open(path, "rb") as f:
                pickle.load(f)
        else:
            torch.load(path, weights_only=False)
    except Exception:
        assert protocol < 2 and container != "raw_pickle"  # see above
    assert marker.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "getattr"),
    ("__builtin__", "eval"),  # Python 2 spelling
    ("subprocess", "Popen"),
    ("numpy", "load"),
    ("numpy.testing._private.utils", "runstring"),
    ("torch", "load"),
])
def test_find_class_refuses_everything_else(module, name):
    data = f"c{module}\n{name}\n.".encode()  # protocol 0: GLOBAL module name, STOP
    with pytest.raises(UnsafePickleError, match=rf"{name}"):
        safe_load_pickle(io.BytesIO(data), filename="crafted.pkl")


def test_persistent_ids_are_refused():
    data = b"\x80\x02Pabc\n."  # PERSID "abc"
    with pytest.raises(UnsafePickleError, match="persistent"):
        safe_load_pickle(io.BytesIO(data), filename="crafted.pkl")


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_weight_contents_load_under_every_protocol(protocol):
    rng = np.random.default_rng(0)
    obj = {
        "model": collections.OrderedDict(
            f32=rng.random((3, 4)).astype(np.float32),
            f64=rng.random(5),
            i64=np.arange(6).reshape(2, 3),
            big_endian=np.arange(4, dtype=">f4"),
            transposed=np.arange(6.0).reshape(2, 3).T,
            empty=np.zeros((0, 3), np.float32),
        ),
        "__author__": "someone",
        "iteration": np.int64(7),
        "lr": np.float32(0.5),
        "tags": {"a", "b"},
        "raw": b"\x00\xff",
    }
    data = pickle.dumps(obj, protocol=protocol)
    loaded = safe_load_pickle(io.BytesIO(data))
    plain = pickle.loads(data)  # our own data: safe to unpickle
    assert loaded.keys() == obj.keys()
    for k, v in obj["model"].items():
        # Same values; same dtype as plain pickle gives (numpy itself turns '>f4' into native
        # float32 under protocols 0 - 2).
        assert np.array_equal(loaded["model"][k], v), k
        assert loaded["model"][k].dtype == plain["model"][k].dtype, k
    assert type(loaded["model"]) is collections.OrderedDict
    assert loaded["iteration"] == 7 and loaded["lr"] == np.float32(0.5)
    assert loaded["tags"] == {"a", "b"} and loaded["raw"] == b"\x00\xff"


class _Py2Pickler(pickle._Pickler):
    """Writes protocol-2 pickles the way Python 2 did: ``str`` and ``bytes`` as Python 2 byte
    strings (SHORT_BINSTRING), which Python 3 reads back with ``encoding="latin1"``."""

    def save_bytes(self, obj):
        self._py2_string(obj)

    def save_str(self, obj):
        self._py2_string(obj.encode("latin1"))

    def _py2_string(self, data):
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(data)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Python 2's numpy lived in numpy.core.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_python2_detectron1_pickle_loads(tmp_path):
    """A Detectron1-style file ({"blobs": ..., "cfg": ...}) written the way Python 2 did."""
    from workbench.layers import Conv2d, FrozenBatchNorm2d

    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = Conv2d(3, 4, 3, bias=False, norm=FrozenBatchNorm2d(4))

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Stem()

    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.bottom_up = Body()
    rng = np.random.default_rng(3)
    blobs = {
        "conv1_w": rng.random((4, 3, 3, 3)).astype(np.float32),
        "conv1_w_momentum": rng.random((4, 3, 3, 3)).astype(np.float32),  # dropped
        "res_conv1_bn_s": rng.random(4).astype(np.float32),
        "res_conv1_bn_b": rng.random(4).astype(np.float32),
        "res_conv1_bn_rm": rng.random(4).astype(np.float32),
        "res_conv1_bn_riv": rng.random(4).astype(np.float32),
    }
    data = py2_pickle({"blobs": blobs, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"})
    assert b"numpy.core.multiarray" in data and b"_codecs" not in data
    path = tmp_path / "R-50-detectron1.pkl"
    path.write_bytes(data)

    ckpt = DetectionCheckpointer(model)
    extra = ckpt.load(str(path))
    assert extra == {"__author__": "Caffe2", "matching_heuristics": True}
    assert ckpt.incompatible_keys.missing_keys == []
    assert ckpt.incompatible_keys.unexpected_keys == []
    sd = model.state_dict()
    stem = "backbone.bottom_up.stem.conv1."
    assert np.array_equal(sd[stem + "weight"].numpy(), blobs["conv1_w"])
    assert np.array_equal(sd[stem + "norm.weight"].numpy(), blobs["res_conv1_bn_s"])
    assert np.array_equal(sd[stem + "norm.bias"].numpy(), blobs["res_conv1_bn_b"])
    assert np.array_equal(sd[stem + "norm.running_mean"].numpy(), blobs["res_conv1_bn_rm"])
    assert np.array_equal(sd[stem + "norm.running_var"].numpy(), blobs["res_conv1_bn_riv"])


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_give_an_error_naming_the_file(tmp_path, suffix, damage):

    source = FIXTURES / "mask_rcnn_R_50_FPN" / f"model_final{suffix}"
    data = source.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    else:
        data = b""
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(data)
    with pytest.raises(CheckpointLoadError) as err:
        DetectionCheckpointer(tiny_model()).load(str(path))
    assert str(path) in str(err.value)
    assert not isinstance(err.value, UnsafePickleError)


def test_restricted_unpickler_reads_the_fixture_weights():
    path = FIXTURES / "mask_rcnn_R_50_FPN" / "model_final.pkl"
    with open(path, "rb") as f:
        reference = pickle.load(f)
    with open(path, "rb") as f:
        loaded = RestrictedUnpickler(f, filename=str(path)).load()
    assert loaded.keys() == reference.keys()
    for k, v in reference["model"].items():
        assert loaded["model"][k].tobytes() == v.tobytes()

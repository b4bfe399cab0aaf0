"""A matrix of checkpoint files that would run code when loaded: every pickle protocol, the
.pkl / .pth / .pt names, raw pickles and torch's zip and legacy formats, and payloads reached
through INST, GLOBAL, STACK_GLOBAL, REDUCE and BUILD. Every loader refuses each with an error
that names the file, and the marker file that the payload would create never appears.

For raw pickles the same bytes under plain ``pickle.loads`` do create the marker, so each
payload is proven to be live.
"""

import io
import os
import pickle
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.checkpoint import (
    CheckpointLoadError,
    Checkpointer,
    DetectionCheckpointer,
    UnsafePickleError,
    safe_load_pickle,
)
from workbench.checkpoint.safe_pickle import find_pickle_globals

PROTOCOLS = range(0, pickle.HIGHEST_PROTOCOL + 1)
CONTAINERS = ["raw", "torch_zip", "torch_legacy"]
SUFFIXES = [".pkl", ".pth", ".pt"]


class Reduce:
    """Unpickling calls ``func(*args)`` (REDUCE, after GLOBAL or STACK_GLOBAL)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class SetState:
    """Unpickling imports this class and calls its ``__setstate__`` (BUILD)."""

    def __init__(self, marker):
        self.marker = marker

    def __getstate__(self):
        return {"marker": self.marker}

    def __setstate__(self, state):
        Path(state["marker"]).touch()


def inst_pickle(protocol: int, marker: Path) -> bytes:
    """``INST os system`` with the shell command as its argument, hand-written."""
    cmd = f"touch {shlex.quote(str(marker))}".encode()
    head = bytes([0x80, protocol]) if protocol >= 2 else b""
    arg = b"S'" + cmd + b"'\n" if protocol == 0 else b"X" + len(cmd).to_bytes(4, "little") + cmd
    return head + b"(" + arg + b"ios\nsystem\n."


PAYLOADS = {
    "os.system": lambda m: Reduce(os.system, f"touch {shlex.quote(str(m))}"),
    "builtins.exec": lambda m: Reduce(exec, f"open({str(m)!r}, 'w').close()"),
    "subprocess.call": lambda m: Reduce(subprocess.call, ["touch", str(m)]),
    "__setstate__": lambda m: SetState(str(m)),
    "INST": None,  # hand-written
}


def payload_pickle(name: str, protocol: int, marker: Path) -> bytes:
    if name == "INST":
        return inst_pickle(protocol, marker)
    # The payload sits where a weight would be.
    return pickle.dumps({"model": {"0.weight": PAYLOADS[name](marker)}}, protocol=protocol)


def torch_zip(data_pkl: bytes) -> bytes:
    """A torch zip checkpoint whose ``data.pkl`` is ``data_pkl``."""
    buf = io.BytesIO()
    torch.save({}, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            is_data = info.filename.endswith("/data.pkl")
            dst.writestr(info, data_pkl if is_data else src.read(info))
    return out.getvalue()


def torch_legacy(protocol: int, data_pkl: bytes) -> bytes:
    """torch's legacy format: magic number, version and system info pickles, then the object."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": sys.byteorder == "little",
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = b"".join(pickle.dumps(x, protocol=protocol) for x in (MAGIC_NUMBER, PROTOCOL_VERSION, sys_info))
    return head + data_pkl + pickle.dumps([], protocol=protocol)  # no storages


def build_file(container: str, name: str, protocol: int, marker: Path) -> bytes:
    data = payload_pickle(name, protocol, marker)
    if container == "raw":
        return data
    if container == "torch_zip":
        return torch_zip(data)
    return torch_legacy(protocol, data)


def loaders():
    model = nn.Linear(2, 2)
    return {
        "DetectionCheckpointer": lambda p: DetectionCheckpointer(model).load(str(p)),
        "Checkpointer": lambda p: Checkpointer(model).load(str(p)),
        "safe_load_pickle": lambda p: safe_load_pickle(str(p)),
    }, model


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on legacy files
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, payload, container, protocol):
    marker = tmp_path / "pwned"
    data = build_file(container, payload, protocol, marker)
    assert find_pickle_globals(data if container != "torch_zip" else payload_pickle(payload, protocol, marker))
    load_with, model = loaders()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for suffix in SUFFIXES:
        path = tmp_path / f"model_final{suffix}"
        path.write_bytes(data)
        for loader, load in load_with.items():
            with pytest.raises((UnsafePickleError, CheckpointLoadError, pickle.UnpicklingError)) as err:
                load(path)
            msg = str(err.value)
            assert str(path) in msg, (loader, suffix, msg)
            read_as_pickle = loader == "safe_load_pickle" or (loader == "DetectionCheckpointer"
                                                              and suffix == ".pkl")
            if container == "raw" or not read_as_pickle:
                # Read as a pickle (any name) or by torch: refused as unsafe, naming the import.
                assert isinstance(err.value, UnsafePickleError), (loader, suffix, msg)
                assert re.search(r"(import|imports|GLOBAL) [\w.]+", msg), msg  # names it
            else:
                # A torch file read as a pickle: told what it is.
                assert "Rename it to .pth" in msg, (loader, suffix, msg)
            assert not marker.exists(), f"the payload ran ({loader}, {suffix})"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    if container == "raw":  # proof: the same bytes under plain pickle run the payload
        try:
            pickle.loads(data)
        finally:
            assert marker.exists(), "the payload is not live"

"""Valid checkpoints that the restricted readers once refused: an OrderedDict state dict with
its ``_metadata`` in a ``.pkl``, and sets (``set(list)`` in pickle protocols 0 - 2) in
``.pth`` and ``.pkl`` files. A legacy ``.pth`` is scanned from the file, not from a copy."""

import builtins
import collections
import io
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from workbench.checkpoint import DetectionCheckpointer, UnsafePickleError
from workbench.checkpoint import safe_load as safe_load_module
from workbench.checkpoint.safe_pickle import safe_load_pickle


def numpy_state_dict_with_metadata():
    od = torchvision.models.resnet18().state_dict()
    assert hasattr(od, "_metadata")
    for k in od:
        od[k] = od[k].numpy()
    return od


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_ordered_dict_with_metadata_loads(tmp_path, protocol):
    od = numpy_state_dict_with_metadata()
    path = tmp_path / "od_meta.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": od, "__author__": "torchvision"}, f, protocol=protocol)

    data = safe_load_pickle(str(path))
    model = data["model"]
    assert type(model) is collections.OrderedDict and list(model) == list(od)
    assert model._metadata == od._metadata
    assert all(np.array_equal(model[k], od[k]) for k in od)

    m = torchvision.models.resnet18()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    DetectionCheckpointer(m).load(str(path))
    sd = m.state_dict()
    assert all(np.array_equal(sd[k].numpy(), od[k]) for k in od)


def set_checkpoint():
    return {"model": {"w": torch.zeros(10)}, "ids": set(range(100000))}


@pytest.mark.parametrize("legacy", [False, True])
def test_pth_holding_a_set_loads(tmp_path, legacy):
    path = tmp_path / "set.pth"
    torch.save(set_checkpoint(), path, _use_new_zipfile_serialization=not legacy)
    model = nn.Module()
    model.w = nn.Parameter(torch.ones(10))
    extra = DetectionCheckpointer(model).load(str(path))
    assert extra["ids"] == set(range(100000))
    assert torch.all(model.w == 0)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4])
def test_pkl_holding_a_set_loads(tmp_path, protocol):
    path = tmp_path / "set.pkl"
    ck = {"model": {"w": np.zeros(10, np.float32)}, "__author__": "x", "ids": set(range(100000)),
          "frozen": frozenset(range(1000))}
    with open(path, "wb") as f:
        pickle.dump(ck, f, protocol=protocol)
    if protocol <= 2:
        assert b"set" in path.read_bytes()  # spelled set([...]): the case at hand
    data = safe_load_pickle(str(path))
    assert data["ids"] == ck["ids"] and data["frozen"] == ck["frozen"]
    model = nn.Module()
    model.w = nn.Parameter(torch.ones(10))
    extra = DetectionCheckpointer(model).load(str(path))
    assert extra["ids"] == ck["ids"] and torch.all(model.w == 0)


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def repeated_set_copies(n_items: int, copies: int) -> bytes:
    """set(L) ``copies`` times over one memoized list L of ``n_items`` distinct ints."""
    body = b"(" + b"".join(b"J" + struct.pack("<i", i) for i in range(n_items)) + b"lq\x00"
    body += glob("builtins", "set") + b"q\x01"
    body += b"(" + b"h\x01h\x00\x85R" * copies + b"l."
    return b"\x80\x02" + body


def test_copying_one_list_into_many_sets_is_bounded():
    # One 5-byte item each in the file; 200 sets of 20000 items take ~200 MiB.
    data = repeated_set_copies(20000, 200)
    with pytest.raises(UnsafePickleError, match=r"'crafted.pkl'.*more than a"):
        safe_load_pickle(io.BytesIO(data), filename="crafted.pkl")
    # One copy is what protocol 2 writes for a set: it loads.
    assert safe_load_pickle(io.BytesIO(repeated_set_copies(20000, 1))) == [set(range(20000))]


def test_copies_of_copies_are_bounded():
    # frozenset(frozenset(...(L))), 200 deep: each a new object, but a copy of a copy, and
    # each kept alive by the memo (MEMOIZE).
    items = b"(" + b"".join(b"J" + struct.pack("<i", i) for i in range(20000)) + b"l"
    data = (b"\x80\x04" + glob("builtins", "frozenset") + b"\x94" + b"h\x00" * 199 + items
            + b"\x85R\x94" * 200 + b".")
    with pytest.raises(UnsafePickleError, match=r"'crafted.pkl'.*more than a"):
        safe_load_pickle(io.BytesIO(data), filename="crafted.pkl")


def test_budget_refusal_of_a_pth_is_the_public_error(tmp_path):
    # A torch checkpoint (zip) whose data.pkl asks for 1 GiB through bytearray(n).
    path = tmp_path / "greedy.pth"
    torch.save({"model": {}}, path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    entries[pkl] = (b"\x80\x02" + glob("builtins", "bytearray") + b"J" + struct.pack("<i", 1 << 30)
                    + b"\x85R.")
    with zipfile.ZipFile(path, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)
    with pytest.raises(UnsafePickleError) as err:
        DetectionCheckpointer(nn.Linear(2, 2)).load(str(path))
    assert type(err.value) is UnsafePickleError, type(err.value)
    assert str(path) in str(err.value) and "bytearray of 1,073,741,824 bytes" in str(err.value)


def test_legacy_pth_is_scanned_from_the_file(tmp_path, monkeypatch):
    path = tmp_path / "legacy.pth"
    weights = {"w": torch.zeros(2**22)}  # 16 MiB of storage after the pickles
    torch.save(weights, path, _use_new_zipfile_serialization=False)
    size = os.path.getsize(path)
    reads = []
    real_open = builtins.open

    class Counting:
        def __init__(self, f):
            self._f = f

        def read(self, n=-1):
            data = self._f.read(n)
            reads.append(len(data))
            return data

        def readline(self, n=-1):
            data = self._f.readline(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def spy(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Counting(f) if os.fspath(file) == str(path) and "b" in mode else f

    monkeypatch.setattr(builtins, "open", spy)
    safe_load_module._check_torch_budget(str(path))
    monkeypatch.undo()
    assert reads and sum(reads) < size // 16, (sum(reads), size)  # the pickles, not the data

    tracemalloc.start()
    try:
        safe_load_module._check_torch_budget(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size // 4, peak
    model = nn.Module()
    model.w = nn.Parameter(torch.ones(2**22))
    DetectionCheckpointer(model).load(str(path))
    assert torch.all(model.w == 0)

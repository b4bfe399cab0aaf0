"""The restricted unpickler allocates no more than the file can hold, and names the file when it
refuses; weight pickles of every protocol still load; torch files named .pkl get a hint."""

import collections
import io
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from workbench.checkpoint import CheckpointLoadError, DetectionCheckpointer, UnsafePickleError
from workbench.checkpoint.safe_pickle import safe_load_pickle

GiB = 1 << 30


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def binint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def binbytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def dtype_of(code: str) -> bytes:  # numpy.dtype(code, False, True), as numpy pickles it
    return glob("numpy", "dtype") + b"X" + struct.pack("<I", len(code)) + code.encode() + b"\x89\x88\x87R"


NDARRAY = glob("numpy.core.multiarray", "_reconstruct") + glob("numpy", "ndarray")

# name -> a small pickle that asks for about 1 GiB (or more) of memory.
GREEDY = {
    "bytearray(2**30)": b"\x80\x02" + glob("builtins", "bytearray") + binint(GiB) + b"\x85R.",
    "bytes(2**30)": b"\x80\x02" + glob("__builtin__", "bytes") + binint(GiB) + b"\x85R.",
    "BYTEARRAY8 of 2**30": b"\x80\x05\x96" + struct.pack("<Q", GiB) + b"x.",
    "BYTEARRAY8 of 2**62": b"\x80\x05\x96" + struct.pack("<Q", 1 << 62) + b"x.",
    "_reconstruct shape": b"\x80\x03" + NDARRAY + binint(GiB) + b"\x85C\x01b\x87R.",
    "array __setstate__": (b"\x80\x03" + NDARRAY + b"K\x00\x85C\x01b\x87R"
                            + b"(K\x01" + binint(GiB) + b"\x85" + dtype_of("u1") + b"\x89C\x00tb."),
    "subarray dtype": b"\x80\x03" + NDARRAY + b"K\x01\x85" + dtype_of("(1073741824,)u1") + b"\x87R.",
    "scalar of a huge dtype": (b"\x80\x03" + glob("numpy.core.multiarray", "scalar")
                               + dtype_of("V1073741824") + b"\x85R."),
}


@pytest.mark.parametrize("case", sorted(GREEDY))
def test_greedy_pickles_are_refused_before_allocating(tmp_path, case):
    path = tmp_path / "model_final.pkl"
    path.write_bytes(GREEDY[case])
    assert path.stat().st_size <= 100
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError) as err:
            DetectionCheckpointer(nn.Linear(2, 2)).load(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert str(path) in msg and "more than a" in msg and "-byte file can hold" in msg, msg
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


def test_the_33_byte_file_of_the_issue(tmp_path):
    data = b"\x80\x02" + glob("builtins", "bytearray") + binint(GiB) + b"\x85R."
    path = tmp_path / "x.pkl"
    path.write_bytes(data[:-1] + b".")
    with pytest.raises(UnsafePickleError, match=r"asks for a bytearray of 1,073,741,824 bytes, "
                                                r"more than a \d+-byte file can hold"):
        safe_load_pickle(str(path))


def test_repeating_a_small_allocation_is_bounded_too():
    # One 64 KiB bytes object, copied 200 times by memo references: 12.8 MB from 66 kB.
    body = binbytes(b"\1" * 65536) + b"q\x00" + glob("builtins", "bytearray") + b"q\x01"
    body += b"]q\x02(" + b"h\x01h\x00\x85R" * 200 + b"e."
    with pytest.raises(UnsafePickleError, match="crafted.pkl"):
        safe_load_pickle(io.BytesIO(b"\x80\x03" + body), filename="crafted.pkl")


@pytest.mark.parametrize("payload, refused", [
    # _codecs.encode(b, "hex") doubles its input: 16 in a row make 64 bytes 4 MiB.
    (b"\x80\x03" + binbytes(b"x" * 64)
     + b"".join([b"q\x00" + glob("_codecs", "encode") + b"h\x00X\x03\x00\x00\x00hex\x86R"] * 16)
     + b".", "_codecs.encode"),
    # An OrderedDict's attributes come from a dict of names (no slot state), once, and
    # never replace its methods; other objects' state is never set.
    (b"\x80\x02" + glob("collections", "OrderedDict") + b")R}K\x01K\x01sb.", "BUILD"),
    (b"\x80\x02" + glob("collections", "OrderedDict") + b")RN}X\x01\x00\x00\x00xK\x01s\x86b.",
     "BUILD"),
    (b"\x80\x02" + glob("collections", "OrderedDict") + b")R]b.", "BUILD"),
    (b"\x80\x02" + glob("collections", "OrderedDict") + b")R}X\x04\x00\x00\x00keysK\x01sb.",
     "BUILD"),
    (b"\x80\x02" + glob("collections", "OrderedDict") + b")R}X\x09\x00\x00\x00__class__K\x01sb.",
     "BUILD"),
    (b"\x80\x02" + glob("collections", "OrderedDict")
     + b")R}X\x01\x00\x00\x00xK\x01sb}X\x01\x00\x00\x00yK\x01sb.", "BUILD"),
    (b"\x80\x02}}X\x01\x00\x00\x00xK\x01sb.", "BUILD"),
    (b"\x80\x02" + glob("builtins", "set") + b"]\x85R}X\x01\x00\x00\x00xK\x01sb.", "BUILD"),
    (b"\x80\x02" + glob("builtins", "bytearray") + b"C\x02ab\x85RK\x00K\x01s.", "SETITEM"),
    (b"\x80\x02" + glob("builtins", "complex") + b")\x81.", "NEWOBJ"),
    (b"\x80\x02" + glob("numpy", "ndarray") + binint(GiB) + b"\x85R.", "numpy.ndarray"),
])
def test_what_weight_pickles_never_do_is_refused(payload, refused):
    with pytest.raises(UnsafePickleError, match=refused) as err:
        safe_load_pickle(io.BytesIO(payload), filename="crafted.pkl")
    assert "crafted.pkl" in str(err.value)


@pytest.mark.parametrize("dtype", ["O", "u1,O"])
def test_object_arrays_are_refused(dtype):
    # numpy trusts the pickled list of an object array: one shorter than the shape crashes
    # the process (segmentation fault) under plain pickle.
    payload = (b"\x80\x03" + NDARRAY + b"K\x00\x85C\x01b\x87R"
               + b"(K\x01K\x0a\x85" + dtype_of(dtype) + b"\x89]tb.")
    with pytest.raises(UnsafePickleError, match=r"'crafted.pkl'.*holds Python objects"):
        safe_load_pickle(io.BytesIO(payload), filename="crafted.pkl")


def test_out_of_band_buffers_are_named():
    data = pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=lambda b: False)
    with pytest.raises(pickle.UnpicklingError, match=r"'oob.pkl'.*out-of-band buffer"):
        safe_load_pickle(io.BytesIO(data), filename="oob.pkl")


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_weight_like_contents_still_load(protocol):
    rng = np.random.default_rng(0)
    big = rng.random(2**18)  # 2 MiB: close to what a file may hold, under protocols 0 - 2
    obj = {
        "model": collections.OrderedDict(
            big=big,
            fortran=np.asfortranarray(rng.random((3, 4)).astype(np.float32)),
            zero_d=np.array(3.5),
            structured=np.zeros(3, dtype=[("x", "<f4"), ("y", ">i8", (2,))]),
            subarray_dtype=np.zeros(2, dtype=("<f4", (3,))),
        ),
        "b": b"\x00\xff" * 10, "ba": bytearray(b"xy"), "c": 1 + 2j,
        "scalars": [np.float16(1.5), np.int8(-3), np.complex64(1j), np.bool_(True)],
        "sets": ({1, 2}, frozenset("ab")), "nested": [[{"k": (1, 2.5, None, "s")}]],
    }
    data = pickle.dumps(obj, protocol=protocol)
    loaded = safe_load_pickle(io.BytesIO(data))
    plain = pickle.loads(data)  # our own data: safe to unpickle
    for k, v in plain["model"].items():
        assert loaded["model"][k].dtype == v.dtype and loaded["model"][k].tobytes() == v.tobytes(), k
    assert loaded["model"]["big"].shape == big.shape
    for k in ("b", "ba", "c", "scalars", "sets", "nested"):
        assert loaded[k] == plain[k] and type(loaded[k]) is type(plain[k]), k


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_torch_file_named_pkl_is_told_to_be_renamed(tmp_path, zipped):
    path = tmp_path / "model_final.pkl"
    torch.save({"model": nn.Linear(2, 2).state_dict()}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointLoadError) as err:
        DetectionCheckpointer(nn.Linear(2, 2)).load(str(path))
    msg = str(err.value)
    assert str(path) in msg and "Rename it to .pth" in msg and "truncated or corrupt" not in msg
    renamed = path.rename(tmp_path / "model_final.pth")
    DetectionCheckpointer(nn.Linear(2, 2)).load(str(renamed))


class _HugeBytearray:
    """Pickles as a call of bytearray(2**30): 1 GiB asked for by a file of a few bytes."""

    def __reduce__(self):
        return (bytearray, (2 ** 30,))


@pytest.mark.parametrize("layout", ["raw pickle", "torch zip", "torch legacy"])
def test_torch_files_are_held_to_the_same_budget(tmp_path, layout):
    # torch's weights-only loader admits bytearray without a size limit; the budget scan that
    # runs before it refuses the allocation, naming the file.
    import pickle as _pickle
    import resource

    import torch

    from workbench.checkpoint.safe_load import _torch_load

    path = tmp_path / "huge.pth"
    if layout == "raw pickle":
        path.write_bytes(_pickle.dumps(_HugeBytearray(), protocol=2))
    else:
        torch.save(_HugeBytearray(), path, _use_new_zipfile_serialization=layout == "torch zip")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnsafePickleError, match=r"huge\.pth.*bytearray of 1,073,741,824 bytes"):
        _torch_load(str(path))
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200_000, f"peak memory grew by {grown_kb} kB"

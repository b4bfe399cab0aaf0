"""Reading ``.pkl`` weight files without running code from them.

A pickle is a small program: its ``GLOBAL`` / ``STACK_GLOBAL`` opcodes import any callable by
name and its ``REDUCE`` opcode calls it, so ``pickle.load`` on a downloaded file can run
``os.system(...)``. Weight files only ever need a handful of callables (numpy's array and
scalar reconstructors, ``numpy.dtype``, ``collections.OrderedDict``, and ``_codecs.encode``,
with which Python-3 pickles of protocol <= 2 spell ``bytes``). :class:`RestrictedUnpickler`
admits exactly those and refuses every other import before anything is called, naming the
``module.name`` it refused and the file.

The same idea is behind ``torch.load(weights_only=True)``, which is what the checkpointer
uses for ``.pth`` files.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
from typing import IO, Any, Dict, List, Optional, Tuple, Union

__all__ = [
    "RestrictedUnpickler",
    "UnsafePickleError",
    "allowed_globals",
    "find_pickle_globals",
    "safe_load_pickle",
]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked to import a callable that weight files never contain."""


# Python 2 pickles (Detectron1 / Caffe2 model zoo) name some modules differently; the stock
# unpickler maps them inside its own ``find_class``, which we replace.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _numpy_core():
    """numpy's private core package: ``numpy._core`` (numpy >= 2) or ``numpy.core`` (1.x)."""
    import numpy as np

    core = getattr(np, "_core", None)
    if core is None or not hasattr(core, "multiarray"):
        import numpy.core as core  # numpy 1.x
    return core


def allowed_globals() -> Dict[Tuple[str, str], Any]:
    """The ``(module, name) -> object`` table of everything a weight pickle may import.

    Both spellings of numpy's core package are listed (``numpy.core`` in files written by
    numpy 1.x, ``numpy._core`` by numpy 2.x); each resolves to the installed numpy's object.
    """
    import collections
    import _codecs

    import numpy as np

    core = _numpy_core()
    table: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _codecs.encode,
        # Plain containers and numbers that numpy or a checkpoint's extra fields may use.
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytes"): bytes,  # b"" in protocols 0 - 2
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
    }
    for pkg in ("numpy.core", "numpy._core"):
        table[(f"{pkg}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        table[(f"{pkg}.multiarray", "scalar")] = core.multiarray.scalar
        # Protocol 5 pickles of arrays go through ``_frombuffer`` instead of ``_reconstruct``.
        table[(f"{pkg}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return table


class _CappedReader:
    """A binary file that never returns (or makes its file allocate) more than is left in it:
    a pickle's length fields cannot ask for more bytes than the file holds."""

    def __init__(self, file: IO[bytes], remaining: int):
        self._file = file
        self.remaining = remaining

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self._file.read(n)
        self.remaining -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._file.readline(self.remaining)
        self.remaining -= len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _bytes_left(file: IO[bytes]) -> Optional[int]:
    """How many bytes ``file`` holds from its position on, or ``None`` if it cannot tell."""
    try:
        pos = file.tell()
        try:
            return max(os.fstat(file.fileno()).st_size - pos, 0)
        except (AttributeError, OSError, io.UnsupportedOperation):
            end = file.seek(0, io.SEEK_END)
            file.seek(pos)
            return max(end - pos, 0)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


class _Refused:
    """What ``find_class`` returns for ``numpy.ndarray``: accepted as the class argument of
    ``_reconstruct``, refused when called (weight files never call ``numpy.ndarray(...)``)."""

    def __init__(self, unpickler: "RestrictedUnpickler", name: str):
        self._unpickler, self._name = unpickler, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._unpickler._refuse(f"it calls {self._name}(...) directly, which a weight file never does")


_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}
_SEQUENCES = (list, tuple, set, frozenset, dict)
# Memory beyond the file's size that small objects (scalars, sets, dtypes) may take together.
_SLACK_BYTES = 1 << 20


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that admits only what weight files contain, and only as much of it as the
    file can hold.

    ``find_class`` admits the callables of :func:`allowed_globals` and refuses every other
    import before anything is called. Each admitted callable is wrapped so that it can only
    build what weight pickles build, and the memory that arrays, ``bytes``, ``bytearray``,
    strings and containers built by those calls take is counted before it is allocated: in
    all at most twice the file's size (an array's data may exist once as ``bytes`` and once as
    the array) plus 1 MiB. What is counted is what the file only names the size of (an
    array's shape, ``bytes(n)``) and copies of copies: a container built from a list, bytes
    or string the file spelled out (``set([...])`` in protocols 0 - 2) is as large as what
    the file holds, so its first copy is free, but copying the same object again, or copying
    a copy, is counted. A file that asks for more is refused (:class:`UnsafePickleError`)
    before the allocation. Only numpy arrays, dtypes and OrderedDicts that the file has just
    created may have their state set (the ``BUILD`` opcode), once; an OrderedDict's only from
    a dict of attribute names (a state dict's ``_metadata``). ``NEWOBJ``, out-of-band buffers
    (protocol 5) and persistent IDs are refused.

    It is :mod:`pickle`'s pure-Python unpickler underneath (weight files are few large
    objects, so it is about as fast), which keeps its memo a dict and lets each opcode be
    checked.

    Args:
        file: A binary file object.
        filename: Named in error messages.
        encoding: How Python 2 ``str`` objects are decoded; ``"latin1"`` (the default) also
            keeps numpy arrays written by Python 2 intact.
        max_bytes: The memory budget; default ``2 * (bytes left in file) + 1 MiB``.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], *, filename: str = "<stream>", encoding: str = "latin1",
                 max_bytes: Optional[int] = None):
        size = _bytes_left(file)
        if size is None:  # not seekable: read it (what it holds is what it holds)
            file = io.BytesIO(file.read())
            size = len(file.getbuffer())
        super().__init__(_CappedReader(file, size), encoding=encoding)
        self.filename = filename
        self.file_size = size
        self.max_bytes = 2 * size + _SLACK_BYTES if max_bytes is None else int(max_bytes)
        self.charged = 0
        self._allowed = allowed_globals()
        self._guards = self._make_guards()
        self._buildable: Dict[int, Any] = {}  # id -> object whose state may be set once
        # id -> object built by copying (the guarded constructors' results), or copied from
        # once already; kept alive so that ids stay unique.
        self._copies: Dict[int, Any] = {}

    # -------------------------------------------------------------------------- refusals
    def _refuse(self, what: str) -> None:
        raise UnsafePickleError(
            f"Refusing to load '{self.filename}': {what}. A weight file holds numpy arrays, "
            "numbers, strings and plain containers only; loading a checkpoint never runs code "
            "from the file. Nothing more from it was built."
        )

    def _charge(self, nbytes: int, what: str) -> None:
        """Counts ``nbytes`` about to be allocated for ``what``; refuses past the budget."""
        if nbytes < 0:
            self._refuse(f"it asks for {what} of negative size")
        if self.charged + nbytes > self.max_bytes:
            raise UnsafePickleError(
                f"Refusing to load '{self.filename}': it asks for {what} of {nbytes:,} bytes, "
                f"more than a {self.file_size:,}-byte file can hold (arrays, bytes and "
                f"containers built from it may take {self.max_bytes:,} bytes in all, "
                f"{self.charged:,} taken so far). The file is corrupt or crafted to exhaust "
                "memory; the allocation was not made."
            )
        self.charged += nbytes

    def _count(self, shape: Any, what: str) -> int:
        """The number of items of an array of ``shape`` (a tuple of sizes)."""
        if not isinstance(shape, tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            self._refuse(f"{what} has shape {shape!r}, not a tuple of sizes")
        count = 1
        for d in shape:
            count *= d
        return count

    def _first_copy(self, source: Any) -> bool:
        """Whether ``source`` is copied for the first time and is not itself a copy."""
        if id(source) in self._copies:
            return False
        self._copies[id(source)] = source
        return True

    def _use_dtype(self, obj: Any, what: str) -> Any:
        """``obj``, checked to be a numpy dtype; from now on its state may not change."""
        import numpy as np

        if not isinstance(obj, np.dtype):
            self._refuse(f"{what} has dtype {type(obj).__name__}, not a numpy dtype")
        if obj.hasobject:  # numpy trusts their pickled contents (a short list crashes it)
            self._refuse(f"{what} holds Python objects (dtype {obj}), which weight files never do")
        self._buildable.pop(id(obj), None)
        return obj

    def _freeze_dtypes(self, obj: Any, depth: int = 0) -> None:
        """Marks the dtypes inside a dtype's state (fields, subarrays) as in use."""
        import numpy as np

        if isinstance(obj, np.dtype):
            self._buildable.pop(id(obj), None)
        elif depth < 8 and isinstance(obj, (tuple, list, dict)):
            for item in obj.values() if isinstance(obj, dict) else obj:
                self._freeze_dtypes(item, depth + 1)

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        guard = self._guards.get((module, name))
        if guard is None:
            raise UnsafePickleError(
                f"Refusing to load '{self.filename}': it asks to import {module}.{name}, which "
                "a weight file never needs (allowed: numpy arrays, dtypes and scalars, "
                "collections.OrderedDict, _codecs.encode and plain builtin containers). Loading "
                "a checkpoint never runs code from the file. If you wrote this file yourself and "
                "trust it, unpickle it with the pickle module and pass the state dict on."
            )
        return guard

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"Refusing to load '{self.filename}': it uses pickle persistent IDs (as torch.save "
            "does), which plain weight pickles never contain. Is it a torch checkpoint with a "
            ".pkl name? Rename it to .pth."
        )

    # ------------------------------------------------------------------- guarded callables
    def _make_guards(self) -> Dict[Tuple[str, str], Any]:
        import numpy as np

        table = self._allowed
        ndarray = _Refused(self, "numpy.ndarray")

        def dtype(obj: Any, align: Any = False, copy: Any = True) -> Any:
            if not isinstance(obj, (str, bytes)):
                self._refuse(f"it builds a numpy dtype from a {type(obj).__name__}")
            result = np.dtype(obj, align=bool(align), copy=True)  # never numpy's shared dtypes
            self._buildable[id(result)] = result
            return result

        def reconstruct(subtype: Any, shape: Any, code: Any) -> Any:
            if subtype is not ndarray:
                self._refuse("it reconstructs an array of a class other than numpy.ndarray")
            code = self._use_dtype(code if isinstance(code, np.dtype) else np.dtype(code), "an array")
            count = self._count(shape, "an array")
            self._charge(count * code.itemsize, "a numpy array")
            result = table[("numpy.core.multiarray", "_reconstruct")](np.ndarray, shape, code)
            self._buildable[id(result)] = result
            return result

        def frombuffer(buf: Any, descr: Any, shape: Any, order: Any) -> Any:
            count = self._count(shape, "an array")
            self._charge(count * self._use_dtype(descr, "an array").itemsize, "a numpy array")
            return table[("numpy.core.numeric", "_frombuffer")](buf, descr, shape, order)

        def scalar(descr: Any, *obj: Any) -> Any:
            descr = self._use_dtype(descr, "a numpy scalar")
            self._charge(descr.itemsize, "a numpy scalar")
            return table[("numpy.core.multiarray", "scalar")](descr, *obj)

        def encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
            if not isinstance(obj, str) or str(encoding).lower() not in _LATIN1:
                self._refuse("it calls _codecs.encode other than as pickles spell bytes "
                             "(a str and 'latin1')")
            self._charge(len(obj), "bytes")
            result = table[("_codecs", "encode")](obj, "latin1", errors)
            self._copies[id(result)] = result  # copying it again is charged
            return result

        def sized(cls: Any, per_item: int) -> Any:
            def build(*args: Any) -> Any:
                arg = args[0] if args else ()
                if cls in (bytes, bytearray) and isinstance(arg, int) and not isinstance(arg, bool):
                    # bytes(n): n zero bytes, allocated from a size the file only names.
                    self._charge(arg, "bytes" if cls is bytes else "a bytearray")
                    return cls(arg)
                if isinstance(arg, str) and cls in (bytes, bytearray):
                    if len(args) < 2 or str(args[1]).lower() not in _LATIN1:
                        self._refuse(f"it calls {cls.__name__}(str, ...) with an encoding "
                                     "other than latin1")
                    args = (arg, "latin1")
                elif not (isinstance(arg, (bytes, bytearray, *_SEQUENCES)) and len(args) <= 1):
                    self._refuse(f"it calls {cls.__name__} with arguments of types "
                                 f"{[type(a).__name__ for a in args]}")
                # A copy of something the file has built: as large as that, which the file
                # had to spell out. The first copy of each such object is free; copying it
                # again (memo references make that cheap) or copying a copy is charged.
                if args and not self._first_copy(arg):
                    self._charge(len(arg) * per_item,
                                 "bytes" if cls is bytes else f"a {cls.__name__}")
                result = cls(*args)
                self._copies[id(result)] = result
                if cls is collections.OrderedDict:  # its attributes may be set once (BUILD)
                    self._buildable[id(result)] = result
                return result
            return build

        def complex_(*args: Any) -> complex:
            if len(args) > 2 or not all(isinstance(a, (int, float)) for a in args):
                self._refuse("it calls complex with arguments other than two numbers")
            return complex(*args)

        guards: Dict[Tuple[str, str], Any] = {
            ("numpy", "ndarray"): ndarray,
            ("numpy", "dtype"): dtype,
            ("collections", "OrderedDict"): sized(table[("collections", "OrderedDict")], 64),
            ("_codecs", "encode"): encode,
            ("builtins", "set"): sized(set, 64),
            ("builtins", "frozenset"): sized(frozenset, 64),
            ("builtins", "bytes"): sized(bytes, 1),
            ("builtins", "bytearray"): sized(bytearray, 1),
            ("builtins", "complex"): complex_,
        }
        for pkg in ("numpy.core", "numpy._core"):
            guards[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
            guards[(f"{pkg}.multiarray", "scalar")] = scalar
            guards[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
        missing = set(table) - set(guards)
        assert not missing, f"allowed_globals() entries without a guard: {missing}"
        return guards

    # ----------------------------------------------------------------- checked opcodes
    def load_build(self) -> None:
        import numpy as np

        state, inst = self.stack[-1], self.stack[-2]
        if self._buildable.pop(id(inst), None) is not inst:
            self._refuse(f"it sets the state of a {type(inst).__name__} (BUILD), which weight "
                         "files only do once, on a numpy array, dtype or OrderedDict they have "
                         "just created")
        if isinstance(inst, np.ndarray):
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                self._refuse("it sets an array's state from something other than numpy's tuple")
            count = self._count(state[-4], "an array")
            self._charge(count * self._use_dtype(state[-3], "an array").itemsize, "a numpy array")
        elif isinstance(inst, collections.OrderedDict):
            self._check_dict_attributes(inst, state)
        else:
            self._freeze_dtypes(state)
        super().load_build()

    def _check_dict_attributes(self, inst: Any, state: Any) -> None:
        """An OrderedDict's state is its ``__dict__`` (a state dict's ``_metadata``): a plain
        dict of str keys that are not the names of OrderedDict's methods or attributes."""
        if type(state) is not dict:
            self._refuse(f"it sets the attributes of an OrderedDict (BUILD) from a "
                         f"{type(state).__name__}, not from a dict of attribute names")
        for key in state:
            if type(key) is not str or not key.isidentifier() or key.startswith("__"):
                self._refuse(f"it sets an OrderedDict attribute named {key!r} (BUILD)")
            if hasattr(type(inst), key):
                self._refuse(f"it replaces the OrderedDict attribute {key!r} (BUILD)")

    dispatch[pickle.BUILD[0]] = load_build

    def load_newobj(self) -> None:
        self._refuse("it creates an object with cls.__new__ (NEWOBJ), which weight files never do")

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj

    def load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        self._charge(n, "a bytearray")
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {n} bytes, but the data ends first")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_next_buffer(self) -> None:
        raise _ReadError(
            f"Cannot read '{self.filename}': it refers to an out-of-band buffer (pickle "
            "protocol 5 with a buffer_callback), whose data is not in the file."
        )

    dispatch[pickle.NEXT_BUFFER[0]] = load_next_buffer

    # Items go only into the lists, dicts and sets the pickle itself created (not, e.g.,
    # into a bytearray or an array through their own methods).
    def _target(self, kinds: Tuple[type, ...], op: str) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            self._refuse(f"it adds items ({op}) to a {type(target).__name__}")
        return target

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target((list,), "APPENDS").extend(items)

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._target((dict, collections.OrderedDict), "SETITEM")[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target((dict, collections.OrderedDict), "SETITEMS")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._target((set,), "ADDITEMS").update(items)

    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems


class _ReadError(pickle.UnpicklingError):
    """A file that is not a readable weight pickle, with a message that says it all."""


_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


def safe_load_pickle(
    file: Union[str, os.PathLike, IO[bytes]], *, filename: Optional[str] = None, encoding: str = "latin1"
) -> Any:
    """Unpickles a weight file with :class:`RestrictedUnpickler`.

    Args:
        file: A path or a binary file object.
        filename: Name used in error messages (defaults to the path).
        encoding: See :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: The file imports something other than what weight files contain,
            or asks for more memory than its size allows; nothing from it has been called.
        pickle.UnpicklingError: The file is truncated, is not a pickle, or is a torch zip
            checkpoint (the message names it).
    """
    if isinstance(file, (str, os.PathLike)):
        name = filename or os.fspath(file)
        with open(file, "rb") as f:
            return _load(f, name, encoding)
    return _load(file, filename or getattr(file, "name", "<stream>"), encoding)


def _load(f: IO[bytes], name: str, encoding: str) -> Any:
    if _peek(f, len(_ZIP_MAGIC)) == _ZIP_MAGIC:
        raise _ReadError(
            f"Cannot read '{name}' as a pickle: it is a zip archive, as torch.save writes "
            "checkpoints. Is it a torch checkpoint with a .pkl name? Rename it to .pth."
        )
    try:
        data = RestrictedUnpickler(f, filename=name, encoding=encoding).load()
        if type(data) is int and data == _TORCH_LEGACY_MAGIC:  # the first of several pickles
            raise _ReadError(
                f"Cannot read '{name}' as a weight pickle: it is a torch checkpoint in torch's "
                "legacy format (torch.save(..., _use_new_zipfile_serialization=False)). Is it a "
                "torch checkpoint with a .pkl name? Rename it to .pth."
            )
        return data
    except (UnsafePickleError, _ReadError):
        raise
    except Exception as e:  # EOFError, UnpicklingError, ValueError, ... from damaged files
        raise pickle.UnpicklingError(
            f"Cannot read '{name}' as a pickle: {type(e).__name__}: {e}. The file is truncated "
            "or corrupt (an interrupted download?); delete it and fetch it again."
        ) from e


def _peek(f: IO[bytes], n: int) -> bytes:
    try:
        pos = f.tell()
        data = f.read(n)
        f.seek(pos)
        return data
    except (AttributeError, OSError, io.UnsupportedOperation):
        return b""


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}
_NEUTRAL_OPS = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"}


def find_pickle_globals(data: bytes) -> List[str]:
    """The ``module.name`` of every import (``GLOBAL``, ``INST``, ``STACK_GLOBAL``) in a stream
    of pickles.

    A static scan with :mod:`pickletools`: nothing is imported or called. It reads pickle after
    pickle (torch's legacy format is several in a row) and stops at the first thing that is not
    a pickle. For ``STACK_GLOBAL`` the two strings below it on the stack are tracked through
    the memo; an import whose name cannot be followed is reported as ``"<unknown>"``.
    """
    found: List[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        pushed: List[Optional[str]] = []  # what the recent opcodes pushed (None: not a string)
        memo: Dict[Any, Optional[str]] = {}
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(".".join(str(arg).split(" ", 1)))
                    pushed.append(None)
                elif name == "STACK_GLOBAL":
                    module, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])
                    found.append(f"{module}.{attr}" if module and attr else "<unknown>")
                    pushed[-2:] = [None]
                elif name in _STRING_OPS:
                    pushed.append(arg if isinstance(arg, str) else None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = pushed[-1] if pushed else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(arg))
                elif name not in _NEUTRAL_OPS:
                    pushed.append(None)
                del pushed[:-2]
        except Exception:  # not (or no longer) a pickle
            break
        if stream.tell() == start:
            break
    return found

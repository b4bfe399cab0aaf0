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

import io
import os
import pickle
import pickletools
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


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only what weight files contain.

    Args:
        file: A binary file object.
        filename: Named in error messages.
        encoding: How Python 2 ``str`` objects are decoded; ``"latin1"`` (the default) also
            keeps numpy arrays written by Python 2 intact.
    """

    def __init__(self, file: IO[bytes], *, filename: str = "<stream>", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.filename = filename
        self._allowed = allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"Refusing to load '{self.filename}': it asks to import {module}.{name}, which "
                "a weight file never needs (allowed: numpy arrays, dtypes and scalars, "
                "collections.OrderedDict, _codecs.encode and plain builtin containers). Loading "
                "a checkpoint never runs code from the file. If you wrote this file yourself and "
                "trust it, unpickle it with the pickle module and pass the state dict on."
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"Refusing to load '{self.filename}': it uses pickle persistent IDs (as torch.save "
            "does), which plain weight pickles never contain. Is it a torch checkpoint with a "
            ".pkl name? Rename it to .pth."
        )


def safe_load_pickle(
    file: Union[str, os.PathLike, IO[bytes]], *, filename: Optional[str] = None, encoding: str = "latin1"
) -> Any:
    """Unpickles a weight file with :class:`RestrictedUnpickler`.

    Args:
        file: A path or a binary file object.
        filename: Name used in error messages (defaults to the path).
        encoding: See :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: The file imports something other than what weight files contain;
            nothing from it has been called.
        pickle.UnpicklingError: The file is truncated or is not a pickle (the message names it).
    """
    if isinstance(file, (str, os.PathLike)):
        name = filename or os.fspath(file)
        with open(file, "rb") as f:
            return _load(f, name, encoding)
    return _load(file, filename or getattr(file, "name", "<stream>"), encoding)


def _load(f: IO[bytes], name: str, encoding: str) -> Any:
    try:
        return RestrictedUnpickler(f, filename=name, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # EOFError, UnpicklingError, ValueError, ... from damaged files
        raise pickle.UnpicklingError(
            f"Cannot read '{name}' as a pickle: {type(e).__name__}: {e}. The file is truncated "
            "or corrupt (an interrupted download?); delete it and fetch it again."
        ) from e


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

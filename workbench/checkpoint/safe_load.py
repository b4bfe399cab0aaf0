"""Reading checkpoint files without running code from them, with errors that name the file.

``.pkl`` files go through the restricted unpickler of :mod:`.safe_pickle`; anything else through
``torch.load(weights_only=True)``, with numpy arrays admitted. A file that asks to import
something else raises :class:`~.safe_pickle.UnsafePickleError` (nothing from it has run); a
truncated or corrupt one raises :class:`CheckpointLoadError`. :mod:`.detection_checkpoint`
decides which reader a file gets and what to do with what it holds.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from typing import Any, List

import numpy as np
import torch

from .safe_pickle import (RestrictedUnpickler, UnsafePickleError, allowed_globals,
                          find_pickle_globals, safe_load_pickle)

__all__ = ["CheckpointLoadError"]


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, or of an unknown layout)."""


def _pickle_load(filename: str) -> Any:
    try:
        return safe_load_pickle(filename, encoding="latin1")
    except UnsafePickleError:
        raise
    except pickle.UnpicklingError as e:
        raise CheckpointLoadError(str(e)) from e


def _numpy_globals() -> List[Any]:
    """What numpy arrays inside a ``.pth`` need from torch's weights-only unpickler."""
    allowed = list(allowed_globals().values())
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    return allowed + sorted(dtype_classes, key=lambda t: t.__name__)


class _BudgetExceeded(UnsafePickleError):
    """Inside the scan only: :func:`_check_torch_budget` raises a plain UnsafePickleError."""


class _Placeholder:
    """Stands for a tensor, storage or torch object during the budget scan (nothing built)."""

    def __call__(self, *args: Any, **kwargs: Any) -> "_Placeholder":
        return _Placeholder()


class _StopScan(Exception):
    pass


class _TorchBudgetScan(RestrictedUnpickler):
    """Replays the pickles of a torch checkpoint with the restricted unpickler's memory budget
    and nothing else: torch's own objects are placeholders (torch's weights-only loader judges
    them next), anything else ends the scan (torch refuses it). torch's loader admits
    ``bytearray`` and friends without a size limit: a 39-byte file could allocate 1 GiB."""

    dispatch = dict(RestrictedUnpickler.dispatch)

    def _charge(self, nbytes: int, what: str) -> None:
        try:
            super()._charge(nbytes, what)
        except UnsafePickleError as e:
            raise _BudgetExceeded(str(e)) from None

    def _refuse(self, what: str) -> None:
        raise _StopScan(what)

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return _Placeholder()
        try:
            return super().find_class(module, name)
        except UnsafePickleError:
            raise _StopScan(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        return _Placeholder()

    def load_build(self) -> None:
        if isinstance(self.stack[-2], _Placeholder) or id(self.stack[-2]) not in self._buildable:
            self.stack.pop()  # a tensor's or a state dict's attributes: nothing to allocate
            return
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_newobj(self) -> None:
        self.stack.pop()
        self.stack[-1] = _Placeholder()

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def _target(self, kinds: Any, op: str) -> Any:
        target = self.stack[-1]
        if isinstance(target, _Placeholder):
            return {} if op.startswith("SET") else []
        return super()._target(kinds, op)


def _check_torch_budget(filename: str) -> None:
    """Refuses a torch checkpoint whose pickles ask for more memory than the file can hold,
    before ``torch.load`` makes the allocation.

    Raises:
        UnsafePickleError: The file asks for more memory than its size allows.
    """
    import os

    try:
        budget = 2 * os.path.getsize(filename) + (1 << 20)
        if zipfile.is_zipfile(filename):
            # data.pkl holds the objects; the tensors' bytes are entries of their own.
            with zipfile.ZipFile(filename) as z:
                for name in z.namelist():
                    if name.endswith(".pkl"):
                        _scan_pickles(io.BytesIO(z.read(name)), filename, budget, count=1)
        else:
            # Legacy format: the magic number, protocol and system info, then the objects
            # (four pickles), then the storages' raw bytes, which are not scanned. Read
            # straight from the file: the restricted unpickler takes what it needs.
            with open(filename, "rb") as f:
                _scan_pickles(f, filename, budget, count=4)
    except _BudgetExceeded as e:
        raise UnsafePickleError(str(e)) from None
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return  # torch.load reports a damaged file


def _scan_pickles(f: Any, filename: str, budget: int, count: int) -> None:
    """Replays up to ``count`` pickles in a row from ``f`` under the memory ``budget``."""
    for _ in range(count):
        try:
            if not _peek_byte(f):
                break
            _TorchBudgetScan(f, filename=filename, max_bytes=budget).load()
        except _BudgetExceeded:
            raise
        except Exception:  # anything else is torch.load's to judge
            break


def _peek_byte(f: Any) -> bytes:
    pos = f.tell()
    data = f.read(1)
    f.seek(pos)
    return data


def _torch_load(filename: str) -> Any:
    """``torch.load(weights_only=True)`` (numpy arrays admitted too), with errors naming the
    file; first, the restricted unpickler's memory budget over the file's pickles."""
    _check_torch_budget(filename)
    try:
        if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(filename, map_location="cpu", weights_only=True)
        return torch.load(filename, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _torch_reason(str(e))
        if not re.search(r"unsupported global", reason, re.IGNORECASE):
            # torch's reader also stops at opcodes it does not parse (pickle protocols 0 and 1)
            # before reaching any import; look for imports ourselves, without running anything.
            suspicious = [g for g in _globals_in_torch_file(filename) if not _is_weight_global(g)]
            if suspicious:
                reason = f"it imports {', '.join(sorted(set(suspicious)))}. torch says: {reason}"
            else:
                raise CheckpointLoadError(_damaged_message(filename, reason)) from e
        raise UnsafePickleError(
            f"Refusing to load '{filename}': it imports something other than tensors, numpy "
            "arrays and plain containers, so loading it could run code from the file; nothing "
            f"from it has run. torch.load(weights_only=True) refused it: {reason}"
        ) from e
    except Exception as e:  # RuntimeError from a damaged zip, EOFError, ...
        raise CheckpointLoadError(_damaged_message(filename, f"{type(e).__name__}: {e}")) from e


def _globals_in_torch_file(filename: str) -> List[str]:
    """Imports named by a torch checkpoint's pickles (zip or legacy format), found statically."""
    try:
        if zipfile.is_zipfile(filename):
            with zipfile.ZipFile(filename) as z:
                return [g for name in z.namelist() if name.endswith(".pkl")
                        for g in find_pickle_globals(z.read(name))]
        with open(filename, "rb") as f:
            return find_pickle_globals(f.read())
    except (OSError, zipfile.BadZipFile):
        return []


def _is_weight_global(name: str) -> bool:
    """Whether an import is one that tensors and numpy arrays in a torch file need."""
    if name in {".".join(key) for key in allowed_globals()}:
        return True
    module, _, attr = name.rpartition(".")
    if module == "torch._utils":
        return attr.startswith("_rebuild_")
    if module == "torch":
        return attr.endswith("Storage") or attr in ("Size", "device") or isinstance(
            getattr(torch, attr, None), torch.dtype
        )
    return False


def _torch_reason(message: str) -> str:
    """The informative lines of torch's weights-only error (without its general advice)."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in message.splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(boilerplate)]
    return " ".join(kept) or message


def _damaged_message(filename: str, reason: str) -> str:
    return (
        f"Cannot read checkpoint '{filename}': {reason}\nThe file is truncated or corrupt (an "
        "interrupted download or save?), or is not a torch checkpoint."
    )

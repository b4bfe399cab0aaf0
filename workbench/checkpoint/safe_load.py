"""Reading checkpoint files without running code from them, with errors that name the file.

``.pkl`` files go through the restricted unpickler of :mod:`.safe_pickle`; anything else through
``torch.load(weights_only=True)``, with numpy arrays admitted. A file that asks to import
something else raises :class:`~.safe_pickle.UnsafePickleError` (nothing from it has run); a
truncated or corrupt one raises :class:`CheckpointLoadError`. :mod:`.detection_checkpoint`
decides which reader a file gets and what to do with what it holds.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from typing import Any, List

import numpy as np
import torch

from .safe_pickle import UnsafePickleError, allowed_globals, find_pickle_globals, safe_load_pickle

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


def _torch_load(filename: str) -> Any:
    """``torch.load(weights_only=True)`` (numpy arrays admitted too), with errors naming the
    file."""
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

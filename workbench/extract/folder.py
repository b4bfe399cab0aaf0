"""The files of an extraction folder: atomic writes, shard names, "is shard K done", partial shards.

Every file is written to ``<name>.tmp`` (by the one process holding the lock that covers it,
see :mod:`workbench.extract.locking`) and renamed, so a present file is complete. A write that
fails or is interrupted by an exception removes its ``.tmp``; after a ``kill -9`` the next writer
of that shard removes it.

Partial shards: while shard K is being computed, its finished batches are saved every few
seconds as ``shard-KKKKK.part-RRRRRR.npz`` (rows ``R, R+1, ...`` of the shard, whole batches),
so a killed run loses at most those seconds of work. They are a cache: the shard's ``.npz`` is
built from the same per-image arrays either way, and its parts are removed once it is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["ExtractionFolderError", "write_npz", "read_npz", "read_json", "write_json",
           "shard_name", "shard_done", "write_part", "read_parts", "clean_shard", "leftovers"]

# Fault injection for the tests: "<point>:<key>" makes the process exit abruptly there;
# "pause@<point>:<key>" prints "paused" to stderr and waits there to be killed or signalled.
_FAULT_ENV = "WORKBENCH_EXTRACT_FAULT"
_PART = re.compile(r"^(shard-\d{5,})\.part-(\d{6,})\.npz$")


RERUN_ADVICE = ("Run the same extraction again to repair it (intact shards are kept, checked "
                "against their SHA-256; the rest are redone and manifest.json rewritten), or start "
                "over in an empty output folder.")


class ExtractionFolderError(ValueError):
    """A file of an extraction folder is damaged or missing (the message names it and the fix)."""


def fault(point: str, key: Any) -> None:
    value = os.environ.get(_FAULT_ENV)
    if value == f"{point}:{key}":
        os._exit(17)  # as abrupt as a kill: no cleanup, no flush
    if value == f"pause@{point}:{key}":
        print(f"paused at {point}:{key}", file=sys.stderr, flush=True)
        while True:
            time.sleep(0.05)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _replace_from_tmp(path: Path, write) -> None:
    """``write(tmp)``, fsync, rename onto ``path``; the ``.tmp`` is removed if anything fails."""
    tmp = _tmp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_npz(path: Union[str, os.PathLike], arrays: Dict[str, np.ndarray], *,
              _shard: int = -1) -> Tuple[int, str]:
    """Write an uncompressed ``.npz`` atomically and reproducibly (fixed zip timestamps).

    Example::

        write_npz("a.npz", {"x": np.zeros(3)})   # a.npz.tmp, then renamed to a.npz
        read_npz("a.npz")["x"]
        write_npz("b.npz", {"x": np.zeros(3)})   # byte-identical to a.npz

    Returns:
        (size in bytes, SHA-256 hex digest) of the file.
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for n, (name, arr) in enumerate(arrays.items()):
                arr = np.asarray(arr)
                if arr.dtype == object:
                    raise TypeError(f"Array {name!r} has dtype object, which would need pickle.")
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
                if n == len(arrays) // 2:
                    fault("npz-partial", _shard)

    _replace_from_tmp(path, write)
    return _file_digest(path)


def _file_digest(path: Path) -> Tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def read_npz(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """All arrays of a shard, loaded without pickle.

    Example::

        arrays = read_npz("feats/shard-00000.npz")
        arrays["det/embeddings"][arrays["det/image"] == 0]   # embeddings of the shard's 1st image
        arrays["image_id"]
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        # numpy reads a file that is not a zip as a pickle and blames allow_pickle: say instead
        # that the shard is damaged, and how to repair it.
        path = Path(path)
        detail = ("it is not an .npz (zip) file" if "pickle" in str(e)
                  else f"{type(e).__name__}: {e}")
        raise ExtractionFolderError(
            f"{path} is damaged ({detail}): the extraction folder {path.parent} is damaged. "
            f"{RERUN_ADVICE}"
        ) from e


def write_json(path: Path, obj: Any) -> None:
    _replace_from_tmp(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n"))


def read_json(path: Path, fix: str, required: Sequence[str] = ()) -> Dict[str, Any]:
    """A JSON object from ``path``; a clear :class:`ExtractionFolderError` (naming the file, the
    fault and ``fix``) if it is not valid JSON, not an object or lacks a ``required`` key."""
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        problem = f"is not valid JSON ({e})"
    else:
        missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
        if isinstance(obj, dict) and not missing:
            return obj
        problem = (f"lacks {missing}" if isinstance(obj, dict)
                   else f"holds a {type(obj).__name__}, not a JSON object")
    raise ExtractionFolderError(f"{path} {problem}: the extraction folder {path.parent} is "
                                f"incomplete or damaged. {fix}")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def shard_done(out: Path, k: int, verify: bool = True) -> Optional[Dict[str, Any]]:
    """The manifest entry of shard k if it is complete (and, with ``verify``, intact), else None."""
    meta_path = out / f"{shard_name(k)}.json"
    npz_path = out / f"{shard_name(k)}.npz"
    if not meta_path.is_file() or not npz_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or npz_path.stat().st_size != meta.get("bytes"):
        return None
    if verify and _file_digest(npz_path)[1] != meta.get("sha256"):
        return None
    return meta


# -- partial shards ------------------------------------------------------------------------------

def write_part(out: Path, k: int, row: int, indices: List[int], ids: List[str],
               per_image: List[Dict[str, Any]]) -> None:
    """Save rows ``row, row + 1, ...`` of shard k (their per-image arrays, in order)."""
    arrays: Dict[str, np.ndarray] = {"image_index": np.array(indices, dtype=np.int64),
                                     "image_id": np.array(ids, dtype=np.str_)}
    for i, d in enumerate(per_image):
        for key, value in d.items():  # image_size, input_size first: the order is kept
            arrays[f"{i}/{key}"] = (np.asarray(value, dtype=np.int64)
                                    if key in ("image_size", "input_size") else value)
    write_npz(out / f"{shard_name(k)}.part-{row:06d}.npz", arrays)


def read_parts(out: Path, k: int, names: Sequence[str], indices: List[int], ids: List[str],
               batch_size: int) -> List[Dict[str, Any]]:
    """The per-image arrays of shard k's first rows, from its part files (``names``: the folder's
    file names). Follows the parts from row 0 while they fit together and match the images
    (``indices`` / ``ids`` of the whole shard); a damaged or unreadable part ends the chain and
    its rows are computed again."""
    parts = {}
    for name in names:
        m = _PART.match(name)
        if m and m.group(1) == shard_name(k):
            parts[int(m.group(2))] = name
    rows: List[Dict[str, Any]] = []
    while len(rows) in parts:
        start = len(rows)
        try:
            arrays = read_npz(out / parts[start])
        except Exception:  # damaged: recompute from here (clean_shard removes it later)
            break
        n = len(arrays.get("image_index", ()))
        if (n == 0 or (start + n < len(indices) and n % batch_size)
                or arrays["image_index"].tolist() != indices[start:start + n]
                or arrays["image_id"].tolist() != ids[start:start + n]):
            break
        for i in range(n):
            prefix = f"{i}/"
            d = {key[len(prefix):]: a for key, a in arrays.items() if key.startswith(prefix)}
            d["image_size"] = tuple(int(x) for x in d["image_size"])
            d["input_size"] = tuple(int(x) for x in d["input_size"])
            rows.append(d)
    return rows


def leftovers(names: Sequence[str], k: int) -> List[str]:
    """Names of temporary, lock and part files of shard k."""
    prefix = shard_name(k) + "."
    return [n for n in names if n.startswith(prefix)
            and (n.endswith(".tmp") or n.endswith(".lock") or ".part-" in n)]


def clean_shard(out: Path, k: int, done: bool) -> None:
    """Remove shard k's temporary files, and its part files once it is ``done`` (call with the
    shard's lock held; the lock file itself goes when the lock is released)."""
    for name in leftovers(os.listdir(out), k):
        if name.endswith(".tmp") or (done and ".part-" in name):
            (out / name).unlink(missing_ok=True)

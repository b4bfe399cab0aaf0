"""Who may write an extraction folder: ``flock`` locks on small lock files, removed on release.

Two locks guard a folder (see :mod:`workbench.extract.core` for why these two):

* ``writer.lock``, the folder lock: exclusive for a lone writer (``world_size == 1``), shared
  by the ranks of a sharded run (they write disjoint shards of one folder by design). A lone
  writer therefore never runs beside anyone, and ranks never run beside a lone writer.
* ``shard-KKKKK.lock``, held exclusively while shard K is computed and written: no two
  processes ever write the same shard's (temporary) files, whatever launched them.
  ``meta.lock`` guards ``config.json`` / ``manifest.json`` the same way (briefly, blocking).

The kernel drops a ``flock`` when its process dies (``kill -9`` included), so a lock is never
stale: a lock file a killed writer left behind is simply taken over by the next one. Each lock
file holds one JSON line per holder (pid, host, since, role) for the "who holds it" message.
Releasing removes the file (while still locked: a process that opened the old file notices that
its inode is gone and opens the new one).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
from pathlib import Path
from typing import List, Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["FolderBusyError", "FileLock"]


class FolderBusyError(RuntimeError):
    """Another process holds a lock this writer needs (the message says who and what to do)."""


def _holders(path: Path) -> List[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            info = json.loads(line)
        except ValueError:
            continue
        if isinstance(info, dict):
            out.append(info)
    return out


def _alive(info: dict) -> bool:
    """False for a holder on this host whose pid is gone (a shared lock's file keeps the lines
    of ranks killed before they could remove it)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def describe_holders(path: Path) -> str:
    """``pid 123 on host h since 2024-05-01 12:00:03 (lone writer)``, one per holder."""
    held = [h for h in _holders(path) if _alive(h)]
    if not held:
        return "a process that has not written its details yet"
    return "; ".join(f"pid {h.get('pid')} on host {h.get('host')} since {h.get('since')} "
                     f"({h.get('role')})" for h in held)


class FileLock:
    """An ``flock`` on ``path`` (created if missing, removed on release).

    Example::

        lock = FileLock(out / "shard-00003.lock", role="rank 1 of 2")
        if not lock.acquire():            # non-blocking: False when someone else holds it
            print(describe_holders(lock.path))
        ...
        lock.release()
    """

    def __init__(self, path: Path, *, shared: bool = False, role: str = ""):
        if fcntl is None:
            raise OSError("workbench.extract needs fcntl.flock (Linux / macOS) to keep two writers "
                          "of one output folder apart; it is not available on this platform.")
        self.path = Path(path)
        self.shared = shared
        self.role = role
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = False) -> bool:
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, mode)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder before us removed this file on release: open the new one
        self._fd = fd
        if not self.shared:
            os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "role": self.role,
                "since": datetime.datetime.now().isoformat(sep=" ", timespec="seconds")}
        os.write(fd, (json.dumps(info) + "\n").encode())
        return True

    def release(self) -> None:
        """Unlock; remove the file unless other holders of a shared lock remain."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.shared:
                try:  # only the last holder gets the exclusive lock (Linux drops ours first)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

"""Writing files atomically, and cleaning up after writers that were killed.

:func:`atomic_write` writes ``path`` through a temporary file beside it, then renames it, so
that a reader never sees half a file. A writer killed mid-write (``kill -9``, out of memory,
power loss) leaves its temporary file behind; :func:`remove_stale_temp_files` deletes those,
and only those, without touching the temporary file of a write still in progress.

Temporary files are named ``.<name>.<host>-<pid>-<random>.tmp``: ``host`` is a short hash of
the machine's name and ``pid`` the writer's process id. One is stale when

- it was written on this machine, process ``pid`` no longer runs (or is a zombie, or
  started over a minute after the file was last written: the pid was reused), and the file
  has not been modified for :data:`DEAD_WRITER_AGE_S` seconds. (Processes in other pid
  namespaces, e.g. containers sharing a volume and a host name, are invisible here: their
  live writers look dead, but keep modifying their files.) Or
- it was written on another machine (a shared file system), or is in the older
  ``.<name>.<random>.tmp`` form without host and pid, and has not been modified for
  :data:`STALE_TEMP_AGE_S` seconds (a running write keeps modifying its file).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
import zlib
from typing import Callable, List, Optional

__all__ = ["DEAD_WRITER_AGE_S", "STALE_TEMP_AGE_S", "atomic_write", "is_temp_file",
           "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

#: A temporary file of another machine's writer, or of the older naming without a pid, is
#: stale once it has not been modified for this long (seconds).
STALE_TEMP_AGE_S = 3600.0

#: A temporary file of this machine whose writer's pid no longer runs is stale once it has
#: not been modified for this long (seconds): the pid may be another pid namespace's.
DEAD_WRITER_AGE_S = 60.0

_CLOCK_MARGIN_S = 60.0

_TEMP_RE = re.compile(
    r"^\.(?P<target>.+)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?(?P<rand>[0-9a-f]{32})\.tmp$"
)


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}"


def _temp_path(path: str) -> str:
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex}.tmp")


def is_temp_file(filename: str) -> bool:
    """Whether ``filename``'s base name is that of an :func:`atomic_write` temporary file."""
    return _TEMP_RE.match(os.path.basename(filename)) is not None


def atomic_write(path: str, write, *, binary: bool) -> None:
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it to ``path``.

    The temporary file is created with ``open(..., "x")`` (not ``mkstemp``) so that the result
    gets the usual permissions under the process umask. It is removed if ``write`` fails; if
    the process is killed, :func:`remove_stale_temp_files` removes it later.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb" if binary else "x") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _process_start(pid: int) -> Optional[float]:
    """When process ``pid`` started (seconds since the epoch), ``-1.0`` for a zombie, or
    ``None`` if it cannot be told (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open("/proc/stat") as f:
            boot = next(float(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return -1.0
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _writer_alive(pid: int, mtime: float) -> bool:
    """Whether the process that wrote a file last modified at ``mtime`` may still run."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return True
    start = _process_start(pid)
    if start is None:
        return True
    # A zombie has stopped writing; a process started after the file's last write cannot
    # have written it (the pid was reused). The margin covers /proc's whole-second boot time
    # and clock adjustments since boot.
    return start >= 0 and start <= mtime + _CLOCK_MARGIN_S


def _is_stale(path: str, host: Optional[str], pid: Optional[str], now: float) -> bool:
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return False  # gone already (renamed into place, or cleaned by someone else)
    if host == _host_tag() and pid is not None:
        return now - mtime > DEAD_WRITER_AGE_S and not _writer_alive(int(pid), mtime)
    return now - mtime > STALE_TEMP_AGE_S


def remove_stale_temp_files(folder: str, owns: Callable[[str], bool]) -> List[str]:
    """Deletes the stale temporary files in ``folder`` (see the module doc) of the targets
    for which ``owns(target_basename)`` is true; returns their paths.

    Temporary files of writes that may still be running are kept; so is anything that is not
    named like an :func:`atomic_write` temporary file.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    now = time.time()
    removed = []
    for name in sorted(names):
        m = _TEMP_RE.match(name)
        if m is None or not owns(m.group("target")):
            continue
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or not _is_stale(path, m.group("host"), m.group("pid"), now):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    if removed:
        logger.warning(
            "Removed %d temporary file(s) left in %s by interrupted saves: %s",
            len(removed), folder, ", ".join(os.path.basename(p) for p in removed),
        )
    return removed

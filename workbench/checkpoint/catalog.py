"""Where checkpoint files come from: local paths, URLs, and detectron2 model-zoo names.

Accepted paths:

- a local file (``~`` is expanded), or ``file:///abs/path``;
- ``http://`` / ``https://`` URLs, downloaded once into the cache folder;
- ``detectron2://X``, detectron2's model-zoo spelling of
  ``https://dl.fbaipublicfiles.com/detectron2/X``.

A URL is cached at ``<cache>/<host>/<url path>``, where ``<cache>`` is ``$WORKBENCH_CACHE`` or
the platform's cache folder (``~/.cache/workbench`` on Linux). Downloads go to a temporary file
in the destination folder, are checked, then renamed into place, so an interrupted download
never leaves a file that looks complete.

Checksums, where the file name carries one:

- detectron2 model zoo: ``model_final_<h>.pkl`` where ``<h>`` is the first 6 hex digits of the
  file's **MD5** (detectron2's ``dev/packaging``-era ``convert_to_model_zoo.py`` renames
  ``model_final.pkl`` to ``model_final_{md5[:6]}.pkl`` before uploading);
- torchvision / ``torch.hub``: ``<name>-<h>.<ext>`` where ``<h>`` (here: at least 6 hex digits)
  is a prefix of the file's **SHA-256**.

Files already in the cache are trusted as they are: that is also how to use a file whose name
looks like a hash but is not one (put it at the cache path the error message prints).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import uuid
import urllib.error
import urllib.request
from typing import Optional, Tuple
from urllib.parse import unquote, urlparse

__all__ = [
    "DETECTRON2_PREFIX",
    "DownloadError",
    "cache_path_for_url",
    "download",
    "expected_hash",
    "get_cache_dir",
    "get_local_path",
    "resolve_url",
]

logger = logging.getLogger(__name__)

#: Where ``detectron2://X`` points to (detectron2's ``Detectron2Handler.S3_DETECTRON2_PREFIX``).
DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

# detectron2 model zoo: model_final_<md5[:6]>.pkl
_D2_HASH_RE = re.compile(r"^model_final_([0-9a-f]{6})\.pkl$")
# torch.hub / torchvision: <name>-<sha256 prefix>.<ext>
_HUB_HASH_RE = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")


class DownloadError(OSError):
    """A checkpoint URL could not be fetched, or what was fetched failed its checksum."""


def get_cache_dir(cache_dir: Optional[str] = None) -> str:
    """The folder downloaded checkpoints are kept in.

    Args:
        cache_dir: Returned (with ``~`` expanded) if given.

    Returns:
        ``cache_dir``, else ``$WORKBENCH_CACHE``, else the platform cache folder plus
        ``workbench``: ``$XDG_CACHE_HOME/workbench`` or ``~/.cache/workbench`` on Linux,
        ``~/Library/Caches/workbench`` on macOS, ``%LOCALAPPDATA%\\workbench\\Cache`` on Windows.
    """
    if cache_dir:
        return os.path.expanduser(cache_dir)
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        return os.path.expanduser(env)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return os.path.join(base, "workbench", "Cache")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/workbench")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "workbench")


def resolve_url(path: str) -> Optional[str]:
    """The http(s) URL a checkpoint path stands for, or ``None`` for a local path.

    ``detectron2://X`` becomes ``DETECTRON2_PREFIX + X``; other ``scheme://`` forms than
    http, https, file and detectron2 raise ``ValueError``.
    """
    if path.startswith("detectron2://"):
        return DETECTRON2_PREFIX + path[len("detectron2://"):].lstrip("/")
    if path.startswith(("http://", "https://")):
        return path
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", path)
    if m and m.group(1) != "file":
        raise ValueError(
            f"Unsupported checkpoint path '{path}': expected a local file, http(s)://, file:// "
            f"or detectron2:// (got scheme '{m.group(1)}://')."
        )
    return None


def cache_path_for_url(url: str, cache_dir: Optional[str] = None) -> str:
    """Where :func:`get_local_path` keeps the download of ``url``: ``<cache>/<host>/<path>``."""
    parsed = urlparse(url)
    parts = [p for p in unquote(parsed.path).split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"Cannot derive a cache file name from URL '{url}'.")
    host = parsed.netloc.replace(":", "_")  # "localhost:8000" is not a valid name everywhere
    return os.path.join(get_cache_dir(cache_dir), host, *parts)


def expected_hash(filename: str) -> Optional[Tuple[str, str]]:
    """The checksum a file name promises, as ``(algorithm, hex prefix)``, or ``None``.

    >>> expected_hash("model_final_f10217.pkl")
    ('md5', 'f10217')
    >>> expected_hash("resnet50-0676ba61.pth")
    ('sha256', '0676ba61')
    >>> expected_hash("R-50.pkl") is None
    True
    """
    base = os.path.basename(filename)
    m = _D2_HASH_RE.match(base)
    if m:
        return "md5", m.group(1)
    m = _HUB_HASH_RE.search(base)
    if m:
        return "sha256", m.group(1)
    return None


def download(url: str, dst: str, *, progress: bool = True, check_hash: bool = True,
             timeout: float = 60.0) -> str:
    """Downloads ``url`` to ``dst`` atomically, verifying the checksum its name carries.

    The bytes go to a temporary file beside ``dst``, renamed to ``dst`` only once complete and
    verified; on any failure the temporary file is removed and ``dst`` is left untouched.

    Args:
        url: An http(s) URL.
        dst: Destination file; its folder is created.
        progress: Show a tqdm progress bar (on stderr).
        check_hash: Verify the checksum named by :func:`expected_hash` of ``dst``'s basename.
        timeout: Socket timeout in seconds.

    Returns:
        ``dst``.

    Raises:
        DownloadError: The URL cannot be fetched (the message says where to put the file by
            hand), or the download does not match its checksum.
    """
    from tqdm import tqdm

    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    want = expected_hash(dst) if check_hash else None
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    # A unique name opened with "x" (not mkstemp): the file gets the usual umask permissions.
    tmp: Optional[str] = os.path.join(folder, f".{os.path.basename(dst)}.{uuid.uuid4().hex}.part")
    try:
        logger.info("Downloading %s to %s", url, dst)
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            raise DownloadError(_offline_message(url, dst, e)) from e
        with response, open(tmp, "xb") as out:
            total = response.headers.get("Content-Length")
            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=os.path.basename(dst), disable=not progress)
            received = 0
            with bar:
                try:
                    while True:
                        chunk = response.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                        for d in digests.values():
                            d.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except OSError as e:
                    raise DownloadError(_offline_message(url, dst, e)) from e
            if total and received != int(total):
                raise DownloadError(
                    f"Download of {url} stopped after {received} of {total} bytes; try again."
                )
            out.flush()
            os.fsync(out.fileno())
        if want is not None:
            algo, prefix = want
            got = digests[algo].hexdigest()
            if not got.startswith(prefix):
                raise DownloadError(
                    f"Checksum mismatch for {url}: its name promises a {algo} starting with "
                    f"'{prefix}', the downloaded bytes have {algo} {got}. The download was "
                    f"discarded. If the file is right after all, put it at {dst} yourself "
                    "(cached files are used as they are)."
                )
        os.replace(tmp, dst)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return dst


def get_local_path(path: str, *, cache_dir: Optional[str] = None, progress: bool = True,
                   force: bool = False) -> str:
    """A local file holding the checkpoint ``path`` names, downloading it on first use.

    Args:
        path: Local path, ``file://``, ``http(s)://`` or ``detectron2://`` (see module doc).
        cache_dir: Overrides :func:`get_cache_dir` for URLs.
        progress: Show a progress bar while downloading.
        force: For URLs, download again even if the file is cached. The new download replaces
            the cached file only once complete and verified (see :func:`download`), so a
            failed refresh (offline, bad checksum) raises and leaves the cached copy as it was.

    Raises:
        FileNotFoundError: A local path that does not exist.
        DownloadError: A URL that cannot be fetched (the message names the URL and the exact
            cache path to put the file at by hand) or fails its checksum.
    """
    path = os.fspath(path)
    url = resolve_url(path)
    if url is None:
        local = path
        if local.startswith("file://"):
            local = urllib.request.url2pathname(urlparse(local).path)
        local = os.path.expanduser(local)
        if not os.path.isfile(local):
            what = "is a folder, not a file" if os.path.isdir(local) else "does not exist"
            raise FileNotFoundError(f"Checkpoint '{path}' {what}.")
        return local
    dst = cache_path_for_url(url, cache_dir)
    if os.path.isfile(dst) and not force:
        logger.info("Using cached %s for %s", dst, path)
        return dst
    return download(url, dst, progress=progress)


def _offline_message(url: str, dst: str, err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        what = f"the server answered HTTP {err.code} {err.reason}"
        hint = "If you have the file from elsewhere, put it at"
    else:
        what = f"{type(err).__name__}: {getattr(err, 'reason', None) or err}"
        hint = "Without internet access, fetch that URL on another machine and copy the file to"
    return (
        f"Could not download {url} ({what}).\n{hint}\n    {dst}\n"
        "(downloads are cached under $WORKBENCH_CACHE, else the platform cache folder)."
    )

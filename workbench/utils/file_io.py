"""``PathManager``: one file API over local paths and prefixed paths such as ``detectron2://``.

detectron2 uses iopath's ``PathManager``; this is a small stand-in with the same calls
(``open``, ``exists``, ``isfile``, ``isdir``, ``ls``, ``mkdirs``, ``rm``, ``get_local_path``,
``copy``, ``register_handler``) over the local file system, plus a registry of handlers for
paths that start with a prefix::

    from workbench.utils.file_io import PathHandler, PathManager

    class BucketHandler(PathHandler):
        PREFIX = "bucket://"

        def _get_supported_prefixes(self):
            return [self.PREFIX]

        def _get_local_path(self, path, **kwargs):
            return "/mnt/bucket/" + path[len(self.PREFIX):]

    PathManager.register_handler(BucketHandler())
    PathManager.open("bucket://a/b.yaml")        # opens /mnt/bucket/a/b.yaml

Registered by default: ``http://`` and ``https://`` URLs (downloaded once into the
cache of :mod:`workbench.checkpoint.catalog`, only when a local copy is asked for), and
``detectron2://X``, which stands for ``https://dl.fbaipublicfiles.com/detectron2/X``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from typing import IO, Any, Dict, List, Union

__all__ = ["PathManager", "PathManagerBase", "PathHandler", "NativePathHandler",
           "HTTPURLHandler", "Detectron2Handler"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class PathHandler:
    """Serves the paths that start with the prefixes :meth:`_get_supported_prefixes` returns.

    Subclasses implement what their storage supports. The defaults: ``_get_local_path`` is
    required; ``_open`` in a read mode opens the local copy; every other operation raises
    ``NotImplementedError`` naming the handler and the path.
    """

    def _get_supported_prefixes(self) -> List[str]:
        """The path prefixes this handler serves, e.g. ``["detectron2://"]``."""
        raise NotImplementedError(f"{type(self).__name__} must define _get_supported_prefixes().")

    def _unsupported(self, operation: str, path: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} does not support {operation}() (path '{path}')."
        )

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        raise self._unsupported("get_local_path", path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        if any(c in mode for c in "wax+"):
            raise self._unsupported(f"open(mode={mode!r})", path)
        return open(self._get_local_path(path), mode, buffering, **kwargs)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        raise self._unsupported("exists", path)

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        raise self._unsupported("isfile", path)

    def _isdir(self, path: str, **kwargs: Any) -> bool:
        raise self._unsupported("isdir", path)

    def _ls(self, path: str, **kwargs: Any) -> List[str]:
        raise self._unsupported("ls", path)

    def _mkdirs(self, path: str, **kwargs: Any) -> None:
        raise self._unsupported("mkdirs", path)

    def _rm(self, path: str, **kwargs: Any) -> None:
        raise self._unsupported("rm", path)

    def _copy(self, src_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any) -> bool:
        raise self._unsupported("copy", src_path)


class NativePathHandler(PathHandler):
    """Local paths: everything that no registered prefix claims."""

    def _get_supported_prefixes(self) -> List[str]:
        return []

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        return os.fspath(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        return open(path, mode, buffering, **kwargs)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        return os.path.exists(path)

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        return os.path.isfile(path)

    def _isdir(self, path: str, **kwargs: Any) -> bool:
        return os.path.isdir(path)

    def _ls(self, path: str, **kwargs: Any) -> List[str]:
        return os.listdir(path)

    def _mkdirs(self, path: str, **kwargs: Any) -> None:
        os.makedirs(path, exist_ok=True)

    def _rm(self, path: str, **kwargs: Any) -> None:
        os.remove(path)

    def _copy(self, src_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any) -> bool:
        # iopath logs and returns False for an existing destination; raising is harder to miss.
        if os.path.exists(dst_path) and not overwrite:
            raise FileExistsError(
                f"Cannot copy '{src_path}' to '{dst_path}': the destination exists "
                "(pass overwrite=True)."
            )
        shutil.copyfile(src_path, dst_path)
        return True


class HTTPURLHandler(PathHandler):
    """``http://`` and ``https://`` URLs, read through a local cached download."""

    def _get_supported_prefixes(self) -> List[str]:
        return ["http://", "https://"]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        # Imported here: the checkpoint package imports much more than file access needs.
        from workbench.checkpoint import catalog

        # force: the catalog downloads again and replaces the cached file atomically; if the
        # download fails, the cached copy is still there.
        return catalog.get_local_path(path, force=force, **kwargs)


class Detectron2Handler(PathHandler):
    """``detectron2://X``: a file hosted under detectron2's public URL prefix."""

    PREFIX = "detectron2://"
    S3_DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _to_url(self, path: str) -> str:
        return self.S3_DETECTRON2_PREFIX + path[len(self.PREFIX):]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        return PathManager.get_local_path(self._to_url(path), force=force, **kwargs)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        return PathManager.open(self._to_url(path), mode, buffering, **kwargs)


class PathManagerBase:
    """Sends each call to the handler of the longest registered prefix the path starts with,
    or to the local file system when none matches."""

    def __init__(self) -> None:
        self._path_handlers: Dict[str, PathHandler] = OrderedDict()
        self._native_path_handler = NativePathHandler()

    def _get_path_handler(self, path: PathLike) -> PathHandler:
        path = os.fspath(path)
        for prefix, handler in self._path_handlers.items():  # longest prefixes first
            if path.startswith(prefix):
                return handler
        return self._native_path_handler

    def register_handler(self, handler: PathHandler, allow_override: bool = False) -> None:
        """Routes the paths with ``handler``'s prefixes to it.

        Raises:
            TypeError: ``handler`` is not a :class:`PathHandler`.
            KeyError: another handler already serves one of the prefixes and
                ``allow_override`` is False.
        """
        if not isinstance(handler, PathHandler):
            raise TypeError(f"register_handler expects a PathHandler, got {type(handler).__name__}.")
        prefixes = handler._get_supported_prefixes()
        for prefix in prefixes:
            current = self._path_handlers.get(prefix)
            if current is not None and not allow_override:
                raise KeyError(
                    f"Prefix '{prefix}' is already served by {type(current).__name__}; pass "
                    "allow_override=True to replace it."
                )
            if current is not None:
                logger.warning("Replacing %s by %s for prefix '%s'.",
                               type(current).__name__, type(handler).__name__, prefix)
        for prefix in prefixes:
            self._path_handlers[prefix] = handler
        # Longest prefix first, so that "s3://bucket/" wins over "s3://".
        self._path_handlers = OrderedDict(
            sorted(self._path_handlers.items(), key=lambda kv: kv[0], reverse=True)
        )

    def open(self, path: PathLike, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        """Opens ``path`` like the built-in ``open`` (``encoding=``, ``newline=`` ... pass on)."""
        path = os.fspath(path)
        return self._get_path_handler(path)._open(path, mode, buffering, **kwargs)

    def get_local_path(self, path: PathLike, force: bool = False, **kwargs: Any) -> str:
        """A local file with the contents of ``path``; remote files are downloaded (cached).

        Args:
            force: fetch again even if a cached copy exists (remote handlers only).
        """
        path = os.fspath(path)
        return self._get_path_handler(path)._get_local_path(path, force=force, **kwargs)

    def copy(self, src_path: PathLike, dst_path: PathLike, overwrite: bool = False,
             **kwargs: Any) -> bool:
        """Copies a file; both paths must belong to the same handler.

        Raises:
            ValueError: the paths belong to different handlers.
            FileExistsError: ``dst_path`` exists and ``overwrite`` is False.
        """
        src_path, dst_path = os.fspath(src_path), os.fspath(dst_path)
        handler = self._get_path_handler(src_path)
        if self._get_path_handler(dst_path) is not handler:
            raise ValueError(
                f"Cannot copy '{src_path}' to '{dst_path}': they belong to different path "
                "handlers. Copy through get_local_path() and open() instead."
            )
        return handler._copy(src_path, dst_path, overwrite, **kwargs)

    def exists(self, path: PathLike, **kwargs: Any) -> bool:
        path = os.fspath(path)
        return self._get_path_handler(path)._exists(path, **kwargs)

    def isfile(self, path: PathLike, **kwargs: Any) -> bool:
        path = os.fspath(path)
        return self._get_path_handler(path)._isfile(path, **kwargs)

    def isdir(self, path: PathLike, **kwargs: Any) -> bool:
        path = os.fspath(path)
        return self._get_path_handler(path)._isdir(path, **kwargs)

    def ls(self, path: PathLike, **kwargs: Any) -> List[str]:
        """The names (not paths) of the entries in the folder ``path``."""
        path = os.fspath(path)
        return self._get_path_handler(path)._ls(path, **kwargs)

    def mkdirs(self, path: PathLike, **kwargs: Any) -> None:
        """Creates the folder ``path`` and its parents; no error if it exists."""
        path = os.fspath(path)
        self._get_path_handler(path)._mkdirs(path, **kwargs)

    def rm(self, path: PathLike, **kwargs: Any) -> None:
        """Removes the file ``path``."""
        path = os.fspath(path)
        self._get_path_handler(path)._rm(path, **kwargs)


#: The process-wide path manager (detectron2's ``detectron2.utils.file_io.PathManager``).
PathManager = PathManagerBase()
PathManager.register_handler(HTTPURLHandler())
PathManager.register_handler(Detectron2Handler())

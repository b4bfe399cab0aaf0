"""LazyConfig: detectron2's Python-file configs, built on omegaconf.

A lazy config is a tree of omegaconf ``DictConfig`` nodes in which a node with a ``_target_``
describes a call (see :class:`LazyCall` and :func:`~workbench.config.instantiate`). Such trees
are written as ``.py`` files (detectron2's ``configs/common/...``, ViTDet, MViTv2), edited in
Python or with ``"a.b=1"`` overrides, and saved to / loaded from YAML.

Trust, and what runs when:

* **A ``.py`` config is Python code, and loading it runs it**, exactly as in detectron2. workbench
  runs a ``.py`` config only when asked to: :meth:`LazyConfig.load` with a path the caller names,
  or :func:`workbench.model_zoo.get_config` on a file shipped inside the package. Never load a
  ``.py`` config you would not run as a script.
* **A ``.yaml`` lazy config is data.** :meth:`LazyConfig.load` reads it with ``yaml.safe_load``:
  a file carrying Python tags (``!!python/object/apply:...``, which detectron2 writes for values
  such as ``functools.partial``) is refused with an error naming the file, and no code from the
  file runs. (:func:`~workbench.config.instantiate` does call the ``_target_`` callables a config
  names, so instantiate only configs you trust.)
  ``${...}`` interpolations may only refer to other keys: resolvers such as ``${oc.env:VAR}``
  (which would copy environment variables, e.g. secrets, into the config) are refused.
* :meth:`LazyConfig.save` writes plain YAML only. Classes, functions and ``functools.partial``
  objects used as *values* (RegNet's ``stem_class``, ViTDet's ``norm_layer``) are written as
  plain ``_target_`` nodes that :func:`~workbench.config.instantiate` turns back into them
  (see :mod:`workbench.config.lazy_yaml`); other values YAML cannot hold (lambdas, local
  classes, objects) are written as readable ``!unsaved '<repr>'`` entries with a warning naming
  their keys, and loading such a file fails with an error naming the tag. detectron2 falls back
  to a cloudpickle file instead; workbench writes no pickles, since loading one would run code.
* Files are read through :data:`workbench.utils.file_io.PathManager`, so configs behind a
  registered path handler load (relative imports inside them included), as in detectron2.

Names from detectron2: while a ``.py`` config runs, its imports of ``detectron2`` /
``detectron2.X`` give ``workbench`` / ``workbench.X`` (and ``fvcore.common.param_scheduler``
gives ``workbench.solver.lr_scheduler`` when fvcore is not installed). This is a scoped hook: the
config file's globals carry their own ``__import__``; nothing global is patched, and code outside
config files is not affected (see :mod:`workbench.compat` for an opt-in global alias).

Relative imports inside config files (``from ..common.data.coco import dataloader``,
``from .mask_rcnn_fpn import model``) import *other config files* by their location on disk: no
``__init__.py`` is needed, nothing is cached (each import runs the file again, so edits to an
imported config never leak into another), and imported dicts become ``DictConfig``.
"""

from __future__ import annotations

import builtins
import collections.abc as abc
import dataclasses
import inspect
import logging
import os
import posixpath
import threading
import types
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from workbench.utils.file_io import PathManager
from workbench.utils.registry import _convert_target_to_string

from . import lazy_overrides, lazy_yaml
from .instantiate import map_module_name

__all__ = ["LazyCall", "LazyConfig"]

logger = logging.getLogger(__name__)

# Namespace in which config files "live": marks their globals so that relative imports made by
# config code are read as imports of other config files.
_CFG_PACKAGE_NAME = "workbench._cfg_loader"


class LazyCall:
    """Wrap a callable so that calling it records the call instead of making it.

    ``LazyCall(f)(a=1, b=2)`` returns ``DictConfig({"_target_": f, "a": 1, "b": 2})``, which
    can be edited and later built with :func:`~workbench.config.instantiate`. Only keyword
    arguments are accepted, as in detectron2.

    Example::

        from torch import nn
        from workbench.config import LazyCall as L, instantiate

        layer_cfg = L(nn.Conv2d)(in_channels=32, out_channels=32, kernel_size=3)
        layer_cfg.out_channels = 64   # edit before building
        layer = instantiate(layer_cfg)
    """

    def __init__(self, target: Any) -> None:
        if not (callable(target) or isinstance(target, (str, abc.Mapping))):
            raise TypeError(
                "LazyCall needs a callable, a dotted name of one, or a config that builds one; "
                f"got {target!r} ({type(target).__name__})."
            )
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        target = self._target
        if dataclasses.is_dataclass(target):
            # omegaconf cannot hold a dataclass type as a value: store its name instead.
            target = _convert_target_to_string(target)
        kwargs["_target_"] = target
        return DictConfig(content=kwargs, flags={"allow_objects": True})


def _cast_to_config(obj: Any) -> Any:
    if isinstance(obj, dict):
        return DictConfig(obj, flags={"allow_objects": True})
    return obj


# ------------------------------------------------------------------------------ .py configs
_loading = threading.local()  # stack of config files being executed, to report import cycles


def _line_in(tb: Optional[types.TracebackType], filename: str) -> Optional[int]:
    """The line of ``filename`` where an exception passed through, if any (innermost)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _is_local(path: str) -> bool:
    """Whether ``path`` is a plain local path (no registered PathManager prefix)."""
    return PathManager._get_path_handler(path) is PathManager._native_path_handler


def _split_prefix(path: str) -> Tuple[str, str]:
    """``(registered PathManager prefix or "", rest of the path)``."""
    if _is_local(path):
        return "", path
    prefix = next(p for p in PathManager._path_handlers if path.startswith(p))
    return prefix, path[len(prefix):]


def _dirname(path: str) -> str:
    prefix, rest = _split_prefix(path)
    return prefix + posixpath.dirname(rest) if prefix else os.path.dirname(rest)


def _join_path(folder: str, *names: str) -> str:
    prefix, rest = _split_prefix(folder)
    if not prefix:
        return os.path.join(rest, *names)
    return prefix + posixpath.normpath(posixpath.join(rest, *names)).lstrip("/")


def _path_test(kind: str, path: str) -> Optional[bool]:
    """``PathManager.isfile`` / ``isdir`` (``kind``), else the same test on the handler's local
    copy; None when neither can tell."""
    try:
        return bool(getattr(PathManager, kind)(path))
    except NotImplementedError:
        pass
    try:
        return bool(getattr(os.path, kind)(PathManager.get_local_path(path)))
    except (NotImplementedError, OSError):
        return None


def _read_text(filename: str) -> str:
    """The text of a config file, read through :data:`PathManager` (so configs behind a
    registered path handler load, as in detectron2)."""
    if _path_test("isfile", filename) is False:
        raise FileNotFoundError(f"Config file {filename} does not exist.")
    try:
        with PathManager.open(filename, "r", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"Config file {filename} does not exist ({e}).") from e


def _exec_config_file(filename: str) -> Dict[str, Any]:
    """Run one ``.py`` config file in a fresh namespace and return that namespace."""
    if _is_local(filename):
        filename = os.path.abspath(filename)
    stack: List[str] = getattr(_loading, "stack", [])
    if filename in stack:
        chain = " -> ".join(stack[stack.index(filename):] + [filename])
        raise ImportError(f"Circular import between config files: {chain}")
    content = _read_text(filename)
    try:
        # Compiling with the file name puts it in tracebacks and lets load_rel find the file.
        code = compile(content, filename, "exec")
    except SyntaxError as e:
        raise SyntaxError(f"Config file {filename} has a syntax error: {e}") from e
    base = os.path.splitext(os.path.basename(filename))[0]
    package = f"{_CFG_PACKAGE_NAME}{uuid.uuid4().hex[:8]}"
    namespace: Dict[str, Any] = {
        "__file__": filename,
        "__name__": f"{package}.{base}",
        "__package__": package,
        # Config code (and functions it defines) import through _config_import; nothing else does.
        "__builtins__": _config_builtins(),
    }
    _loading.stack = stack + [filename]
    try:
        exec(code, namespace)
    except ImportError as e:
        if getattr(e, "_config_file", None):
            raise  # already says which config file failed (an imported one)
        line = _line_in(e.__traceback__, filename)
        where = f"{filename}, line {line}" if line else filename
        try:
            err = type(e)(f"Config file {where}: {e}", name=e.name, path=e.path)
        except TypeError:  # an ImportError subclass with another signature
            err = ImportError(f"Config file {where}: {e}", name=e.name, path=e.path)
        err._config_file = filename  # type: ignore[attr-defined]
        raise err from e
    finally:
        _loading.stack = stack
    return namespace


def _find_relative_config(importer: str, name: str, level: int) -> str:
    dots = "." * level
    if not name:
        raise ImportError(
            f"Config file {importer}: 'from {dots} import ...' is not supported; config files "
            f"import names from other config files, e.g. 'from {dots}file import name'."
        )
    folder = _dirname(importer)
    for _ in range(level - 1):
        folder = _dirname(folder)
    target = _join_path(folder, *name.split(".")) + ".py"
    if _path_test("isfile", target) is False:
        if _path_test("isdir", target[: -len(".py")]):
            raise ImportError(
                f"Config file {importer}: '{dots}{name}' is a folder; relative imports in config "
                "files can only import other config files."
            )
        raise ImportError(
            f"Config file {importer}: cannot import '{dots}{name}': {target} does not exist."
        )
    return target


def _import_config_file(importer: str, name: str, fromlist: Sequence[str], level: int):
    target = _find_relative_config(importer, name, level)
    namespace = _exec_config_file(target)
    module = types.ModuleType(namespace["__name__"])
    module.__dict__.update(namespace)
    for attr in fromlist or ():
        if attr == "*":
            continue
        if attr not in namespace:
            raise ImportError(
                f"Config file {importer}: cannot import name {attr!r} from config file {target}."
            )
        module.__dict__[attr] = _cast_to_config(namespace[attr])
    return module


def _config_import(name, globals=None, locals=None, fromlist=(), level=0):
    """``__import__`` as seen by code in config files: config-relative imports, mapped names."""
    if level > 0:
        package = (globals or {}).get("__package__") or ""
        if package.startswith(_CFG_PACKAGE_NAME):
            return _import_config_file(globals["__file__"], name, fromlist, level)
        return builtins.__import__(name, globals, locals, fromlist, level)
    mapped = map_module_name(name)
    try:
        return builtins.__import__(mapped, globals, locals, fromlist, level)
    except ModuleNotFoundError as e:
        if mapped == name:
            raise
        raise ModuleNotFoundError(
            f"{e} (the config imports {name!r}, read here as {mapped!r}; workbench does not "
            "provide that module)",
            name=e.name,
        ) from e


def _config_builtins() -> Dict[str, Any]:
    """A fresh copy of the builtins for one config file, with ``__import__`` scoped to config
    files: a config that edits its ``__builtins__`` affects neither later configs nor Python."""
    patched = dict(vars(builtins))
    patched["__import__"] = _config_import
    return patched


# ----------------------------------------------------------------------------------- LazyConfig
_Keys = Union[None, str, Tuple[str, ...]]


class LazyConfig:
    """Load, save, override and print omegaconf configs that describe lazily built objects."""

    @staticmethod
    def load_rel(filename: str, keys: _Keys = None):
        """Like :meth:`load`, with ``filename`` relative to the calling file's folder.

        Works like a relative import, but takes the file name as a string (so any character is
        allowed in it).
        """
        caller = inspect.stack()[1].filename
        if caller.startswith("<"):
            raise RuntimeError(f"load_rel({filename!r}) cannot tell which file it is called from.")
        return LazyConfig.load(_join_path(_dirname(caller), filename), keys)

    @staticmethod
    def load(filename: str, keys: _Keys = None):
        """Load a ``.py`` or ``.yaml`` lazy config.

        A ``.py`` file is executed (it is Python code, with its own copy of the builtins); a
        ``.yaml`` file is read as data with ``yaml.safe_load``. Files are read through
        :data:`~workbench.utils.file_io.PathManager`. See the module docstring.

        Args:
            filename: Path of the file (absolute, or relative to the working directory).
            keys: A name, or a tuple of names, of the top-level values to return. When None,
                all top-level values that are configs (dicts, DictConfig, ListConfig) and whose
                names do not start with ``_`` are returned in one ``DictConfig``.

        Returns:
            A ``DictConfig``; or, with ``keys``, that value (dicts turned into ``DictConfig``)
            or a tuple of them.

        Raises:
            ValueError: The file is neither ``.py`` nor ``.yaml`` / ``.yml``, or the YAML holds
                tags that safe loading refuses, or an interpolation that calls a resolver
                (``${oc.env:VAR}``); the message names the file (and key).
            FileNotFoundError: No such file.
            ImportError: The config imports something missing; the message names the config
                file and line.
            KeyError: A name in ``keys`` is not defined by the file.
        """
        filename = os.fspath(filename)
        ext = os.path.splitext(filename)[1]
        if ext not in (".py", ".yaml", ".yml"):
            raise ValueError(f"Config file {filename} must be a .py or .yaml / .yml file.")
        if ext == ".py":
            found: Dict[str, Any] = _exec_config_file(filename)
        else:
            found = lazy_yaml.load_yaml(filename, _read_text(filename))

        if keys is not None:
            names = (keys,) if isinstance(keys, str) else tuple(keys)
            missing = [k for k in names if k not in found]
            if missing:
                public = sorted(k for k in found if not str(k).startswith("_"))
                raise KeyError(f"Config file {filename} defines no {missing}; it has {public}.")
            values = tuple(_cast_to_config(found[k]) for k in names)
            return values[0] if isinstance(keys, str) else values
        if ext != ".py":
            return found
        return DictConfig(
            {
                name: _cast_to_config(value)
                for name, value in found.items()
                if isinstance(value, (DictConfig, ListConfig, dict)) and not name.startswith("_")
            },
            flags={"allow_objects": True},
        )

    @staticmethod
    def save(cfg: Any, filename: str) -> None:
        """Save a config to a YAML file, atomically (a failed save leaves no partial file).

        Written as plain YAML (see :mod:`workbench.config.lazy_yaml`): ``_target_`` callables as
        dotted names (``workbench.modeling.FPN``); classes and functions used as values as
        ``{_target_: workbench.utils.registry.locate, name: ...}`` nodes, and
        ``functools.partial`` values as ``workbench.config.partial_of`` nodes, which
        :func:`~workbench.config.instantiate` turns back into the same objects. Both only when
        the dotted name imports back to the very same object. Anything else (lambdas, classes
        defined inside functions or inside ``.py`` configs, arbitrary objects) is written as
        ``!unsaved '<repr>'`` with a warning naming its keys: the file stays readable, but
        :meth:`load` refuses it.

        Args:
            cfg: An omegaconf config (or a dict); it is not modified.
            filename: The local YAML file to write; replaced if it exists.

        Raises:
            FileNotFoundError: The folder of ``filename`` does not exist.
            ValueError: ``filename`` has a registered PathManager prefix (only local files are
                written, so that a save is atomic).
        """
        filename = os.fspath(filename)
        if not _is_local(filename):
            raise ValueError(
                f"Cannot save the config to {filename}: LazyConfig.save writes local files only "
                "(so that a failed save leaves no partial file); save locally, then copy it."
            )
        if not OmegaConf.is_config(cfg):
            cfg = OmegaConf.create(cfg, flags={"allow_objects": True})
        # A new tree of plain dicts / lists (cfg is not modified); resolve=False keeps ${...}
        # interpolations as written.
        data = OmegaConf.to_container(cfg, resolve=False)
        unsaved: List[str] = []
        data = lazy_yaml.mark_unsaved(data, "", unsaved)
        if unsaved:
            logger.warning(
                "Saving %s: these values cannot be written as plain YAML and are saved as "
                "'!unsaved' entries, so the file is readable but cannot be loaded: %s",
                filename, ", ".join(unsaved),
            )
        lazy_yaml.atomic_write(filename, lazy_yaml.dump(data))

    @staticmethod
    def apply_overrides(cfg: Any, overrides: Sequence[str]):
        """Apply ``"key.path=value"`` overrides to ``cfg`` in place (detectron2's command-line
        overrides), with the part of Hydra's grammar they use.

        Values: a Python literal (``1``, ``1e-3``, ``[1, 2]``, ``None``, ``'x'``); else
        ``true`` / ``false`` / ``null`` in any case; else a ``[...]`` / ``{...}`` list / dict
        whose bare words are strings (``names=[coco_2017_train,coco_2017_val]``); else the text
        as a string. An unquoted string that would replace a bool / int / float (``train.max_iter=abc``)
        is an error; quote it (``name='100'``) to set a string on purpose.

        Keys: the key must exist, except a new argument of a call (a node with a ``_target_``,
        e.g. ``optimizer.params.model=...``); ``+key=value`` adds a new key on purpose (and the
        nodes on its way), and is an error when the key exists. Unlike detectron2, a typo
        anywhere in a key is an error, not a new key. See :mod:`workbench.config.lazy_overrides`.

        Returns:
            ``cfg``.

        Raises:
            ValueError: An override is not of the form ``key=value`` / ``+key=value``, its
                ``[...]`` / ``{...}`` value is not valid, or an unquoted string would replace a
                number or bool; the message names the override.
            KeyError: A node on the key's path, or the key itself, does not exist (the message
                names the key and the closest existing keys), or ``+`` names an existing key.
        """
        return lazy_overrides.apply_overrides(cfg, overrides)

    @staticmethod
    def to_py(cfg: Any, prefix: str = "cfg.") -> str:
        """Render a config as Python-like code, for reading (not meant to be executed).

        Nodes with a ``_target_`` are shown as calls, other nodes as ``prefix.key = value``
        lines. Formatted with ``black`` when it is installed.
        """
        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        text = _to_py(cfg, [prefix])
        try:
            import black
        except ImportError:
            return text
        try:
            return black.format_str(text, mode=black.Mode())
        except black.InvalidInput:
            return text


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    try:
        return _convert_target_to_string(target)
    except AttributeError:
        return repr(target)


def _to_py(obj: Any, prefix: List[str], inside_call: bool = False) -> str:
    if isinstance(obj, abc.Mapping) and "_target_" in obj:
        args = ", ".join(
            f"{k}={_to_py(v, [], inside_call=True)}" for k, v in sorted(obj.items())
            if k != "_target_"
        )
        call = f"{_target_name(obj['_target_'])}({args})"
        return f"{''.join(prefix).rstrip('.')} = {call}" if prefix else call
    if isinstance(obj, abc.Mapping) and not inside_call:
        # Top-level groups: one "prefix.key=value" line per leaf or call.
        lines = []
        for k, v in sorted(obj.items()):
            if isinstance(v, abc.Mapping) and "_target_" not in v:
                lines.append(_to_py(v, prefix + [f"{k}."]))
            else:
                lines.append(f"{''.join(prefix)}{k}={_to_py(v, [])}")
        return "\n".join(lines)
    if isinstance(obj, abc.Mapping):
        items = ", ".join(f"{k!r}: {_to_py(v, [], True)}" for k, v in sorted(obj.items()))
        return "{" + items + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(_to_py(x, [], inside_call) for x in obj) + "]"
    return repr(obj)

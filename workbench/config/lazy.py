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
* :meth:`LazyConfig.save` writes plain YAML only. Values YAML cannot hold as data (functions,
  classes, ``partial`` objects used as *values*, not as ``_target_``) are written as readable
  ``!unsaved '<repr>'`` entries with a warning naming their keys; loading such a file fails with
  an error naming the tag. detectron2 falls back to a cloudpickle file instead; workbench writes
  no pickles, since loading one would run code.

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

import ast
import builtins
import collections.abc as abc
import dataclasses
import inspect
import logging
import os
import tempfile
import threading
import types
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from workbench.utils.registry import _convert_target_to_string

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


def _read_text(filename: str) -> str:
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"Config file {filename} does not exist.")
    with open(filename, encoding="utf-8") as f:
        return f.read()


def _exec_config_file(filename: str) -> Dict[str, Any]:
    """Run one ``.py`` config file in a fresh namespace and return that namespace."""
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
    folder = os.path.dirname(importer)
    for _ in range(level - 1):
        folder = os.path.dirname(folder)
    target = os.path.join(folder, *name.split(".")) + ".py"
    if not os.path.isfile(target):
        if os.path.isdir(target[: -len(".py")]):
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


_BUILTINS_LOCK = threading.Lock()
_BUILTINS: Optional[Dict[str, Any]] = None


def _config_builtins() -> Dict[str, Any]:
    global _BUILTINS
    with _BUILTINS_LOCK:
        if _BUILTINS is None:
            patched = dict(vars(builtins))
            patched["__import__"] = _config_import
            _BUILTINS = patched
    return _BUILTINS


# ----------------------------------------------------------------------------- .yaml configs
class _Unsaved:
    """A value that plain YAML cannot hold; saved as a readable, unloadable ``!unsaved`` tag."""

    def __init__(self, value: Any) -> None:
        self.text = repr(value)


class _ConfigDumper(yaml.SafeDumper):
    pass


_ConfigDumper.add_representer(tuple, lambda d, v: d.represent_list(list(v)))
_ConfigDumper.add_representer(_Unsaved, lambda d, v: d.represent_scalar("!unsaved", v.text))

_YAML_SCALARS = (str, int, float, bool, type(None))


def _mark_unsaved(obj: Any, path: str, found: List[str]) -> Any:
    """Replace values plain YAML cannot hold by :class:`_Unsaved`, recording their key paths."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "_target_" and callable(v):
                try:
                    v = _convert_target_to_string(v)  # found again by locate() on load
                except AttributeError:
                    pass  # no __module__ / __qualname__: reported as unsaved below
            out[k] = _mark_unsaved(v, f"{path}.{k}" if path else str(k), found)
        return out
    if isinstance(obj, (list, tuple)):
        return [_mark_unsaved(v, f"{path}.{i}" if path else str(i), found)
                for i, v in enumerate(obj)]
    if isinstance(obj, _YAML_SCALARS):
        return obj
    found.append(f"{path} ({type(obj).__name__})")
    return _Unsaved(obj)


def _load_yaml(filename: str) -> DictConfig:
    text = _read_text(filename)
    try:
        obj = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        mark = f" (line {e.problem_mark.line + 1})" if e.problem_mark is not None else ""
        raise ValueError(
            f"Config file {filename}{mark}: {e.problem}. Lazy YAML configs are loaded as plain "
            "data (yaml.safe_load), so Python-object tags are refused and no code from the "
            "file runs. Such tags appear when a config holding objects (e.g. functools.partial) "
            "is saved; load its .py config instead, or write those values as LazyCall dicts."
        ) from e
    except yaml.YAMLError as e:
        raise ValueError(f"Config file {filename} is not valid YAML: {e}") from e
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ValueError(
            f"Config file {filename} must hold a mapping at the top level, got "
            f"{type(obj).__name__}."
        )
    return OmegaConf.create(obj, flags={"allow_objects": True})


def _atomic_write(filename: str, text: str) -> None:
    """Write ``text`` to ``filename`` so that readers see the old file or the new one, never a
    half-written one: write a temporary file in the same folder, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(filename)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a config is an ordinary readable file
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        return LazyConfig.load(os.path.join(os.path.dirname(caller), filename), keys)

    @staticmethod
    def load(filename: str, keys: _Keys = None):
        """Load a ``.py`` or ``.yaml`` lazy config.

        A ``.py`` file is executed (it is Python code); a ``.yaml`` file is read as data with
        ``yaml.safe_load``. See the module docstring.

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
                tags that safe loading refuses.
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
            found = _load_yaml(filename)

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

        ``_target_`` callables are written as dotted names (``workbench.modeling.FPN``), which
        :func:`~workbench.config.instantiate` finds again. Values that plain YAML cannot hold
        are written as ``!unsaved '<repr>'`` with a warning naming their keys: the file stays
        readable, but :meth:`load` refuses it (see the module docstring).

        Args:
            cfg: An omegaconf config (or a dict); it is not modified.
            filename: The YAML file to write; replaced if it exists.
        """
        if not OmegaConf.is_config(cfg):
            cfg = OmegaConf.create(cfg, flags={"allow_objects": True})
        # A new tree of plain dicts / lists (cfg is not modified); resolve=False keeps ${...}
        # interpolations as written.
        data = OmegaConf.to_container(cfg, resolve=False)
        unsaved: List[str] = []
        data = _mark_unsaved(data, "", unsaved)
        if unsaved:
            logger.warning(
                "Saving %s: these values cannot be written as plain YAML and are saved as "
                "'!unsaved' entries, so the file is readable but cannot be loaded: %s",
                filename, ", ".join(unsaved),
            )
        text = yaml.dump(data, Dumper=_ConfigDumper, default_flow_style=None,
                         allow_unicode=True, width=9999)
        _atomic_write(filename, text)

    @staticmethod
    def apply_overrides(cfg: Any, overrides: Sequence[str]):
        """Apply ``"key.path=value"`` overrides to ``cfg`` in place.

        Values are read as Python literals (``1``, ``0.5``, ``[1, 2]``, ``None``, ``"x"``);
        anything else is kept as a string (``a=b`` sets the string ``"b"``). A key may add a new
        argument to an existing node (``optimizer.params.model=...``), but every node on the
        way to it must exist: a typo in the middle of a path is an error, not a new subtree
        (detectron2 creates it silently). Hydra's override grammar is not supported.

        Returns:
            ``cfg``.

        Raises:
            ValueError: An override is not of the form ``key=value``.
            KeyError: A node on the key's path does not exist or is not a config; the message
                names the key and the node.
        """
        if isinstance(overrides, str):
            raise TypeError(f"overrides must be a list of 'key=value' strings, got {overrides!r}.")
        for override in overrides:
            key, sep, text = override.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"Override {override!r} is not of the form 'key=value'.")
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                value = text
            _check_override_path(cfg, key)
            OmegaConf.update(cfg, key, value, merge=True)
        return cfg

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


_ABSENT = object()


def _check_override_path(cfg: Any, key: str) -> None:
    parts = key.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        node = OmegaConf.select(cfg, prefix, default=_ABSENT, throw_on_missing=False)
        if node is _ABSENT:
            parent = OmegaConf.select(cfg, ".".join(parts[: i - 1]), default=None) if i > 1 else cfg
            there = sorted(str(k) for k in parent.keys()) if isinstance(parent, DictConfig) else []
            raise KeyError(
                f"Cannot override '{key}': '{prefix}' does not exist"
                + (f" (keys there: {there})." if there else ".")
            )
        if not OmegaConf.is_config(node):
            raise KeyError(
                f"Cannot override '{key}': '{prefix}' is a {type(node).__name__} value "
                f"({node!r}), not a config node."
            )


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

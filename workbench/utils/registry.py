"""A name -> object registry, and ``locate``: the ways components are found from a config string.

Every component kind (backbone, RPN head, ROI heads, ...) has one registry that lives in the
kind's ``build.py``. ``workbench.modeling`` imports every registrant module, so a registered name
is never missing because some file was not imported.
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import importlib.util
import inspect
from typing import Any, Dict, Iterator, Optional, Tuple

__all__ = ["Registry", "locate"]


class Registry:
    """Maps names to objects (classes or functions).

    Register with a decorator or a call::

        BACKBONE_REGISTRY = Registry("BACKBONE")

        @BACKBONE_REGISTRY.register()
        class MyBackbone(Backbone): ...

        BACKBONE_REGISTRY.register(MyOtherBackbone)
        BACKBONE_REGISTRY.register(make_it, name="make_it_v2")

    and look up with ``BACKBONE_REGISTRY.get("MyBackbone")``.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: Dict[str, Any] = {}
        # Set by ``build.py`` files: how entries are called, shown in error messages.
        self.__doc__ = f"Registry of {name} objects."

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map and self._obj_map[name] is not obj:
            raise KeyError(
                f"An object named '{name}' was already registered in the '{self._name}' registry "
                f"({self._obj_map[name]!r}); pick another name."
            )
        self._obj_map[name] = obj

    def register(self, obj: Any = None, *, name: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``).

        Without ``obj``, returns a decorator.
        """
        if obj is None:

            def deco(func_or_class: Any) -> Any:
                self._do_register(name or func_or_class.__name__, func_or_class)
                return func_or_class

            return deco
        self._do_register(name or obj.__name__, obj)
        return obj

    def get(self, name: str) -> Any:
        ret = self._obj_map.get(name)
        if ret is None:
            known = sorted(self._obj_map)
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise KeyError(
                f"No object named '{name}' found in the '{self._name}' registry. "
                f"Registered names: {known}.{hint}"
            )
        return ret

    def __contains__(self, name: object) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return iter(self._obj_map.items())

    def __len__(self) -> int:
        return len(self._obj_map)

    def keys(self):
        return self._obj_map.keys()

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._obj_map))
        return f"Registry(name={self._name!r}, entries=[{names}])"


def _import_or_none(module_name: str) -> Any:
    """Import ``module_name``; None when that module (or a parent package) does not exist.

    An ImportError raised from *inside* an existing module is re-raised: hiding it would turn a
    broken dependency into a confusing "cannot locate".
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return None
        raise


# Module prefixes of names that detectron2 configs use and workbench provides elsewhere:
# (prefix as written, replacement, only when this top-level module is not installed).
_FALLBACK_PREFIXES = (
    ("fvcore.common.param_scheduler", "workbench.solver.lr_scheduler", "fvcore"),
)


def map_module_name(name: str) -> str:
    """The workbench module (or dotted object path) that a detectron2-era name stands for.

    ``detectron2`` / ``detectron2.X`` -> ``workbench`` / ``workbench.X``;
    ``fvcore.common.param_scheduler[.X]`` -> ``workbench.solver.lr_scheduler[.X]`` when fvcore
    is not installed. Any other name is returned unchanged.
    """
    if name == "detectron2" or name.startswith("detectron2."):
        return "workbench" + name[len("detectron2"):]
    for prefix, replacement, package in _FALLBACK_PREFIXES:
        if name == prefix or name.startswith(prefix + "."):
            if importlib.util.find_spec(package) is None:
                return replacement + name[len(prefix):]
    return name


def locate(name: str) -> Any:
    """Return the object a dotted path names, e.g. ``"torch.optim.SGD"``.

    The path is ``{module}.{qualname}``: the longest importable module prefix is imported and the
    rest is followed as attributes, so nested names such as ``"pkg.mod.Class.method"`` work. A
    detectron2-era name is read through :func:`map_module_name` (``detectron2.X`` as
    ``workbench.X``: module paths mirror detectron2's), and a single name such as ``"int"`` is
    looked up in builtins.

    Raises:
        ImportError: when no object of that name can be found; the message names the string.
    """
    if not isinstance(name, str) or not name or any(not p for p in name.split(".")):
        raise ImportError(f"Cannot locate {name!r}: expected a dotted path such as 'module.Class'.")
    parts = map_module_name(name).split(".")

    obj = _import_or_none(parts[0])
    if obj is None:
        if len(parts) == 1 and hasattr(builtins, parts[0]):
            return getattr(builtins, parts[0])
        raise ImportError(f"Cannot locate {name!r}: no module named {parts[0]!r}.")
    for i in range(1, len(parts)):
        if hasattr(obj, parts[i]):
            obj = getattr(obj, parts[i])
            continue
        # Not an attribute (yet): maybe a submodule that its package does not import.
        module = _import_or_none(".".join(parts[: i + 1])) if inspect.ismodule(obj) else None
        if module is None:
            raise ImportError(
                f"Cannot locate {name!r}: {'.'.join(parts[:i])!r} has no attribute or "
                f"submodule {parts[i]!r}."
            )
        obj = module
    return obj


def _convert_target_to_string(t: Any) -> str:
    """The inverse of :func:`locate`: the shortest ``module.qualname`` path that locates ``t``.

    ``pkg.sub._impl.Class`` becomes ``pkg.sub.Class`` when the shorter path names the same object,
    which keeps config files stable when an implementation moves between private modules.
    """
    module, qualname = t.__module__, t.__qualname__
    module_parts = module.split(".")
    for k in range(1, len(module_parts)):
        candidate = ".".join(module_parts[:k]) + "." + qualname
        try:
            if locate(candidate) is t:
                return candidate
        except ImportError:
            pass
    return f"{module}.{qualname}"

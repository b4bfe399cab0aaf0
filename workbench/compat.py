"""Opt-in alias: ``import detectron2...`` gives workbench's modules.

workbench's module paths mirror detectron2's (``detectron2.X`` -> ``workbench.X``). Code written
for detectron2 can run unchanged after::

    import workbench.compat
    workbench.compat.install()

    from detectron2.modeling.backbone.vit import ViT   # workbench.modeling.backbone.vit.ViT
    import detectron2.model_zoo                         # the workbench.model_zoo module object

The alias is off by default and nothing in workbench turns it on: it changes what a name means
for the whole process. (LazyConfig does not need it: while a ``.py`` config runs, its own
imports of ``detectron2.X`` are mapped, and nothing else is.) :func:`uninstall` removes it.

Decisions:

* ``detectron2.X`` *is* ``workbench.X`` (the same module object), so classes, registries and
  ``isinstance`` checks agree whichever name imported them.
* :func:`install` refuses (``RuntimeError``) when a real detectron2 is already imported: its
  modules and objects would live beside workbench's under the same name, and ``isinstance``
  or registry lookups would silently disagree depending on import order.
* A real detectron2 that is installed but not imported is shadowed while the alias is on,
  with a warning; :func:`uninstall` makes it importable again.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
import warnings
from typing import Optional

__all__ = ["enable_detectron2_alias", "install", "is_installed", "uninstall"]

_ALIAS = "detectron2"
_TARGET = "workbench"
_LOCK = threading.Lock()


def _target_name(fullname: str) -> str:
    return _TARGET + fullname[len(_ALIAS):]


class _AliasLoader(importlib.abc.Loader):
    """Makes ``detectron2.X`` the module ``workbench.X`` itself (not a copy)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        # A throwaway placeholder: the import system writes __spec__ / __loader__ onto the module
        # it creates, which must not touch the real workbench module.
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        real = importlib.import_module(_target_name(module.__name__))
        # The import system returns whatever sys.modules holds for the name after exec_module.
        sys.modules[module.__name__] = real


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``detectron2`` and its submodules as aliases of ``workbench`` ones."""

    _loader = _AliasLoader()

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        real_name = _target_name(fullname)
        if real_name not in sys.modules and importlib.util.find_spec(real_name) is None:
            return None  # the usual "No module named 'detectron2.X'" follows
        is_package = hasattr(importlib.import_module(real_name), "__path__")
        return importlib.machinery.ModuleSpec(fullname, self._loader, is_package=is_package)


_FINDER: Optional[_AliasFinder] = None


def is_installed() -> bool:
    """Whether the ``detectron2`` -> ``workbench`` alias is on."""
    return _FINDER is not None and _FINDER in sys.meta_path


def _real_detectron2_loaded() -> bool:
    for name, module in list(sys.modules.items()):
        if name == _ALIAS or name.startswith(_ALIAS + "."):
            if module is not sys.modules.get(_target_name(name)):
                return True
    return False


def install() -> None:
    """Turn the alias on: ``import detectron2.X`` gives the module ``workbench.X``.

    Calling it twice is harmless.

    Raises:
        RuntimeError: A real detectron2 (or some other module named ``detectron2``) is already
            imported in this process.
    """
    global _FINDER
    with _LOCK:
        if is_installed():
            return
        if _real_detectron2_loaded():
            raise RuntimeError(
                "A module named 'detectron2' that is not workbench is already imported; "
                "aliasing detectron2 to workbench now would leave two different objects under "
                "the same names. Install the alias before anything imports detectron2, or do "
                "not install it."
            )
        if importlib.util.find_spec(_ALIAS) is not None:
            warnings.warn(
                "A real detectron2 is installed; while the workbench alias is on, "
                "'import detectron2' gives workbench instead (workbench.compat.uninstall() "
                "undoes this).",
                stacklevel=2,
            )
        _FINDER = _AliasFinder()
        sys.meta_path.insert(0, _FINDER)


enable_detectron2_alias = install


def uninstall() -> None:
    """Turn the alias off and forget the ``detectron2.*`` names it created.

    Objects already imported through the alias stay usable (they are workbench's).
    """
    global _FINDER
    with _LOCK:
        if _FINDER is not None and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        _FINDER = None
        for name, module in list(sys.modules.items()):
            if name == _ALIAS or name.startswith(_ALIAS + "."):
                if module is sys.modules.get(_target_name(name)):
                    del sys.modules[name]

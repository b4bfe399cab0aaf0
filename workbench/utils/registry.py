"""A name -> object registry, the way components are found from a config string.

Every component kind (backbone, RPN head, ROI heads, ...) has one registry that lives in the
kind's ``build.py``. ``workbench.modeling`` imports every registrant module, so a registered name
is never missing because some file was not imported.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, Iterator, Optional, Tuple

__all__ = ["Registry"]


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

"""The base class of augmentations: objects that choose a :class:`Transform` for an input."""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional

from .transform import Transform

__all__ = ["Augmentation"]


class Augmentation:
    """Chooses a (possibly random) :class:`Transform` for an input.

    Subclasses implement :meth:`get_transform`, which must not modify its inputs; the returned
    transform is then applied to the image and to its annotations alike.
    """

    def _init(self, params: Optional[Dict[str, Any]] = None) -> None:
        """Stores the constructor's arguments as attributes (pass ``locals()``)."""
        for k, v in (params or {}).items():
            if k != "self" and not k.startswith("_"):
                setattr(self, k, v)

    def get_transform(self, image: Any) -> Transform:
        """Returns the transform to apply to ``image`` (e.g. an (H, W, C) numpy array)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        try:
            sig = inspect.signature(self.__init__)
            args = []
            for name, param in sig.parameters.items():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(self, name):
                    continue
                value = getattr(self, name)
                if param.default is not param.empty and value is param.default:
                    continue
                args.append(f"{name}={value!r}")
            return f"{type(self).__name__}({', '.join(args)})"
        except (TypeError, ValueError):
            return super().__repr__()

"""``@configurable``: build a component from a cfg or from plain keyword arguments.

A class decorated on its ``__init__`` with ``@configurable`` and carrying a
``from_config(cls, cfg, ...)`` classmethod can be called both ways::

    head = StandardRPNHead(cfg, input_shape)                  # cfg translated by from_config
    head = StandardRPNHead(in_channels=256, num_anchors=3)    # explicit arguments

``from_config`` only maps cfg keys to constructor arguments, so that the translation lives in one
place. Keyword arguments given beside a cfg override what ``from_config`` returns.
A function can be decorated too: ``@configurable(from_config=fn)``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Optional

__all__ = ["configurable"]


def _is_cfg(obj: Any) -> bool:
    # Avoid importing yacs here: any DictConfig-like or CfgNode-like mapping with upper-case keys
    # counts. detectron2 checks isinstance(CfgNode) / DictConfig; we check the base class name
    # so that yacs' CfgNode and ours both qualify.
    from yacs.config import CfgNode as _YacsCfgNode

    return isinstance(obj, _YacsCfgNode)


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    if args and _is_cfg(args[0]):
        return True
    return _is_cfg(kwargs.get("cfg"))


def _get_args_from_config(from_config_func: Callable, *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """Call ``from_config_func`` with the arguments it accepts; pass the rest through."""
    signature = inspect.signature(from_config_func)
    params = list(signature.parameters)
    if not params or params[0] != "cfg":
        name = getattr(from_config_func, "__qualname__", repr(from_config_func))
        raise TypeError(f"{name} must take 'cfg' as its first argument, got parameters {params}.")
    accepts_var_kw = any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    if accepts_var_kw:
        return from_config_func(*args, **kwargs)
    supported = set(params)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in supported}
    ret = from_config_func(*args, **kwargs)
    if not isinstance(ret, dict):
        raise TypeError(
            f"{getattr(from_config_func, '__qualname__', from_config_func)} must return a dict, "
            f"got {type(ret).__name__}."
        )
    # Arguments that from_config does not know about go straight to __init__.
    ret.update(extra)
    return ret


def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None):
    """Decorate ``__init__`` (no arguments) or a function (with ``from_config=``)."""
    if init_func is not None:
        if not (inspect.isfunction(init_func) and init_func.__name__ == "__init__"):
            raise TypeError(
                "@configurable without arguments decorates a class's __init__; "
                "for a function use @configurable(from_config=...)."
            )

        @functools.wraps(init_func)
        def wrapped(self, *args: Any, **kwargs: Any) -> None:
            if not _called_with_cfg(*args, **kwargs):
                init_func(self, *args, **kwargs)
                return
            from_config_func = getattr(type(self), "from_config", None)
            if from_config_func is None:
                raise AttributeError(
                    f"{type(self).__name__} uses @configurable but has no classmethod from_config."
                )
            if not inspect.ismethod(from_config_func):
                raise TypeError(f"{type(self).__name__}.from_config must be a classmethod.")
            explicit = _get_args_from_config(from_config_func, *args, **kwargs)
            init_func(self, **explicit)

        return wrapped

    if from_config is None:
        # Used as @configurable() on __init__.
        return configurable

    if not inspect.isfunction(from_config):
        raise TypeError("from_config= must be a function taking cfg as its first argument.")

    def wrapper(orig_func: Callable) -> Callable:
        @functools.wraps(orig_func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(*args, **kwargs):
                explicit = _get_args_from_config(from_config, *args, **kwargs)
                return orig_func(**explicit)
            return orig_func(*args, **kwargs)

        wrapped.from_config = from_config  # type: ignore[attr-defined]
        return wrapped

    return wrapper

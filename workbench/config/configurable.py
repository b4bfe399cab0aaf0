"""``@configurable``: build a component from a cfg or from plain keyword arguments.

A class decorated on its ``__init__`` with ``@configurable`` and carrying a
``from_config(cls, cfg, ...)`` classmethod can be called both ways::

    head = StandardRPNHead(cfg, input_shape)                  # cfg translated by from_config
    head = StandardRPNHead(in_channels=256, num_anchors=3)    # explicit arguments

``from_config`` only maps cfg keys to constructor arguments, so that the translation lives in one
place. Keyword arguments given beside a cfg override what ``from_config`` returns.
A function can be decorated too: ``@configurable(from_config=fn)``. A cfg is a yacs
``CfgNode`` (what :func:`get_cfg` returns) or an omegaconf ``DictConfig``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Optional

__all__ = ["configurable"]


def _is_cfg(obj: Any) -> bool:
    """A yacs ``CfgNode`` (ours subclasses it) or an omegaconf ``DictConfig``, as detectron2."""
    from omegaconf import DictConfig
    from yacs.config import CfgNode as _YacsCfgNode

    return isinstance(obj, (_YacsCfgNode, DictConfig))


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
    accepts_var_args = any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()
    )
    if accepts_var_args:  # from_config takes everything and decides itself
        return _plain_lists(from_config_func(*args, **kwargs))
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
    return _plain_lists(ret)


def _plain_lists(args: Dict[str, Any]) -> Dict[str, Any]:
    """Turns omegaconf ``ListConfig`` arguments into plain lists.

    A DictConfig cfg hands out ``ListConfig`` where a CfgNode hands out lists and tuples; our
    constructors check for ``list`` / ``tuple`` (loudly), so convert the top-level values here
    once rather than in every constructor. Other values, DictConfig sub-trees included, pass
    through unchanged.
    """
    if not any(type(v).__name__ == "ListConfig" for v in args.values()):
        return args
    from omegaconf import ListConfig, OmegaConf

    return {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, ListConfig) else v
            for k, v in args.items()}


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
            # Checked on every construction, with or without a cfg, as detectron2 does: a class
            # that cannot be built from a cfg should not look like it can.
            cls_name = type(self).__qualname__
            from_config_func = getattr(type(self), "from_config", None)
            if from_config_func is None:
                raise AttributeError(
                    f"Class {cls_name} uses @configurable on __init__ and must have a "
                    "'from_config' classmethod; it has none."
                )
            if not inspect.ismethod(from_config_func):
                raise TypeError(
                    f"Class {cls_name} uses @configurable on __init__ and must have a "
                    "'from_config' classmethod; its from_config is not a classmethod."
                )
            if _called_with_cfg(*args, **kwargs):
                init_func(self, **_get_args_from_config(from_config_func, *args, **kwargs))
            else:
                init_func(self, *args, **kwargs)

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

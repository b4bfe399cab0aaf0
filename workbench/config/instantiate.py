"""``instantiate``: build the objects a lazy config describes.

A lazy config is a tree of dicts (usually omegaconf ``DictConfig``) in which a dict carrying a
``_target_`` key stands for a call: ``{"_target_": nn.Conv2d, "in_channels": 3, ...}`` means
``nn.Conv2d(in_channels=3, ...)``. :class:`~workbench.config.LazyCall` writes such dicts;
:func:`instantiate` performs the calls, innermost first.

``_target_`` may be a callable or a dotted string (``"torch.nn.Conv2d"``,
``"workbench.modeling.FPN"``). Strings are found with :func:`workbench.utils.registry.locate`,
which reads a leading ``detectron2.`` as ``workbench.``, so YAML files saved by detectron2 build
workbench objects. ``fvcore.common.param_scheduler.X`` is read as
``workbench.solver.lr_scheduler.X`` when fvcore is not installed.

Trust: ``instantiate`` calls whatever ``_target_`` names, with the arguments the config gives.
Loading a YAML lazy config never runs code (see :mod:`workbench.config.lazy`), but instantiating
it does: instantiate only configs you trust.

Semantics follow detectron2's ``detectron2.config.instantiate`` (arguments are keyword-only;
a dict without ``_target_`` is returned as it is, its content not instantiated), with two
differences, both so that constructors written for plain Python values accept the results:

* a list or ``ListConfig`` comes back as a plain ``list`` (detectron2 returns a ``ListConfig``),
  and a ``TupleConfig`` (omegaconf >= 2.4) as a plain ``tuple``;
* errors name the key path of the failing call (``model.backbone.bottom_up``).
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import functools
from typing import Any

from workbench.utils.registry import locate, map_module_name

__all__ = ["instantiate", "locate_target", "map_module_name", "partial_of"]

# ``locate`` reads detectron2-era names (``map_module_name``); kept under this name too.
locate_target = locate


def partial_of(func: Any, args: Any = (), **keywords: Any) -> functools.partial:
    """``functools.partial(func, *args, **keywords)``, as a call a config can describe.

    :meth:`LazyConfig.save <workbench.config.LazyConfig.save>` writes a ``partial`` value (e.g.
    ViTDet's ``norm_layer=partial(nn.LayerNorm, eps=1e-6)``) as
    ``{_target_: workbench.config.partial_of, func: {_target_:
    workbench.utils.registry.locate, name: torch.nn.LayerNorm}, eps: 1e-06}``, which
    :func:`instantiate` turns back into the same partial.

    Raises:
        TypeError: ``func`` is not callable, or ``args`` is not a list / tuple.
    """
    if not callable(func):
        raise TypeError(f"partial_of needs a callable func, got {func!r} ({type(func).__name__}).")
    if not isinstance(args, (list, tuple)):
        raise TypeError(
            f"partial_of needs args as a list of positional arguments, got {args!r} "
            f"({type(args).__name__})."
        )
    return functools.partial(func, *args, **keywords)


try:
    from omegaconf.tupleconfig import TupleConfig as _TupleConfig
except ImportError:  # omegaconf < 2.4 stores tuples as ListConfig
    _TupleConfig = None


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _instantiate(cfg: Any, path: str) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (list, ListConfig)):
        # Many constructors take lists of objects (ResNet stages, augmentations).
        return [_instantiate(x, _join(path, i)) for i, x in enumerate(cfg)]
    if _TupleConfig is not None and isinstance(cfg, _TupleConfig):
        # omegaconf >= 2.4 keeps tuples (crop_size=(1024, 1024)) as TupleConfig: give a tuple.
        return tuple(_instantiate(x, _join(path, i)) for i, x in enumerate(cfg))

    # A structured config (backed by a dataclass) becomes that dataclass.
    if isinstance(cfg, DictConfig) and dataclasses.is_dataclass(cfg._metadata.object_type):
        return OmegaConf.to_object(cfg)

    if not (isinstance(cfg, abc.Mapping) and "_target_" in cfg):
        return cfg  # plain values, and dicts that describe no call, stay as they are

    # Arguments first (innermost calls first); DictConfig.items() resolves ${...} interpolations.
    kwargs = {k: _instantiate(v, _join(path, k)) for k, v in cfg.items() if k != "_target_"}
    target = _instantiate(cfg["_target_"], _join(path, "_target_"))
    where = f"at key '{path}'" if path else "at the top level"
    if isinstance(target, str):
        try:
            target = locate_target(target)
        except ImportError as e:
            raise ImportError(f"Cannot instantiate the config {where}: _target_ {e}") from e
        name = cfg["_target_"]
    else:
        name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
    if not callable(target):
        raise TypeError(
            f"The config {where} has _target_ {target!r} ({type(target).__name__}), "
            "which is not callable."
        )
    try:
        return target(**kwargs)
    except TypeError as e:
        # Usually a wrong or missing argument name: say which config node it came from.
        raise TypeError(f"Error instantiating {name} {where}: {e}") from e


def instantiate(cfg: Any) -> Any:
    """Recursively build the objects described by ``_target_`` dicts in ``cfg``.

    Args:
        cfg: A dict / ``DictConfig`` with a ``_target_`` (the callable, or its dotted name) and
            the keyword arguments of the call; or a list of such; anything else is returned
            unchanged.

    Returns:
        The object the call returned (lists of results for lists).

    Raises:
        ImportError: A ``_target_`` string names nothing importable; the message gives the key.
        TypeError: A ``_target_`` is not callable, or the call rejected its arguments; the
            message gives the key path of the failing node.

    Example::

        from torch import nn
        from workbench.config import LazyCall as L, instantiate

        conv = instantiate(L(nn.Conv2d)(in_channels=3, out_channels=8, kernel_size=3))
    """
    return _instantiate(cfg, "")

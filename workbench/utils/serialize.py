"""Pickling helpers for objects that plain :mod:`pickle` cannot handle (lambdas, closures).

detectron2 wraps data-loader mappers in :class:`PicklableWrapper` so that a lambda mapper
survives being sent to ``spawn`` / ``forkserver`` worker processes. That needs ``cloudpickle``,
a dependency of workbench (as of detectron2). Should an environment lack it, the wrapper
pickles with plain :mod:`pickle`, which is enough for module-level functions and objects such as
``DatasetMapper``, and raises a :class:`pickle.PicklingError` naming the object and
``cloudpickle`` for a lambda or closure.
``fork`` workers (Linux's default up to Python 3.13) never pickle the mapper, so there a lambda
works either way.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Tuple

__all__ = ["PicklableWrapper"]


def _cloudpickle():
    try:
        import cloudpickle
    except ImportError:
        return None
    return cloudpickle


class PicklableWrapper:
    """Wraps ``obj`` (usually a callable) so that pickling it uses ``cloudpickle`` when available.

    The wrapper is transparent: calling it calls ``obj``, attributes are read from ``obj``, and
    wrapping a wrapper does not nest.

    Args:
        obj: The object to wrap.
    """

    def __init__(self, obj: Any) -> None:
        while isinstance(obj, PicklableWrapper):
            obj = obj._obj
        self._obj = obj

    def __reduce__(self) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
        cloudpickle = _cloudpickle()
        if cloudpickle is not None:
            return cloudpickle.loads, (cloudpickle.dumps(self._obj),)
        try:
            data = pickle.dumps(self._obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise pickle.PicklingError(
                f"Cannot pickle {self._obj!r}: plain pickle does not handle lambdas or local "
                "functions, and cloudpickle (which would) is not installed. `pip install cloudpickle`, "
                "use a module-level function or callable object, or load data with num_workers=0 "
                "or the 'fork' start method."
            ) from e
        return pickle.loads, (data,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._obj(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes the wrapper lacks: read them from the wrapped object.
        if attr == "_obj":  # not set yet (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(attr)
        return getattr(self._obj, attr)

    def __repr__(self) -> str:
        return f"PicklableWrapper({self._obj!r})"

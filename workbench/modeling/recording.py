"""Stage records: what a model's own forward computed, kept only while someone asks for it.

The models' stage methods (``RPN.predict_proposals``, ``_forward_box``, the mask and keypoint
heads, ``RetinaNet.inference_single_image``, ...) put a record of what they computed into the
active :class:`StageRecorder`; :func:`workbench.inspect.trace` opens one around ``model(inputs)``
and reads them. Without an active recorder every call below is a context-variable read that
returns at once, so ``forward()`` costs what it always did and keeps nothing.

Named stage points (:func:`run_stage`) are the places where a forward may be resumed: a
recorder can hand the model a value for a stage instead of computing it (edited features,
hand-made proposals, stored predictions), or skip an optional stage::

    with record_stages() as rec:
        outputs = model(inputs)
    rec.last("rpn")                              # the RPN's RPNRecord of that forward
    with record_stages(substitutes={"backbone": edited}) as rec2:
        model(inputs)                            # the same forward, from edited features

A custom component that puts no record still runs; its stage is then simply absent.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import torch
from torch import Tensor, nn

__all__ = [
    "StageRecorder", "record_stages", "active_recorder", "put_record", "run_stage",
    "SelectionSettings", "LazyPooled", "SKIP",
]

T = TypeVar("T")
_ACTIVE: ContextVar[Optional["StageRecorder"]] = ContextVar("workbench_stage_recorder", default=None)


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()  #: a substitute that tells :func:`run_stage` to return its ``skipped`` value


@dataclass
class Entry:
    """One thing recorded: its kind, the value, and its place in the forward (``order``)."""

    kind: str
    value: Any
    order: int
    stage_point: bool = False  # put by run_stage (a place a forward can be resumed from)
    start: int = -1  # a stage point: the order at which its computation began

    def __post_init__(self) -> None:
        if self.start < 0:
            self.start = self.order


class StageRecorder:
    """The records of the forward passes run while it is active, in the order they were put.

    Args:
        substitutes: stage point name -> value to use instead of computing it (or ``SKIP``).
    """

    def __init__(self, substitutes: Optional[Dict[str, Any]] = None,
                 seed: Sequence[Entry] = ()) -> None:
        self.entries: List[Entry] = list(seed)
        self.substitutes: Dict[str, Any] = dict(substitutes or {})
        self.used: set = set()

    def put(self, kind: str, value: Any, *, stage_point: bool = False, start: int = -1) -> None:
        self.entries.append(Entry(kind, value, len(self.entries), stage_point, start))

    def mark(self) -> int:
        """A position; :meth:`since` lists what was put after it."""
        return len(self.entries)

    def since(self, mark: int, kind: str) -> List[Any]:
        return [e.value for e in self.entries[mark:] if e.kind == kind]

    def all(self, kind: str) -> List[Any]:
        return [e.value for e in self.entries if e.kind == kind]

    def last(self, kind: str) -> Optional[Any]:
        for e in reversed(self.entries):
            if e.kind == kind:
                return e.value
        return None

    def entry(self, kind: str) -> Optional[Entry]:
        for e in reversed(self.entries):
            if e.kind == kind:
                return e
        return None

    def resume_at(self, order: int) -> Tuple[Dict[str, Any], List[Entry]]:
        """What a forward resumed at ``order`` can reuse: (substitutes, seed entries).

        The substitutes are the stage points that finished before ``order``; the seed is every
        entry put before it, so a resumed forward's records read as one whole forward.
        """
        seed = [e for e in self.entries if e.order < order]
        return {e.kind: e.value for e in seed if e.stage_point}, seed

    def __repr__(self) -> str:
        return f"StageRecorder({[e.kind for e in self.entries]})"


@contextmanager
def record_stages(*, substitutes: Optional[Dict[str, Any]] = None,
                  seed: Sequence[Entry] = ()) -> Iterator[StageRecorder]:
    """Record the stages of every forward run inside (nested recorders each see their own)."""
    rec = StageRecorder(substitutes, seed)
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        _ACTIVE.reset(token)


def active_recorder(owner: Optional[nn.Module] = None) -> Optional[StageRecorder]:
    """The recorder of the enclosing :func:`record_stages`, or None (then record nothing).

    Args:
        owner: the module asking; a module in training mode never records (records and
            substitutions are for inference).
    """
    if owner is not None and owner.training:
        return None
    return _ACTIVE.get()


def put_record(kind: str, value: Any, owner: Optional[nn.Module] = None) -> None:
    """Put ``value`` into the active recorder, if any (and ``owner`` is in eval mode)."""
    rec = active_recorder(owner)
    if rec is not None:
        rec.put(kind, value)


_REQUIRED = object()


def run_stage(name: str, compute: Callable[[], T], *, skipped: Any = _REQUIRED,
              owner: Optional[nn.Module] = None) -> T:
    """A named stage point of a forward: ``compute()``, unless the recorder substitutes it.

    With a recorder active, the value (computed or substituted) is recorded under ``name``.
    An optional stage gives ``skipped``: then a substitute of ``SKIP`` returns that value
    without computing (a required stage ignores ``SKIP`` and computes). An ``owner`` in
    training mode just computes.
    """
    rec = active_recorder(owner)
    if rec is None:
        return compute()
    start = rec.mark()
    value = rec.substitutes.get(name, _REQUIRED)
    if value is SKIP and skipped is not _REQUIRED:
        rec.used.add(name)
        return skipped
    if value is _REQUIRED or value is SKIP:
        value = compute()
    else:
        rec.used.add(name)
    rec.put(name, value, stage_point=True, start=start)
    return value


# -- what a record may carry ----------------------------------------------------------------

@dataclass
class SelectionSettings:
    """The test-time settings a selection used, and the attributes of the model holding them.

    ``attrs`` maps a setting's name ("score_thresh", "nms_thresh", "topk", "topk_candidates")
    to an attribute of ``owner``, or to (attribute, key) for a dict-valued one such as the
    RPN's ``post_nms_topk[False]``. :meth:`overridden` sets them for the duration of a block,
    so a forward inside it is the model with those settings.
    """

    values: Dict[str, Any]
    owner: nn.Module = field(repr=False)
    attrs: Dict[str, Union[str, Tuple[str, Any]]] = field(repr=False)

    def _get(self, where):
        if isinstance(where, tuple):
            return getattr(self.owner, where[0])[where[1]]
        return getattr(self.owner, where)

    def _set(self, where, value) -> None:
        if isinstance(where, tuple):
            getattr(self.owner, where[0])[where[1]] = value
        else:
            setattr(self.owner, where, value)

    @contextmanager
    def overridden(self, **values: Any) -> Iterator[None]:
        unknown = [k for k in values if k not in self.attrs]
        if unknown:
            raise ValueError(f"{type(self.owner).__name__}'s selection has no setting "
                             f"{unknown[0]!r}; it has {sorted(self.attrs)}.")
        saved = {k: self._get(self.attrs[k]) for k in values}
        try:
            for k, v in values.items():
                self._set(self.attrs[k], v)
            yield
        finally:
            for k, v in saved.items():
                self._set(self.attrs[k], v)


class LazyPooled:
    """Pooled ROI features of a list of boxes, kept, or recomputed by the model's own pooler.

    ROI pooling is computed box by box, so recomputing gives the very numbers the head saw
    (also for a subset of the boxes). Not keeping them saves memory (R x C x P x P floats: 50 MB
    per image for a model-zoo FPN) and the page faults of a larger peak. They are kept when
    autograd is on, so that the graph is intact.
    """

    def __init__(self, pool: Callable[[List[Any]], Tensor], boxes: Sequence[Any],
                 value: Optional[Tensor] = None) -> None:
        self._pool, self._boxes, self._value = pool, list(boxes), value

    @classmethod
    def of(cls, pool: Callable[[List[Any]], Tensor], boxes: Sequence[Any],
           pooled: Tensor) -> "LazyPooled":
        """Keep ``pooled`` only when autograd records a graph through it."""
        lazy = cls(pool, boxes)
        lazy.keep_if_grad(pooled)
        return lazy

    def keep_if_grad(self, pooled: Tensor) -> Tensor:
        """Keep ``pooled`` (the very tensor the head consumes) when autograd is on; returns it."""
        if torch.is_grad_enabled():
            self._value = pooled
        return pooled

    @property
    def computed(self) -> bool:
        return self._value is not None

    def all(self) -> Tensor:
        """(R, C, P, P), image 0's boxes first (computed once, then kept)."""
        if self._value is None:
            with torch.no_grad():
                self._value = self._pool(self._boxes)
        return self._value

    def rows(self, image: int, index: Tensor) -> Tensor:
        """(M, C, P, P) for boxes ``index`` of ``image`` (only those are pooled if not kept)."""
        if self._value is not None:
            offset = sum(len(b) for b in self._boxes[:image])
            return self._value[index + offset]
        subset = [b[index] if i == image else b[:0] for i, b in enumerate(self._boxes)]
        with torch.no_grad():
            return self._pool(subset)

    def __repr__(self) -> str:
        n = sum(len(b) for b in self._boxes)
        if self._value is not None:
            return f"pooled{tuple(self._value.shape)}"
        return f"({n}, ...) on demand"

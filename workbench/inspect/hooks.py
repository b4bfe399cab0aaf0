"""Capture what named sub-modules receive and return, for the length of a ``with`` block.

::

    with capture(model, ["backbone.bottom_up.res*", "roi_heads.box_head"]) as cap:
        model(inputs)
    cap["roi_heads.box_head"]          # (R, D) box-head features of the single call
    cap.outputs["backbone.bottom_up.res2"]   # list: one entry per call

Names are those of ``model.named_modules()`` ("" is the model itself); in a pattern ``*``
matches within one dotted part and ``**`` across parts. Outputs keep their structure (dicts,
tuples, ``Instances``, ``Boxes``,
``ImageList``); ``detach`` / ``to`` / ``clone`` are applied to every tensor inside.

PyTorch hooks exist only inside the ``with`` block: outside it the model runs exactly as if
this module did not exist (nothing is registered, nothing is checked). Handles are removed on
exit, also when the forward raises.
"""

from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from workbench.structures import Boxes, ImageList, Instances

__all__ = ["capture", "Captured", "map_tensors", "describe", "list_modules", "resolve_names"]


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor in a nested structure, keeping the structure.

    Handles tensors, dicts, lists, tuples (and namedtuples), ``Instances``, ``ImageList``,
    ``Boxes`` and the tensor-backed structures (``BitMasks``, ``Keypoints``, ``ROIMasks``: any
    object with a ``.tensor`` whose class can be rebuilt from one tensor). Anything else is
    returned as it is.
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        items = {k: map_tensors(v, fn) for k, v in obj.items()}
        return items if type(obj) is dict else type(obj)(items)
    if isinstance(obj, list):
        return [map_tensors(v, fn) for v in obj]
    if isinstance(obj, tuple):
        values = [map_tensors(v, fn) for v in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else tuple(values)
    if isinstance(obj, Instances):
        return Instances(obj.image_size, **{k: map_tensors(v, fn) for k, v in obj.get_fields().items()})
    if isinstance(obj, ImageList):
        return ImageList(fn(obj.tensor), list(obj.image_sizes))
    if isinstance(obj, Boxes):
        return type(obj)(fn(obj.tensor))
    tensor = getattr(obj, "tensor", None)
    if isinstance(tensor, torch.Tensor):
        try:
            return type(obj)(fn(tensor))
        except Exception:  # a structure that cannot be rebuilt from one tensor: keep it
            return obj
    return obj


def describe(obj: Any, max_items: int = 6) -> str:
    """A one-line summary of a (nested) value: shapes of tensors, lengths of instances."""
    if isinstance(obj, torch.Tensor):
        return f"{tuple(obj.shape)}" + ("" if obj.dtype == torch.float32 else f" {str(obj.dtype)[6:]}")
    if isinstance(obj, dict):
        items = [f"{k}: {describe(v, max_items)}" for k, v in list(obj.items())[:max_items]]
        more = ", ..." if len(obj) > max_items else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(obj, (list, tuple)):
        items = [describe(v, max_items) for v in list(obj)[:max_items]]
        more = f", ... ({len(obj)} items)" if len(obj) > max_items else ""
        o, c = ("[", "]") if isinstance(obj, list) else ("(", ")")
        return o + ", ".join(items) + more + c
    if isinstance(obj, Instances):
        n = len(obj) if obj.get_fields() else 0
        return f"Instances(num={n}, fields=[{', '.join(obj.get_fields())}])"
    if isinstance(obj, ImageList):
        return f"ImageList{tuple(obj.tensor.shape)}"
    if isinstance(obj, Boxes):
        return f"Boxes({len(obj)})"
    if obj is None:
        return "None"
    return type(obj).__name__


def _glob_regex(pattern: str) -> "re.Pattern[str]":
    """Glob over dotted names: ``*`` stays within one name part, ``**`` crosses dots, ``?`` is
    one character, ``[...]`` a character class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def resolve_names(model: nn.Module, patterns: Union[str, Sequence[str]]) -> List[str]:
    """Module names of ``model`` matching any of the glob ``patterns``, in ``named_modules`` order.

    In a pattern ``*`` matches within one part of a dotted name ("backbone.bottom_up.res*" gives
    the four ResNet stages, not their blocks) and ``**`` matches across dots
    ("roi_heads.**" gives everything under the ROI heads).

    Raises:
        ValueError: if a pattern matches nothing (the message lists the closest names).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    names = [n for n, _ in model.named_modules()]
    selected: List[str] = []
    for pattern in patterns:
        regex = _glob_regex(pattern)
        hits = [n for n in names if regex.match(n)]
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
            hint = f" Closest names: {close}." if close else ""
            raise ValueError(
                f"No module of {type(model).__name__} matches {pattern!r}.{hint} "
                "List the names with workbench.inspect.list_modules(model, inputs)."
            )
        selected.extend(h for h in hits if h not in selected)
    order = {n: i for i, n in enumerate(names)}
    return sorted(selected, key=order.__getitem__)


@dataclass
class Captured:
    """What the hooked modules received and returned, one list entry per call.

    Attributes:
        names: the hooked module names.
        outputs: name -> list of outputs, in call order (empty when ``outputs=False``).
        inputs: name -> list of ``(args, kwargs)`` (empty when ``inputs=False``).
    """

    names: List[str]
    outputs: Dict[str, List[Any]] = field(default_factory=dict)
    inputs: Dict[str, List[Tuple[tuple, dict]]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        """The output of the single call of module ``name``.

        Raises:
            KeyError: if ``name`` was not hooked or not called.
            ValueError: if it was called several times (use ``outputs[name]``, a list).
        """
        if name not in self.names:
            raise KeyError(f"{name!r} was not captured; captured modules: {self.names}.")
        calls = self.outputs.get(name, [])
        if len(calls) == 0:
            raise KeyError(f"Module {name!r} was hooked but not called (or outputs=False).")
        if len(calls) > 1:
            raise ValueError(
                f"Module {name!r} was called {len(calls)} times (e.g. once per feature level); "
                f"use captured.outputs[{name!r}], a list with one output per call."
            )
        return calls[0]

    def __contains__(self, name: str) -> bool:
        return bool(self.outputs.get(name)) or bool(self.inputs.get(name))

    def __repr__(self) -> str:
        lines = [f"Captured({len(self.names)} modules)"]
        for n in self.names:
            outs = self.outputs.get(n, [])
            ins = self.inputs.get(n, [])
            what = describe(outs[0]) if len(outs) == 1 else (f"{len(outs)} calls" if outs else "-")
            extra = f"  inputs: {len(ins)} call{'s' if len(ins) != 1 else ''}" if ins else ""
            lines.append(f"  {n or '<model>'}: {what}{extra}")
        return "\n".join(lines)


def _make_transform(detach: bool, to: Optional[Union[str, torch.device]], clone: bool):
    def fn(t: torch.Tensor) -> torch.Tensor:
        if detach:
            t = t.detach()
        if to is not None:
            t = t.to(to)
        if clone:
            t = t.clone()
        return t
    return fn


@contextmanager
def capture(model: nn.Module, names: Union[str, Sequence[str]], *, outputs: bool = True,
            inputs: bool = False, detach: bool = True, to: Optional[Union[str, torch.device]] = None,
            clone: bool = False) -> Iterator[Captured]:
    """Record the outputs (and/or inputs) of the sub-modules matching ``names`` while inside.

    Example::

        with capture(model, "roi_heads.box_head") as cap:
            model(inputs)
        embeddings = cap["roi_heads.box_head"]   # (R, D)

    Args:
        names: module names or globs (``"backbone.bottom_up.res*"``: ``*`` stays within a dotted
            part, ``**`` crosses dots); ``""`` is the model.
        outputs: record what each module returns.
        inputs: record ``(args, kwargs)`` of each call.
        detach: detach recorded tensors from the autograd graph.
        to: move recorded tensors to this device (e.g. "cpu").
        clone: copy recorded tensors, so that later in-place changes do not show (needed
            only for modules whose outputs are modified in place afterwards).

    Yields:
        A :class:`Captured`, filled as the model runs.
    """
    selected = resolve_names(model, names)
    modules = dict(model.named_modules())
    fn = _make_transform(detach, to, clone)
    cap = Captured(names=selected)
    handles = []

    def make_hook(name: str):
        def hook(module, args, kwargs, output):
            if inputs:
                cap.inputs.setdefault(name, []).append((map_tensors(args, fn), map_tensors(kwargs, fn)))
            if outputs:
                cap.outputs.setdefault(name, []).append(map_tensors(output, fn))
        return hook

    try:
        for name in selected:
            handles.append(modules[name].register_forward_hook(make_hook(name), with_kwargs=True))
        yield cap
    finally:
        for h in handles:
            h.remove()


def list_modules(model: nn.Module, batched_inputs: Any, *, patterns: Union[str, Sequence[str]] = "**",
                 max_depth: Optional[int] = None, file=None) -> List[Tuple[str, str, str]]:
    """Run one forward (no grad) and print every capturable module with its output shape.

    Example::

        rows = list_modules(model, inputs, max_depth=3)
        # backbone.bottom_up.res2   Sequential   (4, 64, 80, 120)
        names = [r[0] for r in rows]

    Args:
        batched_inputs: what ``model(...)`` takes (``list[dict]`` for workbench models).
        patterns: restrict the listing to names matching these globs.
        max_depth: list only names with at most this many dots + 1 (1: top-level children).
        file: where to print (default stdout); None prints, use ``file=False`` to stay quiet.

    Returns:
        ``(name, module type, output summary)`` per module, in ``named_modules`` order; modules
        not called during the forward are listed with "not called".
    """
    names = [n for n in resolve_names(model, patterns) if n]
    if max_depth is not None:
        names = [n for n in names if n.count(".") < max_depth]
    modules = dict(model.named_modules())
    with capture(model, names) as cap, torch.no_grad():
        model(batched_inputs)
    rows = []
    for n in names:
        outs = cap.outputs.get(n, [])
        if not outs:
            summary = "not called"
        elif len(outs) == 1:
            summary = describe(outs[0])
        else:
            summary = f"{len(outs)} calls: " + ", ".join(describe(o) for o in outs[:6]) + \
                (", ..." if len(outs) > 6 else "")
        rows.append((n, type(modules[n]).__name__, summary))
    if file is not False:
        width = max((len(r[0]) for r in rows), default=0)
        twidth = max((len(r[1]) for r in rows), default=0)
        for r in rows:
            print(f"{r[0]:<{width}}  {r[1]:<{twidth}}  {r[2]}", file=file)
    return rows

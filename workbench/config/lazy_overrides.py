"""``"key=value"`` overrides for :meth:`LazyConfig.apply_overrides
<workbench.config.LazyConfig.apply_overrides>`: the part of Hydra's override grammar that
detectron2's command lines use, without depending on Hydra.

Values, first rule that applies:

1. a Python literal (``ast.literal_eval``): ``10``, ``1e-3``, ``'text'``, ``None``, ``[1, 2]``;
2. ``true`` / ``false`` / ``null`` in any case: ``True`` / ``False`` / ``None`` (Hydra);
3. ``[...]`` / ``{...}``: a list / dict read as YAML flow data, in which bare words are strings
   (``[coco_2017_train,coco_2017_val]``) and ``true`` / ``false`` / ``null`` / numbers are read as
   in 1.-2. (not YAML 1.1's ``yes`` / ``no`` / dates); a value that starts with ``[`` or ``{``
   and is not such a list / dict is an error;
4. anything else: the text, as a string (``a=b`` sets ``"b"``), but not in place of a bool,
   int or float (an error: quote the text, ``a='b'``, to set a string on purpose).

Keys: every node on the way to the key must exist (a typo in the middle of a path is an error),
and so must the key itself, except for a new argument of a call (a node with a ``_target_``,
e.g. ``optimizer.params.model=...``). Hydra's ``+key=value`` adds a key on purpose (creating
missing nodes on its way); it is an error when the key already exists.
"""

from __future__ import annotations

import ast
import difflib
import re
from typing import Any, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, ValueNode, open_dict

__all__ = ["apply_overrides", "parse_value"]

_WORDS = {"true": True, "false": False, "null": None}


class _FlowLoader(yaml.SafeLoader):
    """YAML for ``[...]`` / ``{...}`` values: only Hydra's implicit types (bool, null, int,
    float); YAML 1.1 extras (yes / no / on / off, dates, octal, ``<<``) stay strings."""


_FlowLoader.yaml_implicit_resolvers = {}
for _tag, _pattern in [
    ("tag:yaml.org,2002:bool", r"^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"),
    ("tag:yaml.org,2002:null", r"^(?:[Nn][Uu][Ll][Ll])$"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9](?:_?[0-9])*)$"),
    ("tag:yaml.org,2002:float",
     r"^[-+]?(?:(?:[0-9](?:_?[0-9])*)?\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9]+)?"
     r"|[0-9](?:_?[0-9])*\.(?:[eE][-+]?[0-9]+)?|[0-9](?:_?[0-9])*[eE][-+]?[0-9]+"
     r"|[Ii][Nn][Ff]|[Nn][Aa][Nn])$"),
]:
    _FlowLoader.add_implicit_resolver(_tag, re.compile(_pattern), None)


def parse_value(text: str, override: str = "") -> Tuple[Any, bool]:
    """The value an override's text stands for (see the module docstring), and whether it is a
    string only because nothing else matched (rule 4).

    Raises:
        ValueError: A ``[...]`` / ``{...}`` value is not valid flow YAML; names ``override``.
    """
    s = text.strip()
    try:
        return ast.literal_eval(s), False
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if s.lower() in _WORDS:
        return _WORDS[s.lower()], False
    if s[:1] in ("[", "{"):
        try:
            return yaml.load(s, Loader=_FlowLoader), False
        except yaml.YAMLError as e:
            raise ValueError(
                f"Override {override!r}: cannot read {s!r} as a list / dict: {e}"
            ) from e
    return s, True


_ABSENT = object()


def _parent_of(cfg: Any, key: str, add: bool) -> Optional[Any]:
    """The node that holds the last part of ``key``; None when ``add`` and a node on the way is
    missing (the update creates it). Raises KeyError for a missing or non-config node."""
    parts = key.split(".")
    node = cfg
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        child = OmegaConf.select(cfg, prefix, default=_ABSENT, throw_on_missing=False)
        if child is _ABSENT:
            if add:
                return None
            there = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(parts[i - 1], there, n=3)
            raise KeyError(
                f"Cannot override '{key}': '{prefix}' does not exist"
                + (f" (did you mean {close}?)" if close else "")
                + (f" (keys there: {there})." if there else ".")
            )
        if not OmegaConf.is_config(child):
            raise KeyError(
                f"Cannot override '{key}': '{prefix}' is a {type(child).__name__} value "
                f"({child!r}), not a config node."
            )
        node = child
    return node


def _existing_node(parent: Any, key: str, add: bool) -> Optional[Any]:
    """The node ``key`` names now (None when it is new); errors for typos and misplaced ``+``."""
    last = key.split(".")[-1]
    if isinstance(parent, ListConfig):
        if add:
            raise KeyError(f"Cannot add '+{key}': '{last}' is an item of a list, not a new key.")
        if not last.isdigit() or int(last) >= len(parent):
            raise KeyError(
                f"Cannot override '{key}': the list there has {len(parent)} items, so "
                f"'{last}' is not one of its indices."
            )
        return parent._get_node(int(last))
    if last in parent.keys():  # "in parent" is False for a "???" (missing) value
        if add:
            raise KeyError(
                f"Cannot add '+{key}': '{key}' already exists; write '{key}=...' to change it."
            )
        return parent._get_node(last)
    if not add and "_target_" not in parent:
        keys = [str(k) for k in parent.keys()]
        close = difflib.get_close_matches(last, keys, n=3)
        where = ".".join(key.split(".")[:-1]) or "the top level"
        raise KeyError(
            f"Cannot override '{key}': there is no key '{last}' in '{where}'"
            + (f"; closest existing keys: {close}" if close else f"; its keys are {sorted(keys)}")
            + f". To add a new key on purpose, write '+{key}=...'."
        )
    return None


def apply_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """See :meth:`workbench.config.LazyConfig.apply_overrides`."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of 'key=value' strings, got {overrides!r}.")
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        add = key.startswith("+")
        if add:
            key = key[1:].strip()
        if not sep or not key:
            raise ValueError(
                f"Override {override!r} is not of the form 'key=value' or '+key=value'."
            )
        if key.startswith(("+", "~")):
            raise ValueError(
                f"Override {override!r}: only 'key=value' and '+key=value' are supported "
                "(Hydra's '++key=value' and '~key' are not)."
            )
        value, guessed = parse_value(text, override)
        parent = _parent_of(cfg, key, add)
        node = None if parent is None else _existing_node(parent, key, add)
        if guessed and isinstance(node, ValueNode) and "${" not in value:
            old = node._value()
            if isinstance(old, (bool, int, float)):
                raise ValueError(
                    f"Override {override!r}: '{key}' is {old!r} ({type(old).__name__}), and "
                    f"{value!r} is not a number, true / false / null, a list or a dict, so it "
                    "would replace it by a string. Quote it (key='text') if a string is meant."
                )
        if add:
            with open_dict(cfg):  # "+" adds on purpose, in struct configs too (as Hydra)
                OmegaConf.update(cfg, key, value, merge=True)
        else:
            OmegaConf.update(cfg, key, value, merge=True)
    return cfg

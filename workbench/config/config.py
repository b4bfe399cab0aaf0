"""The config tree: a yacs ``CfgNode`` that reads detectron2's YAML files.

What this adds to :class:`yacs.config.CfgNode` (the same things fvcore and detectron2 add, plus
louder errors):

- ``_BASE_`` inheritance in YAML files: ``_BASE_: "../Base-RCNN-FPN.yaml"`` loads that file
  first (relative to the including file's folder; ``~`` and absolute paths work too), then the
  including file's values override it, groups of keys merging key by key.
- Safe YAML loading by default. detectron2 loads unsafely by default; here
  ``allow_unsafe=True`` has to be asked for.
- Errors that name the culprit: an unknown key or a type mismatch is reported with its full
  dotted key and the file (or ``merge_from_list`` / ``merge_from_other_cfg`` call) it came
  from, with close matches for misspelt keys. A failed merge leaves the config unchanged.
- Config versions: a file written for an older format (``VERSION: 0`` or ``1``, or no
  ``VERSION`` but old-only keys such as ``MODEL.WEIGHT``) is upgraded while merged, as in
  detectron2 (see :mod:`workbench.config.compat`); a newer ``VERSION`` than 2 is refused.

Type rules are yacs': a value must keep the default's type, except that lists and tuples are
interchangeable and ``None`` on either side matches anything, so ``1`` does not merge into a
float key (write ``1.0``). Strings from YAML or the command line are parsed as Python literals
(``"(640, 672)"`` becomes a tuple) unless the key's default is itself a string.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import yaml
from yacs.config import CfgNode as _YacsCfgNode

from .configurable import configurable  # detectron2 defines it in config/config.py
from .safe_eval import SafeEvalLoader

__all__ = ["BASE_KEY", "CfgNode", "ConfigKeyError", "configurable", "get_cfg", "global_cfg",
           "set_global_cfg"]

logger = logging.getLogger(__name__)

#: Top-level YAML key naming the file a config inherits from.
BASE_KEY = "_BASE_"

# The config format this package reads. defaults._C.VERSION must equal it (checked in tests).
_LATEST_VERSION = 2

# yacs' leaf types: anything else cannot be dumped back to YAML.
_LEAF_TYPES = (tuple, list, str, int, float, bool, type(None))

# Maps a full dotted key to a phrase naming where its value came from, e.g.
# "config file '/x/y.yaml'" or "merge_from_list".
_Origin = Callable[[str], str]


class ConfigKeyError(KeyError):
    """A config key that does not exist in the tree being merged into.

    Subclasses ``KeyError`` so that ``except KeyError`` keeps working, but prints its message as
    written: ``KeyError.__str__`` shows the repr of the message, quotes and escapes included.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CfgNode(_YacsCfgNode):
    """A node of the config tree, accessed by attribute (``cfg.MODEL.DEVICE``) or by key.

    Build the full tree with :func:`get_cfg`, then merge files, other configs and
    ``KEY value`` lists into it. Every merge checks keys and types against the tree and either
    applies completely or raises without changing anything. ``freeze()`` makes the tree
    read-only, ``clone()`` returns an independent deep copy, ``dump()`` returns YAML that
    ``merge_from_file`` reads back to an equal config.
    """

    # ----------------------------------------------------------------------------- reading YAML
    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> Dict[str, Any]:
        """Reads a YAML config file and everything it inherits through ``_BASE_``.

        Args:
            filename: Path of the YAML file.
            allow_unsafe: Fall back to ``yaml.unsafe_load`` when safe loading meets a Python
                tag such as ``!!python/object/apply:eval``. That runs code from the file: only
                for files you trust.

        Returns:
            A plain nested dict: the ``_BASE_`` chain's values, overridden by each inheriting
            file in turn, without the ``_BASE_`` key. Values are as YAML parsed them (no type
            checking, no literal parsing of strings); merging does that.

        Raises:
            FileNotFoundError: The file or one of its bases does not exist.
            ValueError: The YAML is invalid or not a mapping, needs unsafe loading, or the
                ``_BASE_`` chain is circular or conflicting.
        """
        loaded, _ = _load_with_sources(os.fspath(filename), allow_unsafe, ())
        return loaded

    # ---------------------------------------------------------------------------------- merging
    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merges a YAML config file (and its ``_BASE_`` chain) into this config.

        Args:
            cfg_filename: Path of the YAML file, e.g. from
                :func:`workbench.model_zoo.get_config_file` or a ``cfg.dump()`` written to disk.
            allow_unsafe: See :meth:`load_yaml_with_base`.

        Raises:
            ConfigKeyError: A key of the file (or of a base) is not in this config; the message
                names the dotted key and the file that sets it.
            ValueError: A value's type does not match the default's, or the file's ``VERSION``
                is newer than this config's.
            AttributeError: This config is frozen.

        A file of an older config ``VERSION`` is merged into this config's defaults converted
        to that version, then the result is upgraded (with a warning), as detectron2 does.
        """
        path = os.fspath(cfg_filename)
        self._check_mutable(f"config file '{path}'")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Config file '{path}' does not exist.")
        loaded, sources = _load_with_sources(path, allow_unsafe, ())
        loaded_version = self._check_version(loaded, path, sources)

        def origin(full_key: str) -> str:
            return f"config file '{_source_of(sources, full_key, path)}'"

        if loaded_version == _LATEST_VERSION:
            self._merge_atomically(loaded, [], origin)
            return
        from .compat import downgrade_config, upgrade_config  # compat imports this module

        logger.warning(
            "Loading an old v%s config file '%s' by upgrading it to v%s. Save cfg.dump() to get "
            "a file in the current format.", loaded_version, path, _LATEST_VERSION,
        )
        old_self = downgrade_config(self, to_version=loaded_version)
        merged = dict(loaded, VERSION=loaded_version)
        _merge_mapping(old_self, merged, [], old_self, origin)
        _replace_contents(self, upgrade_config(old_self))

    def merge_from_other_cfg(self, cfg_other: Mapping[str, Any]) -> None:
        """Merges another config (a ``CfgNode`` or a nested dict) into this one.

        Raises:
            ConfigKeyError: ``cfg_other`` has a key this config does not have.
            ValueError: A value's type does not match the default's.
            AttributeError: This config is frozen.
        """
        self._check_mutable("another config")
        if not isinstance(cfg_other, Mapping):
            raise TypeError(
                f"merge_from_other_cfg expects a CfgNode or a dict, got {type(cfg_other).__name__}."
            )
        self._merge_atomically(cfg_other, [], lambda _: "merge_from_other_cfg")

    def merge_from_list(self, cfg_list: Sequence[Any]) -> None:
        """Merges ``[KEY, VALUE, KEY, VALUE, ...]`` pairs, e.g. command-line overrides.

        Keys are full dotted names (``"MODEL.ROI_HEADS.NUM_CLASSES"``). String values are parsed
        as Python literals unless the key's default is a string, so ``["SOLVER.STEPS",
        "(1000, 2000)"]`` sets a tuple.

        Raises:
            ConfigKeyError: A key does not exist; the message names it in full.
            ValueError: The list has an odd length, or a value's type does not match.
            AttributeError: This config is frozen.
        """
        self._check_mutable("merge_from_list")
        if len(cfg_list) % 2 != 0:
            raise ValueError(
                "merge_from_list expects alternating keys and values, got an odd number "
                f"({len(cfg_list)}) of items: {list(cfg_list)!r}"
            )
        merged = self.clone()  # applied pair by pair, copied back only if all pairs merge
        for full_key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            if not isinstance(full_key, str):
                raise TypeError(
                    f"merge_from_list keys must be dotted strings like 'MODEL.DEVICE', got "
                    f"{full_key!r} ({type(full_key).__name__})."
                )
            if merged.key_is_deprecated(full_key):
                continue
            if merged.key_is_renamed(full_key):
                merged.raise_key_rename_error(full_key)
            # Walk the groups first so that a missing one is reported by the full key the caller
            # wrote; the leaf itself is checked by _merge_mapping.
            parts = full_key.split(".")
            node: Any = merged
            for depth, part in enumerate(parts[:-1]):
                if part not in node:
                    if node.is_new_allowed():
                        break
                    raise ConfigKeyError(
                        _unknown_key_message(node, part, full_key, parts[:depth], "merge_from_list")
                    )
                node = node[part]
                if not isinstance(node, _YacsCfgNode):
                    raise ConfigKeyError(
                        f"Unknown config key '{full_key}' (from merge_from_list): "
                        f"'{'.'.join(parts[: depth + 1])}' is a value ({node!r}), not a group of "
                        "keys."
                    )
            update: Any = value
            for part in reversed(parts):  # "A.B.C" -> {"A": {"B": {"C": value}}}
                update = {part: update}
            _merge_mapping(merged, update, [], merged, lambda _: "merge_from_list")
        _copy_values_into(self, merged)

    # ------------------------------------------------------------------------------ the rest
    def dump(self, **kwargs: Any) -> str:
        """Returns the config as YAML text.

        ``merge_from_file`` on this text (written to a file) into :func:`get_cfg` gives back an
        equal config. Shared values may appear as YAML anchors (``&id001`` / ``*id001``), as in
        detectron2's dumps; they load fine.

        Args:
            **kwargs: Passed to ``yaml.safe_dump`` (e.g. ``sort_keys=False``).
        """
        return super().dump(**kwargs)

    def _check_mutable(self, what: str) -> None:
        if self.is_frozen():
            raise AttributeError(
                f"Cannot merge {what} into a frozen config; call cfg.defrost() first, or merge "
                "into cfg.clone()."
            )

    def _check_version(self, loaded: Mapping[str, Any], path: str, sources: Dict[str, str]) -> int:
        """The config version of a loaded file (guessed when it has none); raises if unreadable."""
        own_version = self.get("VERSION", _LATEST_VERSION)
        if own_version != _LATEST_VERSION:
            raise ValueError(
                f"Cannot merge config file '{path}' into a config with VERSION {own_version!r}; "
                f"only VERSION {_LATEST_VERSION} configs (from get_cfg()) can read files."
            )
        version = loaded.get("VERSION")
        if version is None:
            from .compat import guess_version  # compat imports this module

            return guess_version(loaded, path)
        version = self._decode_cfg_value(version)
        if not isinstance(version, int) or isinstance(version, bool) or not (
            0 <= version <= _LATEST_VERSION
        ):
            where = _source_of(sources, "VERSION", path)
            raise ValueError(
                f"Config file '{where}' has VERSION: {version!r}; workbench reads config "
                f"VERSION 0 to {_LATEST_VERSION} (detectron2's current format is "
                f"{_LATEST_VERSION})."
            )
        return version

    def _merge_atomically(
        self, updates: Mapping[str, Any], key_list: List[str], origin: _Origin
    ) -> None:
        # Merge into a copy first so that an error halfway leaves self untouched, then copy the
        # result back in place (sub-nodes keep their identity: cfg.MODEL stays the same object).
        merged = self.clone()
        _merge_mapping(merged, updates, key_list, merged, origin)
        _copy_values_into(self, merged)


# ------------------------------------------------------------------------------ YAML helpers
def _read_yaml(filename: str, allow_unsafe: bool) -> Dict[str, Any]:
    with open(filename, encoding="utf-8") as f:
        text = f.read()
    try:
        # Safe loading, plus detectron2's "!!python/object/apply:eval" tags when their
        # expression is plain arithmetic over literals (workbench.config.safe_eval).
        data = yaml.load(text, Loader=SafeEvalLoader)
    except yaml.constructor.ConstructorError as e:
        if not allow_unsafe:
            raise ValueError(
                f"Config file '{filename}' needs unsafe YAML loading ({e.problem}, "
                f"{e.problem_mark}). Replace the tag by plain values, or pass allow_unsafe=True "
                "if you trust the file: unsafe loading can run arbitrary code."
            ) from e
        logger.warning("Loading config file '%s' with yaml.unsafe_load.", filename)
        data = yaml.unsafe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"Config file '{filename}' is not valid YAML:\n{e}") from e
    if data is None:  # an empty file
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"Config file '{filename}' must hold a mapping of keys at the top level, got "
            f"{type(data).__name__}: {data!r}"
        )
    return data


def _resolve_base(base: Any, filename: str) -> str:
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"{BASE_KEY} in config file '{filename}' must be a file path, got {base!r}."
        )
    if base.startswith(("http://", "https://")):
        raise ValueError(
            f"{BASE_KEY} in config file '{filename}' is a URL ({base}); only local paths are "
            "supported. Download the file and point to it instead."
        )
    path = os.path.expanduser(base)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(filename), path)
    return os.path.normpath(path)


def _load_with_sources(
    filename: str, allow_unsafe: bool, chain: Tuple[str, ...]
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Loads a file and its ``_BASE_`` chain; also returns which file set each dotted key."""
    real = os.path.realpath(filename)
    if real in chain:
        cycle = " -> ".join(chain[chain.index(real):] + (real,))
        raise ValueError(f"Circular {BASE_KEY} chain: {cycle}")
    data = _read_yaml(filename, allow_unsafe)
    base = data.pop(BASE_KEY, None)
    sources: Dict[str, str] = {}
    _record_sources(data, [], filename, sources)
    if base is None:
        return data, sources

    base_path = _resolve_base(base, filename)
    if not os.path.isfile(base_path):
        raise FileNotFoundError(
            f"Config file '{filename}' has {BASE_KEY}: {base!r}, which resolves to "
            f"'{base_path}'; no such file."
        )
    merged, merged_sources = _load_with_sources(base_path, allow_unsafe, chain + (real,))
    _override_dict(merged, data, [], filename)
    merged_sources.update(sources)
    return merged, merged_sources


def _record_sources(
    data: Mapping[str, Any], key_list: List[str], filename: str, sources: Dict[str, str]
) -> None:
    for key, value in data.items():
        full_key = ".".join(key_list + [str(key)])
        sources[full_key] = filename
        if isinstance(value, Mapping):
            _record_sources(value, key_list + [str(key)], filename, sources)


def _override_dict(
    base: Dict[str, Any], child: Mapping[str, Any], key_list: List[str], filename: str
) -> None:
    """Overrides ``base`` in place by ``child``, merging nested groups key by key."""
    for key, value in child.items():
        if isinstance(value, Mapping) and key in base:
            if not isinstance(base[key], Mapping):
                full_key = ".".join(key_list + [str(key)])
                raise ValueError(
                    f"Config file '{filename}' sets '{full_key}' to a group of keys, but its "
                    f"{BASE_KEY} chain sets it to the value {base[key]!r}."
                )
            _override_dict(base[key], value, key_list + [str(key)], filename)
        else:
            base[key] = value


def _source_of(sources: Mapping[str, str], full_key: str, default: str) -> str:
    # The file that set this key, or the nearest enclosing group that has one.
    parts = full_key.split(".")
    while parts:
        found = sources.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return default


# ---------------------------------------------------------------------------- merge helpers
def _merge_mapping(
    node: _YacsCfgNode,
    updates: Mapping[str, Any],
    key_list: List[str],
    root: _YacsCfgNode,
    origin: _Origin,
) -> None:
    """Merges nested ``updates`` into ``node`` in place, checking keys and types."""
    for key, raw in updates.items():
        full_key = ".".join(key_list + [str(key)])
        if key == BASE_KEY:
            raise ConfigKeyError(
                f"'{full_key}' (from {origin(full_key)}): {BASE_KEY} is only understood at the "
                "top level of a YAML file given to merge_from_file."
            )
        if key not in node:
            if node.is_new_allowed():
                node[key] = type(root)._decode_cfg_value(copy.deepcopy(raw))
                continue
            if root.key_is_deprecated(full_key):
                continue
            if root.key_is_renamed(full_key):
                root.raise_key_rename_error(full_key)
            raise ConfigKeyError(
                _unknown_key_message(node, key, full_key, key_list, origin(full_key))
            )

        old = node[key]
        if isinstance(old, _YacsCfgNode):
            if not isinstance(raw, Mapping):
                raise ValueError(
                    f"Config key '{full_key}' is a group of keys ({_preview_keys(old)}), but "
                    f"{origin(full_key)} sets it to the value {raw!r}."
                )
            _merge_mapping(old, raw, key_list + [str(key)], root, origin)
        else:
            node[key] = _coerce(raw, old, full_key, origin(full_key), type(root))


def _coerce(raw: Any, old: Any, full_key: str, where: str, cls: type) -> Any:
    """Returns ``raw`` converted to fit a key whose current value is ``old``, or raises."""
    if isinstance(raw, Mapping):
        raise ValueError(
            f"Config key '{full_key}' holds a value ({old!r}), but {where} sets it to a group "
            f"of keys: {dict(raw)!r}"
        )
    value = copy.deepcopy(raw)
    if isinstance(value, str) and not isinstance(old, str):
        # yacs' literal parsing: "(640, 672)" -> tuple, "0.5" -> float. Skipped for string keys,
        # so that a dataset named "True" or "(a)" stays a string.
        value = cls._decode_cfg_value(value)
    if type(value) not in _LEAF_TYPES:
        raise ValueError(
            f"Config key '{full_key}' (from {where}) got a {type(value).__name__}; config values "
            "must be str, int, float, bool, None, or lists / tuples of those."
        )
    both_sequences = isinstance(value, (list, tuple)) and isinstance(old, (list, tuple))
    if type(value) is type(old) or both_sequences:
        return _match_sequence_type(value, old)
    if old is None or value is None:
        return value
    hint = ""
    if isinstance(old, float) and type(value) is int:
        hint = f" Write it as a float ({float(value)!r})."
    raise ValueError(
        f"Type mismatch for config key '{full_key}' (from {where}): the current value is "
        f"{type(old).__name__} {old!r}, got {type(value).__name__} {value!r}.{hint}"
    )


def _match_sequence_type(value: Any, template: Any) -> Any:
    """Gives a list/tuple ``value`` the container type of ``template``, nested levels included.

    yacs converts only the outer level, so a tuple of tuples merged from YAML would come back
    as a tuple of lists and no longer compare equal to the default; this keeps ``dump()``
    followed by ``merge_from_file`` an exact round trip.
    """
    if not (isinstance(value, (list, tuple)) and isinstance(template, (list, tuple))):
        return value
    inner = template[0] if len(template) > 0 else None
    items = [_match_sequence_type(item, inner) for item in value]
    return type(template)(items)


def _copy_values_into(target: _YacsCfgNode, source: _YacsCfgNode) -> None:
    for key, value in source.items():
        current = target.get(key)
        if isinstance(value, _YacsCfgNode) and isinstance(current, _YacsCfgNode):
            _copy_values_into(current, value)
        else:
            dict.__setitem__(target, key, value)


def _replace_contents(target: _YacsCfgNode, source: _YacsCfgNode) -> None:
    """Makes ``target`` equal to ``source`` in place; sub-nodes present in both keep identity."""
    for key in [k for k in target if k not in source]:
        dict.__delitem__(target, key)
    for key, value in source.items():
        current = target.get(key)
        if isinstance(value, _YacsCfgNode) and isinstance(current, _YacsCfgNode):
            _replace_contents(current, value)
        else:
            dict.__setitem__(target, key, value)


def _preview_keys(node: Mapping[str, Any], limit: int = 6) -> str:
    keys = sorted(str(k) for k in node)
    shown = ", ".join(keys[:limit])
    return shown + (", ..." if len(keys) > limit else "")


def _unknown_key_message(
    node: Mapping[str, Any], key: Any, full_key: str, key_list: List[str], where: str
) -> str:
    prefix = ".".join(key_list)
    dotted = (prefix + ".") if prefix else ""
    candidates = [str(k) for k in node]
    close = difflib.get_close_matches(str(key), candidates, n=3, cutoff=0.6)
    message = f"Unknown config key '{full_key}' (from {where})."
    if full_key != dotted + str(key):  # a group on the way is missing, not the leaf
        message += f" There is no '{dotted}{key}'."
    if close:
        message += " Did you mean " + " or ".join(f"'{dotted}{c}'" for c in close) + "?"
    else:
        message += f" Keys under '{prefix or '<root>'}': {_preview_keys(node, limit=40)}."
    message += (
        " Keys added by extensions must be added to the config (e.g. by the extension's "
        "add_*_config function) before merging."
    )
    return message


# ----------------------------------------------------------------------------- entry points
def get_cfg() -> CfgNode:
    """Returns a fresh copy of detectron2's default config (see ``defaults.py``).

    Example::

        cfg = get_cfg()
        path = model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
        cfg.merge_from_file(path)
        cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    """
    from .defaults import _C  # defaults imports CfgNode from this module

    return _C.clone()


#: A process-wide config for quick experiments (detectron2's ``global_cfg``). Filled by
#: :func:`set_global_cfg`; keep it out of code meant to last.
global_cfg = CfgNode()


def set_global_cfg(cfg: Mapping[str, Any]) -> None:
    """Replaces the contents of :data:`global_cfg` by those of ``cfg``.

    ``global_cfg`` keeps its identity, so modules that imported it see the new values.
    """
    global_cfg.clear()
    global_cfg.update(cfg)

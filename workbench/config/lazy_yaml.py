"""The YAML side of :class:`~workbench.config.LazyConfig`: what ``save`` writes, what ``load``
accepts.

Saving writes plain YAML only (``yaml.SafeDumper``):

* a ``_target_`` callable becomes its dotted name (``workbench.modeling.FPN``), but only when
  :func:`~workbench.utils.registry.locate` finds that same object again;
* a class or function used as a *value* (RegNet's ``stem_class=SimpleStem``, a ``conv_norm``
  function) becomes ``{_target_: workbench.utils.registry.locate, name: <dotted name>}``, which
  :func:`~workbench.config.instantiate` turns back into that class or function (not an instance
  of it);
* a ``functools.partial`` of such a callable with plain-data arguments (ViTDet's
  ``partial(nn.LayerNorm, eps=1e-6)``) becomes ``{_target_:
  workbench.config.partial_of, func: {<locate node>}, args: [...], <keywords>}``;
* anything else (lambdas, classes defined inside functions or inside ``.py`` configs, arbitrary
  instances) is written as a readable ``!unsaved '<repr>'`` entry that :meth:`LazyConfig.load`
  refuses; :meth:`LazyConfig.save` warns with the keys.

Loading reads the file with ``yaml.safe_load`` (no Python tags, nothing imported, no code run)
and refuses omegaconf resolvers in ``${...}`` interpolations (``${oc.env:VAR}`` would read the
environment, e.g. secrets, into the config): only plain references to other keys (``${a.b}``,
``${..x}``) are allowed in a ``.yaml`` LazyConfig.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf

from workbench.utils.atomic_files import atomic_write as write_atomically
from workbench.utils.registry import _convert_target_to_string, locate

__all__: List[str] = []

LOCATE_TARGET = "workbench.utils.registry.locate"
# Not "workbench.config.instantiate.partial_of": in workbench.config, "instantiate" is the
# function, which hides the module of that name from locate().
PARTIAL_TARGET = "workbench.config.partial_of"


# ----------------------------------------------------------------------------------- saving
class _Unsaved:
    """A value that plain YAML cannot hold; saved as a readable, unloadable ``!unsaved`` tag."""

    def __init__(self, value: Any) -> None:
        self.text = repr(value)


class _ConfigDumper(yaml.SafeDumper):
    pass


_ConfigDumper.add_representer(tuple, lambda d, v: d.represent_list(list(v)))
_ConfigDumper.add_representer(_Unsaved, lambda d, v: d.represent_scalar("!unsaved", v.text))

_YAML_SCALARS = (str, int, float, bool, type(None))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def dotted_name(obj: Any) -> Optional[str]:
    """The dotted name under which :func:`locate` finds ``obj`` itself, or None.

    None for lambdas, classes / functions defined inside functions, objects of config files
    (their module is not importable), and anything without ``__module__`` / ``__qualname__``.
    """
    candidates = []
    try:
        candidates.append(_convert_target_to_string(obj))
    except Exception:  # no __module__ / __qualname__, or a module that fails to import
        pass
    # Builtins such as torch.cat have a __qualname__ (_VariableFunctionsClass.cat) that does not
    # import; their module and __name__ do.
    module, name = getattr(obj, "__module__", None), getattr(obj, "__name__", None)
    if isinstance(module, str) and isinstance(name, str):
        candidates.append(f"{module}.{name}")
    for candidate in candidates:
        try:
            found = locate(candidate)
        except Exception:  # the name does not import: it cannot be found again
            continue
        # A bound method (a classmethod such as ResNet.make_default_stages) is a new object on
        # each attribute access: equal, not identical.
        if found is obj or (inspect.ismethod(obj) and found == obj):
            return candidate
    return None


def _is_plain(value: Any) -> bool:
    """Data that comes back unchanged (tuples as lists) from save -> load -> instantiate."""
    if isinstance(value, _YAML_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return _is_callable_value(value)


def _is_callable_value(value: Any) -> bool:
    if isinstance(value, functools.partial):
        return _partial_node(value) is not None
    return _locate_node(value) is not None


def _locate_node(value: Any) -> Optional[Dict[str, Any]]:
    if not (inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value)
            or inspect.ismethod(value)):
        return None
    name = dotted_name(value)
    return None if name is None else {"_target_": LOCATE_TARGET, "name": name}


_PARTIAL_RESERVED = ("func", "args")


def _partial_node(value: functools.partial) -> Optional[Dict[str, Any]]:
    func = _locate_node(value.func)
    keywords = value.keywords or {}
    if func is None or any(k in _PARTIAL_RESERVED or k.startswith("_") for k in keywords):
        return None
    if not all(_is_plain(v) for v in list(value.args) + list(keywords.values())):
        return None  # dicts would come back as DictConfig, objects cannot be written
    node: Dict[str, Any] = {"_target_": PARTIAL_TARGET, "func": func}
    if value.args:
        node["args"] = [_to_yaml_value(v) for v in value.args]
    node.update((k, _to_yaml_value(v)) for k, v in keywords.items())
    return node


def _to_yaml_value(value: Any) -> Any:
    """A plain value (see :func:`_is_plain`) as YAML data."""
    if isinstance(value, _YAML_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_to_yaml_value(v) for v in value]
    if isinstance(value, functools.partial):
        return _partial_node(value)
    return _locate_node(value)


def mark_unsaved(obj: Any, path: str, found: List[str]) -> Any:
    """``obj`` (from ``OmegaConf.to_container``) as plain YAML data: callables as dotted names
    or nodes that instantiate back into them, the rest as :class:`_Unsaved`, whose key paths
    are appended to ``found``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key_path = _join(path, k)
            if k == "_target_" and callable(v) and not isinstance(v, (str, dict)):
                name = dotted_name(v)
                if name is None:
                    found.append(f"{key_path} ({_describe(v)})")
                    out[k] = _Unsaved(v)
                else:
                    out[k] = name
                continue
            out[k] = mark_unsaved(v, key_path, found)
        return out
    if isinstance(obj, (list, tuple)):
        return [mark_unsaved(v, _join(path, i), found) for i, v in enumerate(obj)]
    if isinstance(obj, _YAML_SCALARS):
        return obj
    node = _partial_node(obj) if isinstance(obj, functools.partial) else _locate_node(obj)
    if node is not None:
        return node
    found.append(f"{path} ({_describe(obj)})")
    return _Unsaved(obj)


def _describe(obj: Any) -> str:
    kind = type(obj).__name__
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str) and (inspect.isclass(obj) or inspect.isfunction(obj)):
        return f"{kind} {getattr(obj, '__module__', '?')}.{qualname}, which cannot be imported"
    return kind


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_ConfigDumper, default_flow_style=None, allow_unicode=True,
                     width=9999)


def atomic_write(filename: str, text: str) -> None:
    """Write ``text`` to ``filename`` so that readers see the old file or the new one, never a
    half-written one (:func:`workbench.utils.atomic_files.atomic_write`).

    Raises:
        FileNotFoundError: The folder of ``filename`` does not exist (the message names it).
    """
    folder = os.path.dirname(os.path.abspath(filename))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot save the config to {filename}: the folder {folder} does not exist."
        )
    write_atomically(filename, lambda f: f.write(text.encode("utf-8")), binary=True)


# ---------------------------------------------------------------------------------- loading
def _resolvers_in(value: str) -> List[str]:
    """The names of the omegaconf resolvers a string's ``${...}`` interpolations call."""
    from omegaconf import grammar_parser
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser as P

    names: List[str] = []
    stack = [grammar_parser.parse(value)]
    while stack:
        ctx = stack.pop()
        if isinstance(ctx, P.InterpolationResolverContext):
            names.append(ctx.resolverName().getText())
        stack.extend(getattr(ctx, "children", None) or ())
    return names


def _check_interpolations(obj: Any, path: str, filename: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_interpolations(v, _join(path, k), filename)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_interpolations(v, _join(path, i), filename)
    elif isinstance(obj, str) and "${" in obj:
        from omegaconf.errors import GrammarParseError

        try:
            resolvers = _resolvers_in(obj)
        except GrammarParseError as e:
            raise ValueError(
                f"Config file {filename}: the value of '{path}' ({obj!r}) is not a valid "
                f"interpolation: {e}"
            ) from e
        if resolvers:
            raise ValueError(
                f"Config file {filename}: the value of '{path}' ({obj!r}) calls the resolver "
                f"'{resolvers[0]}'. A .yaml LazyConfig may only use plain references to other "
                "keys (${a.b}, ${..x}); resolvers such as oc.env (which reads environment "
                "variables) are refused."
            )


def load_yaml(filename: str, text: str) -> DictConfig:
    """Parse the text of the YAML LazyConfig ``filename`` as data; see the module docstring."""
    try:
        obj = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        mark = f" (line {e.problem_mark.line + 1})" if e.problem_mark is not None else ""
        raise ValueError(
            f"Config file {filename}{mark}: {e.problem}. Lazy YAML configs are loaded as plain "
            "data (yaml.safe_load), so Python-object tags are refused and no code from the "
            "file runs. Python tags appear in files detectron2 saved with objects in them "
            "(e.g. functools.partial); an '!unsaved' entry is a value LazyConfig.save could not "
            "write (a lambda, a local class, an object). Load the .py config instead, or write "
            "those values as LazyCall dicts."
        ) from e
    except yaml.YAMLError as e:
        raise ValueError(f"Config file {filename} is not valid YAML: {e}") from e
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ValueError(
            f"Config file {filename} must hold a mapping at the top level, got "
            f"{type(obj).__name__}."
        )
    _check_interpolations(obj, "", filename)
    return OmegaConf.create(obj, flags={"allow_objects": True})

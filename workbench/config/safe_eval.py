"""Evaluate detectron2's ``!!python/object/apply:eval`` YAML tags safely.

detectron2's stock ``configs/Base-RetinaNet.yaml`` writes its anchor sizes as::

    SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"]

which ``yaml.unsafe_load`` would hand to Python's ``eval``. Here the expression is parsed and
evaluated by a small interpreter that knows only literals (numbers, strings, booleans, None),
lists / tuples, arithmetic, comparisons, conditional expressions, list comprehensions over them
and a few pure functions (``range``, ``abs``, ``min``, ``max``, ``round``, ``int``, ``float``,
``len``, ``sum``). No attribute, subscript, import or other name exists for it, and sizes are
bounded, so loading a config never runs code from the file. Anything else is refused and loading
falls back to the "needs unsafe YAML loading" error.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Dict

import yaml

__all__ = ["safe_eval", "UnsafeExpression", "SafeEvalLoader"]

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_FUNCTIONS = {"range": range, "abs": abs, "min": min, "max": max, "round": round, "int": int,
              "float": float, "len": len, "sum": sum}
_MAX_ITEMS = 100_000  # no list, range or comprehension longer than this
_MAX_EXPONENT = 256
_MAX_LENGTH = 10_000  # characters of the expression


class UnsafeExpression(ValueError):
    """The expression uses something the safe evaluator does not allow."""


def _check_size(value: Any) -> Any:
    if isinstance(value, (list, tuple, range, str)) and len(value) > _MAX_ITEMS:
        raise UnsafeExpression(f"a value of {len(value)} items (more than {_MAX_ITEMS})")
    return value


def _eval(node: ast.AST, env: Dict[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, env) for e in node.elts]
        return _check_size(items if isinstance(node, ast.List) else tuple(items))
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise UnsafeExpression(f"the name {node.id!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise UnsafeExpression(f"an exponent of {right}")
        if isinstance(node.op, ast.Mult) and isinstance(left, (list, tuple, str)) or \
                isinstance(node.op, ast.Mult) and isinstance(right, (list, tuple, str)):
            n = right if isinstance(left, (list, tuple, str)) else left
            seq = left if isinstance(left, (list, tuple, str)) else right
            if isinstance(n, int) and n * len(seq) > _MAX_ITEMS:
                raise UnsafeExpression("a repeated sequence that large")
        return _check_size(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        args = [_eval(a, env) for a in node.args]
        if node.func.id == "range" and len(range(*args)) > _MAX_ITEMS:
            raise UnsafeExpression(f"a range of {len(range(*args))} items")
        return _FUNCTIONS[node.func.id](*args)
    if isinstance(node, ast.ListComp):
        return _comprehension(node.elt, node.generators, env)
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise UnsafeExpression(f"a call of {name!r} (allowed: {', '.join(sorted(_FUNCTIONS))})")
    if isinstance(node, ast.Attribute):
        raise UnsafeExpression(f"the attribute {ast.unparse(node)!r}")
    raise UnsafeExpression(f"{type(node).__name__} ({ast.unparse(node)!r})")


def _comprehension(elt: ast.AST, generators, env: Dict[str, Any]) -> list:
    out: list = []

    def loop(k: int, scope: Dict[str, Any]) -> None:
        if k == len(generators):
            out.append(_eval(elt, scope))
            _check_size(out)
            return
        g = generators[k]
        if g.is_async or not isinstance(g.target, (ast.Name, ast.Tuple)):
            raise UnsafeExpression("that comprehension target")
        for item in _check_size(list(_eval(g.iter, scope))):
            inner = dict(scope)
            if isinstance(g.target, ast.Name):
                inner[g.target.id] = item
            else:
                names = [t.id for t in g.target.elts if isinstance(t, ast.Name)]
                if len(names) != len(g.target.elts):
                    raise UnsafeExpression("that comprehension target")
                inner.update(zip(names, item))
            if all(_eval(cond, inner) for cond in g.ifs):
                loop(k + 1, inner)

    loop(0, env)
    return out


def safe_eval(expression: str) -> Any:
    """The value of ``expression`` under the restricted rules of this module.

    Raises:
        UnsafeExpression: the expression uses anything else (names, attributes, calls of other
            functions, ...), or would build a value larger than the bounds.
    """
    if not isinstance(expression, str) or len(expression) > _MAX_LENGTH:
        raise UnsafeExpression("an expression that is not a string of at most "
                               f"{_MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise UnsafeExpression(f"invalid syntax ({e.msg})") from None
    return _eval(tree, {})


class SafeEvalLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus a safe ``!!python/object/apply:eval`` (see the module docstring)."""


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/object/apply:eval takes one expression string", node.start_mark)
    try:
        return safe_eval(args[0])
    except (UnsafeExpression, TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise yaml.constructor.ConstructorError(
            None, None, f"could not evaluate {args[0]!r} safely: it uses {e}", node.start_mark) from None


SafeEvalLoader.add_constructor("tag:yaml.org,2002:python/object/apply:eval", _construct_eval)

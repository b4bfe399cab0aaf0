"""The restricted evaluator of ``!!python/object/apply:eval`` tags: what it computes, and that it
refuses everything else (names, attributes, other calls, huge values)."""

from __future__ import annotations

import pytest

from workbench.config.safe_eval import UnsafeExpression, safe_eval


@pytest.mark.parametrize("expr, value", [
    ("[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]",
     [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]),
    ("[[0.5, 1.0, 2.0]]", [[0.5, 1.0, 2.0]]),
    ("[x * 10 for x in range(1, 4) if x != 2]", [10, 30]),
    ("[(a, b) for a in [1, 2] for b in [3]]", [(1, 3), (2, 3)]),
    ("[[x] * 2 for x in (1, 2)]", [[1, 1], [2, 2]]),
    ("-(3 // 2) + 7 % 4 + abs(-1) + max(1, 2) + round(2.5)", -1 + 3 + 1 + 2 + 2),
    ("1 if 2 > 1 else 0", 1),
    ("'abc'", "abc"),
])
def test_arithmetic_over_literals(expr, value):
    assert safe_eval(expr) == value


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "open('/etc/passwd').read()",
    "().__class__.__bases__",
    "[x for x in range(10**9)]",
    "[0] * 10**9",
    "2 ** 100000",
    "lambda: 1",
    "{'a': 1}['a']",
    "eval('1')",
    "[1, 2][0]",
    "x",
])
def test_everything_else_is_refused(expr):
    with pytest.raises(UnsafeExpression):
        safe_eval(expr)

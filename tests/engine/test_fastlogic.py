"""The Python fast path of JSONLogic answers exactly what datalogic answers, operand type by type.

Every covered operator is evaluated over a domain of values (all JSON types, missing paths, numeric
strings, -0.0, integers beyond 2^53, ...) both through `Logic` (fast path, native fallback) and
natively through datalogic on the same context; results must be identical in type and value, and a
native error must surface as `LogicError`.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from app.engine.fastlogic import FALLBACK, compile_fast
from app.engine.jsonlogic import Logic, LogicError

_MISSING = object()
DOMAIN: list[Any] = [
    _MISSING, None, True, False, 0, 1, -1, 0.0, -0.0, 1.0, 2.5, 100, 500,
    2**53, 2**53 + 1, -(2**60), 1e300, "", "a", "US", "1", "100", "10", "abc", [], [1], {}, {"k": 1},
]  # fmt: skip
SMALL: list[Any] = [_MISSING, None, True, 0, 1, 2.5, 100, "", "a", "1", [1], {}]

A, B, C = {"var": "data.a"}, {"var": "data.b"}, {"var": "data.c"}
BINARY: list[Any] = [
    *({op: [A, B]} for op in ("<", "<=", ">", ">=", "==", "===", "!=", "!==")),
    {"in": [A, B]},
    {"cat": [A, "-", B]},
    {"and": [A, B]},
    {"or": [A, B]},
    {"if": [A, "then", B, "elif", "else"]},
    {"?:": [A, B, "no"]},
    {"if": [{">=": [A, 100]}, "gold", {">=": [B, 50]}, "silver", "bronze"]},
    {"and": [{"==": [A, "US"]}, {"<": [B, 500]}]},
]
UNARY: list[Any] = [
    {"!": A},
    {"!": [A]},
    {"!!": [A]},
    {"in": [A, ["US", "UK", "DE", 1, 2.5]]},
    {"cat": [A]},
    {"<": [A, 100]},
    {"<=": [100, A]},
    {">=": [A, 2.5]},
    {">": [-1, A]},
    {"==": [A, "premium"]},
    {"==": [A, None]},
    {"===": [None, A]},
    {"!=": [A, 0]},
    {"!==": [A, False]},
    {"==": [{"var": ["data.a", "dflt"]}, "dflt"]},
    {"if": [True, A, "x"]},
]
TERNARY: list[Any] = [{"<": [A, B, C]}, {"<=": [A, B, C]}]


def _context(*values: Any) -> dict[str, Any]:
    data = {k: v for k, v in zip("abc", values, strict=False) if v is not _MISSING}
    return {"data": data, "metadata": {}, "temp_data": {}}


def _same(x: Any, y: Any) -> bool:
    """Equal in value *and* JSON type (1, 1.0 and True are three different answers)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, list):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return bool(x == y)


def _check(rule: Any, ctx: dict[str, Any]) -> None:
    logic = Logic(rule)
    native_rule = logic._rule
    assert native_rule is not None
    try:
        expected: Any = ("ok", native_rule.evaluate(ctx))
    except Exception as exc:
        expected = ("error", type(exc).__name__)
    try:
        got: Any = ("ok", logic.evaluate(ctx))
    except LogicError:
        got = ("error", "")
    assert got[0] == expected[0], (rule, ctx["data"], expected, got)
    if got[0] == "ok":
        assert _same(got[1], expected[1]), (rule, ctx["data"], expected, got)
    assert logic.is_true(ctx) is (got[0] == "ok" and got[1] is True)


@pytest.mark.parametrize("rule", BINARY, ids=lambda r: str(r)[:60])
def test_binary_operators_match_datalogic_for_every_operand_pair(rule: Any) -> None:
    assert compile_fast(rule) is not None  # really on the fast path
    for a, b in itertools.product(DOMAIN, DOMAIN):
        _check(rule, _context(a, b))


@pytest.mark.parametrize("rule", UNARY, ids=lambda r: str(r)[:60])
def test_unary_shapes_match_datalogic_for_every_operand(rule: Any) -> None:
    assert compile_fast(rule) is not None
    for a in DOMAIN:
        _check(rule, _context(a))


@pytest.mark.parametrize("rule", TERNARY, ids=lambda r: str(r)[:60])
def test_between_matches_datalogic(rule: Any) -> None:
    assert compile_fast(rule) is not None
    for a, b, c in itertools.product(SMALL, SMALL, SMALL):
        _check(rule, _context(a, b, c))


def test_covered_types_really_take_the_fast_path() -> None:
    ctx = _context(250, "US")
    for rule in ({">": [A, 200]}, {"==": [B, "US"]}, {"in": [B, ["US", "UK"]]}, {"cat": ["x-", B]}):
        fast = compile_fast(rule)
        assert fast is not None and fast(ctx) is not FALLBACK


def test_uncovered_rules_and_operands_fall_back_to_datalogic() -> None:
    assert compile_fast({"+": [1, 2]}) is None  # operator not covered
    assert compile_fast({"<": [1, 2, 3, 4]}) is None  # arity not covered
    assert compile_fast({"var": ""}) is None  # whole-context read
    cat = compile_fast({"cat": [A, B]})
    assert cat is not None and cat(_context(1, "x")) is FALLBACK  # number formatting is datalogic's
    assert Logic({"cat": [A, B]}).evaluate(_context(1, "x")) == "1x"


def test_if_branch_results_never_alias_the_context() -> None:
    ctx = _context(True, {"deep": [1]})
    out = Logic({"if": [A, B, "no"]}).evaluate(ctx)
    out["deep"].append(2)
    assert ctx["data"]["b"] == {"deep": [1]}

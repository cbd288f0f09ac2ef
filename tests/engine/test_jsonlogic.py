"""The JSONLogic dialect (datalogic-rs in templating mode), compiled once, strict-true conditions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.engine.codegen import rule_evaluator
from app.engine.jsonlogic import LogicCompileError, LogicError, check_logic, compile_logic, is_truthy

# The official JsonLogic test vectors, copied from shared/reference/jsonlogic-tests.json.
VECTORS = Path(__file__).with_name("jsonlogic-tests.json")

# Official vectors whose expected result our dialect (datalogic-rs, Orion's engine) deliberately does
# not reproduce, by index in the file. Currently none: datalogic passes all of them. Keep the list
# explicit so a future datalogic upgrade that diverges fails loudly or is recorded here with a reason.
DIALECT_DIFFERENCES: dict[int, str] = {}


def _vectors() -> list[tuple[int, Any, Any, Any]]:
    cases = json.loads(VECTORS.read_text())
    return [(i, c[0], c[1], c[2]) for i, c in enumerate(cases) if not isinstance(c, str)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_official_vectors_pass_except_listed_dialect_differences() -> None:
    vectors = _vectors()
    assert len(vectors) > 250
    failures = []
    for i, rule, data, expected in vectors:
        try:
            got: Any = compile_logic(rule).evaluate(data)
        except (LogicError, LogicCompileError) as exc:
            got = f"error: {exc}"
        if not _same(got, expected) and i not in DIALECT_DIFFERENCES:
            failures.append((i, rule, data, expected, got))
    assert failures == []


def test_official_vectors_pass_on_generated_code() -> None:
    """The same vectors through the workflow compiler's code (codegen.py), which inlines what it can."""
    failures = []
    for i, rule, data, expected in _vectors():
        try:
            got: Any = rule_evaluator(compile_logic(rule))(data)
        except (LogicError, LogicCompileError) as exc:
            got = f"error: {exc}"
        if not _same(got, expected) and i not in DIALECT_DIFFERENCES:
            failures.append((i, rule, data, expected, got))
    assert failures == []


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        ({"<": [None, 100]}, {}, True),
        ({"<": [{"var": "missing"}, 100]}, {}, True),
        ({">=": [{"var": "missing"}, 0]}, {}, True),
        ({">": [{"var": "missing"}, 0]}, {}, False),
        ({"==": [1, "1"]}, {}, True),
        ({"===": [1, "1"]}, {}, False),
        ({"!!": [[]]}, {}, False),
        ({"!!": ["0"]}, {}, True),
        ({"*": [100, 0.15]}, {}, 15),
        ({"/": [5, 2]}, {}, 2.5),
        ({"cat": ["x", None]}, {}, "x"),
        ({"cat": ["a", 25000, 2.5, True]}, {}, "a250002.5true"),
        ({"in": [None, ["a"]]}, {}, False),
        ({"in": ["Spring", "Springfield"]}, {}, True),
        ({"and": [True, 5]}, {}, 5),
        ({"and": []}, {}, None),
        ({"var": ["a.b", 7]}, {}, 7),
        ({"if": [False, 1, True, 2, 3]}, {}, 2),
    ],
)
def test_orion_dialect_facts(rule: Any, data: Any, expected: Any) -> None:
    assert _same(compile_logic(rule).evaluate(data), expected)


@pytest.mark.parametrize("rule", [{"/": [1, 0]}, {"+": ["abc", 1]}, {"throw": "boom"}])
def test_division_by_zero_nan_and_throw_raise_instead_of_returning_infinity(rule: Any) -> None:
    # json-logic-js would give Infinity/NaN; datalogic (and so Orion) raises.
    with pytest.raises(LogicError):
        compile_logic(rule).evaluate({})


def test_now_is_rfc3339_utc_to_the_second() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", compile_logic({"now": []}).evaluate({}))


def test_templating_mode_keeps_unknown_operator_objects_as_literals() -> None:
    assert compile_logic({"total": {"var": "x"}, "n": 1}).evaluate({"x": 3}) == {"total": 3, "n": 1}


@pytest.mark.parametrize(
    ("rule", "data"),
    [
        ({"var": "a"}, {"a": None}),
        ({"var": ["a", 7]}, {"a": None}),
        ({"var": ["a", 7]}, {"b": 1}),
        ({"var": "a.1"}, {"a": [1, 2]}),
        ({"var": "a.b"}, {"a": [1, 2]}),
        ({"var": "a.1"}, {"a": {"1": 5}}),
        ({"var": "a.0"}, {"a": "xyz"}),
        ({"var": "a.5"}, {"a": [1]}),
        ({"var": ""}, {"a": 1}),
        ({"var": "a"}, {"a": False}),
        ({"var": ["a", 7]}, {"a": False}),
        ({"var": "a.b.c"}, {"a": {"b": {"c": [1, {"d": 2}]}}}),
        ({"var": "a.-1"}, {"a": [1, 2]}),
    ],
)
def test_var_fast_path_matches_datalogic(rule: dict[str, Any], data: Any) -> None:
    import datalogic_py

    native = datalogic_py.Engine(templating=True).compile(rule).evaluate(data)
    assert _same(compile_logic(rule).evaluate(data), native)


def test_var_result_never_aliases_the_context() -> None:
    ctx = {"a": {"b": [1]}}
    out = compile_logic({"var": "a"}).evaluate(ctx)
    out["b"].append(2)
    assert ctx == {"a": {"b": [1]}}


def test_string_literal_is_a_constant_not_json_text() -> None:
    assert compile_logic("vip").evaluate({}) == "vip"
    assert compile_logic("[1]").evaluate({}) == "[1]"


@pytest.mark.parametrize(
    ("rule", "ctx", "expected"),
    [
        (True, {}, True),
        (1, {}, False),
        ("true", {}, False),
        ({"var": "x"}, {"x": 1}, False),
        ({"/": [1, 0]}, {}, False),
    ],
)
def test_is_true_needs_exactly_boolean_true_and_errors_count_as_false(rule: Any, ctx: Any, expected: bool) -> None:
    assert compile_logic(rule).is_true(ctx) is expected


@pytest.mark.parametrize("rule", [{"==": 1}, {"if": "x"}, {"map": [1]}, {"<": [1]}])
def test_malformed_rules_fail_at_compile_time_with_a_clear_message(rule: Any) -> None:
    with pytest.raises(LogicCompileError) as info:
        compile_logic(rule)
    assert "argument" in str(info.value)


def test_check_logic_warns_about_unknown_operators() -> None:
    errors, warnings = check_logic({"unknown_op": [1]})
    assert errors == []
    assert warnings and "unknown operator" in warnings[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ([], False), ({}, False), ("", False), ("0", True), (0, False), ([0], True)],
)
def test_truthiness_matches_the_dialect(value: Any, expected: bool) -> None:
    import datalogic_py

    assert is_truthy(value) is expected
    assert datalogic_py.Engine(templating=True).truthy(json.dumps(value)) is expected

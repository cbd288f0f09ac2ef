"""The JSONLogic dialect: the only module that imports datalogic_py.

Orion evaluates JSONLogic with datalogic-rs in templating ("preserve structure") mode; datalogic-py
is the Python binding of the same engine, so one `Engine(templating=True)` reproduces the dialect
(`null < 100` is true, `x/0` and `"abc"+1` raise, `cat` skips null, ...).

Rules are compiled once (`compile_logic`) when a workflow is compiled, never per message. Two
shapes that dominate real workflows skip the native call entirely: scalar literals and plain
`{"var": "a.b"}` lookups (same semantics as datalogic, checked by a test).

A rule that iterates (`map`, `filter`, `reduce`, `all`, `some`, `none`) refuses (`LogicError`) input
holding more than `MAX_ITERATED_ITEMS` array items, or `MAX_NESTED_ITERATED_ITEMS` when iterations nest
or a `reduce` accumulates with `merge`/`cat` (quadratic work: `reduce`+`merge` over 6,000 items held
the worker's event loop for 4.7 s). Native evaluation cannot be interrupted, so the input is bounded
before it starts.
"""

from __future__ import annotations

from typing import Any, Final

import datalogic_py as _dl

from app.engine.fastlogic import FALLBACK, MISSING, FastRule, compile_fast, lookup
from app.engine.paths import clone

__all__ = [
    "MAX_ITERATED_ITEMS",
    "MAX_NESTED_ITERATED_ITEMS",
    "Logic",
    "LogicCompileError",
    "LogicError",
    "check_logic",
    "compile_logic",
    "is_truthy",
]

_ENGINE: Final = _dl.Engine(templating=True)

MAX_ITERATED_ITEMS: Final = 10_000
MAX_NESTED_ITERATED_ITEMS: Final = 1_000
_ITERATING = frozenset({"map", "filter", "reduce", "all", "some", "none"})
_ACCUMULATING = frozenset({"merge", "cat"})


def _iteration_depth(node: Any, inside: int = 0) -> int:
    """How deeply a rule nests iterations (0: none); accumulation inside an iteration counts as one more."""
    if isinstance(node, list):
        return max((_iteration_depth(n, inside) for n in node), default=inside)
    if not isinstance(node, dict):
        return inside
    deepest = inside
    for op, args in node.items():
        level = inside + 1 if op in _ITERATING or (inside and op in _ACCUMULATING) else inside
        deepest = max(deepest, level, _iteration_depth(args, level))
    return deepest


def _items_over(value: Any, limit: int) -> bool:
    """Whether `value` holds more than `limit` array items in all (stops counting once over)."""
    stack = [value]
    count = 0
    while stack:
        node = stack.pop()
        if type(node) is list:
            count += len(node)
            if count > limit:
                return True
            stack.extend(n for n in node if isinstance(n, dict | list))
        elif type(node) is dict:
            stack.extend(n for n in node.values() if isinstance(n, dict | list))
    return False


class LogicError(Exception):
    """A JSONLogic rule failed while evaluating (division by zero, NaN, `throw`, ...)."""


class LogicCompileError(Exception):
    """A JSONLogic rule cannot be compiled; `problems` lists `(json_pointer, message)`."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def _copy_json(value: Any) -> Any:
    """Copy a JSON value so a result never aliases the context it was read from."""
    if isinstance(value, dict | list):
        return clone(value)
    return value


def _split_var_path(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


# A read trie: key -> sub-trie, or None for "the whole value at this key".
ReadTrie = dict[str, "ReadTrie | None"]


def _read_trie(rule: _dl.Rule) -> ReadTrie | None:
    """The paths a compiled rule reads, as a trie; None when the whole context must be passed.

    datalogic reports the context paths a rule reads (`Rule.facts()`); when that list is complete
    and names no computed path, a context holding just those paths evaluates identically. Handing
    the native engine that projection instead of the whole context is what makes a rule's cost
    independent of the payload size (converting a 2 KB context costs ~30 us, a projection ~1 us).
    """
    facts = rule.facts()
    if facts["computed_reads"] or not facts["reads_complete"] or facts["custom_operators"]:
        return None
    if not facts["reads_data"]:
        return {}
    trie: ReadTrie = {}
    paths = sorted(facts["reads"], key=len)  # shorter first: a read prefix covers longer reads
    for path in paths:
        if not path:
            return None  # the rule reads the root itself
        node = trie
        for i, seg in enumerate(path):
            if seg in node:
                child = node[seg]
                if child is None:
                    break  # a prefix of this path is already read whole
                node = child
            elif i == len(path) - 1:
                node[seg] = None
            else:
                child = node[seg] = {}
                node = child
    return trie


def _project(src: dict[str, Any], trie: ReadTrie) -> dict[str, Any]:
    """The part of `src` that `trie` names: dicts are rebuilt along the way, values shared.

    Where a path meets a list or a scalar before its end the whole value is kept, so numeric
    segments and out-of-range indexes behave exactly as on the full context.
    """
    out: dict[str, Any] = {}
    for key, sub in trie.items():
        value = src.get(key, MISSING)
        if value is MISSING:
            continue
        out[key] = value if sub is None or type(value) is not dict else _project(value, sub)
    return out


class Logic:
    """A compiled JSONLogic rule. `evaluate` returns a fresh value; `is_true` is Orion's strict test."""

    __slots__ = ("_default", "_fast", "_items", "_kind", "_reads", "_rule", "_segments", "_value", "source")

    def __init__(self, source: Any) -> None:
        self.source = source
        self._rule: _dl.Rule | None = None
        self._reads: ReadTrie | None = None
        self._fast: FastRule | None = None
        self._segments: tuple[str, ...] = ()
        self._default: Any = None
        self._value: Any = None
        self._items: int | None = None  # max array items in the input of an iterating rule
        if source is None or isinstance(source, bool | int | float | str):
            self._kind = "const"
            self._value = source
            return
        if isinstance(source, dict) and len(source) == 1 and "var" in source:
            arg = source["var"]
            if isinstance(arg, list) and len(arg) in (1, 2) and isinstance(arg[0], str):
                default = arg[1] if len(arg) == 2 else None
                if default is None or isinstance(default, bool | int | float | str):
                    self._kind = "var"
                    self._segments = _split_var_path(arg[0])
                    self._default = default
                    return
            elif isinstance(arg, str):
                self._kind = "var"
                self._segments = _split_var_path(arg)
                return
        self._kind = "native"
        try:
            self._rule = _ENGINE.compile_checked(source)
        except _dl.CompileError as exc:
            problems = [(d.get("pointer", ""), d.get("message", "")) for d in exc.diagnostics]
            raise LogicCompileError(_describe(problems, str(exc)), problems) from exc
        except _dl.DataLogicError as exc:
            raise LogicCompileError(str(exc)) from exc
        self._reads = _read_trie(self._rule)
        depth = _iteration_depth(source)
        if depth:
            self._items = MAX_ITERATED_ITEMS if depth == 1 else MAX_NESTED_ITERATED_ITEMS
        # Common shapes (comparisons, if/and/or, cat, in) run in Python; see fastlogic.py.
        self._fast = compile_fast(source)

    @property
    def is_constant(self) -> bool:
        return self._kind == "const"

    def evaluate(self, context: Any) -> Any:
        """Evaluate against `context`; raises `LogicError` when the rule fails."""
        kind = self._kind
        if kind == "const":
            return self._value
        if kind == "var":
            found = lookup(context, self._segments)
            return self._default if found is MISSING else _copy_json(found)
        fast = self._fast
        if fast is not None:
            value = fast(context)
            if value is not FALLBACK:
                return value
        rule = self._rule
        assert rule is not None
        reads = self._reads
        data = _project(context, reads) if reads is not None and type(context) is dict else context
        if self._items is not None and _items_over(data, self._items):
            raise LogicError(f"the rule iterates over more than {self._items} array items (limit)")
        try:
            return rule.evaluate(data)
        except _dl.DataLogicError as exc:
            raise LogicError(str(exc)) from exc

    def is_true(self, context: Any) -> bool:
        """Orion's condition test: the result must be exactly boolean `true`; errors count as false."""
        kind = self._kind
        if kind == "const":
            return self._value is True
        if kind == "var":
            found = lookup(context, self._segments)
            return (self._default if found is MISSING else found) is True
        fast = self._fast
        if fast is not None:
            value = fast(context)
            if value is not FALLBACK:
                return value is True
        rule = self._rule
        assert rule is not None
        reads = self._reads
        data = _project(context, reads) if reads is not None and type(context) is dict else context
        if self._items is not None and _items_over(data, self._items):
            return False  # an error counts as false
        try:
            return rule.evaluate(data) is True
        except _dl.DataLogicError:
            return False

    def __repr__(self) -> str:
        return f"Logic({self.source!r})"


def _describe(problems: list[tuple[str, str]], fallback: str) -> str:
    if not problems:
        return fallback
    return "; ".join(f"{msg} (at '{ptr or '/'}')" for ptr, msg in problems)


def compile_logic(rule: Any) -> Logic:
    """Compile a rule once; raises `LogicCompileError` with datalogic's diagnostics."""
    return Logic(rule)


def check_logic(rule: Any) -> tuple[list[str], list[str]]:
    """Errors and warnings for a rule, for workflow validation.

    Errors are what stops compilation. Warnings point at keys that are not operators: in
    templating mode they silently become literal objects, which is rarely what was meant.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        Logic(rule)
    except LogicCompileError as exc:
        errors.append(str(exc))
        return errors, warnings
    if isinstance(rule, dict | list):
        try:
            diags = _ENGINE.check(rule, mode="strict")
        except _dl.DataLogicError:  # pragma: no cover - check() reports, it does not raise
            diags = []
        for d in diags:
            if d.get("code") == "UnknownOperator":
                warnings.append(f"{d.get('message')} (at '{d.get('pointer') or '/'}'): it is kept as a literal")
    return errors, warnings


def is_truthy(value: Any) -> bool:
    """JavaScript-style truthiness as the dialect defines it (`[]`, `""`, `0`, `null` are falsy)."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True

"""Decision-table input cells: parsed once into a Python test expression and a static domain.

Cell syntax (strings, as in a spreadsheet; JSON documents may also use plain JSON values):

| cell                      | matches                                                     |
|---------------------------|-------------------------------------------------------------|
| `-`, empty, `null`        | anything                                                    |
| `500`, `"gold"`, `gold`, `true` | exactly that value (a bare word is a string)          |
| `>= 500`, `< 10`, `== x`, `!= x` | comparison with a number (or string)                 |
| `[100..500)`              | range; `[`/`]` closed ends, `(`/`)` open ends               |
| `in [a, b, 3]`, `not in [...]` | set membership                                         |
| `not(<cell>)`             | negation of any other cell                                  |
| `{JSONLogic}` (JSON object) | the rule is strictly true; `{"var": "value"}` is the input |

A JSON list cell is a set, a JSON number/bool an exact value. Comparisons never coerce: a number
cell does not match the string "500", and `true` is not the number 1.

Each cell compiles to a Python boolean expression over the column's raw value `v<i>`, its numeric
view `n<i>` (the value when it is an int/float, else NaN, which every comparison rejects) and its
string view `s<i>` (else None); the table
compiler joins them into one generated function per table. `domain` is what static overlap
detection for `unique` tables reasons about (None = cannot be decided statically).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.engine.jsonlogic import Logic, LogicCompileError, compile_logic

__all__ = ["COLUMN_TYPES", "Cell", "CellError", "Domain", "parse_cell", "parse_literal"]

COLUMN_TYPES = ("any", "number", "string", "boolean")

_RANGE = re.compile(r"^([\[\(\]])\s*(.+?)\s*\.\.\s*(.+?)\s*([\]\)\[])$", re.S)
_COMPARE = re.compile(r"^(<=|>=|==|!=|<|>|=)\s*(.+)$", re.S)
_SET = re.compile(r"^(not\s+in|in)\s*\[(.*)\]$", re.S | re.I)
_NOT = re.compile(r"^not\s*\((.*)\)$", re.S | re.I)
_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


class CellError(ValueError):
    """A cell that cannot be parsed or does not fit its column's declared type."""


@dataclass(frozen=True, slots=True)
class Domain:
    """The set of values a cell matches, for static overlap checks.

    `points`: a finite set of (type, value); otherwise a numeric or string interval
    `[lo, hi]` with open/closed ends (`kind` "number" or "string"), or `any`.
    """

    kind: str  # "any" | "points" | "number" | "string"
    points: frozenset[tuple[str, Any]] = frozenset()
    lo: Any = None
    lo_closed: bool = True
    hi: Any = None
    hi_closed: bool = True

    def contains(self, kind: str, value: Any) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "points":
            return (kind, value) in self.points
        if kind != self.kind:
            return False
        if self.lo is not None and (value < self.lo or (value == self.lo and not self.lo_closed)):
            return False
        return not (self.hi is not None and (value > self.hi or (value == self.hi and not self.hi_closed)))

    def overlaps(self, other: Domain) -> bool:
        """True when some value is matched by both (only called on decidable domains)."""
        if self.kind == "any" or other.kind == "any":
            return True
        if self.kind == "points":
            return any(other.contains(k, v) for k, v in self.points)
        if other.kind == "points":
            return other.overlaps(self)
        if self.kind != other.kind:
            return False
        lo, lo_closed = _max_lo(self, other)
        hi, hi_closed = _min_hi(self, other)
        if lo is None or hi is None:
            return True
        return lo < hi or (lo == hi and lo_closed and hi_closed)


def _max_lo(a: Domain, b: Domain) -> tuple[Any, bool]:
    if a.lo is None:
        return b.lo, b.lo_closed
    if b.lo is None or a.lo > b.lo:
        return a.lo, a.lo_closed
    if b.lo > a.lo:
        return b.lo, b.lo_closed
    return a.lo, a.lo_closed and b.lo_closed


def _min_hi(a: Domain, b: Domain) -> tuple[Any, bool]:
    if a.hi is None:
        return b.hi, b.hi_closed
    if b.hi is None or a.hi < b.hi:
        return a.hi, a.hi_closed
    if b.hi < a.hi:
        return b.hi, b.hi_closed
    return a.hi, a.hi_closed and b.hi_closed


ANY = Domain("any")


@dataclass(frozen=True, slots=True)
class Cell:
    """One parsed input cell. `test(i)` is its Python expression for column `i` (None = always)."""

    kind: str  # any | exact | compare | range | set | not | logic
    text: str
    domain: Domain | None = ANY
    # building blocks for `test`
    op: str = ""
    value: Any = None
    low: Any = None
    high: Any = None
    low_closed: bool = True
    high_closed: bool = True
    members: tuple[Any, ...] = ()
    inner: Cell | None = None
    logic: Logic | None = None

    def test(self, i: int, constants: list[Any]) -> str | None:
        """The Python boolean expression for column `i`; constants are appended to `constants`."""
        kind = self.kind
        if kind == "any":
            return None
        if kind == "exact":
            return _equals(i, self.value)
        if kind == "compare":
            op = {"=": "==", "==": "=="}.get(self.op, self.op)
            if op == "==":
                return _equals(i, self.value)
            if op == "!=":
                return f"not ({_equals(i, self.value)})"
            if _kind_of(self.value) == "number":  # n<i> is NaN for non-numbers: every comparison is False
                return f"n{i} {op} {self.value!r}"
            return f"(s{i} is not None and s{i} {op} {self.value!r})"
        if kind == "range":
            lo_op = "<=" if self.low_closed else "<"
            hi_op = "<=" if self.high_closed else "<"
            if _kind_of(self.low) == "number":
                return f"{self.low!r} {lo_op} n{i} {hi_op} {self.high!r}"
            return f"(s{i} is not None and {self.low!r} {lo_op} s{i} {hi_op} {self.high!r})"
        if kind == "set":
            parts = []
            nums = frozenset(m for m in self.members if _kind_of(m) == "number")
            strs = frozenset(m for m in self.members if _kind_of(m) == "string")
            if nums:
                constants.append(nums)
                parts.append(f"n{i} in _c[{len(constants) - 1}]")
            if strs:
                constants.append(strs)
                parts.append(f"s{i} in _c[{len(constants) - 1}]")
            parts.extend(f"v{i} is {m!r}" for m in self.members if m is None or isinstance(m, bool))
            inside = " or ".join(parts) or "False"
            return f"not ({inside})" if self.op == "not in" else f"({inside})"
        if kind == "not":
            assert self.inner is not None
            inner = self.inner.test(i, constants)
            return "False" if inner is None else f"not ({inner})"
        assert self.logic is not None
        constants.append(self.logic)
        return f"_c[{len(constants) - 1}].is_true({{**ctx, 'value': v{i}}})"


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _equals(i: int, value: Any) -> str:
    kind = _kind_of(value)
    if kind == "number":
        return f"n{i} == {value!r}"
    if kind == "string":
        return f"s{i} == {value!r}"
    return f"v{i} is {value!r}"  # true / false / null


def parse_literal(text: str) -> Any:
    """A cell literal: a JSON number, quoted string, true/false/null, or a bare word (a string)."""
    text = text.strip()
    if not text:
        raise CellError("empty value")
    if _NUMBER.match(text) or text[0] == '"' or text in ("true", "false", "null"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CellError(f"bad literal {text!r}: {exc}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise CellError(f"bad number {text!r}")
        return value
    return text


def _split_items(body: str) -> list[str]:
    """Split `a, "b, c", 3` on commas outside double quotes."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    escaped = False
    for ch in body:
        if escaped:
            cur.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
            continue
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if quoted:
        raise CellError("unterminated string")
    items.append("".join(cur))
    if len(items) == 1 and not items[0].strip():
        return []
    return items


def _check_type(value: Any, column_type: str, text: str) -> None:
    if column_type == "any":
        return
    kind = _kind_of(value)
    if kind == "null" or kind == column_type:
        return
    raise CellError(f"{text!r}: {kind} value {value!r} in a {column_type} column")


def _literal_domain(value: Any) -> Domain:
    return Domain("points", frozenset({(_kind_of(value), value)}))


def parse_cell(raw: Any, column_type: str = "any") -> Cell:
    """Parse one input cell (a string in the syntax above, or a JSON value); raises `CellError`."""
    if raw is None:
        return Cell("any", "-")
    if isinstance(raw, dict):
        try:
            logic = compile_logic(raw)
        except LogicCompileError as exc:
            raise CellError(f"invalid JSONLogic: {exc}") from None
        return Cell("logic", orjson.dumps(raw).decode(), domain=None, logic=logic)
    if isinstance(raw, list):
        for m in raw:
            if isinstance(m, dict | list):
                raise CellError("set members must be numbers, strings, booleans or null")
            _check_type(m, column_type, repr(raw))
        return _set_cell("in", tuple(raw), orjson.dumps(raw).decode())
    if isinstance(raw, bool | int | float):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise CellError(f"bad number {raw!r}")
        _check_type(raw, column_type, str(raw))
        return Cell("exact", orjson.dumps(raw).decode(), domain=_literal_domain(raw), value=raw)
    if not isinstance(raw, str):
        raise CellError(f"a cell must be a string, number, boolean, list, object or null, not {type(raw).__name__}")
    return _parse_text(raw, column_type)


def _parse_text(raw: str, column_type: str) -> Cell:
    text = raw.strip()
    if text in ("", "-"):
        return Cell("any", "-")
    m = _NOT.match(text)
    if m:
        inner = _parse_text(m.group(1), column_type)
        if inner.kind == "any":
            raise CellError(f"{text!r}: not(-) matches nothing")
        return Cell("not", text, domain=None, inner=inner)
    m = _SET.match(text)
    if m:
        op = "not in" if m.group(1).lower().startswith("not") else "in"
        members = tuple(parse_literal(item) for item in _split_items(m.group(2)))
        if not members:
            raise CellError(f"{text!r}: empty set")
        for member in members:
            _check_type(member, column_type, text)
        return _set_cell(op, members, text)
    m = _RANGE.match(text)
    if m and ".." in text:
        low, high = parse_literal(m.group(2)), parse_literal(m.group(3))
        kinds = {_kind_of(low), _kind_of(high)}
        if kinds not in ({"number"}, {"string"}):
            raise CellError(f"{text!r}: range ends must both be numbers or both strings")
        _check_type(low, column_type, text)
        low_closed, high_closed = m.group(1) == "[", m.group(4) == "]"
        if low > high or (low == high and not (low_closed and high_closed)):
            raise CellError(f"{text!r}: empty range")
        interval = Domain(_kind_of(low), lo=low, lo_closed=low_closed, hi=high, hi_closed=high_closed)
        return Cell("range", text, domain=interval, low=low, high=high, low_closed=low_closed, high_closed=high_closed)
    m = _COMPARE.match(text)
    if m:
        if m.group(2).lstrip()[:1] in ("<", ">", "=", "!"):
            raise CellError(f"{text!r}: cannot parse this cell")
        op, value = m.group(1), parse_literal(m.group(2))
        kind = _kind_of(value)
        if op in ("<", "<=", ">", ">=") and kind not in ("number", "string"):
            raise CellError(f"{text!r}: {op} needs a number or a string")
        _check_type(value, column_type, text)
        domain: Domain | None
        if op in ("=", "=="):
            domain = _literal_domain(value)
        elif op == "!=":
            domain = None
        elif op.startswith("<"):
            domain = Domain(kind, hi=value, hi_closed=op == "<=")
        else:
            domain = Domain(kind, lo=value, lo_closed=op == ">=")
        return Cell("compare", text, domain=domain, op=op, value=value)
    if text[0] in "[(<>=!" or text.lower().startswith(("in ", "in[", "not ")):
        raise CellError(f"{text!r}: cannot parse this cell")
    value = parse_literal(text)
    _check_type(value, column_type, text)
    return Cell("exact", text, domain=_literal_domain(value), value=value)


def _set_cell(op: str, members: tuple[Any, ...], text: str) -> Cell:
    domain = Domain("points", frozenset((_kind_of(m), m) for m in members)) if op == "in" else None
    return Cell("set", text, domain=domain, op=op, members=members)

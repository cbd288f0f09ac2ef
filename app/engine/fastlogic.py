"""Pure-Python evaluation of the JSONLogic shapes that dominate workflow conditions and mappings.

A native datalogic call costs ~1-2 us (argument conversion both ways) while a comparison of a
`var` with a literal is a few dict lookups. `compile_fast` turns a rule made only of the operators
below into a closure; at run time the closure handles only operand types whose result is certain to
equal datalogic's (checked value by value against datalogic by `tests/engine/test_fastlogic.py`) and
returns `FALLBACK` for anything else, in which case the caller evaluates the rule natively. So the
fast path can only ever answer what datalogic would answer; it never raises.

Covered: literals, `var`, `< <= > >=` (2 or 3 arguments), `== === != !==`, `!`, `!!`, `and`, `or`,
`if`/`?:`, `in` (literal list or string), `cat`, `now` (no arguments). Operand types: numbers (not bool; integers up to
2^53 so int/float comparisons are exact in both), strings, booleans and null as tabled per operator.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Any, Final

from app.engine.paths import clone

__all__ = ["FALLBACK", "MISSING", "FastRule", "compile_fast", "lookup"]

FALLBACK: Final[Any] = object()
MISSING: Final[Any] = object()
_EXACT: Final = 1 << 53

FastRule = Callable[[Any], Any]


def lookup(root: Any, segments: tuple[str, ...]) -> Any:
    """datalogic's `var` walk: object keys, numeric segments index arrays, anything else is missing."""
    cur = root
    for seg in segments:
        if type(cur) is dict:
            cur = cur.get(seg, MISSING)
            if cur is MISSING:
                return MISSING
        elif type(cur) is list:
            if not (seg.isascii() and seg.isdigit()):
                return MISSING
            idx = int(seg)
            if idx >= len(cur):
                return MISSING
            cur = cur[idx]
        else:
            return MISSING
    return cur


def _is_scalar(value: Any) -> bool:
    return value is None or type(value) in (bool, int, float, str)


def _num(v: Any) -> bool:
    """A number both engines compare exactly (bool excluded; big integers left to datalogic)."""
    t = type(v)
    return t is float or (t is int and -_EXACT <= v <= _EXACT)


def _order(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Comparable operands for `<`-family operators, or None (not covered)."""
    if _num(a):
        if _num(b):
            return a, b
        if b is None:
            return a, 0  # datalogic: null orders as 0
        return None
    if a is None:
        if _num(b):
            return 0, b
        if b is None:
            return 0, 0
        return None
    if type(a) is str and type(b) is str:
        return a, b
    return None


def _equal(a: Any, b: Any, strict: bool) -> Any:
    """datalogic's `==` (or `===` when strict) for covered operands, else FALLBACK."""
    if _num(a):
        if _num(b):
            return a == b
    elif a is not None and b is not None:
        ta = type(a)
        if (ta is str or ta is bool) and type(b) is ta:
            return a == b
        return FALLBACK
    if a is None or b is None:
        other = b if a is None else a
        if other is None:
            return True
        if not _is_scalar(other):
            return FALLBACK  # loose equality with a container is an error in datalogic
        if strict:
            return False
        # datalogic's loose equality coerces null to 0 / "" / false
        return other is False or (type(other) is str and other == "") or (_num(other) and other == 0)
    return FALLBACK


def _var(arg: Any) -> FastRule | None:
    default: Any = None
    if type(arg) is list:
        if not 1 <= len(arg) <= 2 or type(arg[0]) is not str:
            return None
        if len(arg) == 2:
            default = arg[1]
            if not _is_scalar(default):
                return None
        path = arg[0]
    elif type(arg) is str:
        path = arg
    else:
        return None
    segments = tuple(path.split(".")) if path else ()
    if not segments:
        return None  # the whole context: left to datalogic
    if len(segments) == 2:
        k0, k1 = segments

        def var2(ctx: Any) -> Any:
            # `data.x`, the common case: two dict lookups; anything else takes the general walk
            if type(ctx) is dict:
                d = ctx.get(k0)
                if type(d) is dict:
                    v = d.get(k1, MISSING)
                    return default if v is MISSING else v
            found = lookup(ctx, segments)
            return default if found is MISSING else found

        return var2

    def var(ctx: Any) -> Any:
        found = lookup(ctx, segments)
        return default if found is MISSING else found

    return var


def _is_var(node: Any) -> bool:
    return type(node) is dict and len(node) == 1 and "var" in node


def _const(value: Any) -> FastRule:
    def const(_ctx: Any) -> Any:
        return value

    return const


_LT: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare_literal(op: str, get: FastRule, lit: Any, var_first: bool) -> FastRule:
    """`{op: [var, number]}` (or reversed): the shape of most conditions, with the types inlined."""
    base = _LT[op]
    test = base if var_first else (lambda a, b: base(b, a))
    on_null = test(0, lit)  # datalogic: null orders as 0

    def cmp_lit(ctx: Any) -> Any:
        a = get(ctx)
        t = type(a)
        if t is float or (t is int and -_EXACT <= a <= _EXACT):
            return test(a, lit)
        if a is None:
            return on_null
        return FALLBACK

    return cmp_lit


def _compare(op: str, args: list[FastRule], raw: list[Any]) -> FastRule | None:
    test = _LT[op]
    if len(args) == 2:
        for i in (0, 1):
            if _is_var(raw[i]) and _num(raw[1 - i]):
                return _compare_literal(op, args[i], raw[1 - i], var_first=i == 0)
        fa, fb = args

        def cmp2(ctx: Any) -> Any:
            a = fa(ctx)
            if a is FALLBACK:
                return FALLBACK
            b = fb(ctx)
            if b is FALLBACK:
                return FALLBACK
            pair = _order(a, b)
            return FALLBACK if pair is None else test(*pair)

        return cmp2
    if len(args) == 3 and op in ("<", "<="):
        fa, fb, fc = args

        def between(ctx: Any) -> Any:
            a, b, c = fa(ctx), fb(ctx), fc(ctx)
            if a is FALLBACK or b is FALLBACK or c is FALLBACK:
                return FALLBACK
            left, right = _order(a, b), _order(b, c)
            if left is None or right is None:
                return FALLBACK
            return test(*left) and test(*right)

        return between
    return None


def _equals(op: str, args: list[FastRule]) -> FastRule | None:
    if len(args) != 2:
        return None
    fa, fb = args
    negate = op in ("!=", "!==")
    strict = op in ("===", "!==")

    def eq(ctx: Any) -> Any:
        a = fa(ctx)
        if a is FALLBACK:
            return FALLBACK
        b = fb(ctx)
        if b is FALLBACK:
            return FALLBACK
        same = _equal(a, b, strict)
        if same is FALLBACK:
            return FALLBACK
        return not same if negate else same

    return eq


def _not(op: str, args: list[FastRule]) -> FastRule | None:
    if len(args) != 1:
        return None
    (fa,) = args
    double = op == "!!"

    def neg(ctx: Any) -> Any:
        a = fa(ctx)
        if a is None:
            return not double
        if type(a) is not bool:
            return FALLBACK
        return a if double else not a

    return neg


def _logic(op: str, args: list[FastRule]) -> FastRule | None:
    if not args:
        return None
    stop_on = op == "or"  # `or` stops at the first true operand, `and` at the first false one

    def junction(ctx: Any) -> Any:
        for f in args:
            v = f(ctx)
            if type(v) is not bool:
                return FALLBACK  # JavaScript-style operand results: left to datalogic
            if v is stop_on:
                return v
        return not stop_on

    return junction


def _if(args: list[FastRule]) -> FastRule | None:
    if len(args) < 2:
        return None
    pairs = [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]
    otherwise = args[-1] if len(args) % 2 else None

    def branch(ctx: Any) -> Any:
        for cond, then in pairs:
            c = cond(ctx)
            if c is None or c is False:
                continue
            if c is not True:
                return FALLBACK
            value = then(ctx)
            break
        else:
            if otherwise is None:
                return None
            value = otherwise(ctx)
        # a branch may be a `var` of an object: results never alias the context
        return clone(value) if type(value) is dict or type(value) is list else value

    return branch


def _in(raw: list[Any], args: list[FastRule]) -> FastRule | None:
    if len(args) != 2:
        return None
    needle = args[0]
    hay = raw[1]
    if type(hay) is list:
        items = hay
        if not all(type(x) is str or _num(x) for x in items):
            return None
        strings = frozenset(x for x in items if type(x) is str)
        numbers = tuple(x for x in items if type(x) is not str)

        def in_list(ctx: Any) -> Any:
            v = needle(ctx)
            if type(v) is str:
                return v in strings
            if _num(v):
                return any(v == n for n in numbers)
            if v is None:
                return False  # the list holds no null
            return FALLBACK

        return in_list
    fhay = args[1]

    def in_text(ctx: Any) -> Any:
        v, h = needle(ctx), fhay(ctx)
        if type(v) is str and type(h) is str:
            return v in h
        return FALLBACK

    return in_text


def _cat(args: list[FastRule]) -> FastRule:
    def cat(ctx: Any) -> Any:
        parts: list[str] = []
        for f in args:
            v = f(ctx)
            if type(v) is str:
                parts.append(v)
            elif v is not None:
                return FALLBACK  # numbers/booleans have datalogic's own formatting
        return "".join(parts)

    return cat


_NOW_TEXT: dict[int, str] = {}


def _now(_ctx: Any) -> Any:
    """datalogic's `now`: the UTC time as RFC 3339 with whole seconds (`2026-01-02T03:04:05Z`)."""
    secs = int(time.time())
    text = _NOW_TEXT.get(secs)
    if text is None:
        _NOW_TEXT.clear()  # one entry: only the current second is ever asked for
        text = _NOW_TEXT[secs] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))
    return text


def compile_fast(node: Any) -> FastRule | None:
    """A closure evaluating `node`, or None when the rule uses anything not covered here."""
    if _is_scalar(node):
        return _const(node)
    if type(node) is not dict or len(node) != 1:
        return None
    ((op, raw),) = node.items()
    if op == "var":
        return _var(raw)
    raw_args = raw if type(raw) is list else [raw]
    if op == "in" and len(raw_args) == 2 and type(raw_args[1]) is list:
        first = compile_fast(raw_args[0])
        return None if first is None else _in(raw_args, [first, _const(None)])
    args: list[FastRule] = []
    for a in raw_args:
        f = compile_fast(a)
        if f is None:
            return None
        args.append(f)
    if op in _LT:
        return _compare(op, args, raw_args)
    if op in ("==", "===", "!=", "!=="):
        return _equals(op, args)
    if op in ("!", "!!"):
        return _not(op, args)
    if op in ("and", "or"):
        return _logic(op, args)
    if op in ("if", "?:"):
        return _if(args)
    if op == "in":
        return _in(raw_args, args)
    if op == "cat":
        return _cat(args)
    if op == "now" and not args:
        return _now
    return None

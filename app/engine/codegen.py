"""Workflows compiled to Python: one generated function per workflow runs its tasks with no interpretation.

`task_runner(workflow)` turns a `CompiledWorkflow` into straight-line Python source, compiled once with
`compile()` and kept on the workflow: task conditions, `map` mappings, `filter` and `validation` rules are
inlined, paths are pre-split into constants, constant rules are folded (a task whose condition is the
literal `false` disappears, a mapping of the literal `null` writes nothing), and the JSONLogic shapes that
`fastlogic.py` covers are emitted as Python statements with exactly its operand rules. Where those rules
cannot answer at run time (`FALLBACK`), the whole rule is evaluated by its `Logic` object (datalogic), as
the interpreter does. Every other function (parse, publish, log, connectors, plugins, dry-run recorders)
is called through its own `run`, with the interpreter's bookkeeping around it.

The generated function has the interpreter's exact semantics (`Engine._tasks_sync`): same audit entries,
`metadata.progress`, errors, statuses, exceptions, deadline checks and halts; `tests/engine/test_codegen.py`
runs random workflows and messages through both and demands identical results. A lean variant
(`task_runner(workflow, changes=False)`) leaves the inlined tasks' `changes` out of their audit entries and
is identical otherwise (tested the same way). It serves the synchronous tasks of runs without a step trace
(dry-runs keep the interpreter, which records every step).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from app.engine import fastlogic
from app.engine.fastlogic import FALLBACK, compile_fast
from app.engine.functions.filter import FilterFunction
from app.engine.functions.map import MapFunction
from app.engine.functions.validate import ValidationFunction
from app.engine.jsonlogic import Logic, LogicError
from app.engine.message import new_audit_entry
from app.engine.paths import MISSING, clone, set_path, walk_keys
from app.errors import Timeout

__all__ = ["TaskRunner", "generate", "needs_task_context", "rule_evaluator", "task_runner"]

# (message, task context or None, deadline or None, work budget) -> None; raises like Engine._tasks_sync
TaskRunner = Callable[[Any, Any, "float | None", Any], None]

_MAX_DEPTH: Final = 40  # generated blocks nest per operand; deeper rules call their closure instead
_EXACT: Final = 1 << 53
_COMPARE: Final = {"<": "<", "<=": "<=", ">": ">", ">=": ">="}
_INLINED: Final = (MapFunction, FilterFunction, ValidationFunction)
_UNWALKED: Final[Any] = object()


def _inlined(function: Any) -> bool:
    # Exact types: a subclass or a plugin that replaces a built-in keeps its own `run`.
    return type(function) in _INLINED


def needs_task_context(workflow: Any) -> bool:
    """Whether the workflow calls any function through `run` (the inlined built-ins need no `TaskContext`)."""
    return not all(_inlined(t.function) for t in workflow.tasks)


class _Source:
    """Generated source with its constants; every object the code uses is a named global of the function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1
        self.names: dict[str, Any] = {}
        self._ids: dict[int, str] = {}
        self._counter = itertools.count()
        # Locals known to hold a dict: a task's `context` / `c` (`Message.context` always is one); a
        # lone rule's context may be any JSON value (the conformance vectors pass arrays and scalars).
        self.dicts: frozenset[str] = frozenset()

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.emit(header)
        self.depth += 1
        mark = len(self.lines)
        try:
            yield
        finally:
            if len(self.lines) == mark:
                self.emit("pass")
            self.depth -= 1

    def const(self, value: Any, hint: str = "K") -> str:
        """A global name bound to `value` (the very object, never a copy)."""
        key = id(value)
        name = self._ids.get(key)
        if name is None:
            name = f"{hint}{next(self._counter)}"
            self.names[name] = value
            self._ids[key] = name
        return name

    def tmp(self, hint: str = "v") -> str:
        return f"{hint}{next(self._counter)}"


def _literal_ok(value: Any) -> bool:
    return value is None or type(value) in (bool, int, float, str)


# -- JSONLogic: fastlogic's closures as statements ---------------------------------------------------------


class _Logic:
    """Emits statements that leave fastlogic's answer for a rule (a value or `FALLBACK`) in a local."""

    def __init__(self, src: _Source) -> None:
        self.src = src

    def fast(self, node: Any, ctx: str) -> str:
        """Local name holding what `compile_fast(node)(ctx)` returns; `node` must be fast-compilable."""
        src = self.src
        if _literal_ok(node):
            return src.const(node)
        ((op, raw),) = node.items()
        raw_args = raw if type(raw) is list else [raw]
        if src.depth + len(raw_args) > _MAX_DEPTH:
            return self._closure(node, ctx)  # each operand may open a block: keep Python's nesting limits
        if op == "var":
            return self._var(raw, ctx)
        if op in _COMPARE:
            return self._compare(op, raw_args, ctx)
        if op in ("==", "===", "!=", "!=="):
            return self._equals(op, raw_args, ctx)
        if op in ("!", "!!"):
            return self._not(op, raw_args[0], ctx)
        if op in ("and", "or"):
            return self._junction(op, raw_args, ctx)
        if op == "in" and len(raw_args) == 2 and type(raw_args[1]) is list:
            return self._in_list(raw_args, ctx)
        if op == "cat":
            return self._cat(raw_args, ctx)
        if op in ("if", "?:"):
            out = src.tmp()
            self._branch(raw_args, 0, out, ctx)
            results = [a for i, a in enumerate(raw_args) if i % 2 or i == len(raw_args) - 1]
            if not all(_literal_ok(a) for a in results):
                # a branch may be a `var` of an object: results never alias the context
                clone_ = src.const(clone, "clone")
                src.emit(f"if type({out}) is dict or type({out}) is list: {out} = {clone_}({out})")
            return out
        return self._closure(node, ctx)  # in (text), now: called as fastlogic's closure

    def _branch(self, raw: list[Any], i: int, out: str, ctx: str) -> None:
        """`if`: the first strictly-true condition's branch; null/false go on; anything else is FALLBACK."""
        src = self.src
        if i + 1 >= len(raw):  # no pair left: the `else` value, or null
            src.emit(f"{out} = {self.fast(raw[i], ctx) if i < len(raw) else 'None'}")
            return
        cond = self.fast(raw[i], ctx)
        with src.block(f"if {cond} is True:"):
            src.emit(f"{out} = {self.fast(raw[i + 1], ctx)}")
        with src.block(f"elif {cond} is None or {cond} is False:"):
            self._branch(raw, i + 2, out, ctx)
        with src.block("else:"):
            src.emit(f"{out} = {src.const(FALLBACK, 'FB')}")

    def _closure(self, node: Any, ctx: str) -> str:
        fn = compile_fast(node)
        assert fn is not None
        out = self.src.tmp()
        self.src.emit(f"{out} = {self.src.const(fn, 'F')}({ctx})")
        return out

    def _var(self, raw: Any, ctx: str) -> str:
        src = self.src
        default: Any = None
        path = raw
        if type(raw) is list:
            path = raw[0]
            if len(raw) == 2:
                default = raw[1]
        segments = tuple(path.split("."))
        out = src.tmp()
        missing = src.const(fastlogic.MISSING, "MISSING")
        if all(not s.isdigit() for s in segments) and len(segments) <= 4:
            # object keys only: a list or a scalar on the way means missing (`lookup`'s rules, unrolled)
            cur = ctx
            for i, seg in enumerate(segments):
                key = src.const(seg, "S")
                if cur in src.dicts:
                    src.emit(f"{out} = {cur}.get({key}, {missing})")
                    cur = out
                    if i < len(segments) - 1:
                        src.emit(f"if {out} is not {missing}:")
                        src.depth += 1
                    continue
                src.emit(f"{out} = {cur}.get({key}, {missing}) if type({cur}) is dict else {missing}")
                cur = out
                if i < len(segments) - 1:
                    src.emit(f"if {out} is not {missing}:")
                    src.depth += 1
            src.depth -= len(segments) - 1
        else:
            src.emit(f"{out} = {src.const(fastlogic.lookup, 'lookup')}({ctx}, {src.const(segments, 'P')})")
        src.emit(f"if {out} is {missing}: {out} = {src.const(default)}")
        return out

    def _compare(self, op: str, raw: list[Any], ctx: str) -> str:
        src = self.src
        out = src.tmp()
        fb = src.const(FALLBACK, "FB")
        if len(raw) == 2:
            for i in (0, 1):
                lit = raw[1 - i]
                if fastlogic._is_var(raw[i]) and fastlogic._num(lit):
                    a = self.fast(raw[i], ctx)
                    k = src.const(lit)
                    test = f"{a} {op} {k}" if i == 0 else f"{k} {op} {a}"
                    base = fastlogic._LT[op]
                    on_null = base(0, lit) if i == 0 else base(lit, 0)  # datalogic: null orders as 0
                    t = src.tmp("t")
                    src.emit(f"{t} = type({a})")
                    src.emit(f"if {t} is float or ({t} is int and -{_EXACT} <= {a} <= {_EXACT}): {out} = {test}")
                    src.emit(f"elif {a} is None: {out} = {on_null!r}")
                    src.emit(f"else: {out} = {fb}")
                    return out
            order = src.const(fastlogic._order, "order")

            def ordered(a: str, b: str) -> None:
                pair = src.tmp("p")
                src.emit(f"{pair} = {order}({a}, {b})")
                src.emit(f"if {pair} is not None: {out} = {pair}[0] {op} {pair}[1]")

            self._pair(raw, ctx, out, ordered)
            return out
        a, b, c = (self.fast(x, ctx) for x in raw)  # `between`: all three are evaluated
        order = src.const(fastlogic._order, "order")
        src.emit(f"{out} = {fb}")
        with src.block(f"if {a} is not {fb} and {b} is not {fb} and {c} is not {fb}:"):
            left, right = src.tmp("p"), src.tmp("p")
            src.emit(f"{left} = {order}({a}, {b})")
            src.emit(f"{right} = {order}({b}, {c})")
            src.emit(
                f"if {left} is not None and {right} is not None: "
                f"{out} = {left}[0] {op} {left}[1] and {right}[0] {op} {right}[1]"
            )
        return out

    def _equals(self, op: str, raw: list[Any], ctx: str) -> str:
        src = self.src
        out = src.tmp()
        fb = src.const(FALLBACK, "FB")
        equal = src.const(fastlogic._equal, "equal")
        strict = op in ("===", "!==")
        negate = "not " if op in ("!=", "!==") else ""

        def compared(a: str, b: str) -> None:
            same = src.tmp("s")
            src.emit(f"{same} = {equal}({a}, {b}, {strict})")
            src.emit(f"if {same} is not {fb}: {out} = {negate}{same}")

        self._pair(raw, ctx, out, compared)
        return out

    def _pair(self, raw: list[Any], ctx: str, out: str, combine: Callable[[str, str], None]) -> None:
        """The first operand, then (unless FALLBACK) the second, then `combine`; `out` is FALLBACK until set."""
        src = self.src
        fb = src.const(FALLBACK, "FB")
        a = self.fast(raw[0], ctx)
        src.emit(f"{out} = {fb}")
        with src.block(f"if {a} is not {fb}:"):
            b = self.fast(raw[1], ctx)
            with src.block(f"if {b} is not {fb}:"):
                combine(a, b)

    def _not(self, op: str, arg: Any, ctx: str) -> str:
        src = self.src
        out = src.tmp()
        a = self.fast(arg, ctx)
        double = op == "!!"
        src.emit(f"if {a} is None: {out} = {not double}")
        src.emit(f"elif type({a}) is not bool: {out} = {src.const(FALLBACK, 'FB')}")
        src.emit(f"else: {out} = {a if double else 'not ' + a}")
        return out

    def _junction(self, op: str, raw: list[Any], ctx: str) -> str:
        src = self.src
        out = src.tmp()
        fb = src.const(FALLBACK, "FB")
        stop_on = op == "or"
        opened = 0
        for i, arg in enumerate(raw):
            v = self.fast(arg, ctx)
            src.emit(f"if type({v}) is not bool: {out} = {fb}")
            src.emit(f"elif {v} is {stop_on}: {out} = {stop_on}")
            if i == len(raw) - 1:
                src.emit(f"else: {out} = {not stop_on}")
            else:
                src.emit("else:")
                src.depth += 1
                opened += 1
        src.depth -= opened
        return out

    def _in_list(self, raw: list[Any], ctx: str) -> str:
        src = self.src
        items = raw[1]
        numbers = tuple(x for x in items if type(x) is not str)
        if any(x != x for x in numbers):  # NaN: `in` tests identity first, fastlogic only ==
            return self._closure({"in": raw}, ctx)
        out = src.tmp()
        v = self.fast(raw[0], ctx)
        strings = src.const(frozenset(x for x in items if type(x) is str), "STR")
        src.emit(f"if type({v}) is str: {out} = {v} in {strings}")
        src.emit(
            f"elif type({v}) is float or (type({v}) is int and -{_EXACT} <= {v} <= {_EXACT}): "
            f"{out} = {v} in {src.const(numbers, 'NUM')}"
        )
        src.emit(f"elif {v} is None: {out} = False")
        src.emit(f"else: {out} = {src.const(FALLBACK, 'FB')}")
        return out

    def _cat(self, raw: list[Any], ctx: str) -> str:
        src = self.src
        out = src.tmp()
        fb = src.const(FALLBACK, "FB")
        parts: list[str] = []
        opened = 0
        for arg in raw:
            if type(arg) is str:
                parts.append(src.const(arg, "S"))
                continue
            if arg is None:
                continue
            if _literal_ok(arg):  # a number or a boolean: datalogic's own formatting
                src.emit(f"{out} = {fb}")
                src.depth -= opened
                return out
            v = self.fast(arg, ctx)
            with src.block(f"if {v} is not None and type({v}) is not str:"):
                src.emit(f"{out} = {fb}")
            src.emit("else:")
            src.depth += 1
            opened += 1
            parts.append(f"({v} or '')")
        src.emit(f"{out} = ''.join(({', '.join(parts)},))" if parts else f"{out} = ''")
        src.depth -= opened
        return out

    # -- a whole rule, as `Logic.evaluate` / `Logic.is_true` -------------------------------------------

    def evaluate(self, logic: Logic, ctx: str) -> tuple[str, bool]:
        """(local or constant holding `logic.evaluate(ctx)`, whether the code may raise `LogicError`)."""
        src = self.src
        kind = logic._kind
        if kind == "const":
            return src.const(logic._value), False
        if kind == "var":
            out = src.tmp()
            found = src.const(fastlogic.lookup, "lookup")
            missing = src.const(fastlogic.MISSING, "MISSING")
            src.emit(f"{out} = {found}({ctx}, {src.const(logic._segments, 'P')})")
            src.emit(
                f"{out} = {src.const(logic._default)} if {out} is {missing} else "
                f"({src.const(clone, 'clone')}({out}) if isinstance({out}, (dict, list)) else {out})"
            )
            return out, False
        rule = src.const(logic, "L")
        out = src.tmp()
        if logic._fast is None:
            src.emit(f"{out} = {rule}.evaluate({ctx})")
            return out, True
        value = self.fast(logic.source, ctx)
        src.emit(f"{out} = {rule}.evaluate({ctx}) if {value} is {src.const(FALLBACK, 'FB')} else {value}")
        return out, True

    def is_true(self, logic: Logic, ctx: str) -> str:
        """An expression equal to `logic.is_true(ctx)` (statements it needs are emitted first)."""
        src = self.src
        kind = logic._kind
        if kind == "const":
            return repr(logic._value is True)
        if kind == "var":
            out = src.tmp()
            found = src.const(fastlogic.lookup, "lookup")
            missing = src.const(fastlogic.MISSING, "MISSING")
            src.emit(f"{out} = {found}({ctx}, {src.const(logic._segments, 'P')})")
            return f"({src.const(logic._default)} if {out} is {missing} else {out}) is True"
        rule = src.const(logic, "L")
        if logic._fast is None:
            return f"{rule}.is_true({ctx})"
        value = self.fast(logic.source, ctx)
        out = src.tmp("c")
        src.emit(f"{out} = {rule}.is_true({ctx}) if {value} is {src.const(FALLBACK, 'FB')} else {value} is True")
        return out


# -- tasks ---------------------------------------------------------------------------------------------------


class _Workflow:
    def __init__(self, workflow: Any, changes: bool = True) -> None:
        from app.engine import executor  # the interpreter's bookkeeping helpers, shared (no import cycle)

        self.wf = workflow
        self.changes = changes  # False: inlined tasks write without recording old/new values (`task_runner`)
        self.src = _Source()
        self.src.dicts = frozenset({"context", "c"})
        self.logic = _Logic(self.src)
        src = self.src
        self.engine = src.const(executor.Engine, "Engine")
        self.failed_cls = src.const(executor._WorkflowFailed, "WorkflowFailed")
        self.no_changes = src.const(executor._NO_CHANGES, "NO_CHANGES")
        self.wf_name = src.const(workflow, "WF")
        self.wf_id = src.const(workflow.id, "WID")

    def build(self) -> str:
        src = self.src
        for name, obj in (
            ("time", time.time),
            ("monotonic", time.monotonic),
            ("new_entry", new_audit_entry),
            ("Timeout", Timeout),
            ("LogicError", LogicError),
            ("MISSING_PATH", MISSING),
            ("walk_keys", walk_keys),
            ("UNWALKED", _UNWALKED),
            ("set_path", set_path),
        ):
            src.names[name] = obj
        src.emit("context = message.context")
        src.emit("record = message.audit_trail.append")  # the trail is set before a run and never replaced
        # when the time budget looks spent (`check_time` decides exactly); a budget's fields never change
        src.emit("spent_at = None if budget.time_s is None else budget.started + budget.time_s")
        for task in self.wf.tasks:
            self.task(task)
        body = "\n".join(src.lines)
        return f"def run(message, ctx, deadline, budget):\n{body}\n"

    def task(self, task: Any) -> None:
        src = self.src
        test = self.logic.is_true(task.condition, "context")
        if test == "False":
            return  # a literal condition that is never strictly true: the task never runs
        with src.block(f"if {test}:" if test != "True" else "if True:"):
            tid = src.const(task.id, "TID")
            t = src.const(task, "T")
            src.emit("if deadline is not None and time() > deadline:")
            src.emit(
                f"    raise {self.failed_cls}(Timeout('Deadline exceeded before task ' + {tid}), 'deadline exceeded')"
            )
            # `WorkBudget.check_time`, called only once the budget looks spent (it raises BudgetExceeded)
            src.emit("if spent_at is not None and monotonic() > spent_at:")
            src.emit(f"    budget.check_time({src.const('task ' + task.id, 'BT')})")
            fn = task.function
            kind = type(fn) if _inlined(fn) else None
            with src.block("try:"):
                self._task_start, self._task_depth = len(src.lines), src.depth
                if kind is MapFunction:
                    changes, reason = self._map(fn)
                elif kind is FilterFunction:
                    changes, reason = self.no_changes, "None"
                    src.emit("c = message.context")
                    cond = self.logic.is_true(fn.condition, "c")
                    src.emit(f"status = 200 if {cond} else {fn.reject_status}")
                elif kind is ValidationFunction:
                    changes, reason = self.no_changes, "None"
                    self._validation(fn)
                else:
                    changes, reason = "ctx.changes", "ctx.reason"
                    src.emit(f"ctx.task_id = {tid}")
                    src.emit("ctx.reason = None")
                    src.emit(f"ctx.changes = {self.no_changes}")
                    src.emit(f"status = {src.const(fn, 'FN')}.run(message, ctx)")
            with src.block("except Exception as exc:"):
                src.emit(f"{self.engine}._task_raised(message, {self.wf_name}, {t}, exc, None)")
            with src.block("else:"):
                self._finished(task, t, tid, changes, reason)

    def _finished(self, task: Any, t: str, tid: str, changes: str, reason: str) -> None:
        """`Engine._task_finished` without steps, `_record` inlined; `reason` "" means status 200 for sure."""
        src = self.src
        if reason == "":
            src.emit(f"record(new_entry(({self.wf_id}, {tid}, 200, time(), {changes})))")
            src.emit(
                f"message.context['metadata']['progress'] = "
                f"{{'workflow_id': {self.wf_id}, 'task_id': {tid}, 'status_code': 200}}"
            )
            return
        with src.block("if status != 298:"):
            src.emit(f"record(new_entry(({self.wf_id}, {tid}, status, time(), {changes})))")
            src.emit(
                f"message.context['metadata']['progress'] = "
                f"{{'workflow_id': {self.wf_id}, 'task_id': {tid}, 'status_code': status}}"
            )
            src.emit("if status == 299: return")
            src.emit(
                f"if status >= 500: {self.engine}._task_failed_status(message, {self.wf_name}, {t}, status, {reason})"
            )

    def _map(self, fn: MapFunction) -> tuple[str, str]:
        src = self.src
        src.emit("c = message.context")
        if self.changes:
            src.emit("changes = []")
        may_fail = any(logic._kind == "native" for *_, logic, _keys in fn.mappings)
        if may_fail:
            src.emit("failed = None")
        # The object at a mapping's parent path, walked once for all the mappings that share it:
        # rules only read, so it stays the same object until a write replaces it or a parent.
        self._walked: dict[tuple[str, ...], tuple[str, bool]] = {}
        for path, parts, is_root, logic, keys in fn.mappings:
            if logic._kind == "const" and logic._value is None:
                continue  # a null result writes nothing
            p = src.const(path, "PATH")
            if logic._kind != "native":
                value, _ = self.logic.evaluate(logic, "c")
                # a literal (never null here, never an object): written without a test
                self._write(value, p, parts, is_root, keys, known=logic._kind == "const")
                continue
            with src.block("try:"):
                value, _ = self.logic.evaluate(logic, "c")
            with src.block("except LogicError as exc:"):
                # Orion skips a failing mapping, applies the rest, and answers status 500.
                src.emit("if failed is None: failed = []")
                src.emit(f"failed.append(f\"mapping '{{{p}}}' failed: {{exc}}\")")
            with src.block("else:"):
                self._write(value, p, parts, is_root, keys)
        changes = "changes" if self.changes else self.no_changes
        if not may_fail:
            return changes, ""  # no mapping can fail: status 200, folded
        src.emit("status = 200")
        src.emit("reason = None")
        src.emit("if failed:")
        src.emit("    reason = '; '.join(failed)")
        src.emit("    status = 500")
        return changes, "reason"

    def _write(self, value: str, p: str, parts: Any, is_root: bool, keys: Any, known: bool = False) -> None:
        """Write `value` unless it is null; `known`: a folded constant, neither null nor an object."""
        src = self.src
        if known:
            self._store(value, p, parts, is_root, keys, unconditional=src.depth == self._task_depth)
            return
        with src.block(f"if {value} is not None:"):
            self._store(value, p, parts, is_root, keys, unconditional=False)

    def _store(self, value: str, p: str, parts: Any, is_root: bool, keys: Any, unconditional: bool) -> None:
        src = self.src
        record = self.changes
        change = f"changes.append(({p}, None if old is MISSING_PATH else old, {value}))"
        old = "old = " if record else ""
        if is_root:
            src.emit(f"cur = c.get({p})")
            with src.block(f"if isinstance({value}, dict) and isinstance(cur, dict):"):
                src.emit(f"cur.update({value})")
                if record:
                    src.emit(f"changes.append(({p}, None, {value}))")
            with src.block("else:"):
                src.emit(f"{old}set_path(c, {src.const(parts, 'PARTS')}, {value})")
                if record:
                    src.emit(change)
            self._forget(None)
            return
        if keys is None:  # array indexes on the way: Orion's full path rules
            src.emit(f"{old}set_path(c, {src.const(parts, 'PARTS')}, {value})")
            if record:
                src.emit(change)
            self._forget(None)
            return
        head, last = keys
        name, walked = self._walked.get(head, ("", False))
        if not name:
            name = src.tmp("o")
            # assigned before the first write: every later write of the task may test it
            src.lines.insert(self._task_start, "    " * self._task_depth + f"{name} = UNWALKED")
        if not walked:
            self._walk(name, head)
        self._walked[head] = (name, walked or unconditional)
        k = src.const(last, "LAST")
        if record:
            with src.block(f"if {name} is not MISSING_PATH:"):
                src.emit(f"old = {name}.get({k}, MISSING_PATH)")
                src.emit(f"{name}[{k}] = {value}")
            src.emit("else: old = MISSING_PATH")
            src.emit(change)
        else:
            src.emit(f"if {name} is not MISSING_PATH: {name}[{k}] = {value}")
        self._forget((*head, last))

    def _walk(self, name: str, head: tuple[str, ...]) -> None:
        """`{name} = walk_keys(c, head)` unless already walked; unrolled for short heads (no call)."""
        src = self.src
        if len(head) > 3:
            src.emit(f"if {name} is UNWALKED: {name} = walk_keys(c, {src.const(head, 'HEAD')})")
            return
        # walk_keys' steps: missing objects are created, anything else that is not an object stops the walk
        with src.block(f"if {name} is UNWALKED:"):
            src.emit(f"{name} = c")  # `c` is a dict: the first step needs no test
            for i, key in enumerate(head):
                k = src.const(key, "S")
                step = src.tmp("w")
                if i:
                    src.emit(f"if not isinstance({name}, dict): {name} = MISSING_PATH")
                    src.emit(f"if {name} is not MISSING_PATH:")
                    src.depth += 1
                src.emit(f"{step} = {name}.get({k}, MISSING_PATH)")
                src.emit(f"if {step} is MISSING_PATH: {step} = {name}[{k}] = {{}}")
                src.emit(f"{name} = {step}")
            src.depth -= len(head) - 1 if head else 0
            src.emit(f"if not isinstance({name}, dict): {name} = MISSING_PATH")

    def _forget(self, written: tuple[str, ...] | None) -> None:
        """After a write at `written` (None: any path), walked parents it may have replaced are walked again."""
        src = self.src
        for head, (name, _) in list(self._walked.items()):
            if written is None or (len(written) <= len(head) and head[: len(written)] == written):
                src.emit(f"{name} = UNWALKED")
                self._walked[head] = (name, False)

    def _validation(self, fn: ValidationFunction) -> None:
        src = self.src
        src.emit("c = message.context")
        src.emit("status = 200")
        for logic, text in fn.rules:
            msg = src.const(text, "MSG")
            with src.block("try:"):
                value, _ = self.logic.evaluate(logic, "c")
                src.emit(f"ok = {value} is True")
            with src.block("except LogicError as exc:"):
                src.emit(f"message.add_error('EVALUATION_ERROR', f'{{{msg}}}: {{exc}}')")
                src.emit("status = 400")
            with src.block("else:"), src.block("if not ok:"):
                src.emit(f"message.add_error('VALIDATION_ERROR', {msg})")
                src.emit("status = 400")


def generate(workflow: Any, changes: bool = True) -> tuple[str, dict[str, Any]]:
    """The source of a workflow's task runner and the globals it needs (for tests and debugging)."""
    gen = _Workflow(workflow, changes)
    source = gen.build()
    return source, gen.src.names


def rule_evaluator(logic: Logic) -> Callable[[Any], Any]:
    """One rule as generated code, `logic.evaluate` semantics (the conformance vectors run through it)."""
    src = _Source()
    value, _ = _Logic(src).evaluate(logic, "context")
    src.emit(f"return {value}")
    code = compile("def run(context):\n" + "\n".join(src.lines) + "\n", "<rule>", "exec")
    exec(code, src.names)
    return src.names["run"]  # type: ignore[no-any-return]


def task_runner(workflow: Any, changes: bool = True) -> TaskRunner:
    """The workflow's synchronous tasks as one compiled function `(message, ctx, deadline, budget) -> None`.

    `changes=False`: the inlined tasks' audit entries carry no changes (no old value read, no change
    recorded): for runs whose trail only feeds metrics, where building the changes cost about a quarter
    of the generated code's time. Everything else (data, metadata, statuses, errors, entries) is the same.
    """
    source, names = generate(workflow, changes)
    code = compile(source, f"<workflow {workflow.id}>", "exec")
    exec(code, names)
    return names["run"]  # type: ignore[no-any-return]

"""Rulesets: step graphs of decisions, actions, calls and terminals, compiled once.

    {"name": "Loan approval", "entry": "check_age",
     "steps": {
       "check_age": {"kind": "decision",
                     "branches": [{"when": {"<": [{"var": "data.age"}, 18]}, "next": "minor"}],
                     "default": "score"},
       "score":     {"kind": "action", "table": {...decision table...},
                     "set": [{"path": "temp_data.limit", "logic": {"*": [{"var": "data.income"}, 3]}}],
                     "log": {"message": "scored", "level": "debug"}, "metric": "scored", "next": "risk"},
       "risk":      {"kind": "call", "ruleset": "risk-check", "version": 3,
                     "input": {"amount": {"var": "data.amount"}},
                     "output": {"temp_data.risk": "output.level"}, "next": "final"},
       "minor":     {"kind": "terminal", "code": "REJECTED", "message": "applicant is a minor"},
       ...}}

`steps` may also be a list of steps with an `id`. A decision takes the first branch whose `when` is
strictly `true` (else `default`, which is required). An action runs its table, assignments, log and
metric, then goes to `next`. A call runs another ruleset at a pinned `version` on a fresh context
whose `data` holds the evaluated `input` bindings, then copies fields of its result
(`code`, `message`, `output...`) to caller paths. A terminal ends the run with `{code, message, output}`.

Compile-time checks (field errors): unknown step kinds, missing targets, unreachable steps, cycles,
steps with no way to a terminal, paths longer than `MAX_PATH_STEPS`. Checks that need other rulesets
(calls: the version exists and is active, no cycle through calls, call depth) run at activation:
`check_calls`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.engine.jsonlogic import Logic, LogicCompileError, LogicError, check_logic, compile_logic
from app.engine.paths import MISSING, PathPart, compile_path, get_path, set_path
from app.engine.rules.errors import FieldErrors, RuleError, RulesetUnavailable
from app.engine.rules.stats import rule_stats
from app.engine.rules.table import CompiledTable, analyse_table

__all__ = [
    "MAX_CALL_DEPTH",
    "MAX_PATH_STEPS",
    "STEP_KINDS",
    "CompiledRuleset",
    "RulesetCatalog",
    "RulesetInvalid",
    "RulesetLookup",
    "analyse_ruleset",
    "check_calls",
    "compile_ruleset",
]

STEP_KINDS = ("decision", "action", "terminal", "call")
MAX_PATH_STEPS = 256
MAX_CALL_DEPTH = 8
_log = logging.getLogger("quasar.rules")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING}


class RulesetInvalid(FieldErrors):
    """A ruleset document with field errors: `errors` = [{"field", "message"}]."""

    what = "ruleset"


class RulesetLookup(Protocol):
    """Where calls find other rulesets: `(id, version)` -> compiled ruleset, or None."""

    def get(self, ruleset_id: str, version: int | None = None) -> CompiledRuleset | None: ...


class RulesetCatalog:
    """Compiled ruleset versions by (id, version) and the active version of each id.

    Built once per config snapshot (or by hand for offline runs and tests); immutable after that.
    """

    __slots__ = ("_active", "_versions")

    def __init__(
        self,
        versions: Mapping[tuple[str, int], CompiledRuleset] | None = None,
        active: Mapping[str, int] | None = None,
    ) -> None:
        self._versions = dict(versions or {})
        self._active = dict(active or {})

    @classmethod
    def of(cls, rulesets: Iterable[CompiledRuleset]) -> RulesetCatalog:
        """A catalog where every given ruleset is active (newest version per id wins)."""
        versions = {(r.id, r.version): r for r in rulesets}
        active: dict[str, int] = {}
        for rid, n in versions:
            active[rid] = max(n, active.get(rid, 0))
        return cls(versions, active)

    def get(self, ruleset_id: str, version: int | None = None) -> CompiledRuleset | None:
        if version is None:
            version = self._active.get(ruleset_id)
            if version is None:
                return None
        return self._versions.get((ruleset_id, version))

    def active_version(self, ruleset_id: str) -> int | None:
        return self._active.get(ruleset_id)

    def __len__(self) -> int:
        return len(self._versions)


EMPTY_CATALOG = RulesetCatalog()


# -- compiled steps ------------------------------------------------------------------------------------
class _Step:
    __slots__ = ("id", "kind")

    def __init__(self, step_id: str, kind: str) -> None:
        self.id = step_id
        self.kind = kind


class _Decision(_Step):
    __slots__ = ("branches", "default")

    def __init__(self, step_id: str, branches: list[tuple[Logic, str]], default: str) -> None:
        super().__init__(step_id, "decision")
        self.branches: tuple[tuple[Logic, Any], ...] = tuple(branches)  # targets resolved to steps later
        self.default: Any = default


class _Action(_Step):
    __slots__ = ("assignments", "log", "metric", "next", "table")

    def __init__(
        self,
        step_id: str,
        table: CompiledTable | None,
        assignments: list[tuple[str, tuple[PathPart, ...], Logic]],
        log: tuple[Logic, int] | None,
        metric: str | None,
        next_step: str,
    ) -> None:
        super().__init__(step_id, "action")
        self.table = table
        self.assignments = tuple(assignments)
        self.log = log
        self.metric = metric
        self.next: Any = next_step


class _Call(_Step):
    __slots__ = ("bindings", "mappings", "next", "ruleset", "version")

    def __init__(
        self,
        step_id: str,
        ruleset: str,
        version: int,
        bindings: list[tuple[str, Logic]],
        mappings: list[tuple[str, tuple[PathPart, ...], tuple[PathPart, ...]]],
        next_step: str,
    ) -> None:
        super().__init__(step_id, "call")
        self.ruleset = ruleset
        self.version = version
        self.bindings = tuple(bindings)
        self.mappings = tuple(mappings)
        self.next: Any = next_step


class _ObjectTemplate:
    """`{"name": JSONLogic, ...}`: what templating mode makes of an object that is not an operator, with
    each value evaluated on its own (so `{"var": ...}` values take the fast path instead of one native call)."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Logic]) -> None:
        self.values = tuple(values.items())

    def evaluate(self, context: Any) -> dict[str, Any]:
        return {name: logic.evaluate(context) for name, logic in self.values}


def _is_object_template(raw: dict[str, Any]) -> bool:
    """True when templating mode keeps `raw` as a literal object (several keys, or one unknown operator)."""
    if len(raw) != 1:
        return True
    _errors, warnings = check_logic(raw)
    return any(w.endswith("(at '/'): it is kept as a literal") for w in warnings)


class _Terminal(_Step):
    __slots__ = ("code", "message", "output")

    def __init__(self, step_id: str, code: str, message: Logic, output: Logic | _ObjectTemplate | None) -> None:
        super().__init__(step_id, "terminal")
        self.code = code
        self.message = message
        self.output = output


class CompiledRuleset:
    """A ready-to-run ruleset. `run(context)` returns `{code, message, output}`."""

    __slots__ = ("calls", "doc", "entry", "id", "name", "steps", "version")

    def __init__(self, ruleset_id: str, version: int, doc: Mapping[str, Any], entry: _Step, steps: dict[str, _Step]):
        self.id = ruleset_id
        self.version = version
        self.doc = doc
        self.name = str(doc.get("name") or ruleset_id)
        self.entry = entry
        self.steps = steps
        self.calls: tuple[tuple[str, int], ...] = tuple(
            sorted({(s.ruleset, s.version) for s in steps.values() if isinstance(s, _Call)})
        )

    def __repr__(self) -> str:
        return f"CompiledRuleset({self.id!r}, v{self.version}, steps={len(self.steps)})"

    def at_version(self, version: int) -> CompiledRuleset:
        """The same compiled graph labelled with `version` (compile results are shared by content)."""
        if version == self.version:
            return self
        return CompiledRuleset(self.id, version, self.doc, self.entry, self.steps)

    def run(
        self,
        context: dict[str, Any],
        catalog: RulesetLookup | None = None,
        *,
        explain: list[dict[str, Any]] | None = None,
        depth: int = 0,
    ) -> dict[str, Any]:
        """Walk the graph from `entry` on `context` (mutated by actions) to a terminal.

        `explain`: when a list, one entry per step taken is appended (branch and why, table rows,
        call results, timings). Raises `RuleError` subclasses and `LogicError`.
        """
        step: _Step = self.entry
        timer = time.perf_counter if explain is not None else None
        for _ in range(MAX_PATH_STEPS + 1):
            started = timer() if timer is not None else 0.0
            note: dict[str, Any] | None = (
                {"ruleset": self.id, "step": step.id, "kind": step.kind} if explain is not None else None
            )
            if type(step) is _Decision:
                nxt = step.default
                for i, (cond, target) in enumerate(step.branches):
                    if cond.is_true(context):
                        nxt = target
                        if note is not None:
                            note["branch"] = i
                            note["why"] = _why(cond, context)
                        break
                else:
                    if note is not None:
                        note["branch"] = "default"
                        note["why"] = [_why(cond, context) for cond, _ in step.branches]
                if note is not None:
                    note["next"] = nxt.id
                step = nxt
            elif type(step) is _Action:
                if step.table is not None:
                    table = step.table
                    rows, result = table.decide(context)
                    table.apply(context, result)
                    for row in rows:
                        rule_stats().hit(table.name, row)
                    if note is not None:
                        note["table"] = {
                            **table.explain(context),
                            "selected_rows": [r + 1 for r in rows],
                            "result": result,
                        }
                for _path, parts, logic in step.assignments:
                    value = logic.evaluate(context)
                    if value is not None:
                        set_path(context, parts, value)
                if step.log is not None:
                    message_logic, level = step.log
                    if _log.isEnabledFor(level):
                        _log.log(
                            level, "%s", _text(message_logic, context), extra={"ruleset": self.id, "step": step.id}
                        )
                if step.metric is not None:
                    rule_stats().metric(self.id, step.metric)
                if note is not None:
                    note["next"] = step.next.id
                step = step.next
            elif type(step) is _Call:
                result = self._call(step, context, catalog, explain, depth)
                for _path, parts, source in step.mappings:
                    value = get_path(result, source)
                    if value is not MISSING:
                        set_path(context, parts, value)
                if note is not None:
                    note["called"] = {"ruleset": step.ruleset, "version": step.version, "result": result}
                    note["next"] = step.next.id
                step = step.next
            else:
                assert isinstance(step, _Terminal)
                output = step.output.evaluate(context) if step.output is not None else None
                result = {"code": step.code, "message": _text(step.message, context), "output": output}
                if note is not None:
                    note["result"] = {"code": step.code}
                    note["elapsed_us"] = round((time.perf_counter() - started) * 1e6, 2)
                    assert explain is not None
                    explain.append(note)
                return result
            if note is not None:
                assert explain is not None
                note["elapsed_us"] = round((time.perf_counter() - started) * 1e6, 2)
                explain.append(note)
        raise RuleError(f"ruleset '{self.id}' took more than {MAX_PATH_STEPS} steps")  # pragma: no cover - DAG

    def _call(
        self,
        step: _Call,
        context: dict[str, Any],
        catalog: RulesetLookup | None,
        explain: list[dict[str, Any]] | None,
        depth: int,
    ) -> dict[str, Any]:
        if depth >= MAX_CALL_DEPTH:
            raise RuleError(f"ruleset '{self.id}': calls nested deeper than {MAX_CALL_DEPTH}")
        callee = catalog.get(step.ruleset, step.version) if catalog is not None else None
        if callee is None:
            raise RulesetUnavailable(
                f"ruleset '{self.id}' step '{step.id}' calls {step.ruleset} v{step.version}, which is not loaded"
            )
        data = {name: logic.evaluate(context) for name, logic in step.bindings}
        inner = {"data": data, "metadata": context.get("metadata", {}), "temp_data": {}}
        return callee.run(inner, catalog, explain=explain, depth=depth + 1)


def _text(logic: Logic, context: dict[str, Any]) -> str:
    try:
        value = logic.evaluate(context)
    except LogicError as exc:
        return f"<error: {exc}>"
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _why(cond: Logic, context: dict[str, Any]) -> dict[str, Any]:
    """A condition with its operands' values: `{"op": ">=", "operands": [720, 700], "result": true}`."""
    source = cond.source
    out: dict[str, Any] = {"condition": source}
    if isinstance(source, dict) and len(source) == 1:
        op, args = next(iter(source.items()))
        args = args if isinstance(args, list) else [args]
        values = []
        for arg in args:
            try:
                values.append(compile_logic(arg).evaluate(context))
            except (LogicError, LogicCompileError) as exc:
                values.append(f"<error: {exc}>")
        out["op"] = op
        out["operands"] = values
    try:
        out["result"] = cond.evaluate(context)
    except LogicError as exc:
        out["result"] = f"<error: {exc}>"
    return out


# -- compilation ---------------------------------------------------------------------------------------
_Err = Callable[[str, str], None]


def _logic(raw: Any, field: str, err: _Err) -> Logic | None:
    try:
        return compile_logic(raw)
    except LogicCompileError as exc:
        err(field, f"invalid JSONLogic: {exc}")
        return None


def _steps_of(raw: Any, err: _Err) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """{step id: (field prefix, step document)} from an object or a list of steps with `id`."""
    out: dict[str, tuple[str, Mapping[str, Any]]] = {}
    if isinstance(raw, Mapping):
        items: Iterable[tuple[str, Any, str]] = ((str(k), v, f"steps.{k}") for k, v in raw.items())
    elif isinstance(raw, list):
        listed = []
        for i, v in enumerate(raw):
            sid = v.get("id") if isinstance(v, Mapping) else None
            if not isinstance(sid, str) or not sid:
                err(f"steps[{i}].id", "is required")
                continue
            listed.append((sid, v, f"steps[{i}]"))
        items = listed
    else:
        err("steps", "is required: an object {step id: step} or a list of steps with `id`")
        return out
    for sid, step, field in items:
        if sid in out:
            err(f"{field}.id", f"duplicate step id {sid!r}")
            continue
        if not isinstance(step, Mapping):
            err(field, "must be an object")
            continue
        out[sid] = (field, step)
    if not out and isinstance(raw, Mapping | list):
        err("steps", "needs at least one step")
    return out


def _compile_step(sid: str, field: str, step: Mapping[str, Any], err: _Err) -> _Step | None:
    kind = step.get("kind", step.get("type"))
    if kind == "decision":
        branches: list[tuple[Logic, str]] = []
        raw_branches = step.get("branches", [])
        if not isinstance(raw_branches, list):
            err(f"{field}.branches", "must be an array of {when, next}")
            raw_branches = []
        for i, b in enumerate(raw_branches):
            bf = f"{field}.branches[{i}]"
            if not isinstance(b, Mapping) or "when" not in b or not isinstance(b.get("next"), str):
                err(bf, "must be {when: JSONLogic, next: step id}")
                continue
            cond = _logic(b["when"], f"{bf}.when", err)
            if cond is not None:
                branches.append((cond, b["next"]))
        default = step.get("default")
        if not isinstance(default, str) or not default:
            err(f"{field}.default", "is required: the step taken when no branch holds")
            return None
        return _Decision(sid, branches, default)
    if kind == "action":
        table = None
        if step.get("table") is not None:
            table, table_errors = analyse_table(step["table"])
            for e in table_errors:
                err(f"{field}.table" + (f".{e['field']}" if e["field"] else ""), e["message"])
        assignments: list[tuple[str, tuple[PathPart, ...], Logic]] = []
        raw_set = step.get("set", [])
        if isinstance(raw_set, Mapping):
            raw_set = [{"path": k, "logic": v} for k, v in raw_set.items()]
        if not isinstance(raw_set, list):
            err(f"{field}.set", "must be an array of {path, logic} or an object {path: logic}")
            raw_set = []
        for i, a in enumerate(raw_set):
            af = f"{field}.set[{i}]"
            if not isinstance(a, Mapping) or not isinstance(a.get("path"), str) or not a["path"] or "logic" not in a:
                err(af, "must be {path, logic}")
                continue
            logic = _logic(a["logic"], f"{af}.logic", err)
            if logic is not None:
                assignments.append((a["path"], compile_path(a["path"]), logic))
        log = None
        raw_log = step.get("log")
        if raw_log is not None:
            if isinstance(raw_log, str):
                raw_log = {"message": raw_log}
            if not isinstance(raw_log, Mapping) or "message" not in raw_log:
                err(f"{field}.log", "must be a message or {message, level}")
            else:
                level = _LEVELS.get(str(raw_log.get("level", "info")).lower())
                if level is None:
                    err(f"{field}.log.level", f"must be one of {', '.join(_LEVELS)}")
                message = _logic(raw_log["message"], f"{field}.log.message", err)
                if message is not None and level is not None:
                    log = (message, level)
        metric = step.get("metric")
        if metric is not None and (not isinstance(metric, str) or not metric):
            err(f"{field}.metric", "must be a name (counted in rule_metric_total)")
            metric = None
        nxt = step.get("next")
        if not isinstance(nxt, str) or not nxt:
            err(f"{field}.next", "is required")
            return None
        return _Action(sid, table, assignments, log, metric, nxt)
    if kind == "call":
        target = step.get("ruleset")
        version = step.get("version")
        ok = True
        if not isinstance(target, str) or not target:
            err(f"{field}.ruleset", "is required: the id of the ruleset to call")
            ok = False
        if type(version) is not int or version < 1:
            err(f"{field}.version", "is required: calls are pinned to an exact version (an integer >= 1)")
            ok = False
        bindings: list[tuple[str, Logic]] = []
        raw_in = step.get("input", {})
        if not isinstance(raw_in, Mapping):
            err(f"{field}.input", "must be an object {name: JSONLogic}")
            raw_in = {}
        for name, rule in raw_in.items():
            logic = _logic(rule, f"{field}.input.{name}", err)
            if logic is not None:
                bindings.append((str(name), logic))
        mappings: list[tuple[str, tuple[PathPart, ...], tuple[PathPart, ...]]] = []
        raw_out = step.get("output", {})
        if not isinstance(raw_out, Mapping):
            err(f"{field}.output", "must be an object {caller path: result field (code, message, output.x)}")
            raw_out = {}
        for path, source in raw_out.items():
            if not isinstance(source, str) or source.split(".")[0] not in ("code", "message", "output"):
                err(f"{field}.output.{path}", "must name a result field: code, message or output[.path]")
                continue
            mappings.append((str(path), compile_path(str(path)), compile_path(source)))
        nxt = step.get("next")
        if not isinstance(nxt, str) or not nxt:
            err(f"{field}.next", "is required")
            return None
        if not ok:
            return None
        assert isinstance(target, str) and isinstance(version, int)
        return _Call(sid, target, version, bindings, mappings, nxt)
    if kind == "terminal":
        code = step.get("code")
        if not isinstance(code, str) or not code:
            err(f"{field}.code", "is required: the result code (for example APPROVED)")
            return None
        message = _logic(step.get("message", ""), f"{field}.message", err)
        output: Logic | _ObjectTemplate | None = None
        raw_output = step.get("output")
        if isinstance(raw_output, dict) and _is_object_template(raw_output):
            values = {str(k): _logic(v, f"{field}.output.{k}", err) for k, v in raw_output.items()}
            if all(v is not None for v in values.values()):
                output = _ObjectTemplate({k: v for k, v in values.items() if v is not None})
        elif raw_output is not None:
            output = _logic(raw_output, f"{field}.output", err)
        if message is None:
            return None
        return _Terminal(sid, code, message, output)
    err(f"{field}.kind", f"unknown step kind {kind!r}; expected one of {', '.join(STEP_KINDS)}")
    return None


def _targets(step: _Step) -> list[Any]:
    if isinstance(step, _Decision):
        return [t for _, t in step.branches] + [step.default]
    if isinstance(step, _Action | _Call):
        return [step.next]
    return []


def analyse_ruleset(
    doc: Any, ruleset_id: str | None = None, version: int | None = None
) -> tuple[CompiledRuleset | None, list[dict[str, str]]]:
    """Check and compile a ruleset document; never raises for bad input."""
    errors: list[dict[str, str]] = []

    def err(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if not isinstance(doc, Mapping):
        return None, [{"field": "", "message": "a ruleset must be a JSON object"}]
    rid = ruleset_id or doc.get("ruleset_id") or doc.get("id") or "ruleset"
    n = version if version is not None else doc.get("version", 1)
    if type(n) is not int:
        n = 1
    raw_steps = _steps_of(doc.get("steps"), err)
    steps: dict[str, _Step] = {}
    fields: dict[str, str] = {}
    for sid, (field, raw) in raw_steps.items():
        compiled = _compile_step(sid, field, raw, err)
        if compiled is not None:
            steps[sid] = compiled
            fields[sid] = field
    entry = doc.get("entry")
    if not isinstance(entry, str) or not entry:
        err("entry", "is required: the id of the first step")
    elif raw_steps and entry not in raw_steps:
        err("entry", f"unknown step {entry!r}")
    # missing targets
    for sid, step in steps.items():
        for target in _targets(step):
            if target not in raw_steps:
                err(fields[sid], f"step {sid!r} goes to unknown step {target!r}")
    if errors:
        return None, errors
    assert isinstance(entry, str)
    _check_graph(entry, steps, fields, err)
    if errors:
        return None, errors
    for step in steps.values():  # resolve ids to step objects: the run loop follows references
        if isinstance(step, _Decision):
            step.branches = tuple((c, steps[t]) for c, t in step.branches)
            step.default = steps[step.default]
        elif isinstance(step, _Action | _Call):
            step.next = steps[step.next]
    return CompiledRuleset(str(rid), n, dict(doc), steps[entry], steps), errors


def _check_graph(entry: str, steps: dict[str, _Step], fields: dict[str, str], err: _Err) -> None:
    succ = {sid: list(dict.fromkeys(_targets(s))) for sid, s in steps.items()}
    reachable: set[str] = set()
    stack = [entry]
    while stack:
        sid = stack.pop()
        if sid in reachable:
            continue
        reachable.add(sid)
        stack.extend(succ[sid])
    for sid in steps:
        if sid not in reachable:
            err(fields[sid], f"step {sid!r} is unreachable from entry {entry!r}")
    # cycles: iterative DFS with colours
    colour: dict[str, int] = {}
    for root in steps:
        if colour.get(root):
            continue
        path: list[str] = []
        todo: list[tuple[str, int]] = [(root, 0)]
        while todo:
            sid, i = todo.pop()
            if i == 0:
                colour[sid] = 1
                path.append(sid)
            if i < len(succ[sid]):
                todo.append((sid, i + 1))
                nxt = succ[sid][i]
                if colour.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    err(fields[nxt], f"cycle: {' -> '.join(cycle)}")
                elif not colour.get(nxt):
                    todo.append((nxt, 0))
            else:
                colour[sid] = 2
                path.pop()
    # every step must be able to reach a terminal
    can_end = {sid for sid, s in steps.items() if isinstance(s, _Terminal)}
    changed = True
    while changed:
        changed = False
        for sid, targets in succ.items():
            if sid not in can_end and any(t in can_end for t in targets):
                can_end.add(sid)
                changed = True
    for sid in steps:
        if sid not in can_end:
            err(fields[sid], f"step {sid!r} has no way to a terminal step")
    if len(steps) > MAX_PATH_STEPS:
        err("steps", f"at most {MAX_PATH_STEPS} steps")


def compile_ruleset(doc: Any, ruleset_id: str | None = None, version: int | None = None) -> CompiledRuleset:
    """Compile a ruleset once; raises `RulesetInvalid` with every field error."""
    compiled, errors = analyse_ruleset(doc, ruleset_id, version)
    if compiled is None:
        raise RulesetInvalid(errors)
    return compiled


@dataclass(frozen=True, slots=True)
class CallProblem:
    field: str
    message: str


def check_calls(
    ruleset: CompiledRuleset,
    resolve: Callable[[str, int], tuple[str, CompiledRuleset | None] | None],
    *,
    max_depth: int = MAX_CALL_DEPTH,
) -> list[dict[str, str]]:
    """Activation checks for `call` steps: every pinned version exists and is active, no cycle
    through calls, nesting at most `max_depth`. `resolve(id, version)` -> (status, compiled) or None.
    """
    errors: list[dict[str, str]] = []
    seen_ok: set[tuple[str, int]] = set()

    def walk(current: CompiledRuleset, chain: list[tuple[str, int]]) -> None:
        for callee_id, callee_version in current.calls:
            label = f"{callee_id} v{callee_version}"
            where = " -> ".join(f"{i} v{n}" for i, n in chain)
            key = (callee_id, callee_version)
            if key in chain:
                errors.append({"field": "steps", "message": f"cycle through calls: {where} -> {label}"})
                continue
            if len(chain) >= max_depth:
                errors.append(
                    {"field": "steps", "message": f"calls nested deeper than {max_depth}: {where} -> {label}"}
                )
                continue
            if key in seen_ok:
                continue
            found = resolve(callee_id, callee_version)
            if found is None:
                errors.append({"field": "steps", "message": f"calls unknown ruleset version {label} (via {where})"})
                continue
            status, compiled = found
            if status != "active":
                errors.append(
                    {
                        "field": "steps",
                        "message": f"calls {label}, which is {status}: only active versions can be called",
                    }
                )
                continue
            if compiled is None:
                errors.append({"field": "steps", "message": f"calls {label}, which is invalid"})
                continue
            walk(compiled, [*chain, key])
            if not errors:
                seen_ok.add(key)

    walk(ruleset, [(ruleset.id, ruleset.version)])
    return errors

"""The `decision_table` and `rule` task functions (behind the one function protocol).

decision_table: the task's `input` is a decision table document (see `table.py`); it is compiled
when the workflow is compiled and writes its outputs into the message.

rule: `{"ruleset": "<id>" | {inline ruleset}, "version"?: N, "input"?: {name: JSONLogic},
"target"?: "data.decision"}` runs a ruleset and writes `{code, message, output}` at `target`.
A ruleset named by id is looked up when the task runs, in the catalog of the engine running it
(`Engine.rulesets`, built from the config snapshot): the active version, or exactly `version`.
With `input`, the ruleset runs on a fresh context whose `data` is the evaluated bindings; without
it, it runs on the message's own context (its actions write into the message).

When `message.explain` is a list, both append their decision path to it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app.engine.functions._inputs import as_input, opt_int, opt_str
from app.engine.jsonlogic import Logic, LogicCompileError, compile_logic
from app.engine.message import Message
from app.engine.paths import MISSING, compile_path, set_path
from app.engine.registry import FunctionInputError, FunctionSpec, SyncFunction, TaskContext
from app.engine.rules.errors import RulesetUnavailable
from app.engine.rules.ruleset import CompiledRuleset, RulesetLookup, analyse_ruleset
from app.engine.rules.stats import rule_stats
from app.engine.rules.table import CompiledTable, analyse_table

__all__ = ["DECISION_TABLE", "RULE", "RULE_FUNCTIONS", "catalog_of"]


class DecisionTableFunction(SyncFunction):
    __slots__ = ("table",)

    def __init__(self, table: CompiledTable) -> None:
        self.table = table

    def run(self, message: Message, ctx: TaskContext) -> int:
        table = self.table
        context = message.context
        explain = message.explain
        started = time.perf_counter() if explain is not None else 0.0
        rows, result = table.decide(context)
        ctx.changes = table.apply(context, result)
        stats = rule_stats()
        for row in rows:
            stats.hit(table.name, row)
        if explain is not None:
            entry = table.explain(context, (time.perf_counter() - started) * 1e6)
            entry["task_id"] = ctx.task_id
            entry["selected_rows"] = [r + 1 for r in rows]
            entry["result"] = result
            explain.append(entry)
        return 200


def _compile_decision_table(raw: Mapping[str, Any]) -> DecisionTableFunction:
    table, errors = analyse_table(as_input(raw))
    if table is None:
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FunctionInputError(first["field"], first["message"] + more)
    return DecisionTableFunction(table)


def catalog_of(ctx: TaskContext) -> RulesetLookup | None:
    """The ruleset catalog of the engine running this task (None offline without one)."""
    catalog: RulesetLookup | None = getattr(ctx.engine, "rulesets", None)
    return catalog


class RuleFunction(SyncFunction):
    __slots__ = ("bindings", "inline", "ruleset_id", "target", "target_text", "version")

    def __init__(
        self,
        inline: CompiledRuleset | None,
        ruleset_id: str,
        version: int | None,
        bindings: tuple[tuple[str, Logic], ...] | None,
        target: str,
    ) -> None:
        self.inline = inline
        self.ruleset_id = ruleset_id
        self.version = version
        self.bindings = bindings
        self.target_text = target
        self.target = compile_path(target)

    def resolve(self, catalog: RulesetLookup | None) -> CompiledRuleset:
        if self.inline is not None:
            return self.inline
        ruleset = catalog.get(self.ruleset_id, self.version) if catalog is not None else None
        if ruleset is None:
            which = f"version {self.version}" if self.version is not None else "an active version"
            raise RulesetUnavailable(f"ruleset '{self.ruleset_id}' has no {which} loaded")
        return ruleset

    def run(self, message: Message, ctx: TaskContext) -> int:
        catalog = catalog_of(ctx)
        ruleset = self.resolve(catalog)
        context = message.context
        if self.bindings is not None:
            data = {name: logic.evaluate(context) for name, logic in self.bindings}
            context = {"data": data, "metadata": context["metadata"], "temp_data": {}}
        explain = message.explain
        if explain is None:
            result = ruleset.run(context, catalog)
        else:
            steps: list[dict[str, Any]] = []
            started = time.perf_counter()
            result = ruleset.run(context, catalog, explain=steps)
            explain.append(
                {
                    "task_id": ctx.task_id,
                    "ruleset": ruleset.id,
                    "version": ruleset.version,
                    "code": result["code"],
                    "steps": steps,
                    "elapsed_us": round((time.perf_counter() - started) * 1e6, 2),
                }
            )
        rule_stats().result(ruleset.id, result["code"])
        old = set_path(message.context, self.target, result)
        ctx.changes = [(self.target_text, None if old is MISSING else old, result)]
        return 200


def _compile_rule(raw: Mapping[str, Any]) -> RuleFunction:
    inp = as_input(raw)
    ref = inp.get("ruleset")
    target = opt_str(inp, "target", "data.decision") or "data.decision"
    version = opt_int(inp, "version", None, minimum=1)
    bindings: tuple[tuple[str, Logic], ...] | None = None
    raw_bindings = inp.get("input")
    if raw_bindings is not None:
        if not isinstance(raw_bindings, Mapping):
            raise FunctionInputError("input", "must be an object {name: JSONLogic}")
        compiled: list[tuple[str, Logic]] = []
        for name, rule in raw_bindings.items():
            try:
                compiled.append((str(name), compile_logic(rule)))
            except LogicCompileError as exc:
                raise FunctionInputError(f"input.{name}", f"invalid JSONLogic: {exc}") from exc
        bindings = tuple(compiled)
    if isinstance(ref, Mapping):
        ruleset, errors = analyse_ruleset(ref, str(ref.get("id") or "inline"), version)
        if ruleset is None:
            first = errors[0]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            field = "ruleset" + (f".{first['field']}" if first["field"] else "")
            raise FunctionInputError(field, first["message"] + more)
        return RuleFunction(ruleset, ruleset.id, version, bindings, target)
    if not isinstance(ref, str) or not ref:
        raise FunctionInputError("ruleset", "is required: a ruleset id or an inline ruleset object")
    return RuleFunction(None, ref, version, bindings, target)


DECISION_TABLE = FunctionSpec(
    "decision_table", _compile_decision_table, description="Decide with a decision table (DMN hit policies)"
)
RULE = FunctionSpec("rule", _compile_rule, description="Run a ruleset; writes {code, message, output}")
RULE_FUNCTIONS: tuple[FunctionSpec, ...] = (DECISION_TABLE, RULE)

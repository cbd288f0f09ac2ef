"""Workflow compilation: document -> `CompiledWorkflow`, with every JSONLogic compiled once.

`analyse` is the single place that checks a document; `compile_workflow` raises `WorkflowInvalid`
with exactly the errors `validate_workflow` reports.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from app.engine.codegen import TaskRunner, needs_task_context, task_runner
from app.engine.errors import WorkflowInvalid
from app.engine.functions import shared_default_registry
from app.engine.jsonlogic import Logic, LogicCompileError, LogicError, check_logic, compile_logic
from app.engine.message import Message
from app.engine.models import WorkflowDoc
from app.engine.registry import (
    CompiledFunction,
    FunctionInputError,
    FunctionRegistry,
    SyncFunction,
    TaskContext,
)

__all__ = ["CompiledTask", "CompiledWorkflow", "Recorder", "analyse", "compile_workflow"]


class CompiledTask:
    __slots__ = (
        "always",
        "condition",
        "continue_on_error",
        "function",
        "function_name",
        "id",
        "is_async",
        "name",
        "side_effects",
    )

    def __init__(
        self,
        id: str,
        name: str,
        condition: Logic,
        continue_on_error: bool,
        function_name: str,
        function: CompiledFunction,
        side_effects: bool,
    ) -> None:
        self.id = id
        self.name = name
        self.condition = condition
        self.always = condition.is_constant and condition.source is True
        self.continue_on_error = continue_on_error
        self.function_name = function_name
        self.function = function
        self.is_async = bool(function.is_async)
        self.side_effects = side_effects


class CompiledWorkflow:
    """An immutable, ready-to-run workflow. Build with `compile_workflow`."""

    __slots__ = (
        "_interpreted",
        "_lean_runner",
        "_runner",
        "always",
        "condition",
        "continue_on_error",
        "doc",
        "id",
        "is_async",
        "name",
        "needs_context",
        "priority",
        "recording",
        "registry",
        "tasks",
        "version",
    )

    def __init__(
        self,
        doc: WorkflowDoc,
        condition: Logic,
        tasks: tuple[CompiledTask, ...],
        registry: FunctionRegistry,
        recording: bool,
    ) -> None:
        self.doc = doc
        self.id = doc.workflow_id
        self.name = doc.name
        self.priority = doc.priority
        self.version = doc.version
        self.condition = condition
        self.always = condition.is_constant and condition.source is True
        self.continue_on_error = doc.continue_on_error
        self.tasks = tasks
        self.is_async = any(t.is_async for t in tasks)
        self.registry = registry
        self.recording = recording
        self.needs_context = needs_task_context(self)
        self._runner: TaskRunner | None = None
        self._lean_runner: TaskRunner | None = None  # without the inlined tasks' changes (`task_runner`)
        self._interpreted = False  # code generation failed once: the interpreter runs this workflow

    def task_runner(self, changes: bool = True) -> TaskRunner | None:
        """The tasks as generated Python (`codegen.py`), built on first use; None: interpret them.

        Built lazily so that folding thousands of workflows at startup costs no code generation for
        workflows that never see a record. `changes=False`: the variant whose audit entries carry no
        changes (`RunOptions.changes`).
        """
        runner = self._runner if changes else self._lean_runner
        if runner is None and not self._interpreted:
            try:
                runner = task_runner(self, changes)
            except (SyntaxError, RecursionError, MemoryError, ValueError):
                self._interpreted = True  # a rule too large for Python's compiler
                return None
            if changes:
                self._runner = runner
            else:
                self._lean_runner = runner
        return runner

    def __repr__(self) -> str:
        return f"CompiledWorkflow(id={self.id!r}, version={self.version}, tasks={len(self.tasks)})"


class Recorder(SyncFunction):
    """Dry-run stand-in for a side-effecting function: records what would have been called.

    The task's input is evaluated as a JSONLogic template against the context, so `*_logic`
    fields and `{"var": ...}` values show their real values.
    """

    __slots__ = ("function", "raw", "template")

    def __init__(self, function: str, raw: Mapping[str, Any]) -> None:
        self.function = function
        self.raw = dict(raw)
        try:
            self.template: Logic | None = compile_logic(self.raw)
        except LogicCompileError:
            self.template = None

    def run(self, message: Message, ctx: TaskContext) -> int:
        evaluated: Any = self.raw
        if self.template is not None:
            try:
                evaluated = self.template.evaluate(message.context)
            except LogicError:
                evaluated = self.raw
        if ctx.calls is not None:
            ctx.calls.append(
                {
                    "workflow_id": ctx.workflow_id,
                    "task_id": ctx.task_id,
                    "function": self.function,
                    "input": evaluated,
                }
            )
        return 200


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def _input_rules(function: str, inp: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The JSONLogic values inside a built-in's input, for unknown-operator warnings."""
    if function == "map":
        return [(f"mappings[{i}].logic", m.get("logic")) for i, m in enumerate(inp.get("mappings", []))]
    if function in ("validation", "validate"):
        return [(f"rules[{i}].logic", r.get("logic")) for i, r in enumerate(inp.get("rules", []))]
    if function == "filter":
        return [("condition", inp.get("condition"))]
    return []


def analyse(
    doc: Mapping[str, Any] | WorkflowDoc, registry: FunctionRegistry, *, recording: bool = False
) -> tuple[CompiledWorkflow | None, list[dict[str, str]], list[str]]:
    """Check and compile a workflow document; never raises for bad input."""
    errors: list[dict[str, str]] = []
    warnings: list[str] = []

    def err(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if isinstance(doc, WorkflowDoc):
        model = doc
    else:
        if not isinstance(doc, Mapping):
            err("(document)", "a workflow must be a JSON object")
            return None, errors, warnings
        raw = dict(doc)
        if "workflow_id" not in raw and "id" not in raw:
            raw["workflow_id"] = str(uuid.uuid4())
        try:
            model = WorkflowDoc.model_validate(raw)
        except ValidationError as exc:
            for e in exc.errors():
                msg = e["msg"]
                if e["type"] == "missing":
                    msg = "is required"
                err(_loc(tuple(e["loc"])), msg)
            return None, errors, warnings

    def logic(rule: Any, field: str) -> Logic | None:
        errs, warns = check_logic(rule)
        for m in errs:
            err(field, f"invalid JSONLogic: {m}")
        warnings.extend(f"{field}: {w}" for w in warns)
        return None if errs else compile_logic(rule)

    condition = logic(model.condition, "condition")
    seen: dict[str, int] = {}
    tasks: list[CompiledTask] = []
    for i, t in enumerate(model.tasks):
        base = f"tasks[{i}]"
        if t.id in seen:
            err(f"{base}.id", f"duplicate task id '{t.id}' (also tasks[{seen[t.id]}])")
        else:
            seen[t.id] = i
        t_cond = logic(t.condition, f"{base}.condition")
        spec = registry.get(t.function.name)
        if spec is None:
            err(
                f"{base}.function.name",
                f"unknown function '{t.function.name}'; known: {', '.join(registry.names())}",
            )
            continue
        try:
            fn: CompiledFunction = spec.compile(t.function.input)
        except FunctionInputError as exc:
            field = f"{base}.function.input" + (f".{exc.field}" if exc.field else "")
            err(field, exc.message)
            continue
        except Exception as exc:  # a custom function's factory must not crash validation
            err(f"{base}.function.input", f"{type(exc).__name__}: {exc}")
            continue
        for field, rule in _input_rules(spec.name, t.function.input):
            warnings.extend(f"{base}.function.input.{field}: {w}" for w in check_logic(rule)[1])
        if recording and spec.side_effects:
            fn = Recorder(spec.name, t.function.input)
        if t_cond is not None:
            tasks.append(CompiledTask(t.id, t.name, t_cond, t.continue_on_error, spec.name, fn, spec.side_effects))
    if errors or condition is None:
        return None, errors, warnings
    return CompiledWorkflow(model, condition, tuple(tasks), registry, recording), errors, warnings


def compile_workflow(
    doc: Mapping[str, Any] | WorkflowDoc,
    registry: FunctionRegistry | None = None,
    *,
    recording: bool = False,
) -> CompiledWorkflow:
    """Compile a workflow once; raises `WorkflowInvalid(errors)` (HTTP 400) when it is not valid.

    `recording=True` (dry-run) replaces side-effecting functions with `Recorder`s.
    """
    if registry is None:
        registry = shared_default_registry()
    compiled, errors, _ = analyse(doc, registry, recording=recording)
    if compiled is None:
        raise WorkflowInvalid(errors)
    return compiled

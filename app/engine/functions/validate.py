"""validation / validate: strict-true rules that record VALIDATION_ERROR entries and continue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.functions._inputs import as_input, logic_at, req_list
from app.engine.jsonlogic import Logic, LogicError
from app.engine.message import Message
from app.engine.registry import FunctionInputError, FunctionSpec, SyncFunction, TaskContext

__all__ = ["VALIDATE", "VALIDATION"]


class ValidationFunction(SyncFunction):
    """Read-only. Any failing rule gives status 400, which only warns: later tasks still run."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[tuple[Logic, str]]) -> None:
        self.rules = rules

    def run(self, message: Message, ctx: TaskContext) -> int:
        context = message.context
        status = 200
        for logic, text in self.rules:
            try:
                ok = logic.evaluate(context) is True
            except LogicError as exc:
                message.add_error("EVALUATION_ERROR", f"{text}: {exc}")
                status = 400
                continue
            if not ok:
                # Orion's entry carries no workflow/task id and path stays null.
                message.add_error("VALIDATION_ERROR", text)
                status = 400
        return status


def _compile_validation(raw: Mapping[str, Any]) -> ValidationFunction:
    inp = as_input(raw)
    rules: list[tuple[Logic, str]] = []
    for i, r in enumerate(req_list(inp, "rules")):
        field = f"rules[{i}]"
        if not isinstance(r, Mapping):
            raise FunctionInputError(field, "must be an object {logic, message}")
        if "logic" not in r:
            raise FunctionInputError(field + ".logic", "is required")
        message = r.get("message")
        if not isinstance(message, str) or not message:
            # Quasar fix of Orion quirk 8: rejected up front instead of a 500 at run time.
            raise FunctionInputError(field + ".message", "is required: the error text reported when the rule fails")
        rules.append((logic_at(r["logic"], field + ".logic"), message))
    return ValidationFunction(rules)


VALIDATION = FunctionSpec("validation", _compile_validation, description="Check rules, record errors")
VALIDATE = FunctionSpec("validate", _compile_validation, description="Alias of validation")

"""filter: gate the rest of a workflow (halt, status 299) or just skip on (status 298)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.functions._inputs import as_input, logic_at, opt_str
from app.engine.jsonlogic import Logic
from app.engine.message import Message
from app.engine.registry import FunctionInputError, FunctionSpec, SyncFunction, TaskContext

__all__ = ["FILTER", "FILTER_HALT", "FILTER_SKIP"]

FILTER_HALT = 299
FILTER_SKIP = 298


class FilterFunction(SyncFunction):
    __slots__ = ("condition", "reject_status")

    def __init__(self, condition: Logic, reject_status: int) -> None:
        self.condition = condition
        self.reject_status = reject_status

    def run(self, message: Message, ctx: TaskContext) -> int:
        # Strict true; an evaluation error counts as false.
        return 200 if self.condition.is_true(message.context) else self.reject_status


def _compile_filter(raw: Mapping[str, Any]) -> FilterFunction:
    inp = as_input(raw)
    if "condition" not in inp:
        raise FunctionInputError("condition", "is required")
    on_reject = opt_str(inp, "on_reject", "halt")
    if on_reject not in ("halt", "skip"):
        raise FunctionInputError("on_reject", "must be 'halt' or 'skip'")
    status = FILTER_HALT if on_reject == "halt" else FILTER_SKIP
    return FilterFunction(logic_at(inp["condition"], "condition"), status)


FILTER = FunctionSpec("filter", _compile_filter, description="Halt or skip when a condition is not true")

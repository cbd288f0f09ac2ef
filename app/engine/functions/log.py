"""log: emit `message [k=v, ...]` at a level; never changes data, never fails."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from app.engine.functions._inputs import as_input, logic_at, opt_str
from app.engine.jsonlogic import Logic, LogicError
from app.engine.message import Message
from app.engine.registry import FunctionInputError, FunctionSpec, SyncFunction, TaskContext

__all__ = ["LOG", "WORKFLOW_LOGGER"]

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
WORKFLOW_LOGGER = logging.getLogger("quasar.workflow")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _text(logic: Logic, context: Any) -> str:
    try:
        value = logic.evaluate(context)
    except LogicError as exc:
        return f"<error: {exc}>"
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class LogFunction(SyncFunction):
    __slots__ = ("fields", "level", "message")

    def __init__(self, message: Logic, level: int, fields: list[tuple[str, Logic]]) -> None:
        self.message = message
        self.level = level
        self.fields = fields

    def run(self, message: Message, ctx: TaskContext) -> int:
        # Evaluate nothing when the level is off: the common case on a hot path.
        if not WORKFLOW_LOGGER.isEnabledFor(self.level):
            return 200
        try:
            context = message.context
            line = _text(self.message, context)
            if self.fields:
                line += " [" + ", ".join(f"{k}={_text(v, context)}" for k, v in self.fields) + "]"
            WORKFLOW_LOGGER.log(
                self.level,
                line,
                extra={"workflow_id": ctx.workflow_id, "task_id": ctx.task_id, "channel": ctx.channel},
            )
        except Exception:
            pass
        return 200


def _compile_log(raw: Mapping[str, Any]) -> LogFunction:
    inp = as_input(raw)
    if "message" not in inp:
        raise FunctionInputError("message", "is required")
    level_name = (opt_str(inp, "level", "info") or "info").lower()
    if level_name not in _LEVELS:
        raise FunctionInputError("level", f"must be one of {', '.join(sorted(_LEVELS))}")
    fields_raw = inp.get("fields") or {}
    if not isinstance(fields_raw, Mapping):
        raise FunctionInputError("fields", "must be an object {name: JSONLogic}")
    fields = [(str(k), logic_at(v, f"fields.{k}")) for k, v in fields_raw.items()]
    return LogFunction(logic_at(inp["message"], "message"), _LEVELS[level_name], fields)


LOG = FunctionSpec("log", _compile_log, description="Write a log line")

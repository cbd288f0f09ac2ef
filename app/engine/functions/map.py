"""map: ordered JSONLogic mappings written to context paths (Orion §1c)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.functions._inputs import as_input, logic_at, req_list
from app.engine.jsonlogic import Logic, LogicError
from app.engine.message import Message
from app.engine.paths import MISSING, PathPart, compile_path, key_path, set_keys, set_path
from app.engine.registry import FunctionInputError, FunctionSpec, SyncFunction, TaskContext

__all__ = ["MAP"]

_ROOTS = frozenset({"data", "metadata", "temp_data"})


_Mapping = tuple[str, tuple[PathPart, ...], bool, Logic, "tuple[tuple[str, ...], str] | None"]


class MapFunction(SyncFunction):
    """Each mapping sees the context as updated by the ones before it (sequential visibility)."""

    __slots__ = ("mappings",)

    def __init__(self, mappings: list[_Mapping]) -> None:
        self.mappings = mappings

    def run(self, message: Message, ctx: TaskContext) -> int:
        context = message.context
        changes: list[tuple[str, Any, Any]] = []
        failed: list[str] | None = None
        for path, parts, is_root, logic, keys in self.mappings:
            try:
                value = logic.evaluate(context)
            except LogicError as exc:
                # Orion skips a failing mapping, applies the rest, and answers status 500.
                if failed is None:
                    failed = []
                failed.append(f"mapping '{path}' failed: {exc}")
                continue
            if value is None:
                continue  # a null result writes nothing (quirk 6, kept)
            if is_root and isinstance(value, dict):
                current = context.get(path)
                if isinstance(current, dict):
                    current.update(value)  # shallow merge into data/metadata/temp_data
                    changes.append((path, None, value))
                    continue
            # all-object-key paths (decided at compile time) skip the array rules of set_path
            old = set_path(context, parts, value) if keys is None else set_keys(context, *keys, value)
            changes.append((path, None if old is MISSING else old, value))
        ctx.changes = changes
        if failed:
            ctx.reason = "; ".join(failed)
            return 500
        return 200


def _compile_map(raw: Mapping[str, Any]) -> MapFunction:
    inp = as_input(raw)
    compiled: list[_Mapping] = []
    for i, m in enumerate(req_list(inp, "mappings")):
        field = f"mappings[{i}]"
        if not isinstance(m, Mapping):
            raise FunctionInputError(field, "must be an object {path, logic}")
        path = m.get("path")
        if not isinstance(path, str) or not path:
            raise FunctionInputError(field + ".path", "is required and must be a non-empty string")
        if "logic" not in m:
            raise FunctionInputError(field + ".logic", "is required")
        logic = logic_at(m["logic"], field + ".logic")
        parts = compile_path(path)
        compiled.append((path, parts, path in _ROOTS, logic, key_path(parts)))
    return MapFunction(compiled)


MAP = FunctionSpec("map", _compile_map, description="Write JSONLogic results to context paths")

"""Input-shape helpers shared by the built-in function factories (compile time only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.jsonlogic import Logic, LogicCompileError, compile_logic
from app.engine.registry import FunctionInputError

__all__ = ["as_input", "logic_at", "opt_bool", "opt_int", "opt_str", "req_list", "req_str"]

_MISSING = object()


def as_input(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise FunctionInputError("", "input must be a JSON object")
    return raw


def req_str(inp: Mapping[str, Any], key: str, prefix: str = "") -> str:
    value = inp.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise FunctionInputError(prefix + key, "is required")
    if not isinstance(value, str):
        raise FunctionInputError(prefix + key, "must be a string")
    return value


def opt_str(inp: Mapping[str, Any], key: str, default: str | None = None, prefix: str = "") -> str | None:
    value = inp.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise FunctionInputError(prefix + key, "must be a string")
    return value


def opt_bool(inp: Mapping[str, Any], key: str, default: bool, prefix: str = "") -> bool:
    value = inp.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise FunctionInputError(prefix + key, "must be true or false")
    return value


def opt_int(inp: Mapping[str, Any], key: str, default: int | None, prefix: str = "", *, minimum: int = 0) -> int | None:
    value = inp.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FunctionInputError(prefix + key, f"must be an integer >= {minimum}")
    return value


def req_list(inp: Mapping[str, Any], key: str, prefix: str = "") -> list[Any]:
    value = inp.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise FunctionInputError(prefix + key, "is required")
    if not isinstance(value, list):
        raise FunctionInputError(prefix + key, "must be an array")
    return value


def logic_at(rule: Any, field: str) -> Logic:
    """Compile one JSONLogic value, reporting failures against `field`."""
    try:
        return compile_logic(rule)
    except LogicCompileError as exc:
        raise FunctionInputError(field, f"invalid JSONLogic: {exc}") from exc

"""Connector-backed functions: input shapes compiled here, IO supplied later by the runtime.

http_call, channel_call, db_read, db_write, cache_read, cache_write, mongo_read and publish_kafka
are known names: validation checks their inputs and compiles their JSONLogic fields once. Until
a runtime registers a handler (`connector_function(name, handler)` + `registry.register(...,
replace=True)`), running one fails with "function X needs a connector runtime".

Quasar fix of Orion quirk 13: `params`, `key`, `value` and `filter` are evaluated as JSONLogic
(literals still work, since a literal is a JSONLogic constant).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from app.engine.functions._inputs import as_input, logic_at, opt_int, opt_str, req_str
from app.engine.jsonlogic import Logic
from app.engine.message import Message
from app.engine.registry import AsyncFunction, FunctionInputError, FunctionSpec, TaskContext
from app.errors import EngineFailure

__all__ = [
    "CONNECTOR_FUNCTIONS",
    "ConnectorHandler",
    "ConnectorInput",
    "compile_connector_input",
    "connector_function",
]

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class ConnectorInput:
    """A connector task's input: raw values plus the JSONLogic fields compiled at load time.

    `logic[key]` is a compiled rule; `params_logic` / `filter_logic` hold per-item rules for
    `params` (list) and `filter` (object) so an operator-named field is never misread.
    """

    __slots__ = ("filter_logic", "function", "logic", "params_logic", "raw")

    def __init__(self, function: str, raw: Mapping[str, Any]) -> None:
        self.function = function
        self.raw = raw
        self.logic: dict[str, Logic] = {}
        self.params_logic: list[Logic] | None = None
        self.filter_logic: dict[str, Logic] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def evaluate(self, key: str, context: Any, default: Any = None) -> Any:
        """The compiled rule for `key` evaluated against `context`, else the raw value."""
        rule = self.logic.get(key)
        if rule is not None:
            return rule.evaluate(context)
        return self.raw.get(key, default)

    def params(self, context: Any) -> list[Any]:
        return [p.evaluate(context) for p in self.params_logic or []]

    def filter(self, context: Any) -> dict[str, Any]:
        return {k: v.evaluate(context) for k, v in (self.filter_logic or {}).items()}


ConnectorHandler = Callable[[ConnectorInput, Message, TaskContext], Awaitable[int]]

# name -> (required string fields, optional string fields, JSONLogic fields)
_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "http_call": (("connector",), ("method", "path", "response_path"), ("path_logic", "body_logic")),
    "channel_call": (("channel",), ("response_path",), ("channel_logic", "data_logic")),
    "db_read": (("connector", "query"), ("output",), ()),
    "db_write": (("connector", "query"), ("output",), ()),
    "cache_read": (("connector",), ("output",), ("key",)),
    "cache_write": (("connector",), (), ("key", "value")),
    "mongo_read": (("connector", "database", "collection"), ("output",), ()),
    "publish_kafka": (("connector", "topic"), (), ("key_logic", "value_logic")),
}
_REQUIRED_LOGIC = {"cache_read": ("key",), "cache_write": ("key", "value")}


def compile_connector_input(function: str, raw: Mapping[str, Any]) -> ConnectorInput:
    """Check a connector task's input shape and compile its JSONLogic; raises `FunctionInputError`."""
    inp = as_input(raw)
    required, optional, logic_fields = _SHAPES[function]
    for key in required:
        req_str(inp, key)
    for key in optional:
        opt_str(inp, key)
    for key in _REQUIRED_LOGIC.get(function, ()):
        if key not in inp:
            raise FunctionInputError(key, "is required")
    out = ConnectorInput(function, inp)
    for key in logic_fields:
        if key in inp:
            out.logic[key] = logic_at(inp[key], key)
    if function == "http_call":
        method = inp.get("method", "GET")
        if method not in HTTP_METHODS:
            raise FunctionInputError("method", f"must be one of {', '.join(HTTP_METHODS)} (uppercase)")
        headers = inp.get("headers", {})
        if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
            raise FunctionInputError("headers", "must be an object of string values")
    if function in ("http_call", "channel_call"):
        opt_int(inp, "timeout_ms", None, minimum=1)
    if function == "cache_write":
        opt_int(inp, "ttl_secs", None, minimum=0)
    if function in ("db_read", "db_write"):
        params = inp.get("params", [])
        if not isinstance(params, list):
            raise FunctionInputError("params", "must be an array")
        out.params_logic = [logic_at(p, f"params[{i}]") for i, p in enumerate(params)]
    if function == "mongo_read":
        flt = inp.get("filter", {})
        if not isinstance(flt, Mapping):
            raise FunctionInputError("filter", "must be an object")
        out.filter_logic = {str(k): logic_at(v, f"filter.{k}") for k, v in flt.items()}
    return out


class _Handled(AsyncFunction):
    __slots__ = ("handler", "input")

    def __init__(self, inp: ConnectorInput, handler: ConnectorHandler) -> None:
        self.input = inp
        self.handler = handler

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        return await self.handler(self.input, message, ctx)


async def _needs_runtime(inp: ConnectorInput, message: Message, ctx: TaskContext) -> int:
    raise EngineFailure(f"function {inp.function} needs a connector runtime")


def connector_function(name: str, handler: ConnectorHandler, *, side_effects: bool = True) -> FunctionSpec:
    """A `FunctionSpec` for a connector-backed function with the standard input shape.

    The runtime registers these with `registry.register(spec, replace=True)`; the handler reaches
    IO only through `ctx.services`.
    """
    if name not in _SHAPES:
        raise ValueError(f"unknown connector function {name!r}; known: {', '.join(sorted(_SHAPES))}")

    def factory(raw: Mapping[str, Any]) -> _Handled:
        return _Handled(compile_connector_input(name, raw), handler)

    return FunctionSpec(name, factory, side_effects=side_effects, needs_runtime=handler is _needs_runtime)


CONNECTOR_FUNCTIONS: tuple[FunctionSpec, ...] = tuple(connector_function(n, _needs_runtime) for n in _SHAPES)

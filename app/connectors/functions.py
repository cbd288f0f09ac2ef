"""The connector-backed task functions (Orion §1c) as `FunctionSpec`s, and the registry helper.

Every function checks its input with the engine's `compile_connector_input` (the same checks
`validate` runs) and compiles its extra JSONLogic/paths once, at workflow-compile time. At run time
it reaches IO only through `ctx.services` (a `ConnectorServices`). With `services.dry_run` every
function records the call it would make in `ctx.calls` and performs no IO.

Quasar differences from Orion 0.1.x, on purpose:
- `params`, `key`, `value` and `filter` are JSONLogic (quirk 13; literals still work);
- channel_call's cycle check includes the origin channel, so A -> B -> A is refused at the
  B -> A hop (Orion notices one hop late);
- `_rollout_bucket` is never in `data`, so publish_kafka's default value does not carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets as _random
import time
from collections.abc import Mapping
from typing import Any

import orjson

from app.connectors.services import ConnectorServices
from app.engine.budget import BudgetExceeded
from app.engine.functions import default_registry
from app.engine.functions._inputs import logic_at
from app.engine.functions.connectors import ConnectorInput, compile_connector_input
from app.engine.jsonlogic import Logic, LogicError
from app.engine.message import Message
from app.engine.models import WorkflowDoc
from app.engine.paths import MISSING, PathPart, clone, compile_path, set_path
from app.engine.registry import AsyncFunction, FunctionInputError, FunctionRegistry, FunctionSpec, TaskContext
from app.errors import EngineFailure, QuasarError, Timeout, ValidationFailed
from app.observability.metrics import DB_QUERY_DURATION

__all__ = [
    "CALL_CHAIN_KEY",
    "CONNECTOR_KINDS",
    "ChannelCallRefused",
    "check_connector_references",
    "child_traceparent",
    "connector_functions",
    "connector_registry",
]

CALL_CHAIN_KEY = "_quasar_call_chain"
# function -> (connector_type, allowed db drivers or None)
CONNECTOR_KINDS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "http_call": ("http", None),
    "db_read": ("db", ("postgres", "mysql", "sqlite")),
    "db_write": ("db", ("postgres", "mysql", "sqlite")),
    "cache_read": ("cache", None),
    "cache_write": ("cache", None),
    "mongo_read": ("db", ("mongodb",)),
    "publish_kafka": ("kafka", None),
}
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


# --- shared helpers ------------------------------------------------------------------------------


def child_traceparent(metadata: Mapping[str, Any]) -> str:
    """A W3C traceparent for an outgoing call: same trace as the message's, a new span id."""
    candidate = metadata.get("traceparent")
    if not isinstance(candidate, str):
        headers = metadata.get("headers")
        candidate = headers.get("traceparent") if isinstance(headers, Mapping) else None
    span = _random.token_hex(8)
    if isinstance(candidate, str):
        m = _TRACEPARENT.match(candidate.strip().lower())
        if m and m.group(2) != "0" * 32:
            return f"00-{m.group(2)}-{span}-{m.group(4)}"
    return f"00-{_random.token_hex(16)}-{span}-01"


def _services(ctx: TaskContext, function: str) -> ConnectorServices:
    svc = ctx.services
    if not isinstance(svc, ConnectorServices):
        raise EngineFailure(f"function {function} needs connector services (RunOptions.services)")
    return svc


def _record(ctx: TaskContext, function: str, connector: str | None, request: dict[str, Any]) -> int:
    if ctx.calls is not None:
        call: dict[str, Any] = {"workflow_id": ctx.workflow_id, "task_id": ctx.task_id, "function": function}
        if connector is not None:
            call["connector"] = connector
        call["input"] = request
        ctx.calls.append(call)
    return 200


def _evaluate(rule: Logic, context: Any, field: str) -> Any:
    try:
        return rule.evaluate(context)
    except LogicError as exc:
        raise ValidationFailed(f"{field}: JSONLogic evaluation failed: {exc}") from exc


def _write(message: Message, ctx: TaskContext, path: str, parts: tuple[PathPart, ...], value: Any) -> None:
    old = set_path(message.context, parts, value)
    ctx.changes = [(path, None if old is MISSING else old, value)]


def _as_text(value: Any) -> str:
    """Orion's rule for stored values and keys: a string is kept raw, anything else is JSON text."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _output(inp: ConnectorInput) -> tuple[str, tuple[PathPart, ...]]:
    path = inp.get("output") or "data"
    return path, compile_path(path)


class _ConnectorTask(AsyncFunction):
    """Base: the compiled input, the connector name and the output path."""

    function = ""

    def __init__(self, inp: ConnectorInput) -> None:
        self.input = inp
        self.connector: str = inp.get("connector", "")
        self.output, self.output_parts = _output(inp)


# --- http_call ---------------------------------------------------------------------------------


def _default_method(svc: ConnectorServices, connector: str) -> str:
    """The connector's default `method` (Orion), else GET; a dry run may name a connector not created yet."""
    try:
        config = svc.connector(connector, "http").config
    except QuasarError:
        return "GET"
    return (getattr(config, "method", "") or "GET").upper()


class HttpCall(_ConnectorTask):
    function = "http_call"

    def __init__(self, inp: ConnectorInput) -> None:
        super().__init__(inp)
        # None: the connector's default `method` applies (Orion), else GET.
        self.method: str | None = inp.get("method")
        self.headers: dict[str, str] = dict(inp.get("headers") or {})
        self.timeout_ms: int | None = inp.get("timeout_ms")
        self.response_path: str | None = inp.get("response_path")
        self.response_parts = compile_path(self.response_path) if self.response_path else ()
        self.has_body = "body_logic" in inp.logic or "body" in inp.raw
        self.traceparent_given = any(k.lower() == "traceparent" for k in self.headers)

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        svc = _services(ctx, self.function)
        inp = self.input
        context = message.context
        if "path_logic" in inp.logic:
            path = _evaluate(inp.logic["path_logic"], context, "path_logic")
            if not isinstance(path, str):
                raise ValidationFailed(f"path_logic must give a string, got {type(path).__name__}")
        else:
            path = inp.get("path") or ""
        if "body_logic" in inp.logic:
            body = _evaluate(inp.logic["body_logic"], context, "body_logic")
        else:
            body = inp.get("body")
        headers = dict(self.headers)
        if not any(k.lower() == "traceparent" for k in headers):
            headers["traceparent"] = child_traceparent(context["metadata"])
        if svc.dry_run:
            method = self.method or _default_method(svc, self.connector)
            request = {"method": method, "path": path, "headers": headers}
            if self.has_body:
                request["body"] = body
            return _record(ctx, self.function, self.connector, request)
        client = await svc.http(self.connector)
        method = self.method or (client.config.method or "GET").upper()
        tracing = svc.tracing
        span_cm = (
            tracing.span(
                f"http_call {self.connector}",
                context["metadata"].get("traceparent"),
                "client",
                **{"http.request.method": method, "quasar.connector": self.connector},
            )
            if tracing is not None
            else contextlib.nullcontext()
        )
        with span_cm as span:
            if span is not None and not self.traceparent_given:
                headers["traceparent"] = tracing.traceparent_of(span)  # the callee continues this span
            result = await svc.guarded(
                ctx.channel,
                self.connector,
                lambda: client.call(
                    method,
                    path,
                    body=body,
                    has_body=self.has_body,
                    headers=headers,
                    timeout_ms=self.timeout_ms,
                    deadline=ctx.deadline,
                ),
            )
        if self.response_path:
            _write(message, ctx, self.response_path, self.response_parts, result.body)
        return 200


# --- SQL ---------------------------------------------------------------------------------------


def _params(inp: ConnectorInput, context: Any) -> list[Any]:
    try:
        return inp.params(context)
    except LogicError as exc:
        raise ValidationFailed(f"params: JSONLogic evaluation failed: {exc}") from exc


class DbRead(_ConnectorTask):
    function = "db_read"

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        return await self._sql(message, ctx, write=False)

    async def _sql(self, message: Message, ctx: TaskContext, *, write: bool) -> int:
        """One parameterized statement; db_read writes the rows, db_write `{"rows_affected": n}`."""
        svc = _services(ctx, self.function)
        query: str = self.input.get("query")
        params = _params(self.input, message.context)
        if svc.dry_run:
            return _record(ctx, self.function, self.connector, {"query": query, "params": params})
        db = await svc.sql(self.connector)
        run = db.write if write else db.read
        with DB_QUERY_DURATION.labels("write" if write else "read").time():
            result = await svc.guarded(ctx.channel, self.connector, lambda: run(query, params))
        _write(message, ctx, self.output, self.output_parts, {"rows_affected": result} if write else result)
        return 200


class DbWrite(DbRead):
    function = "db_write"

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        return await self._sql(message, ctx, write=True)


# --- cache -------------------------------------------------------------------------------------


class CacheRead(_ConnectorTask):
    function = "cache_read"

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        svc = _services(ctx, self.function)
        key = _as_text(_evaluate(self.input.logic["key"], message.context, "key"))
        if svc.dry_run:
            return _record(ctx, self.function, self.connector, {"key": key})
        cache = await svc.cache(self.connector)
        raw = await svc.guarded(ctx.channel, self.connector, lambda: cache.get(key))
        value: Any = None
        if raw is not None:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = raw
        _write(message, ctx, self.output, self.output_parts, value)
        return 200


class CacheWrite(_ConnectorTask):
    function = "cache_write"

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        svc = _services(ctx, self.function)
        key = _as_text(_evaluate(self.input.logic["key"], message.context, "key"))
        value = _as_text(_evaluate(self.input.logic["value"], message.context, "value"))
        ttl: int | None = self.input.get("ttl_secs")
        if svc.dry_run:
            return _record(ctx, self.function, self.connector, {"key": key, "value": value, "ttl_secs": ttl})
        cache = await svc.cache(self.connector)
        await svc.guarded(ctx.channel, self.connector, lambda: cache.set(key, value, ttl))
        return 200


# --- mongo -------------------------------------------------------------------------------------


class MongoRead(_ConnectorTask):
    function = "mongo_read"

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        svc = _services(ctx, self.function)
        try:
            flt = self.input.filter(message.context)
        except LogicError as exc:
            raise ValidationFailed(f"filter: JSONLogic evaluation failed: {exc}") from exc
        database: str = self.input.get("database")
        collection: str = self.input.get("collection")
        if svc.dry_run:
            request = {"database": database, "collection": collection, "filter": flt}
            return _record(ctx, self.function, self.connector, request)
        mongo = await svc.mongo(self.connector)
        with DB_QUERY_DURATION.labels("mongo_read").time():
            docs = await svc.guarded(ctx.channel, self.connector, lambda: mongo.find(database, collection, flt))
        _write(message, ctx, self.output, self.output_parts, docs)
        return 200


# --- publish_kafka -----------------------------------------------------------------------------


class PublishKafka(_ConnectorTask):
    function = "publish_kafka"

    def __init__(self, inp: ConnectorInput) -> None:
        super().__init__(inp)
        self.topic: str = inp.get("topic")
        raw_headers = inp.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            raise FunctionInputError("headers", "must be an object")
        self.headers: dict[str, Logic] = {str(k): logic_at(v, f"headers.{k}") for k, v in raw_headers.items()}

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        svc = _services(ctx, self.function)
        svc.connector(self.connector, "kafka")  # Orion: the connector must exist; the producer is global
        svc.check_publish_topic(self.topic)  # dry runs too: say so before it goes live
        context = message.context
        key_rule = self.input.logic.get("key_logic")
        key_value = _evaluate(key_rule, context, "key_logic") if key_rule is not None else None
        key = None if key_value is None else _as_text(key_value)
        value_rule = self.input.logic.get("value_logic")
        if value_rule is not None:
            value = _as_text(_evaluate(value_rule, context, "value_logic"))
        else:
            value = orjson.dumps(context["data"]).decode()
        headers: dict[str, str] = {}
        for name, rule in self.headers.items():
            h = _evaluate(rule, context, f"headers.{name}")
            if h is not None:
                headers[name] = _as_text(h)
        if not any(k.lower() == "traceparent" for k in headers):
            headers["traceparent"] = child_traceparent(context["metadata"])
        if svc.dry_run:
            request = {"topic": self.topic, "key": key, "value": value, "headers": headers}
            return _record(ctx, self.function, self.connector, request)
        await svc.produce(
            self.topic,
            value.encode(),
            key.encode() if key is not None else None,
            [(k, v.encode()) for k, v in headers.items()],
        )
        return 200


# --- channel_call ------------------------------------------------------------------------------


class ChannelCallRefused(ValidationFailed):
    """A cycle or the depth limit: passed up unchanged through every enclosing channel_call."""


class ChannelCall(AsyncFunction):
    function = "channel_call"

    def __init__(self, inp: ConnectorInput) -> None:
        self.input = inp
        self.channel: str = inp.get("channel")
        self.timeout_ms: int | None = inp.get("timeout_ms")
        self.response_path: str | None = inp.get("response_path")
        self.response_parts = compile_path(self.response_path) if self.response_path else ()

    def _target(self, context: Any) -> str:
        rule = self.input.logic.get("channel_logic")
        if rule is None:
            return self.channel
        target = _evaluate(rule, context, "channel_logic")
        if not isinstance(target, str) or not target:
            raise ValidationFailed("channel_call: channel_logic must give a non-empty channel name")
        return target

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        from app.engine.executor import RunOptions  # the executor imports the registry, not us

        svc = _services(ctx, self.function)
        context = message.context
        target = self._target(context)
        parent_meta = context["metadata"]
        chain = parent_meta.get(CALL_CHAIN_KEY)
        chain = [c for c in chain if isinstance(c, str)] if isinstance(chain, list) else []
        if ctx.channel not in chain:
            chain.append(ctx.channel)  # the origin is part of the chain (fixes Orion's late detection)
        route = " -> ".join([*chain, target])
        if target in chain:
            raise ChannelCallRefused(f"channel_call cycle: {route}")
        limit = svc.max_channel_call_depth
        if len(chain) > limit:
            raise ChannelCallRefused(f"channel_call depth limit ({limit}) exceeded: {route}")
        ctx.budget.count_call(route)  # one budget for the whole call tree of the request
        engine = ctx.engine
        if engine is None:
            raise EngineFailure("channel_call needs the engine in the task context")
        if not engine.has_channel(target):
            raise ValidationFailed(f"channel_call: channel '{target}' not found")
        if "data_logic" in self.input.logic:
            payload = _evaluate(self.input.logic["data_logic"], context, "data_logic")
        elif "data" in self.input.raw:
            payload = clone(self.input.raw["data"])
        else:
            payload = clone(message.payload)
        child_meta = {k: clone(v) for k, v in parent_meta.items() if k not in ("channel", "progress")}
        child_meta[CALL_CHAIN_KEY] = chain
        child = Message(payload, metadata=child_meta)
        timeout_s = (self.timeout_ms or svc.default_channel_call_timeout_ms) / 1000.0
        deadline = time.time() + timeout_s
        if ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        options = RunOptions(deadline=deadline, services=svc, calls=ctx.calls, budget=ctx.budget)
        timer = asyncio.timeout(max(0.0, deadline - time.time()))
        try:
            async with timer:
                # Yield first: a call tree of in-process channels would otherwise hold the event loop
                # (and every other partition) until its last call returns.
                await asyncio.sleep(0)
                await engine.process(target, child, options)
        except Exception as exc:
            if timer.expired() or isinstance(exc, TimeoutError | Timeout):
                raise Timeout(f"channel_call to '{target}' timed out after {timeout_s:.3g}s") from exc
            if isinstance(exc, ChannelCallRefused | BudgetExceeded):
                raise
            why = exc.message if isinstance(exc, QuasarError) else str(exc)
            raise EngineFailure(f"channel_call to '{target}' failed: {why}") from exc
        result = child.context["data"]
        if self.response_path:
            _write(message, ctx, self.response_path, self.response_parts, result)
        else:
            _write(message, ctx, "data", (("data", -1),), result)  # Orion: replaces data (quirk 14)
        return 200


# --- registration ------------------------------------------------------------------------------

_CLASSES: dict[str, type[AsyncFunction]] = {
    "http_call": HttpCall,
    "db_read": DbRead,
    "db_write": DbWrite,
    "cache_read": CacheRead,
    "cache_write": CacheWrite,
    "mongo_read": MongoRead,
    "publish_kafka": PublishKafka,
    "channel_call": ChannelCall,
}
_DESCRIPTIONS = {
    "http_call": "Call an HTTP API through an http connector",
    "db_read": "Run a parameterized SELECT on a db connector; rows into data",
    "db_write": "Run a parameterized INSERT/UPDATE/DELETE on a db connector",
    "cache_read": "Read a key from a cache connector",
    "cache_write": "Write a key to a cache connector (TTL)",
    "mongo_read": "Find documents through a mongodb connector",
    "publish_kafka": "Produce a record to a Kafka topic",
    "channel_call": "Run another channel's workflows in-process",
}


def _spec(name: str) -> FunctionSpec:
    cls = _CLASSES[name]

    def factory(raw: Mapping[str, Any]) -> AsyncFunction:
        return cls(compile_connector_input(name, raw))  # type: ignore[call-arg]

    return FunctionSpec(name, factory, side_effects=True, description=_DESCRIPTIONS[name])


def connector_functions() -> list[FunctionSpec]:
    """The real connector-backed functions (replace the engine's "needs runtime" placeholders)."""
    return [_spec(name) for name in _CLASSES]


def connector_registry(base: FunctionRegistry | None = None) -> FunctionRegistry:
    """A new registry: `base` (default: the engine's default registry) plus the connector functions."""
    registry = base.copy() if base is not None else default_registry()
    for spec in connector_functions():
        registry.register(spec, replace=True)
    return registry


def check_connector_references(
    workflow: WorkflowDoc | Mapping[str, Any], connectors: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Errors `[{field, message, problem}]` for tasks naming a missing, disabled or wrong-type connector
    (`problem`: missing, unusable or driver).

    `connectors` maps id or name to connector documents (dicts or `ConnectorDoc`s), as in the config
    snapshot. Validation and activation call this so a typo fails at deploy time, not per request.
    """
    svc = ConnectorServices(connectors)
    tasks = workflow.tasks if isinstance(workflow, WorkflowDoc) else workflow.get("tasks") or []
    errors: list[dict[str, str]] = []
    for i, task in enumerate(tasks):
        fn = task.function if not isinstance(task, Mapping) else task.get("function") or {}
        name = fn.name if not isinstance(fn, Mapping) else fn.get("name")
        inp = fn.input if not isinstance(fn, Mapping) else fn.get("input") or {}
        if name not in CONNECTOR_KINDS or not isinstance(inp, Mapping):
            continue
        connector = inp.get("connector")
        if not isinstance(connector, str):
            continue
        field = f"tasks[{i}].function.input.connector"
        kind, drivers = CONNECTOR_KINDS[name]
        try:
            doc = svc.connector(connector, kind)
        except QuasarError as exc:
            known = sorted(n for n, d in svc.connectors.items() if d.connector_type == kind)
            hint = f"; known {kind} connectors: {', '.join(known)}" if known else f"; no {kind} connector exists"
            problem = "unusable" if connector in svc.connectors else "missing"
            errors.append({"field": field, "message": exc.message + hint, "problem": problem})
            continue
        driver = getattr(doc.config, "driver", None)
        if drivers is not None and driver not in drivers:
            errors.append(
                {
                    "field": field,
                    "message": f"connector '{connector}' uses driver {driver}; {name} needs {'/'.join(drivers)}",
                    "problem": "driver",
                }
            )
    return errors

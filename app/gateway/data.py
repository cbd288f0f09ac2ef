"""Orion's data API over Kafka: `/api/v1/data/...` (sync, async, REST routes, traces).

Order of checks for a request (Orion `routes/data.rs`, `orion-semantics.md` §1d), with Quasar's fixes:

1. strip a trailing `/async`; 2. resolve the route (REST table, else a single segment naming an active
channel, else 404 — quirk 9 fixed); body size 413 while reading; 3. content type 415; 4. JSON 400;
5. metadata (body `metadata`, `http_method`, `headers`, `query`, `params`);
then the channel guards (`ChannelGuards.check`, the one seam where governance runs): CORS 403,
`validation_logic` 400, then the pluggable hooks (rate limit, dedup, cache come in a later issue) —
applied to async requests too (quirk 11 fixed); async branches off here with 202;
backpressure 503; the Kafka round trip with `timeout_ms` 504; the worker's reply forwarded unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from random import getrandbits as _getrandbits
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config_store.channel_ops import ChannelPaused, is_paused
from app.config_store.snapshot import ChannelView, Snapshot
from app.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    QuasarError,
    ResponseTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from app.gateway.errors import ChannelTimeout, RequestTimeout, json_response
from app.gateway.guards import ChannelGuards, ChannelPolicy, DataContext, Guard, InFlight
from app.gateway.reply_router import KafkaBridge
from app.gateway.routing import Resolution, RouteTable
from app.gateway.traces import TRACE_STATUSES, TraceIndex, orion_trace
from app.jsonlimits import MAX_JSON_DEPTH, json_too_deep
from app.kafka import headers as H
from app.kafka.names import TopicNames
from app.kafka.producer import HeaderList
from app.observability.metrics import REPLY_TIMEOUTS
from app.settings import Settings
from app.topology import ChannelFilter

__all__ = [
    "ChannelGuards",
    "ChannelPolicy",
    "DataContext",
    "DataFastPath",
    "DataService",
    "Guard",
    "loads_body",
    "read_body",
    "read_body_raw",
    "router",
]

DATA_PREFIX = "/api/v1/data"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def read_body(request: Request, limit: int, read_timeout: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (never buffered unbounded)
    and with 408 when it is not complete within `read_timeout` seconds (slowloris-style clients)."""
    return await read_body_raw(request.receive, request.headers.get("content-length"), limit, read_timeout)


async def read_body_raw(receive: Receive, declared: str | None, limit: int, read_timeout: float | None = None) -> bytes:
    """`read_body` straight from ASGI `receive`; `declared` is the Content-Length header, if any."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Invalid Content-Length header") from None
        if size > limit:
            raise PayloadTooLarge(f"Request body of {size} bytes exceeds the limit of {limit} bytes")
    body = b""
    chunks: list[bytes] | None = None  # only a body in several messages pays for a list + join
    total = 0
    try:
        async with asyncio.timeout(read_timeout):
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "http.disconnect":
                    raise ClientDisconnect()
                if kind != "http.request":
                    continue
                chunk = message.get("body", b"")
                if chunk:
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
                    if chunks is not None:
                        chunks.append(chunk)
                    elif body:
                        chunks = [body, chunk]
                    else:
                        body = chunk
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeout(f"Request body not received within {read_timeout:g}s ({total} bytes arrived)") from None
    return b"".join(chunks) if chunks is not None else body


def loads_body(raw: bytes) -> Any:
    """Parse a JSON request body: 400 for malformed JSON (invalid UTF-8 included) or nesting deeper than
    `MAX_JSON_DEPTH` (orjson would parse it but not encode it back: a 500 further down)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON body: {exc}") from None
    if json_too_deep(raw, doc):
        raise BadRequest(f"Invalid JSON body: nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _client_ip(scope: Scope) -> str:
    # The connecting address; behind a configured proxy the app's ProxyHeadersMiddleware has already put
    # the forwarded client here. Never the raw X-Forwarded-For / X-Real-IP: anyone can send those.
    client = scope.get("client")
    return client[0] if client else "unknown"


def fast_uuid4() -> str:
    """A random (version 4) UUID string without the `uuid` module's per-call syscall and object cost.

    Identifiers only (trace and correlation ids), not secrets: Python's PRNG is good enough.
    """
    h = f"{_getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _traceparent(incoming: str | None, trace_id: str) -> str:
    # Continue the caller's W3C trace when it sent one; else start one from our trace id.
    if incoming and len(incoming) >= 55 and incoming.count("-") == 3:
        return incoming
    return f"00-{trace_id.replace('-', '')}-{_getrandbits(64):016x}-01"


class DataService:
    """The data API's state: config view, Kafka bridge, trace index, compiled per-channel policies."""

    def __init__(
        self,
        settings: Settings,
        reader: Any,
        bridge: KafkaBridge,
        traces: TraceIndex,
        guards: ChannelGuards | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.bridge = bridge
        self.traces = traces
        self.guards = guards or ChannelGuards()
        self.topics = TopicNames(settings.topic_prefix)
        self.topology = ChannelFilter.from_settings(settings)  # Orion's [channels] include/exclude
        self._snapshot: Snapshot | None = None
        self._table = RouteTable()
        self._resolved: dict[tuple[str, str], Resolution] = {}  # per snapshot
        self._policies: dict[str, ChannelPolicy] = {}
        self._in_flight: dict[str, InFlight] = {}

    # -- config view --------------------------------------------------------------------------------

    def _refresh(self) -> Snapshot:
        snap: Snapshot = self.reader.snapshot
        if snap is not self._snapshot:
            self._table = route_table(snap)
            self._resolved = {}
            counts = self._in_flight
            self._in_flight = {n: c for n, c in counts.items() if c.n or n in snap.channels}  # forget idle, gone
            self._policies = {
                name: ChannelPolicy.build(view.channel, self.settings, self._in_flight.setdefault(name, InFlight()))
                for name, view in snap.channels.items()
            }
            self._snapshot = snap
        return snap

    def resolve(self, method: str, path: str) -> tuple[Resolution, ChannelView, ChannelPolicy]:
        snap = self._refresh()
        key = (method, path)
        resolution = self._resolved.get(key)
        if resolution is None:
            resolution = self._table.resolve(method, path)
            if resolution is None:
                raise NotFound(f"No channel matches {method} /{path.strip('/')}")
            if not resolution.params:
                # Only parameter-free routes are cached: hot channel paths repeat, `/orders/{id}` not.
                if len(self._resolved) >= 4096:
                    self._resolved.clear()
                self._resolved[key] = resolution
        if not self.topology.everything and not self.topology.serves(resolution.channel):
            raise NotFound(f"Channel '{resolution.channel}' is not served by this instance (QUASAR_CHANNELS_*)")
        view = snap.channels[resolution.channel]
        return resolution, view, self._policies[resolution.channel]

    # -- the request path ---------------------------------------------------------------------------

    async def handle(self, request: Request, path: str) -> Response:
        """The FastAPI-route entry (docs + fallback); the gateway serves these paths via `DataFastPath`."""
        return await self.handle_raw(request.method, path, request.scope, request.receive)

    async def handle_raw(self, method: str, path: str, scope: Scope, receive: Receive) -> Response:
        """One data request straight from its ASGI scope: no Starlette `Request`, no pydantic."""
        started = time.perf_counter()
        resolution, view, policy = self.resolve(method, path)
        # ASGI servers lower-case header names already; .lower() keeps odd servers honest.
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.settings.max_payload_size
        own_limit = view.channel.guards.max_payload_bytes
        raw = await read_body_raw(
            receive,
            headers.get("content-length"),
            limit if own_limit is None else min(limit, own_limit),
            self.settings.body_read_timeout_ms / 1000,
        )
        body: Any = {}
        if raw.strip():
            if not _is_json(headers.get("content-type")):
                raise UnsupportedMediaType(
                    f"Expected Content-Type application/json, got '{headers.get('content-type', '')}'"
                )
            body = loads_body(raw)
            if not isinstance(body, dict):
                raise BadRequest('Request body must be a JSON object like {"data": {...}, "metadata": {...}}')
            if "data" not in body:
                # Orion: the body's `data` is the payload; a body without it is a client mistake (a
                # bare payload would otherwise run on empty data and answer 200).
                raise BadRequest('Request body must have a "data" field: {"data": {...}, "metadata": {...}}')
        extra_meta = body.get("metadata")
        if extra_meta is not None and not isinstance(extra_meta, dict):
            raise BadRequest("'metadata' must be a JSON object")
        metadata: dict[str, Any] = dict(extra_meta or {})
        metadata["http_method"] = method
        metadata["headers"] = headers
        qs = scope.get("query_string")
        if qs:
            # Starlette's QueryParams rule: latin-1 text, blanks kept, the last value of a key wins.
            query = dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True))
            if query:
                metadata["query"] = query
        if resolution.params:
            metadata["params"] = resolution.params
        data = body.get("data", {})

        # RequestIdMiddleware already chose it (the caller's, or a fresh one) and echoes it back.
        request_id = scope.get("state", {}).get("request_id") or fast_uuid4()
        trace_id = fast_uuid4()
        traceparent = scope.get("state", {}).get("traceparent")  # the request span's, when tracing is on
        ctx = DataContext(
            view, resolution, data, metadata, headers, _client_ip(scope), request_id, trace_id, traceparent=traceparent
        )
        parsed = time.perf_counter()
        short_circuit = await self.guards.check(ctx, policy)
        if short_circuit is not None:
            return short_circuit
        guarded = time.perf_counter()
        try:
            if resolution.is_async:
                response = await self._submit_async(ctx, policy)
            else:
                response = await self._call_sync(ctx, policy)
        except (ServiceUnavailable, PayloadTooLarge):
            await self.guards.abandon(ctx)  # refused, never ran: the retry may use the same key
            raise
        response = await self.guards.complete(ctx, response)  # governance: cache / idempotent original
        if headers.get("x-orion-profile") == "1" or b"profile=1" in scope.get("query_string", b""):
            phases = {"parse": parsed - started, "guards": guarded - parsed, "process": time.perf_counter() - guarded}
            response = _with_profile(response, phases, resolution.is_async)
        return response

    def _record_headers(self, ctx: DataContext, mode: str, deadline_ms: int | None) -> HeaderList:
        hdrs: HeaderList = [
            (H.REQUEST_ID, ctx.request_id.encode()),
            (H.CORRELATION_ID, ctx.trace_id.encode()),
            (H.TRACE_ID, ctx.trace_id.encode()),
            (H.TRACEPARENT, (ctx.traceparent or _traceparent(ctx.headers.get(H.TRACEPARENT), ctx.trace_id)).encode()),
            (H.MODE, mode.encode()),
            (H.CHANNEL, ctx.channel.name.encode()),
            (H.CONFIG_OFFSET, str(self.reader.applied_offset).encode()),
        ]
        if deadline_ms is not None:
            hdrs.append((H.DEADLINE, str(deadline_ms).encode()))
        rollout_key = self.guards.rollout_key(ctx)  # governance: sticky rollout key, never in data
        if rollout_key is not None:
            hdrs.append((H.ROLLOUT_KEY, rollout_key.encode()))
        return hdrs

    def _check_record_size(self, value: bytes, key: str, headers: HeaderList) -> None:
        """413 for a request whose record would not fit the record budget (the producer and the topic would
        refuse it: a 5xx). The body limit leaves room for the usual envelope; this catches bodies that grow
        when re-encoded (e.g. `1e15` is written `1000000000000000.0`). 2 KiB stay free for the fields an
        async request's pending trace adds to its payload."""
        size = len(value) + len(key) + sum(len(k) + len(v or b"") for k, v in headers)
        budget = self.settings.max_record_bytes - 2048
        if size > budget:
            raise PayloadTooLarge(
                f"Request too large: its record (body, request headers and envelope) would be {size} bytes, "
                f"over the record limit of {budget} bytes (QUASAR_MAX_RECORD_BYTES)"
            )

    async def _call_sync(self, ctx: DataContext, policy: ChannelPolicy) -> Response:
        if is_paused(self.reader, policy.name):
            # Nobody consumes the channel: the call would only wait out its timeout. Async calls are
            # still accepted (they wait on the topic and run on resume).
            raise ChannelPaused(f"Channel '{policy.name}' is paused: resume it with `quasar channels resume`")
        if policy.max_concurrent is not None and policy.in_flight.n >= policy.max_concurrent:
            raise ServiceUnavailable(f"Channel '{policy.name}' is at capacity")
        bridge = self.bridge
        timeout_ms = policy.timeout_ms
        hdrs = self._record_headers(ctx, "sync", int(time.time() * 1000) + timeout_ms)
        hdrs.append((H.REPLY_TO, bridge.reply_to().encode()))
        value = _record_value(ctx)
        correlation_id = ctx.trace_id
        self._check_record_size(value, correlation_id, hdrs)
        reply_future = bridge.expect(correlation_id)
        policy.in_flight.n += 1
        # One timer handle instead of asyncio.wait_for (a task wrapper and callbacks per request).
        timer = reply_future.get_loop().call_later(timeout_ms / 1000, _expire, reply_future)
        try:
            delivery = bridge.produce_request(policy.topic, value, key=correlation_id, headers=hdrs)
            delivery.add_done_callback(lambda d: _fail_on_delivery_error(d, reply_future))
            try:
                reply = await reply_future
            except TimeoutError:
                REPLY_TIMEOUTS.labels(policy.name).inc()
                raise ChannelTimeout(
                    f"Workflow execution on channel '{policy.name}' exceeded {timeout_ms}ms timeout"
                ) from None
        finally:
            timer.cancel()
            policy.in_flight.n -= 1
            bridge.forget(correlation_id)
        limit = self.settings.result_limit_bytes
        if len(reply.body) > limit:
            raise ResponseTooLarge(f"Response of {len(reply.body)} bytes exceeds the limit of {limit} bytes")
        return Response(reply.body, status_code=reply.status, media_type="application/json")

    async def _submit_async(self, ctx: DataContext, policy: ChannelPolicy) -> Response:
        value = _record_value(ctx)
        hdrs = self._record_headers(ctx, "async", None)
        self._check_record_size(value, ctx.trace_id, hdrs)
        delivered = self.bridge.produce_request(policy.topic, value, key=ctx.trace_id, headers=hdrs)
        pending = {
            "id": ctx.trace_id,
            "channel": policy.name,
            "mode": "async",
            "status": "pending",
            "created_at": _now_iso(),
            "request_id": ctx.request_id,
            "payload": ctx.data,  # Orion's trace carries the message's payload
        }
        # Visible at once on this instance; on every other one when it tails the traces topic.
        self.traces.record(ctx.trace_id, pending)
        self.bridge.produce(self.topics.traces, orjson.dumps(pending), key=ctx.trace_id)
        # 202 promises the request is durably on the channel topic: wait for the broker's ack.
        try:
            await _wait(delivered, 10.0)
        except TimeoutError:
            raise ServiceUnavailable(f"broker did not accept the request for channel '{policy.name}'") from None
        return json_response({"trace_id": ctx.trace_id, "status": "pending"}, 202)


def _record_value(ctx: DataContext) -> bytes:
    """The channel-topic record of a request: `{data, metadata}`, with the request headers the channel
    persists (credentials such as `authorization` and `cookie` never reach a topic unless it keeps them)."""
    headers = ctx.metadata.get("headers")
    policy = ctx.channel.channel.headers
    if isinstance(headers, Mapping) and any(k in policy.secret for k in headers):
        return orjson.dumps({"data": ctx.data, "metadata": {**ctx.metadata, "headers": policy.persisted(headers)}})
    return orjson.dumps({"data": ctx.data, "metadata": ctx.metadata})


def _with_profile(response: Response, phases: Mapping[str, float], is_async: bool) -> Response:
    """Orion's per-request profile (`X-Orion-Profile: 1` / `?profile=1`): `_orion.profile` in a JSON answer,
    milliseconds per phase as the gateway sees them (`process` = Kafka round trip + the worker's run)."""
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return response
    if not isinstance(body, dict):
        return response
    profile: dict[str, float | str] = {f"{name}_ms": round(seconds * 1000, 3) for name, seconds in phases.items()}
    profile["total_ms"] = round(sum(phases.values()) * 1000, 3)
    profile["mode"] = "async" if is_async else "sync"
    body["_orion"] = {**(body.get("_orion") or {}), "profile": profile}
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(orjson.dumps(body), status_code=response.status_code, headers=headers)


def route_table(snapshot: Snapshot) -> RouteTable:
    """The REST table of a config snapshot: active sync channels with a route pattern (Orion's rule)."""
    return RouteTable.of(view.channel for view in snapshot.channels.values())


async def _wait(fut: Any, seconds: float) -> Any:
    # On expiry wait_for cancels `fut`; late results for it are then dropped by their producers.
    return await asyncio.wait_for(fut, seconds)


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _fail_on_delivery_error(delivery: Any, reply_future: Any) -> None:
    if reply_future.done() or delivery.cancelled():
        return
    exc = delivery.exception()
    if exc is not None:
        reply_future.set_exception(exc if isinstance(exc, QuasarError) else ServiceUnavailable(str(exc)))


# -- routes ----------------------------------------------------------------------------------------

router = APIRouter(prefix=DATA_PREFIX, tags=["Data"])

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"data": {}, "metadata": {"type": "object"}},
                    "example": {"data": {"order_id": "ORD-123", "total": 25000}},
                }
            }
        },
    }
}


def _service(request: Request) -> DataService:
    service: DataService | None = getattr(request.app.state, "data_service", None)
    if service is None:
        raise ServiceUnavailable("data API unavailable: the gateway is not connected to Kafka")
    return service


def _trace_visibility(request: Request, service: DataService) -> Callable[[Any], bool] | None:
    """Which channels' traces this caller may read (None: all of them).

    Admin credentials (any role) read every trace. Otherwise a caller reads the traces of each channel
    whose API key it presents, plus, while admin auth is off, those of channels without API keys. With
    admin auth on, a caller with neither gets 401.
    """
    from app.governance.credentials import extract_key, key_matches

    headers = {k.lower(): v for k, v in request.headers.items()}
    auth = getattr(request.app.state, "admin_auth", None)
    admin_on = bool(auth is not None and auth.enabled)
    if auth is not None and admin_on:
        presented = extract_key(headers, auth.header)
        if presented is not None and auth.identify(presented) is not None:
            return None
    unlocked: set[str] = set()
    keyed: set[str] = set()
    for name, view in service.reader.snapshot.channels.items():
        guards = view.channel.guards
        if not guards.api_keys:
            continue
        keyed.add(name)
        given = extract_key(headers, guards.api_key_header) or extract_key(headers, "authorization")
        if given is not None and key_matches(given, guards.api_keys):
            unlocked.add(name)
    if admin_on:
        if not unlocked:
            raise Unauthorized("Reading traces needs admin credentials or a channel API key")
        return unlocked.__contains__
    return lambda channel: channel in unlocked or channel not in keyed


@router.get("/traces", summary="List traces (filters: channel, status, mode); paginated")
async def list_traces(
    request: Request,
    channel: str | None = Query(None),
    status: str | None = Query(None, description="pending | running | completed | failed"),
    mode: str | None = Query(None, description="sync | async"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31 - 1),  # echoed back: keep it in JSON's integer range
) -> Response:
    if status is not None and status not in TRACE_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(TRACE_STATUSES)}")
    if mode is not None and mode not in ("sync", "async"):
        raise BadRequest("mode must be sync or async")
    service = _service(request)
    visible = _trace_visibility(request, service)
    items, total = service.traces.list(
        channel=channel, status=status, mode=mode, limit=limit, offset=offset, visible=visible
    )
    following = offset + len(items)
    return json_response(
        {
            "data": items,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_offset": following if following < total else None,
        }
    )


@router.get("/traces/{trace_id}", summary="Get one trace (poll an async request)")
async def get_trace(request: Request, trace_id: str) -> Response:
    service = _service(request)
    visible = _trace_visibility(request, service)
    trace = service.traces.get(trace_id)
    if trace is None or (visible is not None and not visible(trace.get("channel"))):
        raise NotFound(f"Trace '{trace_id}' not found")  # another caller's trace: as if it did not exist
    return json_response(orion_trace(trace))


@router.post("/{channel}", summary="Process a message synchronously", openapi_extra=_BODY_DOC)
async def post_channel(request: Request, channel: str) -> Response:
    return await _service(request).handle(request, channel)


@router.post(
    "/{channel}/async",
    status_code=202,
    summary="Submit a message for async processing",
    openapi_extra=_BODY_DOC,
)
async def post_channel_async(request: Request, channel: str) -> Response:
    return await _service(request).handle(request, f"{channel}/async")


async def any_route(request: Request, path: str) -> Response:
    """REST route matching (method + route_pattern), or a channel name; `/async` suffix for async."""
    return await _service(request).handle(request, path)


# One route per method so each gets its own OpenAPI operation id.
for _method in _METHODS:
    router.add_api_route(
        "/{path:path}",
        any_route,
        methods=[_method],
        operation_id=f"data_route_{_method.lower()}",
        summary=f"{_method} via REST route matching",
        openapi_extra=_BODY_DOC,
    )


# -- the hot path ----------------------------------------------------------------------------------

_DATA_SLASH = DATA_PREFIX + "/"
_ROUTE_ENDPOINTS = {post_channel: "post", post_channel_async: "async", any_route: "any"}


class DataFastPath:
    """Pure-ASGI hot path for the data routes, mounted as the innermost middleware of the gateway app.

    Serves exactly the requests FastAPI would send to `post_channel`, `post_channel_async` and
    `any_route` (the trace routes and anything else go on to FastAPI), calling `DataService.handle_raw`
    directly: no router scan over every admin route, no `Request`, no dependency solving. Those route
    declarations stay for the OpenAPI document and as a fallback. Errors go through the app's own
    exception handlers, so their shape and metrics are the same; `scope["route"]` is set to the route
    FastAPI would have matched, so HTTP metrics keep their route-template label.
    """

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: `data_service` appears once the lifespan started
        self._post: Any = None
        self._async: Any = None
        self._any: dict[str, Any] = {}
        for route in router.routes:
            kind = _ROUTE_ENDPOINTS.get(getattr(route, "endpoint", None))  # type: ignore[arg-type]
            if kind == "post":
                self._post = route
            elif kind == "async":
                self._async = route
            elif kind == "any":
                for method in getattr(route, "methods", ()):
                    self._any[method] = route

    def route_for(self, method: str, rest: str) -> Any:
        """The data route FastAPI would match for `method` + the path after `/api/v1/data/`, or None."""
        route = self._any.get(method)
        if route is None:
            return None
        if method == "GET":
            # `/traces` and `/traces/{trace_id}` are declared first and win for GET.
            if rest == "traces" or (rest.startswith("traces/") and len(rest) > 7 and "/" not in rest[7:]):
                return None
        elif method == "POST" and rest:
            slash = rest.find("/")
            if slash == -1:
                return self._post
            if 0 < slash == len(rest) - 6 and rest.endswith("/async"):
                return self._async
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root) :]
        route = self.route_for(scope["method"], path[len(_DATA_SLASH) :]) if path.startswith(_DATA_SLASH) else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what the router would have written (metrics label it by template)
        try:
            service: DataService | None = getattr(self.state, "data_service", None)
            if service is None:
                raise ServiceUnavailable("data API unavailable: the gateway is not connected to Kafka")
            response = await service.handle_raw(scope["method"], path[len(_DATA_SLASH) :], scope, receive)
        except Exception as exc:  # a client that went away (ClientDisconnect) too: the app's 499 handler
            response = await _handled(scope, receive, exc)
        await response(scope, receive, send)


async def _handled(scope: Scope, receive: Receive, exc: Exception) -> Response:
    """The response the app's registered exception handler gives for `exc` (as FastAPI would answer)."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(Request(scope, receive), exc)
            return response
    raise exc

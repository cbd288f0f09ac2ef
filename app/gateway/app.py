"""The gateway's FastAPI app: data API, admin API (when present), health, OpenAPI at `/api/v1/openapi.json`.

`create_app(settings)` builds the app without I/O; its lifespan starts (in this order) the config
reader (caught up to a marker), the Kafka bridge (reply partitions positioned behind a marker) and the
trace index, so uvicorn accepts no request before the gateway is ready. Parts passed in by the caller
(tests, `quasar dev`) are used as they are and not stopped by the app.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app import __version__
from app.gateway import data, health
from app.gateway.cors import CorsMiddleware
from app.gateway.data import ChannelGuards, DataFastPath, DataService, fast_uuid4
from app.gateway.errors import install_error_handlers
from app.gateway.limits import RequestLimitsMiddleware
from app.gateway.platform_limit import PlatformRateLimit
from app.gateway.reply_router import KafkaBridge
from app.gateway.request_spans import RequestSpans
from app.gateway.security_headers import SecurityHeadersMiddleware
from app.gateway.traces import TraceIndex
from app.governance.governor import Governor
from app.heap import settle_heap
from app.kafka.headers import REQUEST_ID
from app.observability import context as log_context
from app.observability.http import HttpMetricsMiddleware, metrics_endpoint
from app.observability.metrics import BUILD_INFO, SYNC_IN_FLIGHT
from app.observability.tracing import tracing_for
from app.settings import Settings, get_settings

__all__ = ["RequestIdMiddleware", "create_app"]

log = logging.getLogger("quasar.gateway")

_REQUEST_ID = REQUEST_ID.encode()

# Newer FastAPI checks for an OpenTelemetry provider (reading the environment) on every request; Quasar
# exports Prometheus metrics instead, so switch that off where the option exists (profiled: ~5% of CPU).
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


class RequestIdMiddleware:
    """Echo the caller's `x-request-id` (or a fresh one) on every response; `request.state.request_id`.

    Pure ASGI on purpose: `BaseHTTPMiddleware` costs a task and a stream per request on the hot path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = b""
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                rid = value
                break
        if not rid or len(rid) > 200:
            rid = fast_uuid4().encode()
        scope.setdefault("state", {})["request_id"] = rid.decode("latin-1")
        # Each request runs in its own task: the binding is this request's only.
        log_context.bind(request_id=scope["state"]["request_id"])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID, rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(
    settings: Settings | None = None,
    *,
    reader: Any = None,
    writer: Any = None,
    bridge: KafkaBridge | None = None,
    traces: TraceIndex | None = None,
    guards: ChannelGuards | None = None,
    reply_partitions: Sequence[int] | None = None,
    max_in_flight: int = 10_000,
    trace_capacity: int = 20_000,
) -> FastAPI:
    """The gateway app. Unset parts are created from `settings` when the app starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            state = app.state
            cfg_reader = reader
            if cfg_reader is None:
                from app.config_store.reader import ConfigReader

                # The gateway never runs workflows itself (the worker does): no engine build per change.
                cfg_reader = ConfigReader(settings, engine_factory=None, name=f"gateway-{settings.instance_id}")
                stack.push_async_callback(cfg_reader.stop)
            await cfg_reader.ready()
            state.config_reader = cfg_reader
            from app.gateway.admin_audit import DirectWriteAuditor

            cfg_reader.add_outcome_listener(DirectWriteAuditor(cfg_reader))
            cfg_writer = writer
            if cfg_writer is None:
                from app.config_store.writer import ConfigWriter

                cfg_writer = ConfigWriter(cfg_reader)
            state.config_writer = cfg_writer

            kafka = bridge
            if kafka is None:
                kafka = KafkaBridge(
                    settings,
                    partitions=reply_partitions,
                    max_in_flight=max_in_flight,
                    linger_ms=settings.gateway_linger_ms,
                )
                stack.push_async_callback(kafka.stop)
                await kafka.start()
            state.bridge = kafka
            if bridge is None:  # a real bridge: watch the cluster too (/health, /readyz)
                from app.kafka.names import TopicNames
                from app.kafka.probe import BrokerProbe

                probe = BrokerProbe(
                    settings,
                    topic=TopicNames(settings.topic_prefix).config,
                    name=f"gateway-probe-{settings.instance_id}",
                ).start()
                stack.callback(probe.stop)
                state.broker_probe = probe

            index = traces
            if index is None:
                index = TraceIndex(settings, capacity=trace_capacity)
                stack.push_async_callback(index.stop)
                await index.start()
            state.trace_index = index
            SYNC_IN_FLIGHT.set_function(lambda: kafka.in_flight)
            BUILD_INFO.labels(__version__, "gateway").set(1)

            # governance (app/governance): API keys, validation, shared rate limit, dedup, cache, rollout keys
            channel_guards = guards
            if channel_guards is None:
                channel_guards = ChannelGuards(governor=Governor(settings))
                await channel_guards.start()
                stack.push_async_callback(channel_guards.stop)
            if channel_guards.governor is not None:
                state.governance = channel_guards.governor  # /health reports its store
            state.data_service = DataService(settings, cfg_reader, kafka, index, channel_guards)
            from app.gateway.flows import close_flow_service  # flow instances: started on first use

            stack.push_async_callback(close_flow_service, state)
            state.started_at = time.monotonic()
            settle_heap()
            log.info(
                "gateway %s ready (config offset %s, replies %s)",
                settings.instance_id,
                cfg_reader.applied_offset,
                ",".join(str(p) for p in kafka.partitions),
            )
            yield
            state.data_service = None
            on_shutdown = getattr(state, "on_shutdown", None)  # `quasar gateway`: bounds the stop below
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(
        title="Quasar",
        version=__version__,
        description="Kafka-native declarative services runtime: Orion's data and admin API over Kafka.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served below from local assets (the default page loads them from a CDN)
        redoc_url=None,
        lifespan=lifespan,
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.settings = settings
    app.state.instance_id = settings.instance_id
    app.state.started_at = time.monotonic()
    app.state.data_service = None
    install_error_handlers(app)
    from app.governance.auth import AdminAuth, StoredKeys  # admin API authentication ([admin_auth]), roles

    def config_state() -> Any:
        return getattr(getattr(app.state, "config_reader", None), "state", None)

    app.state.admin_auth = AdminAuth.from_settings(settings)
    # Keys created through the API live on the config topic, folded by this gateway's reader.
    app.state.admin_auth.key_lookup = StoredKeys(config_state)
    # Innermost: the data API's hot path, behind request ids and metrics, in front of FastAPI's router.
    app.add_middleware(DataFastPath, state=app.state)
    app.add_middleware(
        RequestLimitsMiddleware,
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    if settings.rate_limit_enabled:
        app.add_middleware(PlatformRateLimit, settings=settings)  # Orion's [rate_limit], before routing
    app.add_middleware(CorsMiddleware, settings=settings, state=app.state)
    app.add_middleware(SecurityHeadersMiddleware, tls=bool(settings.gateway_tls_cert))
    tracing = tracing_for(settings)
    if tracing is not None:  # OpenTelemetry: one span per request, its context carried into Kafka
        app.add_middleware(RequestSpans, tracing=tracing)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(HttpMetricsMiddleware)  # times everything, errors included
    if settings.trusted_proxies:
        # Outermost: only a configured proxy may say who the client is (X-Forwarded-For, right to left).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    _serve_swagger_ui(app)
    app.include_router(health.router)
    # The admin API is written separately; include it when its module is part of this build.
    if importlib.util.find_spec("app.gateway.admin") is not None:
        from app.gateway.admin import router as admin_router

        app.include_router(admin_router)
        from app.gateway.admin_releases import router as releases_router

        app.include_router(releases_router)
        from app.gateway.admin_channels import router as channels_ops_router

        app.include_router(channels_ops_router)
        from app.gateway.flows import admin_router as flows_admin_router
        from app.gateway.flows import router as flows_router
        from app.gateway.tasks import router as tasks_router

        app.include_router(flows_router)
        app.include_router(flows_admin_router)
        app.include_router(tasks_router)
    app.include_router(data.router)
    return app


def _serve_swagger_ui(app: FastAPI) -> None:
    """Swagger UI at `/docs` from the `swagger-ui-bundle` package's files: no CDN, so it works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/api/v1/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

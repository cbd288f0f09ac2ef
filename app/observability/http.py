"""HTTP side of observability for the gateway: a pure-ASGI metrics middleware and the `/metrics` endpoint.

Pure ASGI (no `BaseHTTPMiddleware`): it adds one `perf_counter` pair and two cached label lookups per
request. The `path` label is the matched route's template (`/api/v1/data/{channel}`), never the raw
URL, so cardinality stays bounded; unmatched requests count as `path="unmatched"`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

__all__ = ["HttpMetricsMiddleware", "metrics_endpoint", "render_metrics"]

_UNMATCHED = "unmatched"


class HttpMetricsMiddleware:
    """Count and time every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, *, exclude: frozenset[str] = frozenset({"/metrics"})) -> None:
        self.app = app
        self.exclude = exclude
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exclude:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is a 500 to the client

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router wrote the matched route into this same scope dict.
            route = scope.get("route")
            path = getattr(route, "path_format", None) or getattr(route, "path", None) or _UNMATCHED
            key = (scope["method"], path, str(status))
            children = self._children.get(key)
            if children is None:
                if len(self._children) > 10_000:  # defensive: never grow without bound
                    self._children.clear()
                children = (HTTP_REQUESTS.labels(*key), HTTP_REQUEST_DURATION.labels(*key))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


def render_metrics(registry: Any = REGISTRY) -> bytes:
    """The Prometheus text exposition of `registry`."""
    return generate_latest(registry)


async def metrics_endpoint(_request: Request) -> Response:
    """`GET /metrics` (Prometheus text format)."""
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)

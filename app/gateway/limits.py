"""Request-head limits of the gateway: URL length (414) and total header size (431), standard error shape.

uvicorn's httptools parser bounds neither, so a 2 MB header or a 100 kB URL used to reach the routes, and
the data API copied the headers into the Kafka record (`metadata.headers`). Pure ASGI (no per-request
task); the check is a sum over the header list, negligible next to routing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.gateway.errors import error_body, json_response
from app.observability.metrics import ERRORS

__all__ = ["RequestLimitsMiddleware"]


class RequestLimitsMiddleware:
    """Answer 414 when path + query exceed `max_url_bytes`, 431 when the headers exceed `max_header_bytes`."""

    def __init__(self, app: ASGIApp, *, max_url_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_url = max_url_bytes
        self.max_headers = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url > self.max_url:
            code, status = "URI_TOO_LONG", 414
            message = f"Request URL of {url} bytes exceeds the limit of {self.max_url} bytes"
        else:
            size = 0
            for name, value in scope["headers"]:
                size += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if size <= self.max_headers:
                await self.app(scope, receive, send)
                return
            code, status = "REQUEST_HEADER_FIELDS_TOO_LARGE", 431
            message = f"Request headers of {size} bytes exceed the limit of {self.max_headers} bytes"
        ERRORS.labels(code).inc()
        # The body (if any) is never read; the server closes or drains the connection after the answer.
        await json_response(error_body(code, message), status, {"connection": "close"})(scope, receive, send)

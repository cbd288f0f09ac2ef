"""One OpenTelemetry span per HTTP request (installed only when `QUASAR_TRACING_ENABLED`).

The span continues the caller's `traceparent` (W3C) or starts a trace; its own context is left in
`scope["state"]["traceparent"]`, which the data API writes into the Kafka record, so the worker's span and
every `http_call` it makes join the same trace.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.tracing import Tracing

__all__ = ["RequestSpans"]

_TRACEPARENT = b"traceparent"


class RequestSpans:
    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == _TRACEPARENT), None)
        name = f"{scope['method']} {scope['path']}"
        with self.tracing.span(name, incoming, "server", **{"http.request.method": scope["method"]}) as span:
            scope.setdefault("state", {})["traceparent"] = self.tracing.traceparent_of(span)

            async def send_with_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_with_status)

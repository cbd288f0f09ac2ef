"""How the gateway is served: uvicorn with request-head limits enforced at the protocol layer.

uvicorn's httptools protocol bounds neither the size of a request head nor the time it may take to
arrive: a 60 MB header was buffered whole (and `/healthz` waited 25 s behind it) before the app's 431
check ran, and a connection that sent half a header line was held forever (500 of them still open after
70 s). `GuardedHttpProtocol` counts the bytes of each request head as they arrive and answers 431 and
closes once they exceed the limit, gives every head `header_read_timeout_ms` and every body
`body_read_timeout_ms` (408 and close), and caps the connections one client address may hold at once.
Idle kept-alive connections stay open `keep_alive_timeout_ms`, longer than clients keep theirs.

`server_config` is the one place the uvicorn settings are made (`quasar gateway` and the test gateways).
Forwarded headers are not trusted by uvicorn: `create_app` installs uvicorn's `ProxyHeadersMiddleware`
for the configured `trusted_proxies` only.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.observability.metrics import ERRORS
from app.settings import Settings

__all__ = ["GuardedHttpProtocol", "guarded_protocol", "server_config"]

# A request head carries the request line and the headers; the app checks each precisely (414/431);
# this bound only has to stop the unbounded buffering, so it allows both limits plus framing.
_HEAD_SLACK = 1024


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = b'{"error":{"code":"' + code.encode() + b'","message":"' + message.encode() + b'"}}'
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_HEAD_TOO_LARGE = _answer(
    431,
    "Request Header Fields Too Large",
    "REQUEST_HEADER_FIELDS_TOO_LARGE",
    "Request head too large: over the limit of the request line plus headers (QUASAR_MAX_HEADER_BYTES)",
)
_HEAD_TIMEOUT = _answer(408, "Request Timeout", "REQUEST_TIMEOUT", "Request head not received in time")
_BODY_TIMEOUT = _answer(408, "Request Timeout", "REQUEST_TIMEOUT", "Request body not received in time")


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size, head/body read timeouts and a per-client cap.

    Subclassed per settings by `guarded_protocol` (uvicorn instantiates the class itself).
    """

    max_head_bytes: ClassVar[int] = 65_536 + 8192 + _HEAD_SLACK
    head_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    max_per_client: ClassVar[int] = 1000
    per_client: ClassVar[Counter[str]] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for (the rest of) a request head
        self._head_ended = False  # a head ended during the current data_received call
        self._head_bytes = 0
        self._read_timer: asyncio.TimerHandle | None = None
        self._peer: str | None = None

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        if peer is not None:
            if self.per_client[peer] >= self.max_per_client:
                ERRORS.labels("TOO_MANY_CONNECTIONS").inc()
                transport.abort()  # refuse before reading a byte: the client holds enough already
                return
            self.per_client[peer] += 1
            self._peer = peer
        self._arm(self.head_timeout_s, _HEAD_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            self.per_client[self._peer] -= 1
            if self.per_client[self._peer] <= 0:
                del self.per_client[self._peer]
            self._peer = None
        super().connection_lost(exc)

    # -- reading ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head
        if in_head and self._read_timer is None:
            self._arm(self.head_timeout_s, _HEAD_TIMEOUT)  # the next request on a kept-alive connection
        self._head_ended = False
        super().data_received(data)
        # A head that ended in this chunk (its body and even the whole request may have come with it) is
        # not "still inside a head": counting the chunk would charge the body to the head limit (431).
        if in_head and self._in_head and not self._head_ended and not self.transport.is_closing():
            # Still inside a head after this chunk: count it (at most one chunk beyond the limit is parsed).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                ERRORS.labels("REQUEST_HEADER_FIELDS_TOO_LARGE").inc()
                self._refuse(_HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._head_ended = True
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self._arm(self.body_timeout_s, _BODY_TIMEOUT)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    # -- timers -------------------------------------------------------------------------------------

    def _arm(self, seconds: float, answer: bytes) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._expired, answer)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _expired(self, answer: bytes) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            return  # the app is answering (its own body timeout says 408); let it finish
        ERRORS.labels("REQUEST_TIMEOUT").inc()
        self._refuse(answer)

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app, if running, sees http.disconnect
            self.cycle.message_event.set()
        self.transport.write(answer)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """A `GuardedHttpProtocol` class bound to `settings` (its own per-client counter)."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "max_head_bytes": settings.max_header_bytes + settings.max_url_bytes + _HEAD_SLACK,
            "head_timeout_s": settings.header_read_timeout_ms / 1000,
            "body_timeout_s": settings.body_read_timeout_ms / 1000,
            "max_per_client": settings.max_connections_per_client,
            "per_client": Counter(),
        },
    )


def server_config(app: Any, settings: Settings, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The gateway's uvicorn config: guarded protocol, no implicit proxy trust, quiet access log."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": guarded_protocol(settings),
        "proxy_headers": False,  # trusted proxies are the app's business (settings.trusted_proxies)
        "access_log": False,  # one line per request costs more than the request on the hot path
        "log_config": None,  # keep the logging set up by app.observability.logs
        "lifespan": "on",
        # Orion's [server.tls] and shutdown_drain_secs: HTTPS when a certificate is set; in-flight
        # requests get this long to finish after SIGTERM/SIGINT.
        "ssl_certfile": settings.gateway_tls_cert,
        "ssl_keyfile": settings.gateway_tls_key,
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_drain_secs),
        # uvicorn's 5 s equals httpx's pool expiry: under load a client reused connections the server
        # was closing that instant (requests failed with a reset). The client must be the one to close.
        "timeout_keep_alive": settings.keep_alive_timeout_ms / 1000,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)

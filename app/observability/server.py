"""The worker's operational HTTP port: `/metrics`, `/health`, `/healthz`, `/readyz`.

A stdlib threading HTTP server (the worker has no web framework): scrapes and probes are served on
their own threads and never touch the event loop; health callbacks must therefore only read state.

The port is unauthenticated, so it is bounded: it binds loopback unless told otherwise
(`worker_metrics_host`), a connection that sends nothing for `IDLE_TIMEOUT_S` is closed, and at most
`MAX_HANDLER_THREADS` connections are served at once (more are closed at once instead of each holding a
thread: 300 idle connections used to hold 300 threads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.observability.health import HEALTHY

__all__ = ["IDLE_TIMEOUT_S", "MAX_HANDLER_THREADS", "HealthFn", "OpsServer", "start_ops_server"]

IDLE_TIMEOUT_S = 5.0
MAX_HANDLER_THREADS = 16

# Returns the component map: {"broker": "ok", "config": "not_ready", ...}; all "ok" = healthy.
HealthFn = Callable[[], dict[str, str]]
# Components that decide readiness (a Redis outage degrades health but governance fails open/closed).
# `flows` is not ready while the worker's flow runner joins its group or reads its state back, so a
# rolling restart waits for it; `not_configured` (no runner here) is ready.
_READY_KEYS = ("broker", "config", "engine", "flows")


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server serving at most `max_threads` connections at once; extra ones are closed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_threads: int) -> None:
        self._slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refuse rather than queue a thread per connection
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class OpsServer:
    """A running ops server; `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(
    health: HealthFn | None, info: Callable[[], dict[str, Any]] | None, idle_timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = idle_timeout  # socket timeout: a silent or slow client is dropped, its thread freed

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path in ("/health", "/readyz"):
                try:
                    parts = health() if health is not None else {}
                except Exception as exc:  # a broken check is itself a degraded component
                    parts = {"health_check": f"failed ({type(exc).__name__}: {exc})"}
                if path == "/health":
                    ok = all(v in HEALTHY for v in parts.values())
                    extra = info() if info else {}
                    body = {"status": "ok" if ok else "degraded", **extra, "components": parts}
                else:
                    ok = all(parts.get(k, "ok") in HEALTHY for k in _READY_KEYS)
                    body = {"status": "ready" if ok else "not_ready", "checks": parts}
                self._json(200 if ok else 503, body)
            else:
                self._json(404, {"error": {"code": "NOT_FOUND", "message": f"no route {path}"}})

        def _json(self, status: int, body: Any) -> None:
            self._send(status, orjson.dumps(body), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: stay quiet
            return

    return Handler


def start_ops_server(
    port: int,
    host: str = "127.0.0.1",
    *,
    health: HealthFn | None = None,
    info: Callable[[], dict[str, Any]] | None = None,
    max_threads: int = MAX_HANDLER_THREADS,
    idle_timeout: float = IDLE_TIMEOUT_S,
) -> OpsServer | None:
    """Serve the ops endpoints on `host:port` in a daemon thread; port 0 (the settings' "off") or
    below returns None."""
    if port <= 0:
        return None
    server = _BoundedServer((host, port), _handler(health, info, idle_timeout), max_threads)
    thread = threading.Thread(target=server.serve_forever, name="quasar-ops-http", daemon=True)
    thread.start()
    return OpsServer(server, thread)

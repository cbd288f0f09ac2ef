"""The worker's operational HTTP port: `/metrics`, `/health`, `/healthz`, `/readyz`.

A stdlib threading HTTP server (the worker has no web framework): scrapes and probes are served on
their own threads and never touch the event loop; health callbacks must therefore only read state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["HealthFn", "OpsServer", "start_ops_server"]

# Returns the component map: {"broker": "ok", "config": "not_ready", ...}; all "ok" = healthy.
HealthFn = Callable[[], dict[str, str]]
# Components that decide readiness (a Redis outage degrades health but governance fails open/closed).
_READY_KEYS = ("broker", "config", "engine")


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


def _handler(health: HealthFn | None, info: Callable[[], dict[str, Any]] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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
                    ok = all(v == "ok" for v in parts.values())
                    extra = info() if info else {}
                    body = {"status": "ok" if ok else "degraded", **extra, "components": parts}
                else:
                    ok = all(parts.get(k, "ok") == "ok" for k in _READY_KEYS)
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
    host: str = "0.0.0.0",
    *,
    health: HealthFn | None = None,
    info: Callable[[], dict[str, Any]] | None = None,
) -> OpsServer | None:
    """Serve the ops endpoints on `host:port` in a daemon thread; port 0 (the settings' "off") or
    below returns None."""
    if port <= 0:
        return None
    server = ThreadingHTTPServer((host, port), _handler(health, info))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="quasar-ops-http", daemon=True)
    thread.start()
    return OpsServer(server, thread)

"""Real local servers for connector tests: an aiohttp HTTP app, a TCP accept counter, and routing
network backends that keep every test connection on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpcore
import orjson
from aiohttp import web

__all__ = ["AcceptCounter", "HttpTestServer", "LoopbackOnlyBackend"]


class HttpTestServer:
    """aiohttp app on 127.0.0.1 (free port). `hits[path]` counts requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.healthy = True
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HttpTestServer:
        app = web.Application()
        app.router.add_route("*", "/echo{tail:.*}", self._echo)
        app.router.add_get("/flaky/{id}", self._flaky)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/health-toggle", self._toggle)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/big", self._big)
        app.router.add_get("/text", self._text)
        app.router.add_get("/empty", self._empty)
        app.router.add_get("/redirect", self._redirect)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _count(self, request: web.Request) -> None:
        self.hits[request.path] += 1

    async def _echo(self, request: web.Request) -> web.Response:
        self._count(request)
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        seen = {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body": body,
        }
        self.requests.append(seen)
        return web.json_response(seen)

    async def _flaky(self, request: web.Request) -> web.Response:
        self._count(request)
        fails = int(request.query.get("fail", "0"))
        if self.hits[request.path] <= fails:
            return web.json_response({"error": "down"}, status=int(request.query.get("status", "503")))
        return web.json_response({"attempt": self.hits[request.path]})

    async def _status(self, request: web.Request) -> web.Response:
        self._count(request)
        code = int(request.match_info["code"])
        return web.json_response({"status": code}, status=code)

    async def _toggle(self, request: web.Request) -> web.Response:
        self._count(request)
        if not self.healthy:
            return web.json_response({"error": "down"}, status=500)
        return web.json_response({"ok": True})

    async def _slow(self, request: web.Request) -> web.Response:
        self._count(request)
        await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)  # the server being slow is the point
        return web.json_response({"slow": True})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        n = int(request.query.get("n", "1000"))
        payload = orjson.dumps({"blob": "x" * n})
        if request.query.get("chunked") == "1":
            resp = web.StreamResponse()
            resp.content_type = "application/json"
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(0, len(payload), 256):
                await resp.write(payload[i : i + 256])
            await resp.write_eof()
            return resp
        return web.Response(body=payload, content_type="application/json")

    async def _text(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.Response(text="<html>not json</html>", content_type="text/html")

    async def _empty(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.Response(status=204)

    async def _redirect(self, request: web.Request) -> web.Response:
        self._count(request)
        raise web.HTTPFound(request.query["to"])


class AcceptCounter:
    """A TCP listener on 127.0.0.1 that counts accepted connections (and closes them)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> AcceptCounter:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.changed.set()
        writer.close()

    async def wait_for(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounded test wait
        """Wait (bounded) until `n` connections were accepted."""
        async with asyncio.timeout(timeout):
            while self.accepted < n:
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class LoopbackOnlyBackend(httpcore.AsyncNetworkBackend):
    """The network layer under the SSRF guard in tests: records every connect it is asked for.

    `routes` maps a (fake, public) address to a local `(host, port)`, so a "public" host reaches a
    loopback test server. Any other address fails the test: traffic can never leave the machine.
    """

    def __init__(self, routes: dict[str, tuple[str, int]] | None = None, allow_loopback: bool = False) -> None:
        self.routes = routes or {}
        self.allow_loopback = allow_loopback
        self.calls: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.calls.append((host, port))
        if host in self.routes:
            target_host, target_port = self.routes[host]
            return await self._real.connect_tcp(target_host, target_port, timeout=timeout)
        if self.allow_loopback and host in ("127.0.0.1", "::1", "localhost"):
            return await self._real.connect_tcp(host, port, timeout=timeout)
        raise AssertionError(f"test network backend asked to connect to {host}:{port}")

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)

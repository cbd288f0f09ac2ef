"""Issue 14 item 4: request-head size, head/body read timeouts and the per-client connection cap are
enforced by the gateway's HTTP protocol (`app.gateway.server`), before any byte reaches the app.

The server is the gateway's real uvicorn config (`server_config`) around a small app with the gateway's
own request-limit middleware; raw sockets play the hostile clients. No broker needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.gateway.limits import RequestLimitsMiddleware
from app.gateway.server import server_config
from app.kafka.broker import free_port
from app.settings import Settings


async def _healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


def _app(settings: Settings) -> Starlette:
    app = Starlette(routes=[Route("/healthz", _healthz), Route("/echo", _echo, methods=["POST"])])
    app.add_middleware(
        RequestLimitsMiddleware, max_url_bytes=settings.max_url_bytes, max_header_bytes=settings.max_header_bytes
    )
    return app


@contextlib.asynccontextmanager
async def serving(**overrides: object) -> AsyncIterator[int]:
    import uvicorn

    settings = Settings(**overrides)  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(
        server_config(_app(settings), settings, host="127.0.0.1", port=port, log_level="warning", loop="none")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "server exited during startup"
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _read_all(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything the server sends until it closes (bounded: a server that never closes fails the test)."""
    return await asyncio.wait_for(reader.read(), within)


async def test_an_endless_header_is_refused_with_431_once_it_passes_the_limit() -> None:
    async with serving(max_header_bytes=16_384, max_url_bytes=1024) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent, refused = 0, False
        # The head never ends: the old server buffered it all, never answered and never closed.
        try:
            while sent < 8_000_000 and not reader.at_eof():
                writer.write(b"a" * 65_536)
                await writer.drain()
                sent += 65_536
        except ConnectionError:
            refused = True  # the server closed while we were still sending (TCP reset)
        try:
            answer = await _read_all(reader)
        except ConnectionError:
            answer, refused = b"", True
        writer.close()
        # Either the 431 arrived, or the reset beat it; in both cases long before the 8 MB were sent.
        assert refused or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert sent < 8_000_000
        if answer:
            assert b"REQUEST_HEADER_FIELDS_TOO_LARGE" in answer


async def test_a_half_sent_head_is_answered_408_and_closed() -> None:
    async with serving(header_read_timeout_ms=300) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: a")  # ... and nothing more
        await writer.drain()
        answer = await _read_all(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


async def test_a_silent_connection_is_closed_after_the_head_timeout() -> None:
    async with serving(header_read_timeout_ms=300) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_trickling_body_is_answered_408() -> None:
    async with serving(body_read_timeout_ms=300) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        await writer.drain()
        answer = await _read_all(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


async def test_one_client_cannot_hold_more_than_its_connection_cap() -> None:
    async with serving(max_connections_per_client=5, header_read_timeout_ms=60_000) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        # The sixth is closed at once, without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionError):
            assert await _read_all(reader) == b""
        writer.close()
        # Releasing one lets the client in again; normal requests are untouched.
        held.pop()[1].close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def served() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/healthz")).status_code == 200
                return False

            for _ in range(200):
                if await served():
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("a freed slot was not reusable")
        for _, w in held:
            w.close()


async def test_keep_alive_requests_and_bodies_within_limits_are_served() -> None:
    async with (
        serving(header_read_timeout_ms=2000) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        for _ in range(3):  # one kept-alive connection, head timer re-armed per request
            assert (await http.get("/healthz", headers={"x-pad": "a" * 30_000})).status_code == 200
        r = await http.post("/echo", content=b"x" * 500_000)
        assert r.status_code == 200 and r.json() == {"size": 500_000}


async def test_idle_kept_alive_connections_close_only_after_client_pools_let_go() -> None:
    # The server closes an idle kept-alive connection after keep_alive_timeout_ms (short here) ...
    async with serving(keep_alive_timeout_ms=300) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        # The answer, then EOF once the idle connection is closed (uvicorn's own 5 s would miss this bound).
        answer = await _read_all(reader, within=3.0)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}'), answer
    # ... and by default only well after a client's pool dropped it (httpx: 5 s), never while the client
    # may be reusing it (uvicorn's own 5 s made requests on a loaded box fail with a reset).
    default = server_config(_app(Settings()), Settings(), host="127.0.0.1", port=1)
    assert default.timeout_keep_alive > 10 * (httpx.Limits().keepalive_expiry or 0)


def test_server_config_does_not_trust_forwarded_headers() -> None:
    config = server_config(_app(Settings()), Settings(), host="127.0.0.1", port=1)
    assert config.proxy_headers is False

"""Hostile HTTP clients against the gateway's server, before/after the protocol-layer limits (issue 14 item 4).

`python -m bench.hostile_clients` runs two scenarios on loopback against two servers, each in its own
process with the gateway's request-limit middleware and a `/healthz` route:

- `before`: uvicorn as `quasar gateway` configured it until issue 14 (httptools, no head limits);
- `after`: `app.gateway.server.server_config` (head size cap, head/body read timeouts, per-client cap).

Scenarios (bounded: each ends after its own deadline):
- `big_header`: one client streams a 60 MB header while another times `GET /healthz` every 50 ms;
  reports the slowest probe and whether the attacker got an answer.
- `slow_heads`: 500 connections each send half a request head and hold it (one more byte per second);
  reports how many the server still holds after `hold_s` seconds.

Prints one JSON line per (server, scenario) and a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any

import httpx

from app.kafka.broker import free_port

_SERVER = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from app.gateway.limits import RequestLimitsMiddleware
from app.settings import Settings

async def healthz(request):
    return JSONResponse({"status": "ok"})

settings = Settings()
app = Starlette(routes=[Route("/healthz", healthz)])
app.add_middleware(RequestLimitsMiddleware, max_url_bytes=settings.max_url_bytes,
                   max_header_bytes=settings.max_header_bytes)
port = int(sys.argv[2])
if sys.argv[1] == "before":
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                            loop="uvloop", http="httptools")
else:
    from app.gateway.server import server_config
    config = server_config(app, settings, host="127.0.0.1", port=port, log_level="error", loop="uvloop")
uvicorn.Server(config).run()
"""


def _start(mode: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, mode, str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{mode} server did not start")


async def _probe(port: int, stop: asyncio.Event) -> list[float]:
    """`GET /healthz` latencies (a fresh connection each time, as a health checker does)."""
    out: list[float] = []
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                await http.get(f"http://127.0.0.1:{port}/healthz")
        except httpx.HTTPError:
            pass
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    return out


async def big_header(port: int, size_mb: int = 60, deadline_s: float = 60.0) -> dict[str, Any]:
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(port, stop))
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent, answer = 0, b""
    chunk = b"a" * 1_048_576
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
        async with asyncio.timeout(deadline_s):
            while sent < size_mb * 1_048_576 and not reader.at_eof():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            if sent >= size_mb * 1_048_576:
                writer.write(b"\r\n\r\n")
                await writer.drain()
            answer = await reader.read(200)
    except (ConnectionError, TimeoutError):
        pass
    attack_s = time.perf_counter() - t0
    writer.close()
    await asyncio.sleep(0.3)
    stop.set()
    latencies = await probe
    return {
        "header_mb_sent": round(sent / 1_048_576, 1),
        "attack_answered": answer.split(b"\r\n", 1)[0].decode(errors="replace") or "connection closed",
        "attack_s": round(attack_s, 2),
        "healthz_max_ms": round(max(latencies) * 1000, 1),
        "healthz_probes": len(latencies),
    }


async def slow_heads(port: int, connections: int = 500, hold_s: float = 15.0) -> dict[str, Any]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(connections):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            break
    for _, w in conns:
        w.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < hold_s:
        await asyncio.sleep(1.0)
        for _, w in conns:  # slowloris: a byte a second keeps a naive server waiting
            if not w.is_closing():
                with contextlib.suppress(ConnectionError):
                    w.write(b"a")
    # A connection still held by the server has not seen EOF.
    open_count = 0
    for r, _ in conns:
        try:
            data = await asyncio.wait_for(r.read(1024), 0.01)
            open_count += 0 if (data == b"" or r.at_eof() or data.startswith(b"HTTP/1.1 408")) else 1
        except TimeoutError:
            open_count += 1
        except ConnectionError:
            pass
    healthz_t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as http:
        status = (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code
    healthz_ms = (time.perf_counter() - healthz_t0) * 1000
    for _, w in conns:
        w.close()
    return {
        "opened": len(conns),
        "hold_s": hold_s,
        "still_open": open_count,
        "healthz_status_after": status,
        "healthz_ms_after": round(healthz_ms, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--header-mb", type=int, default=60)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--hold-s", type=float, default=15.0)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for mode in ("before", "after"):
        proc, port = _start(mode)
        try:
            results[mode] = {
                "big_header": asyncio.run(big_header(port, args.header_mb)),
                "slow_heads": asyncio.run(slow_heads(port, args.connections, args.hold_s)),
            }
        finally:
            proc.kill()
            proc.wait()
        print(json.dumps({mode: results[mode]}))
    return results


if __name__ == "__main__":
    main()

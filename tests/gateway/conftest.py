"""End-to-end fixtures: real broker, real worker (`ChannelWorker`), real gateways on loopback ports.

Everything runs in the session's event loop: uvicorn serves `create_app(...)` as a task, the worker is
started in-process. Each module gets its own topic prefix, so modules never see each other's config.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.gateway.app import create_app
from app.gateway.server import server_config
from app.kafka.admin import create_admin
from app.kafka.broker import free_port
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings

__all__ = ["Gateway", "eventually", "start_gateway"]


@dataclass
class Gateway:
    """A running gateway: its app, base URL and an HTTP client bound to it."""

    app: FastAPI
    url: str
    http: httpx.AsyncClient
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        await self.http.aclose()
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)


async def start_gateway(settings: Settings, **kwargs: Any) -> Gateway:
    """Serve `create_app(settings, **kwargs)` on a free loopback port; returns once it serves (= ready)."""
    app = create_app(settings, **kwargs)
    port = free_port()
    config = server_config(app, settings, host="127.0.0.1", port=port, log_level="warning", loop="none")
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only in the main thread's serve(); harmless here.
    task = asyncio.create_task(server.serve(), name=f"gateway-{settings.instance_id}")
    deadline = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
            raise RuntimeError("gateway exited during startup")
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not start within 60 s")
        # uvicorn exposes no startup event; `started` flips once the socket listens.
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    http = httpx.AsyncClient(base_url=url, timeout=30)
    return Gateway(app, url, http, server, task)


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 15.0) -> Any:
    """Re-run `check` until it returns a truthy value (asynchronous results: traces); bounded."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        # Polling an HTTP API, as a client of async requests does.
        await asyncio.sleep(0.05)


def apply_quasar_topics(settings: Settings) -> None:
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))


@pytest.fixture(scope="module")
def e2e_settings(kafka_bootstrap: str) -> Settings:
    """A module-wide topic prefix with Quasar's topics created; small payload limit to test 413."""
    settings = make_test_settings(
        kafka_bootstrap, instance_id="gw-a", max_payload_size=64 * 1024, processing_timeout_ms=10_000
    )
    apply_quasar_topics(settings)
    return settings


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, instance_id: str) -> AsyncIterator[Any]:
    """A started `ChannelWorker` (in this event loop) named `instance_id`; stopped on exit."""
    from app.worker.runner import ChannelWorker

    w = ChannelWorker(settings.model_copy(update={"instance_id": instance_id}))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture(scope="module")
async def worker(e2e_settings: Settings) -> AsyncIterator[Any]:
    async with running_worker(e2e_settings, "worker-1") as w:
        yield w


def http_channel(name: str, workflow_id: str, config: dict[str, Any], channel_type: str = "sync") -> dict[str, Any]:
    """A POST channel document running `workflow_id` with `config` (governance tests)."""
    return {"channel_id": name, "name": name, "channel_type": channel_type, "protocol": "http",
            "methods": ["POST"], "workflow_id": workflow_id, "config": config}  # fmt: skip


@pytest.fixture(scope="module")
async def gateway(e2e_settings: Settings, worker: Any) -> AsyncIterator[Gateway]:
    gw = await start_gateway(e2e_settings)
    yield gw
    await gw.stop()


@pytest.fixture(scope="module")
async def gateway_b(e2e_settings: Settings, gateway: Gateway) -> AsyncIterator[Gateway]:
    """A second gateway instance on the same cluster and config (its own reply partition)."""
    gw = await start_gateway(e2e_settings.model_copy(update={"instance_id": "gw-b"}))
    yield gw
    await gw.stop()


class Admin:
    """Create and activate documents through the gateway's admin API (as users do)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _ok(self, response: Awaitable[httpx.Response]) -> dict[str, Any]:
        r = await response
        assert r.status_code < 300, r.text
        return r.json() if r.content else {}

    async def workflow(self, doc: dict[str, Any]) -> None:
        await self._ok(self.http.post("/api/v1/admin/workflows", json=doc))
        await self._ok(
            self.http.patch(f"/api/v1/admin/workflows/{doc['workflow_id']}/status", json={"status": "active"})
        )

    async def channel(self, doc: dict[str, Any]) -> None:
        await self._ok(self.http.post("/api/v1/admin/channels", json=doc))
        await self._ok(self.http.patch(f"/api/v1/admin/channels/{doc['channel_id']}/status", json={"status": "active"}))


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Admin:
    return Admin(gateway.http)


def map_task(task_id: str, *mappings: tuple[str, Any]) -> dict[str, Any]:
    return {
        "id": task_id,
        "name": task_id,
        "function": {
            "name": "map",
            "input": {"mappings": [{"path": path, "logic": logic} for path, logic in mappings]},
        },
    }


def parse_task(target: str = "req") -> dict[str, Any]:
    return {
        "id": "parse",
        "name": "parse",
        "function": {"name": "parse_json", "input": {"source": "payload", "target": target}},
    }


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, **kwargs: Any) -> AsyncIterator[Gateway]:
    gw = await start_gateway(settings, **kwargs)
    try:
        yield gw
    finally:
        await gw.stop()

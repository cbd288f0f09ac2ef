"""Governance test helpers: channel views and request contexts built from real config documents,
and a private redis-server (on a free port) that a test may stop to simulate an outage."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app.channels import compile_channel
from app.config_store.snapshot import ChannelView
from app.gateway.data import DataContext
from app.gateway.routing import Resolution
from app.kafka.broker import free_port

__all__ = ["PrivateRedis", "make_ctx", "make_view"]


def make_view(name: str, config: dict[str, Any], version: int = 1) -> ChannelView:
    """A channel view as the config snapshot builds it: the channel compiled from a real document."""
    doc = {"name": name, "channel_type": "sync", "protocol": "http", "config": config}
    return ChannelView(id=name, version=version, channel=compile_channel(name, doc), workflows=())


def make_ctx(
    view: ChannelView,
    data: Any = None,
    headers: dict[str, str] | None = None,
    *,
    client_ip: str = "10.0.0.1",
    is_async: bool = False,
    params: dict[str, str] | None = None,
) -> DataContext:
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    meta: dict[str, Any] = {"http_method": "POST", "headers": hdrs}
    if params:
        meta["params"] = params
    res = Resolution(view.name, dict(params or {}), is_async)
    return DataContext(view, res, {} if data is None else data, meta, hdrs, client_ip, "rid", "tid")


class PrivateRedis:
    """A redis-server of our own on a free loopback port: safe to kill (never the shared one)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="quasar-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private redis-server on {self.port} did not start")
                # Another process is starting up: no event to wait on, so re-probe.
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)

"""cache_read / cache_write against real Redis and the in-memory backend."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from app.connectors import ConnectorServices, connector_registry
from app.connectors.cache import MemoryCache
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.engine.models import CacheConnectorConfig

REGISTRY = connector_registry()


@pytest.fixture(params=["redis", "memory"])
async def svc(request: pytest.FixtureRequest) -> Any:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        cfg = {"backend": "redis", "url": "env://CACHE_URL", "default_ttl_secs": 300}
    else:
        url = ""
        cfg = {"backend": "memory", "default_ttl_secs": 300}
    services = ConnectorServices(
        {"c": {"name": "sessions", "connector_type": "cache", "config": cfg}}, env={"CACHE_URL": url}
    )
    yield services
    await services.aclose()


def wf(*fns: dict[str, Any]) -> Any:
    return compile_workflow(
        {
            "workflow_id": "w",
            "name": "w",
            "tasks": [{"id": f"t{i}", "name": f"t{i}", "function": f} for i, f in enumerate(fns)],
        },
        REGISTRY,
    )


async def run(workflow: Any, svc: ConnectorServices, data: Any) -> Message:
    return await Engine({"ch": [workflow]}).process("ch", Message.from_request(data), RunOptions(services=svc))


PARSE = {"name": "parse_json", "input": {"source": "payload", "target": "in"}}


async def test_write_then_read_json_and_string_values(svc: ConnectorServices) -> None:
    write_obj = {
        "name": "cache_write",
        "input": {
            "connector": "sessions",
            "key": {"cat": ["session:", {"var": "data.in.user"}]},
            "value": {"var": "data.in.session"},
        },
    }
    write_str = {
        "name": "cache_write",
        "input": {"connector": "sessions", "key": "greeting", "value": "hello"},
    }
    read_obj = {
        "name": "cache_read",
        "input": {
            "connector": "sessions",
            "key": {"cat": ["session:", {"var": "data.in.user"}]},
            "output": "data.session",
        },
    }
    read_str = {
        "name": "cache_read",
        "input": {"connector": "sessions", "key": "greeting", "output": "data.greet"},
    }
    read_miss = {
        "name": "cache_read",
        "input": {"connector": "sessions", "key": "absent", "output": "data.miss"},
    }
    out = await run(
        wf(PARSE, write_obj, write_str, read_obj, read_str, read_miss),
        svc,
        {"user": "u1", "session": {"cart": [1, 2], "ok": True}},
    )
    assert out.data["session"] == {"cart": [1, 2], "ok": True}
    assert out.data["greet"] == "hello"
    assert "miss" in out.data and out.data["miss"] is None


async def test_default_output_replaces_data(svc: ConnectorServices) -> None:
    cache = await svc.cache("sessions")
    await cache.set("k", '{"a": 1}')
    out = await run(wf({"name": "cache_read", "input": {"connector": "sessions", "key": "k"}}), svc, {})
    assert out.data == {"a": 1}


async def test_ttl_is_applied_on_redis(redis_url: str) -> None:
    svc = ConnectorServices(
        {
            "c": {
                "name": "r",
                "connector_type": "cache",
                "config": {"backend": "redis", "url": redis_url, "default_ttl_secs": 300},
            }
        }
    )
    await run(
        wf(
            {"name": "cache_write", "input": {"connector": "r", "key": "a", "value": 1, "ttl_secs": 40}},
            {"name": "cache_write", "input": {"connector": "r", "key": "b", "value": 2}},
        ),
        svc,
        {},
    )
    client = aioredis.Redis.from_url(redis_url)
    assert 30 < await client.ttl("a") <= 40
    assert 290 < await client.ttl("b") <= 300  # the connector's default TTL
    assert await client.get("a") == b"1"
    await client.aclose()
    await svc.aclose()


async def test_memory_cache_expires_entries() -> None:
    now = [100.0]
    cache = MemoryCache("m", CacheConnectorConfig(backend="memory"), clock=lambda: now[0])
    await cache.set("k", "v", ttl_secs=10)
    await cache.set("forever", "v")
    now[0] += 9.9
    assert await cache.get("k") == "v"
    now[0] += 0.1
    assert await cache.get("k") is None
    assert await cache.get("forever") == "v"


async def test_memory_cache_is_bounded() -> None:
    cache = MemoryCache("m", CacheConnectorConfig(backend="memory"), max_entries=2)
    for k in "abc":
        await cache.set(k, k)
    assert [await cache.get(k) for k in "abc"] == [None, "b", "c"]


def test_redis_backend_needs_a_url() -> None:
    with pytest.raises(ValueError, match="needs url"):
        CacheConnectorConfig(backend="redis")


async def test_memory_cache_is_bounded_by_bytes_too() -> None:
    """Issue 14 (Low): bounded by entry count only, 100,000 large values could fill the heap."""
    cache = MemoryCache("m", CacheConnectorConfig(backend="memory"), max_entries=1000, max_bytes=10_000)
    for i in range(20):
        await cache.set(f"k{i}", "x" * 1000)
    assert cache._bytes <= 10_000
    assert await cache.get("k19") == "x" * 1000 and await cache.get("k0") is None
    await cache.set("k19", "y")  # replacing a value accounts for the old one
    assert cache._bytes == sum(len(k) + len(v) for k, (v, _) in cache._data.items())

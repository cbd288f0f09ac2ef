"""Store backends: the same contract on memory and on real Redis; Redis outages fail fast and are flagged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from app.governance.store import (
    MemoryStore,
    RedisStore,
    Store,
    StoreUnavailable,
    open_store,
    retry_after_header,
)
from app.kafka.broker import free_port
from tests.governance.conftest import PrivateRedis


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisStore(url)
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


async def test_bucket_allows_burst_then_rejects_with_retry_after(store: Store) -> None:
    results = [await store.take("b1", 1.0, 3) for _ in range(5)]
    assert [ok for ok, _ in results] == [True, True, True, False, False]
    retry = results[3][1]
    assert 0 < retry <= 1.0  # the next token comes within one emission interval
    assert retry_after_header(retry) == "1"


async def test_bucket_refills_at_rate(store: Store) -> None:
    assert (await store.take("b2", 20.0, 1))[0]
    ok, retry = await store.take("b2", 20.0, 1)
    assert not ok and 0 < retry <= 0.05
    # Waiting for the bucket to refill is the behaviour under test (time, not a broker).
    await asyncio.sleep(retry + 0.01)
    assert (await store.take("b2", 20.0, 1))[0]


async def test_buckets_are_independent_per_key(store: Store) -> None:
    assert (await store.take("k-a", 1.0, 1))[0]
    assert not (await store.take("k-a", 1.0, 1))[0]
    assert (await store.take("k-b", 1.0, 1))[0]


async def test_claim_is_set_nx_and_returns_the_holder(store: Store) -> None:
    assert await store.claim("d1", b"P", 5000) is None
    assert await store.claim("d1", b"other", 5000) == b"P"
    await store.replace("d1", b"R200{}")
    assert await store.claim("d1", b"P", 5000) == b"R200{}"
    # replace never creates a key (a late answer after expiry must not resurrect it)
    await store.replace("missing", b"x")
    assert await store.get("missing") is None


async def test_claim_expires_after_ttl(store: Store) -> None:
    assert await store.claim("d2", b"P", 50) is None
    await asyncio.sleep(0.08)  # the TTL passing is the behaviour under test
    assert await store.claim("d2", b"P", 50) is None


async def test_put_get_delete(store: Store) -> None:
    await store.put("c1", b'{"a":1}', 10_000)
    assert await store.get("c1") == b'{"a":1}'
    await store.delete("c1")
    assert await store.get("c1") is None


def test_memory_bucket_with_a_clock() -> None:
    now = [100.0]
    s = MemoryStore(clock=lambda: now[0])

    async def run() -> list[bool]:
        out = [(await s.take("k", 2.0, 2))[0] for _ in range(3)]
        now[0] += 0.5  # one token back at 2/s
        out.append((await s.take("k", 2.0, 2))[0])
        out.append((await s.take("k", 2.0, 2))[0])
        return out

    assert asyncio.run(run()) == [True, True, False, True, False]


def test_memory_store_is_bounded() -> None:
    s = MemoryStore(max_entries=10)
    asyncio.run(_fill(s, 50))
    assert len(s._data) == 10


async def _fill(s: MemoryStore, n: int) -> None:
    for i in range(n):
        await s.put(f"k{i}", b"v", 60_000)


def test_open_store_picks_the_backend() -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)


async def test_dead_redis_fails_fast_and_is_flagged() -> None:
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2, down_for_s=5)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await s.take("k", 1.0, 1)
        assert time.monotonic() - started < 1.0
        assert s.degraded and s.last_error
        # marked down: later calls do not even try (no per-request connect cost)
        started = time.monotonic()
        for _ in range(100):
            with pytest.raises(StoreUnavailable):
                await s.claim("k", b"P", 1000)
        assert time.monotonic() - started < 0.2
    finally:
        await s.aclose()


async def test_outage_and_recovery_on_a_private_redis(private_redis: PrivateRedis) -> None:
    s = RedisStore(private_redis.url, timeout_s=0.2, down_for_s=0.05, probe_every_s=0.05)
    await s.start()
    try:
        assert (await s.take("k", 100.0, 5))[0] and not s.degraded
        private_redis.stop()
        with pytest.raises(StoreUnavailable):
            await s.take("k", 100.0, 5)
        assert s.degraded
        private_redis.start()
        # the background probe notices the recovery without any request
        deadline = time.monotonic() + 5
        while s.degraded:
            assert time.monotonic() < deadline, "store still degraded after redis came back"
            await asyncio.sleep(0.05)
        # Every call is bounded by the 0.2 s socket timeouts: a hang here is a bug, named, not a 300 s timeout.
        async with _stage("take after recovery"):
            assert (await s.take("k2", 100.0, 5))[0]
    finally:
        async with _stage("aclose"):
            await s.aclose()


@contextlib.asynccontextmanager
async def _stage(name: str, within_s: float = 10.0) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(within_s):
            yield
    except TimeoutError:
        pytest.fail(f"{name} did not return within {within_s}s")


async def test_memory_store_is_bounded_by_bytes_too() -> None:
    """Issue 14 (Low): cached responses of up to 1 MB each, 200,000 entries: bound the bytes as well."""
    store = MemoryStore(max_entries=10_000, max_bytes=20_000)
    for i in range(50):
        await store.put(f"rc:{i}", b"x" * 1000, 60_000)
    assert store._bytes <= 20_000
    assert await store.get("rc:49") == b"x" * 1000 and await store.get("rc:0") is None
    await store.replace("rc:49", b"y")
    await store.delete("rc:48")
    assert store._bytes == sum(len(k) + len(v) for k, (v, _) in store._data.items())

"""Governance state backends: Redis (shared by every instance) and memory (one process, the embedded default).

Three primitives cover rate limiting, deduplication and the response cache:

- `take(key, rate, burst)`: one token-bucket decision (GCRA, one timestamp per key): `(allowed, retry_s)`;
- `claim(key, value, ttl_ms)`: SET NX PX; None when this caller claimed the key, else the stored value;
- `get` / `put` / `replace` (SET XX KEEPTTL) / `delete`.

Redis: the bucket is one Lua script (one round trip, atomic, Redis server time so instances with skewed
clocks share one limit). Timeouts are short and a failed call marks the store down for `down_for_s`, so a
dead Redis costs a request nothing (it fails fast with `StoreUnavailable` until the next probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["MemoryStore", "RedisStore", "Store", "StoreUnavailable", "open_store", "retry_after_header"]

log = logging.getLogger("quasar.governance")


class StoreUnavailable(Exception):
    """The shared store did not answer (connection refused, timeout, marked down)."""


class Store(ABC):
    """Async key/value + token-bucket operations. `degraded` is the health flag."""

    backend: str = "memory"

    @property
    def degraded(self) -> bool:
        return False

    @property
    def last_error(self) -> str | None:
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook, memory needs none
        """Open connections / start the health probe (no-op for memory)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, memory needs none
        """Release connections (no-op for memory)."""

    @abstractmethod
    async def take(self, key: str, rate: float, burst: int) -> tuple[bool, float]: ...

    @abstractmethod
    async def claim(self, key: str, value: bytes, ttl_ms: int) -> bytes | None: ...

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    @abstractmethod
    async def replace(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...


def _gcra(tat: float | None, now: float, rate: float, burst: int) -> tuple[bool, float, float]:
    """One GCRA step (token bucket: `burst` tokens refilled at `rate`/s) -> (allowed, retry_s, new_tat)."""
    emission = 1.0 / rate
    start = now if tat is None or tat < now else tat
    new_tat = start + emission
    allow_at = new_tat - emission * burst
    if now < allow_at:
        return False, allow_at - now, start
    return True, 0.0, new_tat


class MemoryStore(Store):
    """One process's state: bounded LRU with expiry, by entries and by bytes (cached responses can be
    large). Not shared: the embedded/dev default."""

    backend = "memory"

    def __init__(
        self,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._data: OrderedDict[str, tuple[Any, float | None]] = OrderedDict()

    @staticmethod
    def _size(key: str, value: Any) -> int:
        return len(key) + (len(value) if isinstance(value, bytes | bytearray) else 8)

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= self._size(key, item[0])

    def _live(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return value

    def _store(self, key: str, value: Any, ttl_s: float | None) -> None:
        self._drop(key)
        self._data[key] = (value, None if ttl_s is None else self._clock() + ttl_s)
        self._bytes += self._size(key, value)
        while self._data and (len(self._data) > self._max or self._bytes > self._max_bytes):
            self._drop(next(iter(self._data)))

    async def take(self, key: str, rate: float, burst: int) -> tuple[bool, float]:
        now = self._clock()
        tat = self._live(key)
        allowed, retry, new_tat = _gcra(tat, now, rate, burst)
        if allowed:
            self._store(key, new_tat, new_tat - now + 1.0)
        return allowed, retry

    async def claim(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        existing = self._live(key)
        if existing is not None:
            return bytes(existing)
        self._store(key, value, ttl_ms / 1000)
        return None

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        return None if value is None else bytes(value)

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._store(key, value, ttl_ms / 1000)

    async def replace(self, key: str, value: bytes) -> None:
        item = self._data.get(key)
        if item is not None and self._live(key) is not None:
            self._bytes += self._size(key, value) - self._size(key, item[0])
            self._data[key] = (value, item[1])

    async def delete(self, key: str) -> None:
        self._drop(key)


# GCRA in microseconds of Redis server time. KEYS[1] bucket; ARGV: emission_us, burst. Returns
# {1, 0} when allowed, {0, retry_after_us} when not. Numbers are formatted with %.0f because Lua's
# tostring would print 1.7e+15 and lose precision.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if now < allow_at then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""


class RedisStore(Store):
    """Shared state in Redis; every instance pointing at the same Redis shares limits, keys and cache."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.25,
        down_for_s: float = 1.0,
        probe_every_s: float = 2.0,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.down_for_s = down_for_s
        self.probe_every_s = probe_every_s
        self._client: Any = None
        self._take: Any = None
        self._down_until = 0.0
        self._degraded = False
        self._last_error: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def _connect(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # No client-side retries: a failure must surface at once and take the fail_open/closed path.
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._take = self._client.register_script(_TAKE_LUA)
        return self._client

    async def start(self) -> None:
        self._connect()
        with contextlib.suppress(StoreUnavailable):
            await self._call(lambda c: c.ping())
        self._probe = asyncio.create_task(self._probe_loop(), name="quasar-governance-redis-probe")

    async def aclose(self) -> None:
        self._closing = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
            self._probe = None
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _probe_loop(self) -> None:
        # Without traffic nobody would notice Redis going away or coming back: ping on a timer
        # so /health tells the truth either way. The flag ends the loop even when the client turned our
        # cancellation into a timeout (a cancel racing a socket timeout), which aclose would await forever.
        while not self._closing:
            await asyncio.sleep(self.probe_every_s)
            with contextlib.suppress(StoreUnavailable):
                await self._call(lambda c: c.ping(), probe=True)

    async def _call(self, op: Callable[[Any], Any], *, probe: bool = False) -> Any:
        if not probe and time.monotonic() < self._down_until:
            raise StoreUnavailable(f"redis unavailable ({self._last_error})")
        client = self._connect()
        try:
            # socket_(connect_)timeout bound every call (wait_for would cost a task per call).
            result = await op(client)
        except (OSError, TimeoutError) as exc:
            self._mark_down(exc)
            raise StoreUnavailable(f"redis unavailable ({self._last_error})") from exc
        except Exception as exc:
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeoutError

            if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                self._mark_down(exc)
                raise StoreUnavailable(f"redis unavailable ({self._last_error})") from exc
            raise
        if self._degraded:
            log.warning("governance store %s reachable again", self.url)
        self._degraded = False
        self._down_until = 0.0
        return result

    def _mark_down(self, exc: BaseException) -> None:
        if not self._degraded:
            log.error("governance store %s unreachable: %s", self.url, exc)
        self._degraded = True
        self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._down_until = time.monotonic() + self.down_for_s

    async def take(self, key: str, rate: float, burst: int) -> tuple[bool, float]:
        emission_us = 1_000_000.0 / rate
        allowed, retry_us = await self._call(
            lambda c: self._take(keys=[key], args=[repr(emission_us), burst], client=c)
        )
        return bool(allowed), int(retry_us) / 1_000_000

    async def claim(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        # SET NX GET (Redis >= 7): one round trip answers "claimed" or "here is what was there".
        old = await self._call(lambda c: c.set(key, value, px=max(1, ttl_ms), nx=True, get=True))
        return None if old is None else bytes(old)

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda c: c.get(key))
        return None if value is None else bytes(value)

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._call(lambda c: c.set(key, value, px=max(1, ttl_ms)))

    async def replace(self, key: str, value: bytes) -> None:
        await self._call(lambda c: c.set(key, value, xx=True, keepttl=True))

    async def delete(self, key: str) -> None:
        await self._call(lambda c: c.delete(key))


def open_store(redis_url: str | None, **redis_options: Any) -> Store:
    """Redis when a URL is configured, else the in-process store."""
    if redis_url:
        return RedisStore(redis_url, **redis_options)
    return MemoryStore()


def retry_after_header(seconds: float) -> str:
    """An integer Retry-After value (HTTP wants whole seconds), at least 1."""
    return str(max(1, math.ceil(seconds)))

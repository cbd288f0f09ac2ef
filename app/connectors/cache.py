"""Cache connectors: Redis (redis.asyncio, pooled) or in-process memory; both store text with a TTL."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable

from app.connectors.errors import ConnectorError
from app.connectors.retry import with_retries
from app.engine.models import CacheConnectorConfig
from app.errors import Timeout

__all__ = ["CacheConnector", "MemoryCache", "RedisCache", "open_cache"]

_OP_TIMEOUT_S = 10.0


class CacheConnector(ABC):
    """Text values by key. `ttl_secs` None -> the connector's `default_ttl_secs` (None/0 = no expiry)."""

    def __init__(self, name: str, config: CacheConnectorConfig) -> None:
        self.name = name
        self.config = config

    def ttl(self, ttl_secs: int | None) -> int | None:
        ttl = ttl_secs if ttl_secs is not None else self.config.default_ttl_secs
        return ttl or None

    @abstractmethod
    async def get(self, key: str) -> str | None: ...

    @abstractmethod
    async def set(self, key: str, value: str, ttl_secs: int | None = None) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class MemoryCache(CacheConnector):
    """Per-process LRU with expiry (Orion's `memory` backend); bounded by entries and by bytes (keys +
    values) so it cannot eat the heap: 100,000 entries of 1 MB each used to be allowed."""

    def __init__(
        self,
        name: str,
        config: CacheConnectorConfig,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(name, config)
        self._clock = clock
        self._data: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    async def get(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and self._clock() >= expires:
            del self._data[key]
            self._bytes -= len(key) + len(value)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: str, ttl_secs: int | None = None) -> None:
        ttl = self.ttl(ttl_secs)
        old = self._data.get(key)
        if old is not None:
            self._bytes -= len(key) + len(old[0])
        self._data[key] = (value, self._clock() + ttl if ttl else None)
        self._bytes += len(key) + len(value)
        self._data.move_to_end(key)
        while self._data and (len(self._data) > self._max or self._bytes > self._max_bytes):
            gone, (gone_value, _) = self._data.popitem(last=False)
            self._bytes -= len(gone) + len(gone_value)

    async def aclose(self) -> None:
        self._data.clear()
        self._bytes = 0


class RedisCache(CacheConnector):
    def __init__(self, name: str, config: CacheConnectorConfig, url: str) -> None:
        super().__init__(name, config)
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            max_connections=config.max_connections or 50,
            socket_connect_timeout=5,
            socket_timeout=_OP_TIMEOUT_S,
        )

    async def _call(self, what: str, op: object) -> object:
        import redis.exceptions as rex

        async def attempt() -> object:
            try:
                async with asyncio.timeout(_OP_TIMEOUT_S):
                    return await op()  # type: ignore[operator]
            except TimeoutError as exc:
                raise Timeout(f"cache connector '{self.name}': {what} timed out") from exc
            except (rex.ConnectionError, OSError) as exc:
                raise ConnectorError(f"cache connector '{self.name}': {what} failed: {exc}") from exc
            except rex.RedisError as exc:
                err = ConnectorError(f"cache connector '{self.name}': {what} failed: {exc}")
                err.retryable = False
                raise err from exc

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, ConnectorError) and exc.retryable

        return await with_retries(attempt, self.config.retry, retryable)

    async def get(self, key: str) -> str | None:
        value = await self._call("GET", lambda: self._client.get(key))
        return value if isinstance(value, str) else None

    async def set(self, key: str, value: str, ttl_secs: int | None = None) -> None:
        ttl = self.ttl(ttl_secs)
        await self._call("SET", lambda: self._client.set(key, value, ex=ttl))

    async def aclose(self) -> None:
        await self._client.aclose()


def open_cache(name: str, config: CacheConnectorConfig, url: str | None) -> CacheConnector:
    """The connector for `config.backend` (`url` = the resolved Redis URL). No IO here."""
    if config.backend == "memory":
        return MemoryCache(name, config)
    if not url:
        raise ConnectorError(f"cache connector '{name}': a redis backend needs url")
    return RedisCache(name, config, url)

"""`ConnectorServices`: what the worker and the gateway pass as `RunOptions.services`.

It owns everything connector-backed functions reach IO through: connector lookup by name (from
the config snapshot), pooled clients (one per connector config, rebuilt when the config changes),
circuit breakers, the runtime's Kafka producer, and the dry-run switch (`dry_run=True`: functions
record what they would call and perform no IO).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpcore
from pydantic import ValidationError

from app.connectors.breaker import BreakerConfig, BreakerRegistry
from app.connectors.cache import CacheConnector, open_cache
from app.connectors.errors import ConnectorError, ConnectorNotFound
from app.connectors.http import HttpConnector
from app.connectors.mongo import MongoConnector
from app.connectors.sql import SqlConnector, open_sql
from app.connectors.ssrf import Resolver
from app.engine.models import CacheConnectorConfig, ConnectorDoc, DbConnectorConfig, HttpConnectorConfig
from app.errors import QuasarError, Timeout, ValidationFailed
from app.kafka.names import TopicNames
from app.secrets import resolve_secret

__all__ = ["SQL_DRIVERS", "ConnectorServices", "KafkaProducer"]

T = TypeVar("T")
SQL_DRIVERS = ("postgres", "mysql", "sqlite")
_log = logging.getLogger("quasar.connectors")

# Anything with `produce(topic, value, key, *, headers=...)` returning an awaitable (AsyncProducer).
KafkaProducer = Any


class ConnectorServices:
    """Connector runtime for one process. Build once; `set_connectors()` on every config change."""

    def __init__(
        self,
        connectors: Mapping[str, Any] | None = None,
        *,
        producer: KafkaProducer = None,
        breakers: BreakerRegistry | None = None,
        dry_run: bool = False,
        env: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        max_channel_call_depth: int = 10,
        default_channel_call_timeout_ms: int = 30_000,
        topics: TopicNames | None = None,
    ) -> None:
        self.producer = producer
        self.topics = topics if topics is not None else TopicNames()
        self.breakers = breakers if breakers is not None else BreakerRegistry(BreakerConfig())
        self.dry_run = dry_run
        self.tracing: Any = None  # app.observability.tracing.Tracing: http_call spans (QUASAR_TRACING_ENABLED)
        self.env = env
        self.resolver = resolver
        self.network_backend = network_backend
        self.max_channel_call_depth = max_channel_call_depth
        self.default_channel_call_timeout_ms = default_channel_call_timeout_ms
        self._docs: dict[str, ConnectorDoc] = {}
        self._invalid: dict[str, str] = {}
        self._clients: dict[str, tuple[str, Any]] = {}  # name -> (config fingerprint, client)
        self._lock = asyncio.Lock()
        self.set_connectors(connectors or {})

    # -- connector documents --------------------------------------------------------------------

    def set_connectors(self, connectors: Mapping[str, Any]) -> None:
        """Replace the connector view (documents by id or name, dicts or `ConnectorDoc`s).

        Clients of changed connectors are rebuilt on next use; the old ones are closed then.
        """
        docs: dict[str, ConnectorDoc] = {}
        invalid: dict[str, str] = {}
        for key, raw in connectors.items():
            try:
                doc = raw if isinstance(raw, ConnectorDoc) else ConnectorDoc.model_validate(raw)
            except ValidationError as exc:
                name = raw.get("name", key) if isinstance(raw, Mapping) else key
                invalid[str(name)] = str(exc.errors()[0]["msg"]) if exc.errors() else str(exc)
                continue
            docs[doc.name] = doc
        self._docs = docs
        self._invalid = invalid

    @property
    def connectors(self) -> Mapping[str, ConnectorDoc]:
        return dict(self._docs)

    def connector(self, name: str, kind: str | None = None) -> ConnectorDoc:
        """The enabled connector `name` (of type `kind`), else `ConnectorNotFound` with the reason."""
        doc = self._docs.get(name)
        if doc is None:
            if name in self._invalid:
                raise ConnectorNotFound(f"connector '{name}' is invalid: {self._invalid[name]}")
            raise ConnectorNotFound(f"connector '{name}' not found")
        if not doc.enabled:
            raise ConnectorNotFound(f"connector '{name}' is disabled")
        if kind is not None and doc.connector_type != kind:
            # The workflow is wrong, not the system: Orion answers 400 VALIDATION_ERROR.
            raise ValidationFailed(f"connector '{name}' is of type {doc.connector_type}, expected {kind}")
        return doc

    def dry(self) -> ConnectorServices:
        """A recorder twin: same connectors, no IO (for dry-run and the gateway's test endpoint)."""
        twin = ConnectorServices(
            self._docs,
            producer=None,
            breakers=self.breakers,
            dry_run=True,
            env=self.env,
            max_channel_call_depth=self.max_channel_call_depth,
            default_channel_call_timeout_ms=self.default_channel_call_timeout_ms,
            topics=self.topics,
        )
        return twin

    # -- pooled clients -------------------------------------------------------------------------

    async def _client(self, doc: ConnectorDoc, build: Callable[[], Any]) -> Any:
        fingerprint = doc.config.model_dump_json()
        cached = self._clients.get(doc.name)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        async with self._lock:
            cached = self._clients.get(doc.name)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            client = build()
            self._clients[doc.name] = (fingerprint, client)
        if cached is not None:
            await _close_quietly(cached[1])
        return client

    async def http(self, name: str) -> HttpConnector:
        doc = self.connector(name, "http")
        cfg = doc.config
        assert isinstance(cfg, HttpConnectorConfig)
        client: HttpConnector = await self._client(
            doc,
            lambda: HttpConnector(
                name, cfg, env=self.env, resolver=self.resolver, network_backend=self.network_backend
            ),
        )
        return client

    def _db(self, name: str, mongo: bool) -> tuple[ConnectorDoc, DbConnectorConfig]:
        doc = self.connector(name, "db")
        cfg = doc.config
        assert isinstance(cfg, DbConnectorConfig)
        if mongo and cfg.driver != "mongodb":
            raise ConnectorNotFound(f"connector '{name}' uses driver {cfg.driver}, expected mongodb")
        if not mongo and cfg.driver not in SQL_DRIVERS:
            raise ConnectorNotFound(f"connector '{name}' uses driver {cfg.driver}, expected one of {SQL_DRIVERS}")
        return doc, cfg

    async def sql(self, name: str) -> SqlConnector:
        doc, cfg = self._db(name, mongo=False)
        client: SqlConnector = await self._client(
            doc, lambda: open_sql(name, cfg, str(resolve_secret(cfg.connection_string, self.env)))
        )
        return client

    async def mongo(self, name: str) -> MongoConnector:
        doc, cfg = self._db(name, mongo=True)
        client: MongoConnector = await self._client(
            doc, lambda: MongoConnector(name, cfg, str(resolve_secret(cfg.connection_string, self.env)))
        )
        return client

    async def cache(self, name: str) -> CacheConnector:
        doc = self.connector(name, "cache")
        cfg = doc.config
        assert isinstance(cfg, CacheConnectorConfig)
        client: CacheConnector = await self._client(
            doc, lambda: open_cache(name, cfg, resolve_secret(cfg.url, self.env) if cfg.url else None)
        )
        return client

    # -- breakers and kafka ---------------------------------------------------------------------

    async def guarded(self, channel: str, connector: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one logical connector call under the `channel:connector` breaker."""
        if not self.breakers.enabled:
            return await call()
        breaker = self.breakers.get(channel, connector)
        breaker.before_call()
        try:
            result = await call()
        except (ConnectorError, Timeout) as exc:
            if getattr(exc, "counts_for_breaker", True):
                breaker.on_failure()
            else:
                breaker.on_neutral()
            raise
        except QuasarError:
            breaker.on_neutral()
            raise
        except BaseException:
            # Cancelled or a bug: free a half-open probe slot without judging the system.
            breaker.probe_in_flight = False
            raise
        breaker.on_success()
        return result

    def check_publish_topic(self, topic: str) -> None:
        """`ValidationFailed` for a topic a workflow may not publish to (Quasar's or the broker's own)."""
        if self.topics.is_internal(topic):
            raise ValidationFailed(f"publish_kafka: topic '{topic}' is internal to Quasar and cannot be a target")

    async def produce(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        """Produce through the runtime's producer and wait for the broker's ack."""
        self.check_publish_topic(topic)
        if self.producer is None:
            raise ConnectorError("publish_kafka: this runtime has no Kafka producer")
        result = self.producer.produce(topic, value, key, headers=headers)
        if asyncio.isfuture(result) or asyncio.iscoroutine(result) or hasattr(result, "__await__"):
            result = await result
        return result

    # -- lifecycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await _close_quietly(client)

    def list_circuit_breakers(self) -> list[dict[str, Any]]:
        return self.breakers.list()

    def reset_circuit_breaker(self, key: str) -> bool:
        return self.breakers.reset(key)


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()

"""Typed builders of confluent-kafka client configs from `Settings` (one place for client tuning).

Builders return plain dicts and do no network I/O; clients are created lazily by their users.
Every builder accepts `overrides` (librdkafka property names) that win over the defaults.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.errors import ServiceUnavailable
from app.settings import Settings

__all__ = [
    "BrokerNotConfigured",
    "KafkaConfig",
    "admin_config",
    "bootstrap_of",
    "consumer_config",
    "producer_config",
    "reader_config",
]

KafkaConfig = dict[str, Any]


class BrokerNotConfigured(ServiceUnavailable):
    """No bootstrap servers: set QUASAR_KAFKA_BOOTSTRAP or use `quasar dev` (embedded broker)."""

    code = "BROKER_NOT_CONFIGURED"


def bootstrap_of(settings: Settings) -> str:
    """The configured bootstrap servers, or a clear error when there are none."""
    if not settings.kafka_bootstrap:
        raise BrokerNotConfigured(
            "no Kafka broker configured: set QUASAR_KAFKA_BOOTSTRAP (e.g. 127.0.0.1:9092) "
            "or run `quasar dev`, which starts the embedded broker"
        )
    return settings.kafka_bootstrap


def _base(settings: Settings, client_id: str | None) -> KafkaConfig:
    return {
        "bootstrap.servers": bootstrap_of(settings),
        "client.id": client_id or f"quasar-{settings.instance_id}",
    }


def producer_config(settings: Settings, *, client_id: str | None = None, **overrides: Any) -> KafkaConfig:
    """Producer tuned for throughput without hurting request/reply latency much.

    - linger 2 ms + large batches: a busy worker sends few big requests, an idle one waits 2 ms at most.
    - acks=all: a delivery report means the record is durable on the cluster.
    - lz4: cheap on CPU and accepted by Tansu and Kafka alike.
    - idempotence off: idempotent/transactional producers do not work on Tansu; ordering per partition is
      kept by `max.in.flight=5` + the broker's single-leader append, retries may duplicate (at-least-once).
    """
    cfg = _base(settings, client_id)
    cfg.update(
        {
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 10_000,
            "batch.size": 1_048_576,
            "compression.type": "lz4",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 5,
            "queue.buffering.max.messages": 200_000,
            "message.timeout.ms": 30_000,
        }
    )
    cfg.update(overrides)
    return cfg


def consumer_config(
    settings: Settings,
    *,
    group_id: str,
    client_id: str | None = None,
    auto_offset_reset: str = "earliest",
    **overrides: Any,
) -> KafkaConfig:
    """Group consumer: manual commits (at-least-once), fetch wait and session timeout from settings.

    On Tansu a waiting fetch is answered only when `fetch.wait.max.ms` expires, so that setting is the
    consumer latency; a group join takes about half the session timeout.
    """
    session = settings.session_timeout_ms
    cfg = _base(settings, client_id)
    cfg.update(
        {
            "group.id": group_id,
            # Never let a subscription create a topic: every topic is created explicitly from topics/.
            "allow.auto.create.topics": False,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "fetch.min.bytes": 1,
            "session.timeout.ms": session,
            # librdkafka requires heartbeat < session; a third is the usual ratio.
            "heartbeat.interval.ms": max(100, session // 3),
            "enable.partition.eof": False,
        }
    )
    cfg.update(overrides)
    return cfg


def reader_config(settings: Settings, *, client_id: str | None = None, **overrides: Any) -> KafkaConfig:
    """Consumer for explicit `assign()` reads (config log, reply partitions): never joins or commits.

    librdkafka insists on a group.id even without a group; a unique throwaway one is used.
    """
    cfg = consumer_config(
        settings,
        group_id=f"quasar-reader-{uuid.uuid4().hex}",
        client_id=client_id,
        auto_offset_reset="earliest",
    )
    cfg.update(overrides)
    return cfg


def admin_config(settings: Settings, *, client_id: str | None = None, **overrides: Any) -> KafkaConfig:
    """AdminClient config (topic create/describe)."""
    cfg = _base(settings, client_id)
    cfg.update(overrides)
    return cfg

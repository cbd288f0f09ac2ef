"""Typed builders of confluent-kafka client configs from `Settings` (one place for client tuning).

Builders return plain dicts and do no network I/O; clients are created lazily by their users.
Layers, later ones winning: Quasar's tuning defaults, then the connection properties shared by every
client (`connection_properties`: typed security settings + the user's librdkafka passthrough), then the
builder's `overrides` (what this particular client needs, e.g. its linger or fetch wait).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from typing import Any

from app.errors import ServiceUnavailable
from app.secrets import resolve_secret
from app.settings import Settings

__all__ = [
    "BrokerNotConfigured",
    "KafkaConfig",
    "KafkaSettingsError",
    "admin_config",
    "bootstrap_of",
    "connection_properties",
    "consumer_config",
    "load_token_provider",
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


class KafkaSettingsError(ValueError):
    """The Kafka client settings contradict each other or touch what Quasar must control."""


# Properties Quasar sets per client for its delivery guarantees; a global value would break them.
PROTECTED_PROPERTIES = frozenset(
    {
        "group.id",
        "group.instance.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "transactional.id",
        "isolation.level",
    }
)

# Typed setting -> librdkafka property (None values are left out).
_TYPED = {
    "kafka_security_protocol": "security.protocol",
    "kafka_sasl_mechanism": "sasl.mechanism",
    "kafka_sasl_username": "sasl.username",
    "kafka_sasl_password": "sasl.password",
    "kafka_sasl_oauthbearer_method": "sasl.oauthbearer.method",
    "kafka_sasl_oauthbearer_token_endpoint_url": "sasl.oauthbearer.token.endpoint.url",
    "kafka_sasl_oauthbearer_client_id": "sasl.oauthbearer.client.id",
    "kafka_sasl_oauthbearer_client_secret": "sasl.oauthbearer.client.secret",
    "kafka_sasl_oauthbearer_scope": "sasl.oauthbearer.scope",
    "kafka_sasl_oauthbearer_extensions": "sasl.oauthbearer.extensions",
    "kafka_ssl_ca_location": "ssl.ca.location",
    "kafka_ssl_certificate_location": "ssl.certificate.location",
    "kafka_ssl_key_location": "ssl.key.location",
    "kafka_ssl_key_password": "ssl.key.password",
}


def load_token_provider(spec: str) -> Callable[[], tuple[str, float]]:
    """`module:callable` -> the callable (returns `(token, expiry_epoch_seconds)`), or a clear error."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise KafkaSettingsError(f"kafka_oauth_token_provider must be `module:callable`, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise KafkaSettingsError(f"kafka_oauth_token_provider {spec!r} cannot be loaded: {exc}") from None
    if not callable(target):
        raise KafkaSettingsError(f"kafka_oauth_token_provider {spec!r} is not callable")
    provider: Callable[[], tuple[str, float]] = target
    return provider


def connection_properties(settings: Settings) -> KafkaConfig:
    """Connection/security properties shared by every client: typed settings + the user's passthrough.

    The same property set both ways with different values is refused (which one was meant?);
    `env://VAR` values are resolved here, at use, never stored resolved.
    """
    typed: KafkaConfig = {}
    for field, prop in _TYPED.items():
        value = getattr(settings, field)
        if value is not None:
            typed[prop] = value
    if not settings.kafka_ssl_endpoint_identification:
        typed["ssl.endpoint.identification.algorithm"] = "none"
    user = settings.kafka_user_properties()
    user.pop("bootstrap.servers", None)  # folded into settings.kafka_bootstrap
    if "sasl.mechanisms" in user:  # librdkafka's alias (Confluent Cloud's files use it)
        user.setdefault("sasl.mechanism", user.pop("sasl.mechanisms"))
    if "message.max.bytes" in user:
        raise KafkaSettingsError(
            "librdkafka property message.max.bytes follows QUASAR_MAX_RECORD_BYTES (with the topics' "
            "max.message.bytes and every limit that must fit in a record): set that instead"
        )
    protected = sorted(PROTECTED_PROPERTIES & user.keys())
    if protected:
        raise KafkaSettingsError(
            f"librdkafka properties {', '.join(protected)} are managed by Quasar per client and cannot be set "
            "globally (QUASAR_KAFKA__* / kafka_properties_file)"
        )
    for prop, value in typed.items():
        if prop in user and str(user[prop]) != str(value):
            raise KafkaSettingsError(
                f"librdkafka property {prop} is set twice with different values (typed QUASAR_KAFKA_* setting "
                "and QUASAR_KAFKA__* / properties file): keep one"
            )
    merged: KafkaConfig = {**user, **typed}
    resolved = {prop: resolve_secret(value) for prop, value in merged.items()}
    if settings.kafka_oauth_token_provider:
        provider = load_token_provider(settings.kafka_oauth_token_provider)
        # librdkafka calls oauth_cb(sasl.oauthbearer.config) whenever a token is due.
        resolved["oauth_cb"] = lambda _config: provider()
    return resolved


def _base(settings: Settings, client_id: str | None) -> KafkaConfig:
    from app.observability.logs import kafka_client_logger

    return {
        "bootstrap.servers": bootstrap_of(settings),
        "client.id": client_id or f"quasar-{settings.instance_id}",
        # librdkafka's log lines go through Python logging (JSON in JSON mode, repeats rate-limited).
        "logger": kafka_client_logger(),
    }


def _build(settings: Settings, client_id: str | None, tuning: KafkaConfig, overrides: dict[str, Any]) -> KafkaConfig:
    cfg = _base(settings, client_id)
    cfg.update(tuning)
    cfg.update(connection_properties(settings))
    cfg.update(overrides)
    return cfg


def producer_config(settings: Settings, *, client_id: str | None = None, **overrides: Any) -> KafkaConfig:
    """Producer tuned for throughput without hurting request/reply latency much.

    - linger 2 ms + large batches: a busy worker sends few big requests, an idle one waits 2 ms at most.
    - acks=all: a delivery report means the record is durable on the cluster.
    - lz4: cheap on CPU and accepted by Tansu and Kafka alike.
    - message.max.bytes from the record budget (QUASAR_MAX_RECORD_BYTES), the same value as the topics'
      max.message.bytes, so every record Quasar bounds to the budget is taken by producer and broker alike.
    - idempotent: a retried batch is written once and never reordered (the broker checks sequence
      numbers), with up to 5 requests in flight. Apache Kafka, Redpanda, MSK, Confluent Cloud and Tansu 0.6
      all support it (measured on Tansu: 30k records over 4 partitions, no error). A broker without it:
      QUASAR_KAFKA__ENABLE_IDEMPOTENCE=false.
    """
    return _build(
        settings,
        client_id,
        {
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 10_000,
            "batch.size": min(1_048_576, settings.kafka_message_max_bytes),
            "message.max.bytes": settings.kafka_message_max_bytes,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "queue.buffering.max.messages": 200_000,
            "message.timeout.ms": 30_000,
        },
        overrides,
    )


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
    return _build(
        settings,
        client_id,
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
            # Incremental rebalancing: a member joining/leaving or a changed subscription (a channel
            # activated) moves only the partitions that change owner; the others keep being consumed.
            # The eager default stopped every channel of the group for the whole rebalance.
            "partition.assignment.strategy": "cooperative-sticky",
        },
        overrides,
    )


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
    return _build(settings, client_id, {}, overrides)

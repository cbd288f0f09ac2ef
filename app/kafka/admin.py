"""AdminClient helpers: create one from settings, wait until a broker really answers, list partitions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from app.errors import ServiceUnavailable
from app.kafka.config import admin_config
from app.settings import Settings

__all__ = [
    "BrokerUnavailable",
    "create_admin",
    "topic_partitions",
    "wait_for_broker",
    "wait_for_cluster",
]


class BrokerUnavailable(ServiceUnavailable):
    code = "BROKER_UNAVAILABLE"


def create_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An AdminClient for the configured broker (no network I/O until first use)."""
    return AdminClient(admin_config(settings, **overrides))


def wait_for_broker(
    admin_or_bootstrap: AdminClient | str,
    timeout: float = 10.0,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until the broker answers a metadata request, or raise `BrokerUnavailable` after `timeout` s.

    A metadata answer (not an open port) is the condition: that is what every client needs first.
    `alive`: checked between attempts; when it turns false the wait stops early (a broker process died).
    """
    admin = (
        # Short reconnect backoff: a just-started broker is retried quickly instead of after seconds.
        AdminClient(
            {
                "bootstrap.servers": admin_or_bootstrap,
                "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 200,
                # "Connection refused" while the broker boots is expected: keep it off stderr.
                "log_level": 2,
            }
        )
        if isinstance(admin_or_bootstrap, str)
        else admin_or_bootstrap
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailable(f"Kafka broker did not answer within {timeout:.1f}s: {last}")
        if alive is not None and not alive():
            raise BrokerUnavailable(f"Kafka broker process is gone (last error: {last})")
        try:
            # list_topics blocks up to its timeout waiting for a broker connection: this is the wait.
            admin.list_topics(timeout=min(0.25, remaining))
            return
        except KafkaException as exc:
            last = exc


def topic_partitions(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of every topic on the cluster.

    Asks for *all* topics on purpose: a metadata request naming an unknown topic makes Tansu
    auto-create it with 4 partitions.
    """
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot list topics: {exc}") from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def wait_for_cluster(
    settings: Settings,
    *,
    topics: tuple[str, ...] = (),
    report: Callable[[str], None],
    first_backoff: float = 0.5,
    max_backoff: float = 10.0,
) -> None:
    """Block until the broker answers and `topics` exist, retrying forever with capped exponential backoff.

    For process startup (`quasar worker`, `quasar gateway`): a broker that is not up yet, or a cluster whose
    topics are not applied yet, gets one clear line per attempt through `report` instead of a traceback and
    an exit (an orchestrator restarting a crashing process is a crash loop). librdkafka's own connection
    errors are silenced here (log_level 2): they would print several lines per second.
    """
    admin = create_admin(settings, **{"log_level": 2, "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000})
    backoff = first_backoff
    while True:
        try:
            present = topic_partitions(admin, timeout=max(1.0, min(backoff, 5.0)))
            missing = [t for t in topics if t not in present]
            if not missing:
                return
            problem = f"topics missing on {settings.kafka_bootstrap}: {', '.join(missing)} (run `quasar topics apply`)"
        except BrokerUnavailable:
            problem = f"Kafka broker {settings.kafka_bootstrap} is unreachable"
        report(f"{problem}; retrying in {backoff:.1f}s")
        time.sleep(backoff)  # startup, before any event loop: nothing else to do but wait
        backoff = min(max_backoff, backoff * 2)

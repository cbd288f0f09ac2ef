"""AdminClient helpers: create one from settings, wait until a broker really answers, list partitions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from app.errors import ServiceUnavailable
from app.kafka.config import admin_config
from app.settings import Settings

__all__ = [
    "BrokerUnavailable",
    "RefusalReason",
    "create_admin",
    "group_positions",
    "probing_admin",
    "topic_partitions",
    "wait_for_broker",
    "wait_for_cluster",
]


class BrokerUnavailable(ServiceUnavailable):
    code = "BROKER_UNAVAILABLE"


class RefusalReason:
    """An `error_cb` keeping the last authentication or TLS failure librdkafka reported.

    A client refused by the broker (wrong SASL credentials, an untrusted certificate) only sees its
    metadata request time out with "Broker transport failure"; the reason comes through the error
    callback, served by `poll`. `why(client)` serves it and returns the reason (None once a request
    succeeded: call `clear()`).
    """

    _KINDS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, error: KafkaError) -> None:
        if error.code() in self._KINDS:
            self.last = error.str()

    def why(self, client: AdminClient) -> str | None:
        client.poll(0)
        return self.last

    def clear(self) -> None:
        self.last = None


def create_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An AdminClient for the configured broker (no network I/O until first use)."""
    return AdminClient(admin_config(settings, **overrides))


def probing_admin(settings: Settings, refused: RefusalReason, **overrides: Any) -> AdminClient:
    """An AdminClient that checks on the broker: it notices a returning broker fast, its own connection
    errors are silenced (the caller reports them) and authentication/TLS refusals are kept in `refused`."""
    return create_admin(
        settings,
        **{"reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000, "log_level": 2, "error_cb": refused},
        **overrides,
    )


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
    refused = RefusalReason()
    admin = probing_admin(settings, refused)
    backoff = first_backoff
    while True:
        try:
            present = topic_partitions(admin, timeout=max(1.0, min(backoff, 5.0)))
            missing = [t for t in topics if t not in present]
            if not missing:
                return
            problem = f"topics missing on {settings.kafka_bootstrap}: {', '.join(missing)} (run `quasar topics apply`)"
        except BrokerUnavailable:
            reason = refused.why(admin)
            problem = f"Kafka broker {settings.kafka_bootstrap} is unreachable" + (f" ({reason})" if reason else "")
        report(f"{problem}; retrying in {backoff:.1f}s")
        time.sleep(backoff)  # startup, before any event loop: nothing else to do but wait
        backoff = min(max_backoff, backoff * 2)


def group_positions(
    admin: AdminClient, targets: list[tuple[str, str]], timeout: float = 5.0
) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(group, topic, partition) -> (committed offset or -1, high watermark) for every partition of each
    (group, topic) target that exists. Committed offsets are the group's, whoever owns the partition."""
    if not targets:
        return {}
    topics = sorted({t for _g, t in targets})
    md = admin.list_topics(timeout=timeout)  # all topics: naming one would auto-create it on Tansu
    partitions = {t: sorted(md.topics[t].partitions) for t in topics if t in md.topics and md.topics[t].error is None}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    specs = {TopicPartition(t, p): latest for t, ps in partitions.items() for p in ps}
    if not specs:
        return {}
    ends = {
        (tp.topic, tp.partition): fut.result().offset
        for tp, fut in admin.list_offsets(specs, request_timeout=timeout).items()
    }
    out: dict[tuple[str, str, int], tuple[int, int]] = {}
    for group in sorted({g for g, _t in targets}):
        wanted = [TopicPartition(t, p) for g, t in targets if g == group for p in partitions.get(t, [])]
        if not wanted:
            continue
        request = [ConsumerGroupTopicPartitions(group, wanted)]
        committed = {
            (tp.topic, tp.partition): tp.offset
            for fut in admin.list_consumer_group_offsets(request, request_timeout=timeout).values()
            for tp in fut.result().topic_partitions
        }
        for tp in wanted:
            end = ends.get((tp.topic, tp.partition))
            if end is not None and end >= 0:
                out[(group, tp.topic, tp.partition)] = (committed.get((tp.topic, tp.partition), -1), end)
    return out

"""Governance on the Kafka-ingested path, against the real broker, the real worker and real Redis:
a rate limit throttles consumption (pause/resume) and never drops; dedup traces a duplicate instead of
running it again; a Redis outage fails open or closed (closed = pause and retry, never drop); the
circuit-breaker settings reach the worker's connector runtime."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import redis
from confluent_kafka import Message, Producer
from prometheus_client import REGISTRY

from app.connectors.breaker import BreakerConfig
from app.governance.seal import seal
from app.kafka import headers as H
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config
from app.settings import Settings
from app.worker.runner import ChannelWorker
from tests.governance.conftest import PrivateRedis
from tests.runtime.worker_support import Runtime, read_records

pytestmark = pytest.mark.timeout(120)


async def _runtime(settings: Settings, redis_url: str | None) -> Runtime:
    runtime = Runtime(settings.model_copy(update={"redis_url": redis_url, "worker_retry_backoff_ms": 10}))
    await runtime.reader.ready(20)
    return runtime


@pytest.fixture
async def rt(settings: Settings, redis_url: str) -> AsyncIterator[Runtime]:
    runtime = await _runtime(settings, redis_url)
    yield runtime
    await runtime.close()


async def _until(cond: Callable[[], bool], seconds: float = 20.0) -> None:
    """Wait for an in-process condition (a worker counter), bounded."""
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _request_id(msg: Message) -> str:
    """Outputs keep the input key; the request id travels in the propagated headers."""
    return H.header_map(msg.headers())[H.REQUEST_ID]


def _all_records(settings: Settings, topic: str) -> list[Message]:
    """Every record of `topic` so far: a marker goes to each partition and is read back (Tansu's end
    offsets cannot be trusted), so a record absent from the answer was never written before the call."""
    parts = topic_partitions(create_admin(settings))[topic]
    marker = f"__marker__/{uuid.uuid4().hex}".encode()
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    for p in range(parts):
        producer.produce(topic, b"", marker, partition=p)
    assert producer.flush(10) == 0

    def done(recs: list[Message]) -> bool:
        return len({m.partition() for m in recs if m.key() == marker}) == parts

    recs = read_records(settings, topic, until=done, timeout=20)
    return [m for m in recs if not (m.key() or b"").startswith(b"__marker__/")]


async def _committed(worker: ChannelWorker, sent: list[Message]) -> None:
    """Wait until the worker committed past every record of `sent` (so all it caused was delivered)."""
    last: dict[tuple[str, int], int] = {}
    for m in sent:
        tp = (m.topic() or "", m.partition() or 0)
        last[tp] = max(last.get(tp, -1), m.offset() or 0)
    await _until(lambda: all(worker.committed.get(tp, 0) > o for tp, o in last.items()), 30)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_records_faster_than_the_limit_are_all_processed_at_the_limit_rate(rt: Runtime) -> None:
    rate, burst, n = 20, 2, 30
    await rt.activate("paced", config={"rate_limit": {"requests_per_second": rate, "burst": burst}})
    worker = await rt.worker()
    ids = [f"r{i}" for i in range(n)]
    # One Kafka key (no key_logic): one client, one bucket, one partition. Produced all at once.
    sent = [rt.send("paced", {"data": {"i": i}}, key="client-a", headers={H.REQUEST_ID: rid})
            for i, rid in enumerate(ids)]  # fmt: skip
    outs = await asyncio.to_thread(rt.outputs, "paced", n, 60)
    stamps = sorted(m.timestamp()[1] for m in outs)
    span = (stamps[-1] - stamps[0]) / 1000
    floor = (n - burst) / rate  # GCRA: `burst` at once, then one per 1/rate s
    assert span >= floor * 0.9, f"{n} records in {span:.2f}s: faster than {rate}/s"
    assert span <= floor * 4 + 2, f"{n} records in {span:.2f}s: throttling stalls consumption"
    assert worker.governance.throttle.pauses > 0  # the partition was paused, not the loop slept
    await _committed(worker, sent)
    # None lost, none run twice, none dead-lettered.
    outputs = await asyncio.to_thread(_all_records, rt.settings, rt.names.output("paced"))
    assert sorted(_request_id(m) for m in outputs) == sorted(ids)
    assert await asyncio.to_thread(_all_records, rt.settings, rt.names.dlq) == []
    assert worker.failure is None and not worker.governance.throttle.held


async def test_key_logic_gives_each_client_its_own_bucket(rt: Runtime, redis_url: str) -> None:
    # A bucket key lives as long as its debt (1/rate) plus 1 s: a slow rate keeps the keys readable after
    # the outputs arrived even on a loaded box; one token per client never throttles.
    limit = {"requests_per_second": 0.01, "burst": 1, "key_logic": {"var": "data.client"}}
    await rt.activate("per-client", config={"rate_limit": limit})
    worker = await rt.worker()
    # Four clients, one record each, on one partition: one token each, so no pause at all.
    clients = ["ann", "bob", "cy", "dee"]
    for c in clients:
        rt.send("per-client", {"data": {"client": c}}, key="same-key", headers={H.REQUEST_ID: c})
    outs = await asyncio.to_thread(rt.outputs, "per-client", len(clients))
    assert sorted(_request_id(m) for m in outs) == clients
    assert worker.governance.throttle.pauses == 0
    store = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in store.keys(f"{rt.settings.topic_prefix}gov:rl:per-client:*"))
    finally:
        store.close()
    assert keys == [f"{rt.settings.topic_prefix}gov:rl:per-client:{c}" for c in clients]


async def test_records_from_the_gateway_are_not_charged_twice(rt: Runtime, redis_url: str) -> None:
    # 1 record/s: charging these five again would pause the partition for seconds.
    await rt.activate("via-gw", config={"rate_limit": {"requests_per_second": 1, "burst": 1}})
    worker = await rt.worker()
    for i in range(5):
        rt.send("via-gw", {"data": {}}, key="k", headers={H.REQUEST_ID: f"g{i}", H.MODE: "async"})
    await asyncio.to_thread(rt.outputs, "via-gw", 5)
    assert worker.governance.throttle.pauses == 0
    store = redis.Redis.from_url(redis_url)
    try:
        assert store.keys(f"{rt.settings.topic_prefix}gov:rl:*") == []
    finally:
        store.close()


async def test_a_forged_mode_header_does_not_skip_governance_when_records_are_sealed(
    settings: Settings, redis_url: str
) -> None:
    rt = await _runtime(settings.model_copy(update={"ingest_seal_key": "seal-secret"}), redis_url)
    try:
        # Slow rate, large burst: never throttles, and a charged bucket key lives ~100 s (debt 1/rate + 1 s),
        # so it is still there when the outputs have been read (at 50/s it expired after ~1 s).
        await rt.activate("sealed", config={"rate_limit": {"requests_per_second": 0.01, "burst": 50}})
        await rt.worker()
        topic = rt.names.channel("sealed")
        value = orjson.dumps({"data": {}})
        good = seal(b"seal-secret", topic, value).decode()
        rt.send("sealed", value, key="gw", headers={H.MODE: "async", H.GATEWAY_SEAL: good, H.REQUEST_ID: "gw"})
        rt.send("sealed", value, key="forged", headers={H.MODE: "async", H.REQUEST_ID: "forged"})
        rt.send("sealed", value, key="bad", headers={H.MODE: "async", H.GATEWAY_SEAL: "0" * 32, H.REQUEST_ID: "bad"})
        outs = await asyncio.to_thread(rt.outputs, "sealed", 3)
        assert sorted(_request_id(m) for m in outs) == ["bad", "forged", "gw"]
        store = redis.Redis.from_url(redis_url)
        try:
            charged = sorted(k.decode().rsplit(":", 1)[1] for k in store.keys(f"{rt.settings.topic_prefix}gov:rl:*"))
        finally:
            store.close()
        assert charged == ["bad", "forged"]  # only the sealed record was governed by the gateway
    finally:
        await rt.close()


async def test_duplicate_kafka_record_is_traced_as_duplicate_and_not_run_again(rt: Runtime) -> None:
    # `tracing: all`: the completed traces of these Kafka-ingested records are compared with the duplicates'.
    dedup = {"header": "Idempotency-Key", "window_secs": 60}
    await rt.activate("dedup", config={"deduplication": dedup, "tracing": "all"})
    worker = await rt.worker()
    before = _metric("messages_total", channel="dedup", status="duplicate")
    # One Kafka key: one partition, so the records are seen in the order they were sent.
    send = functools.partial(rt.send, "dedup", {"data": {}}, key="one-partition")
    sent = [
        send(headers={H.REQUEST_ID: "a", "Idempotency-Key": "k1"}),
        send(headers={H.REQUEST_ID: "b", "idempotency-key": "k1"}),
        send(headers={H.REQUEST_ID: "c", "Idempotency-Key": "k2"}),
        send(headers={H.REQUEST_ID: "d"}),  # no key: never a duplicate
        # An exact resend of "a" (same request id): its trace must not overwrite a's.
        send(headers={H.REQUEST_ID: "a", "Idempotency-Key": "k1"}),
    ]
    await _committed(worker, sent)
    outputs = await asyncio.to_thread(_all_records, rt.settings, rt.names.output("dedup"))
    assert sorted(_request_id(m) for m in outputs) == ["a", "c", "d"]
    traces = {m.key().decode(): orjson.loads(m.value())
              for m in await asyncio.to_thread(_all_records, rt.settings, rt.names.traces)}  # fmt: skip
    assert traces["a"]["status"] == "completed" and traces["c"]["status"] == "completed"
    dup = traces["b"]
    assert dup["status"] == "duplicate" and dup["channel"] == "dedup" and dup["mode"] == "async"
    assert dup["dedup_key"] == "k1" and dup["duplicate_of"] == "a"
    resend = sent[4]
    resent = traces[f"{resend.topic()}-{resend.partition()}-{resend.offset()}"]
    assert resent["status"] == "duplicate" and resent["duplicate_of"] == "a"
    assert _metric("messages_total", channel="dedup", status="duplicate") - before == 2
    assert await asyncio.to_thread(_all_records, rt.settings, rt.names.dlq) == []


async def test_redis_outage_fails_open_or_pauses_until_redis_is_back(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    rt = await _runtime(settings, private_redis.url)
    try:
        limit = {"requests_per_second": 1000, "burst": 1000}
        await rt.activate("open", config={"rate_limit": limit})
        await rt.activate("closed", config={"rate_limit": limit, "failure_mode": "fail_closed"})
        worker = await rt.worker()
        private_redis.stop()
        degraded = _metric(
            "quasar_governance_degraded_total", channel="closed", feature="rate_limit", mode="fail_closed"
        )
        # fail_open: processed while Redis is down.
        for i in range(3):
            rt.send("open", {"data": {}}, key="k", headers={H.REQUEST_ID: f"o{i}"})
        await asyncio.to_thread(rt.outputs, "open", 3)
        assert worker.governance.store.degraded
        # fail_closed: the partition is paused (never dropped) and retried until Redis answers again.
        sent = [rt.send("closed", {"data": {}}, key="k", headers={H.REQUEST_ID: f"c{i}"}) for i in range(3)]
        tp = (sent[0].topic(), sent[0].partition())
        await _until(lambda: tp in worker.governance.throttle.held)
        assert worker.governance.throttle.held[tp] == sent[0].offset()
        assert worker.committed.get(tp, 0) <= (sent[0].offset() or 0)
        assert (
            _metric("quasar_governance_degraded_total", channel="closed", feature="rate_limit", mode="fail_closed")
            > degraded
        )
        private_redis.start()
        outs = await asyncio.to_thread(rt.outputs, "closed", 3, 30)
        assert sorted(_request_id(m) for m in outs) == ["c0", "c1", "c2"]
        await _committed(worker, sent)
        assert await asyncio.to_thread(_all_records, rt.settings, rt.names.dlq) == []
    finally:
        await rt.close()


async def test_circuit_breaker_settings_reach_the_workers_connector_services(settings: Settings) -> None:
    tuned = settings.model_copy(
        update={"circuit_breaker_failure_threshold": 2, "circuit_breaker_recovery_timeout_secs": 0.5}
    )
    rt = await _runtime(tuned, None)
    try:
        worker = await rt.worker()
        assert worker.services is not None
        assert worker.services.breakers.config == BreakerConfig(
            enabled=True, failure_threshold=2, recovery_timeout_secs=0.5, max_breakers=10_000
        )
        breaker = worker.services.breakers.get("orders", "crm")
        breaker.on_failure()
        assert breaker.state == "closed"
        breaker.on_failure()
        assert breaker.state == "open"  # threshold 2, not Orion's default 5
    finally:
        await rt.close()

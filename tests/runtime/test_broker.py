"""Embedded broker lifecycle, client configs, and the producer/reader wrappers against the real broker."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from app.kafka.admin import BrokerUnavailable, wait_for_broker
from app.kafka.broker import BrokerBinaryMissing, EmbeddedBroker, find_tansu, resolve_bootstrap
from app.kafka.config import BrokerNotConfigured, consumer_config, producer_config, reader_config
from app.kafka.consumer import (
    ReadTimeout,
    is_marker,
    read_partition,
    read_to_end,
    read_to_offset,
)
from app.kafka.producer import AsyncProducer, DeliveryFailed, produce_sync
from app.settings import Settings
from tests.fixtures.kafka import TopicFactory


def _props(**kw: Any) -> dict[str, Any]:
    """librdkafka property overrides written as Python names (linger_ms -> linger.ms)."""
    return {k.replace("_", "."): v for k, v in kw.items()}


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_embedded_broker_answers_metadata_when_started_and_is_gone_after_stop() -> None:
    with EmbeddedBroker() as broker:
        assert broker.running
        wait_for_broker(broker.bootstrap, timeout=2)  # answers at once: start() already waited
        port = broker.port
        assert port is not None
    assert not broker.running
    assert _refuses(port)
    broker.stop()  # idempotent


def test_missing_broker_binary_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(BrokerBinaryMissing, match="Tansu binary not found"):
        EmbeddedBroker(binary="/nonexistent/tansu").start()
    assert find_tansu().name == "tansu"


def test_broker_process_that_dies_fails_start_fast_with_its_exit_code() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="exited with code 1"):
        EmbeddedBroker(binary="/bin/false", startup_timeout=20).start()
    assert time.monotonic() - started < 5  # did not sit out the startup timeout


def test_wait_for_broker_times_out_on_a_dead_address() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerUnavailable, match=r"did not answer within 0\.5s"):
        wait_for_broker(f"127.0.0.1:{port}", timeout=0.5)


def test_resolve_bootstrap_prefers_the_configured_broker_else_starts_one(kafka_bootstrap: str) -> None:
    with resolve_bootstrap(Settings(kafka_bootstrap=kafka_bootstrap)) as b:
        assert (b.servers, b.embedded) == (kafka_bootstrap, False)
    with resolve_bootstrap(Settings(kafka_bootstrap=None)) as b:
        assert b.embedded and b.servers != kafka_bootstrap
        wait_for_broker(b.servers, timeout=2)
        broker = b.broker
    assert broker is not None and not broker.running


def test_client_configs_need_a_bootstrap() -> None:
    with pytest.raises(BrokerNotConfigured, match="QUASAR_KAFKA_BOOTSTRAP"):
        producer_config(Settings(kafka_bootstrap=None))


def test_client_configs_follow_settings(settings: Settings) -> None:
    p = producer_config(settings, **_props(linger_ms=0))
    assert p["linger.ms"] == 0 and p["acks"] == "all" and p["enable.idempotence"] is True
    c = consumer_config(settings, group_id="g")
    assert c["fetch.wait.max.ms"] == settings.fetch_wait_max_ms
    assert c["session.timeout.ms"] == settings.session_timeout_ms
    assert c["enable.auto.commit"] is False
    assert reader_config(settings)["group.id"] != reader_config(settings)["group.id"]
    # librdkafka accepts them (it validates property names and values at construction).
    Producer(p)
    Consumer(c).close()


async def test_async_producer_roundtrip_through_a_group_consumer(
    settings: Settings, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=2)
    async with AsyncProducer(producer_config(settings)) as producer:
        futures = [
            producer.produce(topic, f"v{i}".encode(), key=f"k{i}", headers=[("x-request-id", b"r%d" % i)])
            for i in range(20)
        ]
        delivered = await asyncio.gather(*futures)
    assert {m.topic() for m in delivered} == {topic}
    consumer = Consumer(consumer_config(settings, group_id=f"g-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    seen: dict[bytes | None, tuple[object, object]] = {}
    deadline = time.monotonic() + 20
    try:
        while len(seen) < 20 and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.2):
                assert msg.error() is None
                seen[msg.key()] = (msg.value(), msg.headers())
    finally:
        consumer.close()
    assert len(seen) == 20
    assert seen[b"k7"] == (b"v7", [("x-request-id", b"r7")])


async def test_async_producer_reports_delivery_failure(settings: Settings, unique_topic: str) -> None:
    async with AsyncProducer(producer_config(settings, **_props(message_timeout_ms=2000))) as producer:
        with pytest.raises(DeliveryFailed, match=unique_topic):
            await producer.produce(unique_topic, b"x", partition=7)  # the topic has 1 partition


def test_read_to_end_sees_a_whole_batch_even_when_the_watermark_lies(settings: Settings, unique_topic: str) -> None:
    # Several records in one batch: Tansu then reports a high watermark short of the real end.
    batcher = Producer(producer_config(settings, **_props(linger_ms=50)))
    for i in range(25):
        batcher.produce(unique_topic, f"r{i}".encode(), key=b"k", partition=0)
    assert batcher.flush(10) == 0
    seen: list[bytes | None] = []
    producer = Producer(producer_config(settings))
    consumer = Consumer(reader_config(settings))
    try:
        end = read_to_end(
            producer,
            consumer,
            unique_topic,
            0,
            0,
            on_message=lambda m: None if is_marker(m) else seen.append(m.value()),
        )
    finally:
        consumer.close()
    assert seen == [f"r{i}".encode() for i in range(25)]
    assert end == 26  # 25 records + the marker


def test_read_to_offset_of_own_write_then_continue(settings: Settings, unique_topic: str) -> None:
    producer = Producer(producer_config(settings))
    first = produce_sync(producer, unique_topic, b"a", partition=0)
    second = produce_sync(producer, unique_topic, b"b", partition=0)
    assert (first.offset(), second.offset()) == (0, 1)
    consumer = Consumer(reader_config(settings))
    seen: list[bytes | None] = []
    try:
        collect = lambda m: seen.append(m.value())  # noqa: E731
        assert read_to_offset(consumer, unique_topic, 0, 0, 0, on_message=collect) == 1
        assert read_to_offset(consumer, unique_topic, 0, 1, 1, on_message=collect) == 2
        assert read_to_offset(consumer, unique_topic, 0, 2, 1) == 2  # nothing to read
    finally:
        consumer.close()
    assert seen == [b"a", b"b"]


def test_read_partition_times_out_with_a_clear_message(settings: Settings, unique_topic: str) -> None:
    produce_sync(Producer(producer_config(settings)), unique_topic, b"only", partition=0)
    consumer = Consumer(reader_config(settings))
    try:
        with pytest.raises(ReadTimeout, match=r"not met within 0.5s \(read up to offset 1\)"):
            read_partition(consumer, unique_topic, 0, 0, until=lambda m: m.value() == b"never", timeout=0.5)
    finally:
        consumer.close()


def test_embedded_broker_dies_with_a_killed_parent() -> None:
    # A test run killed with SIGKILL must not leave a Tansu behind (CPU and ports are scarce).
    script = (
        "import sys; from app.kafka.broker import EmbeddedBroker; "
        "b = EmbeddedBroker().start(); print(b.pid, flush=True); sys.stdin.read()"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],  # the repo root, where `app` imports from
    )
    assert parent.stdout is not None
    broker_pid = int(parent.stdout.readline())
    pidfd = os.pidfd_open(broker_pid)
    try:
        parent.kill()
        parent.wait(10)
        readable, _, _ = select.select([pidfd], [], [], 10)  # a pidfd turns readable when the process exits
        assert readable, f"broker {broker_pid} survived its parent"
    finally:
        os.close(pidfd)
        assert parent.stdin is not None
        parent.stdin.close()
        parent.stdout.close()

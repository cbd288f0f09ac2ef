"""Throughput and latency of the Kafka wrappers on the session broker, with generous floors.

Numbers are printed (run with `-s`); the floors only catch gross regressions (an await per message, a
consume() that waits for a full batch, a forgotten fetch wait) on a busy 2-core CI box.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from app.kafka.config import producer_config, reader_config
from app.kafka.consumer import read_to_offset
from app.kafka.producer import AsyncProducer, produce_sync
from app.settings import Settings
from tests.fixtures.kafka import TopicFactory

N = 20_000
NO_LINGER: dict[str, Any] = {"linger.ms": 0}  # one record at a time: measure latency, not batching
VALUE = b'{"data":{"order_id":"A-1","amount":42.5,"items":[1,2,3]},"metadata":{"source":"bench"}}'


async def test_async_producer_then_reader_throughput(settings: Settings, topic_factory: TopicFactory) -> None:
    topic = topic_factory(partitions=1)
    async with AsyncProducer(producer_config(settings)) as producer:
        started = time.perf_counter()
        futures = [producer.produce(topic, VALUE, key=b"k%d" % i, partition=0) for i in range(N)]
        delivered = await asyncio.gather(*futures)
        produce_s = time.perf_counter() - started
    assert [m.offset() for m in delivered[:3]] == [0, 1, 2]
    last = delivered[-1].offset()
    assert last == N - 1

    consumer = Consumer(reader_config(settings))
    count = 0

    def tally(_: object) -> None:
        nonlocal count
        count += 1

    try:
        started = time.perf_counter()
        read_to_offset(consumer, topic, 0, 0, last, on_message=tally, timeout=60)
        consume_s = time.perf_counter() - started
    finally:
        consumer.close()
    assert count == N
    produce_rate, consume_rate = N / produce_s, N / consume_s
    print(f"\nAsyncProducer: {produce_rate:,.0f} msgs/s; read_to_offset: {consume_rate:,.0f} msgs/s")
    assert produce_rate > 3_000 and consume_rate > 3_000


def test_produce_to_consume_round_trip_latency(settings: Settings, unique_topic: str) -> None:
    assert settings.fetch_wait_max_ms == 10
    producer = Producer(producer_config(settings, **NO_LINGER))
    consumer = Consumer(reader_config(settings))
    consumer.assign([TopicPartition(unique_topic, 0, 0)])
    samples: list[float] = []
    try:
        for i in range(40):
            started = time.perf_counter()
            producer.produce(unique_topic, b"%d" % i, partition=0)
            producer.poll(0)
            while True:  # poll returns as soon as the record is fetched
                msg = consumer.poll(5)
                assert msg is not None, "round trip record not seen within 5 s"
                if msg.value() == b"%d" % i:
                    break
            samples.append((time.perf_counter() - started) * 1000)
        producer.flush(5)
    finally:
        consumer.close()
    samples.sort()
    p50, p95 = statistics.median(samples), samples[int(len(samples) * 0.95) - 1]
    print(f"\nproduce->consume round trip, fetch.wait.max.ms=10: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    assert p50 < 100


def test_produce_sync_latency_is_a_few_ms(settings: Settings, unique_topic: str) -> None:
    producer = Producer(producer_config(settings, **NO_LINGER))
    produce_sync(producer, unique_topic, b"warm", partition=0)
    started = time.perf_counter()
    for _ in range(50):
        produce_sync(producer, unique_topic, b"x", partition=0)
    per_call_ms = (time.perf_counter() - started) * 1000 / 50
    print(f"\nproduce_sync: {per_call_ms:.2f} ms per acknowledged record")
    assert per_call_ms < 50

"""The delivery tracker on the real broker: a record the broker refuses is dead-lettered, a dead letter
that cannot be delivered is counted and skipped; neither raises (no produce error stops the worker)."""

from __future__ import annotations

import asyncio

from confluent_kafka import Producer

from app.kafka import headers as H
from app.kafka.admin import create_admin
from app.kafka.config import producer_config
from app.kafka.names import TopicNames
from app.kafka.topics import TopicPlan, apply_topics
from app.settings import Settings
from app.worker.delivery import DeliveryTracker
from tests.runtime.worker_support import read_records


async def test_refused_record_is_dead_lettered_and_an_undeliverable_dead_letter_is_skipped(
    settings: Settings,
) -> None:
    names = TopicNames(settings.topic_prefix)
    out = f"{settings.topic_prefix}out.one"
    apply_topics(create_admin(settings), [TopicPlan(names.dlq, 1), TopicPlan(out, 1)])
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    tracker = DeliveryTracker(lambda: producer, lambda: None, names.dlq)
    acks = tracker.acks()
    carried = [(H.REQUEST_ID, b"req-7"), ("tenant", b"acme")]
    acks.send((out, b"fine", b"k", carried, -1))
    acks.send((out, b"refused", b"k", carried, 5))  # no partition 5: refused by the client
    acks.send((names.dlq, b"dead", b"k", None, 9))  # a dead letter to nowhere: cannot be delivered
    await asyncio.wait_for(tracker.settle(acks), 30)
    assert tracker.undeliverable == 1
    (dead,) = await asyncio.to_thread(read_records, settings, names.dlq, until=lambda r: len(r) >= 1)
    hm = H.header_map(dead.headers())
    assert hm[H.DLQ_ERROR_CODE] == "KAFKA_DELIVERY_FAILED" and hm[H.DLQ_STAGE] == "KAFKA_PRODUCE"
    assert hm[H.DLQ_ORIGINAL_TOPIC] == out and hm[H.REQUEST_ID] == "req-7" and hm["tenant"] == "acme"
    assert dead.value() == b"refused" and dead.key() == b"k"

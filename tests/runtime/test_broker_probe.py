"""The broker probe on the real broker: `ok` while the cluster answers, and committed-offset lag for every
partition of a group's topics, whether or not anyone consumes them (a paused channel's backlog)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from app.kafka.config import consumer_config, producer_config
from app.kafka.probe import BrokerProbe
from app.settings import Settings
from tests.fixtures.kafka import TopicFactory, probe_unreachable_status
from tests.fixtures.polling import poll


def _lag_samples(group: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in REGISTRY.collect()
        if family.name == "quasar_consumer_group_lag_records"
        for s in family.samples
        if s.labels["group"] == group
    }


def test_probe_reports_ok_and_committed_offset_lag_of_every_partition(
    settings: Settings, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=2)
    producer = Producer(producer_config(settings))
    # One record per batch: Tansu answers ListOffsets(latest) with the end of the last batch's first
    # record (its known end-offset quirk), so multi-record batches would read as a smaller lag there.
    for partition, count in ((0, 5), (1, 3)):
        for _ in range(count):
            producer.produce(topic, b"x", partition=partition)
            assert producer.flush(10) == 0
    group = f"{settings.topic_prefix}probe-group"
    # The group committed 2 records of partition 0 and nothing of partition 1 (nobody consumes it).
    committer = Consumer(consumer_config(settings, group_id=group))
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()

    probe = BrokerProbe(settings, topic=topic, interval=0.2, lag_interval=0.2, lag_targets=lambda: [(group, topic)])
    probe.start()
    try:
        poll(lambda: probe.status() == "ok", within=15, what="probe ok")
        lag = poll(lambda: probe.lag or None, within=15, what="a lag round")
        assert lag == {(group, topic, 0): 3, (group, topic, 1): 3}
        assert _lag_samples(group) == {(topic, "0"): 3.0, (topic, "1"): 3.0}
    finally:
        probe.stop()
    assert _lag_samples(group) == {}  # a stopped probe exports nothing


def test_probe_reports_a_missing_topic(settings: Settings) -> None:
    status = probe_unreachable_status(settings, f"{settings.topic_prefix}never-created")
    assert "is missing" in status

"""Read what a topic retains, without joining a group or writing anything (a read needs no write rights).

Used by `quasar dlq list` and by impact analysis (replaying a channel's recent records). Tansu's high
watermark can be short when the last batch holds several records, so a read does not stop at it: it goes on
until a whole fetch wait (x3) brings nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from app.errors import QuasarError
from app.kafka.config import reader_config
from app.settings import Settings

__all__ = ["read_partition", "start_offsets_at"]


def start_offsets_at(settings: Settings, topic: str, partitions: int, ts_ms: int, timeout: float = 10.0) -> list[int]:
    """Per partition, the first offset whose record time is >= ts_ms (the end when there is none: -1)."""
    consumer = Consumer(reader_config(settings, client_id="quasar-retained"))
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ts_ms) for p in range(partitions)], timeout)
        return [tp.offset for tp in sorted(found, key=lambda tp: tp.partition)]
    finally:
        consumer.close()


def read_partition(
    settings: Settings,
    topic: str,
    partition: int,
    *,
    timeout: float,
    start: int | None = None,
    limit: int | None = None,
    client_id: str = "quasar-retained",
    progress: Callable[[int], None] | None = None,
) -> list[Message]:
    """Records of one partition from `start` (default: the oldest retained) to the end, at most `limit`."""
    consumer = Consumer(reader_config(settings, client_id=client_id))
    out: list[Message] = []
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=min(timeout, 10))
        first = low if start is None or start < 0 or start < low else start
        if start is not None and start < 0:  # offsets_for_times found nothing newer: nothing to read
            return out
        consumer.assign([TopicPartition(topic, partition, first)])
        quiet = max(0.5, 3 * settings.fetch_wait_max_ms / 1000)
        deadline = time.monotonic() + timeout
        position = first
        last_news = time.monotonic()
        while time.monotonic() < deadline:
            msgs = consumer.consume(500, 0.1)
            got = [m for m in msgs if m.error() is None and m.partition() == partition]
            for m in got:
                out.append(m)
                position = (m.offset() or 0) + 1
                if limit is not None and len(out) >= limit:
                    return out
            if got:
                last_news = time.monotonic()
                if progress is not None:
                    progress(len(out))
            elif position >= high and time.monotonic() - last_news >= quiet:
                return out
        raise QuasarError(f"reading {topic}[{partition}] did not finish within {timeout}s (at offset {position})")
    finally:
        consumer.close()

"""Reading one partition without a consumer group, up to a point you *know* is the end.

Tansu's high watermark is wrong when the last batch holds several records, so "caught up" is never
decided from it: a reader either reads up to the offset of a record it wrote itself, or writes a marker
record (`__marker__/<uuid>` key) and reads until it sees it (`read_to_end`). These helpers are blocking;
from asyncio run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from app.errors import Timeout
from app.kafka.producer import produce_sync

__all__ = [
    "MARKER_PREFIX",
    "ReadTimeout",
    "is_marker",
    "new_marker_key",
    "read_partition",
    "read_to_end",
    "read_to_offset",
]

MARKER_PREFIX = b"__marker__/"


class ReadTimeout(Timeout):
    """The stop condition was not met in time."""

    code = "KAFKA_READ_TIMEOUT"


def new_marker_key() -> bytes:
    return MARKER_PREFIX + uuid.uuid4().hex.encode()


def is_marker(msg: Message) -> bool:
    """True for end-of-log marker records (every reader of a marked topic must skip them)."""
    key = msg.key()
    return isinstance(key, bytes) and key.startswith(MARKER_PREFIX)


def read_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    start_offset: int,
    *,
    until: Callable[[Message], bool],
    on_message: Callable[[Message], None] | None = None,
    timeout: float = 10.0,
    batch_size: int = 500,
) -> int:
    """Assign `topic[partition]` at `start_offset`, hand every record to `on_message` (the stop record
    included) until `until(record)` is true; returns the offset after the stop record.

    Raises `ReadTimeout` after `timeout` seconds without meeting the condition. Leaves the consumer
    assigned at the returned position, so a later call may continue from there.
    """
    consumer.assign([TopicPartition(topic, partition, start_offset)])
    deadline = time.monotonic() + timeout
    position = start_offset
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReadTimeout(
                f"reading {topic}[{partition}] from offset {start_offset}: stop condition not met within "
                f"{timeout}s (read up to offset {position})"
            )
        # poll() returns as soon as one record is there; consume(timeout=0) then takes what is
        # already fetched. (consume() with a timeout would wait for a *full* batch.)
        first = consumer.poll(min(remaining, 0.5))
        if first is None:
            continue
        for msg in [first, *consumer.consume(batch_size, timeout=0)]:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            offset = msg.offset()
            if offset is None or msg.topic() != topic or msg.partition() != partition:
                continue
            position = offset + 1
            if on_message is not None:
                on_message(msg)
            if until(msg):
                return position


def read_to_offset(
    consumer: Consumer,
    topic: str,
    partition: int,
    start_offset: int,
    last_offset: int,
    *,
    on_message: Callable[[Message], None] | None = None,
    timeout: float = 10.0,
) -> int:
    """Read `topic[partition]` from `start_offset` through `last_offset` (e.g. the offset of your own write).

    Returns the next offset. A `last_offset` below `start_offset` reads nothing.
    """
    if last_offset < start_offset:
        return start_offset
    return read_partition(
        consumer,
        topic,
        partition,
        start_offset,
        until=lambda m: (m.offset() or 0) >= last_offset,
        on_message=on_message,
        timeout=timeout,
    )


def read_to_end(
    producer: Producer,
    consumer: Consumer,
    topic: str,
    partition: int,
    start_offset: int,
    *,
    on_message: Callable[[Message], None] | None = None,
    timeout: float = 10.0,
) -> int:
    """Write a marker to `topic[partition]` and read from `start_offset` until that marker.

    Every record written before the marker was delivered is seen. Returns the offset after the marker
    (the position a reader can call "caught up"). `producer` is served synchronously (`produce_sync`).
    """
    marker = produce_sync(producer, topic, None, new_marker_key(), partition=partition, timeout=timeout)
    marker_offset = marker.offset()
    assert marker_offset is not None  # a delivered record always has one
    return read_to_offset(
        consumer, topic, partition, start_offset, marker_offset, on_message=on_message, timeout=timeout
    )

"""The dead letter topic: building DLQ records, listing them, replaying them.

A DLQ record keeps the original key, value and headers and adds Kafka Connect's error-context headers
(`app/kafka/headers.py`). Replay re-produces the original onto its topic with `quasar-attempt` + 1 and
writes a replay marker (`__marker__/replayed/<partition>/<offset>`) to the DLQ, so a second replay skips
records already replayed (unless asked for all) and `list` can show it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, Producer

from app.errors import QuasarError
from app.kafka import headers as H
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config, reader_config
from app.kafka.consumer import MARKER_PREFIX, read_to_end
from app.kafka.names import TopicNames
from app.kafka.producer import produce_sync
from app.settings import Settings

__all__ = ["DLQ_MAX_RECORD_BYTES", "DlqEntry", "dlq_headers", "dlq_value", "list_dlq", "replay_dlq"]

# Under librdkafka's default message.max.bytes (1,000,000) with room for the batch overhead: a DLQ
# record above it would fail delivery and stop the worker on a record it can never get past.
DLQ_MAX_RECORD_BYTES = 990_000

_REPLAYED = MARKER_PREFIX + b"replayed/"
# Headers the worker adds; stripped from the original before new ones are added (replays fail again).
_CONTEXT = frozenset(
    {
        H.ATTEMPT,
        H.DLQ_CHANNEL,
        H.DLQ_ERROR_CODE,
        H.DLQ_ERROR_MESSAGE,
        H.DLQ_ATTEMPTS,
        H.DLQ_FIRST_FAILED_AT,
        H.DLQ_ORIGINAL_TOPIC,
        H.DLQ_ORIGINAL_PARTITION,
        H.DLQ_ORIGINAL_OFFSET,
        H.DLQ_VALUE_DROPPED,
    }
)

# The list form confluent-kafka hands out and accepts (values are bytes on consumed records).
HeaderList = list[tuple[str, str | bytes | None]]


def dlq_headers(
    original: H.RawHeaders,
    *,
    channel: str,
    error: QuasarError,
    attempts: int,
    first_failed_ms: int,
    topic: str,
    partition: int,
    offset: int,
) -> HeaderList:
    """Original headers (minus old error context) + the error context of this failure."""
    items = original.items() if isinstance(original, Mapping) else original or ()
    out: HeaderList = [(k, v) for k, v in items if k not in _CONTEXT]
    out += [
        (H.DLQ_CHANNEL, channel.encode()),
        (H.DLQ_ERROR_CODE, error.code.encode()),
        (H.DLQ_ERROR_MESSAGE, error.message.encode()[:4096]),
        (H.DLQ_ATTEMPTS, str(attempts).encode()),
        (H.DLQ_FIRST_FAILED_AT, str(first_failed_ms).encode()),
        (H.DLQ_ORIGINAL_TOPIC, topic.encode()),
        (H.DLQ_ORIGINAL_PARTITION, str(partition).encode()),
        (H.DLQ_ORIGINAL_OFFSET, str(offset).encode()),
    ]
    return out


def dlq_value(value: bytes | None, headers: HeaderList) -> tuple[bytes | None, HeaderList]:
    """The DLQ copy of `value`: itself, or None plus `quasar-dlq-value-dropped: <size>` when the record
    would be too large to produce (the original stays readable at its topic/partition/offset)."""
    if value is None:
        return None, headers
    size = len(value) + sum(len(k) + len(v or b"") for k, v in headers)
    if size <= DLQ_MAX_RECORD_BYTES:
        return value, headers
    return None, [*headers, (H.DLQ_VALUE_DROPPED, str(len(value)).encode())]


@dataclass
class DlqEntry:
    """One dead letter, as read back from the DLQ topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList
    channel: str
    code: str
    message: str
    attempts: int
    first_failed_at: int
    topic: str
    original_partition: int
    original_offset: int
    replayed: bool = field(default=False)

    @classmethod
    def from_message(cls, msg: Message) -> DlqEntry:
        headers = msg.headers()
        raw: HeaderList = list(headers.items() if isinstance(headers, dict) else headers or ())
        hm = H.header_map(raw)
        partition, offset = msg.partition(), msg.offset()
        return cls(
            # never None on a consumed record; -1 only satisfies the optional types
            partition=-1 if partition is None else partition,
            offset=-1 if offset is None else offset,
            key=msg.key(),
            value=msg.value(),
            headers=raw,
            channel=hm.get(H.DLQ_CHANNEL, ""),
            code=hm.get(H.DLQ_ERROR_CODE, ""),
            message=hm.get(H.DLQ_ERROR_MESSAGE, ""),
            attempts=_int(hm.get(H.DLQ_ATTEMPTS), 1),
            first_failed_at=_int(hm.get(H.DLQ_FIRST_FAILED_AT), 0),
            topic=hm.get(H.DLQ_ORIGINAL_TOPIC, ""),
            original_partition=_int(hm.get(H.DLQ_ORIGINAL_PARTITION), -1),
            original_offset=_int(hm.get(H.DLQ_ORIGINAL_OFFSET), -1),
        )

    def replay_headers(self) -> HeaderList:
        """The original headers with `quasar-attempt` = attempts + 1 and the first failure time kept."""
        out: HeaderList = [(k, v) for k, v in self.headers if k not in _CONTEXT]
        out.append((H.ATTEMPT, str(self.attempts + 1).encode()))
        if self.first_failed_at:
            out.append((H.DLQ_FIRST_FAILED_AT, str(self.first_failed_at).encode()))
        return out


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def list_dlq(settings: Settings, *, code: str | None = None, timeout: float = 30.0) -> list[DlqEntry]:
    """Every dead letter (optionally of one error code), oldest first per partition.

    Reads each DLQ partition up to a marker written now (Tansu's end offsets are not trusted).
    """
    topic = TopicNames(settings.topic_prefix).dlq
    partitions = topic_partitions(create_admin(settings)).get(topic)
    if partitions is None:
        raise QuasarError(f"DLQ topic {topic!r} does not exist: run `quasar topics apply`")
    producer = Producer(producer_config(settings, client_id="quasar-dlq", **{"linger.ms": 0}))
    entries: list[DlqEntry] = []
    replayed: set[tuple[int, int]] = set()
    for partition in range(partitions):
        consumer = Consumer(reader_config(settings, client_id="quasar-dlq"))
        try:

            def collect(msg: Message, partition: int = partition) -> None:
                key = msg.key() or b""
                if key.startswith(_REPLAYED):
                    p, _, o = key[len(_REPLAYED) :].decode().partition("/")
                    replayed.add((int(p), int(o)))
                elif not key.startswith(MARKER_PREFIX):
                    entries.append(DlqEntry.from_message(msg))

            read_to_end(producer, consumer, topic, partition, 0, on_message=collect, timeout=timeout)
        finally:
            consumer.close()
    for e in entries:
        e.replayed = (e.partition, e.offset) in replayed
    if code:
        entries = [e for e in entries if e.code == code]
    return entries


def replay_dlq(
    settings: Settings,
    *,
    code: str | None = None,
    include_replayed: bool = False,
    timeout: float = 30.0,
) -> list[DlqEntry]:
    """Re-produce dead letters onto their original topics (attempt + 1); returns the replayed entries."""
    entries = [e for e in list_dlq(settings, code=code, timeout=timeout) if include_replayed or not e.replayed]
    dlq = TopicNames(settings.topic_prefix).dlq
    producer = Producer(producer_config(settings, client_id="quasar-dlq-replay"))
    done: list[DlqEntry] = []
    deadline = time.monotonic() + timeout
    for e in entries:
        if not e.topic:
            continue  # not a Quasar dead letter: nothing says where it came from
        if any(k == H.DLQ_VALUE_DROPPED for k, _ in e.headers):
            continue  # no copy of the value to replay (it is still at its original offset)
        remaining = max(1.0, deadline - time.monotonic())
        produce_sync(producer, e.topic, e.value, e.key, headers=e.replay_headers(), timeout=remaining)
        marker = _REPLAYED + f"{e.partition}/{e.offset}".encode()
        produce_sync(producer, dlq, None, marker, partition=e.partition, timeout=remaining)
        done.append(e)
    return done

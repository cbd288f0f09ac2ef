"""The dead letter topic: listing dead letters, replaying them (the pipeline builds them).

A DLQ record keeps the original key, value and headers and adds Kafka Connect's error-context headers
(`app/kafka/headers.py`). Replay re-produces the original onto its topic with `quasar-attempt` + 1 and
writes a replay marker (`__marker__/replayed/<partition>/<offset>`) to the DLQ, so a second replay skips
records already replayed (unless asked for all) and `list` can show it.
"""

from __future__ import annotations

import time
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

__all__ = ["DlqEntry", "list_dlq", "replay_dlq"]

_REPLAYED = MARKER_PREFIX + b"replayed/"
# Headers a dead letter adds; stripped from the original before replaying it (a replay that fails again
# gets fresh ones).
_CONTEXT = H.DLQ_CONTEXT | {H.ATTEMPT}

# The list form confluent-kafka hands out and accepts (values are bytes on consumed records).
HeaderList = list[tuple[str, str | bytes | None]]


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

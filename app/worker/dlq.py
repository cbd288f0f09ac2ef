"""The dead letter topic: listing dead letters, replaying them (the pipeline builds them).

A DLQ record keeps the original key, value and headers and adds Kafka Connect's error-context headers
(`app/kafka/headers.py`). Listing is read-only (no marker records, no write rights needed). Replay
(by code, channel, DLQ offset range or time range; onto the original topic or another one) re-produces the
original with `quasar-attempt` + 1 and writes a replay marker (`__marker__/replayed/<partition>/<offset>`)
to the DLQ, so a second replay skips records already replayed (unless asked for all) and `list` shows it;
its report says why anything matching was not replayed, or why nothing matched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Message, Producer

from app.digits import is_uint, parse_uint
from app.errors import QuasarError
from app.kafka import headers as H
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config
from app.kafka.consumer import MARKER_PREFIX
from app.kafka.names import TopicNames
from app.kafka.producer import produce_sync
from app.kafka.retained import read_partition
from app.settings import Settings

__all__ = ["DlqEntry", "DlqFilter", "ReplayReport", "list_dlq", "replay_dlq", "replay_report"]

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
    dead_lettered_at: int = 0  # the DLQ record's timestamp (epoch ms)
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
            dead_lettered_at=max(0, msg.timestamp()[1]),
        )

    def replay_headers(self) -> HeaderList:
        """The original headers with `quasar-attempt` = attempts + 1 and the first failure time kept.

        A sync request's caller already had its answer (the error): the replay carries no deadline (it would
        expire at once, traced and never run) and no reply address (nobody waits for it)."""
        out: HeaderList = [(k, v) for k, v in self.headers if k not in _CONTEXT and k not in _CALLER]
        out.append((H.ATTEMPT, str(self.attempts + 1).encode()))
        if self.first_failed_at:
            out.append((H.DLQ_FIRST_FAILED_AT, str(self.first_failed_at).encode()))
        return out


_CALLER = frozenset({H.DEADLINE, H.REPLY_TO, H.CORRELATION_ID})


def _int(value: str | None, default: int) -> int:
    """A context header's number (written by a worker, but a dead letter can be produced by anyone)."""
    parsed = parse_uint(value)
    return default if parsed is None else parsed


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters a command is about (every field optional; all given ones must match)."""

    code: str | None = None
    channel: str | None = None
    partition: int | None = None  # DLQ partition
    from_offset: int | None = None  # DLQ offsets, inclusive
    to_offset: int | None = None
    since_ms: int | None = None  # time the record was dead-lettered (epoch ms), inclusive
    until_ms: int | None = None

    def matches(self, e: DlqEntry) -> bool:
        return (
            (self.code is None or e.code == self.code)
            and (self.channel is None or e.channel == self.channel)
            and (self.partition is None or e.partition == self.partition)
            and (self.from_offset is None or e.offset >= self.from_offset)
            and (self.to_offset is None or e.offset <= self.to_offset)
            and (self.since_ms is None or e.dead_lettered_at >= self.since_ms)
            and (self.until_ms is None or e.dead_lettered_at <= self.until_ms)
        )

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts) or "no filter"


def list_dlq(
    settings: Settings,
    *,
    code: str | None = None,
    where: DlqFilter | None = None,
    timeout: float = 30.0,
) -> list[DlqEntry]:
    """Every dead letter matching the filter, oldest first per partition. Read-only."""
    topic = TopicNames(settings.topic_prefix).dlq
    partitions = topic_partitions(create_admin(settings)).get(topic)
    if partitions is None:
        raise QuasarError(f"DLQ topic {topic!r} does not exist: run `quasar topics apply`")
    where = where or DlqFilter(code=code)
    entries: list[DlqEntry] = []
    replayed: set[tuple[int, int]] = set()
    for partition in range(partitions):
        for msg in read_partition(settings, topic, partition, timeout=timeout, client_id="quasar-dlq"):
            key = msg.key() or b""
            if _is_marker(msg, key):
                if key.startswith(_REPLAYED):
                    p, _, o = key[len(_REPLAYED) :].decode(errors="replace").partition("/")
                    if is_uint(p) and is_uint(o):
                        replayed.add((int(p), int(o)))
            else:
                entries.append(DlqEntry.from_message(msg))
    for e in entries:
        e.replayed = (e.partition, e.offset) in replayed
    return [e for e in entries if where.matches(e)]


def _is_marker(msg: Message, key: bytes) -> bool:
    """A marker record (replay or reader marker): a marker key, no value, no headers. A dead letter keeps
    the original record's key, which a producer may have crafted to look like a marker (it used to hide
    the dead letter, or mark another as replayed); a dead letter always has a value or headers."""
    return key.startswith(MARKER_PREFIX) and msg.value() is None and not msg.headers()


@dataclass
class ReplayReport:
    """What a replay did, and why it did not replay the rest."""

    replayed: list[DlqEntry]
    matched: int  # dead letters matching the filter
    total: int  # dead letters in the topic
    skipped: dict[str, int]  # reason -> count
    where: DlqFilter

    def explain(self) -> str:
        text = f"replayed {len(self.replayed)} of {self.matched} matching dead letter(s) ({self.where.describe()})"
        if not self.total:
            return text + ": the DLQ is empty"
        if not self.matched:
            return text + f": none of the {self.total} dead letter(s) matches the filter"
        reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        return text + (f"; skipped: {reasons}" if reasons else "")


def replay_report(
    settings: Settings,
    *,
    where: DlqFilter | None = None,
    include_replayed: bool = False,
    to_topic: str | None = None,
    timeout: float = 30.0,
) -> ReplayReport:
    """Re-produce matching dead letters onto their original topics (or `to_topic`) with attempt + 1."""
    where = where or DlqFilter()
    everything = list_dlq(settings, where=DlqFilter(), timeout=timeout)
    matched = [e for e in everything if where.matches(e)]
    skipped = {"already replayed (use --all)": 0, "not a Quasar dead letter": 0, "value too large to copy": 0}
    dlq = TopicNames(settings.topic_prefix).dlq
    producer = Producer(producer_config(settings, client_id="quasar-dlq-replay"))
    done: list[DlqEntry] = []
    deadline = time.monotonic() + timeout
    for e in matched:
        if e.replayed and not include_replayed:
            skipped["already replayed (use --all)"] += 1
            continue
        if not e.topic and not to_topic:
            skipped["not a Quasar dead letter"] += 1  # nothing says where it came from
            continue
        if any(k == H.DLQ_VALUE_DROPPED for k, _ in e.headers):
            skipped["value too large to copy"] += 1  # still readable at its original offset
            continue
        remaining = max(1.0, deadline - time.monotonic())
        produce_sync(producer, to_topic or e.topic, e.value, e.key, headers=e.replay_headers(), timeout=remaining)
        marker = _REPLAYED + f"{e.partition}/{e.offset}".encode()
        produce_sync(producer, dlq, None, marker, partition=e.partition, timeout=remaining)
        done.append(e)
    return ReplayReport(done, len(matched), len(everything), skipped, where)


def replay_dlq(
    settings: Settings,
    *,
    code: str | None = None,
    include_replayed: bool = False,
    timeout: float = 30.0,
) -> list[DlqEntry]:
    """`replay_report` by error code; returns the replayed entries."""
    return replay_report(
        settings, where=DlqFilter(code=code), include_replayed=include_replayed, timeout=timeout
    ).replayed

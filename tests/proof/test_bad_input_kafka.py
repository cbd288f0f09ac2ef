"""A corpus of malformed records produced straight onto channel topics, against a real `quasar worker`.

Each bad record must end in the DLQ with its reason (`__connect.errors.exception.class.name`) and its
origin (topic / partition / offset) in the headers, key and value kept; the worker must keep going: valid
records produced after the corpus are processed normally. Decisions recorded here:
- a tombstone (null value) is not a request: DLQ'd as DECODE_ERROR, never silently dropped;
- a null key is legal Kafka: a valid record without a key is processed, a bad one is DLQ'd with key None;
- malformed Quasar control headers (deadline, non-UTF-8 values) make the envelope invalid; a reply-to that
  is not one of the configured reply topics is refused (REPLY_TO_REFUSED, nothing written there).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import fastavro
import orjson
import pytest
from confluent_kafka import Message

from app.kafka import headers as H
from app.worker.codec import SCHEMAS_DIR
from tests.proof._fuzz_support import AVRO_CHANNEL, JSON_CHANNEL, FuzzStack, read_until

Headers = list[tuple[str, bytes | None]]


@dataclass
class Bad:
    """One corpus entry: what to produce and the DLQ error code it must end with."""

    name: str
    channel: str
    value: bytes | None
    code: str
    key: bytes | None = b"k"
    headers: Headers | None = None
    message_part: str = ""  # a piece of the DLQ error message (the reason is readable, not just a code)
    value_dropped: bool = False  # too big to copy: the DLQ keeps the reference, not the bytes


def _avro(record: dict[str, object]) -> bytes:
    schema = fastavro.parse_schema(orjson.loads((SCHEMAS_DIR / "order.avsc").read_bytes()))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _nested(depth: int) -> bytes:
    return b'{"data":' + b"[" * depth + b"]" * depth + b"}"


def corpus(replies: str) -> list[Bad]:
    """The corpus; `replies` is the reply topic (for reply-to headers naming a missing partition)."""
    big = 256 * 1024  # QUASAR_WORKER_MAX_RECORD_BYTES of the fuzz stack
    return [
        Bad("not-json", JSON_CHANNEL, b"{not json", "DECODE_ERROR", message_part="not valid JSON"),
        Bad("invalid-utf8", JSON_CHANNEL, b'{"data": "\xff\xfe"}', "DECODE_ERROR"),
        Bad("json-array", JSON_CHANNEL, b"[1, 2]", "INVALID_ENVELOPE", message_part="list"),
        Bad("json-scalar", JSON_CHANNEL, b"42", "INVALID_ENVELOPE"),
        Bad("json-string", JSON_CHANNEL, b'"data"', "INVALID_ENVELOPE"),
        Bad("missing-data", JSON_CHANNEL, b'{"metadata": {}}', "INVALID_ENVELOPE", message_part="'data'"),
        Bad("metadata-not-object", JSON_CHANNEL, b'{"data": 1, "metadata": [1]}', "INVALID_ENVELOPE"),
        Bad("nested-300", JSON_CHANNEL, _nested(300), "DECODE_ERROR", message_part="deeper"),
        Bad("nested-5000", JSON_CHANNEL, _nested(5000), "DECODE_ERROR"),
        Bad("empty-value", JSON_CHANNEL, b"", "DECODE_ERROR", message_part="empty"),
        Bad("tombstone", JSON_CHANNEL, None, "DECODE_ERROR", message_part="tombstone"),
        Bad("null-key-bad", JSON_CHANNEL, b"nope", "DECODE_ERROR", key=None),
        Bad(
            "over-worker-limit",
            JSON_CHANNEL,
            b'{"data": "' + b"x" * (big + 1) + b'"}',
            "PAYLOAD_TOO_LARGE",
            message_part="limit",
        ),
        Bad(
            "near-record-budget",  # QUASAR_MAX_RECORD_BYTES of the fuzz stack is 1,000,000: no room for the
            JSON_CHANNEL,  # dead letter's headers next to this value
            b'{"data": "' + b"y" * 999_700 + b'"}',
            "PAYLOAD_TOO_LARGE",
            value_dropped=True,
        ),
        Bad(
            "above-record-budget",  # Kafka's broker default (1,048,588) > the stack's budget (1,000,000)
            JSON_CHANNEL,
            b'{"data": "' + b"z" * 1_040_000 + b'"}',
            "PAYLOAD_TOO_LARGE",
            value_dropped=True,
        ),
        Bad(
            "result-too-large",  # valid and under the record limit, but the reply would exceed its limit
            JSON_CHANNEL,
            b'{"data": "' + b"r" * (200 * 1024) + b'"}',
            "RESPONSE_TOO_LARGE",
            message_part="limit",
        ),
        Bad(
            "deadline-garbage",
            JSON_CHANNEL,
            b'{"data": {}}',
            "INVALID_ENVELOPE",
            headers=[(H.DEADLINE, b"tomorrow")],
            message_part=H.DEADLINE,
        ),
        Bad(
            "reply-to-no-partition",
            JSON_CHANNEL,
            b'{"data": {}}',
            "REPLY_TO_REFUSED",
            headers=[(H.REPLY_TO, b"nowhere"), (H.CORRELATION_ID, b"c-1")],
            message_part=H.REPLY_TO,
        ),
        Bad(
            "reply-to-without-correlation",
            JSON_CHANNEL,
            b'{"data": {}}',
            "REPLY_TO_REFUSED",
            headers=[(H.REPLY_TO, f"{replies}:0".encode())],
        ),
        Bad(
            "reply-to-missing-partition",  # the partition does not exist: must not stop the worker
            JSON_CHANNEL,
            b'{"data": {}}',
            "REPLY_TO_REFUSED",
            headers=[(H.REPLY_TO, f"{replies}:9999".encode()), (H.CORRELATION_ID, b"c-2")],
        ),
        Bad(
            "reply-to-unknown-topic",
            JSON_CHANNEL,
            b'{"data": {}}',
            "REPLY_TO_REFUSED",
            headers=[(H.REPLY_TO, f"{replies}-nobody:0".encode()), (H.CORRELATION_ID, b"c-5")],
            message_part="not a reply topic",
        ),
        Bad(
            "reply-to-bad-topic-name",
            JSON_CHANNEL,
            b'{"data": {}}',
            "REPLY_TO_REFUSED",
            headers=[(H.REPLY_TO, b"no such/topic!:0"), (H.CORRELATION_ID, b"c-3")],
        ),
        Bad(
            "reply-to-not-utf8",
            JSON_CHANNEL,
            b'{"data": {}}',
            "INVALID_ENVELOPE",
            headers=[(H.REPLY_TO, b"\xff\xfe:0"), (H.CORRELATION_ID, b"c-4")],
            message_part="UTF-8",
        ),
        Bad(
            "foreign-header-not-utf8",  # an unrelated header is not ours to judge: kept verbatim
            JSON_CHANNEL,
            b"{oops",
            "DECODE_ERROR",
            headers=[("x-binary", b"\x00\xff\x80"), ("x-empty", None)],
        ),
        Bad("avro-garbage", AVRO_CHANNEL, b"\x07\x01", "AVRO_MISMATCH"),
        Bad("avro-got-json", AVRO_CHANNEL, b'{"data": {"amount": 1}}', "AVRO_MISMATCH"),
        Bad(
            "avro-trailing-bytes",
            AVRO_CHANNEL,
            _avro({"amount": 1.5, "product": "p", "country": None}) + b"\x00\x00",
            "AVRO_MISMATCH",
            message_part="trailing",
        ),
        Bad("avro-empty", AVRO_CHANNEL, b"", "AVRO_MISMATCH"),
        Bad("avro-tombstone", AVRO_CHANNEL, None, "AVRO_MISMATCH"),
    ]


# (corpus, (partition, offset) of each produced record, DLQ records by original topic/partition/offset)
DeadLetters = tuple[list["Bad"], list[tuple[int, int]], dict[tuple[str, int, int], Message]]


def _hm(msg: Message) -> dict[str, str]:
    return H.header_map(msg.headers())


def _dlq_by_origin(records: list[Message]) -> dict[tuple[str, int, int], Message]:
    out: dict[tuple[str, int, int], Message] = {}
    for msg in records:
        hm = _hm(msg)
        if H.DLQ_ORIGINAL_TOPIC in hm:
            key = (
                hm[H.DLQ_ORIGINAL_TOPIC],
                int(hm[H.DLQ_ORIGINAL_PARTITION]),
                int(hm[H.DLQ_ORIGINAL_OFFSET]),
            )
            out[key] = msg
    return out


def _outputs_with(marker: str) -> Callable[[list[Message]], bool]:
    return lambda records: any(marker.encode() in (m.value() or b"") for m in records)


@pytest.fixture(scope="module")
def dead_letters(fuzz_stack: FuzzStack) -> DeadLetters:
    """Produce the corpus, then read the DLQ until every corpus record is there (bounded)."""
    entries = corpus(fuzz_stack.names.replies)
    sent = [
        fuzz_stack.produce(fuzz_stack.names.channel(b.channel), b.value, key=b.key, headers=b.headers) for b in entries
    ]
    wanted = {(fuzz_stack.names.channel(b.channel), p, o) for b, (p, o) in zip(entries, sent, strict=True)}

    seen: set[tuple[str, int, int]] = set()

    def complete(records: list[Message]) -> bool:
        fuzz_stack.alive()  # a dead worker fails fast instead of timing out
        seen.update(_dlq_by_origin(records))
        return wanted <= seen

    try:
        records = read_until(fuzz_stack.settings, fuzz_stack.names.dlq, complete, timeout=60)
    except AssertionError as exc:
        missing = [
            b.name
            for b, (p, o) in zip(entries, sent, strict=True)
            if (fuzz_stack.names.channel(b.channel), p, o) not in seen
        ]
        raise AssertionError(f"not dead-lettered: {missing}") from exc
    return entries, sent, _dlq_by_origin(records)


NAMES = [b.name for b in corpus("replies")]


@pytest.mark.parametrize("name", NAMES)
def test_each_bad_record_is_dead_lettered_with_its_reason_and_origin(
    fuzz_stack: FuzzStack, dead_letters: DeadLetters, name: str
) -> None:
    entries, sent, dlq = dead_letters
    index = NAMES.index(name)
    bad = entries[index]
    partition, offset = sent[index]
    topic = fuzz_stack.names.channel(bad.channel)
    dead = dlq[(topic, partition, offset)]
    hm = _hm(dead)
    assert hm[H.DLQ_ERROR_CODE] == bad.code, (bad.name, hm.get(H.DLQ_ERROR_MESSAGE))
    assert hm[H.DLQ_ORIGINAL_TOPIC] == topic
    assert (int(hm[H.DLQ_ORIGINAL_PARTITION]), int(hm[H.DLQ_ORIGINAL_OFFSET])) == (partition, offset)
    assert hm[H.DLQ_CHANNEL] == bad.channel
    assert hm[H.DLQ_ERROR_MESSAGE], bad.name
    assert bad.message_part in hm[H.DLQ_ERROR_MESSAGE], (bad.name, hm[H.DLQ_ERROR_MESSAGE])
    assert dead.key() == bad.key, bad.name
    if bad.value_dropped:
        assert bad.value is not None and dead.value() is None, bad.name
        assert hm[H.DLQ_VALUE_DROPPED] == str(len(bad.value))
    else:
        assert dead.value() == bad.value, bad.name  # the original bytes, for inspection and replay
    # Original headers ride along byte for byte (non-UTF-8 ones included), before the error context.
    original = [(k, v) for k, v in dead.headers() or [] if not k.startswith(("__connect.", "quasar-dlq-"))]
    assert original == list(bad.headers or []), bad.name


def test_worker_keeps_going_after_the_corpus(fuzz_stack: FuzzStack, dead_letters: DeadLetters) -> None:
    json_marker = f"after-corpus-{uuid.uuid4().hex}"
    # A valid record without a key is legal Kafka: processed, not dead-lettered.
    fuzz_stack.produce(
        fuzz_stack.names.channel(JSON_CHANNEL),
        orjson.dumps({"data": {"marker": json_marker}}),
        key=None,
    )
    avro_marker = f"avro-{uuid.uuid4().hex}"
    fuzz_stack.produce(
        fuzz_stack.names.channel(AVRO_CHANNEL),
        _avro({"amount": 7.0, "product": avro_marker, "country": "DE"}),
        key=b"a",
    )
    out = read_until(fuzz_stack.settings, fuzz_stack.names.output(JSON_CHANNEL), _outputs_with(json_marker), timeout=30)
    body = next(orjson.loads(m.value()) for m in out if json_marker.encode() in m.value())
    assert body["status"] == "ok" and body["data"]["req"] == {"marker": json_marker}
    out = read_until(fuzz_stack.settings, fuzz_stack.names.output(AVRO_CHANNEL), _outputs_with(avro_marker), timeout=30)
    body = next(orjson.loads(m.value()) for m in out if avro_marker.encode() in m.value())
    assert body["data"]["req"] == {"amount": 7.0, "product": avro_marker, "country": "DE"}
    fuzz_stack.alive()

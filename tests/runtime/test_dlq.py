"""Dead letters against the real broker: what lands in the DLQ, with which headers, and replaying it."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from app.kafka import headers as H
from app.kafka.admin import create_admin
from app.kafka.topics import TopicPlan, apply_topics
from app.settings import Settings
from app.worker import metrics as M
from app.worker.codec import SCHEMAS_DIR
from app.worker.dlq import DlqEntry, DlqFilter, list_dlq, replay_dlq, replay_report
from tests.runtime.worker_support import COMPLEX, Runtime, dlq_headers, read_records

ROOT = Path(__file__).resolve().parents[2]
FAILING = {  # parse_xml on a JSON payload: a non-retryable VALIDATION_ERROR (400)
    "name": "failing",
    "condition": True,
    "tasks": [
        {
            "id": "xml",
            "name": "xml",
            "function": {"name": "parse_xml", "input": {"source": "payload", "target": "doc"}},
        }
    ],
}
UNKNOWN_CONNECTOR = {  # a connector that does not exist: deterministic, never retried
    "name": "unknown-connector",
    "condition": True,
    "tasks": [
        {
            "id": "call",
            "name": "call",
            "function": {"name": "http_call", "input": {"connector": "nowhere", "method": "GET"}},
        }
    ],
}


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings.model_copy(update={"worker_retry_backoff_ms": 10, "worker_max_attempts": 3}))
    await runtime.reader.ready(20)
    yield runtime
    await runtime.close()


async def test_undecodable_record_goes_to_dlq_with_connect_headers(rt: Runtime) -> None:
    await rt.activate("orders")
    await rt.worker()
    before = time.time() * 1000
    sent = rt.send("orders", b"{not json", key="k-1", headers={H.REQUEST_ID: "r-1"})
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    assert dead.key() == b"k-1" and dead.value() == b"{not json"
    hm = dlq_headers(dead)
    assert hm[H.REQUEST_ID] == "r-1"  # original headers kept
    assert hm[H.DLQ_ERROR_CODE] == "DECODE_ERROR"
    assert "not valid JSON" in hm[H.DLQ_ERROR_MESSAGE]
    assert hm[H.DLQ_CHANNEL] == "orders" and hm[H.DLQ_ATTEMPTS] == "1"
    assert hm[H.DLQ_ORIGINAL_TOPIC] == rt.names.channel("orders")
    assert (hm[H.DLQ_ORIGINAL_PARTITION], hm[H.DLQ_ORIGINAL_OFFSET]) == (
        str(sent.partition()),
        str(sent.offset()),
    )
    assert before <= int(hm[H.DLQ_FIRST_FAILED_AT]) <= time.time() * 1000


async def test_bad_envelope_goes_to_dlq_and_sync_caller_gets_the_error(rt: Runtime) -> None:
    await rt.activate("quotes", channel_type="sync", output=False)
    await rt.worker()
    cid = uuid.uuid4().hex
    rt.send("quotes", [1, 2], headers={H.REPLY_TO: f"{rt.names.replies}:0", H.CORRELATION_ID: cid})
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    assert dlq_headers(dead)[H.DLQ_ERROR_CODE] == "INVALID_ENVELOPE"
    (reply,) = await asyncio.to_thread(
        read_records, rt.settings, rt.names.replies, until=lambda r: len(r) >= 1, partitions=[0]
    )
    assert reply.key() == cid.encode() and H.header_map(reply.headers())[H.STATUS] == "400"
    assert orjson.loads(reply.value())["error"]["code"] == "INVALID_ENVELOPE"


async def test_avro_channel_decodes_matching_records_and_dead_letters_the_rest(rt: Runtime) -> None:
    assert (SCHEMAS_DIR / "order.avsc").exists()
    await rt.activate("avro", config={"avro_schema": "order"})
    await rt.worker()
    schema = fastavro.parse_schema(orjson.loads((SCHEMAS_DIR / "order.avsc").read_bytes()))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, {"amount": 12.5, "product": "pen", "country": "DE"})
    rt.send("avro", buf.getvalue(), key="good", headers={H.TRACE_ID: "good"})
    rt.send("avro", b"\x02\xff\xff", headers={H.TRACE_ID: "bad"})  # truncated: not an Order
    (out,) = await asyncio.to_thread(rt.outputs, "avro", 1)
    assert out.key() == b"good" and orjson.loads(out.value())["status"] == "ok"
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.DLQ_ERROR_CODE] == "AVRO_MISMATCH" and "Order" in hm[H.DLQ_ERROR_MESSAGE]
    assert hm[H.TRACE_ID] == "bad"


async def test_workflow_failure_goes_to_dlq_without_retry(rt: Runtime) -> None:
    await rt.activate("failing", FAILING)
    await rt.worker()
    rt.send("failing", {"data": {"a": 1}})
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.DLQ_ERROR_CODE] == "VALIDATION_ERROR" and hm[H.DLQ_ATTEMPTS] == "1"
    assert "parse_xml" in hm[H.DLQ_ERROR_MESSAGE]


async def test_deterministic_failure_is_dead_lettered_at_once_with_its_cause(rt: Runtime) -> None:
    await rt.activate("flaky", UNKNOWN_CONNECTOR)
    before = M.RETRIES.labels("flaky")._value.get()
    await rt.worker()
    rt.send("flaky", {"data": {}}, headers={H.TRACE_ID: "f-1"})
    rt.send("flaky", {"data": {}}, headers={H.TRACE_ID: "f-2"})
    dead = await asyncio.to_thread(rt.dlq, 2)
    for d in dead:
        hm = dlq_headers(d)
        assert hm[H.DLQ_ERROR_CODE] == "ENGINE_ERROR" and hm[H.DLQ_ATTEMPTS] == "1"
        # the cause: task, function and inner message (Kafka Connect's context headers)
        assert hm[H.DLQ_TASK_ID] == "call" and hm[H.DLQ_CLASS_NAME] == "http_call"
        assert "nowhere" in hm[H.DLQ_ERROR_MESSAGE] and hm[H.DLQ_CONNECTOR_NAME] == "flaky"
        assert hm[H.DLQ_STAGE] == "TASK_PUT"
    assert M.RETRIES.labels("flaky")._value.get() == before  # an unknown connector does not heal
    traces = await asyncio.to_thread(rt.traces, lambda r: {b"f-1", b"f-2"} <= {m.key() for m in r})
    assert all(orjson.loads(m.value())["status"] == "failed" for m in traces)


async def test_replay_reprocesses_dead_letters_once_after_the_fix(rt: Runtime) -> None:
    await rt.activate("fixme", FAILING)
    await rt.worker()
    rt.send("fixme", {"data": {"n": 1}}, key="x-1", headers={H.TRACE_ID: "x-1"})
    rt.send("fixme", b"{broken", headers={H.TRACE_ID: "x-2"})
    await asyncio.to_thread(rt.dlq, 2)
    await rt.new_workflow_version("fixme", COMPLEX)  # the fix

    replayed = await asyncio.to_thread(replay_dlq, rt.settings, code="VALIDATION_ERROR")
    assert [e.code for e in replayed] == ["VALIDATION_ERROR"]
    (out,) = await asyncio.to_thread(rt.outputs, "fixme", 1)
    assert out.key() == b"x-1" and orjson.loads(out.value())["data"]["order"]["tier"] == "standard"

    entries = await asyncio.to_thread(list_dlq, rt.settings)
    assert {(e.code, e.replayed) for e in entries} == {("VALIDATION_ERROR", True), ("DECODE_ERROR", False)}
    assert await asyncio.to_thread(replay_dlq, rt.settings, code="VALIDATION_ERROR") == []


async def test_replayed_record_that_fails_again_counts_its_attempts(rt: Runtime) -> None:
    await rt.activate("stubborn", FAILING)
    await rt.worker()
    rt.send("stubborn", {"data": {}})
    (first,) = await asyncio.to_thread(rt.dlq, 1)
    await asyncio.to_thread(replay_dlq, rt.settings)
    dead = await asyncio.to_thread(rt.dlq, 2)
    second = dlq_headers(dead[-1])
    assert second[H.DLQ_ATTEMPTS] == "2"
    assert second[H.DLQ_FIRST_FAILED_AT] == dlq_headers(first)[H.DLQ_FIRST_FAILED_AT]


async def test_dlq_cli_lists_and_filters(rt: Runtime) -> None:
    await rt.activate("cli")
    await rt.worker()
    rt.send("cli", b"nope")
    rt.send("cli", [1])
    await asyncio.to_thread(rt.dlq, 2)
    env = {
        **os.environ,
        "QUASAR_KAFKA_BOOTSTRAP": rt.settings.kafka_bootstrap or "",
        "QUASAR_TOPIC_PREFIX": rt.settings.topic_prefix,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "dlq", "list", "--json", "--code", "DECODE_ERROR"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r["code"] for r in rows] == ["DECODE_ERROR"]
    assert rows[0]["channel"] == "cli" and rows[0]["topic"] == rt.names.channel("cli")
    nothing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "dlq", "replay", "--code", "NO_SUCH_CODE"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nothing.returncode == 0, nothing.stderr
    assert "replayed 0" in nothing.stdout and "matches the filter" in nothing.stdout


async def test_list_is_read_only_and_replay_selects_by_offset_into_another_topic(rt: Runtime) -> None:
    await rt.activate("pick", FAILING)
    await rt.worker()
    for i in range(3):
        rt.send("pick", {"data": {"i": i}}, key=f"p-{i}")
    dead = await asyncio.to_thread(rt.dlq, 3)
    listed = await asyncio.to_thread(list_dlq, rt.settings)
    assert len(listed) == 3
    # Listing wrote nothing: the DLQ holds exactly the three dead letters.
    again = await asyncio.to_thread(read_records, rt.settings, rt.names.dlq, until=lambda r: len(r) >= 3, timeout=10)
    assert not any((m.key() or b"").startswith(b"__marker__/") for m in again)
    chosen = next(e for e in listed if e.key == b"p-1")
    target = f"{rt.settings.topic_prefix}repaired"
    apply_topics(create_admin(rt.settings), [TopicPlan(target, 1, 1, {})])
    where = DlqFilter(partition=chosen.partition, from_offset=chosen.offset, to_offset=chosen.offset)
    report = await asyncio.to_thread(replay_report, rt.settings, where=where, to_topic=target)
    assert [e.key for e in report.replayed] == [b"p-1"] and report.matched == 1
    (copy,) = await asyncio.to_thread(read_records, rt.settings, target, until=lambda r: len(r) >= 1)
    assert copy.key() == b"p-1" and H.header_map(copy.headers())[H.ATTEMPT] == "2"
    assert len(dead) == 3


async def test_a_replay_that_matches_nothing_says_why(rt: Runtime) -> None:
    await rt.activate("why", FAILING)
    await rt.worker()
    rt.send("why", {"data": {}})
    await asyncio.to_thread(rt.dlq, 1)
    nothing = await asyncio.to_thread(replay_report, rt.settings, where=DlqFilter(code="NO_SUCH_CODE"))
    assert nothing.replayed == [] and "none of the 1 dead letter(s) matches" in nothing.explain()
    (first,) = await asyncio.to_thread(list_dlq, rt.settings)
    just_it = DlqFilter(channel="why", partition=first.partition, from_offset=first.offset, to_offset=first.offset)
    once = await asyncio.to_thread(replay_report, rt.settings, where=just_it)
    assert len(once.replayed) == 1
    twice = await asyncio.to_thread(replay_report, rt.settings, where=just_it)
    assert twice.replayed == [] and "1 already replayed (use --all)" in twice.explain()
    later = await asyncio.to_thread(
        replay_report, rt.settings, where=DlqFilter(since_ms=int(time.time() * 1000) + 3_600_000)
    )
    assert later.matched == 0


async def test_dead_letters_with_crafted_keys_are_listed_and_mark_nothing(rt: Runtime) -> None:
    """Issue 14 (Low): a dead letter keeps its original key, which a producer can make look like a marker;
    it used to hide from `dlq list` (or mark another dead letter as replayed), and markup crashed the table."""
    from app.kafka.producer import produce_sync

    await rt.activate("crafted", FAILING)
    await rt.worker()
    rt.send("crafted", {"data": {"n": 0}}, key="plain")
    await asyncio.to_thread(rt.dlq, 1)
    (plain,) = await asyncio.to_thread(list_dlq, rt.settings, where=DlqFilter(channel="crafted"))
    forged = f"__marker__/replayed/{plain.partition}/{plain.offset}"
    rt.send("crafted", {"data": {"n": 1}}, key=forged)
    rt.send("crafted", {"data": {"n": 2}}, key="__marker__/hidden")
    # And one straight onto the DLQ with Rich markup in its headers.
    markup = [(H.DLQ_CHANNEL, b"crafted"), (H.DLQ_ERROR_CODE, b"[/]"), (H.DLQ_ERROR_MESSAGE, b"[bold]x[/] [/]")]
    produce_sync(rt.producer, rt.names.dlq, b"{}", b"markup", headers=markup)

    async def listed() -> list[Any]:
        rows = await asyncio.to_thread(list_dlq, rt.settings, where=DlqFilter(channel="crafted"))
        return rows if len(rows) >= 4 else []

    deadline = time.monotonic() + 30
    rows: list[Any] = []
    while not rows:
        assert time.monotonic() < deadline, "crafted dead letters never listed"
        rows = await listed()
    keys = {e.key for e in rows}
    assert {b"plain", forged.encode(), b"__marker__/hidden", b"markup"} <= keys
    assert not next(e for e in rows if e.key == b"plain").replayed  # the forged key marked nothing
    env = {
        **os.environ,
        "QUASAR_KAFKA_BOOTSTRAP": rt.settings.kafka_bootstrap or "",
        "QUASAR_TOPIC_PREFIX": rt.settings.topic_prefix,
    }
    table = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "dlq", "list", "--channel", "crafted"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "4 dead letter(s)" in table.stdout


def test_a_replayed_sync_request_carries_no_deadline_and_no_reply_address() -> None:
    # Review finding: the replay kept `quasar-deadline`, so a replayed sync request expired at once (traced,
    # never run) while the replay marker said it was replayed.
    entry = DlqEntry(
        partition=0,
        offset=5,
        key=b"k",
        value=b"{}",
        headers=[
            (H.DEADLINE, b"1700000000000"),
            (H.REPLY_TO, b"quasar.replies:0"),
            (H.CORRELATION_ID, b"c-1"),
            ("x-app", b"kept"),
            (H.DLQ_ERROR_CODE, b"VALIDATION_ERROR"),
            (H.ATTEMPT, b"1"),
        ],
        channel="ch",
        code="VALIDATION_ERROR",
        message="m",
        attempts=1,
        first_failed_at=1_700_000_000_000,
        topic="quasar.ch.ch",
        original_partition=0,
        original_offset=3,
    )
    headers = dict(entry.replay_headers())
    assert not {H.DEADLINE, H.REPLY_TO, H.CORRELATION_ID, H.DLQ_ERROR_CODE} & set(headers)
    assert headers["x-app"] == b"kept" and headers[H.ATTEMPT] == b"2"


@pytest.mark.parametrize("bad", ["²", "-3", "1_000", " 7 ", "9" * 5000, ""])
def test_a_dead_letter_with_hostile_context_numbers_is_listed_with_the_defaults(bad: str) -> None:
    # Anyone can produce to the DLQ topic: its numbers are parsed as ASCII digits only (app/digits.py);
    # `int()` took '1_000' and ' 7 ', and raised on 5,000 digits.
    class _Msg:
        def headers(self) -> list[tuple[str, bytes]]:
            value = bad.encode()
            return [
                (H.DLQ_ATTEMPTS, value),
                (H.DLQ_FIRST_FAILED_AT, value),
                (H.DLQ_ORIGINAL_PARTITION, value),
                (H.DLQ_ORIGINAL_OFFSET, value),
            ]

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 9

        def key(self) -> None:
            return None

        def value(self) -> bytes:
            return b"{}"

        def timestamp(self) -> tuple[int, int]:
            return (1, 5)

    entry = DlqEntry.from_message(_Msg())  # type: ignore[arg-type]
    assert (entry.attempts, entry.first_failed_at, entry.original_partition, entry.original_offset) == (1, 0, -1, -1)

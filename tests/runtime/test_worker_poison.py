"""Poison pills (issue 14, items 1-2): no record can stop the worker or keep its partition from moving on.

A running worker (its own event loop in a thread, so Hypothesis can drive it from plain test code) gets:
- the two records that crashed it before: a ~900 kB client-supplied `_quasar_call_chain` on a channel_call
  workflow (the error reply exceeded Kafka's limit) and a record with ~1 MB of headers (its DLQ copy did);
- random oversized and malformed records (values, keys, headers, reply-to addresses), each of which must be
  committed past while the worker stays up.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import orjson
import pytest
from confluent_kafka import Message, Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.kafka import headers as H
from app.kafka.config import producer_config
from app.kafka.producer import produce_sync
from app.settings import Settings
from app.worker.runner import ChannelWorker
from tests.runtime.worker_support import Runtime, read_records

T = TypeVar("T")

ECHO = {
    "name": "echo",
    "condition": True,
    "tasks": [
        {
            "id": "parse",
            "name": "parse",
            "function": {"name": "parse_json", "input": {"source": "payload", "target": "echo"}},
        }
    ],
}
CALLER = {
    "name": "caller",
    "condition": True,
    "tasks": [{"id": "call", "name": "call", "function": {"name": "channel_call", "input": {"channel": "callee"}}}],
}


class LiveWorker:
    """A runtime and a started worker on an event loop of their own (a background thread)."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-worker", daemon=True)
        self.thread.start()
        self.rt: Runtime = self.run(self._runtime(settings))
        # Records up to ~1 MB + headers: what a Kafka broker accepts by default (1,048,588).
        self.big = Producer(producer_config(settings, **{"linger.ms": 0, "message.max.bytes": 1_100_000}))
        for channel, wf, envelope in (("raw", ECHO, None), ("env", ECHO, "quasar"), ("callee", ECHO, "quasar")):
            self.run(self.rt.activate(channel, wf, envelope=envelope))
        self.run(self.rt.activate("caller", CALLER, channel_type="sync", output=False))
        self.worker: ChannelWorker = self.run(self.rt.worker())

    async def _runtime(self, settings: Settings) -> Runtime:
        rt = Runtime(settings)
        await rt.reader.ready(20)
        return rt

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def produce(
        self, channel: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> Message:
        return produce_sync(self.big, self.rt.names.channel(channel), value, key, headers=headers or None)

    def committed_past(self, msg: Message, within: float = 30) -> None:
        """Wait until the worker committed past `msg` (its partition moved on) while staying up."""
        where = (msg.topic(), msg.partition())
        deadline = time.monotonic() + within
        while self.worker.committed.get(where, -1) <= (msg.offset() or 0):
            assert self.worker.failure is None, f"worker stopped: {self.worker.failure!r}"
            assert time.monotonic() < deadline, f"offset {msg.offset()} of {where} not committed in {within}s"
            time.sleep(0.01)  # polling another thread's progress
        assert self.worker.failure is None

    def close(self) -> None:
        self.run(self.rt.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(module_settings: Settings) -> Iterator[LiveWorker]:
    worker = LiveWorker(module_settings.model_copy(update={"worker_retry_backoff_ms": 10}))
    yield worker
    worker.close()


def test_client_call_chain_cannot_crash_the_worker(live: LiveWorker) -> None:
    # issue 14 item 1: the chain came from client metadata, the error repeated it, the reply was > 1 MB.
    cid = uuid.uuid4().hex
    value = orjson.dumps({"data": {"n": 1}, "metadata": {"_quasar_call_chain": [""] * 300_000}})
    headers = [(H.REPLY_TO, f"{live.rt.names.replies}:0".encode()), (H.CORRELATION_ID, cid.encode())]
    sent = live.produce("caller", value, b"k", headers)
    live.committed_past(sent)
    (reply,) = read_records(
        live.rt.settings, live.rt.names.replies, partitions=[0], until=lambda r: any(m.key() == cid.encode() for m in r)
    )
    # The client's chain is ignored (internal fields never come from clients): the call just works.
    assert H.header_map(reply.headers())[H.STATUS] == "200"
    assert orjson.loads(reply.value())["data"]["echo"] == {"n": 1}


def test_a_megabyte_of_headers_cannot_crash_the_worker(live: LiveWorker) -> None:
    # issue 14 item 2: the DLQ copy kept every header and exceeded the producer's limit.
    headers = [(f"h-{i}", b"v" * 9_000) for i in range(110)]  # ~990 kB of headers
    sent = live.produce("env", b"{not json", b"poison", headers)
    live.committed_past(sent)
    dead = read_records(
        live.rt.settings,
        live.rt.names.dlq,
        until=lambda r: any(H.header_map(m.headers()).get(H.DLQ_ORIGINAL_OFFSET) == str(sent.offset()) for m in r),
    )
    hm = H.header_map(dead[-1].headers())
    assert hm[H.DLQ_ERROR_CODE] == "DECODE_ERROR" and int(hm[H.HEADERS_DROPPED]) > 0
    good = live.produce("env", orjson.dumps({"data": {"after": True}}), b"good", None)
    live.committed_past(good)


_HEADER_NAMES = st.sampled_from(
    [H.REPLY_TO, H.CORRELATION_ID, H.DEADLINE, H.MODE, H.CONFIG_OFFSET, H.ATTEMPT, "traceparent", "x-app"]
)


# Header text that passes `str.isdigit()` but not `int()` ('²', > 4,300 digits), and other near-numbers.
_NEAR_NUMBERS = st.sampled_from(["²", "1²", "9" * 5000, "٣", "-1", "", "12"]).map(str.encode)


# Reply addresses as templates (the topic prefix is known only at run time): no interactive draws, so every
# example is fully drawn before the test body runs.
_REPLY_TO = st.sampled_from(
    ["{p}replies:0", "{p}replies:999", "{p}config:0", "{p}ch.raw:0", "{p}replies:²", "x", ":", "a:b"]
)


def _values() -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        st.binary(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
            lambda c: st.lists(c) | st.dictionaries(st.text(max_size=8), c),
            max_leaves=20,
        ).map(orjson.dumps),
        st.builds(
            lambda n, c: b'{"data": "' + c.encode() * n + b'"}', st.integers(0, 1_030_000), st.sampled_from("xé")
        ),
        st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 3000)),
    )


# The records are megabyte-sized on purpose: hypothesis warns that their repr is large (an error under the
# suite's filterwarnings), which says nothing about the worker.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    channel=st.sampled_from(["raw", "env", "caller"]),
    value=_values(),
    key=st.one_of(st.none(), st.binary(max_size=300)),
    headers=st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=200) | _NEAR_NUMBERS), max_size=6),
    big_headers=st.integers(0, 100),
    reply_to=st.none() | _REPLY_TO,
)
def test_random_records_never_stop_the_worker(
    live: LiveWorker,
    channel: str,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    big_headers: int,
    reply_to: str | None,
) -> None:
    if reply_to is not None:
        address = reply_to.format(p=live.rt.settings.topic_prefix).encode()
        headers = [*headers, (H.REPLY_TO, address), (H.CORRELATION_ID, b"c")]
    room = 1_040_000 - len(value or b"") - len(key or b"")
    headers += [(f"pad-{i}", b"p" * 9_000) for i in range(min(big_headers, max(0, room // 9_100)))]
    sent = live.produce(channel, value, key, headers)
    live.committed_past(sent)

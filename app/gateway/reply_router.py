"""Request/reply over Kafka for the gateway: produce requests, route replies back to awaiting futures.

The replying-template pattern: this instance owns one or more partitions of `quasar.replies`, assigned
directly (no consumer group, so no join delay and no rebalance), and every request names its partition
in the `quasar-reply-to` header. A single poll thread reads replies in batches and hands a whole batch
to the event loop with one `call_soon_threadsafe`, which resolves the futures by correlation id.

Latency comes from pipelining (thousands of requests in flight share each fetch) and batching (producer
linger of a few ms), never from polling harder: on Tansu a fetch is answered only when
`fetch.wait.max.ms` expires, and a tiny wait makes the broker burn CPU.

Idle: with no request waiting for a reply for `IDLE_PAUSE_S`, the reply partitions are released, so an idle
gateway sends the broker no fetch at all (on Tansu each idle fetch costs CPU every `fetch.wait.max.ms`).
`expect()` wakes the poll thread, which takes them back (at the same positions) before the request is even
produced: the reply, one worker hop later, finds the fetch already running, so the first request after idle
does not wait for it.

Positioning: before `start()` returns, a marker record is produced to each owned partition and the
consumer is assigned at the marker's own offset (known from its delivery report, which is exact even
where Tansu's watermarks are not) and must read it back. Ready = the reply path has been proven end to
end, and old replies are never re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from app.digits import parse_uint
from app.errors import ServiceUnavailable
from app.governance.seal import seal, seal_key
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config, reader_config
from app.kafka.headers import CORRELATION_ID, GATEWAY_SEAL, STATUS, RawHeaders
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer, Headers
from app.settings import Settings

__all__ = ["IDLE_PAUSE_S", "KafkaBridge", "Reply", "choose_partitions", "poll_batch"]

IDLE_PAUSE_S = 2.0  # no reply awaited for this long: stop fetching until the next request

log = logging.getLogger("quasar.gateway.replies")

_MARKER = b"__marker__/"


@dataclass(frozen=True, slots=True)
class Reply:
    """A worker's answer: HTTP status and the HTTP-ready body bytes (forwarded unchanged)."""

    status: int
    body: bytes


def choose_partitions(instance_id: str, total: int, count: int = 1) -> list[int]:
    """`count` consecutive reply partitions for `instance_id`, stable across restarts.

    A collision between two instances is harmless (each ignores correlation ids it does not know), only
    wasteful; size `quasar.replies` to a few times the number of gateway instances.
    """
    if total <= 0:
        raise ValueError("the replies topic has no partitions")
    count = max(1, min(count, total))
    start = zlib.crc32(instance_id.encode()) % total
    return [(start + i) % total for i in range(count)]


class KafkaBridge:
    """One producer + one reply consumer per gateway process, shared by every request."""

    def __init__(
        self,
        settings: Settings,
        *,
        partitions: Sequence[int] | None = None,
        partition_count: int = 1,
        max_in_flight: int = 10_000,
        linger_ms: float = 5.0,
    ) -> None:
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
        self._seal_key = seal_key(settings)
        self.max_in_flight = max_in_flight
        self._wanted = list(partitions) if partitions is not None else None
        self._partition_count = partition_count
        self._linger_ms = linger_ms
        self.partitions: list[int] = []
        self._reply_to: list[str] = []
        self._rr = itertools.count()
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AsyncProducer | None = None
        self._consumer: Consumer | None = None
        self._running = False
        self._threads: list[threading.Thread] = []
        # Idle pause (see the module doc): `paused` is only written by the poll thread; `expect()` sets
        # `_awaited` when it registers a request while paused.
        self.paused = False
        self._awaited = threading.Event()
        self._positions: list[TopicPartition] = []
        self._markers: dict[int, bytes] = {}  # partition -> marker key still awaited
        self._positioned = threading.Event()
        self.last_error: str | None = None
        self.last_poll_at = 0.0
        # Sticky request partitions: topic -> [partition, switch_at (monotonic), partition count].
        self._sticky: dict[str, list[Any]] = {}
        self._partition_counts: dict[str, int] = {}
        self._counts_task: asyncio.Future[None] | None = None
        self._counts_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once every owned reply partition is positioned (its marker read back) and polling."""
        return self._running and self._positioned.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def start(self, within: float = 30.0) -> None:
        """Create clients, claim reply partitions, position the consumer behind a marker; then ready."""
        self._loop = asyncio.get_running_loop()
        timeout = within
        deadline = time.monotonic() + timeout
        self.partitions = await asyncio.to_thread(self._claim_partitions, timeout)
        self._reply_to = [f"{self.topics.replies}:{p}" for p in self.partitions]
        client_id = f"quasar-gateway-{self.settings.instance_id}"
        # A full local queue means the broker is not keeping up: shed load (503) at once rather than
        # blocking the event loop.
        self._producer = AsyncProducer(
            producer_config(self.settings, client_id=client_id, **{"linger.ms": self._linger_ms}),
            queue_full_timeout=0.0,
        )
        self._running = True

        # Markers first: their delivery reports give the true end of each owned partition.
        marker_offsets: dict[int, int] = {}
        for p in self.partitions:
            key = _MARKER + uuid.uuid4().hex.encode()
            self._markers[p] = key
            delivered = self.produce(self.topics.replies, b"", key=key, partition=p)
            try:
                msg = await asyncio.wait_for(delivered, max(0.1, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise ServiceUnavailable(f"broker did not acknowledge the reply marker within {timeout:.0f}s") from exc
            marker_offsets[p] = msg.offset() or 0
        self._consumer = Consumer(
            reader_config(
                self.settings,
                client_id=f"quasar-gateway-replies-{self.settings.instance_id}",
                **{"fetch.wait.max.ms": self.settings.reply_fetch_wait_max_ms, "fetch.error.backoff.ms": 10},
            )
        )
        self._consumer.assign([TopicPartition(self.topics.replies, p, marker_offsets[p]) for p in self.partitions])
        consumer_thread = threading.Thread(target=self._consumer_loop, name="quasar-gw-replies", daemon=True)
        consumer_thread.start()
        self._threads.append(consumer_thread)
        positioned = await asyncio.to_thread(self._positioned.wait, max(0.0, deadline - time.monotonic()))
        if not positioned:
            raise ServiceUnavailable(
                f"reply consumer did not read its position marker on {self._reply_to} within {timeout:.0f}s"
            )
        log.info("reply router ready on %s", ",".join(self._reply_to))

    def _claim_partitions(self, timeout: float) -> list[int]:
        counts = topic_partitions(create_admin(self.settings), timeout=timeout)
        self._partition_counts = counts
        self._counts_at = time.monotonic()
        if self._wanted is not None:
            return sorted(set(self._wanted))
        total = counts.get(self.topics.replies)
        if not total:
            raise ServiceUnavailable(
                f"topic {self.topics.replies} does not exist: create Quasar's topics first (quasar topics apply)"
            )
        return choose_partitions(self.settings.instance_id, total, self._partition_count)

    async def stop(self) -> None:
        """Fail whatever is still waiting, stop the threads, flush and close the clients."""
        self._running = False
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(ServiceUnavailable("gateway is shutting down"))
        self._pending.clear()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        self._threads.clear()
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            await self._producer.close(5.0)
            self._producer = None

    # -- request side -----------------------------------------------------------------------------

    def reply_to(self) -> str:
        """`topic:partition` for the next request (round-robin over the owned partitions)."""
        return self._reply_to[next(self._rr) % len(self._reply_to)]

    def expect(self, correlation_id: str) -> asyncio.Future[Reply]:
        """Register a future for the reply to `correlation_id`; 503 when too many are in flight."""
        if len(self._pending) >= self.max_in_flight:
            raise ServiceUnavailable(f"gateway is at capacity ({self.max_in_flight} requests in flight)")
        assert self._loop is not None
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[correlation_id] = fut
        if self.paused:
            self._awaited.set()  # the poll thread resumes the reply partitions
        return fut

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for `correlation_id` (timeout or cancel): a late reply is then dropped."""
        self._pending.pop(correlation_id, None)

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Message]:
        """Enqueue one record (never awaits); the future resolves on delivery or fails with 503."""
        return self._require_producer().produce(topic, value, key, headers=headers, partition=partition)

    def produce_request(self, topic: str, value: bytes, *, key: str, headers: Headers) -> asyncio.Future[Message]:
        """`produce` for channel requests: every record of one linger window goes to one partition.

        Why: Tansu's cost is mostly per partition batch (measured ~100 us each, ~5 us per extra record),
        and keying by the random correlation id spread each window over every partition. The partition
        rotates each window, so the load still spreads evenly over the partitions (and workers). The
        key stays the correlation id. Until the topic's partition count is known the key decides.
        """
        partition = self._sticky_partition(topic)
        if self._seal_key is not None:  # governed here: the worker must not govern it again
            sealed = list(headers.items()) if isinstance(headers, dict) else list(headers)
            headers = [*sealed, (GATEWAY_SEAL, seal(self._seal_key, topic, value))]
        fut = self._require_producer().produce(topic, value, key, headers=headers, partition=partition)
        if partition is not None and fut.done() and fut.exception() is not None:
            # Refused locally (e.g. the topic was re-created smaller): forget what we knew of it.
            self._sticky.pop(topic, None)
            self._partition_counts.pop(topic, None)
        return fut

    def _sticky_partition(self, topic: str) -> int | None:
        entry = self._sticky.get(topic)
        now = time.monotonic()
        if entry is None:
            count = self._partition_counts.get(topic)
            if not count:
                self._refresh_counts()
                return None
            entry = self._sticky[topic] = [random.randrange(count), 0.0, count]
        if now >= entry[1]:
            entry[0] = (entry[0] + 1) % entry[2]
            entry[1] = now + self._linger_ms / 1000
        partition: int = entry[0]
        return partition

    def _refresh_counts(self) -> None:
        """Look up partition counts off the loop (at most once a second), for topics created later."""
        if self._counts_task is not None or time.monotonic() - self._counts_at < 1.0 or self._loop is None:
            return
        client = self._require_producer().client
        self._counts_at = time.monotonic()

        def fetch() -> None:
            # All topics on purpose: naming an unknown topic makes Tansu auto-create it.
            md = client.list_topics(timeout=5.0)
            self._partition_counts = {n: len(t.partitions) for n, t in md.topics.items() if t.error is None}

        async def run() -> None:
            try:
                await asyncio.to_thread(fetch)
            except (KafkaException, RuntimeError) as exc:
                log.warning("partition count lookup failed: %s", exc)
            finally:
                self._counts_task = None

        self._counts_task = asyncio.ensure_future(run())

    def _require_producer(self) -> AsyncProducer:
        if self._producer is None:
            raise ServiceUnavailable("gateway is not connected to Kafka yet")
        return self._producer

    # -- threads ------------------------------------------------------------------------------------

    def _consumer_loop(self) -> None:
        consumer = self._consumer
        loop = self._loop
        assert consumer is not None and loop is not None
        pending = self._pending
        idle_since: float | None = None
        while self._running:
            if self.paused:
                self._awaited.wait(0.5)  # bounded: notice stop()
                self._awaited.clear()  # before looking: a request registered after this sets it again
                self.last_poll_at = time.monotonic()  # paused on purpose, not stuck
                if not pending:
                    continue
                self._set_paused(consumer, False)
                idle_since = None
            elif pending or self._markers:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_PAUSE_S:
                self._set_paused(consumer, True)
                if pending:  # registered while we paused, before `expect()` could see the flag
                    self._set_paused(consumer, False)
                idle_since = None
                continue
            try:
                messages = poll_batch(consumer, 0.1)
            except (KafkaException, RuntimeError) as exc:  # closed under us, or a fatal client error
                self.last_error = str(exc)
                if not self._running:
                    return
                log.warning("reply consumer error: %s", exc)
                continue
            self.last_poll_at = time.monotonic()
            if not messages:
                continue
            batch: list[tuple[asyncio.Future[Reply], Reply]] = []
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self.last_error = err.str()
                        log.warning("reply consumer error: %s", err.str())
                    continue
                key = msg.key()
                headers = msg.headers()
                if key is not None and key.startswith(_MARKER):
                    self._seen_marker(msg.partition() or 0, key)
                    continue
                correlation_id = key.decode(errors="replace") if key else _header(headers, CORRELATION_ID)
                if not correlation_id:
                    continue
                fut = pending.pop(correlation_id, None)
                if fut is None:
                    continue  # not ours (shared partition) or its caller already gave up
                # Only the status header is needed on the hot path; decode nothing else.
                raw_status = _header(headers, STATUS) or "200"
                status = parse_uint(raw_status) or 502
                batch.append((fut, Reply(status, msg.value() or b"")))
            if batch:
                loop.call_soon_threadsafe(_resolve_batch, batch)

    def _set_paused(self, consumer: Consumer, paused: bool) -> None:
        """Stop / restart fetching the reply partitions.

        Unassign + assign at the saved positions rather than pause + resume: a resumed partition was
        measured to wait ~1 s for librdkafka's next fetch, an assigned one is fetched at once.
        """
        try:
            if paused:
                positions = consumer.position([TopicPartition(self.topics.replies, p) for p in self.partitions])
                if any(tp.offset < 0 for tp in positions):
                    return  # no position to come back to: keep fetching
                self._positions = positions
                self.paused = True  # first: a request registered from now on sets `_awaited`
                consumer.unassign()
            else:
                consumer.assign(self._positions)
                self.paused = False
        except (KafkaException, RuntimeError) as exc:  # closed under us: the loop notices `_running`
            self.last_error = str(exc)
            self.paused = False

    def _seen_marker(self, partition: int, key: bytes) -> None:
        if self._markers.get(partition) == key:
            del self._markers[partition]
            if not self._markers:
                self._positioned.set()


def poll_batch(consumer: Consumer, wait_s: float, limit: int = 1000) -> list[Message]:
    """Block until one record arrives (or `wait_s`), then take whatever else is already fetched.

    `consume(n, timeout)` waits until it has n records *or* the timeout expires, which would add the
    whole timeout to every reply on a quiet partition.
    """
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)]


def _header(headers: RawHeaders, name: str) -> str | None:
    for key, value in headers.items() if isinstance(headers, Mapping) else headers or ():
        if key == name and value is not None:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def _resolve_batch(batch: list[tuple[asyncio.Future[Reply], Reply]]) -> None:
    for fut, reply in batch:
        if not fut.done():
            fut.set_result(reply)

"""Delivery tracking: producing what records caused, acknowledgements, and in-order offset commits.

A `Batch` is the unit of commit: the offsets of one consumed batch plus everything its records caused
(produced records, per-key tasks still running or retrying). The `DeliveryTracker` commits batches in
consumption order, each only once all of that is settled (at-least-once).

No produce error stops the worker (issue 14):
- a record librdkafka refuses locally (too large, unknown partition) or reports failed for good is
  dead-lettered (`KAFKA_DELIVERY_FAILED`, stage `KAFKA_PRODUCE`, value dropped when it cannot fit);
- a transient failure (broker unreachable, timed out) is produced again, with backoff, a bounded number of
  rounds; the batch's commit waits meanwhile (nothing is lost while the broker is away);
- a dead letter that cannot be delivered either is logged, counted
  (`quasar_errors_total{code="UNDELIVERABLE"}`) and skipped: the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from app.kafka import headers as H
from app.observability import metrics as M
from app.worker.pipeline import MAX_HEADER_VALUE, MAX_PRODUCE_BYTES, Outcome, Produce, bounded_dlq, propagated_headers

__all__ = ["Acks", "Batch", "DeliveryTracker", "delivery_dead_letter", "retriable_delivery_error"]

log = logging.getLogger("quasar.worker")

MAX_RESEND_ROUNDS = 10


class Acks:
    """Delivery tracking for a group of produced records (one batch, or one record's task).

    One counter instead of a Future per record: librdkafka's delivery callbacks (served by `poll(0)` on the
    loop thread) append to a deque; `wait()` polls until every record is reported. `tasks` holds the
    per-key record tasks the group must also wait for. Failed records are kept in `failures`.
    """

    __slots__ = ("_cb", "_client", "acks", "failures", "produced", "sent", "tasks", "timeout")

    def __init__(self, client: Producer, timeout: float) -> None:
        self._client = client
        self.acks: deque[KafkaError | None] = deque()
        self.failures: list[tuple[KafkaError, Produce]] = []
        self.produced = 0
        self.sent: list[Produce] = []  # kept until settled: a failed delivery is resent or dead-lettered
        self.tasks: list[asyncio.Future[Any]] = []
        self.timeout = timeout
        self._cb = self._on_delivery

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self.acks.append(err)
        if err is not None:  # rare: find what we sent (a delivery report need not carry the headers)
            topic, key, value = msg.topic() or "", msg.key(), msg.value()
            record: Produce = next(
                (r for r in self.sent if r[0] == topic and _same(r[2], key) and r[1] == value),
                (topic, value, key, None, -1),
            )
            self.failures.append((err, record))

    def emit(self, outcome: Outcome) -> None:
        """Enqueue every record of `outcome` (never awaits)."""
        produce, cb, sent = self._client.produce, self._cb, self.sent
        for record in outcome.records:
            topic, value, key, headers, partition = record
            try:
                produce(topic, value, key, partition=partition, on_delivery=cb, headers=headers)
            except (BufferError, KafkaException):
                self.send(record)  # the queue is full or the record was refused: the slow path handles both
                continue
            self.produced += 1
            sent.append(record)

    def send(self, record: Produce) -> None:
        """Enqueue one record; a full local queue blocks up to `timeout` (backpressure)."""
        topic, value, key, headers, partition = record
        try:
            self._client.produce(topic, value, key, partition=partition, on_delivery=self._cb, headers=headers)
        except BufferError:
            self._produce_when_room(record)
            return
        except KafkaException as exc:  # refused locally: too large, unknown partition, bad topic name...
            self.failures.append((exc.args[0], record))
            return
        self.produced += 1
        self.sent.append(record)

    def _produce_when_room(self, record: Produce) -> None:
        topic, value, key, headers, partition = record
        deadline = time.monotonic() + self.timeout
        while True:
            self._client.poll(0.05)  # serve delivery reports: that is what frees the queue
            try:
                self._client.produce(topic, value, key, partition=partition, on_delivery=self._cb, headers=headers)
                self.produced += 1
                self.sent.append(record)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    err = KafkaError(KafkaError._QUEUE_FULL, f"producer queue full for {self.timeout}s")
                    self.failures.append((err, record))
                    return
            except KafkaException as exc:
                self.failures.append((exc.args[0], record))
                return

    def complete(self) -> bool:
        """Every record reported delivered without error and every task finished."""
        return (
            not self.failures
            and len(self.acks) >= self.produced
            and all(t.done() and not t.cancelled() and t.exception() is None for t in self.tasks)
        )

    async def wait(self) -> None:
        """Wait for every task and record of the group (failures stay in `failures`; never raises)."""
        if self.tasks:
            results = await asyncio.gather(*self.tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):  # a record task has no business raising: a bug
                    log.error("record task failed: %r", r, exc_info=r)
        client = self._client
        while len(self.acks) < self.produced:
            # Delivery reports are served on the loop thread (a poll thread fighting the loop for the
            # GIL costs far more); they arrive within linger + one broker round trip.
            client.poll(0)
            if len(self.acks) >= self.produced:
                break
            await asyncio.sleep(0.001)


class Batch:
    """Offsets of one consumed batch and everything that must be delivered before they are committed."""

    __slots__ = ("acks", "offsets", "records")

    def __init__(self, acks: Acks) -> None:
        self.offsets: dict[tuple[str, int], int] = {}
        self.acks = acks
        self.records = 0  # consumed records it stands for (the uncommitted-records bound)


class DeliveryTracker:
    """Owns the producer side of the worker's records and the in-order commits of consumed offsets."""

    def __init__(
        self,
        client: Callable[[], Producer],
        consumer: Callable[[], Consumer | None],
        dlq_topic: str,
        *,
        timeout: float = 10.0,
        resend_backoff: float = 1.0,
        max_record_bytes: int = MAX_PRODUCE_BYTES,
        commit_interval: float = 0.0,
    ) -> None:
        self._client = client
        self.max_record_bytes = max_record_bytes  # a dead letter's bound (QUASAR_MAX_RECORD_BYTES)
        self.commit_interval = commit_interval
        self._consumer = consumer
        self.dlq_topic = dlq_topic
        self.timeout = timeout
        self.resend_backoff = resend_backoff
        self.pending: deque[Batch] = deque()
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue()  # None: commit what is settled now
        self._idle = asyncio.Event()
        self._idle.set()
        self.committed: dict[tuple[str, int], int] = {}
        self.uncommitted = 0  # records of the pending batches: what a crash now would run again
        self._progress = asyncio.Event()  # set whenever batches are committed
        self.undeliverable = 0  # records neither delivered nor dead-lettered (logged and counted)

    def acks(self) -> Acks:
        return Acks(self._client(), self.timeout)

    def batch(self) -> Batch:
        return Batch(self.acks())

    def seal(self, batch: Batch) -> None:
        """The batch is consumed: commit it once everything it caused is settled."""
        self.pending.append(batch)
        self.uncommitted += batch.records
        self._idle.clear()
        self._queue.put_nowait(batch)

    async def settle(self, acks: Acks) -> None:
        """Wait for `acks`; resend what failed transiently, dead-letter what failed for good. Never raises."""
        await acks.wait()
        rounds = 0
        while acks.failures:
            failures, acks.failures = acks.failures, []
            again = self.acks()
            if rounds and any(retriable_delivery_error(err) for err, _ in failures):
                await asyncio.sleep(min(self.resend_backoff * 2 ** (rounds - 1), 30.0))
            for err, record in failures:
                if retriable_delivery_error(err) and rounds < MAX_RESEND_ROUNDS:
                    again.send(record)
                elif record[0] != self.dlq_topic:
                    log.error("record to %s not delivered (%s): dead-lettering it", record[0], err.str())
                    M.ERRORS.labels("KAFKA_DELIVERY_FAILED").inc()
                    again.send(delivery_dead_letter(self.dlq_topic, record, err, self.max_record_bytes))
                else:
                    self.undeliverable += 1
                    M.ERRORS.labels("UNDELIVERABLE").inc()
                    log.error("dead letter not delivered (%s): skipped, the partition moves on", err.str())
            await again.wait()
            acks = again
            rounds += 1

    async def commit_loop(self) -> None:
        """Commit batches in order as they settle (runs for the worker's lifetime).

        Settled batches are committed together at most every `commit_interval` s (0: each as soon as it
        settles): fewer commit requests against a longer stretch of records redelivered after a crash.
        """
        settled = 0  # leading batches of `pending` settled and not committed yet
        last = time.monotonic()
        while True:
            if settled:
                wait = self.commit_interval - (time.monotonic() - last)
                if wait <= 0:
                    self._commit_settled(settled)
                    settled, last = 0, time.monotonic()
                    continue
                try:
                    async with asyncio.timeout(wait):
                        batch = await self._queue.get()
                except TimeoutError:
                    continue
            else:
                batch = await self._queue.get()
            if batch is None:  # drain(): whatever the interval
                self._commit_settled(settled)
                settled, last = 0, time.monotonic()
                continue
            await self.settle(batch.acks)
            settled += 1

    def _commit_settled(self, count: int) -> None:
        latest: dict[tuple[str, int], int] = {}
        for _ in range(min(count, len(self.pending))):
            batch = self.pending.popleft()
            latest.update(batch.offsets)
            self.uncommitted -= batch.records
        self._progress.set()
        consumer = self._consumer()
        if consumer is not None and latest:
            try:
                # Asynchronous: a synchronous commit issued during a group rebalance waits for the
                # rebalance to end, and meanwhile librdkafka blocks consume() on every thread: every
                # channel of the worker stalled ~1 s whenever a channel was activated. `on_commit`
                # (served by the consume loop's polls) records what the broker accepted.
                consumer.commit(
                    offsets=[TopicPartition(t, p, o + 1) for (t, p), o in latest.items()], asynchronous=True
                )
            except Exception as exc:
                # Lost the partition meanwhile (rebalance): the new owner redelivers.
                log.warning("commit failed: %s", exc)
        if not self.pending:
            self._idle.set()

    async def wait_progress(self, seconds: float) -> None:
        """Wait (bounded) until the next batches are committed."""
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), seconds)

    async def drain(self) -> None:
        """Wait until every pending batch is committed (without waiting for the commit interval)."""
        if self.pending:
            self._queue.put_nowait(None)
        while self.pending:
            await self._idle.wait()

    def commit_ready_now(self, consumer: Consumer, drain_timeout: float) -> None:
        """Revocation on the loop thread (the loop cannot run): deliver synchronously and commit the
        leading batches that are complete (a batch still running or retrying is redelivered)."""
        self._client().flush(drain_timeout)
        latest: dict[tuple[str, int], int] = {}
        for batch in self.pending:
            if not batch.acks.complete():
                break
            latest.update(batch.offsets)
            batch.offsets = {}  # committed here; the commit loop has nothing left to do for it
        if latest:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o + 1) for (t, p), o in latest.items()], asynchronous=False
                )
                for (t, p), o in latest.items():
                    self.committed[(t, p)] = o + 1
            except Exception as exc:
                log.warning("could not commit before revocation (records will be redelivered): %s", exc)

    def on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit report (consumer `on_commit`): record the offsets the broker accepted."""
        if err is not None:
            log.warning("commit failed (records after the last commit will be redelivered): %s", err)
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                key = (tp.topic, tp.partition)
                self.committed[key] = max(self.committed.get(key, -1), tp.offset)

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        """Never commit these partitions later: the new owner may be ahead of us by then."""
        for batch in self.pending:
            for tp in partitions:
                batch.offsets.pop(tp, None)

    def drop_pending(self) -> None:
        self.pending.clear()
        self.uncommitted = 0


def _same(sent: bytes | str | None, reported: bytes | None) -> bool:
    return (sent.encode() if isinstance(sent, str) else sent) == reported


def retriable_delivery_error(err: KafkaError) -> bool:
    with contextlib.suppress(Exception):
        return bool(err.retriable()) and err.code() != KafkaError.MSG_SIZE_TOO_LARGE
    return False


def delivery_dead_letter(dlq: str, record: Produce, err: KafkaError, limit: int) -> Produce:
    """The dead letter of a record that could not be produced (bounded: its value only if it fits)."""
    topic, value, key, headers, partition = record
    context = [
        (H.DLQ_ORIGINAL_TOPIC, topic.encode()),
        (H.DLQ_ORIGINAL_PARTITION, str(partition).encode()),
        (H.DLQ_ORIGINAL_OFFSET, b"-1"),
        (H.DLQ_STAGE, b"KAFKA_PRODUCE"),
        (H.DLQ_CLASS_NAME, b"quasar.worker"),
        (H.DLQ_ERROR_CODE, b"KAFKA_DELIVERY_FAILED"),
        (H.DLQ_ERROR_MESSAGE, f"delivery to {topic} failed: {err.str()}".encode()[:MAX_HEADER_VALUE]),
        (H.DLQ_ATTEMPTS, b"1"),
        (H.DLQ_FIRST_FAILED_AT, str(int(time.time() * 1000)).encode()),
    ]
    if isinstance(key, bytes | str) and len(key) > MAX_HEADER_VALUE:
        key = None
    value, kept = bounded_dlq(value, key, [*propagated_headers(headers), *context], limit)
    return (dlq, value, key, kept, -1)

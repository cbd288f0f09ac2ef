"""Exactly-once processing (`processing_guarantee: exactly_once`): consume-transform-produce in Kafka transactions.

Everything the records of a consumed batch cause (outputs, replies, traces, dead letters) is produced inside
a transaction, and the batch's input offsets are added to the same transaction (`send_offsets_to_transaction`,
with the consumer's group metadata, so a member that lost its partitions is fenced by the group). The
transaction commits or aborts as a whole: a `read_committed` consumer of the output sees each result once,
after a crash too. Consecutive batches share one transaction for up to `commit_interval` seconds.

Not covered, as in Kafka Streams: effects outside the transaction (HTTP calls, database writes, and the
connectors' own Kafka records: `publish_kafka`, channel calls, which go through a separate ordinary
producer so a channel call's request is visible before its caller's transaction commits) happen again when
a transaction is aborted and its records run again.

Failures:
- a record librdkafka refuses locally (too large, unknown partition) is dead-lettered inside the transaction;
- a record the broker fails: the transaction is aborted, the consumer sought back to the transaction's first
  offsets, and the records run again (after a backoff when the failure was transient); a record that failed
  for good is dead-lettered on that next run instead of failing every run;
- fenced (another producer took this worker's `transactional.id`, or the broker timed the transaction out):
  the producer is unusable; `ProducerFenced` ends the worker, whose supervisor or orchestrator restarts it;
- partitions revoked by a rebalance: the open transaction is committed first (the partitions are still
  ours during the callback), or aborted and the partitions we keep sought back.

The loop is IO-free apart from the producer and consumer it is given, so unit tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from app.errors import ServiceUnavailable
from app.kafka.config import producer_config, reader_config
from app.kafka.consumer import MARKER_PREFIX, ReadTimeout, read_partition
from app.kafka.names import TopicNames
from app.observability import metrics as M
from app.settings import Settings
from app.worker.delivery import Acks, Batch, delivery_dead_letter, retriable_delivery_error
from app.worker.pipeline import MAX_PRODUCE_BYTES, Produce

__all__ = [
    "ProducerFenced",
    "TransactionalLoop",
    "TransactionsUnsupported",
    "open_transactions",
    "probe_transactions",
    "transactional_id",
]

log = logging.getLogger("quasar.worker")

MAX_POISONED = 10_000  # records remembered as failing for good (dead-lettered on their next run)
_FENCED = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class TransactionsUnsupported(ServiceUnavailable):
    """`exactly_once` was asked for and the broker does not run Kafka transactions."""

    code = "TRANSACTIONS_UNSUPPORTED"


class ProducerFenced(ServiceUnavailable):
    """The transactional producer is unusable (fenced or fatal): the worker must restart."""

    code = "PRODUCER_FENCED"


class TxnProducer(Protocol):
    """What the loop uses of a transactional confluent-kafka `Producer` (fakes implement it in tests)."""

    def produce(self, *args: Any, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, positions: list[TopicPartition], metadata: Any, timeout: float) -> None: ...
    def commit_transaction(self, timeout: float) -> None: ...
    def abort_transaction(self, timeout: float) -> None: ...


def transactional_id(settings: Settings) -> str:
    """One per worker process, stable across its restarts (the instance id; `--processes N` gives each child
    `<id>-<i>`): a restarted worker fences its own zombie and aborts what it left open."""
    return f"{settings.topic_prefix}worker.{settings.instance_id}"


def _error(exc: BaseException) -> KafkaError | None:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


def _fatal(err: KafkaError) -> bool:
    return bool(err.fatal()) or err.code() in _FENCED


def _fenced(err: KafkaError, tid: str) -> ProducerFenced:
    return ProducerFenced(
        f"transactional producer {tid!r} can no longer be used ({err.name()}: {err.str()}); another worker "
        "may run with the same instance id, or a transaction outlived transaction.timeout.ms: the worker stops "
        "so that it is restarted with a fresh producer"
    )


class _GuardedClient:
    """The producer as `Acks` sees it. A record that failed for good in an aborted transaction is refused
    locally on its next run, so `Acks` reports it and the loop dead-letters it inside the transaction. A
    fatal producer error (fenced), which librdkafka raises from produce() and poll() too, becomes
    `ProducerFenced`: not a KafkaException, so no record is dead-lettered for it and the worker stops."""

    __slots__ = ("_poisoned", "_producer", "_tid")

    def __init__(
        self, producer: TxnProducer, poisoned: dict[tuple[str, bytes | None, int], KafkaError], tid: str
    ) -> None:
        self._producer = producer
        self._poisoned = poisoned
        self._tid = tid

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        if self._poisoned:
            err = self._poisoned.get(_identity(topic, key, value))
            if err is not None:
                raise KafkaException(err)
        try:
            self._producer.produce(topic, value, key, **kwargs)
        except KafkaException as exc:
            raise _fatal_or(exc, self._tid) from exc

    def poll(self, timeout: float = 0) -> int:
        try:
            return self._producer.poll(timeout)
        except KafkaException as exc:
            raise _fatal_or(exc, self._tid) from exc

    def flush(self, timeout: float = 10.0) -> int:
        try:
            return self._producer.flush(timeout)
        except KafkaException as exc:
            raise _fatal_or(exc, self._tid) from exc


def _fatal_or(exc: KafkaException, tid: str) -> BaseException:
    """`ProducerFenced` for a fatal producer error, else `exc` itself."""
    err = _error(exc)
    if err is not None and _fatal(err):
        return _fenced(err, tid)
    return exc


def _identity(topic: str, key: Any, value: Any) -> tuple[str, bytes | None, int]:
    k = key.encode() if isinstance(key, str) else key
    v = value.encode() if isinstance(value, str) else value
    return topic, k, hash(v)


class TransactionalLoop:
    """The worker's transactions: `await run(msgs, process)` per consumed batch, `await tick()` when idle."""

    def __init__(
        self,
        producer: TxnProducer,
        consumer: Callable[[], Consumer | Any | None],
        dlq_topic: str,
        *,
        transactional_id: str,
        commit_interval: float,
        timeout: float = 10.0,
        backoff: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        committed: dict[tuple[str, int], int] | None = None,
        max_record_bytes: int = MAX_PRODUCE_BYTES,
    ) -> None:
        self.producer = producer
        self.max_record_bytes = max_record_bytes  # a dead letter's bound (QUASAR_MAX_RECORD_BYTES)
        self._consumer = consumer
        self.dlq_topic = dlq_topic
        self.transactional_id = transactional_id
        self.commit_interval = commit_interval
        self.timeout = timeout
        self.backoff = backoff
        self.clock = clock
        self.committed = committed if committed is not None else {}
        self.open = False
        self.opened_at = 0.0
        self.offsets: dict[tuple[str, int], int] = {}  # last offset processed per partition in the transaction
        self.rewind: dict[tuple[str, int], int] = {}  # first offset consumed per partition: seek target on abort
        self.poisoned: dict[tuple[str, bytes | None, int], KafkaError] = {}
        self.aborts_in_row = 0
        self.undeliverable = 0
        self._client = _GuardedClient(producer, self.poisoned, transactional_id)

    # -- per consumed batch ---------------------------------------------------------------------------
    async def run(self, msgs: list[Message], process: Callable[[list[Message], Batch], Awaitable[None]]) -> None:
        """Process `msgs` inside the open transaction (begun if none); commit it when it is due.

        `process` enqueues what the records cause into the batch's acks and notes their offsets (the
        worker's `_process`); everything it started is awaited here, so the transaction holds exactly the
        records of the batches whose offsets it commits.
        """
        self._begin()
        for msg in msgs:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is not None and partition is not None and offset is not None and offset >= 0:
                tp = (topic, partition)
                if tp not in self.rewind or offset < self.rewind[tp]:
                    self.rewind[tp] = offset
        batch = Batch(Acks(self._client, self.timeout))  # type: ignore[arg-type]
        await process(msgs, batch)
        if not await self._settle(batch.acks):
            await self._abort_and_back_off()
            return
        self.offsets.update(batch.offsets)
        if self.due():
            await asyncio.to_thread(self.commit_now)

    async def tick(self) -> None:
        """Commit the open transaction if it is due (the consume loop calls this while idle)."""
        if self.open and self.due():
            await asyncio.to_thread(self.commit_now)

    def due(self) -> bool:
        return self.clock() - self.opened_at >= self.commit_interval

    async def close(self, *, commit: bool) -> None:
        """On stop: commit what is open (or abort it)."""
        if not self.open:
            return
        if commit:
            await asyncio.to_thread(self.commit_now)
        else:
            await asyncio.to_thread(self.abort_now)

    # -- transaction boundaries ------------------------------------------------------------------------
    def _begin(self) -> None:
        if self.open:
            return
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise self._fatal_or(exc) from exc
        self.open = True
        self.opened_at = self.clock()

    def commit_now(self) -> bool:
        """Commit the open transaction with its input offsets; False: it was aborted (and sought back)."""
        if not self.open:
            return True
        positions = [TopicPartition(t, p, o + 1) for (t, p), o in self.offsets.items()]
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if positions:
                    consumer = self._consumer()
                    if consumer is None:
                        raise KafkaException(KafkaError(KafkaError._STATE, "consumer closed", txn_requires_abort=True))
                    self.producer.send_offsets_to_transaction(
                        positions, consumer.consumer_group_metadata(), self.timeout
                    )
                    positions = []  # added to the transaction: a retried commit does not add them again
                self.producer.commit_transaction(self.timeout)
                break
            except KafkaException as exc:
                err = _error(exc)
                if err is None or _fatal(err):
                    raise self._fatal_or(exc) from exc
                if err.retriable() and not err.txn_requires_abort() and time.monotonic() < deadline:
                    continue  # librdkafka: a retriable commit error means "call it again"
                log.warning("transaction commit failed (%s): aborting, its records run again", err.str())
                self.abort_now()
                return False
        for (t, p), o in self.offsets.items():
            self.committed[(t, p)] = o + 1
        M.TRANSACTIONS.labels("committed").inc()
        self.aborts_in_row = 0
        self.poisoned.clear()  # dead-lettered in what just committed
        self._reset()
        return True

    def abort_now(self) -> None:
        """Abort the open transaction and seek the consumer back to its first offsets (a partition no
        longer ours is not sought: its new owner reads from the committed offset)."""
        if not self.open:
            return
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.producer.abort_transaction(self.timeout)
                break
            except KafkaException as exc:
                err = _error(exc)
                if err is None or _fatal(err) or not err.retriable() or time.monotonic() >= deadline:
                    raise self._fatal_or(exc) from exc
        M.TRANSACTIONS.labels("aborted").inc()
        consumer = self._consumer()
        for (topic, partition), offset in self.rewind.items():
            if consumer is None:
                break
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                log.info("no seek back on %s[%s] after abort: %s", topic, partition, exc)
        self._reset()

    def on_revoke(self) -> None:
        """A rebalance takes partitions away: settle the open transaction while they are still ours
        (committed, or aborted and every partition sought back; a revoked one is then read by its new
        owner from the committed offset)."""
        if self.open:
            self.commit_now()

    def _reset(self) -> None:
        self.open = False
        self.offsets = {}
        self.rewind = {}

    def _fatal_or(self, exc: KafkaException) -> BaseException:
        return _fatal_or(exc, self.transactional_id)

    # -- records that could not be produced ------------------------------------------------------------
    async def _settle(self, acks: Acks) -> bool:
        """Wait for the batch's records. Locally refused ones are dead-lettered inside the transaction;
        False when the broker failed one (the transaction must be aborted)."""
        while True:
            await acks.wait()
            failed = [err for err in acks.acks if err is not None]
            if failed:
                for err, record in acks.failures:
                    if not retriable_delivery_error(err) and len(self.poisoned) < MAX_POISONED:
                        self.poisoned[_identity(record[0], record[2], record[1])] = err
                log.warning(
                    "%d record(s) not delivered inside the transaction (%s): aborting it", len(failed), failed[0].str()
                )
                return False
            if not acks.failures:
                return True
            again = Acks(self._client, self.timeout)  # type: ignore[arg-type]
            for err, record in acks.failures:
                self._dead_letter(again, err, record)
            acks = again

    def _dead_letter(self, acks: Acks, err: KafkaError, record: Produce) -> None:
        if record[0] != self.dlq_topic:
            log.error("record to %s refused (%s): dead-lettering it", record[0], err.str())
            M.ERRORS.labels("KAFKA_DELIVERY_FAILED").inc()
            acks.send(delivery_dead_letter(self.dlq_topic, record, err, self.max_record_bytes))
        else:
            self.undeliverable += 1
            M.ERRORS.labels("UNDELIVERABLE").inc()
            log.error("dead letter refused (%s): skipped, the partition moves on", err.str())

    async def _abort_and_back_off(self) -> None:
        await asyncio.to_thread(self.abort_now)
        self.aborts_in_row += 1
        # The first re-run is immediate (a record failing for good is dead-lettered on it); transient
        # failures (broker away) back off, doubling, like the at-least-once resends.
        if self.aborts_in_row > 1:
            await asyncio.sleep(min(self.backoff * 2 ** (self.aborts_in_row - 2), 30.0))


# -- the startup check -------------------------------------------------------------------------------


def probe_transactions(settings: Settings, producer: Producer | None = None, *, timeout: float = 10.0) -> None:
    """Raise `TransactionsUnsupported` unless the broker runs transactions for real.

    The transaction API answering is not enough: the embedded broker (Tansu) and librdkafka's mock cluster
    accept every call and still show records of aborted transactions to `read_committed` consumers. So:
    write a record in a transaction and abort it, write another in a committed one, and read both back
    `read_committed`; the first must not be there. Both are `__marker__/` tombstones on the traces topic,
    which every reader skips. `producer`: an initialised transactional producer (none: one is made with
    this worker's transactional id and initialised here).
    """
    names = TopicNames(settings.topic_prefix)
    topic = names.traces
    setting = "QUASAR_PROCESSING_GUARANTEE=exactly_once"
    tid = transactional_id(settings)
    if producer is None:
        producer = Producer(
            producer_config(
                settings, client_id=f"quasar-worker-{settings.instance_id}", **{"transactional.id": tid, "linger.ms": 0}
            )
        )
        init_transactions(producer, setting, timeout)
    probe = uuid.uuid4().hex
    aborted_key = MARKER_PREFIX + f"txn-probe/aborted/{probe}".encode()
    committed_key = MARKER_PREFIX + f"txn-probe/committed/{probe}".encode()
    offsets: list[int] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is None and msg.offset() is not None:
            offsets.append(msg.offset() or 0)

    try:
        producer.begin_transaction()
        producer.produce(topic, None, aborted_key, partition=0, on_delivery=delivered)
        producer.flush(timeout)
        producer.abort_transaction(timeout)
        producer.begin_transaction()
        producer.produce(topic, None, committed_key, partition=0)
        producer.commit_transaction(timeout)
    except KafkaException as exc:
        err = _error(exc)
        raise TransactionsUnsupported(
            f"{setting} needs a broker that runs Kafka transactions; a test transaction failed on this one "
            f"({err.str() if err is not None else exc}). Use at_least_once here."
        ) from None
    if not offsets:
        raise TransactionsUnsupported(f"{setting}: the test record of an aborted transaction was not written")
    seen: list[bytes | None] = []
    reader = Consumer(reader_config(settings, **{"isolation.level": "read_committed"}))
    try:
        read_partition(
            reader,
            topic,
            0,
            offsets[0],
            until=lambda m: m.key() == committed_key,
            on_message=lambda m: seen.append(m.key()),
            timeout=timeout,
        )
    except ReadTimeout:
        raise TransactionsUnsupported(
            f"{setting}: a committed transaction's record was not readable within {timeout:.0f}s "
            "(read_committed); the broker does not complete transactions"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            reader.close()
    if aborted_key in seen:
        raise TransactionsUnsupported(
            f"{setting} needs a broker that runs Kafka transactions: this one accepts the transaction API but "
            "shows records of aborted transactions to read_committed consumers, so results of an aborted "
            "transaction would be seen (and then seen again). The embedded broker (Tansu) behaves like this. "
            "Run exactly_once on Apache "
            "Kafka, Redpanda, MSK or Confluent Cloud, or set QUASAR_PROCESSING_GUARANTEE=at_least_once (the "
            "default: idempotent producer, commits after delivery)."
        )


def init_transactions(producer: Producer | Any, setting: str, timeout: float) -> None:
    """`init_transactions` (fences an earlier producer with the same transactional id and aborts what it
    left open), or `TransactionsUnsupported` naming the broker's answer."""
    try:
        producer.init_transactions(timeout)
    except KafkaException as exc:
        err = _error(exc)
        raise TransactionsUnsupported(
            f"{setting} needs a broker that runs Kafka transactions, and this one refused to start one "
            f"(InitProducerId: {err.str() if err is not None else exc}). Use at_least_once here."
        ) from None


async def open_transactions(
    settings: Settings,
    producer: Producer,
    consumer: Callable[[], Consumer | None],
    dlq_topic: str,
    committed: dict[tuple[str, int], int],
) -> TransactionalLoop:
    """The worker's transactional loop on `producer` (configured with `transactional_id(settings)`):
    transactions initialised and the broker checked (`probe_transactions`), or `TransactionsUnsupported`."""
    setting = "QUASAR_PROCESSING_GUARANTEE=exactly_once"
    await asyncio.to_thread(init_transactions, producer, setting, 30.0)
    await asyncio.to_thread(probe_transactions, settings, producer)
    return TransactionalLoop(
        producer,
        consumer,
        dlq_topic,
        transactional_id=transactional_id(settings),
        commit_interval=settings.commit_interval_s(),
        committed=committed,
        max_record_bytes=settings.max_record_bytes,
    )

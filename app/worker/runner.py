"""`ChannelWorker`: the hot path of `quasar worker`.

One confluent-kafka group consumer reads the request topics of every active channel in batches; each
record runs through the engine and yields its reply / output / trace (or DLQ) records via one
`AsyncProducer`. Why not Faust's per-event stream: measured on this box (bench/worker.py), a Faust agent
tops out at ~2-5k msgs/s whatever the serializer or batch size, while this loop reaches the raw
confluent-kafka ceiling (see the bench table in the report); Faust still runs the process (see
`app/worker/app.py`), this class is one of its services.

Guarantees:
- at-least-once: the offsets of a batch are committed only after every record it caused (reply, output,
  trace, DLQ) was delivered and every retry it scheduled finished; batches commit in order. On a
  partition revocation the pending batches are drained and committed before the partitions go.
- nothing dropped silently: undecodable record, bad envelope, Avro mismatch, unknown channel or workflow
  failure -> DLQ (after bounded retries with backoff for retryable errors); a sync caller also gets the
  error reply. Expired requests (`quasar-deadline` passed) are skipped, counted and traced as failed.
- causal consistency: a record carrying `quasar-config-offset` waits (bounded) until the config reader
  has applied that position; a reader that stays behind is a retryable `CONFIG_LAG` failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from app.config_store import ConfigReader, ConfigState, Snapshot
from app.config_store.state import default_compiler
from app.connectors.breaker import BreakerConfig, BreakerRegistry
from app.connectors.services import ConnectorServices
from app.engine.executor import RunOptions, rollout_bucket
from app.engine.message import Message as EngineMessage
from app.errors import EngineFailure, NotFound, QuasarError, ResponseTooLarge, ServiceUnavailable
from app.governance.kafka_ingest import KafkaIngestGovernance, duplicate_trace
from app.governance.rollout import record_rollout_key
from app.heap import settle_heap
from app.kafka import headers as H
from app.kafka.config import consumer_config, producer_config
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.observability import metrics as M
from app.observability.context import bound, context_from_headers
from app.settings import Settings
from app.worker.codec import InvalidEnvelope, SchemaCache, check_record_size, decode_avro, decode_json
from app.worker.dlq import DLQ_MAX_RECORD_BYTES, dlq_headers, dlq_value

__all__ = ["ChannelRoute", "ChannelWorker", "ConfigLag", "WorkerFailed"]

log = logging.getLogger("quasar.worker")

_STATUS_200 = [(H.STATUS, b"200")]
_NO_OPTIONS = RunOptions()


class ConfigLag(ServiceUnavailable):
    """The request was sent under a config position this worker has not applied yet."""

    code = "CONFIG_LAG"


class WorkerFailed(ServiceUnavailable):
    """Records could not be delivered: the worker stops without committing them (at-least-once)."""

    code = "WORKER_FAILED"


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    """What the worker needs to know about one active channel (rebuilt on every config change)."""

    name: str
    topic: str
    is_async: bool
    output_topic: str | None
    avro_schema: Any  # declaration (name or inline), None for JSON
    rollout_view: Any = None  # the ChannelView when it declares a `rollout_key` (most channels: None)


def routes_of(snapshot: Snapshot, names: TopicNames) -> dict[str, ChannelRoute]:
    """Request topic -> route for every active channel of `snapshot`."""
    out: dict[str, ChannelRoute] = {}
    for view in snapshot.channels.values():
        cfg: Mapping[str, Any] = view.config
        output = cfg.get("output")
        output_topic = (
            output if isinstance(output, str) and output else (names.output(view.name) if output is True else None)
        )
        topic = names.channel(view.name, view.topic)
        out[topic] = ChannelRoute(
            view.name,
            topic,
            view.channel_type == "async",
            output_topic,
            cfg.get("avro_schema"),
            view if "rollout_key" in cfg else None,
        )
    return out


class _Acks:
    """Delivery tracking for a group of produced records (one batch, or one slow-path record).

    One counter instead of a Future per record: librdkafka's delivery callbacks (served by `poll(0)` on
    the loop thread) append to a deque; `wait()` polls until every record is reported. `tasks` holds
    retries / async runs the group must also wait for.
    """

    __slots__ = ("_cb", "_client", "acks", "produced", "sealed", "tasks", "timeout")

    def __init__(self, client: Producer, timeout: float) -> None:
        self._client = client
        self.acks: deque[KafkaError | None] = deque()
        self.produced = 0
        self.sealed = False
        self.tasks: list[asyncio.Future[Any]] = []
        self.timeout = timeout
        self._cb = self._on_delivery

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self.acks.append(err)

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None,
        *,
        headers: Any = None,
        partition: int | None = None,
    ) -> None:
        """Enqueue one record (never awaits); a full local queue blocks up to `timeout` (backpressure)."""
        # Hot path (2-3 calls per record): one produce() with fixed keywords; the clock is read only
        # once the local queue is full.
        part = -1 if partition is None else partition  # -1: librdkafka's "unassigned" (partitioner)
        try:
            self._client.produce(topic, value, key, partition=part, on_delivery=self._cb, headers=headers or None)
        except BufferError:
            self._produce_when_room(topic, value, key, part, headers or None)
        self.produced += 1

    def _produce_when_room(
        self, topic: str, value: bytes | None, key: bytes | str | None, partition: int, headers: Any
    ) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self._client.poll(0.05)  # serve delivery reports: that is what frees the queue
            try:
                self._client.produce(topic, value, key, partition=partition, on_delivery=self._cb, headers=headers)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise WorkerFailed(f"producer queue full for {self.timeout}s") from None

    def complete(self) -> bool:
        """Every record reported delivered without error and every task finished without error."""
        return (
            len(self.acks) >= self.produced
            and all(e is None for e in self.acks)
            and all(t.done() and not t.cancelled() and t.exception() is None for t in self.tasks)
        )

    async def wait(self) -> None:
        """Wait for every record and task of the group; raise `WorkerFailed` if a delivery failed."""
        self.sealed = True
        if self.tasks:
            results = await asyncio.gather(*self.tasks, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise WorkerFailed(f"a retried or asynchronous record failed: {errors[0]}") from errors[0]
        client = self._client
        while len(self.acks) < self.produced:
            # Delivery reports are served on the loop thread (a poll thread fighting the loop for the
            # GIL costs far more); they arrive within linger + one broker round trip.
            client.poll(0)
            if len(self.acks) >= self.produced:
                break
            await asyncio.sleep(0.001)
        failed = [e for e in self.acks if e is not None]
        if failed:
            raise WorkerFailed(f"delivery failed, not committing: {failed[0].str()}")


class _Batch:
    """Offsets of one consumed batch and everything that must be delivered before they are committed."""

    __slots__ = ("acks", "offsets")

    def __init__(self, acks: _Acks) -> None:
        self.offsets: dict[tuple[str, int], int] = {}
        self.acks = acks


class ChannelWorker:
    """Consume channel topics, run workflows, produce results. `await start()`, `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        reader: ConfigReader | None = None,
        group_id: str | None = None,
        schemas: SchemaCache | None = None,
        batch_size: int = 2000,
        config_wait_seconds: float = 5.0,
        max_in_flight: int = 256,
        drain_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.traces_topic = self.names.traces
        # Workflows must be compiled against the real connector functions (http_call, db_*, ...):
        # the default registry only has placeholders that fail with "needs a connector runtime".
        self.reader = reader or ConfigReader(settings, state=_runtime_state())
        self._own_reader = reader is None
        self.group_id = group_id or f"{settings.topic_prefix}worker"
        self.schemas = schemas or SchemaCache()
        self.batch_size = batch_size
        self.config_wait_seconds = config_wait_seconds
        self.max_attempts = max(1, settings.worker_max_attempts)
        self.retry_backoff = settings.worker_retry_backoff_ms / 1000.0
        self.max_record_bytes = settings.worker_max_record_bytes
        self.max_result_bytes = min(settings.max_result_size_bytes, DLQ_MAX_RECORD_BYTES)
        self._reply_partitions: dict[str, int] = {}  # reply topic -> partition count (validated reply-to)
        self.drain_timeout = drain_timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        self._routes: dict[str, ChannelRoute] = {}
        self._view: Snapshot | None = None  # the snapshot `_routes` were built from
        self._apply_lock = asyncio.Lock()
        self._view_applied = asyncio.Event()
        self._subscribed: frozenset[str] = frozenset()
        self._wanted: frozenset[str] | None = None
        self._consumer: Consumer | None = None
        self._producer: AsyncProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._pending: deque[_Batch] = deque()
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._unlisten: Callable[[], None] | None = None
        self._ensured: set[str] = set()
        self.failure: BaseException | None = None
        self.processed = 0  # records fully handled (any outcome), for tests and the bench
        self.committed: dict[tuple[str, int], int] = {}
        self._workflows = M.WorkflowObserver()
        self._untrack_lag: Callable[[], None] | None = None
        # Connector runtime handed to connector-backed functions (http_call, db_*, ...): without it
        # every such workflow failed with ENGINE_ERROR. Rebuilt from each config snapshot.
        self.services: ConnectorServices | None = None
        # Rate limit (pause/resume) and dedup of records produced straight to channel topics.
        self.governance = KafkaIngestGovernance(settings)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Catch up with the config, subscribe to the active channels, start consuming."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.reader.ready()
        self._producer = AsyncProducer(
            producer_config(
                self.settings,
                client_id=f"quasar-worker-{self.settings.instance_id}",
                **{"linger.ms": self.settings.worker_linger_ms},
            )
        )
        # Large fetches: the loop takes whole batches; latency is still fetch.wait.max.ms.
        fetch: dict[str, Any] = {"fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760}
        conf = consumer_config(
            self.settings,
            group_id=self.group_id,
            client_id=f"quasar-worker-{self.settings.instance_id}",
            **fetch,
        )
        self._consumer = Consumer(conf)
        self.services = ConnectorServices(
            self.reader.snapshot.connectors,
            producer=self._producer,
            max_channel_call_depth=self.settings.max_channel_call_depth,
            default_channel_call_timeout_ms=self.settings.default_channel_call_timeout_ms,
            breakers=BreakerRegistry(BreakerConfig.from_settings(self.settings)),
        )
        await self.governance.start()
        self._untrack_lag = M.LAG.track(self.group_id, lambda: self._consumer)
        # Listen first, then apply the current view: a change folded in between is not missed, and
        # `_apply_snapshot` ignores whichever of the two arrives second if it is not newer.
        self._unlisten = self.reader.add_listener(self._apply_snapshot)
        await self._apply_snapshot(self.reader.snapshot)
        self._committer = asyncio.create_task(self._commit_loop(), name="quasar-worker-commit")
        self._task = asyncio.create_task(self._consume_loop(), name="quasar-worker-consume")
        settle_heap()

    async def stop(self) -> None:
        """Stop consuming, finish and commit what was consumed, close clients."""
        await self._shutdown(commit=True)

    async def abort(self) -> None:
        """Stop without committing pending work (what a crash looks like to the group)."""
        await self._shutdown(commit=False)

    async def _shutdown(self, *, commit: bool) -> None:
        self._stopping = True
        if self._unlisten is not None:
            self._unlisten()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if commit and self.failure is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(), self.drain_timeout)
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._committer
        if not commit:
            self._pending.clear()
        if self._untrack_lag is not None:
            self._untrack_lag()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(consumer.close)
        if self._producer is not None:
            await self._producer.close()
        if self.services is not None:
            with contextlib.suppress(Exception):
                await self.services.aclose()
        with contextlib.suppress(Exception):
            await self.governance.aclose()
        if self._own_reader:
            await self.reader.stop()

    async def wait_failed(self) -> BaseException:
        """Resolve when the consume loop ends by itself (a failure); returns the failure."""
        assert self._task is not None
        with contextlib.suppress(Exception):
            await self._task
        return self.failure or WorkerFailed("worker stopped")

    # -- subscriptions -----------------------------------------------------------------------------
    async def _apply_snapshot(self, snapshot: Snapshot) -> None:
        """Make `snapshot` (or a newer one the reader has meanwhile) the worker's view.

        The reader calls this as a concurrent task per config change, and creating topics awaits a
        thread: serialized by a lock and monotonic in the snapshot generation, so an older snapshot's
        call can never finish last and overwrite newer routes.
        """
        async with self._apply_lock:
            latest = self.reader.snapshot
            if latest.generation > snapshot.generation:
                snapshot = latest  # coalesce a burst of changes: the later calls become no-ops
            if self._view is not None and snapshot.generation <= self._view.generation:
                return
            if self.services is not None:
                self.services.set_connectors(snapshot.connectors)
            routes = routes_of(snapshot, self.names)
            new = [t for r in routes.values() for t in (r.topic, r.output_topic) if t and t not in self._ensured]
            if new:
                await asyncio.to_thread(self._ensure_topics, routes, new)
            self._routes = routes
            self._view = snapshot
            wanted = frozenset(routes)
            if wanted != self._subscribed:
                self._wanted = wanted  # applied by the consume loop between two polls
                self._wake.set()
            # Wake causal waiters (`_wait_view`): a fresh event per change, the old one set once.
            applied, self._view_applied = self._view_applied, asyncio.Event()
            applied.set()

    @property
    def view_offset(self) -> int:
        """The config position the worker's routes reflect (-1 before the first snapshot).

        While the worker holds the reader's current snapshot, it reflects everything the reader has
        folded; while a newer snapshot is still being applied, only the position of its own.
        """
        view = self._view
        if view is None:
            return -1
        if view.generation == self.reader.snapshot.generation:
            return self.reader.applied_offset
        return view.offset

    async def _wait_view(self, offset: int, seconds: float) -> bool:
        """Wait (bounded) until the worker's own view reflects config position `offset`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if not await self.reader.wait_for_offset(offset, seconds):
            return False
        while self.view_offset < offset:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._view_applied.wait(), remaining)
        return True

    def _ensure_topics(self, routes: Mapping[str, ChannelRoute], names: list[str]) -> None:
        # Never let the broker auto-create a channel topic (Tansu would make 4 partitions).
        from app.kafka.admin import create_admin
        from app.kafka.topics import TopicPlan, ensure_channel_topic, load_specs

        specs = load_specs()
        admin = create_admin(self.settings)
        outputs = {r.output_topic for r in routes.values()}
        for name in names:
            spec = specs["output" if name in outputs else "channel"]
            plan = TopicPlan(
                name,
                spec.partitions or self.settings.default_partitions,
                self.settings.replication_factor,
                dict(spec.configs),
            )
            try:
                ensure_channel_topic(admin, plan.name, plan.partitions, configs=plan.configs)
                self._ensured.add(name)
            except QuasarError as exc:
                log.error("cannot create topic %s: %s", name, exc)

    # -- the consume loop ----------------------------------------------------------------------------
    async def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping:
                if self._wanted is not None:
                    wanted, self._wanted = self._wanted, None
                    self._subscribe(consumer, wanted)
                if not self._subscribed:
                    # Nothing to read yet: wait for a config change (bounded, to notice stop()).
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.5)
                    continue
                # Busy stream: take what librdkafka already fetched, on the loop thread (no thread
                # hand-off, no GIL ping-pong with a consumer thread). Idle: wait in a thread.
                await asyncio.sleep(0)  # let the committer, listeners and other services run
                msgs = consumer.consume(self.batch_size, 0)
                if not msgs:
                    msgs = await asyncio.to_thread(_poll_batch, consumer, self.batch_size)
                if msgs:
                    batch = _Batch(self._new_acks())
                    await self._process(msgs, batch)
                    assert self._producer is not None
                    self._producer.client.poll(0)  # serve delivery reports of earlier batches
                    self._pending.append(batch)
                    self._idle.clear()
                    self._queue.put_nowait(batch)
                if self.failure is not None:
                    raise self.failure
        except Exception as exc:
            self.failure = self.failure or exc
            log.exception("worker consume loop failed")
            raise

    def _subscribe(self, consumer: Consumer, topics: frozenset[str]) -> None:
        self._subscribed = topics
        if topics:
            consumer.subscribe(sorted(topics), on_revoke=self._on_revoke)
        else:
            consumer.unsubscribe()
        log.info("subscribed to %s", sorted(topics))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was processed for the revoked partitions before another member takes them."""
        if self._loop is None or self.failure is not None or not self._pending:
            return
        if threading.get_ident() == self._loop_thread:
            # Called from consume() on the loop thread: the loop cannot run, so deliver synchronously
            # and commit the leading batches that are complete (a batch still retrying is redelivered).
            self._commit_ready_now(consumer)
        elif self._committer is not None and not self._committer.done():
            # Called on the poll thread: the loop is free to finish and commit the pending batches.
            fut = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)
            try:
                fut.result(self.drain_timeout)
            except Exception as exc:
                log.warning("could not commit before revocation (records will be redelivered): %s", exc)
        # Never commit these partitions later: the new owner may be ahead of us by then.
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for batch in self._pending:
            for tp in gone:
                batch.offsets.pop(tp, None)

    def _commit_ready_now(self, consumer: Consumer) -> None:
        assert self._producer is not None
        self._producer.client.flush(self.drain_timeout)
        latest: dict[tuple[str, int], int] = {}
        for batch in self._pending:
            if not batch.acks.complete():
                break
            latest.update(batch.offsets)
            batch.offsets = {}  # committed here; the committer has nothing left to do for it
        if latest:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o + 1) for (t, p), o in latest.items()], asynchronous=False
                )
                for (t, p), o in latest.items():
                    self.committed[(t, p)] = o + 1
            except Exception as exc:
                log.warning("could not commit before revocation (records will be redelivered): %s", exc)

    async def _drain(self) -> None:
        """Wait until every pending batch is committed."""
        while self._pending:
            await self._idle.wait()

    async def _commit_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await batch.acks.wait()
            except WorkerFailed as exc:
                # A record it caused was not delivered: committing would lose it. Stop here;
                # a restarted worker (or another member) re-processes from the last commit.
                self.failure = exc
                log.error("%s", exc)
                return
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in batch.offsets.items()]
            consumer = self._consumer
            if consumer is not None and offsets:
                try:
                    await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
                    for tp in offsets:
                        self.committed[(tp.topic, tp.partition)] = tp.offset
                except Exception as exc:
                    # Lost the partition meanwhile (rebalance): the new owner redelivers.
                    log.warning("commit failed: %s", exc)
            self._pending.popleft()
            if not self._pending:
                self._idle.set()

    def _new_acks(self) -> _Acks:
        assert self._producer is not None and self._loop is not None
        return _Acks(self._producer.client, 10.0)

    # -- per record ----------------------------------------------------------------------------------
    async def _process(self, msgs: list[Message], batch: _Batch) -> None:
        offsets = batch.offsets
        waits = batch.acks
        counts: dict[tuple[str, str], int] = {}
        governed = self.governance.governed(self.reader.snapshot)  # channels with rate limit / dedup
        held = self.governance.throttle.held  # partitions paused by a rate limit
        stopped: set[tuple[str, int]] = set()  # held partitions already handled in this batch
        skipped = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err.str())
                continue
            topic, partition, offset = _where(msg)
            if held and (topic, partition) in held:
                # Throttled: neither run nor committed now; re-read from the held offset on resume.
                if (topic, partition) not in stopped:
                    stopped.add((topic, partition))
                    assert self._consumer is not None
                    self.governance.throttle.hold(self._consumer, topic, partition, offset)
                skipped += 1
                continue
            # Read per record, not once per batch: a snapshot applied while this batch awaited a slot
            # must not leave a record checked against the new view but routed by the old one.
            route = self._routes.get(topic)
            raw_headers = msg.headers()
            hm = H.header_map(raw_headers) if raw_headers else {}
            if governed and route is not None and H.MODE not in hm and route.name in governed:
                # Produced straight to the topic (the gateway governs its own records, `quasar-mode`).
                outcome = await self._govern(msg, route, hm, governed[route.name], waits)
                if outcome == "hold":
                    stopped.add((topic, partition))
                    skipped += 1
                    continue
                if outcome == "duplicate":
                    offsets[(topic, partition)] = offset
                    counts[(route.name, outcome)] = counts.get((route.name, outcome), 0) + 1
                    continue
            offsets[(topic, partition)] = offset
            needed = hm.get(H.CONFIG_OFFSET)
            if route is None or (needed is not None and self._behind(needed)):
                # Slow path: wait for the config (or fail over to DLQ) off the batch loop.
                await self._slots.acquire()
                task = asyncio.ensure_future(self._slow(msg, hm))
                task.add_done_callback(lambda _t: self._slots.release())
                waits.tasks.append(task)
                continue
            status = self._handle(msg, route, hm, waits, 1)
            if status is not None:
                key = (route.name, status)
                counts[key] = counts.get(key, 0) + 1
        for (channel, status), n in counts.items():
            M.MESSAGES.labels(channel, status).inc(n)
        self.processed += len(msgs) - skipped

    async def _govern(
        self, msg: Message, route: ChannelRoute, hm: dict[str, str], policy: Any, waits: _Acks
    ) -> str | None:
        """Rate limit + dedup of a Kafka-ingested record: None (run it), "hold" (its partition is paused
        and sought back to it) or "duplicate" (traced, not run)."""

        def decode() -> tuple[Any, Any]:
            if route.avro_schema is not None:
                return decode_avro(msg.value(), self.schemas.get(route.avro_schema))
            return decode_json(msg.value())

        where = _where(msg)
        trace_id = _trace_id(msg, hm)
        verdict = await self.governance.admit(
            policy, key=msg.key(), headers=hm, decode=decode, where=where, trace_id=trace_id
        )
        if verdict.action == "hold":
            assert self._consumer is not None
            self.governance.throttle.hold(self._consumer, *where, verdict.retry_after)
            return "hold"
        if verdict.action == "duplicate":
            key, value = duplicate_trace(
                channel=route.name,
                headers=hm,
                trace_id=trace_id,
                created_ms=msg.timestamp()[1],
                verdict=verdict,
                where=where,
            )
            waits.send(self.traces_topic, value, key)
            return "duplicate"
        return None

    def _behind(self, needed: str) -> bool:
        try:
            return self.view_offset < int(needed)
        except ValueError:
            return False  # a malformed position cannot be waited for; the record still runs

    async def _slow(self, msg: Message, hm: dict[str, str]) -> None:
        needed = hm.get(H.CONFIG_OFFSET)
        waits = self._new_acks()
        if needed is not None and self._behind(needed):
            ok = await self._wait_view(int(needed), self.config_wait_seconds)
            if not ok:
                self._fail(
                    msg,
                    hm,
                    self._route_or_unknown(msg),
                    ConfigLag(
                        f"config position {needed} not applied within {self.config_wait_seconds}s "
                        f"(worker at {self.view_offset})"
                    ),
                    1,
                    waits,
                )
                await waits.wait()
                return
        route = self._routes.get(_where(msg)[0])
        if route is None:
            self._fail(
                msg,
                hm,
                self._route_or_unknown(msg),
                NotFound(f"no active channel reads topic '{msg.topic()}'"),
                1,
                waits,
            )
        else:
            status = self._handle(msg, route, hm, waits, 1)
            if status is not None:
                M.MESSAGES.labels(route.name, status).inc()
        await waits.wait()

    def _route_or_unknown(self, msg: Message) -> ChannelRoute:
        topic = _where(msg)[0]
        return self._routes.get(topic) or ChannelRoute(
            H.header_map(msg.headers()).get(H.CHANNEL, ""), topic, True, None, None
        )

    def _handle(
        self,
        msg: Message,
        route: ChannelRoute,
        hm: dict[str, str],
        waits: _Acks,
        attempt_here: int,
    ) -> str | None:
        """Process one record; append what must be delivered before commit to `waits`.

        Returns the outcome for `messages_total` (None when a retry was scheduled: it counts itself).
        """
        deadline = hm.get(H.DEADLINE)
        now = time.time()
        if deadline is not None:
            with contextlib.suppress(ValueError):
                if int(deadline) <= now * 1000:
                    M.EXPIRED.labels(route.name).inc()
                    self._trace(msg, route, hm, waits, now, failed=_EXPIRED_BODY)
                    return "expired"
        try:
            if deadline is not None and not deadline.isdigit():
                raise InvalidEnvelope(f"malformed {H.DEADLINE} header {deadline!r}: expected epoch ms")
            raw_headers = msg.headers()
            if raw_headers and len(raw_headers) != len(hm):  # some value was dropped as undecodable
                _check_control_headers(raw_headers)
            reply_to = self._reply_to(hm)
            check_record_size(msg.value(), self.max_record_bytes)
            if route.avro_schema is not None:
                data, metadata = decode_avro(msg.value(), self.schemas.get(route.avro_schema))
            else:
                data, metadata = decode_json(msg.value())
            engine = self.reader.snapshot.engine
            if engine is None or not engine.has_channel(route.name):
                raise NotFound(f"Channel '{route.name}' not found")
            trace_id = _trace_id(msg, hm)
            message = EngineMessage.from_request(data, metadata, id=hm.get(H.REQUEST_ID) or trace_id)
            rkey = hm.get(H.ROLLOUT_KEY)
            if not rkey and route.rollout_view is not None:  # governance: Kafka-ingested sticky key
                rkey = record_rollout_key(route.rollout_view, msg.key(), hm, data, metadata)
            options = (
                RunOptions(
                    rollout_bucket=rollout_bucket(rkey) if rkey else None,
                    deadline=int(deadline) / 1000.0 if deadline and deadline.isdigit() else None,
                )
                if rkey or deadline
                else _NO_OPTIONS
            )
            if not engine.is_sync(route.name):
                # Asynchronous tasks (connectors): run off the batch loop, bounded.
                options = RunOptions(options.rollout_bucket, options.deadline, self.services)
                task = asyncio.ensure_future(self._run_async(msg, route, hm, engine, message, options, attempt_here))
                waits.tasks.append(task)
                return None
            started = time.perf_counter()
            engine.process_sync(route.name, message, options)
            self._workflows.observe(route.name, message.audit_trail, now, time.perf_counter() - started)
            body = self._result(message)
        except QuasarError as exc:
            return self._failed(msg, route, hm, exc, waits, attempt_here)
        except Exception as exc:  # an engine bug must not stop the partition
            log.exception("unexpected error processing %s[%d]@%d", msg.topic(), msg.partition(), msg.offset())
            return self._failed(msg, route, hm, _internal(exc), waits, attempt_here)
        self._deliver_ok(msg, route, hm, body, reply_to, waits, now, trace_id)
        return "ok"

    async def _run_async(
        self,
        msg: Message,
        route: ChannelRoute,
        hm: dict[str, str],
        engine: Any,
        message: Any,
        options: Any,
        attempt_here: int,
    ) -> None:
        waits = self._new_acks()
        now = time.time()
        async with self._slots:
            started = time.perf_counter()
            wall = time.time()
            try:
                await engine.process(route.name, message, options)
                self._workflows.observe(route.name, message.audit_trail, wall, time.perf_counter() - started)
                self._deliver_ok(msg, route, hm, self._result(message), self._reply_to(hm), waits, now)
                M.MESSAGES.labels(route.name, "ok").inc()
            except QuasarError as exc:
                status = self._failed(msg, route, hm, exc, waits, attempt_here)
                if status is not None:
                    M.MESSAGES.labels(route.name, status).inc()
            except Exception as exc:
                status = self._failed(msg, route, hm, _internal(exc), waits, attempt_here)
                if status is not None:
                    M.MESSAGES.labels(route.name, status).inc()
        await waits.wait()

    def _result(self, message: Any) -> bytes:
        """The reply/output body; too large a body fails the record (a reply or output above the
        producer's limit would fail delivery and stop the worker)."""
        body: bytes = message.response_json()
        if len(body) > self.max_result_bytes:
            raise ResponseTooLarge(f"Response of {len(body)} bytes exceeds the limit of {self.max_result_bytes} bytes")
        return body

    def _reply_to(self, hm: dict[str, str]) -> tuple[str, int] | None:
        raw = hm.get(H.REPLY_TO)
        if raw is None:
            return None
        topic, sep, part = raw.rpartition(":")
        if not sep or not topic or not part.isdigit():
            raise InvalidEnvelope(f"malformed {H.REPLY_TO} header {raw!r}: expected '<topic>:<partition>'")
        if H.CORRELATION_ID not in hm:
            raise InvalidEnvelope(f"{H.REPLY_TO} without {H.CORRELATION_ID}")
        # A reply to a partition that does not exist would fail the whole batch's delivery and stop the
        # worker (a poison pill, redelivered after every restart): refuse the address up front.
        partitions = self._reply_partitions.get(topic)
        if partitions is None:
            partitions = self._reply_topic_partitions(topic)
        if int(part) >= partitions:
            raise InvalidEnvelope(
                f"{H.REPLY_TO} header {raw!r}: topic '{topic}' has no partition {part}"
                if partitions
                else f"{H.REPLY_TO} header {raw!r}: no such reply topic"
            )
        return topic, int(part)

    def _reply_topic_partitions(self, topic: str) -> int:
        """Partition count of a reply topic (0: invalid name or no such topic); cached once known."""
        if len(topic) > 249 or not _TOPIC_NAME.fullmatch(topic):
            return 0
        assert self._consumer is not None
        try:
            # Blocking, but once per reply topic (there are few: the gateways' shared replies topic).
            # Asked through the consumer: its metadata requests never auto-create the topic (a
            # producer's would, creating a topic for any name a record carries).
            md = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
        except Exception as exc:
            raise ServiceUnavailable(f"cannot read metadata of reply topic '{topic}': {exc}") from None
        if md is None or md.error is not None or not md.partitions:
            return 0
        self._reply_partitions[topic] = len(md.partitions)
        return len(md.partitions)

    def _deliver_ok(
        self,
        msg: Message,
        route: ChannelRoute,
        hm: dict[str, str],
        body: bytes,
        reply_to: tuple[str, int] | None,
        waits: _Acks,
        now: float,
        trace_id: str | None = None,
    ) -> None:
        if reply_to is not None:
            waits.send(reply_to[0], body, hm[H.CORRELATION_ID], headers=_STATUS_200, partition=reply_to[1])
        trace_id = trace_id or _trace_id(msg, hm)
        if route.output_topic is not None and route.is_async:
            waits.send(route.output_topic, body, trace_id, headers=_out_headers(route, hm, trace_id))
        self._trace(msg, route, hm, waits, now, result=body, trace_id=trace_id)

    def _trace(
        self,
        msg: Message,
        route: ChannelRoute,
        hm: dict[str, str],
        waits: _Acks,
        now: float,
        *,
        result: bytes | None = None,
        failed: bytes | None = None,
        trace_id: str | None = None,
    ) -> None:
        trace_id = trace_id or _trace_id(msg, hm)
        created = msg.timestamp()[1]
        done_ms = time.time_ns() // 1_000_000
        if created <= 0:
            created = int(now * 1000)
        # The same bytes as orjson.dumps({"id", "status", "mode", "channel", "created_at",
        # "completed_at", "duration_ms", "result" | "error"}), but the constant middle is encoded once
        # per (channel, status, mode) and the result body is spliced in, never parsed again.
        completed = failed is None
        mode = hm.get(H.MODE) or ("sync" if H.REPLY_TO in hm else "async")
        middle = _trace_middle(route.name, completed, mode)
        tail = b',"result":' + result if completed and result is not None else b',"error":' + (failed or b"null")
        value = b'{"id":%b%b"created_at":"%b","completed_at":"%b","duration_ms":%d%b}' % (
            orjson.dumps(trace_id),
            middle,
            _iso(created).encode(),
            _iso(done_ms).encode(),
            max(0, done_ms - created),
            tail,
        )
        waits.send(self.traces_topic, value, trace_id)

    def _failed(
        self,
        msg: Message,
        route: ChannelRoute,
        hm: dict[str, str],
        exc: QuasarError,
        waits: _Acks,
        attempt_here: int,
    ) -> str | None:
        if exc.retryable and attempt_here < self.max_attempts:
            M.RETRIES.labels(route.name).inc()
            waits.tasks.append(asyncio.ensure_future(self._retry(msg, route, hm, attempt_here + 1)))
            return None
        self._fail(msg, hm, route, exc, attempt_here, waits)
        return "dlq"

    async def _retry(self, msg: Message, route: ChannelRoute, hm: dict[str, str], attempt_here: int) -> None:
        # Exponential backoff; the partition keeps flowing, only this record's commit waits.
        await asyncio.sleep(self.retry_backoff * (2 ** (attempt_here - 2)))
        waits = self._new_acks()
        status = self._handle(msg, self._routes.get(_where(msg)[0], route), hm, waits, attempt_here)
        if status is not None:
            M.MESSAGES.labels(route.name, status).inc()
        await waits.wait()

    def _fail(
        self,
        msg: Message,
        hm: dict[str, str],
        route: ChannelRoute,
        exc: QuasarError,
        attempt_here: int,
        waits: _Acks,
    ) -> None:
        """DLQ the record; a sync caller gets the error reply; the trace says failed."""
        prior = hm.get(H.ATTEMPT)
        attempts = (int(prior) - 1 if prior and prior.isdigit() else 0) + attempt_here
        first = hm.get(H.DLQ_FIRST_FAILED_AT)
        first_ms = int(first) if first and first.isdigit() else int(time.time() * 1000)
        topic, partition, offset = _where(msg)
        headers = dlq_headers(
            msg.headers(),
            channel=route.name,
            error=exc,
            attempts=attempts,
            first_failed_ms=first_ms,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        value, headers = dlq_value(msg.value(), headers)
        waits.send(self.names.dlq, value, msg.key(), headers=headers)
        M.DLQ_RECORDS.labels(route.name, exc.code).inc()
        M.ERRORS.labels(exc.code).inc()
        with bound(**{**context_from_headers(hm), "channel": route.name}):
            log.warning(
                "record dead-lettered: %s[%d]@%d %s: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc.code,
                exc.message,
            )
        body = orjson.dumps(_error_body(exc))
        try:
            reply_to = self._reply_to(hm)
        except InvalidEnvelope:
            reply_to = None
        if reply_to is not None:
            waits.send(
                reply_to[0],
                body,
                hm[H.CORRELATION_ID],
                headers=[(H.STATUS, str(exc.status).encode())],
                partition=reply_to[1],
            )
        self._trace(msg, route, hm, waits, time.time(), failed=orjson.dumps(_error_body(exc)["error"]))


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Headers that steer processing: a value that is not UTF-8 makes the envelope invalid (not ignored).
_CONTROL = frozenset({H.REPLY_TO, H.CORRELATION_ID, H.DEADLINE, H.CONFIG_OFFSET, H.ATTEMPT, H.MODE, H.ROLLOUT_KEY})


def _check_control_headers(raw: Any) -> None:
    """Raise `InvalidEnvelope` when a control header's value is not UTF-8 (raw: the record's headers)."""
    for name, value in raw:
        if name in _CONTROL and isinstance(value, bytes):
            try:
                value.decode()
            except UnicodeDecodeError:
                raise InvalidEnvelope(f"header {name} is not valid UTF-8: {value[:64]!r}") from None


_EXPIRED_BODY = orjson.dumps({"code": "DEADLINE_EXCEEDED", "message": "the caller's deadline passed before processing"})


def _error_body(exc: QuasarError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message}}


def _internal(exc: BaseException) -> QuasarError:
    err = EngineFailure("An internal engine error occurred")
    err.retryable = False  # a bug does not heal by retrying
    err.__cause__ = exc
    return err


_MIDDLES: dict[tuple[str, bool, str], bytes] = {}


def _trace_middle(channel: str, completed: bool, mode: str) -> bytes:
    """`,"status":..,"mode":..,"channel":..,` of a trace record, encoded once per combination."""
    key = (channel, completed, mode)
    middle = _MIDDLES.get(key)
    if middle is None:
        middle = (
            b',"status":'
            + (b'"completed"' if completed else b'"failed"')
            + b',"mode":'
            + orjson.dumps(mode)
            + b',"channel":'
            + orjson.dumps(channel)
            + b","
        )
        if mode in ("sync", "async") and len(_MIDDLES) < 4096:  # `mode` is a header: cache the known ones
            _MIDDLES[key] = middle
    return middle


def _where(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record; confluent types them optional, but a record
    without an error always has all three (the fallbacks only satisfy the types)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    return topic or "", -1 if partition is None else partition, -1 if offset is None else offset


def _trace_id(msg: Message, hm: dict[str, str]) -> str:
    # Deterministic fallback: a redelivered record overwrites its own trace instead of adding one.
    return (
        hm.get(H.TRACE_ID)
        or hm.get(H.CORRELATION_ID)
        or hm.get(H.REQUEST_ID)
        or f"{msg.topic()}-{msg.partition()}-{msg.offset()}"
    )


def _out_headers(route: ChannelRoute, hm: dict[str, str], trace_id: str) -> list[tuple[str, bytes]]:
    out = [(H.CHANNEL, route.name.encode()), (H.TRACE_ID, trace_id.encode())]
    rid = hm.get(H.REQUEST_ID)
    if rid:
        out.append((H.REQUEST_ID, rid.encode()))
    return out


_SECONDS: dict[int, str] = {}


def _iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds; the seconds part is cached (records of a batch share a few)."""
    secs, rem = divmod(ms, 1000)
    text = _SECONDS.get(secs)
    if text is None:
        if len(_SECONDS) > 64:
            _SECONDS.clear()
        text = _SECONDS[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{text}.{rem:03d}Z"


def _runtime_state() -> ConfigState:
    from app.connectors import connector_registry

    return ConfigState(compiler=functools.partial(default_compiler, registry=connector_registry()))


def _poll_batch(consumer: Consumer, limit: int) -> list[Message]:
    # poll() returns on the first record; consume(timeout=0) then takes what is already fetched.
    # consume(n, timeout) alone waits for a *full* batch: +100 ms per cycle under light load.
    first = consumer.poll(0.1)
    return [] if first is None else [first, *consumer.consume(limit - 1, 0)]

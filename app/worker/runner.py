"""`ChannelWorker`: the consume loop of `quasar worker`, around the record pipeline and the delivery tracker.

One confluent-kafka group consumer reads the request topics of every active channel in batches. Each record
goes through `Pipeline.handle` (app/worker/pipeline.py: the per-record contract, testable without a broker);
what it returns is produced and tracked by the `DeliveryTracker` (app/worker/delivery.py: acknowledgements,
dead-lettering of undeliverable records, in-order commits). Why not Faust's per-event stream: measured on
this box (bench/worker.py), a Faust agent tops out at ~2-5k msgs/s whatever the serializer or batch size;
Faust still runs the process (see `app/worker/app.py`), this class is one of its services.

Guarantees:
- at-least-once: the offsets of a batch are committed only after every record it caused (reply, output,
  trace, DLQ) was delivered (or dead-lettered) and every retry it scheduled finished; batches commit in
  order. On a partition revocation the pending batches are drained and committed before the partitions go.
- order per key: records of one key on one partition are processed, produced and committed in order, also
  when the workflow awaits IO (each key is a chain of tasks; keys run concurrently, bounded by
  `max_in_flight`); a retry holds back the later records of its key. Records without a key are independent.
- nothing dropped silently, nothing stops the worker: every failure is a DLQ record (see the pipeline), a
  record that cannot be produced is dead-lettered, one that cannot be dead-lettered is logged, counted and
  skipped. Expired requests (`quasar-deadline` passed) are skipped, counted and traced as failed.
- causal consistency: a record carrying `quasar-config-offset` waits (bounded) until the config reader has
  applied that position; a reader that stays behind is a transient `CONFIG_LAG` failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from app.channels import CompiledChannel
from app.config_store import ConfigReader, ConfigState, Snapshot
from app.config_store.state import default_compiler
from app.connectors.breaker import BreakerConfig, BreakerRegistry
from app.connectors.breaker_cluster import ClusterBreakers
from app.connectors.services import ConnectorServices
from app.errors import QuasarError, ServiceUnavailable
from app.governance.kafka_ingest import KafkaIngestGovernance, duplicate_trace
from app.governance.seal import seal_key, verify
from app.heap import settle_heap
from app.kafka import headers as H
from app.kafka.config import consumer_config, producer_config
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.observability import metrics as M
from app.observability.context import bound, context_from_headers
from app.observability.tracing import tracing_for
from app.settings import Settings
from app.topology import ChannelFilter
from app.worker.codec import SchemaCache, decode_avro, decode_json, decode_raw, schemas_dir
from app.worker.consumption import ConsumptionControl
from app.worker.delivery import Acks, Batch, DeliveryTracker
from app.worker.pipeline import ChannelRoute, Outcome, Pipeline, WorkerView, routes_of, trace_id_of, where_of
from app.worker.registry import SchemaRegistry
from app.worker.transactions import TransactionalLoop, open_transactions, transactional_id

__all__ = ["ChannelRoute", "ChannelWorker", "ConfigLag", "WorkerFailed", "routes_of"]

log = logging.getLogger("quasar.worker")


class ConfigLag(ServiceUnavailable):
    """The request was sent under a config position this worker has not applied yet."""

    code = "CONFIG_LAG"


class WorkerFailed(ServiceUnavailable):
    """Records could not be delivered: the worker stops without committing them (at-least-once)."""

    code = "WORKER_FAILED"


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
        max_outstanding: int | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.traces_topic = self.names.traces
        # Workflows must be compiled against the real connector functions (http_call, db_*, ...):
        # the default registry only has placeholders that fail with "needs a connector runtime".
        self.reader = reader or ConfigReader(settings, state=_runtime_state(settings))
        self._own_reader = reader is None
        self.group_id = group_id or f"{settings.topic_prefix}worker"
        self.schemas = schemas or SchemaCache(schemas_dir(settings))
        self.batch_size = batch_size
        self.config_wait_seconds = config_wait_seconds
        self._workflows = M.WorkflowObserver()
        self.pipeline = Pipeline(
            self.names,
            max_record_bytes=settings.worker_record_limit_bytes,
            max_result_bytes=settings.result_limit_bytes,
            max_produce_bytes=settings.max_record_bytes,
            max_attempts=settings.worker_max_attempts,
            retry_backoff_s=settings.worker_retry_backoff_ms / 1000.0,
            schemas=self.schemas,
            registry=SchemaRegistry(settings, schemas_dir(settings)),
            observe=self._workflows.observe,
            explain_requests=settings.explain_requests,
        )
        self._reply_topics: dict[str, int] = {}  # configured reply topic -> partition count
        self.drain_timeout = drain_timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        # Records handed to tasks and not finished (each holds its Message): above the bound the loop
        # consumes nothing more until half of them finished, so a slow upstream cannot pull a whole backlog
        # into memory. Heartbeats go on (librdkafka's thread); a rebalance waits for the next poll.
        self.max_outstanding = max_outstanding or max(batch_size, 4 * max_in_flight)
        self.max_uncommitted = settings.worker_max_uncommitted_records
        self._outstanding = 0
        self.outstanding_peak = 0
        self._room = asyncio.Event()
        self._routes: dict[str, ChannelRoute] = {}
        self._worker_view = WorkerView({}, None)
        self._view: Snapshot | None = None  # the snapshot `_routes` were built from
        # Per key: the task of the last record scheduled (later records of the key wait for it).
        self._tails: dict[tuple[str, int, bytes], asyncio.Future[None]] = {}
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
        # processing_guarantee exactly_once: the transactions replace the tracker's commits.
        self.transactions: TransactionalLoop | None = None
        self._services_producer: AsyncProducer | None = None
        self.tracker = DeliveryTracker(
            self._producer_client,
            lambda: self._consumer,
            self.names.dlq,
            max_record_bytes=settings.max_record_bytes,
            commit_interval=settings.commit_interval_s(),
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._unlisten: Callable[[], None] | None = None
        self._ensured: set[str] = set()
        self.failure: BaseException | None = None
        self.processed = 0  # records taken from the consumer and handled or scheduled, for tests and the bench
        self._untrack_lag: Callable[[], None] | None = None
        # Connector runtime handed to connector-backed functions (http_call, db_*, ...): without it
        # every such workflow failed with ENGINE_ERROR. Rebuilt from each config snapshot.
        self.services: ConnectorServices | None = None
        self._cluster_breakers: ClusterBreakers | None = None
        self._topology = ChannelFilter.from_settings(settings)
        # Rate limit (pause/resume) and dedup of records produced straight to channel topics.
        self.governance = KafkaIngestGovernance(settings)
        self._seal_key = seal_key(settings)
        # Pause/resume, start positions and seek requests of channels (runtime records on the config topic).
        self.control = ConsumptionControl(
            self.reader,
            settings.instance_id,
            lambda: self._consumer,
            self.tracker.forget,
            throttled=lambda: self.governance.throttle.held,
        )
        # A rate-limit hold ending must not resume the partition of a paused channel.
        self.governance.throttle.keep_paused = lambda tp: tp[0] in self.control.paused_topics

    # -- lifecycle ---------------------------------------------------------------------------------
    def subscriptions(self) -> list[tuple[str, str]]:
        """(group, topic) of every channel topic this worker's group consumes (for committed-offset lag).

        Called from the broker probe's thread: `list()` of the dict is one atomic step under the GIL.
        """
        return [(self.group_id, topic) for topic in list(self._routes)]

    async def start(self) -> None:
        """Catch up with the config, subscribe to the active channels, start consuming."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.reader.ready()
        exactly_once = self.settings.processing_guarantee == "exactly_once"
        txn = {"transactional.id": transactional_id(self.settings)} if exactly_once else {}
        self._producer = AsyncProducer(
            producer_config(
                self.settings,
                client_id=f"quasar-worker-{self.settings.instance_id}",
                **{"linger.ms": self.settings.worker_linger_ms, **txn},
            )
        )
        self._services_producer = self._producer
        if exactly_once:
            self.transactions = await open_transactions(
                self.settings, self._producer.client, lambda: self._consumer, self.names.dlq, self.tracker.committed
            )
            # Connectors' own records (publish_kafka, channel calls) stay outside the transactions: a
            # channel call's request must be readable before its caller's transaction commits.
            self._services_producer = AsyncProducer(
                producer_config(self.settings, client_id=f"quasar-worker-{self.settings.instance_id}-connectors")
            )
        # Large fetches: the loop takes whole batches; latency is still fetch.wait.max.ms.
        fetch: dict[str, Any] = {"fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760}
        fetch["on_commit"] = self.tracker.on_commit
        if self.settings.worker_static_membership:
            fetch["group.instance.id"] = f"{self.group_id}.{self.settings.instance_id}"
        conf = consumer_config(
            self.settings,
            group_id=self.group_id,
            client_id=f"quasar-worker-{self.settings.instance_id}",
            **fetch,
        )
        self._consumer = Consumer(conf)
        self.control.cooperative = "cooperative" in str(conf.get("partition.assignment.strategy", ""))
        self.control.start()
        self.services = ConnectorServices(
            self.reader.snapshot.connectors,
            producer=self._services_producer,
            max_channel_call_depth=self.settings.max_channel_call_depth,
            default_channel_call_timeout_ms=self.settings.default_channel_call_timeout_ms,
            breakers=BreakerRegistry(BreakerConfig.from_settings(self.settings)),
            topics=TopicNames(self.settings.topic_prefix),
        )
        self.pipeline.services = self.services
        self.pipeline.tracing = self.services.tracing = tracing_for(self.settings)
        # Breaker states visible and resettable from any gateway (runtime records on the config topic).
        self._cluster_breakers = ClusterBreakers(self.services.breakers, self.reader, self.settings.instance_id)
        self._cluster_breakers.start()
        await self.governance.start()
        self._untrack_lag = M.LAG.track(self.group_id, lambda: self._consumer)
        # Listen first, then apply the current view: a change folded in between is not missed, and
        # `_apply_snapshot` ignores whichever of the two arrives second if it is not newer.
        self._unlisten = self.reader.add_listener(self._apply_snapshot)
        await self._apply_snapshot(self.reader.snapshot)
        if self.transactions is None:
            self._committer = asyncio.create_task(self.tracker.commit_loop(), name="quasar-worker-commit")
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
        self.control.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if commit and self.failure is None:
            with contextlib.suppress(Exception):
                if self.transactions is not None:
                    await asyncio.wait_for(self.transactions.close(commit=True), self.drain_timeout)
                else:
                    await asyncio.wait_for(self.tracker.drain(), self.drain_timeout)
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._committer
        if not commit:
            self.tracker.drop_pending()
        for tail in list(self._tails.values()):
            tail.cancel()
        if self._untrack_lag is not None:
            self._untrack_lag()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(consumer.close)
        await asyncio.to_thread(self.pipeline.close)  # a heavy record still in its thread ends within its budget
        if self._producer is not None:
            await self._producer.close()
        if self._services_producer is not None and self._services_producer is not self._producer:
            await self._services_producer.close()
        if self._cluster_breakers is not None:
            with contextlib.suppress(Exception):
                await self._cluster_breakers.stop()
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
            if not self._topology.everything:  # Orion's [channels] include/exclude: consume only ours
                routes = {topic: r for topic, r in routes.items() if self._topology.serves(r.name)}
            new = [t for r in routes.values() for t in (r.topic, r.output_topic) if t and t not in self._ensured]
            if new:
                await asyncio.to_thread(self._ensure_topics, routes, new)
            replies = self.names.replies
            if not self._reply_topics.get(replies):
                self._reply_topics[replies] = await asyncio.to_thread(self._partitions_of, replies)
            self._routes = routes
            self.control.set_routes(routes)
            self._worker_view = WorkerView(routes, snapshot.engine, dict(self._reply_topics))
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
        from app.kafka.topics import ensure_channel_topic, load_specs, spec_configs

        specs = load_specs()
        admin = create_admin(self.settings)
        outputs = {r.output_topic for r in routes.values()}
        for name in names:
            spec = specs["output" if name in outputs else "channel"]
            partitions = spec.partitions or self.settings.default_partitions
            try:
                ensure_channel_topic(
                    admin,
                    name,
                    partitions,
                    configs=spec_configs(spec, self.settings),
                    replication_factor=self.settings.replication_factor,
                )
                self._ensured.add(name)
            except QuasarError as exc:
                log.error("cannot create topic %s: %s", name, exc)

    def _partitions_of(self, topic: str) -> int:
        """Partition count of a reply topic (0: no such topic yet; asked again on the next change).

        Asked through the consumer: its metadata requests never auto-create the topic.
        """
        consumer = self._consumer
        if consumer is None:
            return 0
        try:
            md = consumer.list_topics(topic, timeout=5).topics.get(topic)
        except Exception as exc:
            log.warning("cannot read metadata of reply topic %s: %s", topic, exc)
            return 0
        if md is None or md.error is not None or not md.partitions:
            return 0
        return len(md.partitions)

    # -- the consume loop ----------------------------------------------------------------------------
    def _producer_client(self) -> Any:
        assert self._producer is not None
        return self._producer.client

    @property
    def committed(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset committed by this worker."""
        return self.tracker.committed

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
                if self.control.pending:  # seek requests: between two polls, never mid-batch
                    if self.transactions is not None and self.transactions.open:
                        # The open transaction's input offsets would land after the seek's commit.
                        await asyncio.to_thread(self.transactions.commit_now)
                    await self.control.apply_pending(consumer)
                if self._outstanding >= self.max_outstanding:
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), 0.5)  # bounded, to notice stop()
                    continue
                if self.max_uncommitted and self.tracker.uncommitted >= self.max_uncommitted:
                    # Processed records whose outputs may have landed but whose offsets are not committed
                    # yet are what a crash runs again: bounded, the consumer waits for commits to catch up.
                    await self.tracker.wait_progress(0.5)
                    continue
                # Busy stream: take what librdkafka already fetched, on the loop thread (no thread
                # hand-off, no GIL ping-pong with a consumer thread). Idle: wait in a thread.
                await asyncio.sleep(0)  # let the committer, listeners and other services run
                if self.transactions is not None:
                    await self.transactions.tick()
                msgs = consumer.consume(self.batch_size, 0)
                if not msgs:
                    msgs = await asyncio.to_thread(_poll_batch, consumer, self.batch_size)
                if msgs and self.transactions is not None:
                    await self.transactions.run(msgs, self._process)
                elif msgs:
                    batch = self.tracker.batch()
                    await self._process(msgs, batch)
                    self._producer_client().poll(0)  # serve delivery reports of earlier batches
                    batch.records = len(msgs)
                    self.tracker.seal(batch)
        except Exception as exc:
            self.failure = self.failure or exc
            log.exception("worker consume loop failed")
            raise

    def _subscribe(self, consumer: Consumer, topics: frozenset[str]) -> None:
        self._subscribed = topics
        if topics:
            consumer.subscribe(sorted(topics), on_assign=self.control.on_assign, on_revoke=self._on_revoke)
        else:
            consumer.unsubscribe()
        log.info("subscribed to %s", sorted(topics))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was processed for the revoked partitions before another member takes them."""
        self.control.on_revoke(partitions)
        if self.transactions is not None:
            if partitions and self.failure is None:
                self.transactions.on_revoke()
            return
        # Cooperative rebalancing also calls this with no partitions (a subscription change that takes
        # nothing away): nothing to hand over, and a synchronous commit here would block the loop
        # for the whole rebalance.
        if not partitions or self._loop is None or self.failure is not None or not self.tracker.pending:
            return
        if threading.get_ident() == self._loop_thread:
            # Called from consume() on the loop thread: the loop cannot run, so deliver synchronously
            # and commit the leading batches that are complete (a batch still retrying is redelivered).
            self.tracker.commit_ready_now(consumer, self.drain_timeout)
        elif self._committer is not None and not self._committer.done():
            # Called on the poll thread: the loop is free to finish and commit the pending batches.
            fut = asyncio.run_coroutine_threadsafe(self.tracker.drain(), self._loop)
            try:
                fut.result(self.drain_timeout)
            except Exception as exc:
                log.warning("could not commit before revocation (records will be redelivered): %s", exc)
        self.tracker.forget({(tp.topic, tp.partition) for tp in partitions})

    # -- per record ----------------------------------------------------------------------------------
    async def _process(self, msgs: list[Message], batch: Batch) -> None:
        offsets = batch.offsets
        acks = batch.acks
        counts: dict[tuple[str, str], int] = {}
        governed = self.governance.governed(self.reader.snapshot)  # channels with keys / size / rate / dedup
        held = self.governance.throttle.held  # partitions paused by a rate limit
        control = self.control  # channels paused, partitions starting at a time (skip older records)
        stopped: set[tuple[str, int]] = set()  # held partitions already handled in this batch
        paused_now: set[tuple[str, int]] = set()  # partitions of paused channels held in this batch
        inline: dict[str, bool] = {}  # topic -> its channel runs synchronously (no IO to await)
        heavy = self.pipeline.heavy
        tails = self._tails
        skipped = 0
        # Inline successes are produced in bursts of EMIT_BURST, not one by one between records: a
        # produce() that finds the partition queue drained wakes librdkafka's broker thread (a syscall
        # and lock traffic) and measured 2-3x the cost of one in a burst. Order is unchanged (the burst
        # keeps record order; a key with a task outstanding never runs inline) and the whole buffer
        # is produced before this batch can be sealed.
        ready: list[Outcome] = []
        emit = acks.emit
        burst, reply_header, config_header = EMIT_BURST, H.REPLY_TO, H.CONFIG_OFFSET  # locals: read per record
        ok_channels: list[str] = []  # the channel of each inline success, counted once per batch
        runs: list[M.Run] = []  # the inline records' workflow runs, observed together after the batch

        def flush() -> None:  # also before anything that can suspend or produce out of band
            for outcome in ready:
                emit(outcome)
            ready.clear()

        handle = self.pipeline.handle
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err.str())
                continue
            # `where_of` inlined: a record without an error has all three
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            if control.gated or paused_now:
                # Once held in this batch, a partition's later records stay unrun even if a resume lands
                # meanwhile (the partition was sought back to the held record: they come again).
                if (topic, partition) in paused_now or topic in control.paused_topics:
                    # Paused channel: not run, not committed; its partition resumes at this record.
                    if (topic, partition) not in paused_now:
                        paused_now.add((topic, partition))
                        assert self._consumer is not None
                        control.hold(self._consumer, topic, partition, offset)
                    skipped += 1
                    continue
                if control.floors and control.below_floor(topic, partition, msg.timestamp()[1]):
                    offsets[(topic, partition)] = offset  # before the start time: skipped and committed past
                    skipped += 1
                    continue
            if held and (topic, partition) in held:
                # Throttled: neither run nor committed now; re-read from the held offset on resume.
                if (topic, partition) not in stopped:
                    stopped.add((topic, partition))
                    assert self._consumer is not None
                    self.governance.throttle.hold(self._consumer, topic, partition, offset)
                skipped += 1
                continue
            # Read per record, not once per batch: a snapshot applied while this batch awaited the
            # governance store must not leave a record checked against one view but routed by another.
            view = self._worker_view
            route = view.routes.get(topic)
            raw_headers = msg.headers()
            hm = H.header_map(raw_headers) if raw_headers else {}
            if governed and route is not None and route.name in governed and not self._sealed(msg, hm):
                # Produced straight to the topic (the gateway seals the records it governed itself).
                flush()
                verdict = await self._govern(msg, route, hm, governed[route.name], acks)
                if verdict == "hold":
                    stopped.add((topic, partition))
                    skipped += 1
                    continue
                if verdict in ("duplicate", "denied"):
                    offsets[(topic, partition)] = offset
                    status = "duplicate" if verdict == "duplicate" else "dlq"
                    counts[(route.name, status)] = counts.get((route.name, status), 0) + 1
                    continue
            offsets[(topic, partition)] = offset
            key = msg.key()
            # The key's chain is looked up only while some record task is outstanding.
            prev = tails.get((topic, partition, key)) if tails and key is not None else None
            if prev is not None and prev.done():
                prev = None
            needed = hm.get(config_header) if hm else None
            slow = route is None or (needed is not None and self._behind(needed))
            first: Outcome | None = None
            if prev is None and not slow:
                runs_inline = inline.get(topic)
                if runs_inline is None:
                    engine = view.engine
                    runs_inline = inline[topic] = bool(
                        engine is not None
                        and engine.has_channel(route.name)  # type: ignore[union-attr]
                        and engine.is_sync(route.name)  # type: ignore[union-attr]
                        and route.registry is None  # type: ignore[union-attr]  # registry lookups are IO
                    )
                if runs_inline and route.name not in heavy:  # type: ignore[union-attr]
                    # No IO to await: run now, in order (the coroutine never suspends). A heavy channel's
                    # records go the task way below (in a thread, in order per key): the batch goes on.
                    try:  # `_handle` inlined: no second coroutine per record on the hot path
                        first = await handle(msg, view, headers=(raw_headers, hm), runs=runs)
                    except Exception as exc:
                        first = self._handle_raised(msg, view, exc)
                    if first.status == "ok":
                        ready.append(first)
                        if len(ready) >= burst or reply_header in hm:  # a caller waits for a reply
                            flush()
                        ok_channels.append(first.channel)
                        continue
                    if first.status != "retry":
                        flush()
                        self._finish(msg, hm, acks, first)
                        continue
            flush()
            task = asyncio.ensure_future(self._run(msg, hm, acks, prev, first, slow))
            self._outstanding += 1
            self.outstanding_peak = max(self.outstanding_peak, self._outstanding)
            task.add_done_callback(self._record_done)
            if key is not None:
                chain = (topic, partition, key)
                tails[chain] = task
                task.add_done_callback(functools.partial(self._untail, chain))
            acks.tasks.append(task)
        flush()
        if runs:
            self._workflows.observe_runs(runs)
        for channel, n in Counter(ok_channels).items():
            counts[(channel, "ok")] = counts.get((channel, "ok"), 0) + n
        for (channel, status), n in counts.items():
            M.MESSAGES.labels(channel, status).inc(n)
        self.processed += len(msgs) - skipped

    def _record_done(self, _task: asyncio.Future[None]) -> None:
        self._outstanding -= 1
        if self._outstanding <= self.max_outstanding // 2:
            self._room.set()

    def _untail(self, chain: tuple[str, int, bytes], task: asyncio.Future[None]) -> None:
        if self._tails.get(chain) is task:
            del self._tails[chain]

    async def _run(
        self,
        msg: Message,
        hm: dict[str, str],
        acks: Acks,
        prev: asyncio.Future[None] | None,
        first: Outcome | None,
        slow: bool,
    ) -> None:
        """One record off the batch loop: after the previous record of its key, through its retries."""
        if prev is not None:
            await asyncio.wait([prev])  # its failure is its own; order is what we wait for
        outcome = first
        attempt, first_failed = 1, 0
        while True:
            if outcome is None and slow:
                # Every attempt waits for the config position the record was sent under (not only the first).
                outcome = await self._await_config(msg, hm, attempt, first_failed)
            if outcome is None:
                async with self._slots:
                    outcome = await self._handle(msg, self._worker_view, attempt=attempt, first_failed_ms=first_failed)
            if outcome.status != "retry":
                break
            # Transient failure: back off without blocking other keys; later records of this key wait.
            M.RETRIES.labels(outcome.channel).inc()
            first_failed = outcome.first_failed_ms
            await asyncio.sleep(outcome.retry_in)
            attempt += 1
            outcome = None
        self._finish(msg, hm, acks, outcome)

    async def _handle(
        self,
        msg: Message,
        view: WorkerView,
        *,
        attempt: int = 1,
        first_failed_ms: int = 0,
        headers: tuple[Any, dict[str, str]] | None = None,
    ) -> Outcome:
        """`Pipeline.handle`, which never raises by design; if a bug makes it raise, the record is dead-lettered
        (not lost, not committed unprocessed, and the worker keeps running)."""
        try:
            return await self.pipeline.handle(
                msg, view, attempt=attempt, first_failed_ms=first_failed_ms, headers=headers
            )
        except Exception as exc:
            return self._handle_raised(msg, view, exc)

    def _handle_raised(self, msg: Message, view: WorkerView, exc: Exception) -> Outcome:
        log.exception("record %s[%s]@%s: processing raised; dead-lettering it", *where_of(msg))
        route = view.routes.get(msg.topic() or "")
        return self.pipeline.last_resort(msg, exc, route.name if route is not None else "")

    def _finish(self, msg: Message, hm: dict[str, str], acks: Acks, outcome: Outcome) -> None:
        """Produce what one record caused and count it."""
        acks.emit(outcome)
        M.MESSAGES.labels(outcome.channel, outcome.status).inc()
        if outcome.status == "expired":
            M.EXPIRED.labels(outcome.channel).inc()
        elif outcome.status == "dlq" and outcome.error is not None:
            self._log_dead_letter(msg, hm, outcome)

    async def _await_config(self, msg: Message, hm: dict[str, str], attempt: int, first_failed: int) -> Outcome | None:
        """Wait (bounded) for the config position the record was sent under; a `CONFIG_LAG` outcome when
        it does not come (None: go on)."""
        needed = hm.get(H.CONFIG_OFFSET)
        if needed is None or not self._behind(needed):
            return None
        if await self._wait_view(int(needed), self.config_wait_seconds):
            return None
        view = self._worker_view
        topic = msg.topic() or ""
        route = view.routes.get(topic) or ChannelRoute(hm.get(H.CHANNEL, "")[:255], topic, True, None, None)
        lag = ConfigLag(
            f"config position {needed} not applied within {self.config_wait_seconds}s (worker at {self.view_offset})"
        )
        return self.pipeline.failed(msg, route, hm, lag, view, attempt=attempt, first_failed_ms=first_failed)

    def _log_dead_letter(self, msg: Message, hm: dict[str, str], outcome: Outcome) -> None:
        exc = outcome.error
        assert exc is not None
        M.DLQ_RECORDS.labels(outcome.channel, exc.code).inc()
        M.ERRORS.labels(exc.code).inc()
        with bound(**{**context_from_headers(hm), "channel": outcome.channel}):
            log.warning(
                "record dead-lettered: %s[%s]@%s %s: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc.code,
                exc.message[:512],
            )

    async def _govern(
        self, msg: Message, route: ChannelRoute, hm: dict[str, str], channel: CompiledChannel, acks: Acks
    ) -> str | None:
        """API key, size, rate limit and dedup of a Kafka-ingested record (`Governor` decision): None (run
        it), "hold" (its partition is paused and sought back to it), "duplicate" (traced, not run) or
        "denied" (dead-lettered with the reason)."""

        def decode() -> tuple[Any, Any]:
            if route.registry is not None:
                return None, {}  # decoded after admission (registry IO): key rules see the key and headers
            if route.avro_schema is not None:
                return decode_avro(msg.value(), self.schemas.get(route.avro_schema))
            if route.envelope == "raw":
                return decode_raw(msg.value())
            return decode_json(msg.value())

        where = where_of(msg)
        trace_id = trace_id_of(msg, hm)
        value = msg.value()
        decision = await self.governance.admit(
            channel,
            key=msg.key(),
            headers=hm,
            decode=decode,
            where=where,
            trace_id=trace_id,
            size=len(value) if value is not None else 0,
        )
        if decision.action in ("throttle", "unavailable"):
            assert self._consumer is not None
            self.governance.throttle.hold(self._consumer, *where, decision.retry_after)
            return "hold"
        if decision.action == "duplicate":
            key, trace = duplicate_trace(
                channel=route.name,
                headers=hm,
                trace_id=trace_id,
                created_ms=msg.timestamp()[1],
                decision=decision,
                where=where,
            )
            acks.send((self.names.traces, trace, key, None, -1))
            return "duplicate"
        if decision.action == "deny" and decision.error is not None:
            acks.emit(self.pipeline.failed(msg, route, hm, decision.error, self._worker_view))
            return "denied"
        return None

    def _sealed(self, msg: Message, hm: dict[str, str]) -> bool:
        """The gateway produced (and governed) this record: its seal verifies. Without a seal key
        (development), the gateway's `quasar-mode` header is trusted."""
        if H.MODE not in hm:
            return False
        if self._seal_key is None:
            return True
        return verify(self._seal_key, msg.topic() or "", msg.value(), hm.get(H.GATEWAY_SEAL))

    def _behind(self, needed: str) -> bool:
        try:
            wanted = int(needed)
        except ValueError:
            return False  # a malformed position cannot be waited for; the record still runs
        behind = self.view_offset < wanted
        if behind and wanted - self.view_offset > MAX_CONFIG_AHEAD:
            # Implausible (no writer is that far ahead of a live reader): a forged header would make every
            # such record wait `config_wait_seconds` for a position that never comes. Run it now.
            M.ERRORS.labels("IMPLAUSIBLE_CONFIG_OFFSET").inc()
            return False
        return behind


# How far ahead of this worker's config view a record's `quasar-config-offset` may be and still be waited for.
MAX_CONFIG_AHEAD = 1000
EMIT_BURST = 64  # inline successes produced together (see `_process`)


def _runtime_state(settings: Settings) -> ConfigState:
    from app.connectors import connector_registry

    topics = TopicNames(settings.topic_prefix)
    return ConfigState(compiler=functools.partial(default_compiler, registry=connector_registry(), topics=topics))


def _poll_batch(consumer: Consumer, limit: int) -> list[Message]:
    # poll() returns on the first record; consume(timeout=0) then takes what is already fetched.
    # consume(n, timeout) alone waits for a *full* batch: +100 ms per cycle under light load.
    first = consumer.poll(0.1)
    return [] if first is None else [first, *consumer.consume(limit - 1, 0)]

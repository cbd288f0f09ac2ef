"""`ConfigReader`: tails `quasar.config` partition 0 (no consumer group) and folds it into a `ConfigState`.

A background thread polls confluent-kafka, folds the records and, when something was applied, rebuilds
the `Snapshot` (compile and engine build happen there, never on the event loop or per message); the
new snapshot is swapped in with one assignment. The thread then hands the batch's outcomes to the event
loop, which wakes waiters (`wait_for_offset`, writers waiting for their own proposal) and calls change
listeners.

Readiness: Tansu's end offsets lie, so `ready()` writes a marker record and waits until the reader has
folded it; everything written before the marker is then applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from app.config_store.snapshot import EngineFactory, Snapshot, build_snapshot, default_engine_factory
from app.config_store.state import MARKER_PREFIX, RUNTIME_PREFIX, ConfigState, Outcome, default_compiler
from app.errors import ServiceUnavailable, Timeout
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config, reader_config
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.observability import metrics as M
from app.settings import Settings, get_settings

__all__ = ["ConfigNotReady", "ConfigReader", "ConfigTopicMissing", "Listener"]

log = logging.getLogger(__name__)

# Called on the event loop with the new snapshot after every change; may be sync or async.
Listener = Callable[[Snapshot], Awaitable[None] | None]
RuntimeListener = Callable[[str, bytes | None], None]


class ConfigNotReady(ServiceUnavailable):
    code = "CONFIG_NOT_READY"


class ConfigTopicMissing(ServiceUnavailable):
    code = "CONFIG_TOPIC_MISSING"


class ConfigReader:
    """Folds the config log; one per process (worker, gateway, CLI admin session).

    reader = ConfigReader(settings)
    await reader.ready()              # started, caught up to a marker it wrote
    snap = reader.snapshot            # immutable runtime view, swapped atomically
    await reader.wait_for_offset(o)   # causal consistency for requests sent under offset o
    await reader.stop()
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        state: ConfigState | None = None,
        engine_factory: EngineFactory | None = default_engine_factory,
        poll_timeout: float = 0.1,
        outcome_history: int = 4096,
        name: str | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.topics = TopicNames(self.settings.topic_prefix)
        self.topic = self.topics.config
        self.state = state or ConfigState(compiler=functools.partial(default_compiler, topics=self.topics))
        self._engine_factory = engine_factory
        self._poll_timeout = poll_timeout
        self._name = name or f"config-reader-{self.settings.instance_id}"
        self._snapshot = build_snapshot(self.state, engine_factory=engine_factory, topics=self.topics)
        self._applied_offset = -1  # last folded offset, as seen by the event loop
        self._outcomes: OrderedDict[int, Outcome] = OrderedDict()
        self._outcome_history = outcome_history
        self._offset_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._key_waiters: dict[str, asyncio.Future[Outcome]] = {}
        self._listeners: list[Listener] = []
        self._outcome_listeners: list[Callable[[list[Outcome]], None]] = []
        # Runtime records (`__runtime__/...`): the latest value per key, and who wants to hear of them.
        self.runtime_records: dict[str, bytes] = {}
        self._runtime_listeners: list[tuple[str, RuntimeListener]] = []
        self._listener_tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._producer: AsyncProducer | None = None
        self._ready = False
        self.last_error: str | None = None
        self.snapshot_errors = 0

    # -- public state ------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The current runtime view (immutable; replaced as a whole on change)."""
        return self._snapshot

    @property
    def applied_offset(self) -> int:
        """Offset of the last config record this reader has folded (-1: none). Send it with requests."""
        return self._applied_offset

    @property
    def is_ready(self) -> bool:
        return self._ready

    def outcome_at(self, offset: int) -> Outcome | None:
        """What the fold did with the record at `offset` (recent records only)."""
        return self._outcomes.get(offset)

    def recent_outcomes(self) -> list[Outcome]:
        """The fold's outcomes for the most recent records, in offset order."""
        return list(self._outcomes.values())

    def add_outcome_listener(self, listener: Callable[[list[Outcome]], None]) -> None:
        """Call `listener(outcomes)` on the loop for every batch folded once caught up (not for history)."""
        self._outcome_listeners.append(listener)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(snapshot)` on the loop after every change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def add_runtime_listener(self, prefix: str, listener: RuntimeListener) -> Callable[[], None]:
        """Call `listener(key, value)` on the loop for every runtime record under `RUNTIME_PREFIX + prefix`
        folded once caught up (history replayed at start is in `runtime_records`, not replayed)."""
        entry = (RUNTIME_PREFIX + prefix, listener)
        self._runtime_listeners.append(entry)
        return lambda: self._runtime_listeners.remove(entry) if entry in self._runtime_listeners else None

    async def write_runtime(self, key: str, value: bytes | None) -> int:
        """Write the runtime record `RUNTIME_PREFIX + key` (None: a tombstone); returns its offset."""
        return await self.write(RUNTIME_PREFIX + key, value)

    def runtime(self, prefix: str) -> dict[str, bytes]:
        """The latest value of every live runtime record under `RUNTIME_PREFIX + prefix`."""
        full = RUNTIME_PREFIX + prefix
        return {k: v for k, v in list(self.runtime_records.items()) if k.startswith(full)}

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the topic, start the poll thread. Idempotent."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._check_topic)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _check_topic(self) -> None:
        # Never let a client create the config topic implicitly (Tansu would make 4 partitions).
        partitions = topic_partitions(create_admin(self.settings))
        n = partitions.get(self.topic)
        if n is None:
            raise ConfigTopicMissing(f"config topic {self.topic!r} does not exist: run `quasar topics apply`")
        if n != 1:
            raise ConfigTopicMissing(
                f"config topic {self.topic!r} has {n} partitions; it must have exactly 1 (one total order)"
            )

    async def ready(self, seconds: float = 30.0) -> None:
        """Start if needed, then wait until everything written before this call is folded."""
        await self.start()
        await self.sync(seconds)
        self._ready = True

    async def sync(self, seconds: float = 30.0) -> int:
        """Read barrier: write a marker and wait until it is folded; returns the marker's offset."""
        key = f"{MARKER_PREFIX}{uuid.uuid4().hex}"
        value = self.settings.instance_id.encode()
        outcome = await self.propose(key, value, seconds)
        # The marker has done its job: a tombstone lets compaction remove it.
        await self.write(key, None)
        return outcome.offset

    async def stop(self) -> None:
        """Stop the poll thread and the producer; pending waiters fail with ConfigNotReady."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._producer is not None:
            await self._producer.close()
            self._producer = None
        self._ready = False
        pending: list[asyncio.Future[Any]] = [f for _, f in self._offset_waiters]
        pending.extend(self._key_waiters.values())
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(ConfigNotReady("config reader stopped"))
        self._offset_waiters.clear()
        self._key_waiters.clear()

    async def __aenter__(self) -> ConfigReader:
        await self.ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- waiting -----------------------------------------------------------------------------------
    async def wait_for_offset(self, offset: int, seconds: float) -> bool:
        """Wait until the record at `offset` is folded; False after `seconds` (never raises)."""
        if self._applied_offset >= offset:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (offset, fut)
        self._offset_waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), seconds)
            return True
        except (TimeoutError, ConfigNotReady):
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._offset_waiters.remove(entry)

    async def propose(self, key: str, value: bytes | None, seconds: float = 30.0) -> Outcome:
        """Write a record to the config log and return the fold's outcome for it, once this reader has
        folded it. The waiter is registered before producing, so a fast fold cannot be missed."""
        if self._thread is None:
            raise ConfigNotReady("config reader is not started")
        if key in self._key_waiters:
            raise ValueError(f"already waiting for {key!r}")
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._key_waiters[key] = fut
        try:
            await self.write(key, value)
            return await asyncio.wait_for(asyncio.shield(fut), seconds)
        except TimeoutError:
            raise Timeout(
                f"config record {key!r} was written but not read back within {seconds}s "
                f"(reader at offset {self._applied_offset}; last error: {self.last_error})"
            ) from None
        finally:
            self._key_waiters.pop(key, None)

    async def write(self, key: str, value: bytes | None, topic: str | None = None) -> int:
        """Produce one record (default topic: config) without waiting for the fold; returns its offset."""
        if self._producer is None:
            # linger 0: config writes are rare and someone is waiting for each one.
            self._producer = AsyncProducer(producer_config(self.settings, client_id=self._name, **{"linger.ms": 0}))
        msg = await self._producer.produce(topic or self.topic, value, key.encode())
        offset = msg.offset()
        return offset if offset is not None else -1

    # -- the poll thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        # Config records are rare: poll less often than the request path (each fetch costs broker CPU).
        wait_ms = max(self.settings.fetch_wait_max_ms, self.settings.config_fetch_wait_max_ms)
        consumer = Consumer(reader_config(self.settings, client_id=self._name, **{"fetch.wait.max.ms": wait_ms}))
        try:
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            while not self._stopping.is_set():
                # poll() returns as soon as one record is there; consume(timeout=0) then takes what is
                # already fetched (consume() with a timeout would wait for a full batch).
                first = consumer.poll(self._poll_timeout)
                if first is not None:
                    # Drain what is already fetched before folding: one snapshot build per backlog, not
                    # one per small fetch (catching up on 10k records rebuilt it thousands of times).
                    batch = [first]
                    while len(batch) < 20_000 and (more := consumer.consume(500, 0)):
                        batch.extend(more)
                    self._fold(batch)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("config reader thread failed")
        finally:
            consumer.close()

    def _fold(self, msgs: list[Any]) -> None:
        outcomes: list[Outcome] = []
        last = -1
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.last_error = err.str()
                    log.warning("config reader: %s", err.str())
                continue
            outcome = self.state.apply(m.offset(), m.key(), m.value(), m.timestamp()[1])
            if outcome.reason == "runtime" and outcome.key is not None:
                self._runtime(outcome.key, m.value())
            # Propagation delay only once caught up: replaying history would report its age.
            M.observe_config_record(outcome.kind, outcome.status, m.timestamp()[1], caught_up=self._ready)
            if outcome.status != "ignored" or outcome.reason not in ("marker", "tombstone", "archive"):
                log.debug("config record %s", outcome)
            outcomes.append(outcome)
            last = m.offset()
        if not outcomes:
            return
        changed = self.state.generation != self._snapshot.generation
        M.CONFIG_APPLIED_OFFSET.set(last)
        if changed:
            started = time.perf_counter()
            try:
                self._snapshot = build_snapshot(self.state, engine_factory=self._engine_factory, topics=self.topics)
                M.observe_reload(time.perf_counter() - started, ok=True, active_workflows=len(self._snapshot.workflows))
            except Exception as exc:
                M.observe_reload(time.perf_counter() - started, ok=False)
                self.snapshot_errors += 1
                self.last_error = f"snapshot build failed: {type(exc).__name__}: {exc}"
                log.exception("config snapshot build failed; keeping the previous one")
                changed = False
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._deliver, outcomes, last, changed)

    def _runtime(self, key: str, value: bytes | None) -> None:
        # Poll thread: keep the latest value (a tombstone removes it), notify listeners on the loop.
        if value is None:
            self.runtime_records.pop(key, None)
        else:
            self.runtime_records[key] = value
        loop = self._loop
        if not self._ready or loop is None:
            return
        for prefix, listener in list(self._runtime_listeners):
            if key.startswith(prefix):
                with contextlib.suppress(RuntimeError):  # loop closed
                    loop.call_soon_threadsafe(self._call_runtime_listener, listener, key, value)

    @staticmethod
    def _call_runtime_listener(listener: RuntimeListener, key: str, value: bytes | None) -> None:
        try:
            listener(key, value)
        except Exception:
            log.exception("runtime record listener failed on %s", key)

    def _deliver(self, outcomes: list[Outcome], last: int, changed: bool) -> None:
        """On the loop: publish the new position, wake waiters, notify listeners."""
        for o in outcomes:
            self._outcomes[o.offset] = o
            if o.key is not None:
                key_waiter = self._key_waiters.get(o.key)
                if key_waiter is not None and not key_waiter.done():
                    key_waiter.set_result(o)
        while len(self._outcomes) > self._outcome_history:
            self._outcomes.popitem(last=False)
        self._applied_offset = max(self._applied_offset, last)
        if self._ready:
            for on_outcomes in self._outcome_listeners:
                try:
                    on_outcomes(outcomes)
                except Exception:
                    log.exception("config outcome listener failed")
        for target, fut in self._offset_waiters:
            if target <= self._applied_offset and not fut.done():
                fut.set_result(None)
        if changed:
            snap = self._snapshot
            for listener in list(self._listeners):
                try:
                    result = listener(snap)
                    if asyncio.iscoroutine(result):
                        task = asyncio.ensure_future(result)
                        self._listener_tasks.add(task)  # keep a reference until it finishes
                        task.add_done_callback(self._listener_done)
                except Exception:
                    log.exception("config change listener failed")

    def _listener_done(self, task: asyncio.Future[Any]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("config change listener failed", exc_info=task.exception())

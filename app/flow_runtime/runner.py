"""`FlowRunner`: owns partitions of the flow events topic and runs the instances keyed to them.

Per owned partition it holds the latest state of every key (instances, concurrency gates, schedules),
read back from the co-partitioned changelog (`flows.state`) when the partition is assigned, and the
pending timers of those instances in memory. The loop:

    consume a batch of events -> apply each (pure machine) -> produce the new state to the changelog
    and the effects' records -> fire due timers as events -> drive cron schedules -> flush, commit.

Why not Faust tables: a Faust table is exactly this (a dict per partition + changelog topic), but its
recovery trusts the broker's end offsets, which Tansu reports wrongly, and its per-event stream ran at
2-5k msgs/s on this box (docs/performance.md). Recovery here reads to a marker record it wrote
(`read_to_end`), the same technique the config reader uses, which is correct on every broker.

Delivery: at-least-once. A state record is produced before the event's offset is committed; an event
replayed after a crash meets a state that already has it, and the machine treats it as a duplicate.
Work in flight at a crash is issued again by the new owner (`resume_effects`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.config_store.reader import ConfigReader
from app.config_store.state import ConfigState, default_compiler
from app.connectors.breaker import BreakerConfig, BreakerRegistry
from app.connectors.services import ConnectorServices
from app.errors import ValidationFailed
from app.flow_runtime.catalog import FlowCatalog
from app.flow_runtime.idle import IdleFetch
from app.flow_runtime.records import (
    GATE_PREFIX,
    SCHEDULE_PREFIX,
    AnyEvent,
    AnyState,
    decode_event,
    decode_state,
    encode,
    encode_state,
    event_key,
    partition_for,
)
from app.flows.clock import Clock, SystemClock
from app.flows.compiler import CompiledFlow
from app.flows.effects import follow_ups
from app.flows.gate import GateEvent, GateState, apply_gate
from app.flows.instance import (
    Effect,
    InstanceState,
    PublishExternalTask,
    RunTask,
    SignalEvent,
    SignalRejected,
    SlotGranted,
    StartEvent,
    StepError,
    StepResultEvent,
    TimerFiredEvent,
)
from app.flows.local import TimerQueue
from app.flows.machine import apply, flow_for, resume_effects
from app.flows.schedule import CancelInstance, ScheduleEvent, ScheduleState, StartScheduled, apply_schedule, due_fires
from app.flows.tasks import run_task
from app.kafka import headers as H
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import consumer_config, producer_config, reader_config
from app.kafka.consumer import read_to_end
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.kafka.topics import apply_topics, load_specs, tasks_topic_plan
from app.observability import metrics as M
from app.settings import REPLY_HEADERS_ROOM, Settings

__all__ = ["ExternalResult", "FlowRunner"]

log = logging.getLogger(__name__)
# Longest poll when nothing is due: events wake the poll at once, so this only bounds how late a stop,
# a newly activated schedule or a config change is noticed; a short one is pure idle wake-ups.
IDLE_POLL_S = 1.0
_GAUGES_EVERY_S = 5.0  # the instance-count gauges walk every owned state: not on every loop turn


_MAX_DLQ_HEADER_BYTES = 64 * 1024  # the original headers a flow dead letter keeps, at most


class ExternalResult(BaseModel):
    """What an external worker writes to `flows.results` (see docs/flows.md, "External workers")."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=400)
    instance_id: str = Field(min_length=1, max_length=200)
    step: str = Field(min_length=1, max_length=200)
    attempt: int = Field(ge=1)
    status: str = Field(pattern=r"^(completed|failed)$")
    output: Any = None
    error: StepError | None = None
    handler: str | None = None


class FlowRunner:
    """One member of the flow runners' consumer group (`<prefix>flows`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        reader: ConfigReader | None = None,
        services: Any = None,
        schedule_every: float = IDLE_POLL_S,
    ) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.clock = clock or SystemClock()
        self.reader = reader or ConfigReader(settings, state=_runtime_state(), engine_factory=None)
        self._own_reader = reader is None
        self.catalog = FlowCatalog(self.reader.state)
        self.services = services
        self._own_services = services is None
        self._services_producer: AsyncProducer | None = None
        self.group_id = f"{settings.topic_prefix}flows"
        self.partitions = 0
        self.stores: dict[int, dict[str, AnyState]] = {}
        self.timers = TimerQueue()
        self.schedule_every = schedule_every
        self._fired_up_to: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        self._last_schedule_pass = 0.0
        self._next_fire: float | None = None  # the earliest cron fire of an owned schedule
        self._last_gauges = 0.0
        self._joined = False  # the group assigned this member its partitions once (maybe none)
        self._recovering = False  # reading changelog partitions back (in the assignment callback)
        self._task_topics: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="flow-runner")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._task_producer: Producer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        self._stopping = False
        self._resumed: list[Effect] = []  # effects of recovered instances, run by the loop
        self._idle = IdleFetch.from_settings(settings)
        self._handlers: set[str] = set()  # handlers this runner published to (bounded metric labels)
        self.applied = 0  # events applied (for tests and health)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._own_reader:
            await self.reader.start()
            await self.reader.ready()
        counts = topic_partitions(create_admin(self.settings))
        events = counts.get(self.names.flow_events, 0)
        state = counts.get(self.names.flow_state, 0)
        if not events or events != state:
            raise ValidationFailed(
                f"{self.names.flow_events} ({events} partitions) and {self.names.flow_state} ({state}) must exist "
                "with the same partition count: run `quasar topics apply`"
            )
        self.partitions = events
        # Task topics exist before any worker subscribes (a consumer subscribed to a missing topic may
        # not notice its creation for minutes): created for every active flow now and on each change.
        await self._ensure_task_topics()
        if self._own_services:
            # `task` steps may call connectors (http_call, db_*, cache_*, publish_kafka): same runtime as the worker.
            self._services_producer = AsyncProducer(producer_config(self.settings, client_id="quasar-flows-connectors"))
            self.services = ConnectorServices(
                self.reader.snapshot.connectors,
                producer=self._services_producer,
                max_channel_call_depth=self.settings.max_channel_call_depth,
                default_channel_call_timeout_ms=self.settings.default_channel_call_timeout_ms,
                breakers=BreakerRegistry(BreakerConfig.from_settings(self.settings)),
                topics=self.names,
            )
        self._unlisten = self.reader.add_listener(self._config_changed)
        self._producer = Producer(producer_config(self.settings, client_id=f"quasar-flows-{self.settings.instance_id}"))
        # Task records are read by workers in any language: uncompressed, since some clients read LZ4 (our
        # producers' codec) only with a plugin (kafkajs, the Node example's client, has gzip alone built in).
        self._task_producer = Producer(
            producer_config(
                self.settings,
                client_id=f"quasar-flows-tasks-{self.settings.instance_id}",
                **{"compression.type": "none"},
            )
        )
        conf = consumer_config(
            self.settings, group_id=self.group_id, client_id=f"quasar-flows-{self.settings.instance_id}"
        )
        self._consumer = Consumer(conf)
        self._consumer.subscribe(
            [self.names.flow_events, self.names.flow_results], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._loop_task = asyncio.create_task(self._run(), name="flow-runner")

    async def _config_changed(self, snapshot: Any) -> None:
        if self._own_services and isinstance(self.services, ConnectorServices):
            self.services.set_connectors(snapshot.connectors)
        await self._ensure_task_topics()

    async def _ensure_task_topics(self) -> None:
        missing = sorted(h for h in self.catalog.handlers() if self.names.tasks(h) not in self._task_topics)
        if not missing:
            return
        plans = [tasks_topic_plan(load_specs(), self.settings, h) for h in missing]
        await asyncio.get_running_loop().run_in_executor(None, apply_topics, create_admin(self.settings), plans)
        self._task_topics.update(self.names.tasks(h) for h in missing)

    async def stop(self) -> None:
        self._stopping = True
        if self._unlisten is not None:
            self._unlisten()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        loop = asyncio.get_running_loop()
        if self._consumer is not None:
            consumer = self._consumer
            await loop.run_in_executor(self._executor, consumer.close)
        if self._producer is not None:
            await loop.run_in_executor(self._executor, self._flush, 10)
            # librdkafka clients close when collected: no reconnect attempts after stop
            self._producer = self._task_producer = None
        self._consumer = None
        self._executor.shutdown(wait=False)
        if self._own_services and isinstance(self.services, ConnectorServices):
            await self.services.aclose()
        if self._services_producer is not None:
            await self._services_producer.close()
        if self._own_reader:
            await self.reader.stop()

    async def wait_failed(self) -> BaseException | None:
        """Returns when the loop ends; its exception, if it crashed."""
        assert self._loop_task is not None
        try:
            await asyncio.shield(self._loop_task)
        except Exception as exc:
            return exc
        return None

    def owned(self) -> list[int]:
        return sorted(self.stores)

    def status(self) -> str:
        """Health component: `ok` once joined and recovered; read from the ops server's threads."""
        task = self._loop_task
        if task is None:
            return "not_running"
        if task.done():
            failure = None if task.cancelled() else task.exception()
            return f"failed ({type(failure).__name__}: {failure})" if failure else "not_running"
        if self._recovering:
            return "recovering"
        return "ok" if self._joined else "joining"

    def instance(self, instance_id: str) -> InstanceState | None:
        found = self.stores.get(partition_for(instance_id, self.partitions), {}).get(instance_id)
        return found if isinstance(found, InstanceState) else None

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            wait = self._poll_wait()
            idle_wait = self._idle.before_poll(consumer, time.monotonic())
            if idle_wait is not None:
                wait = min(wait, idle_wait)
            batch = await loop.run_in_executor(self._executor, _poll_batch, consumer, 500, wait)
            if batch:
                self._idle.active()
                self._idle.seen(batch)
            if self._starts_unknown_flow(batch):
                await self.reader.sync(10.0)  # a flow activated just now: fold the config up to here first
            resumed, self._resumed = self._resumed, []
            for effect in resumed:
                self._effect(effect)
            for msg in batch:
                self._handle(msg)
            self._fire_timers()
            self._drive_schedules()
            if batch:
                await loop.run_in_executor(self._executor, self._commit, batch)
            else:
                assert self._producer is not None and self._task_producer is not None
                self._producer.poll(0)
                self._task_producer.poll(0)

    def _starts_unknown_flow(self, batch: list[Message]) -> bool:
        for msg in batch:
            value = msg.value()
            if msg.topic() != self.names.flow_events or not value or b'"type":"start"' not in value:
                continue
            with contextlib.suppress(ValueError, ValidationError):
                event = decode_event(value)
                if isinstance(event, StartEvent) and self.catalog.flow(event.flow_id, event.flow_version) is None:
                    return True
        return False

    def _poll_wait(self) -> float:
        """Until the next timer or cron fire is due (events end the poll as soon as they arrive)."""
        now = self.clock.now()
        wait = IDLE_POLL_S
        for due in (self.timers.next_due(), self._next_fire):
            if due is not None:
                wait = min(wait, due - now)
        return max(0.0, wait)

    def _flush(self, timeout: float) -> int:
        """Deliver everything produced so far; returns how many records are still undelivered."""
        assert self._producer is not None and self._task_producer is not None
        return int(self._producer.flush(timeout)) + int(self._task_producer.flush(timeout))

    def _commit(self, batch: list[Message]) -> None:
        """Flush what the batch produced (state first in each partition's queue), then commit its offsets."""
        assert self._consumer is not None
        remaining = self._flush(30)
        if remaining:
            raise KafkaException(f"{remaining} flow records not delivered within 30 s")
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            offsets[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        # The records are flushed: an offset commit lost in a crash only replays events, which the
        # machine ignores as duplicates, so the commit need not wait for its answer.
        with contextlib.suppress(KafkaException):  # partitions revoked meanwhile: the next owner redoes them
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)

    # -- partition ownership -------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = [tp.partition for tp in partitions if tp.topic == self.names.flow_events]
        assert self._producer is not None
        self._recovering = True
        if self._idle.interval > 0 and partitions:
            with contextlib.suppress(KafkaException):  # where reading starts: a paused runner resumes by a seek
                self._idle.known(consumer.committed(partitions, timeout=10))
        reader = Consumer(reader_config(self.settings, client_id=f"quasar-flows-recover-{self.settings.instance_id}"))
        try:
            for partition in owned:
                store: dict[str, AnyState] = {}

                def keep(msg: Message, store: dict[str, AnyState] = store, partition: int = partition) -> None:
                    key, value = msg.key(), msg.value()
                    if key is None or key.startswith(b"__marker__/"):
                        return
                    if value is None:
                        store.pop(key.decode(), None)
                        return
                    try:
                        store[key.decode()] = decode_state(value)
                    except (ValueError, ValidationError):
                        log.warning("flows: unreadable state record %s[%s]@%s", msg.topic(), partition, msg.offset())

                read_to_end(self._producer, reader, self.names.flow_state, partition, 0, on_message=keep, timeout=60)
                self.stores[partition] = store
                for state in store.values():
                    if isinstance(state, InstanceState):
                        # Carried out on the event loop after this callback (RunTask needs the loop).
                        self._resumed.extend(resume_effects(self._flow_of(state), state))
            log.info("flows: owning partitions %s (%d keys)", owned, sum(len(self.stores[p]) for p in owned))
        finally:
            reader.close()
            self._recovering = False
            self._joined = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic != self.names.flow_events:
                continue
            for key in self.stores.pop(tp.partition, {}):
                self.timers.forget_instance(key)
        if self._producer is not None:
            self._flush(30)

    # -- records -------------------------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            # e.g. a results or events topic not there (yet): the worker's channels must not stop for it.
            log.warning("flows: consumer error on %s[%s]: %s", msg.topic(), msg.partition(), err.str())
            M.ERRORS.labels("FLOW_CONSUMER_ERROR").inc()
            return
        value = msg.value()
        if msg.topic() == self.names.flow_results:
            self._forward_result(msg, value)
            return
        partition = msg.partition()
        assert partition is not None
        try:
            if value is None:
                raise ValueError("empty record")
            event = decode_event(value)
        except (ValueError, ValidationError) as exc:
            self._dead_letter(msg, "INVALID_FLOW_EVENT", str(exc)[:2000])
            return
        if partition_for(event_key(event), self.partitions) != partition:
            self._dead_letter(msg, "WRONG_PARTITION", f"{event_key(event)!r} belongs to another partition")
            return
        store = self.stores.get(partition)
        if store is None:
            return  # revoked while the batch was in flight: the new owner processes it
        try:
            self._apply(partition, store, event)
        except _Refused as refused:
            self._dead_letter(msg, refused.code, refused.reason)
        except Exception as exc:  # a bug must not stop the partition: park the event with the reason
            log.exception("flows: applying %s failed", type(event).__name__)
            self._dead_letter(msg, "FLOW_EVENT_FAILED", f"{type(exc).__name__}: {exc}"[:2000])
        self.applied += 1
        M.FLOW_EVENTS_APPLIED.inc()

    def _apply(self, partition: int, store: dict[str, AnyState], event: AnyEvent) -> None:
        now = self.clock.now()
        if isinstance(event, GateEvent):
            key = GATE_PREFIX + event.gate
            current = store.get(key)
            gate, granted = apply_gate(current if isinstance(current, GateState) else None, event)
            self._put(partition, store, key, gate)
            for instance_id in granted:
                self._emit(SlotGranted(instance_id=instance_id))
            return
        if isinstance(event, ScheduleEvent):
            self._apply_schedule(partition, store, event)
            return
        current = store.get(event.instance_id)
        state = current if isinstance(current, InstanceState) else None
        flow = flow_for(event, state, self.catalog.flow)
        if isinstance(event, StartEvent) and flow is None and state is None:
            log.warning("flows: start of %s: flow %s v%s unknown", event.instance_id, event.flow_id, event.flow_version)
        if isinstance(event, SignalEvent):
            M.FLOW_SIGNALS.labels(event.signal).inc()
        if isinstance(event, TimerFiredEvent):
            M.FLOW_TIMER_LATENESS.observe(max(0.0, now - event.due))
        result = apply(flow, state, event, now)
        if result.state is not None and not result.duplicate:
            self._put(partition, store, result.state.id, result.state)
        for effect in result.effects:
            self._effect(effect)

    def _apply_schedule(self, partition: int, store: dict[str, AnyState], event: ScheduleEvent) -> None:
        key = SCHEDULE_PREFIX + event.schedule_id
        schedule = next((s for s in self.catalog.schedules() if s.id == event.schedule_id), None)
        current = store.get(key)
        previous = current if isinstance(current, ScheduleState) else None
        if schedule is None:
            if (
                previous is not None
                and event.type == "schedule_instance_ended"
                and event.instance_id in previous.running
            ):
                updated = previous.model_copy(deep=True)
                updated.running.remove(event.instance_id)
                self._put(partition, store, key, updated)
            return
        state, effects = apply_schedule(schedule, previous, event)
        if state == previous:
            return
        if previous is not None and state.skipped > previous.skipped:
            M.FLOW_CRON_SKIPPED.inc(state.skipped - previous.skipped)
        self._put(partition, store, key, state)
        for effect in effects:
            if isinstance(effect, StartScheduled):
                version = schedule.doc.flow_version or self.catalog.active_version(schedule.doc.flow_id)
                if version is None:
                    log.warning("flows: schedule %s: flow %s has no active version", schedule.id, schedule.doc.flow_id)
                    continue
                M.FLOW_CRON_FIRES.inc()
                self._emit(
                    StartEvent(
                        instance_id=effect.instance_id,
                        flow_id=schedule.doc.flow_id,
                        flow_version=version,
                        data=dict(schedule.doc.input),
                        metadata={"schedule_id": schedule.id, "fire_time": effect.fire_time},
                        schedule_id=schedule.id,
                    )
                )
            elif isinstance(effect, CancelInstance):
                self._emit(
                    SignalEvent(instance_id=effect.instance_id, signal_id=f"{schedule.id}:overlap", signal="cancel")
                )

    def _put(self, partition: int, store: dict[str, AnyState], key: str, state: AnyState) -> None:
        assert self._producer is not None
        # Produce first: a state too large for the broker raises here, the event goes to the DLQ with
        # the reason, and the in-memory state stays what the changelog says.
        self._producer.produce(self.names.flow_state, encode_state(state), key.encode(), partition=partition)
        store[key] = state

    def _emit(self, event: AnyEvent) -> None:
        """Produce an event to the partition that owns its key (maybe this runner's own)."""
        assert self._producer is not None
        self._idle.active()  # an event for a partition (maybe this runner's): fetch it back at once
        key = event_key(event)
        self._producer.produce(
            self.names.flow_events, encode(event), key.encode(), partition=partition_for(key, self.partitions)
        )

    def _effect(self, effect: Effect) -> None:
        if self.timers.carry_out(effect):
            pass
        elif isinstance(effect, RunTask):
            task = asyncio.get_running_loop().create_task(self._run_task(effect))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(effect, PublishExternalTask):
            self._publish_task(effect)
        elif isinstance(effect, SignalRejected):
            log.info("flows: signal %s to %s refused: %s", effect.signal_id, effect.instance_id, effect.reason)
            self._produce_dlq(
                effect.instance_id.encode(),
                orjson.dumps({"instance_id": effect.instance_id, "signal_id": effect.signal_id}),
                "SIGNAL_REFUSED",
                effect.reason,
                (self.names.flow_events, -1, -1),
            )
        for event in follow_ups(effect):
            self._emit(event)

    async def _run_task(self, effect: RunTask) -> None:
        state = self.instance(effect.instance_id)
        flow = self._flow_of(state) if state is not None else None
        if flow is None:
            return
        result = await run_task(flow, effect, self.services)
        self._emit(result)

    def _publish_task(self, effect: PublishExternalTask) -> None:
        topic = self.names.tasks(effect.handler)
        if topic not in self._task_topics:
            # Created on first use from topics/tasks.toml; an existing topic is only checked.
            plan = tasks_topic_plan(load_specs(), self.settings, effect.handler)
            apply_topics(create_admin(self.settings), [plan])
            self._task_topics.add(topic)
        state = self.instance(effect.instance_id)
        envelope = {
            "task_id": effect.task_id,
            "instance_id": effect.instance_id,
            "flow_id": state.flow_id if state else None,
            "flow_version": state.flow_version if state else None,
            "step": effect.key,
            "handler": effect.handler,
            "attempt": effect.attempt,
            "input": effect.input,
            "deadline": effect.deadline,
            "reply_topic": self.names.flow_results,
        }
        assert self._task_producer is not None
        self._task_producer.produce(topic, orjson.dumps(envelope), effect.instance_id.encode())
        self._handlers.add(effect.handler)
        M.FLOW_EXTERNAL_TASKS.labels(effect.handler, "published").inc()

    def _forward_result(self, msg: Message, value: bytes | None) -> None:
        try:
            if value is None:
                raise ValueError("empty record")
            result = ExternalResult.model_validate(orjson.loads(value))
        except (ValueError, ValidationError) as exc:
            self._dead_letter(msg, "INVALID_TASK_RESULT", str(exc)[:2000])
            return
        ok = result.status == "completed"
        error = result.error or (None if ok else StepError(code="WORKER_FAILED", message="the worker reported failure"))
        handler = result.handler if result.handler in self._handlers else "other"
        M.FLOW_EXTERNAL_TASKS.labels(handler, result.status).inc()
        event = StepResultEvent(
            instance_id=result.instance_id,
            key=result.step,
            attempt=result.attempt,
            ok=ok,
            output=result.output,
            error=error,
        )
        try:
            self._emit(event)
        except (KafkaException, BufferError) as exc:
            # A worker's result too large to become an event (or a full queue): park it with the reason; the
            # task's timeout and retry policy decide what happens to the instance.
            self._dead_letter(msg, "TASK_RESULT_UNDELIVERABLE", f"{type(exc).__name__}: {exc}"[:2000])

    # -- timers and cron -----------------------------------------------------------------------

    def _fire_timers(self) -> None:
        now = self.clock.now()
        for instance_id, timer_id, due in self.timers.pop_due(now):
            self._emit(TimerFiredEvent(instance_id=instance_id, timer_id=timer_id, due=due, fired_at=now))
        M.FLOW_TIMERS_PENDING.set(len(self.timers))

    def _drive_schedules(self) -> None:
        now = self.clock.now()
        if now - self._last_gauges >= _GAUGES_EVERY_S:
            self._last_gauges = now
            self._update_gauges()
        # A pass at each owned schedule's next fire time, and every `schedule_every` to notice new
        # schedules, changed ones and newly owned partitions.
        if now - self._last_schedule_pass < self.schedule_every and (self._next_fire is None or now < self._next_fire):
            return
        self._last_schedule_pass = now
        self._next_fire = None
        for schedule in self.catalog.schedules():
            key = SCHEDULE_PREFIX + schedule.id
            store = self.stores.get(partition_for(key, self.partitions))
            if store is None:
                continue
            current = store.get(key)
            last = current.last_fire if isinstance(current, ScheduleState) else None
            produced = self._fired_up_to.get(schedule.id)
            if produced is not None and (last is None or produced > last):
                last = produced
            since = self._first_seen.setdefault(schedule.id, now)
            fires, missed = due_fires(schedule, last, since, now)
            if missed:
                M.FLOW_CRON_MISSED.inc(missed)
            for fire in fires:
                self._emit(ScheduleEvent(type="schedule_fire", schedule_id=schedule.id, fire_time=fire))
                self._fired_up_to[schedule.id] = fire
            upcoming = schedule.cron.next_after(max([now, *fires]))
            self._next_fire = upcoming if self._next_fire is None else min(self._next_fire, upcoming)

    # -- helpers -------------------------------------------------------------------------------

    def _flow_of(self, state: InstanceState) -> CompiledFlow | None:
        return self.catalog.flow(state.flow_id, state.flow_version)

    def _dead_letter(self, msg: Message, code: str, reason: str) -> None:
        log.warning("flows: %s at %s[%s]@%s: %s", code, msg.topic(), msg.partition(), msg.offset(), reason)
        self._produce_dlq(
            msg.key(),
            msg.value(),
            code,
            reason,
            (msg.topic() or "", msg.partition() or 0, msg.offset() or 0),
            msg.headers(),
        )

    def _produce_dlq(
        self,
        key: bytes | None,
        value: bytes | None,
        code: str,
        reason: str,
        origin: tuple[str, int, int],
        headers: Any = None,
    ) -> None:
        topic, partition, offset = origin
        extra: list[tuple[str, str | bytes | None]] = [
            (k, v if isinstance(v, bytes) else str(v or "").encode())
            for k, v in (headers or [])
            if not k.startswith("__connect.")
        ]
        extra += [
            (H.DLQ_ORIGINAL_TOPIC, topic.encode()),
            (H.DLQ_ORIGINAL_PARTITION, str(partition).encode()),
            (H.DLQ_ORIGINAL_OFFSET, str(offset).encode()),
            (H.DLQ_ERROR_CODE, code.encode()),
            (H.DLQ_ERROR_MESSAGE, reason.encode()[:4096]),
            (H.DLQ_CHANNEL, b"flows"),
            (H.DLQ_ATTEMPTS, b"1"),
            (H.DLQ_FIRST_FAILED_AT, str(int(time.time() * 1000)).encode()),
        ]
        # within the record budget, with room for the headers
        if value is not None and len(value) > self.settings.max_record_bytes - REPLY_HEADERS_ROOM:
            extra.append((H.DLQ_VALUE_DROPPED, str(len(value)).encode()))
            value = None  # the original stays readable at its topic/partition/offset
        if sum(len(k) + len(v or b"") for k, v in extra) > _MAX_DLQ_HEADER_BYTES:
            # The original headers do not fit beside the value: keep only the dead-letter context.
            extra = [*extra[-8:], (H.HEADERS_DROPPED, b"all")]
        assert self._producer is not None
        try:
            self._producer.produce(self.names.dlq, value, key, headers=extra)
        except (KafkaException, BufferError) as exc:  # never stop the runner (and the worker) for a dead letter
            log.error("flows: dead letter %s not produced (%s): skipped", code, exc)
            M.ERRORS.labels("UNDELIVERABLE").inc()
            return
        M.DLQ_RECORDS.labels("flows", code).inc()

    def _update_gauges(self) -> None:
        counts: dict[str, int] = {}
        for store in self.stores.values():
            for state in store.values():
                if isinstance(state, InstanceState):
                    counts[state.status] = counts.get(state.status, 0) + 1
        for status in ("scheduled", "running", "waiting", "paused", "completed", "failed", "cancelled"):
            M.FLOW_INSTANCES.labels(status).set(counts.get(status, 0))
        M.FLOW_TIMERS_PENDING.set(len(self.timers))


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _runtime_state() -> ConfigState:
    import functools

    from app.connectors import connector_registry

    return ConfigState(compiler=functools.partial(default_compiler, registry=connector_registry()))


def _poll_batch(consumer: Consumer, limit: int, wait: float) -> list[Message]:
    first = consumer.poll(max(0.0, wait))  # a negative timeout is "forever" to confluent-kafka
    return [] if first is None else [first, *consumer.consume(limit - 1, 0)]

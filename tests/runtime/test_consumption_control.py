"""`ConsumptionControl` against a recording consumer: the calls it makes on assignment, pause, resume and hold
(the broker-level behaviour is in test_channel_ops.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from app.config_store.channel_ops import PAUSE_PREFIX
from app.config_store.state import RUNTIME_PREFIX
from app.governance.kafka_ingest import PartitionThrottle
from app.worker.consumption import ConsumptionControl
from app.worker.pipeline import ChannelRoute


class Log:
    """The config reader's runtime-record side."""

    def __init__(self) -> None:
        self.runtime_records: dict[str, bytes] = {}

    def pause(self, channel: str, paused: bool = True) -> None:
        key = f"{RUNTIME_PREFIX}{PAUSE_PREFIX}{channel}"
        if paused:
            self.runtime_records[key] = orjson.dumps({"channel": channel})
        else:
            self.runtime_records.pop(key, None)


class Consumer:
    def __init__(self, committed: dict[tuple[str, int], int] | None = None, times: dict[Any, int] | None = None):
        self.calls: list[tuple[str, Any]] = []
        self._committed = committed or {}
        self._times = times or {}
        self.assigned: set[tuple[str, int]] = set()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._committed.get((tp.topic, tp.partition), -1001)) for tp in tps
        ]

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls.append(("offsets_for_times", [(tp.topic, tp.partition, tp.offset) for tp in tps]))
        return [TopicPartition(tp.topic, tp.partition, self._times[(tp.topic, tp.partition)]) for tp in tps]

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("assign", [(tp.topic, tp.partition, tp.offset) for tp in tps]))
        self.assigned |= {(tp.topic, tp.partition) for tp in tps}

    def pause(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("pause", sorted((tp.topic, tp.partition) for tp in tps)))

    def resume(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("resume", sorted((tp.topic, tp.partition) for tp in tps)))

    def seek(self, tp: TopicPartition) -> None:
        self.calls.append(("seek", (tp.topic, tp.partition, tp.offset)))


def _control(log: Log, consumer: Consumer, **kw: Any) -> ConsumptionControl:
    return ConsumptionControl(log, "w1", lambda: consumer, lambda _tps: None, **kw)  # type: ignore[arg-type]


def _route(name: str, start_from: str | int = "latest", active_since_ms: int = 1000) -> ChannelRoute:
    return ChannelRoute(name, f"ch.{name}", True, None, None, start_from=start_from, active_since_ms=active_since_ms)


def test_assignment_places_partitions_without_a_commit_and_pauses_paused_channels() -> None:
    log = Log()
    log.pause("b")
    consumer = Consumer(committed={("ch.a", 0): 7}, times={("ch.a", 1): 3, ("ch.b", 0): 0})
    control = _control(log, consumer)
    control.set_routes({"ch.a": _route("a"), "ch.b": _route("b", 5000), "ch.c": _route("c", "earliest")})
    control.on_assign(
        consumer,  # type: ignore[arg-type]
        [TopicPartition("ch.a", 0), TopicPartition("ch.a", 1), TopicPartition("ch.b", 0), TopicPartition("ch.c", 0)],
    )
    assigned = dict(((t, p), o) for t, p, o in next(c[1] for c in consumer.calls if c[0] == "assign"))
    assert assigned[("ch.a", 0)] < 0  # committed: the group's offset applies (untouched)
    assert assigned[("ch.a", 1)] == 3  # latest: the first record since the activation time
    assert assigned[("ch.c", 0)] == OFFSET_BEGINNING
    asked = next(c[1] for c in consumer.calls if c[0] == "offsets_for_times")
    assert sorted(asked) == [("ch.a", 1, 1000), ("ch.b", 0, 5000)]
    assert ("pause", [("ch.b", 0)]) in consumer.calls
    # Records older than the start time are skipped until the first one at or after it.
    assert control.below_floor("ch.b", 0, 4999) and not control.below_floor("ch.b", 0, 5000)
    assert not control.below_floor("ch.b", 0, 10)  # the floor is lifted for good


def test_hold_seeks_back_to_the_first_held_record_each_time_and_resume_spares_throttled_partitions() -> None:
    log = Log()
    consumer = Consumer()
    consumer.assigned = {("ch.a", 0), ("ch.a", 1)}
    control = _control(log, consumer, throttled=lambda: {("ch.a", 1): 4})
    control.set_routes({"ch.a": _route("a")})
    log.pause("a")
    control.set_routes({"ch.a": _route("a")})
    assert ("pause", [("ch.a", 0), ("ch.a", 1)]) in consumer.calls and control.gated
    control.hold(consumer, "ch.a", 0, 10)  # type: ignore[arg-type]
    control.hold(consumer, "ch.a", 0, 15)  # type: ignore[arg-type]  # resumed by someone, fetched on
    assert [c for c in consumer.calls if c[0] == "seek"] == [("seek", ("ch.a", 0, 10))] * 2
    log.pause("a", False)
    control.set_routes({"ch.a": _route("a")})
    assert consumer.calls[-1] == ("resume", [("ch.a", 0)])  # partition 1 is the rate limit's to resume
    assert not control.held and not control.gated


async def test_a_rate_limit_hold_ending_leaves_a_paused_channel_paused() -> None:
    consumer = Consumer()
    throttle = PartitionThrottle()
    throttle.keep_paused = lambda tp: tp[0] == "ch.paused"
    throttle.hold(consumer, "ch.paused", 0, 5, delay=0)  # type: ignore[arg-type]
    throttle.hold(consumer, "ch.live", 0, 5, delay=0)  # type: ignore[arg-type]
    for _ in range(3):  # the hold timers (delay 0) fire on the next loop turn
        await asyncio.sleep(0)
    assert [c for c in consumer.calls if c[0] == "resume"] == [("resume", [("ch.live", 0)])]
    assert not throttle.held

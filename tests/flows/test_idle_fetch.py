"""`IdleFetch.before_poll` bounds the flow runner's poll: never a negative wait (confluent-kafka reads a
negative poll timeout as "wait forever": a runner idle before it knew any position stopped firing its timers
and could not be stopped; found by a CI run where the idle-runner test hung for 300 s)."""

from __future__ import annotations

from typing import Any

from app.flow_runtime.idle import IdleFetch


class _Consumer:
    def __init__(self) -> None:
        self.paused: list[Any] = []

    def assignment(self) -> list[Any]:
        return []

    def pause(self, tps: list[Any]) -> None:
        self.paused.append(tps)

    def resume(self, tps: list[Any]) -> None:
        pass

    def position(self, tps: list[Any]) -> list[Any]:
        return []


def test_idle_without_a_known_position_sets_no_limit_instead_of_a_negative_wait() -> None:
    idle = IdleFetch(interval=0.3, window=0.3)
    consumer = _Consumer()
    later = idle._last + IdleFetch.IDLE_AFTER_S + 5.0  # long idle, nothing read or assigned yet
    wait = idle.before_poll(consumer, later)  # type: ignore[arg-type]
    assert wait is None and not idle.paused and consumer.paused == []


def test_before_turning_idle_the_wait_ends_when_it_would_turn_idle() -> None:
    idle = IdleFetch(interval=0.3, window=0.3)
    wait = idle.before_poll(_Consumer(), idle._last + 0.5)  # type: ignore[arg-type]
    assert wait is not None and abs(wait - (IdleFetch.IDLE_AFTER_S - 0.5)) < 1e-6


def test_idle_with_a_known_position_pauses_and_probes_once_per_interval() -> None:
    idle = IdleFetch(interval=0.3, window=0.3)
    idle._next[("t", 0)] = 5
    consumer = _Consumer()
    wait = idle.before_poll(consumer, idle._last + IdleFetch.IDLE_AFTER_S + 1.0)  # type: ignore[arg-type]
    assert idle.paused and wait == 0.3 and len(consumer.paused) == 1

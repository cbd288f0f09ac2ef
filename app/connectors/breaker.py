"""Circuit breakers, one per `channel:connector` key (Orion's key), in one small module.

closed --(failure_threshold consecutive failures)--> open --(recovery_timeout)--> half-open:
exactly one probe call is let through; its success closes the breaker, its failure re-opens it.
While open (or while the probe is in flight) calls fail fast with `CircuitOpen` (503).
Only failures of the external system count (network errors, timeouts, 5xx); a 4xx is the
caller's fault and a success resets the count. Breakers are per process; the map is bounded (LRU).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import CircuitOpen
from app.observability.metrics import BREAKER_REJECTIONS, BREAKER_TRIPS
from app.settings import Settings

__all__ = [
    "BREAKER_REJECTIONS",
    "BREAKER_TRIPS",
    "BreakerConfig",
    "BreakerRegistry",
    "CircuitBreaker",
    "breaker_key",
]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def breaker_key(channel: str, connector: str) -> str:
    return f"{channel}:{connector}"


@dataclass(frozen=True)
class BreakerConfig:
    """Orion's `[engine.circuit_breaker]` (enabled by default in Quasar)."""

    enabled: bool = True
    failure_threshold: int = 5
    recovery_timeout_secs: float = 30.0
    max_breakers: int = 10_000

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if self.recovery_timeout_secs < 0:
            raise ValueError("recovery_timeout_secs must be >= 0")
        if self.max_breakers < 1:
            raise ValueError("max_breakers must be >= 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        """The `QUASAR_CIRCUIT_BREAKER_*` settings (what the worker and gateway build their registry from)."""
        return cls(
            enabled=settings.circuit_breaker_enabled,
            failure_threshold=settings.circuit_breaker_failure_threshold,
            recovery_timeout_secs=settings.circuit_breaker_recovery_timeout_secs,
            max_breakers=settings.circuit_breaker_max_breakers,
        )


class CircuitBreaker:
    """The state machine for one key. Single event loop: no locks needed (no await inside)."""

    __slots__ = (
        "_clock",
        "_on_change",
        "channel",
        "config",
        "connector",
        "failures",
        "key",
        "opened_at",
        "probe_in_flight",
        "rejections",
        "state",
        "trips",
    )

    def __init__(
        self,
        channel: str,
        connector: str,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self._on_change = on_change  # told of every state change (cluster-wide visibility)
        self.channel = channel
        self.connector = connector
        self.key = breaker_key(channel, connector)
        self.config = config
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.trips = 0
        self.rejections = 0

    def before_call(self) -> None:
        """Raise `CircuitOpen` when the call must not go out; may move open -> half-open."""
        if self.state == CLOSED:
            return
        if self.state == OPEN and self._clock() - self.opened_at >= self.config.recovery_timeout_secs:
            self.state = HALF_OPEN
            self.probe_in_flight = False
        if self.state == HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True  # this caller is the probe
            return
        self.rejections += 1
        BREAKER_REJECTIONS.labels(self.connector, self.channel).inc()
        retry_in = max(0.0, self.config.recovery_timeout_secs - (self._clock() - self.opened_at))
        raise CircuitOpen(
            f"circuit breaker '{self.key}' is open; calls to connector '{self.connector}' are refused",
            details={"key": self.key, "retry_in_secs": round(retry_in, 3)},
        )

    def on_success(self) -> None:
        changed = self.state != CLOSED
        self.state = CLOSED
        self.failures = 0
        self.probe_in_flight = False
        if changed:
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    def on_failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.config.failure_threshold:
            self._trip()

    def on_neutral(self) -> None:
        """The call ended without saying anything about the system's health (e.g. a 4xx)."""
        if self.state == HALF_OPEN:
            self.on_success()  # it answered: the system is up

    def _trip(self) -> None:
        self.state = OPEN
        self.opened_at = self._clock()
        self.probe_in_flight = False
        self.trips += 1
        BREAKER_TRIPS.labels(self.connector, self.channel).inc()
        self._changed()

    def reset(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.probe_in_flight = False
        self._changed()

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        if state == OPEN and self._clock() - self.opened_at >= self.config.recovery_timeout_secs:
            state = HALF_OPEN  # the next call will be the probe
        return {
            "key": self.key,
            "channel": self.channel,
            "connector": self.connector,
            "state": state,
            "failure_count": self.failures,
            "trips": self.trips,
            "rejections": self.rejections,
        }


class BreakerRegistry:
    """All breakers of a process, keyed `channel:connector`; LRU-bounded by `max_breakers`."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self.on_change = on_change
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def get(self, channel: str, connector: str) -> CircuitBreaker:
        key = breaker_key(channel, connector)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(channel, connector, self.config, self._clock, self._notify)
            self._breakers[key] = breaker
            while len(self._breakers) > self.config.max_breakers:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(key)
        return breaker

    def _notify(self, breaker: CircuitBreaker) -> None:
        if self.on_change is not None:
            self.on_change(breaker)

    def list(self) -> list[dict[str, Any]]:
        """Every breaker's state, sorted by key (the admin API's list)."""
        return [self._breakers[k].snapshot() for k in sorted(self._breakers)]

    def reset(self, key: str) -> bool:
        """Close the breaker `key`; False when there is none."""
        breaker = self._breakers.get(key)
        if breaker is None:
            return False
        breaker.reset()
        return True

    def reset_all(self) -> int:
        for breaker in self._breakers.values():
            breaker.reset()
        return len(self._breakers)

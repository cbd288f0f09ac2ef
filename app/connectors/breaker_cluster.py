"""Circuit breakers seen and reset cluster-wide, through runtime records on the config topic.

Breakers live in the process that makes connector calls (each worker). Orion's admin API lists and
resets them; with many workers and separate gateways that needs a shared channel, and the config topic
is the one every instance already reads:

- every state change of a worker's breaker is written as `__runtime__/breaker/<instance>/<key>` (the
  breaker's snapshot); the topic is compacted, so the latest state per instance and key survives, and
  an instance that stops cleanly tombstones its records;
- a reset is a command record `__runtime__/breaker-reset/<nonce>` (`{"key": ...}`): every worker folds
  it and resets its breaker, which writes the new (closed) state back.

Records are duck-typed against the config reader (`write_runtime`, `add_runtime_listener`, `runtime`):
no config-store import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from app.connectors.breaker import BreakerRegistry, CircuitBreaker

__all__ = ["RESET_PREFIX", "STATE_PREFIX", "ClusterBreakers", "cluster_breaker_states", "request_breaker_reset"]

log = logging.getLogger("quasar.connectors.breakers")

STATE_PREFIX = "breaker/"
RESET_PREFIX = "breaker-reset/"


class RuntimeLog(Protocol):
    """What the config reader offers for runtime records."""

    async def write_runtime(self, key: str, value: bytes | None) -> int: ...

    def add_runtime_listener(
        self, prefix: str, listener: Callable[[str, bytes | None], None]
    ) -> Callable[[], None]: ...

    def runtime(self, prefix: str) -> dict[str, bytes]: ...


class ClusterBreakers:
    """Publishes one process's breaker changes and obeys reset commands. `start()` / `await stop()`."""

    def __init__(self, registry: BreakerRegistry, log_: RuntimeLog, instance: str) -> None:
        self.registry = registry
        self.log = log_
        self.instance = instance
        self._published: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._unlisten: Callable[[], None] | None = None

    def start(self) -> None:
        self.registry.on_change = self._publish
        self._unlisten = self.log.add_runtime_listener(RESET_PREFIX, self._on_reset)

    async def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
        self.registry.on_change = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        # A stopped instance has no breakers: take its records off the list.
        for key in list(self._published):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.log.write_runtime(key, None), 5)

    def _publish(self, breaker: CircuitBreaker) -> None:
        key = f"{STATE_PREFIX}{self.instance}/{breaker.key}"
        value = orjson.dumps({**breaker.snapshot(), "instance": self.instance, "updated_at": time.time()})
        self._published.add(key)
        task = asyncio.ensure_future(self.log.write_runtime(key, value))
        self._tasks.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Visibility only: the breaker itself works without its record.
            log.warning("cannot publish circuit breaker state: %s", task.exception())

    def _on_reset(self, key: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            target = orjson.loads(value).get("key")
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("ignoring malformed breaker reset record %s", key)
            return
        if target == "*":
            self.registry.reset_all()
        elif isinstance(target, str) and self.registry.reset(target):
            log.info("circuit breaker %s reset by an admin request", target)


def cluster_breaker_states(log_: RuntimeLog) -> list[dict[str, Any]]:
    """Every instance's published breaker states, sorted by key then instance."""
    states = []
    for raw in log_.runtime(STATE_PREFIX).values():
        with contextlib.suppress(orjson.JSONDecodeError):
            state = orjson.loads(raw)
            if isinstance(state, dict) and isinstance(state.get("key"), str):
                states.append(state)
    return sorted(states, key=lambda s: (s["key"], str(s.get("instance"))))


async def request_breaker_reset(log_: RuntimeLog, key: str) -> None:
    """Ask every instance to close breaker `key` (`*`: all of them)."""
    await log_.write_runtime(f"{RESET_PREFIX}{uuid.uuid4().hex}", orjson.dumps({"key": key}))

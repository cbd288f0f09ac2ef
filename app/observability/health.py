"""Health checks shared by the gateway's `/health` and the worker's ops port.

Each check returns `"ok"` or a short reason. Checks only read state or do one bounded network call
(Redis PING with a short timeout, cached briefly so a probe storm cannot hammer Redis).
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["HEALTHY", "config_problems", "redis_status", "worker_components"]

# Component states that keep a process healthy: no Redis configured is a valid choice (in-memory
# governance), reported as such instead of pretending a Redis answered.
HEALTHY = frozenset({"ok", "not_configured"})

_REDIS_CACHE_S = 2.0
_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def redis_status(url: str | None, *, timeout: float = 0.5) -> str:
    """`ok`, `not_configured` (no Redis: in-memory governance) or `unreachable (...)`. Blocking."""
    if not url:
        return "not_configured"
    now = time.monotonic()
    with _lock:
        hit = _cache.get(url)
        if hit is not None and now - hit[0] < _REDIS_CACHE_S:
            return hit[1]
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        status = "ok"
    except Exception as exc:
        status = f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
    with _lock:
        _cache[url] = (time.monotonic(), status)
    return status


def worker_components(worker: Any, redis_url: str | None, probe: Any = None) -> dict[str, str]:
    """Component map of a `ChannelWorker`: broker (consume loop alive and, with a `BrokerProbe`, the
    cluster answering), config (caught up), engine, redis (`not_configured` counts as healthy: see
    `HEALTHY`)."""
    out: dict[str, str] = {}
    task = getattr(worker, "_task", None)
    failure = getattr(worker, "failure", None)
    if failure is not None:
        out["broker"] = f"failed ({type(failure).__name__}: {failure})"
    elif task is None or task.done():
        out["broker"] = "not_running"
    else:
        out["broker"] = "ok" if probe is None else probe.status()
    reader: Any = getattr(worker, "reader", None)
    out["config"] = "ok" if reader is not None and reader.is_ready else "not_ready"
    snapshot = getattr(reader, "snapshot", None)
    if snapshot is None or getattr(snapshot, "engine", None) is None:
        out["engine"] = "not_loaded"
    elif getattr(reader, "snapshot_errors", 0):
        out["engine"] = f"config snapshot failed to build ({reader.last_error})"
    else:
        out["engine"] = "ok"
    out["redis"] = redis_status(redis_url)
    return out


MAX_PROBLEMS = 50


def config_problems(snapshot: Any) -> dict[str, Any]:
    """`/health` fields of a config snapshot's problems: stored definitions that cannot run (an invalid
    version, a binding to a missing workflow, a setting that cannot be used here), with their field
    errors, so a channel never stops silently. Bounded: the first `MAX_PROBLEMS` are listed."""
    problems = tuple(getattr(snapshot, "problems", ()) or ())
    return {"config_problems": len(problems), "problems": [dict(p) for p in problems[:MAX_PROBLEMS]]}

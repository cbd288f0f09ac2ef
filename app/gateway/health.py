"""Operational endpoints: `/health` (components, 503 when degraded), `/healthz` (liveness), `/readyz`.

Ready means: the config reader has caught up to a marker it wrote (so a data call sees every config
change written before the gateway started) and the reply consumer is positioned on its partitions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app import __version__
from app.gateway.errors import json_response
from app.observability.health import HEALTHY, config_problems, redis_status

__all__ = ["components", "router"]

router = APIRouter(tags=["Operations"])

# The reply poll loop wakes at least every 100 ms; silence for this long means it is stuck or dead.
_POLL_STALE_S = 5.0


def components(request: Request) -> dict[str, Any]:
    """Status of each part this gateway depends on: `ok` or a short reason."""
    state = request.app.state
    reader = getattr(state, "config_reader", None)
    bridge = getattr(state, "bridge", None)
    traces = getattr(state, "trace_index", None)
    out: dict[str, Any] = {}

    probe = getattr(state, "broker_probe", None)  # the cluster answering metadata (app/kafka/probe.py)
    if bridge is None or not bridge.ready:
        out["broker"] = "not_connected"
    elif time.monotonic() - bridge.last_poll_at > _POLL_STALE_S:
        out["broker"] = f"reply consumer stalled ({bridge.last_error or 'no poll'})"
    else:
        out["broker"] = "ok" if probe is None else probe.status()

    if reader is None or not reader.is_ready:
        out["config"] = "not_ready"
    else:
        out["config"] = "ok"

    snapshot = getattr(reader, "snapshot", None)
    if snapshot is None:
        out["engine"] = "not_loaded"
    elif reader is not None and reader.snapshot_errors:
        out["engine"] = f"config snapshot failed to build ({reader.last_error})"
    else:
        out["engine"] = "ok"

    governance = getattr(state, "governance", None)  # governance: shared store (Redis) reachable?
    if governance is not None:
        out["governance"] = governance.health()

    out["traces"] = (
        "ok"
        if traces is not None and traces.last_error is None
        else ("not_started" if traces is None else f"degraded ({traces.last_error})")
    )
    return out


@router.get("/health", summary="Health check (200 ok / 503 degraded)")
async def health(request: Request) -> Response:
    parts = components(request)
    # Governance (rate limit, dedup, cache) lives in Redis when configured; in-memory is a valid choice.
    settings = getattr(request.app.state, "settings", None)
    redis = await asyncio.to_thread(redis_status, getattr(settings, "redis_url", None))
    parts["redis"] = redis
    # Traces only serve the trace endpoints; the data path works without them.
    healthy = all(v in HEALTHY for k, v in parts.items() if k != "traces")
    reader = getattr(request.app.state, "config_reader", None)
    snapshot = getattr(reader, "snapshot", None)
    body = {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "instance": getattr(request.app.state, "instance_id", None),
        "uptime_seconds": int(time.monotonic() - getattr(request.app.state, "started_at", time.monotonic())),
        "config_offset": getattr(reader, "applied_offset", -1),
        "channels_loaded": len(snapshot.channels) if snapshot is not None else 0,
        "workflows_loaded": len(snapshot.workflows) if snapshot is not None else 0,
        **config_problems(snapshot),
        "components": parts,
    }
    return json_response(body, 200 if healthy else 503)


@router.get("/healthz", summary="Liveness probe (always 200)")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Readiness probe (503 until config is caught up and replies are positioned)")
async def readyz(request: Request) -> Response:
    parts = components(request)
    ready = parts["config"] == "ok" and parts["broker"] == "ok"
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {"config": parts["config"], "replies": parts["broker"]},
    }
    return json_response(body, 200 if ready else 503)

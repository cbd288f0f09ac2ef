"""A stored channel that cannot run is listed, with its field errors, by the worker's /health as well
(the gateway's is covered end to end in tests/gateway/test_channel_contract.py)."""

from __future__ import annotations

import httpx
import orjson

from app.config_store.operations import Activate, Create
from app.config_store.snapshot import build_snapshot
from app.config_store.state import ConfigState, proposal_key
from app.kafka.broker import free_port
from app.observability.health import config_problems
from app.observability.server import start_ops_server


def _state_with(doc: dict[str, object]) -> ConfigState:
    state = ConfigState()
    current = None
    for revision, operation in enumerate((Create(doc), Activate()), start=1):
        change = operation("channel", "typo", current, "2026-01-01T00:00:00.000Z")
        value = {
            "kind": "channel",
            "id": "typo",
            "op": change.op,
            "expected_revision": revision - 1,
            "revision": revision,
            "object": {"versions": {str(n): d for n, d in change.versions.items()}},
        }
        state.apply(revision, proposal_key("channel", "typo", revision, "n"), orjson.dumps(value))
        current = state.get("channel", "typo")
    return state


def test_worker_health_lists_a_channel_that_cannot_run() -> None:
    snapshot = build_snapshot(_state_with({"name": "typo", "config": {"failure_mod": "x"}}), engine_factory=None)
    server = start_ops_server(free_port(), health=lambda: {"broker": "ok"}, info=lambda: config_problems(snapshot))
    assert server is not None
    try:
        body = httpx.get(f"http://127.0.0.1:{server.port}/health").json()
    finally:
        server.close()
    assert body["config_problems"] == 1
    (problem,) = body["problems"]
    assert (problem["kind"], problem["id"], problem["version"]) == ("channel", "typo", 1)
    assert problem["errors"][0]["field"] == "config.failure_mod"

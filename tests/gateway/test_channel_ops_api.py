"""Channel operations through the gateway (real HTTP, real broker, a worker): pause/resume, seek requests,
consumption status, and their bad paths (404, 400 with the error shape, 409, refused partitions/topics)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from app.cli import _register, cli
from app.config_store.channel_ops import seek_request
from app.settings import Settings
from tests.gateway.conftest import Admin, Gateway, eventually, http_channel, map_task

pytestmark = pytest.mark.timeout(180)
_register()

ECHO = {"workflow_id": "ops-echo", "name": "echo", "tasks": [map_task("mark", ("data.seen", True))]}


@pytest.fixture(scope="module")
async def channels(admin: Admin) -> None:
    await admin.workflow(ECHO)
    await admin.channel(http_channel("ops-paused", "ops-echo", {}))
    await admin.channel(http_channel("ops-live", "ops-echo", {}))
    await admin.http.post("/api/v1/admin/channels", json=http_channel("ops-draft", "ops-echo", {}))


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
    return dict(body["error"])


async def test_a_paused_channel_refuses_sync_calls_and_runs_async_ones_on_resume(
    gateway: Gateway, worker: Any, channels: None
) -> None:
    http = gateway.http
    assert (await http.post("/api/v1/data/ops-paused", json={"data": {"n": 0}})).status_code == 200
    r = await http.post("/api/v1/admin/channels/ops-paused/pause")
    assert r.status_code == 200 and r.json()["data"] == {"channel": "ops-paused", "paused": True}
    topic = worker._routes and next(t for t, route in worker._routes.items() if route.name == "ops-paused")

    async def obeyed() -> bool:
        return topic in worker.control.paused_topics

    await eventually(obeyed)
    refused = _error(await http.post("/api/v1/data/ops-paused", json={"data": {"n": 1}}), 503, "CHANNEL_PAUSED")
    assert "paused" in refused["message"]
    # Another channel keeps being served.
    assert (await http.post("/api/v1/data/ops-live", json={"data": {"n": 2}})).json()["data"]["seen"] is True
    # An async call is accepted: it waits on the topic.
    accepted = await http.post("/api/v1/data/ops-paused/async", json={"data": {"n": 3}})
    assert accepted.status_code == 202
    trace_id = accepted.json()["trace_id"]
    state = (await http.get("/api/v1/admin/channels/ops-paused/consumption")).json()["data"]
    assert state["paused"] is True and state["paused_by"]["by"] and state["topic"] == topic
    assert {p["partition"] for p in state["partitions"]} == {0, 1}

    r = await http.post("/api/v1/admin/channels/ops-paused/resume")
    assert r.status_code == 200 and r.json()["data"]["paused"] is False

    async def completed() -> bool:
        t = await http.get(f"/api/v1/data/traces/{trace_id}")
        return t.status_code == 200 and t.json().get("status") == "completed"

    await eventually(completed, within=30)
    assert (await http.post("/api/v1/data/ops-paused", json={"data": {"n": 4}})).status_code == 200
    audit = await http.get("/api/v1/admin/audit-logs", params={"resource_id": "ops-paused", "limit": 100})
    actions = [e["action"] for e in audit.json()["data"] if e["resource_type"] == "channel"]
    assert "pause" in actions and "resume" in actions  # who paused production consumption, and when


async def test_bad_requests_get_clear_errors(gateway: Gateway, worker: Any, channels: None) -> None:
    http = gateway.http
    for method, path in [
        ("POST", "/api/v1/admin/channels/nope/pause"),
        ("POST", "/api/v1/admin/channels/nope/resume"),
        ("GET", "/api/v1/admin/channels/nope/consumption"),
    ]:
        _error(await http.request(method, path), 404, "NOT_FOUND")
    _error(await http.post("/api/v1/admin/channels/nope/offsets", json={"from_offset": 0}), 404, "NOT_FOUND")
    offsets = "/api/v1/admin/channels/ops-live/offsets"
    for body, words in [
        ({"from": "yesterday"}, "ISO 8601"),
        ({"from": "2026-12-01T00:00:00"}, "time zone"),
        ({"from": "2026-13-01T00:00:00Z"}, "ISO 8601"),
        ({"from": 12}, "ISO 8601"),
        ({}, "exactly one"),
        ({"from": "2026-12-01T00:00:00Z", "from_offset": 3}, "exactly one"),
        ({"from_offset": -1}, "non-negative"),
        ({"from_offset": "3"}, "non-negative"),
        ({"from_offset": 0, "partitions": [7]}, "not partitions of"),
        ({"from_offset": 0, "partitions": []}, "non-empty"),
        ({"from_offset": 0, "topic": "someone.elses"}, "not this channel's topic"),
        ({"from_offset": 0, "force": True}, "unknown field"),
        ({"from_offset": 10**12}, "past the end"),
        ([1, 2], "JSON object"),
    ]:
        err = _error(await http.post(offsets, json=body), 400, "BAD_REQUEST")
        assert words in err["message"], (body, err)
    # A draft channel is not consumed: nothing to move.
    _error(await http.post("/api/v1/admin/channels/ops-draft/offsets", json={"from_offset": 0}), 409, "CONFLICT")
    # Nothing of the refused requests reached the config topic.
    assert seek_request(gateway.app.state.config_reader, "ops-live") is None


async def test_a_seek_request_is_applied_once_per_partition_and_reported(
    gateway: Gateway, worker: Any, channels: None
) -> None:
    http = gateway.http
    for n in range(4):
        assert (await http.post("/api/v1/data/ops-live", json={"data": {"n": n}})).status_code == 200
    r = await http.post("/api/v1/admin/channels/ops-live/offsets", json={"from": "2020-01-01T00:00:00+01:00"})
    assert r.status_code == 202, r.text
    seek = r.json()["data"]
    assert seek["channel"] == "ops-live" and seek["from"].startswith("2019-12-31T23:00:00")

    async def applied() -> dict[str, Any]:
        state = (await http.get("/api/v1/admin/channels/ops-live/consumption")).json()["data"]
        done = state["seek"]["applied"]
        return state if {"0", "1"} <= set(done) and all(a["request"] == seek["id"] for a in done.values()) else {}

    state = await eventually(applied, within=30)
    assert state["seek"]["id"] == seek["id"] and all(a["offset"] == 0 for a in state["seek"]["applied"].values())


async def test_cli_replay_shows_progress_until_caught_up(
    gateway: Gateway, worker: Any, channels: None, e2e_settings: Settings
) -> None:
    for n in range(3):
        assert (await gateway.http.post("/api/v1/data/ops-live", json={"data": {"n": n}})).status_code == 200
    env = {"QUASAR_URL": gateway.url, "COLUMNS": "200", "QUASAR_KAFKA_BOOTSTRAP": str(e2e_settings.kafka_bootstrap)}
    args = ["channels", "replay", "ops-live", "--from-offset", "0", "--partition", "0", "--timeout", "60"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "requested" in result.output and "caught up" in result.output
    bad = await asyncio.to_thread(
        CliRunner().invoke, cli, ["channels", "replay", "ops-live", "--from", "soon"], env=env
    )
    assert bad.exit_code == 2 and "BAD_REQUEST" in bad.output
    missing = await asyncio.to_thread(CliRunner().invoke, cli, ["channels", "pause", "nope"], env=env)
    assert missing.exit_code == 3
    # Direct mode (no gateway: the config topic itself) serves the same routes.
    direct = {
        "QUASAR_URL": "",
        "COLUMNS": "200",
        "QUASAR_KAFKA_BOOTSTRAP": str(e2e_settings.kafka_bootstrap),
        "QUASAR_TOPIC_PREFIX": e2e_settings.topic_prefix,
        "QUASAR_FETCH_WAIT_MAX_MS": "10",
    }
    shown = await asyncio.to_thread(
        CliRunner().invoke, cli, ["channels", "consumption", "ops-live", "--json"], env=direct
    )
    assert shown.exit_code == 0, shown.output
    state = orjson.loads(shown.output)
    assert state["channel"] == "ops-live" and state["seek"]["partitions"] == [0] and len(state["partitions"]) == 2

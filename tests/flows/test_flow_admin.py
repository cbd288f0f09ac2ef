"""Flows and schedules are config kinds: versioned, validated, with the workflows' lifecycle (real broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway

A = "/api/v1/admin"


def flow_doc(flow_id: str, delay: str = "1h") -> dict[str, Any]:
    return {
        "flow_id": flow_id,
        "name": "Reminder",
        "steps": [
            {"id": "wait", "type": "delay", "delay": {"duration": delay}},
            {"id": "remind", "type": "external_task", "handler": "email", "timeout": "1m"},
        ],
    }


@pytest.fixture(scope="module")
def http(module_settings: Settings) -> Iterator[httpx.Client]:
    gateway: AdminGateway
    with admin_gateway(module_settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def test_flow_lifecycle_draft_active_new_version(http: httpx.Client) -> None:
    flow_id = f"fl-{uuid.uuid4().hex[:8]}"
    created = http.post(f"{A}/flows", json=flow_doc(flow_id))
    assert created.status_code == 201, created.text
    assert (created.json()["data"]["version"], created.json()["data"]["status"]) == (1, "draft")
    assert http.patch(f"{A}/flows/{flow_id}/status", json={"status": "active"}).status_code == 200
    assert http.post(f"{A}/flows/{flow_id}/versions").status_code == 201
    updated = http.put(f"{A}/flows/{flow_id}", json=flow_doc(flow_id, "2h"))
    assert updated.status_code == 200, updated.text
    versions = http.get(f"{A}/flows/{flow_id}/versions").json()["data"]
    assert [(v["version"], v["status"]) for v in versions] == [(2, "draft"), (1, "active")]


def test_an_invalid_flow_is_refused_with_every_field_named(http: httpx.Client) -> None:
    doc = flow_doc(f"bad-{uuid.uuid4().hex[:8]}", "soon")
    doc["steps"].append({"id": "wait", "type": "router", "branches": [{"condition": True, "next": "nowhere"}]})
    resp = http.post(f"{A}/flows", json=doc)
    assert resp.status_code == 400, resp.text
    text = resp.text
    assert "steps[0].delay.duration" in text and "steps[2].id" in text and "nowhere" in text


def test_schedule_lifecycle_and_validation(http: httpx.Client) -> None:
    schedule_id = f"sc-{uuid.uuid4().hex[:8]}"
    doc = {
        "schedule_id": schedule_id,
        "name": "Mornings",
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "flow_id": "x",
    }
    assert http.post(f"{A}/schedules", json=doc).status_code == 201
    assert http.patch(f"{A}/schedules/{schedule_id}/status", json={"status": "active"}).status_code == 200
    bad = http.post(f"{A}/schedules", json={**doc, "schedule_id": schedule_id + "b", "cron": "0 9 * *"})
    assert bad.status_code == 400 and "expected 5 fields" in bad.text


def test_dry_run_moves_virtual_time_answers_external_tasks_and_records_side_effects(http: httpx.Client) -> None:
    flow_id = f"dry-{uuid.uuid4().hex[:8]}"
    doc = {
        "flow_id": flow_id,
        "name": "Dry",
        "steps": [
            {"id": "wait", "type": "delay", "delay": {"duration": "3d"}},
            {"id": "ok", "type": "wait_for_signal", "signal": "paid", "timeout": "1d", "on_timeout": "remind"},
            {"id": "done", "type": "terminal", "output": {"var": "outputs.ok"}},
            {"id": "remind", "type": "external_task", "handler": "email"},
        ],
    }
    assert http.post(f"{A}/flows", json=doc).status_code == 201
    waited = http.post(f"{A}/flows/{flow_id}/test", json={"advance": "2d"}).json()["data"]
    assert waited["status"] == "waiting" and waited["cursor"] == "wait"
    paid = http.post(
        f"{A}/flows/{flow_id}/test",
        json={"signals": [{"signal": "custom", "name": "paid", "payload": {"via": "card"}}], "advance": "3d"},
    ).json()["data"]
    assert paid["status"] == "completed" and paid["output"] == {"via": "card"}
    reminded = http.post(f"{A}/flows/{flow_id}/test", json={"advance": "5d", "external": {"email": {"sent": 1}}})
    body = reminded.json()["data"]
    assert body["status"] == "completed" and body["outputs"]["remind"] == {"sent": 1}
    unanswered = http.post(f"{A}/flows/{flow_id}/test", json={"advance": "5d"}).json()["data"]
    assert unanswered["status"] == "waiting" and unanswered["pending_external_tasks"][0]["handler"] == "email"
    bad = http.post(f"{A}/flows/{flow_id}/test", json={"advance": "soon"})
    assert bad.status_code == 400 and "advance" in bad.text
    assert http.post(f"{A}/flows/nope/test", json={}).status_code == 404

"""Releases on the real broker: two gateways and a direct config writer reach the same decisions, because the
config fold makes them (min_approvers 2 + exclude_author; racing executions; audit of a rollback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from app.config_store.reader import ConfigReader
from app.config_store.release_ops import ReviewRelease
from app.config_store.writer import ConfigWriter
from app.errors import PolicyRefused
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import Gateway, apply_quasar_topics, eventually, start_gateway

TASKS = [{"id": "t", "name": "t", "function": {"name": "map", "input": {"mappings": [{"path": "data.x", "logic": 1}]}}}]
KEYS = {"root": "admin", "ed": "editor", "ann": "approver", "bob": "approver"}
A = "/api/v1/admin"


def h(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-of-{name}"}


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Any:
    keys = [{"name": n, "role": r, "key": f"key-of-{n}"} for n, r in KEYS.items()]
    s = make_test_settings(kafka_bootstrap, instance_id="rel-a", admin_auth_enabled=True, admin_keys=keys)
    apply_quasar_topics(s)
    return s


@pytest.fixture(scope="module")
async def gateways(settings: Any) -> AsyncIterator[tuple[Gateway, Gateway]]:
    a = await start_gateway(settings)
    b = await start_gateway(settings.model_copy(update={"instance_id": "rel-b"}))
    yield a, b
    await b.stop()
    await a.stop()


async def ok(resp: Any, status: int = 200) -> Any:
    r = await resp
    assert r.status_code == status, r.text
    return r.json()["data"] if r.content else None


async def test_policy_blocks_self_approval_the_same_way_everywhere(
    gateways: tuple[Gateway, Gateway], settings: Any
) -> None:
    a, b = gateways
    policy = {"match": {"kinds": ["workflow"], "ids": ["pay-*"]}, "min_approvers": 2, "exclude_author": True}
    await ok(a.http.put(f"{A}/policies/payments", json=policy, headers=h("root")))
    await ok(a.http.post(f"{A}/workflows", json={"workflow_id": "pay-1", "name": "p", "tasks": TASKS},
                         headers=h("ed")), 201)  # fmt: skip

    # Direct activation is refused on both gateways with the way forward.
    for gw in (a, b):
        r = await gw.http.patch(f"{A}/workflows/pay-1/status", json={"status": "active"}, headers=h("root"))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "POLICY_REFUSED" and "/releases" in r.json()["error"]["message"]

    rel = await ok(a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "pay-1"}, headers=h("root")), 201)
    rid = rel["id"]
    assert rel["state"] == "requested" and rel["approvals_needed"] == 2 and rel["policies"] == ["payments"]

    # Self-approval: refused on gateway B (its reader folds A's record) ...
    r = await b.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h("root"))
    assert r.status_code == 409 and "authored this release" in r.json()["error"]["message"]
    # ... and by a direct writer (the CLI's or a GitOps tool's own reader and writer).
    reader = ConfigReader(settings.model_copy(update={"instance_id": "rel-cli"}), engine_factory=None, name="cli")
    try:
        await reader.ready()
        writer = ConfigWriter(reader)
        obj = reader.state.get("workflow", "pay-1")
        assert obj is not None and rid in obj.releases
        from app.config_store.releases import effective_policy

        pol = effective_policy(reader.state.policies(), "workflow", "pay-1", ())
        with pytest.raises(PolicyRefused, match="authored"):
            await writer.apply("workflow", "pay-1", ReviewRelease(rid, "approved", "key:root", "admin", pol))
    finally:
        await reader.stop()

    # Two different approvers, one on each gateway; then the author executes.
    await ok(a.http.post(f"{A}/releases/{rid}/approve", json={"comment": "lgtm"}, headers=h("ann")))
    approved = await ok(b.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h("bob")))
    assert approved["state"] == "approved" and approved["approvals"] == ["key:ann", "key:bob"]
    # An editor cannot approve at all (role), whatever the policy.
    r = await a.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h("ed"))
    assert r.status_code == 403
    done = await ok(b.http.post(f"{A}/releases/{rid}/execute", json={}, headers=h("ed")))
    assert done["state"] == "active"
    for gw in (a, b):

        async def active(gw: Gateway = gw) -> bool:
            r = await gw.http.get(f"{A}/workflows/pay-1", headers=h("ann"))
            return bool(r.json()["data"]["status"] == "active")

        await eventually(active)


async def test_racing_executions_exactly_one_wins_and_rollback_is_audited(gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    await ok(a.http.post(f"{A}/workflows/pay-1/versions", headers=h("ed")), 201)
    rid = (await ok(a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "pay-1"}, headers=h("ed")), 201))["id"]
    await ok(a.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h("ann")))
    await ok(a.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h("bob")))
    await eventually(lambda: _state_is(b, rid, "approved"))
    results = await asyncio.gather(
        a.http.post(f"{A}/releases/{rid}/execute", json={}, headers=h("ed")),
        b.http.post(f"{A}/releases/{rid}/execute", json={}, headers=h("ed")),
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409], [r.text for r in results]

    back = await ok(
        a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "pay-1", "action": "rollback", "version": 1},
                    headers=h("ed")), 201)  # fmt: skip
    assert back["state"] == "approved"  # rollback_min_approvers defaults to 0
    await ok(a.http.post(f"{A}/releases/{back['id']}/execute", json={}, headers=h("ed")))
    assert (await ok(a.http.get(f"{A}/releases/{rid}", headers=h("ann"))))["state"] == "rolled_back"

    async def audited() -> list[Any]:
        r = await a.http.get(f"{A}/audit-logs", params={"resource_id": "pay-1"}, headers=h("ann"))
        return [e for e in r.json()["data"] if e.get("action") == "release.execute"]

    entries = await eventually(lambda: _at_least(audited, 3))
    assert {e["principal"] for e in entries} == {"key:ed"}


async def _state_is(gw: Gateway, rid: str, state: str) -> bool:
    r = await gw.http.get(f"{A}/releases/{rid}", headers=h("ann"))
    return bool(r.status_code == 200 and r.json()["data"]["state"] == state)


async def _at_least(fetch: Any, n: int) -> Any:
    items = await fetch()
    return items if len(items) >= n else None


async def test_diff_endpoint_and_release_evidence(gateways: tuple[Gateway, Gateway]) -> None:
    a, _ = gateways
    first = {"workflow_id": "pay-diff", "name": "p", "tasks": TASKS}
    await ok(a.http.post(f"{A}/workflows", json=first, headers=h("ed")), 201)
    rid = (await ok(a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "pay-diff"}, headers=h("ed")), 201))[
        "id"
    ]
    for who in ("ann", "bob"):
        await ok(a.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h(who)))
    await ok(a.http.post(f"{A}/releases/{rid}/execute", json={}, headers=h("ed")))
    await ok(a.http.post(f"{A}/workflows/pay-diff/versions", headers=h("ed")), 201)
    second = {"name": "p", "tasks": [{**TASKS[0], "function": {"name": "map", "input": {"mappings": [
        {"path": "data.y", "logic": 2}]}}}]}  # fmt: skip
    await ok(a.http.put(f"{A}/workflows/pay-diff", json=second, headers=h("ed")))
    diff = await ok(a.http.get(f"{A}/workflows/pay-diff/diff", headers=h("ann")))
    assert (diff["from"], diff["to"]) == (1, 2)
    assert diff["breaking"] == ["no longer writes data.x: consumers reading it will not find it"]
    rel = await ok(a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "pay-diff"}, headers=h("ed")), 201)
    assert rel["diff"]["breaking"] == diff["breaking"]  # what the approver sees
    r = await a.http.get(f"{A}/workflows/pay-diff/diff", params={"from": 9}, headers=h("ann"))
    assert r.status_code == 404


async def test_executing_a_release_runs_the_test_suite_gate(gateways: tuple[Gateway, Gateway]) -> None:
    a, _ = gateways
    tests = [{"name": "x is 2", "input": {}, "expect": {"data": {"x": 2}}}]  # the workflow writes x = 1
    doc = {"workflow_id": "pay-suite", "name": "p", "tasks": TASKS, "tests": tests}
    await ok(a.http.post(f"{A}/workflows", json=doc, headers=h("ed")), 201)
    rid = (await ok(a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "pay-suite"}, headers=h("ed")), 201))[
        "id"
    ]
    for who in ("ann", "bob"):
        await ok(a.http.post(f"{A}/releases/{rid}/approve", json={}, headers=h(who)))
    r = await a.http.post(f"{A}/releases/{rid}/execute", json={}, headers=h("ed"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "TEST_SUITE_FAILED", r.text


async def test_freeze_window_refuses_by_the_records_time(gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    # A window that opens every minute and lasts a day: whenever this test runs, it is frozen.
    window = {"cron": "* * * * *", "duration_minutes": 1440, "reason": "change freeze"}
    frozen = {"match": {"ids": ["frz-*"]}, "min_approvers": 0, "freeze_windows": [window]}
    await ok(a.http.put(f"{A}/policies/freeze", json=frozen, headers=h("root")))
    await ok(a.http.post(f"{A}/workflows", json={"workflow_id": "frz-1", "name": "f", "tasks": TASKS},
                         headers=h("ed")), 201)  # fmt: skip
    rel = await ok(a.http.post(f"{A}/releases", json={"kind": "workflow", "id": "frz-1"}, headers=h("ed")), 201)
    assert rel["state"] == "approved"  # no approvals needed, but frozen
    for gw in (a, b):
        r = await gw.http.post(f"{A}/releases/{rel['id']}/execute", json={}, headers=h("ed"))
        assert r.status_code == 409, r.text
        assert "freeze window" in r.json()["error"]["message"] and "change freeze" in r.json()["error"]["message"]
    await ok(a.http.delete(f"{A}/policies/freeze", headers=h("root")), 204)
    done = await ok(a.http.post(f"{A}/releases/{rel['id']}/execute", json={}, headers=h("ed")))
    assert done["state"] == "active"


async def test_a_record_written_straight_to_the_config_topic_is_audited_once(
    gateways: tuple[Gateway, Gateway], settings: Any
) -> None:
    """A GitOps tool producing a proposal itself: both gateways fold it, one audit entry names its actor."""
    from confluent_kafka import Producer

    from app.config_store.operations import Create
    from app.config_store.writer import proposal_records
    from app.kafka.config import producer_config
    from app.kafka.names import TopicNames

    a, b = gateways
    change = Create({"workflow_id": "direct-1", "name": "d", "tasks": TASKS})("workflow", "direct-1", None, "now")
    ((key, value),) = proposal_records("workflow", "direct-1", change, {}, 0, "gitops-bot", 0)  # a draft: no archive
    doc = orjson.loads(value)
    del doc["audited"]  # written by a tool of its own, not by a ConfigWriter
    producer = Producer(producer_config(settings))
    producer.produce(TopicNames(settings.topic_prefix).config, orjson.dumps(doc), key=key.encode())
    assert producer.flush(10) == 0

    async def entries() -> list[Any]:
        r = await a.http.get(f"{A}/audit-logs", params={"resource_id": "direct-1"}, headers=h("ann"))
        return [e for e in r.json()["data"] if e["details"].get("source") == "direct-write"]

    found = await eventually(entries)
    assert [e["principal"] for e in found] == ["gitops-bot"] and found[0]["action"] == "create"
    # Both gateways wrote one; the listing keeps one per config record.
    r = await b.http.get(f"{A}/audit-logs", params={"resource_id": "direct-1"}, headers=h("ann"))
    assert len([e for e in r.json()["data"] if e["details"].get("source") == "direct-write"]) == 1
    # Writes through the API are audited by their writer only, never again as direct writes.
    r = await a.http.get(f"{A}/audit-logs", params={"resource_id": "pay-1"}, headers=h("ann"))
    assert not [e for e in r.json()["data"] if e["details"].get("source") == "direct-write"]

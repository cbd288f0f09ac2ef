"""Orion's admin API through real HTTP on the real broker (one gateway per module, unique ids per test)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from app.kafka.names import TopicNames
from app.secrets import MASK
from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway
from tests.fixtures.admin_http import err, ok

A = "/api/v1/admin"


def workflow(wid: str | None = None, *, threshold: int = 10000, tags: list[str] | None = None) -> dict[str, Any]:
    """The seed's quick-start workflow (parse, then flag orders above `threshold`)."""
    doc: dict[str, Any] = {
        "name": "High-Value Order",
        "condition": True,
        "tags": tags or [],
        "tasks": [
            {"id": "parse", "name": "Parse payload",
             "function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}}},
            {"id": "flag", "name": "Flag order",
             "condition": {">": [{"var": "data.order.total"}, threshold]},
             "function": {"name": "map", "input": {"mappings": [
                 {"path": "data.order.flagged", "logic": True},
                 {"path": "data.order.alert",
                  "logic": {"cat": ["High-value order: $", {"var": "data.order.total"}]}},
             ]}}},
        ],
    }  # fmt: skip
    if wid is not None:
        doc["workflow_id"] = wid
    return doc


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- lifecycle ----------------------------------------------------------------------------------------
def test_workflow_lifecycle_create_activate_new_version_rollout_archive(http: httpx.Client) -> None:
    wid = uid("life")
    created = ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)["data"]
    assert (created["workflow_id"], created["version"], created["status"]) == (wid, 1, "draft")
    assert created["rollout_percentage"] == 100 and created["tasks"][0]["id"] == "parse"

    active = ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))["data"]
    assert (active["version"], active["status"]) == (1, "active")

    draft = ok(http.post(f"{A}/workflows/{wid}/versions"), 201)["data"]
    assert (draft["version"], draft["status"]) == (2, "draft")
    # The draft is a copy of the latest version; only it can be changed.
    updated = ok(http.put(f"{A}/workflows/{wid}", json=workflow(threshold=500)))["data"]
    assert updated["version"] == 2 and updated["tasks"][1]["condition"] == {">": [{"var": "data.order.total"}, 500]}

    canary = ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active", "rollout_percentage": 10}))
    assert (canary["data"]["version"], canary["data"]["rollout_percentage"]) == (2, 10)
    versions = ok(http.get(f"{A}/workflows/{wid}/versions"))
    assert versions["total"] == 2
    assert [(v["version"], v["status"], v["rollout_percentage"]) for v in versions["data"]] == [
        (2, "active", 10),
        (1, "active", 90),
    ]

    full = ok(http.patch(f"{A}/workflows/{wid}/rollout", json={"rollout_percentage": 100}))["data"]
    assert (full["version"], full["rollout_percentage"]) == (2, 100)
    statuses = {v["version"]: v["status"] for v in ok(http.get(f"{A}/workflows/{wid}/versions"))["data"]}
    assert statuses == {1: "archived", 2: "active"}

    archived = ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "archived"}))["data"]
    assert archived["status"] == "archived"
    assert wid not in [w["workflow_id"] for w in ok(http.get(f"{A}/workflows", params={"status": "active"}))["data"]]
    assert wid in [w["workflow_id"] for w in ok(http.get(f"{A}/workflows", params={"status": "archived"}))["data"]]


def test_create_accepts_id_or_generates_one(http: httpx.Client) -> None:
    wid = uid("alias")
    doc = workflow()
    doc["id"] = wid  # the seed's quick start spells it `id`
    assert ok(http.post(f"{A}/workflows", json=doc), 201)["data"]["workflow_id"] == wid
    generated = ok(http.post(f"{A}/workflows", json=workflow()), 201)["data"]["workflow_id"]
    assert uuid.UUID(generated).version == 4
    assert ok(http.get(f"{A}/workflows/{generated}"))["data"]["name"] == "High-Value Order"


def test_list_filters_by_tag_and_status_and_paginates(http: httpx.Client) -> None:
    tag = uid("tag")
    ids = sorted(uid("tagged") for _ in range(3))
    for wid in ids:
        ok(http.post(f"{A}/workflows", json=workflow(wid, tags=[tag, "common"])), 201)
    ok(http.patch(f"{A}/workflows/{ids[0]}/status", json={"status": "active"}))
    page = ok(http.get(f"{A}/workflows", params={"tag": tag}))
    assert sorted(w["workflow_id"] for w in page["data"]) == ids and page["total"] == 3
    drafts = ok(http.get(f"{A}/workflows", params={"tag": tag, "status": "draft"}))["data"]
    assert sorted(w["workflow_id"] for w in drafts) == ids[1:]
    first = ok(http.get(f"{A}/workflows", params={"tag": tag, "limit": 2, "offset": 0}))
    second = ok(http.get(f"{A}/workflows", params={"tag": tag, "limit": 2, "offset": 2}))
    assert (len(first["data"]), len(second["data"]), first["limit"], second["offset"]) == (2, 1, 2, 2)
    assert {w["workflow_id"] for w in first["data"] + second["data"]} == set(ids)
    err_message(http.get(f"{A}/workflows", params={"status": "paused"}), 400, "BAD_REQUEST")
    err_message(http.get(f"{A}/workflows", params={"limit": 0}), 400, "BAD_REQUEST")


# -- conflicts and not found --------------------------------------------------------------------------
def test_conflicts_existing_id_second_draft_update_of_active_and_stale_if_match(http: httpx.Client) -> None:
    wid = uid("conf")
    v1 = ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)["data"]
    err_message(http.post(f"{A}/workflows", json=workflow(wid)), 409, "CONFLICT")
    err_message(http.post(f"{A}/workflows/{wid}/versions"), 409, "CONFLICT")  # v1 is still a draft

    # Optimistic concurrency over HTTP: a write based on an old revision is refused.
    stale = v1["revision"]
    ok(http.put(f"{A}/workflows/{wid}", json=workflow(threshold=1)))
    msg = err_message(http.put(f"{A}/workflows/{wid}", json=workflow(threshold=2), headers={"If-Match": str(stale)}),
              409, "CONFLICT")  # fmt: skip
    assert "revision" in msg
    current = ok(http.get(f"{A}/workflows/{wid}"))["data"]
    assert current["tasks"][1]["condition"][">"][1] == 1  # the stale write changed nothing
    ok(http.put(f"{A}/workflows/{wid}", json=workflow(threshold=3), headers={"If-Match": str(current["revision"])}))
    err_message(http.put(f"{A}/workflows/{wid}", json=workflow(), headers={"If-Match": "abc"}), 400, "BAD_REQUEST")

    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))
    err_message(http.put(f"{A}/workflows/{wid}", json=workflow()), 409, "CONFLICT")  # only drafts can change


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/workflows/{id}", None),
        ("PUT", "/workflows/{id}", workflow()),
        ("DELETE", "/workflows/{id}", None),
        ("PATCH", "/workflows/{id}/status", {"status": "active"}),
        ("GET", "/workflows/{id}/versions", None),
        ("POST", "/workflows/{id}/versions", None),
        ("PATCH", "/workflows/{id}/rollout", {"rollout_percentage": 50}),
        ("POST", "/workflows/{id}/test", {"data": {}}),
        ("GET", "/channels/{id}", None),
        ("PATCH", "/channels/{id}/status", {"status": "archived"}),
        ("GET", "/connectors/{id}", None),
        ("DELETE", "/connectors/{id}", None),
    ],
)
def test_unknown_id_is_404_not_found(http: httpx.Client, method: str, path: str, body: Any) -> None:
    resp = http.request(method, A + path.format(id=uid("missing")), json=body)
    assert "not found" in err_message(resp, 404, "NOT_FOUND")


def test_delete_removes_all_versions(http: httpx.Client) -> None:
    wid = uid("del")
    ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))
    ok(http.post(f"{A}/workflows/{wid}/versions"), 201)
    assert http.delete(f"{A}/workflows/{wid}").status_code == 204
    err_message(http.get(f"{A}/workflows/{wid}"), 404, "NOT_FOUND")
    err_message(http.get(f"{A}/workflows/{wid}/versions"), 404, "NOT_FOUND")
    # The id is free again.
    assert ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)["data"]["version"] == 1


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_bodies_are_400_or_415_in_the_standard_shape(http: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    assert "JSON" in err_message(http.post(f"{A}/workflows", content=b"{not json", headers=headers), 400, "BAD_REQUEST")
    err_message(http.post(f"{A}/workflows", json=[1, 2]), 400, "BAD_REQUEST")
    err_message(http.post(f"{A}/workflows", content=b"", headers=headers), 400, "BAD_REQUEST")
    err_message(http.post(f"{A}/workflows", content=b"name=x", headers={"content-type": "text/plain"}), 415,
        "UNSUPPORTED_MEDIA_TYPE")  # fmt: skip
    blank = workflow(uid("blank"))
    blank["name"] = "  "
    assert "name" in err_message(http.post(f"{A}/workflows", json=blank), 400, "VALIDATION_ERROR")
    bad_id = workflow("-starts-with-dash")
    assert "invalid workflow id" in err_message(http.post(f"{A}/workflows", json=bad_id), 400, "BAD_REQUEST")

    wid = uid("val")
    ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    err_message(http.patch(f"{A}/workflows/{wid}/status", json={"status": "paused"}), 400, "BAD_REQUEST")
    err_message(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active", "rollout_percentage": 101}), 400,
        "BAD_REQUEST")  # fmt: skip
    err_message(http.patch(f"{A}/workflows/{wid}/rollout", json={"rollout_percentage": 50}), 400, "BAD_REQUEST")
    err_message(http.patch(f"{A}/workflows/{wid}/rollout", json={}), 400, "BAD_REQUEST")
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))
    assert "no draft" in err_message(
        http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}), 400, "BAD_REQUEST"
    )


def test_invalid_workflow_is_refused_at_create_with_the_field_named(http: httpx.Client) -> None:
    doc = workflow(uid("inv"))
    # A validation rule without `message`: Orion accepts it and fails every request with a 500 (quirk 8).
    rules = {"rules": [{"logic": True}]}
    doc["tasks"].append({"id": "check", "name": "Check", "function": {"name": "validation", "input": rules}})
    resp = http.post(f"{A}/workflows", json=doc)
    assert "tasks[2].function.input.rules[0].message" in err_message(resp, 400, "VALIDATION_ERROR")
    assert resp.json()["error"]["details"][0]["field"] == "tasks[2].function.input.rules[0].message"
    err_message(http.get(f"{A}/workflows/{doc['workflow_id']}"), 404, "NOT_FOUND")  # nothing was stored

    report = ok(http.post(f"{A}/workflows/validate", json=doc))
    assert report["valid"] is False
    assert [e["field"] for e in report["errors"]] == ["tasks[2].function.input.rules[0].message"]
    assert ok(http.post(f"{A}/workflows/validate", json=workflow()))["valid"] is True
    no_name = workflow()
    del no_name["name"]
    assert any(e["field"] == "name" for e in ok(http.post(f"{A}/workflows/validate", json=no_name))["errors"])


# -- dry run ------------------------------------------------------------------------------------------
def test_dry_run_on_a_draft_returns_the_step_trace(http: httpx.Client) -> None:
    wid = uid("dry")
    ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    high = ok(http.post(f"{A}/workflows/{wid}/test", json={"data": {"order_id": "A", "total": 25000}}))
    assert high["matched"] is True
    assert [(s["task_id"], s["result"]) for s in high["trace"]["steps"]] == [
        ("parse", "executed"),
        ("flag", "executed"),
    ]
    assert high["output"]["order"] == {"order_id": "A", "total": 25000, "flagged": True,
                                       "alert": "High-value order: $25000"}  # fmt: skip
    low = ok(http.post(f"{A}/workflows/{wid}/test", json={"data": {"order_id": "B", "total": 5}}))
    assert [(s["task_id"], s["result"]) for s in low["trace"]["steps"]] == [
        ("parse", "executed"),
        ("flag", "skipped"),
    ]
    assert "flagged" not in low["output"]["order"]
    # Still a draft: a dry run does not activate anything.
    assert ok(http.get(f"{A}/workflows/{wid}"))["data"]["status"] == "draft"
    err_message(http.post(f"{A}/workflows/{wid}/test", json={"data": {}, "metadata": [1]}), 400, "BAD_REQUEST")


# -- channels -----------------------------------------------------------------------------------------
def test_channel_lifecycle_binds_workflows_and_activation_creates_its_topic(
    http: httpx.Client, module_settings: Settings, kafka_admin: AdminClient
) -> None:
    wids = [uid("cw"), uid("cw")]
    for wid in wids:
        ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    cid = uid("chan")
    body = {"channel_id": cid, "name": cid, "channel_type": "sync", "protocol": "http",
            "route_pattern": f"/{cid}", "methods": ["POST"], "workflow_ids": wids}  # fmt: skip
    created = ok(http.post(f"{A}/channels", json=body), 201)["data"]
    assert (created["status"], created["workflow_ids"]) == ("draft", wids)
    topic = TopicNames(module_settings.topic_prefix).channel(cid)
    assert topic not in kafka_admin.list_topics(timeout=10).topics

    ok(http.patch(f"{A}/channels/{cid}/status", json={"status": "active"}))
    md = kafka_admin.list_topics(timeout=10).topics
    assert topic in md and len(md[topic].partitions) == module_settings.default_partitions
    assert cid in ok(http.get(f"{A}/engine/status"))["channels"]

    ok(http.post(f"{A}/channels/{cid}/versions"), 201)
    ok(http.put(f"{A}/channels/{cid}", json={**body, "workflow_ids": wids[:1]}))
    ok(http.patch(f"{A}/channels/{cid}/status", json={"status": "active"}))
    versions = ok(http.get(f"{A}/channels/{cid}/versions"))["data"]
    assert [(v["version"], v["status"]) for v in versions] == [(2, "active"), (1, "archived")]
    listed = ok(http.get(f"{A}/channels", params={"status": "active", "protocol": "http"}))["data"]
    assert cid in [c["channel_id"] for c in listed]
    assert cid not in [c["channel_id"] for c in ok(http.get(f"{A}/channels", params={"protocol": "kafka"}))["data"]]
    ok(http.patch(f"{A}/channels/{cid}/status", json={"status": "archived"}))
    assert cid not in ok(http.get(f"{A}/engine/status"))["channels"]


# -- connectors ---------------------------------------------------------------------------------------
SECRET_CONNECTOR = {
    "connector_type": "http",
    "config": {
        "type": "http",
        "url": "https://api.example.com/v1",
        "auth": {"type": "bearer", "token": "sk-live-secret-token"},
        "password": "env://PAYMENTS_PASSWORD",
        "upstreams": [{"name": "x", "api_key": "k-123"}],
        "nested": {"deeper": {"secret": "s3cr3t", "connection_string": "postgres://u:p@h/db", "key": "raw-key"}},
    },
}
PLAIN_SECRETS = ("sk-live-secret-token", "k-123", "s3cr3t", "postgres://u:p@h/db", "raw-key")


def test_connector_secrets_are_masked_at_any_depth_in_every_response(http: httpx.Client, gateway: AdminGateway
                                                                      ) -> None:  # fmt: skip
    name = uid("pay")
    created = http.post(f"{A}/connectors", json={"name": name, **SECRET_CONNECTOR})
    answers = [
        created,
        http.get(f"{A}/connectors/{name}"),
        http.get(f"{A}/connectors"),
        http.get(f"{A}/connectors/export"),
        http.get(f"{A}/backup"),
    ]
    for resp in answers:
        assert resp.status_code in (200, 201), resp.text
        assert not any(s in resp.text for s in PLAIN_SECRETS), resp.text
    cfg = created.json()["data"]["config"]
    assert cfg["auth"]["token"] == MASK and cfg["upstreams"][0]["api_key"] == MASK
    assert cfg["nested"]["deeper"] == {"secret": MASK, "connection_string": MASK, "key": MASK}
    assert cfg["password"] == "env://PAYMENTS_PASSWORD"  # a reference, not a secret: kept as written
    assert cfg["url"] == "https://api.example.com/v1"

    # GET -> edit -> PUT keeps the stored secrets (the mask is not the secret).
    edited = copy.deepcopy(created.json()["data"])
    edited["config"]["url"] = "https://api.example.com/v2"
    updated = ok(http.put(f"{A}/connectors/{name}", json=edited))["data"]
    assert updated["version"] == 2 and updated["config"]["url"].endswith("/v2")
    stored = gateway.app.state.config_reader.state.get("connector", name)
    latest = stored.versions[stored.latest]["config"]
    assert latest["auth"]["token"] == "sk-live-secret-token"
    assert latest["nested"]["deeper"]["key"] == "raw-key" and "revision" not in stored.versions[stored.latest]
    assert http.delete(f"{A}/connectors/{name}").status_code == 204
    err_message(http.get(f"{A}/connectors/{name}"), 404, "NOT_FOUND")


# -- import / export, backup / restore ------------------------------------------------------------------
def test_export_import_round_trip(http: httpx.Client) -> None:
    tag = uid("gitops")
    ids = [uid("exp") for _ in range(3)]
    for i, wid in enumerate(ids):
        ok(http.post(f"{A}/workflows", json=workflow(wid, threshold=100 * i, tags=[tag])), 201)
    ok(http.patch(f"{A}/workflows/{ids[0]}/status", json={"status": "active"}))
    exported = ok(http.get(f"{A}/workflows/export", params={"tag": tag}))
    assert sorted(w["workflow_id"] for w in exported["data"]) == sorted(ids)
    active = ok(http.get(f"{A}/workflows/export", params={"tag": tag, "status": "active"}))["data"]
    assert [w["workflow_id"] for w in active] == [ids[0]]

    # Importing into a config that has them: every one is a conflict, nothing changes.
    again = ok(http.post(f"{A}/workflows/import", json=exported))
    assert (again["imported"], again["failed"]) == (0, 3)
    assert {e["code"] for e in again["errors"]} == {"CONFLICT"}

    for wid in ids:
        assert http.delete(f"{A}/workflows/{wid}").status_code == 204
    result = ok(http.post(f"{A}/workflows/import", json=exported["data"]))
    assert (result["imported"], result["failed"], result["errors"]) == (3, 0, [])
    for original in exported["data"]:
        back = ok(http.get(f"{A}/workflows/{original['workflow_id']}"))["data"]
        assert back["status"] == "draft" and back["version"] == 1  # imported as drafts
        for field in ("name", "condition", "tasks", "tags"):
            assert back[field] == original[field]
    err_message(http.post(f"{A}/workflows/import", json={"nope": 1}), 400, "BAD_REQUEST")
    partial = ok(http.post(f"{A}/workflows/import", json=[workflow(uid("imp")), {"name": ""}, 7]))
    assert (partial["imported"], partial["failed"]) == (1, 2)
    assert [e["index"] for e in partial["errors"]] == [1, 2]


def test_backup_restore_round_trip_of_the_whole_config(settings: Settings) -> None:
    # Its own gateway and topics: restore replaces the whole config.
    with admin_gateway(settings) as gw, httpx.Client(base_url=gw.url, timeout=60) as http:
        ok(http.post(f"{A}/workflows", json=workflow("keep")), 201)
        ok(http.patch(f"{A}/workflows/keep/status", json={"status": "active"}))
        ok(http.post(f"{A}/workflows/keep/versions"), 201)
        ok(http.post(f"{A}/channels", json={"channel_id": "orders", "name": "orders", "channel_type": "sync",
                                            "protocol": "http", "route_pattern": "/orders",
                                            "workflow_id": "keep"}), 201)  # fmt: skip
        ok(http.post(f"{A}/connectors", json={"name": "db", "connector_type": "db",
                                              "config": {"type": "db", "connection_string": "env://DB_URL"}}),
           201)  # fmt: skip
        backup = ok(http.post(f"{A}/backup"))
        assert {k: n for k, n in backup["counts"].items() if n} == {"workflow": 1, "channel": 1, "connector": 1}
        before = {(o["kind"], o["id"]): o["versions"] for o in backup["objects"]}
        assert set(before["workflow", "keep"]) == {"1", "2"}

        # Change everything: delete, edit, add.
        assert http.delete(f"{A}/channels/orders").status_code == 204
        ok(http.put(f"{A}/workflows/keep", json=workflow(threshold=1)))
        ok(http.post(f"{A}/workflows", json=workflow("extra")), 201)

        result = ok(http.post(f"{A}/restore", json=backup))
        # The connector was not touched: restoring it is a no-op, nothing is written for it.
        assert (result["restored"], result["unchanged"], result["deleted"]) == (2, 1, 1)
        after = ok(http.get(f"{A}/backup"))
        assert {(o["kind"], o["id"]): o["versions"] for o in after["objects"]} == before
        err_message(http.get(f"{A}/workflows/extra"), 404, "NOT_FOUND")
        assert ok(http.get(f"{A}/channels/orders"))["data"]["workflow_id"] == "keep"

        # A restore of the same backup changes nothing; bad backups are refused before any write.
        assert ok(http.post(f"{A}/restore", json=backup))["unchanged"] == 3
        err_message(http.post(f"{A}/restore", json={"objects": "x"}), 400, "BAD_REQUEST")
        broken = copy.deepcopy(backup)
        broken["objects"][0]["versions"]["1"]["status"] = "paused"
        err_message(http.post(f"{A}/restore", json=broken), 400, "BAD_REQUEST")
        assert {(o["kind"], o["id"]): o["versions"] for o in ok(http.get(f"{A}/backup"))["objects"]} == before


# -- engine, audit ------------------------------------------------------------------------------------
def test_engine_status_and_reload(http: httpx.Client) -> None:
    wid = uid("eng")
    before = ok(http.get(f"{A}/engine/status"))
    ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))
    after = ok(http.get(f"{A}/engine/status"))
    assert after["active_workflows"] == before["active_workflows"] + 1
    assert after["workflows_count"] == before["workflows_count"] + 1
    assert after["config_offset"] > before["config_offset"]
    assert after["instance"] == "pytest"
    reloaded = ok(http.post(f"{A}/engine/reload"))
    assert reloaded["reloaded"] is True and reloaded["active_workflows"] == after["active_workflows"]


def test_audit_log_lists_every_change_with_principal_and_filters(http: httpx.Client) -> None:
    wid = uid("aud")
    ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))
    ok(http.post(f"{A}/workflows/{wid}/versions"), 201)
    entries = ok(http.get(f"{A}/audit-logs", params={"resource_id": wid}))["data"]
    assert [e["action"] for e in entries] == ["new_version", "activate", "create"]  # newest first
    assert all(e["resource_type"] == "workflow" and e["principal"].startswith("anonymous@") for e in entries)
    assert entries[1]["details"]["after"]["1"]["status"] == "active"
    only = ok(http.get(f"{A}/audit-logs", params={"resource_id": wid, "action": "activate"}))
    assert [e["action"] for e in only["data"]] == ["activate"] and only["total"] == 1


def err_message(resp: httpx.Response, status: int, code: str) -> str:
    return str(err(resp, status, code)["message"])

"""Issue 15: admin-API defects found running Orion's user guide (seed 004), through real HTTP on the
real broker. Each test failed before its fix."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.secrets import MASK
from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway
from tests.fixtures.admin_http import err, ok

A = "/api/v1/admin"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def workflow(wid: str, **extra: Any) -> dict[str, Any]:
    return {
        "workflow_id": wid,
        "name": wid,
        "tasks": [
            {"id": "parse", "name": "parse",
             "function": {"name": "parse_json", "input": {"source": "payload", "target": "req"}}},
        ],
        **extra,
    }  # fmt: skip


def http_connector(name: str, token: str = "sk-live-secret", url: str = "https://api.example.com") -> dict[str, Any]:
    return {
        "name": name,
        "connector_type": "http",
        "config": {"type": "http", "url": url, "auth": {"type": "bearer", "token": token}},
    }


# -- defect 1: a restore never writes a masked secret ------------------------------------------------
def test_restore_refuses_a_masked_secret_with_nothing_stored_and_lists_it(settings: Settings) -> None:
    with admin_gateway(settings) as gw, httpx.Client(base_url=gw.url, timeout=60) as http:
        ok(http.post(f"{A}/connectors", json=http_connector("payments")), 201)
        backup = ok(http.post(f"{A}/backup"))
        assert http.delete(f"{A}/connectors/payments").status_code == 204

        error = err(http.post(f"{A}/restore", json=backup), 400, "VALIDATION_ERROR")
        assert error["details"] == {"masked_secrets": ["connector/payments v1.config.auth.token"]}
        assert "re-enter" in error["message"]
        # Nothing was written: the connector is still gone (never stored with "******" as its token).
        err(http.get(f"{A}/connectors/payments"), 404, "NOT_FOUND")

        # With the secret re-entered in the file, the restore goes through.
        entry = next(o for o in backup["objects"] if o["id"] == "payments")
        entry["versions"]["1"]["config"]["auth"]["token"] = "sk-re-entered"
        assert ok(http.post(f"{A}/restore", json=backup))["restored"] == 1


def test_restore_keeps_the_stored_secret_behind_a_mask(http: httpx.Client, gateway: AdminGateway) -> None:
    name = uid("keep")
    ok(http.post(f"{A}/connectors", json=http_connector(name)), 201)
    backup = ok(http.post(f"{A}/backup"))
    ok(http.post(f"{A}/restore", json=backup))
    reader = gateway.app.state.config_reader
    stored = reader.state.get("connector", name)
    assert stored.versions[stored.latest]["config"]["auth"]["token"] == "sk-live-secret"


# -- defect 4: bulk import ?dry_run=true -----------------------------------------------------------
def test_import_dry_run_reports_every_item_and_writes_nothing(http: httpx.Client) -> None:
    existing, fresh = uid("wf"), uid("wf")
    ok(http.post(f"{A}/workflows", json=workflow(existing)), 201)
    bad = workflow(uid("wf"), tasks=[{"id": "x", "name": "x", "function": {"name": "map", "input": {}}}])
    batch = [workflow(fresh), workflow(existing), bad, workflow(fresh)]
    report = ok(http.post(f"{A}/workflows/import", params={"dry_run": "true"}, json=batch))
    assert report["dry_run"] is True and (report["imported"], report["valid"], report["failed"]) == (0, 1, 3)
    assert [(i["index"], i["ok"]) for i in report["items"]] == [(0, True), (1, False), (2, False), (3, False)]
    assert [e["code"] for e in report["errors"]] == ["CONFLICT", "VALIDATION_ERROR", "CONFLICT"]
    err(http.get(f"{A}/workflows/{fresh}"), 404, "NOT_FOUND")


def test_import_dry_run_of_channels_and_connectors_writes_and_activates_nothing(http: httpx.Client) -> None:
    channel, connector = uid("ch"), uid("conn")
    report = ok(
        http.post(
            f"{A}/channels/import",
            params={"dry_run": "true"},
            json=[{"channel_id": channel, "name": channel, "workflow_id": "w"}, {"name": ""}],
        )
    )
    assert (report["valid"], report["failed"]) == (1, 1)
    err(http.get(f"{A}/channels/{channel}"), 404, "NOT_FOUND")
    report = ok(
        http.post(
            f"{A}/connectors/import",
            params={"dry_run": "true"},
            json=[http_connector(connector), http_connector(uid("conn"), url="ftp://files.example.com")],
        )
    )
    assert (report["valid"], report["failed"]) == (1, 1)
    assert "url must be an absolute http" in report["errors"][0]["error"]
    err(http.get(f"{A}/connectors/{connector}"), 404, "NOT_FOUND")
    # Without dry_run the valid ones are created (and the connector is active at once).
    report = ok(http.post(f"{A}/connectors/import", json=[http_connector(connector)]))
    assert report["imported"] == 1 and ok(http.get(f"{A}/connectors/{connector}"))["data"]["status"] == "active"


# -- defect 7: connector validation ---------------------------------------------------------------
@pytest.mark.parametrize("url", ["not a url", "ftp://files.example.com/x"])
def test_a_connector_url_that_is_not_http_is_refused_at_creation(http: httpx.Client, url: str) -> None:
    error = err(http.post(f"{A}/connectors", json=http_connector(uid("bad"), url=url)), 400, "VALIDATION_ERROR")
    assert "url must be an absolute http" in error["message"]


def test_validate_reports_unknown_connectors_as_warnings_and_wrong_types_as_errors(http: httpx.Client) -> None:
    name = uid("api")
    ok(http.post(f"{A}/connectors", json=http_connector(name)), 201)
    doc = workflow(
        uid("wf"),
        tasks=[
            {"id": "read", "name": "read",
             "function": {"name": "db_read", "input": {"connector": name, "query": "SELECT 1"}}},
            {"id": "call", "name": "call",
             "function": {"name": "http_call", "input": {"connector": "nowhere", "path": "/x"}}},
        ],
    )  # fmt: skip
    report = ok(http.post(f"{A}/workflows/validate", json=doc))
    assert report["valid"] is False
    assert [e["field"] for e in report["errors"]] == ["tasks[0].function.input.connector"]
    assert "of type http, expected db" in report["errors"][0]["message"]
    assert [w["field"] for w in report["warnings"]] == ["tasks[1].function.input.connector"]
    assert "'nowhere' not found" in report["warnings"][0]["message"]


# -- defect 12: CLI/admin details -------------------------------------------------------------------
def test_validate_of_an_empty_document_reports_name_once(http: httpx.Client) -> None:
    report = ok(http.post(f"{A}/workflows/validate", json={}))
    assert report["valid"] is False
    assert [e["field"] for e in report["errors"]].count("name") == 1


def test_an_archived_version_takes_no_rollout_share(http: httpx.Client) -> None:
    wid = uid("roll")
    ok(http.post(f"{A}/workflows", json=workflow(wid)), 201)
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"}))
    ok(http.post(f"{A}/workflows/{wid}/versions"), 201)
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active", "rollout_percentage": 30}))
    ok(http.patch(f"{A}/workflows/{wid}/rollout", json={"rollout_percentage": 100}))
    v1 = ok(http.get(f"{A}/workflows/{wid}", params={"version": 1}))["data"]
    assert (v1["status"], v1["rollout_percentage"]) == ("archived", 0)
    ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "archived"}))
    v2 = ok(http.get(f"{A}/workflows/{wid}", params={"version": 2}))["data"]
    assert (v2["status"], v2["rollout_percentage"]) == ("archived", 0)


def test_masked_connector_read_back(http: httpx.Client) -> None:
    name = uid("masked")
    ok(http.post(f"{A}/connectors", json=http_connector(name)), 201)
    assert ok(http.get(f"{A}/connectors/{name}"))["data"]["config"]["auth"]["token"] == MASK


# -- defect 9: a channel that no request could reach is refused at write ------------------------------
@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/orders/{id", "must be literal text or one whole"),
        ("/a//b", "empty segment"),
        ("/orders/{id}/{id}", "repeats the parameter"),
        ("/orders/async", "reserved"),
    ],
)
def test_an_invalid_route_pattern_is_refused_at_write(http: httpx.Client, pattern: str, reason: str) -> None:
    cid = uid("route")
    doc = {"channel_id": cid, "name": cid, "protocol": "rest", "route_pattern": pattern, "workflow_id": "w"}
    error = err(http.post(f"{A}/channels", json=doc), 400, "VALIDATION_ERROR")
    assert reason in error["message"]


def test_channel_methods_must_be_http_methods(http: httpx.Client) -> None:
    cid = uid("meth")
    doc = {"channel_id": cid, "name": cid, "route_pattern": "/m", "methods": ["post", "FETCH"], "workflow_id": "w"}
    assert "FETCH" in err(http.post(f"{A}/channels", json=doc), 400, "VALIDATION_ERROR")["message"]


# -- missing feature: GET /api/v1/admin/functions -----------------------------------------------------
ORION_FUNCTIONS = {
    "parse_json", "parse_xml", "filter", "map", "validation", "publish_json", "publish_xml", "log",
    "http_call", "channel_call", "db_read", "db_write", "cache_read", "cache_write", "mongo_read", "publish_kafka",
}  # fmt: skip


def test_functions_lists_every_builtin_with_its_input_schema(http: httpx.Client) -> None:
    body = ok(http.get(f"{A}/functions"))
    by_name = {f["name"]: f for f in body["data"]}
    assert set(by_name) >= ORION_FUNCTIONS and body["total"] == len(body["data"])
    for name in ORION_FUNCTIONS:
        assert by_name[name]["source"] == "builtin" and by_name[name]["input_schema"]["type"] == "object"
    assert by_name["http_call"]["input_schema"]["required"] == ["connector"]
    assert by_name["http_call"]["side_effects"] is True and by_name["map"]["side_effects"] is False
    assert by_name["map"]["input_schema"]["required"] == ["mappings"]


def test_a_plugin_function_keeps_its_declared_schema() -> None:
    from app.engine.functions.schemas import input_schema_of

    declared = {"type": "object", "required": ["amount"]}
    assert input_schema_of("my_plugin", declared) == declared
    assert input_schema_of("my_plugin") == {"type": "object"}
    assert input_schema_of("map")["required"] == ["mappings"]


@pytest.mark.parametrize("section", ["cache", "deduplication"])
def test_a_channel_state_connector_is_refused_not_silently_ignored(http: httpx.Client, section: str) -> None:
    cid = uid("state")
    config = {section: {"connector": "session-cache", **({"enabled": True} if section == "cache" else {})}}
    doc = {"channel_id": cid, "name": cid, "workflow_id": "w", "config": config}
    error = err(http.post(f"{A}/channels", json=doc), 400, "VALIDATION_ERROR")
    assert f"{section}.connector is not supported" in error["message"] and "QUASAR_REDIS_URL" in error["message"]

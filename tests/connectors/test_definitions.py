"""Connector documents: the examples in connectors/, secret handling, reference checks, dry-run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.connectors import (
    ConnectorServices,
    check_connector_references,
    connector_functions,
    connector_registry,
    mask_secrets,
    resolve_secrets,
)
from app.engine.compiler import compile_workflow
from app.engine.dryrun import dry_run_async
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.engine.models import ConnectorDoc
from app.secrets import SecretMissing
from tests.connectors.servers import HttpTestServer

EXAMPLES = sorted((Path(__file__).parents[2] / "connectors").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_connectors_are_valid_and_keep_secrets_out(path: Path) -> None:
    raw = json.loads(path.read_text())
    doc = ConnectorDoc.model_validate(raw)
    assert doc.name == path.stem
    text = path.read_text()
    for field in ("token", "password", "connection_string", "key"):
        for line in text.splitlines():
            if f'"{field}"' in line:
                assert "env://" in line, f"{path.name}: {field} must be an env:// reference"


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5


def test_secrets_resolve_without_touching_the_document() -> None:
    doc = {"auth": {"token": "env://T"}, "list": ["env://U", "plain"]}
    assert resolve_secrets(doc, {"T": "t", "U": "u"}) == {"auth": {"token": "t"}, "list": ["u", "plain"]}
    assert doc["auth"]["token"] == "env://T"
    with pytest.raises(SecretMissing, match="'MISSING'"):
        resolve_secrets({"a": "env://MISSING"}, {})


def test_masking_covers_every_depth_and_keeps_references() -> None:
    masked = mask_secrets(
        {
            "config": {
                "auth": {"token": "sk-live", "key": "k"},
                "connection_string": "pg://u:p@h/db",
                "nested": [{"api_key": "x", "secret": "y", "password": "env://PW"}],
            }
        }
    )
    cfg = masked["config"]
    assert cfg["auth"] == {"token": "******", "key": "******"}
    assert cfg["connection_string"] == "******"
    assert cfg["nested"] == [{"api_key": "******", "secret": "******", "password": "env://PW"}]


CONNECTORS = {
    "1": {"name": "api", "connector_type": "http", "config": {"url": "https://x.test"}},
    "2": {
        "name": "pg",
        "connector_type": "db",
        "config": {"connection_string": "env://X", "driver": "postgres"},
    },
    "3": {
        "name": "mongo",
        "connector_type": "db",
        "config": {"connection_string": "env://M", "driver": "mongodb"},
    },
    "4": {"name": "off", "connector_type": "cache", "enabled": False, "config": {"backend": "memory"}},
}


def task(fn: str, **inp: Any) -> dict[str, Any]:
    return {"id": fn, "name": fn, "function": {"name": fn, "input": inp}}


def test_unknown_disabled_and_mistyped_connectors_are_reported_at_validation() -> None:
    doc = {
        "name": "w",
        "tasks": [
            task("http_call", connector="api"),
            task("http_call", connector="typo"),
            task("db_read", connector="mongo", query="SELECT 1"),
            task("mongo_read", connector="pg", database="d", collection="c"),
            task("cache_read", connector="off", key="k"),
            task("db_write", connector="api", query="x"),
            task("publish_kafka", connector="pg", topic="t"),
        ],
    }
    errors = check_connector_references(doc, CONNECTORS)
    by_field = {e["field"]: e["message"] for e in errors}
    assert "tasks[0].function.input.connector" not in by_field
    assert by_field["tasks[1].function.input.connector"] == "connector 'typo' not found; known http connectors: api"
    assert "driver mongodb; db_read needs" in by_field["tasks[2].function.input.connector"]
    assert "driver postgres; mongo_read needs mongodb" in by_field["tasks[3].function.input.connector"]
    assert "is disabled" in by_field["tasks[4].function.input.connector"]
    assert "of type http, expected db" in by_field["tasks[5].function.input.connector"]
    assert "no kafka connector exists" in by_field["tasks[6].function.input.connector"]
    assert len(errors) == 6


def test_invalid_connector_documents_are_named_in_errors() -> None:
    svc = ConnectorServices({"x": {"name": "broken", "connector_type": "http", "config": {}}})
    with pytest.raises(Exception, match="connector 'broken' is invalid"):
        svc.connector("broken")


def test_connector_functions_replace_the_placeholders() -> None:
    registry = connector_registry()
    for spec in connector_functions():
        registered = registry.get(spec.name)
        assert registered is not None and registered.needs_runtime is False
        assert spec.side_effects is True  # dry-run swaps every one of them for a recorder


async def test_dry_run_services_record_and_perform_no_io(http_server: HttpTestServer, tmp_path: Path) -> None:
    live = ConnectorServices(
        {
            "h": {
                "name": "api",
                "connector_type": "http",
                "config": {"url": http_server.url, "allow_private_urls": True},
            },
            "d": {
                "name": "db",
                "connector_type": "db",
                "config": {"connection_string": f"sqlite:///{tmp_path}/x.db", "driver": "sqlite"},
            },
            "c": {"name": "cache", "connector_type": "cache", "config": {"backend": "memory"}},
            "k": {"name": "bus", "connector_type": "kafka", "config": {}},
        }
    )
    svc = live.dry()
    wf = compile_workflow(
        {
            "workflow_id": "w",
            "name": "w",
            "tasks": [
                {
                    "id": "p",
                    "name": "p",
                    "function": {"name": "parse_json", "input": {"source": "payload", "target": "in"}},
                },
                task(
                    "http_call",
                    connector="api",
                    method="POST",
                    path_logic={"cat": ["/echo/", {"var": "data.in.id"}]},
                    body_logic={"id": {"var": "data.in.id"}},
                ),
                task(
                    "db_write",
                    connector="db",
                    query="INSERT INTO t VALUES ($1)",
                    params=[{"var": "data.in.id"}],
                ),
                task("cache_write", connector="cache", key={"var": "data.in.id"}, value={"var": "data.in"}),
                task("publish_kafka", connector="bus", topic="events"),
            ],
        },
        connector_registry(),
    )
    calls: list[dict[str, Any]] = []
    msg = Message.from_request({"id": "o1"})
    await Engine({"ch": [wf]}).process("ch", msg, RunOptions(services=svc, calls=calls))
    assert [c["function"] for c in calls] == ["http_call", "db_write", "cache_write", "publish_kafka"]
    assert calls[0]["input"]["path"] == "/echo/o1" and calls[0]["input"]["body"] == {"id": "o1"}
    assert calls[1]["input"] == {"query": "INSERT INTO t VALUES ($1)", "params": ["o1"]}
    assert calls[2]["input"]["value"] == '{"id":"o1"}'
    assert http_server.hits["/echo/o1"] == 0
    assert not (tmp_path / "x.db").exists()
    assert live._clients == {}  # no client was even created


async def test_engine_dry_run_uses_recorders_for_connector_functions(http_server: HttpTestServer) -> None:
    wf = compile_workflow(
        {"workflow_id": "w", "name": "w", "tasks": [task("http_call", connector="api", path="/echo/x")]},
        connector_registry(),
    )
    report = await dry_run_async(wf, {}, {})
    assert http_server.hits["/echo/x"] == 0
    assert "http_call" in json.dumps(report)

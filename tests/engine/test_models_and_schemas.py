"""Document models (admin-API shape) and the generated JSON Schemas kept in sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from app.engine import ChannelDoc, ConnectorDoc, WorkflowDoc
from app.engine.schema_export import SCHEMA_DIR, render_schemas

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_schema_files_are_in_sync_with_the_models() -> None:
    for name, text in render_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists() and path.read_text() == text, (
            f"{path} is out of date: run `python -m app.engine.schema_export`"
        )


def test_example_documents_validate_against_the_schemas() -> None:
    import json

    schemas = {k: json.loads(v) for k, v in render_schemas().items()}
    for f in EXAMPLES.glob("*.json"):
        bundle = json.loads(f.read_text())
        for wf in bundle["workflows"]:
            jsonschema.validate(wf, schemas["workflow.schema.json"])
        for ch in bundle["channels"]:
            jsonschema.validate(ch, schemas["channel.schema.json"])


def test_workflow_managed_fields_default() -> None:
    wf = WorkflowDoc.model_validate(
        {
            "workflow_id": "w",
            "name": "n",
            "tasks": [{"id": "t", "name": "t", "function": {"name": "log", "input": {"message": "x"}}}],
        }
    )
    assert (wf.version, wf.status, wf.rollout_percentage, wf.priority) == (1, "draft", 100, 0)
    assert wf.condition is True and wf.tasks[0].condition is True


@pytest.mark.parametrize("bad", [{"status": "live"}, {"rollout_percentage": 101}, {"version": 0}])
def test_workflow_managed_fields_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkflowDoc.model_validate(
            {
                "workflow_id": "w",
                "name": "n",
                "tasks": [{"id": "t", "name": "t", "function": {"name": "log"}}],
                **bad,
            }
        )


def test_channel_binds_one_or_many_workflows_and_accepts_orion_aliases() -> None:
    ch = ChannelDoc.model_validate(
        {
            "name": "orders",
            "workflow_id": "a",
            "workflow_ids": ["b", "a"],
            "config": {"timeout_ms": 500, "deduplication": {"retention_secs": 60}},
        }
    )
    assert ch.bound_workflow_ids == ["a", "b"] and ch.id == "orders"
    assert ch.config.deduplication is not None and ch.config.deduplication.window_secs == 60


def test_unknown_channel_settings_are_rejected_with_their_path() -> None:
    with pytest.raises(ValidationError) as err:
        ChannelDoc.model_validate({"name": "x", "config": {"timeout_ms": 5, "custom": {"x": 1}}})
    assert [e["loc"] for e in err.value.errors()] == [("config", "custom")]


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "r", "protocol": "rest"},
        {"name": "x", "channel_type": "batch"},
        {"name": "x", "config": {"rate_limit": {"requests_per_second": 0}}},
        {"name": "x", "config": {"backpressure": {"max_concurrent": 0}}},
        {"name": "bad name"},
        {"name": "x", "config": {"api_key": ["k"]}},
        {"name": "x", "config": {"failure_mod": "fail_closed"}},
        {"name": "x", "config": {"rate_limit": {"requests_per_second": 1, "brust": 2}}},
        {"name": "x", "workflow": "w"},
        {"name": "x", "methods": ["FETCH"]},
        {"name": "x", "topic": "not a topic"},
        {"name": "x", "config": {"tracing": "sometimes"}},
        {"name": "x", "config": {"output": "bad topic"}},
        {"name": "x", "config": {"envelope": "avro"}},
    ],
)
def test_bad_channels_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChannelDoc.model_validate(bad)


def test_connector_shapes_from_the_seed_and_secret_masking() -> None:
    http = ConnectorDoc.model_validate(
        {
            "name": "payments-api",
            "connector_type": "http",
            "config": {
                "type": "http",
                "url": "https://api.example.com/v1",
                "auth": {"type": "bearer", "token": "sk-1"},
                "headers": {"x-source": "orion"},
                "retry": {"max_retries": 3, "retry_delay_ms": 1000},
            },
        }
    )
    db = ConnectorDoc.model_validate(
        {
            "name": "orders-db",
            "connector_type": "db",
            "config": {"connection_string": "postgres://u:p@h/db", "driver": "postgres"},
        }
    )
    cache = ConnectorDoc.model_validate({"name": "c", "connector_type": "cache", "config": {"backend": "memory"}})
    assert http.masked()["config"]["auth"]["token"] == "******"
    assert db.masked()["config"]["connection_string"] == "******"
    assert cache.config.type == "cache"


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "connector_type": "http", "config": {"type": "db", "connection_string": "x"}},
        {"name": "x", "connector_type": "cache", "config": {"backend": "redis"}},
        {"name": "x", "connector_type": "http", "config": {}},
        {"name": "x", "connector_type": "ftp", "config": {}},
    ],
)
def test_bad_connectors_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConnectorDoc.model_validate(bad)

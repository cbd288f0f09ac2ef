"""Issue 15 (defect 7): http connector validation and defaults as Orion documents them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.connectors import ConnectorServices, connector_registry
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.engine.models import ConnectorDoc
from app.errors import ValidationFailed
from app.secrets import SecretMissing
from tests.connectors.servers import HttpTestServer

REGISTRY = connector_registry()


def _http(url: str, **config: Any) -> dict[str, Any]:
    cfg = {"url": url, "allow_private_urls": True, "retry": {"max_retries": 0, "retry_delay_ms": 10}, **config}
    return {"name": "api", "connector_type": "http", "config": cfg}


async def _run(services: ConnectorServices, fn: str = "http_call", **inp: Any) -> Message:
    wf = compile_workflow(
        {
            "workflow_id": "wf",
            "name": "wf",
            "tasks": [{"id": "call", "name": "call", "function": {"name": fn, "input": {"connector": "api", **inp}}}],
        },
        REGISTRY,
    )
    return await Engine({"ch": [wf]}).process("ch", Message.from_request({}, None), RunOptions(services=services))


@pytest.mark.parametrize("url", ["not a url", "ftp://files.example.com/x", "https://", "http:// spaced.example"])
def test_http_connector_url_must_be_absolute_http_or_https(url: str) -> None:
    with pytest.raises(ValidationError, match="url must be an absolute http"):
        ConnectorDoc.model_validate(_http(url))


def test_http_connector_method_must_be_an_http_method() -> None:
    with pytest.raises(ValidationError, match="method must be one of"):
        ConnectorDoc.model_validate(_http("https://api.example.com", method="FETCH"))
    assert ConnectorDoc.model_validate(_http("https://api.example.com", method="post")).config.method == "post"


async def test_http_call_without_method_uses_the_connector_default_method(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({"api": _http(http_server.url, method="POST")})
    out = await _run(svc, path="/echo/x", response_path="data.reply")
    assert out.data["reply"]["method"] == "POST"
    # The task's own method still wins.
    out = await _run(svc, path="/echo/x", method="PUT", response_path="data.reply")
    assert out.data["reply"]["method"] == "PUT"
    await svc.aclose()


async def test_http_call_without_any_method_is_a_get(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({"api": _http(http_server.url)})
    out = await _run(svc, path="/echo/x", response_path="data.reply")
    assert out.data["reply"]["method"] == "GET"
    await svc.aclose()


async def test_a_connector_of_the_wrong_type_is_a_validation_error_not_a_500() -> None:
    svc = ConnectorServices({"api": _http("https://api.example.com")})
    with pytest.raises(ValidationFailed, match="of type http, expected db") as info:
        await _run(svc, "db_read", query="SELECT 1")
    assert info.value.status == 400
    await svc.aclose()


async def test_an_unset_env_reference_names_the_variable() -> None:
    svc = ConnectorServices(
        {"api": _http("https://api.example.com", auth={"type": "bearer", "token": "env://QUASAR_TEST_UNSET_TOKEN"})},
        env={},
    )
    with pytest.raises(SecretMissing, match="QUASAR_TEST_UNSET_TOKEN"):
        await _run(svc, path="/x")
    await svc.aclose()


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_db_tasks_observe_db_query_duration_seconds(tmp_path: Any) -> None:
    # defect 11: Orion's db_query_duration_seconds{operation} was absent.
    dsn = f"sqlite:///{tmp_path / 'metrics.db'}"
    svc = ConnectorServices(
        {"api": {"name": "api", "connector_type": "db", "config": {"connection_string": dsn, "driver": "sqlite"}}}
    )
    before_w = _sample("db_query_duration_seconds_count", operation="write")
    before_r = _sample("db_query_duration_seconds_count", operation="read")
    await _run(svc, "db_write", query="CREATE TABLE t (x INTEGER)")
    out = await _run(svc, "db_read", query="SELECT 1 AS one", output="data.rows")
    assert out.data["rows"] == [{"one": 1}]
    assert _sample("db_query_duration_seconds_count", operation="write") == before_w + 1
    assert _sample("db_query_duration_seconds_count", operation="read") == before_r + 1
    await svc.aclose()


def test_an_open_breaker_is_not_retried_so_each_request_counts_once() -> None:
    from app.errors import CircuitOpen

    assert CircuitOpen("open").retryable is False and CircuitOpen("open").status == 503

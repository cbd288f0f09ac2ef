"""http connector and http_call against a real local HTTP server (aiohttp on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from app.connectors import ConnectorServices, UpstreamStatus, connector_registry
from app.connectors.errors import ConnectorError
from app.connectors.http import HttpConnector, build_url
from app.connectors.retry import backoff_delay
from app.engine.compiler import compile_workflow
from app.engine.errors import WorkflowInvalid
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.engine.models import HttpConnectorConfig
from app.errors import ResponseTooLarge, Timeout, ValidationFailed
from tests.connectors.servers import HttpTestServer, LoopbackOnlyBackend

REGISTRY = connector_registry()


def http_connector(url: str, **config: Any) -> dict[str, Any]:
    cfg = {"url": url, "allow_private_urls": True, "retry": {"max_retries": 0, "retry_delay_ms": 10}}
    cfg.update(config)
    return {"name": "api", "connector_type": "http", "config": cfg}


def workflow(*tasks: dict[str, Any], wid: str = "wf") -> Any:
    doc = {
        "workflow_id": wid,
        "name": wid,
        "tasks": [{"id": f"t{i}", "name": f"t{i}", **t} for i, t in enumerate(tasks)],
    }
    return compile_workflow(doc, REGISTRY)


def http_task(**inp: Any) -> dict[str, Any]:
    return {"function": {"name": "http_call", "input": {"connector": "api", **inp}}}


async def run(
    wf: Any, services: ConnectorServices, data: Any = None, metadata: dict[str, Any] | None = None
) -> Message:
    engine = Engine({"ch": [wf]})
    msg = Message.from_request(data or {}, metadata)
    return await engine.process("ch", msg, RunOptions(services=services))


async def test_get_writes_the_response_json_at_response_path(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({"c1": http_connector(http_server.url)})
    out = await run(workflow(http_task(path="/echo/a?x=1", response_path="data.reply")), svc)
    assert out.data["reply"]["method"] == "GET"
    assert out.data["reply"]["path"] == "/echo/a?x=1"
    assert out.audit_trail[0].changes[0][0] == "data.reply"
    await svc.aclose()


async def test_post_body_logic_headers_and_precedence(http_server: HttpTestServer) -> None:
    connector = http_connector(
        http_server.url + "/",
        headers={"x-source": "quasar", "x-override": "connector"},
        auth={"type": "bearer", "token": "env://API_TOKEN"},
    )
    svc = ConnectorServices({"c1": connector}, env={"API_TOKEN": "s3cr3t"})
    wf = workflow(
        {"function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}}},
        http_task(
            method="POST",
            path_logic={"cat": ["/echo/orders/", {"var": "data.order.id"}]},
            body_logic={"id": {"var": "data.order.id"}, "total": {"*": [{"var": "data.order.qty"}, 2]}},
            headers={"x-override": "task", "content-type": "application/vnd.test+json"},
            response_path="data.reply",
        ),
    )
    out = await run(wf, svc, {"id": "A7", "qty": 21})
    reply = out.data["reply"]
    assert reply["method"] == "POST"
    assert reply["path"] == "/echo/orders/A7"
    assert reply["body"] == {"id": "A7", "total": 42}
    h = {k.lower(): v for k, v in reply["headers"].items()}
    assert h["x-source"] == "quasar"
    assert h["x-override"] == "task"  # task headers win over connector headers
    assert h["content-type"] == "application/vnd.test+json"  # ... and over the default content-type
    assert h["authorization"] == "Bearer s3cr3t"
    await svc.aclose()


@pytest.mark.parametrize(
    ("auth", "header", "expected"),
    [
        (
            {"type": "basic", "username": "u", "password": "env://PW"},
            "authorization",
            "Basic " + base64.b64encode(b"u:pw-value").decode(),
        ),
        ({"type": "apikey", "header": "X-Api-Key", "key": "env://PW"}, "x-api-key", "pw-value"),
    ],
)
async def test_basic_and_apikey_auth_resolve_env_secrets_at_use(
    http_server: HttpTestServer, auth: dict[str, Any], header: str, expected: str
) -> None:
    doc = http_connector(http_server.url, auth=auth)
    env = {"PW": "pw-value"}
    svc = ConnectorServices({"c1": doc}, env=env)
    out = await run(workflow(http_task(path="echo", response_path="data.r")), svc)
    assert {k.lower(): v for k, v in out.data["r"]["headers"].items()}[header] == expected
    # never stored resolved: the document still holds the reference
    assert "env://PW" in svc.connector("api").model_dump_json()
    await svc.aclose()


async def test_missing_env_secret_is_a_clear_error(http_server: HttpTestServer) -> None:
    svc = ConnectorServices(
        {"c1": http_connector(http_server.url, auth={"type": "bearer", "token": "env://NOPE"})}, env={}
    )
    client = await svc.http("api")
    with pytest.raises(Exception, match="environment variable 'NOPE'"):
        await client.call("GET", "echo")
    assert http_server.hits["/echo"] == 0
    await svc.aclose()


async def test_traceparent_keeps_the_trace_id_with_a_new_span(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({"c1": http_connector(http_server.url)})
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = await run(workflow(http_task(path="echo", response_path="data.r")), svc, metadata={"traceparent": parent})
    sent = {k.lower(): v for k, v in out.data["r"]["headers"].items()}["traceparent"]
    version, trace_id, span, flags = sent.split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span != "b7ad6b7169203331" and len(span) == 16
    await svc.aclose()


async def test_retries_5xx_with_exponential_backoff_then_succeeds(http_server: HttpTestServer) -> None:
    cfg = HttpConnectorConfig(
        url=http_server.url, allow_private_urls=True, retry={"max_retries": 3, "retry_delay_ms": 40}
    )
    client = HttpConnector("api", cfg)
    started = time.monotonic()
    result = await client.call("GET", "/flaky/a?fail=2")
    elapsed = time.monotonic() - started
    assert result.body == {"attempt": 3} and result.attempts == 3
    assert http_server.hits["/flaky/a"] == 3
    assert elapsed >= 0.040 + 0.080  # two backoffs: 40 ms, then 80 ms
    await client.aclose()


@pytest.mark.parametrize("status", [429, 408, 502])
async def test_retryable_statuses_are_retried_up_to_max_retries(http_server: HttpTestServer, status: int) -> None:
    cfg = HttpConnectorConfig(
        url=http_server.url, allow_private_urls=True, retry={"max_retries": 2, "retry_delay_ms": 1}
    )
    client = HttpConnector("api", cfg)
    with pytest.raises(UpstreamStatus) as info:
        await client.call("GET", f"status/{status}")
    assert info.value.upstream_status == status
    assert http_server.hits[f"/status/{status}"] == 3
    await client.aclose()


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_are_not_retried(http_server: HttpTestServer, status: int) -> None:
    cfg = HttpConnectorConfig(
        url=http_server.url, allow_private_urls=True, retry={"max_retries": 3, "retry_delay_ms": 1}
    )
    client = HttpConnector("api", cfg)
    with pytest.raises(UpstreamStatus) as info:
        await client.call("GET", f"status/{status}")
    assert info.value.upstream_status == status and info.value.status == 502
    assert http_server.hits[f"/status/{status}"] == 1
    await client.aclose()


async def test_network_errors_are_retried_then_reported(accept_counter: Any) -> None:
    # A port nobody listens on (the counter's listener closed): connection refused on every attempt.
    port = accept_counter.port
    await accept_counter.stop()
    backend = LoopbackOnlyBackend(allow_loopback=True)
    cfg = HttpConnectorConfig(
        url=f"http://127.0.0.1:{port}", allow_private_urls=True, retry={"max_retries": 2, "retry_delay_ms": 1}
    )
    client = HttpConnector("api", cfg, network_backend=backend)
    with pytest.raises(ConnectorError, match="ConnectError"):
        await client.call("GET", "x")
    assert backend.calls == [("127.0.0.1", port)] * 3
    await client.aclose()


async def test_timeout_is_a_504_and_is_not_retried(http_server: HttpTestServer) -> None:
    cfg = HttpConnectorConfig(
        url=http_server.url, allow_private_urls=True, retry={"max_retries": 3, "retry_delay_ms": 1}
    )
    client = HttpConnector("api", cfg)
    started = time.monotonic()
    with pytest.raises(Timeout) as info:
        await client.call("GET", "slow?ms=2000", timeout_ms=100)
    assert info.value.status == 504
    assert time.monotonic() - started < 1.5
    assert http_server.hits["/slow"] == 1
    await client.aclose()


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_oversized_response_is_refused(http_server: HttpTestServer, chunked: str) -> None:
    cfg = HttpConnectorConfig(url=http_server.url, allow_private_urls=True, max_response_size=2000)
    client = HttpConnector("api", cfg)
    ok = await client.call("GET", f"big?n=1000&chunked={chunked}")
    assert len(ok.body["blob"]) == 1000
    with pytest.raises(ResponseTooLarge) as info:
        await client.call("GET", f"big?n=50000&chunked={chunked}")
    assert info.value.status == 502 and "max_response_size" in info.value.message
    await client.aclose()


async def test_non_json_response_is_an_error_and_empty_body_is_null(http_server: HttpTestServer) -> None:
    cfg = HttpConnectorConfig(
        url=http_server.url, allow_private_urls=True, retry={"max_retries": 2, "retry_delay_ms": 1}
    )
    client = HttpConnector("api", cfg)
    with pytest.raises(ConnectorError, match="non-JSON"):
        await client.call("GET", "text")
    assert http_server.hits["/text"] == 1
    assert (await client.call("GET", "empty")).body is None
    await client.aclose()


def test_url_joining_follows_orion() -> None:
    assert build_url("https://a.test/v1/", "/orders") == "https://a.test/v1/orders"
    assert build_url("https://a.test/v1", "orders/1") == "https://a.test/v1/orders/1"
    assert build_url("https://a.test", "") == "https://a.test/"


def test_backoff_doubles_and_caps_at_60s() -> None:
    assert [backoff_delay(n, 500) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(8, 1000) == 60.0
    assert backoff_delay(10_000, 1000) == 60.0
    with pytest.raises(ValueError):
        backoff_delay(0, 500)


def test_lowercase_method_is_rejected_at_validation() -> None:
    with pytest.raises(WorkflowInvalid) as info:
        workflow(http_task(method="get"))
    assert info.value.errors[0]["field"] == "tasks[0].function.input.method"


async def test_path_logic_must_give_a_string(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({"c1": http_connector(http_server.url)})
    with pytest.raises(ValidationFailed):
        await run(workflow(http_task(path_logic={"+": [1, 2]})), svc)
    await svc.aclose()


async def test_unknown_connector_fails_the_task_clearly(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({})
    msg = Message.from_request({})
    wf = workflow(http_task(path="x"))
    wf.tasks[0].continue_on_error = True  # record the error instead of failing the request
    engine = Engine({"ch": [wf]})
    await engine.process("ch", msg, RunOptions(services=svc))
    assert "connector 'api' not found" in msg.errors[0]["message"]


async def test_client_is_pooled_and_rebuilt_when_the_connector_changes(http_server: HttpTestServer) -> None:
    svc = ConnectorServices({"c1": http_connector(http_server.url)})
    first = await svc.http("api")
    assert await svc.http("api") is first
    svc.set_connectors({"c1": http_connector(http_server.url, headers={"x-v": "2"})})
    second = await svc.http("api")
    assert second is not first
    assert first._client.is_closed
    await asyncio.gather(*(second.call("GET", "echo") for _ in range(20)))
    assert http_server.hits["/echo"] == 20
    await svc.aclose()


async def test_credentials_do_not_follow_a_redirect_to_another_origin(http_server: HttpTestServer) -> None:
    """Issue 14 item 10: connector headers, API-key auth and cookies stay with the connector's origin."""
    other = await HttpTestServer().start()
    try:
        cfg = HttpConnectorConfig(
            url=http_server.url,
            allow_private_urls=True,
            headers={"X-Tenant-Token": "tenant-secret", "Cookie": "session=cookie-secret"},
            auth={"type": "apikey", "header": "X-API-Key", "key": "api-secret"},  # type: ignore[arg-type]
        )
        client = HttpConnector("api", cfg)
        try:
            same = await client.call("GET", "/redirect?to=/echo/same", headers={"X-Task": "task-secret"})
            assert same.body["headers"]["X-API-Key"] == "api-secret"  # same origin: kept
            assert same.body["headers"]["X-Task"] == "task-secret"
            cross = await client.call("GET", f"/redirect?to={other.url}/echo/cross", headers={"X-Task": "task-secret"})
        finally:
            await client.aclose()
        assert cross.body["path"] == "/echo/cross"
        leaked = str(other.requests[-1]["headers"])
        for secret in ("tenant-secret", "cookie-secret", "api-secret", "task-secret"):
            assert secret not in leaked, leaked
    finally:
        await other.stop()


@pytest.mark.parametrize(
    "path",
    [
        "../../../echo/delete-all",
        "/x/../../../echo/evil",
        "%2e%2e/%2E%2E/echo/evil",
        "x/..%2f..%2f..%2fecho%2fevil",
        "x\r\nX-Injected: 1",
        "x/..\\..\\..\\echo\\evil",
    ],
)
async def test_path_logic_cannot_leave_the_connector_base(http_server: HttpTestServer, path: str) -> None:
    """Issue 14 item 12 (and the Low CRLF item): a path from request data stays below the connector URL."""
    svc = ConnectorServices({"c1": http_connector(http_server.url + "/echo/base")})
    try:
        with pytest.raises(ValidationFailed):
            await run(workflow(http_task(path_logic={"var": "metadata.p"})), svc, metadata={"p": path})
    finally:
        await svc.aclose()
    assert not http_server.hits


def test_paths_that_stay_below_the_base_are_joined() -> None:
    assert (
        build_url("https://a.test/v1", "orders/../items/./7?q=a/../b")
        == "https://a.test/v1/orders/../items/./7?q=a/../b"
    )
    assert build_url("https://a.test/v1", "a%20b") == "https://a.test/v1/a%20b"

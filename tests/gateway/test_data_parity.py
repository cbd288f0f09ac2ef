"""Issue 15: data-API behaviour as Orion documents it (CORS, security headers, body shape, trace shape),
end to end: real HTTP -> gateway -> Kafka -> worker -> gateway, on the real broker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import Admin, Gateway, eventually, map_task, parse_task

pytestmark = pytest.mark.timeout(180)

_JSON = {"content-type": "application/json"}
APP = "https://app.example.com"


@pytest.fixture(scope="module")
async def channels(admin: Admin) -> None:
    await admin.workflow(
        {
            "workflow_id": "parity-wf",
            "name": "parity",
            "tasks": [parse_task("order"), map_task("flag", ("data.order.seen", True))],
        }
    )
    await admin.channel({"channel_id": "plain", "name": "plain", "workflow_id": "parity-wf"})
    await admin.channel(
        {
            "channel_id": "browser",
            "name": "browser",
            "workflow_id": "parity-wf",
            "config": {
                "cors": {
                    "allowed_origins": [APP],
                    "allowed_methods": ["POST"],
                    "allowed_headers": ["content-type", "x-tenant-id"],
                    "allow_credentials": True,
                    "max_age": 120,
                }
            },
        }
    )


# -- defect 5: CORS ------------------------------------------------------------------------------
async def test_preflight_of_a_channel_with_cors_answers_its_policy(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.options(
        "/api/v1/data/browser",
        headers={
            "origin": APP,
            "access-control-request-method": "POST",
            "access-control-request-headers": "Content-Type, X-Tenant-Id",
        },
    )
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-allow-methods"] == "POST"
    assert r.headers["access-control-allow-headers"] == "content-type, x-tenant-id"
    assert r.headers["access-control-max-age"] == "120"
    assert "Origin" in r.headers["vary"]


async def test_preflight_refuses_an_unknown_origin_method_or_header(gateway: Gateway, channels: None) -> None:
    base = {"origin": APP, "access-control-request-method": "POST"}
    for headers in (
        {**base, "origin": "https://evil.example.com"},
        {**base, "access-control-request-method": "DELETE"},
        {**base, "access-control-request-headers": "x-secret"},
    ):
        r = await gateway.http.options("/api/v1/data/browser", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", (headers, r.text)
        assert "access-control-allow-origin" not in r.headers


async def test_an_allowed_origin_gets_cors_headers_on_the_answer(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.post("/api/v1/data/browser", json={"data": {"id": 1}}, headers={"origin": APP})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["order"] == {"id": 1, "seen": True}
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    # Orion's per-channel rule stays: an origin not listed is refused before any work.
    r = await gateway.http.post("/api/v1/data/browser", json={"data": {}}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


async def test_global_cors_applies_to_channels_without_their_own(
    e2e_settings: Any, worker: Any, channels: None
) -> None:
    from tests.gateway.conftest import running_gateway

    settings = e2e_settings.model_copy(update={"instance_id": "gw-cors", "cors_allowed_origins": ["*"]})
    async with running_gateway(settings) as gw:
        r = await gw.http.options(
            "/api/v1/data/plain", headers={"origin": APP, "access-control-request-method": "POST"}
        )
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
        r = await gw.http.post("/api/v1/data/plain", json={"data": {}}, headers={"origin": APP})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        # Admin routes follow the global policy too.
        r = await gw.http.options(
            "/api/v1/admin/workflows", headers={"origin": APP, "access-control-request-method": "GET"}
        )
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


async def test_without_global_cors_a_cross_origin_answer_carries_no_cors_headers(
    gateway: Gateway, channels: None
) -> None:
    r = await gateway.http.post("/api/v1/data/plain", json={"data": {}}, headers={"origin": APP})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# -- defect 6: security headers --------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1/data/plain", "/health", "/api/v1/admin/workflows", "/nowhere"])
async def test_every_answer_carries_the_security_headers(gateway: Gateway, channels: None, path: str) -> None:
    r = await gateway.http.post(path, json={"data": {}}) if "data" in path else await gateway.http.get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert r.headers["permissions-policy"] == "camera=(), microphone=(), geolocation=()"
    assert "strict-transport-security" not in r.headers  # plain HTTP


# -- defect 8: request and trace shapes --------------------------------------------------------------
async def test_a_body_without_data_is_400_bad_request(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.post("/api/v1/data/plain", json={"order_id": 7})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST", r.text
    assert '"data"' in r.json()["error"]["message"]
    # No body at all is still a request on empty data (REST GETs have none).
    r = await gateway.http.post("/api/v1/data/plain")
    assert r.status_code == 200, r.text


async def test_an_async_trace_has_orions_message_shape(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.post("/api/v1/data/plain/async", json={"data": {"order_id": "ORD-1"}})
    assert r.status_code == 202, r.text
    trace_id = r.json()["trace_id"]

    async def completed() -> Any:
        t = await gateway.http.get(f"/api/v1/data/traces/{trace_id}")
        return t.json() if t.status_code == 200 and t.json()["status"] == "completed" else None

    trace = await eventually(completed)
    message = trace["message"]
    assert set(message) >= {"id", "payload", "context", "audit_trail", "errors"}
    assert message["payload"] == {"order_id": "ORD-1"}
    assert message["context"]["data"] == {"order": {"order_id": "ORD-1", "seen": True}}
    assert set(message["context"]) == {"data", "metadata", "temp_data"}
    assert message["errors"] == []
    assert trace["result"]["data"] == message["context"]["data"]  # Quasar's own fields stay


# -- defect 9: health says what is configured -------------------------------------------------------
async def test_health_reports_redis_not_configured_and_stays_ok(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.get("/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["components"]["redis"] == "not_configured"


# -- defect 11: metrics --------------------------------------------------------------------------
def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_429_counts_in_errors_total_as_rate_limited(admin: Admin, gateway: Gateway, channels: None) -> None:
    await admin.channel(
        {
            "channel_id": "limited",
            "name": "limited",
            "workflow_id": "parity-wf",
            "config": {"rate_limit": {"requests_per_second": 0.01, "burst": 1}},
        }
    )
    before = _sample("errors_total", type="RATE_LIMITED")
    codes = [(await gateway.http.post("/api/v1/data/limited", json={"data": {}})).status_code for _ in range(3)]
    assert codes == [200, 429, 429]
    assert _sample("errors_total", type="RATE_LIMITED") == before + 2


async def test_channel_executions_total_counts_each_record_run(gateway: Gateway, channels: None) -> None:
    before = _sample("channel_executions_total", channel="plain")
    for _ in range(3):
        assert (await gateway.http.post("/api/v1/data/plain", json={"data": {}})).status_code == 200
    assert _sample("channel_executions_total", channel="plain") == before + 3


# -- missing features: topology control, platform rate limit -------------------------------------------
async def test_an_instance_serves_and_consumes_only_its_included_channels(
    e2e_settings: Any, worker: Any, channels: None
) -> None:
    from app.worker.runner import ChannelWorker
    from tests.gateway.conftest import running_gateway

    only_plain = {"channels_include": ["pl*"], "channels_exclude": ["plain-*"]}
    async with running_gateway(e2e_settings.model_copy(update={"instance_id": "gw-topo", **only_plain})) as gw:
        assert (await gw.http.post("/api/v1/data/plain", json={"data": {}})).status_code == 200
        r = await gw.http.post("/api/v1/data/browser", json={"data": {}})
        assert r.status_code == 404 and "not served by this instance" in r.json()["error"]["message"]
    other = ChannelWorker(
        e2e_settings.model_copy(update={"instance_id": "worker-topo", **only_plain}), group_id="topo-group"
    )
    await other.start()
    try:
        assert {route.name for route in other._routes.values()} == {"plain"}
    finally:
        await other.stop()


async def test_the_platform_rate_limit_answers_429_per_client_and_spares_probes(
    e2e_settings: Any, worker: Any, channels: None
) -> None:
    from tests.gateway.conftest import running_gateway

    limited = {
        "instance_id": "gw-rl",
        "rate_limit_enabled": True,
        "rate_limit_default_rps": 0.01,
        "rate_limit_default_burst": 2,
        "rate_limit_admin_rps": 0.01,
    }
    async with running_gateway(e2e_settings.model_copy(update=limited)) as gw:
        codes = [(await gw.http.get("/api/v1/admin/workflows")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = await gw.http.get("/api/v1/admin/workflows")
        assert r.json()["error"]["code"] == "RATE_LIMITED" and int(r.headers["retry-after"]) >= 1
        # Data routes have their own bucket; probes are never limited.
        assert (await gw.http.post("/api/v1/data/plain", json={"data": {}})).status_code == 200
        for _ in range(5):
            assert (await gw.http.get("/healthz")).status_code == 200


async def test_swagger_ui_is_served_from_local_assets(gateway: Gateway) -> None:
    page = await gateway.http.get("/docs")
    assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text.split("<body>")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = await gateway.http.get(f"/docs/static/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000


# -- missing feature: per-request profiling ----------------------------------------------------------
async def test_a_profiled_request_carries_orion_profile_phases(gateway: Gateway, channels: None) -> None:
    for call in (
        gateway.http.post("/api/v1/data/plain", json={"data": {}}, headers={"x-orion-profile": "1"}),
        gateway.http.post("/api/v1/data/plain", params={"profile": "1"}, json={"data": {}}),
    ):
        r = await call
        assert r.status_code == 200, r.text
        profile = r.json()["_orion"]["profile"]
        assert set(profile) == {"parse_ms", "guards_ms", "process_ms", "total_ms", "mode"}
        assert profile["mode"] == "sync" and profile["total_ms"] >= profile["process_ms"] >= 0
        assert r.json()["data"]["order"] == {"seen": True}
    plain = await gateway.http.post("/api/v1/data/plain", json={"data": {}})
    assert "_orion" not in plain.json()  # only on request

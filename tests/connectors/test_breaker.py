"""Circuit breakers: a failing connector trips its breaker, calls then fail fast, a probe recovers it."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.connectors import BreakerConfig, BreakerRegistry, ConnectorServices, connector_registry
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.errors import CircuitOpen
from tests.connectors.servers import HttpTestServer


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(server: HttpTestServer, clock: ManualClock, threshold: int = 2) -> tuple[Engine, ConnectorServices]:
    connector = {
        "name": "flaky-api",
        "connector_type": "http",
        "config": {
            "url": server.url,
            "allow_private_urls": True,
            "retry": {"max_retries": 1, "retry_delay_ms": 1},
        },
    }
    breakers = BreakerRegistry(BreakerConfig(failure_threshold=threshold, recovery_timeout_secs=30), clock=clock)
    svc = ConnectorServices({"x": connector}, breakers=breakers)
    wf = compile_workflow(
        {
            "workflow_id": "w",
            "name": "w",
            "tasks": [
                {
                    "id": "call",
                    "name": "call",
                    "function": {
                        "name": "http_call",
                        "input": {
                            "connector": "flaky-api",
                            "path": "health-toggle",
                            "response_path": "data.r",
                        },
                    },
                }
            ],
        },
        connector_registry(),
    )
    return Engine({"orders": [wf]}), svc


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"connector": "flaky-api", "channel": "orders"}) or 0.0


async def call(engine: Engine, svc: ConnectorServices) -> Message:
    return await engine.process("orders", Message.from_request({}), RunOptions(services=svc))


async def test_breaker_opens_fails_fast_and_recovers_through_a_half_open_probe(
    http_server: HttpTestServer,
) -> None:
    clock = ManualClock()
    engine, svc = setup(http_server, clock)
    trips0, rejections0 = metric("circuit_breaker_trips_total"), metric("circuit_breaker_rejections_total")
    http_server.healthy = False
    for _ in range(2):  # two logical calls, each retried once -> 4 requests
        with pytest.raises(Exception, match=r"An internal engine error|HTTP 500"):
            await call(engine, svc)
    assert http_server.hits["/health-toggle"] == 4
    [state] = svc.list_circuit_breakers()
    assert state["key"] == "orders:flaky-api" and state["state"] == "open" and state["trips"] == 1
    assert metric("circuit_breaker_trips_total") == trips0 + 1

    with pytest.raises(CircuitOpen) as info:  # fast fail: the server is not called
        await call(engine, svc)
    assert info.value.status == 503
    assert http_server.hits["/health-toggle"] == 4
    assert metric("circuit_breaker_rejections_total") == rejections0 + 1

    clock.now += 30  # recovery timeout elapsed: the next call is the half-open probe
    assert svc.list_circuit_breakers()[0]["state"] == "half_open"
    with pytest.raises(Exception, match=r"An internal engine error|HTTP 500"):
        await call(engine, svc)  # probe fails -> open again at once
    assert svc.list_circuit_breakers()[0]["state"] == "open"
    assert metric("circuit_breaker_trips_total") == trips0 + 2

    clock.now += 30
    http_server.healthy = True
    out = await call(engine, svc)  # probe succeeds -> closed
    assert out.data["r"] == {"ok": True}
    assert svc.list_circuit_breakers()[0]["state"] == "closed"
    await call(engine, svc)
    await svc.aclose()


async def test_only_one_probe_goes_out_while_half_open() -> None:
    clock = ManualClock()
    reg = BreakerRegistry(BreakerConfig(failure_threshold=1, recovery_timeout_secs=5), clock=clock)
    b = reg.get("ch", "db")
    b.on_failure()
    clock.now += 5
    b.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        b.before_call()  # a concurrent caller while the probe is in flight
    b.on_success()
    b.before_call()


async def test_client_errors_do_not_trip_the_breaker(http_server: HttpTestServer) -> None:
    svc = ConnectorServices(
        {
            "x": {
                "name": "api",
                "connector_type": "http",
                "config": {"url": http_server.url, "allow_private_urls": True},
            }
        },
        breakers=BreakerRegistry(BreakerConfig(failure_threshold=1)),
    )
    client = await svc.http("api")
    for _ in range(3):
        with pytest.raises(Exception, match="HTTP 404"):
            await svc.guarded("ch", "api", lambda: client.call("GET", "status/404"))
    assert svc.list_circuit_breakers()[0]["state"] == "closed"
    await svc.aclose()


def test_reset_closes_a_breaker_and_unknown_keys_are_reported() -> None:
    reg = BreakerRegistry(BreakerConfig(failure_threshold=1))
    reg.get("a", "c1").on_failure()
    assert reg.list()[0]["state"] == "open"
    assert reg.reset("a:c1") is True
    assert reg.list()[0]["state"] == "closed"
    assert reg.reset("nope:nope") is False


def test_breaker_map_is_lru_bounded() -> None:
    reg = BreakerRegistry(BreakerConfig(max_breakers=2))
    reg.get("a", "1")
    reg.get("b", "1")
    reg.get("a", "1")  # touch a
    reg.get("c", "1")  # evicts b
    assert [s["key"] for s in reg.list()] == ["a:1", "c:1"]


@pytest.mark.parametrize("bad", [{"failure_threshold": 0}, {"recovery_timeout_secs": -1}, {"max_breakers": 0}])
def test_bad_breaker_config_is_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**bad)


async def test_admin_routes_list_and_reset_breakers() -> None:
    import httpx
    from fastapi import FastAPI

    from app.gateway.admin import router
    from app.gateway.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    reg = BreakerRegistry(BreakerConfig(failure_threshold=1))
    app.state.connector_services = ConnectorServices({}, breakers=reg)
    reg.get("orders", "pay").on_failure()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        listed = (await client.get("/api/v1/admin/connectors/circuit-breakers")).json()["data"]
        assert listed[0]["key"] == "orders:pay" and listed[0]["state"] == "open"
        reset = await client.post("/api/v1/admin/connectors/circuit-breakers/orders:pay")
        assert reset.status_code == 200
        assert reg.list()[0]["state"] == "closed"
        missing = await client.post("/api/v1/admin/connectors/circuit-breakers/none:none")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "NOT_FOUND"

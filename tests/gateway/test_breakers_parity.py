"""Issue 15 (defect 3): circuit breakers opened in a worker are visible and resettable through any
gateway's admin API; an open breaker refuses each request once (defect 11). Real broker, real worker,
a real connection-refused upstream on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from app.kafka.broker import free_port
from tests.gateway.conftest import Admin, Gateway, eventually

pytestmark = pytest.mark.timeout(180)

A = "/api/v1/admin"


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
async def breaker_channel(admin: Admin, gateway: Gateway) -> str:
    connector = {
        "name": "down",
        "connector_type": "http",
        "config": {
            "url": f"http://127.0.0.1:{free_port()}",  # nothing listens: connection refused
            "allow_private_urls": True,
            "retry": {"max_retries": 0, "retry_delay_ms": 1},
        },
    }
    r = await gateway.http.post(f"{A}/connectors", json=connector)
    assert r.status_code == 201, r.text
    await admin.workflow(
        {
            "workflow_id": "brk-wf",
            "name": "brk",
            "tasks": [
                {"id": "call", "name": "call", "function": {"name": "http_call", "input": {"connector": "down"}}}
            ],
        }
    )
    await admin.channel({"channel_id": "brk", "name": "brk", "workflow_id": "brk-wf"})
    return "brk:down"


async def _trip(gateway: Gateway) -> None:
    async def open_now() -> bool:
        r = await gateway.http.post("/api/v1/data/brk", json={"data": {}})
        return r.status_code == 503 and r.json()["error"]["code"] == "CIRCUIT_OPEN"

    await eventually(open_now, within=60)


async def test_an_open_breaker_is_listed_and_reset_through_the_admin_api(
    gateway: Gateway, gateway_b: Gateway, breaker_channel: str
) -> None:
    await _trip(gateway)

    async def listed(state: str) -> Any:
        r = await gateway_b.http.get(f"{A}/connectors/circuit-breakers")  # another gateway than the caller
        assert r.status_code == 200, r.text
        found = [b for b in r.json()["data"] if b["key"] == breaker_channel and b["state"] == state]
        return found

    opened = await eventually(lambda: listed("open"))
    assert opened[0]["instance"] == "worker-1" and opened[0]["connector"] == "down" and opened[0]["trips"] >= 1

    r = await gateway_b.http.post(f"{A}/connectors/circuit-breakers/{breaker_channel}")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"key": breaker_channel, "state": "closed", "instances": ["worker-1"]}
    await eventually(lambda: listed("closed"))

    r = await gateway.http.post(f"{A}/connectors/circuit-breakers/nope:nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


async def test_an_open_breaker_counts_one_rejection_per_request(gateway: Gateway, breaker_channel: str) -> None:
    await _trip(gateway)
    before = _sample("circuit_breaker_rejections_total", connector="down", channel="brk")
    for _ in range(3):
        r = await gateway.http.post("/api/v1/data/brk", json={"data": {}})
        assert r.status_code == 503 and r.json()["error"]["code"] == "CIRCUIT_OPEN", r.text
    assert _sample("circuit_breaker_rejections_total", connector="down", channel="brk") == before + 3

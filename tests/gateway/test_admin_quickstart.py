"""End to end: the seed's "Your First Service in 2 Minutes" curl sequence, verbatim, against a real gateway,
a real worker process and the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway

# The request bodies exactly as the seed's curl commands send them.
CREATE_WORKFLOW = b"""{
    "workflow_id": "high-value-order",
    "name": "High-Value Order",
    "condition": true,
    "tasks": [
      { "id": "parse", "name": "Parse payload", "function": {
          "name": "parse_json",
          "input": { "source": "payload", "target": "order" }
      }},
      { "id": "flag", "name": "Flag order",
        "condition": { ">": [{ "var": "data.order.total" }, 10000] },
        "function": {
          "name": "map",
          "input": { "mappings": [
            { "path": "data.order.flagged", "logic": true },
            { "path": "data.order.alert", "logic": {
              "cat": ["High-value order: $", { "var": "data.order.total" }]
            }}
          ]}
      }}
    ]
  }"""
ACTIVATE = b'{"status": "active"}'
CREATE_CHANNEL = b"""{ "channel_id": "orders", "name": "orders", "channel_type": "sync",
        "protocol": "http", "route_pattern": "/orders",
        "methods": ["POST"], "workflow_id": "high-value-order" }"""
SEND = b'{ "data": { "order_id": "ORD-9182", "total": 25000 } }'
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "QUASAR_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
        "QUASAR_FETCH_WAIT_MAX_MS": str(settings.fetch_wait_max_ms),
        "QUASAR_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "QUASAR_DEFAULT_PARTITIONS": str(settings.default_partitions),
        "QUASAR_INSTANCE_ID": "quickstart-worker",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[AdminGateway]:
    with admin_gateway(settings) as gw:
        yield gw


def test_first_service_in_two_minutes(gateway: AdminGateway, worker: subprocess.Popen[bytes]) -> None:
    with httpx.Client(base_url=gateway.url, timeout=90) as curl:
        created = curl.post("/api/v1/admin/workflows", content=CREATE_WORKFLOW, headers=JSON)
        assert created.status_code == 201, created.text
        path = "/api/v1/admin/workflows/high-value-order/status"
        activated = curl.patch(path, content=ACTIVATE, headers=JSON)
        assert activated.status_code == 200 and activated.json()["data"]["status"] == "active", activated.text
        channel = curl.post("/api/v1/admin/channels", content=CREATE_CHANNEL, headers=JSON)
        assert channel.status_code == 201, channel.text
        live = curl.patch("/api/v1/admin/channels/orders/status", content=ACTIVATE, headers=JSON)
        assert live.status_code == 200 and live.json()["data"]["status"] == "active", live.text

        # The admin writes returned once applied: the very next request is served with them.
        resp = curl.post("/api/v1/data/orders", content=SEND, headers=JSON)
        assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "ok"
        order = {"order_id": "ORD-9182", "total": 25000, "flagged": True, "alert": "High-value order: $25000"}
        assert body["data"] == {"order": order}
        assert body.get("errors", []) == []

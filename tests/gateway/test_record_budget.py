"""One record budget (QUASAR_MAX_RECORD_BYTES) for every limit, end to end on the real broker.

Issue 14 (low): bodies under the documented 1 MiB body limit were answered 503/502, because the request's
record (body + metadata) or the reply was over librdkafka's default message.max.bytes (1,000,000). Now a body
of exactly `max_payload_size` round-trips, sync and async; one byte more is 413; a body within the limit
whose record would not fit (numbers that grow when re-encoded) is 413 too; nothing answers 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from app.kafka.config import KafkaSettingsError, producer_config
from app.kafka.topics import TopicSpecError, drift_fixes, fixed_topic_plans, load_specs
from app.settings import RECORD_FRAMING_BYTES, Settings
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import (
    Admin,
    Gateway,
    apply_quasar_topics,
    eventually,
    map_task,
    parse_task,
    running_gateway,
)
from tests.gateway.conftest import running_worker as running_channel_worker

pytestmark = pytest.mark.timeout(240)

LIMIT = 1_048_576  # the documented default of max_payload_size (Orion's ingest.max_payload_size)
ECHO_WF = {
    "workflow_id": "echo-wf",
    "name": "echo",
    "tasks": [parse_task("req"), map_task("seen", ("data.seen", True))],  # the answer carries the body back
}


def body_of(size: int) -> bytes:
    """A JSON request body of exactly `size` bytes: {"data":{"blob":"xxx..."}}."""
    head, tail = b'{"data":{"blob":"', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.fixture(scope="module")
def budget_settings(kafka_bootstrap: str) -> Settings:
    settings = make_test_settings(kafka_bootstrap, instance_id="gw-budget", processing_timeout_ms=30_000)
    assert settings.max_payload_size == LIMIT  # the defaults are what is tested
    apply_quasar_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def gateway(budget_settings: Settings) -> AsyncIterator[Gateway]:
    async with running_channel_worker(budget_settings, "worker-budget"), running_gateway(budget_settings) as gw:
        admin = Admin(gw.http)
        await admin.workflow(ECHO_WF)
        await admin.channel(
            {
                "channel_id": "echo",
                "name": "echo",
                "channel_type": "sync",
                "protocol": "http",
                "methods": ["POST"],
                "workflow_id": "echo-wf",
            }
        )
        yield gw


_JSON = {"content-type": "application/json"}


async def test_a_body_of_exactly_the_limit_round_trips_sync(gateway: Gateway) -> None:
    r = await gateway.http.post("/api/v1/data/echo", content=body_of(LIMIT), headers=_JSON)
    assert r.status_code == 200, r.text[:300]
    data = r.json()["data"]
    assert data["seen"] is True and len(data["req"]["blob"]) == LIMIT - 20


async def test_a_body_of_exactly_the_limit_is_accepted_and_processed_async(gateway: Gateway) -> None:
    r = await gateway.http.post("/api/v1/data/echo/async", content=body_of(LIMIT), headers=_JSON)
    assert r.status_code == 202, r.text[:300]
    trace_id = r.json()["trace_id"]

    async def completed() -> dict[str, Any] | None:
        t = await gateway.http.get(f"/api/v1/data/traces/{trace_id}")
        assert t.status_code == 200, t.text[:300]
        return t.json() if t.json()["status"] == "completed" else None

    trace = await eventually(completed, within=60)
    assert trace["result"]["data"]["seen"] is True and len(trace["result"]["data"]["req"]["blob"]) == LIMIT - 20


async def test_a_body_at_the_limit_with_the_largest_headers_still_round_trips(gateway: Gateway) -> None:
    # The record carries the request headers in metadata: the budget keeps room for a full header block.
    headers = {**_JSON, "x-pad": '"' * 60_000}  # quotes double when JSON-encoded
    r = await gateway.http.post("/api/v1/data/echo", content=body_of(LIMIT), headers=headers)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["data"]["req"]["blob"]) == LIMIT - 20


@pytest.mark.parametrize("path", ["echo", "echo/async"])
async def test_one_byte_over_the_limit_is_413(gateway: Gateway, path: str) -> None:
    r = await gateway.http.post(f"/api/v1/data/{path}", content=body_of(LIMIT + 1), headers=_JSON)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE" and r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["echo", "echo/async"])
async def test_a_body_whose_record_would_not_fit_is_413_not_5xx(gateway: Gateway, path: str) -> None:
    # 5 bytes in the body, 19 in the record: `1e15` is re-encoded as 1000000000000000.0
    numbers = b",".join([b"1e15"] * 150_000)
    body = b'{"data":{"n":[' + numbers + b"]}}"
    assert len(body) < LIMIT
    r = await gateway.http.post(f"/api/v1/data/{path}", content=body, headers=_JSON)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "QUASAR_MAX_RECORD_BYTES" in r.json()["error"]["message"]
    after = await gateway.http.post("/api/v1/data/echo", json={"data": {"ok": 1}})  # and the channel still serves
    assert after.status_code == 200 and after.json()["data"]["seen"] is True


# -- the budget decides the other limits ------------------------------------------------------------


def test_producers_and_topics_take_the_budget_plus_framing(budget_settings: Settings) -> None:
    want = budget_settings.max_record_bytes + RECORD_FRAMING_BYTES
    assert producer_config(budget_settings)["message.max.bytes"] == want
    plans = fixed_topic_plans(load_specs(), budget_settings)
    assert plans and all(p.configs["max.message.bytes"] == str(want) for p in plans)


def test_topics_apply_raises_max_message_bytes_on_existing_topics(kafka_bootstrap: str) -> None:
    small = make_test_settings(kafka_bootstrap, max_record_bytes=1_000_000, max_payload_size=800_000)
    apply_quasar_topics(small)  # topics made under a smaller budget
    bigger = small.model_copy(update={"max_record_bytes": 4_194_304})
    fixes = drift_fixes(AdminClient({"bootstrap.servers": kafka_bootstrap}), fixed_topic_plans(load_specs(), bigger))
    wanted = {(f.key, f.current, f.wanted) for f in fixes}
    assert wanted == {("max.message.bytes", str(1_000_000 + RECORD_FRAMING_BYTES), str(4_194_304 + 4096))}
    assert len(fixes) == len(fixed_topic_plans(load_specs(), bigger))


def test_limits_that_cannot_fit_a_record_are_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="QUASAR_MAX_RECORD_BYTES"):
        Settings(max_payload_size=2_000_000)  # over the default 2 MiB budget with its envelope
    with pytest.raises(ValueError, match="max_result_size_bytes"):
        Settings(max_result_size_bytes=2_097_152)  # no room left for the reply's headers
    raised = Settings(max_record_bytes=8_388_608, max_payload_size=8_000_000)
    assert raised.result_limit_bytes > raised.max_payload_size and raised.worker_record_limit_bytes == 8_388_608


def test_message_max_bytes_is_not_set_around_the_budget() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9092", kafka={"MESSAGE_MAX_BYTES": "1000000"})
    with pytest.raises(KafkaSettingsError, match="QUASAR_MAX_RECORD_BYTES"):
        producer_config(settings)


def test_a_topic_spec_cannot_set_max_message_bytes(tmp_path: Any) -> None:
    (tmp_path / "dlq.toml").write_text('role = "dlq"\npartitions = 1\n[configs]\n"max.message.bytes" = 1000000\n')
    with pytest.raises(TopicSpecError, match="QUASAR_MAX_RECORD_BYTES"):
        load_specs(tmp_path)

"""Impact analysis on real retained traffic: a candidate that moves a threshold reports exactly the records
whose answer changes (seeded data with a known answer), produces nothing on any topic, can attach its summary
to a release, turns changed cases into test-suite cases, and `quasar replay --fail-on-change` exits 1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from app.cli import _register, cli
from app.kafka.admin import create_admin
from app.kafka.config import producer_config, reader_config
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import Gateway, apply_quasar_topics, start_gateway

A = "/api/v1/admin"


def tiering(threshold: int) -> list[dict[str, Any]]:
    return [
        {"id": "parse", "name": "parse",
         "function": {"name": "parse_json", "input": {"source": "payload", "target": "req"}}},
        {"id": "tier", "name": "tier", "function": {"name": "map", "input": {"mappings": [
            {"path": "data.tier",
             "logic": {"if": [{">": [{"var": "data.req.amount"}, threshold]}, "gold", "basic"]}}]}}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Any:
    s = make_test_settings(kafka_bootstrap, instance_id="impact-gw")
    apply_quasar_topics(s)
    return s


@pytest.fixture(scope="module")
async def gw(settings: Any) -> AsyncIterator[Gateway]:
    g = await start_gateway(settings)
    h = g.http
    assert (
        await h.post(f"{A}/workflows", json={"workflow_id": "tiers", "name": "t", "tasks": tiering(100)})
    ).status_code == 201
    assert (await h.patch(f"{A}/workflows/tiers/status", json={"status": "active"})).status_code == 200
    channel = {"channel_id": "orders-in", "name": "orders-in", "channel_type": "async", "protocol": "kafka",
               "workflow_id": "tiers"}  # fmt: skip
    assert (await h.post(f"{A}/channels", json=channel)).status_code == 201, "channel"
    assert (await h.patch(f"{A}/channels/orders-in/status", json={"status": "active"})).status_code == 200
    assert (await h.post(f"{A}/workflows/tiers/versions")).status_code == 201
    assert (await h.put(f"{A}/workflows/tiers", json={"name": "t", "tasks": tiering(200)})).status_code == 200
    # 30 recorded orders, amounts 0, 10, ..., 290: those in (100, 200] change tier under the candidate.
    producer = Producer(producer_config(settings))
    topic = f"{settings.topic_prefix}ch.orders-in"
    for i in range(30):
        producer.produce(topic, orjson.dumps({"order": i, "amount": i * 10}), key=f"o-{i}".encode())
    assert producer.flush(10) == 0
    producer.produce(topic, b"not json", key=b"bad")  # the worker would dead-letter it; replay skips it
    assert producer.flush(10) == 0
    yield g
    await g.stop()


def _watermarks(settings: Any) -> dict[tuple[str, int], int]:
    md = create_admin(settings).list_topics(timeout=10)
    consumer = Consumer(reader_config(settings))
    try:
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t, meta in md.topics.items()
            if t.startswith(settings.topic_prefix)
            for p in meta.partitions
        }
    finally:
        consumer.close()


async def test_candidate_changes_exactly_the_records_it_should(gw: Gateway, settings: Any) -> None:
    before = _watermarks(settings)
    r = await gw.http.post(f"{A}/channels/orders-in/replay",
                           json={"candidate": {"workflow_id": "tiers", "version": 2}, "write_tests": True})  # fmt: skip
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert (report["total"], report["changed"], report["consistent"], report["errored"]) == (30, 10, 20, 0)
    assert report["undecodable"] == 1 and (report["live_version"], report["candidate_version"]) == (1, 2)
    changed_keys = sorted(int(e["key"].split("-")[1]) for e in report["examples"])
    assert changed_keys == list(range(11, 21))
    assert report["examples"][0]["changes"] == [
        {"path": "tier", "change": "changed", "before": "gold", "after": "basic"}
    ]
    assert len(report["tests"]) == 10 and report["tests"][0]["expect"]["data"]["tier"] == "basic"
    assert _watermarks(settings) == before  # nothing produced on any topic


async def test_from_an_offset_and_bad_requests(gw: Gateway) -> None:
    cand = {"workflow_id": "tiers", "version": 2}
    r = await gw.http.post(f"{A}/channels/orders-in/replay", json={"candidate": cand, "from": 0, "limit": 5})
    assert r.status_code == 200 and r.json()["data"]["total"] == 5
    later = {"candidate": cand, "from": "2999-01-01T00:00:00Z"}  # nothing recorded after that time
    r = await gw.http.post(f"{A}/channels/orders-in/replay", json=later)
    assert r.status_code == 200 and r.json()["data"]["total"] == 0
    for body, status in (
        ({"candidate": {"workflow_id": "tiers", "version": 9}}, 404),
        ({"candidate": {"workflow_id": "tiers"}}, 400),
        ({"candidate": {"workflow_id": "tiers", "version": 2}, "from": "yesterday"}, 400),
        ({"candidate": {"workflow_id": "tiers", "version": 2}, "limit": 0}, 400),
    ):
        r = await gw.http.post(f"{A}/channels/orders-in/replay", json=body)
        assert r.status_code == status, (body, r.text)
    assert (await gw.http.post(f"{A}/channels/nope/replay", json={})).status_code in (400, 404)


async def test_report_attached_to_a_release(gw: Gateway) -> None:
    rel = (await gw.http.post(f"{A}/releases", json={"kind": "workflow", "id": "tiers"})).json()["data"]
    body = {"candidate": {"workflow_id": "tiers", "version": 2}, "release": rel["id"]}
    r = await gw.http.post(f"{A}/channels/orders-in/replay", json=body)
    assert r.status_code == 200 and r.json()["data"]["attached_to"] == rel["id"]
    events = (await gw.http.get(f"{A}/releases/{rel['id']}")).json()["data"]["events"]
    assert events[-1]["type"] == "impact" and events[-1]["details"]["changed"] == 10


async def test_cli_replay_fails_on_change(gw: Gateway, tmp_path: Any) -> None:
    _register()
    runner = CliRunner()

    def invoke(*args: str) -> Any:  # off the loop: the gateway answers on it
        return asyncio.to_thread(runner.invoke, cli, list(args), env={"COLUMNS": "200"})

    base = ("replay", "--url", gw.url, "--channel", "orders-in")
    suite = tmp_path / "suite.json"
    shown = await invoke(*base, "--candidate", "tiers@2", "--write-tests", str(suite))
    assert shown.exit_code == 0, shown.output
    assert "changed" in shown.output and "10" in shown.output
    assert len(orjson.loads(suite.read_bytes())["tests"]) == 10
    assert (await invoke(*base, "--candidate", "tiers@2", "--fail-on-change")).exit_code == 1
    same = await invoke(*base, "--candidate", "tiers@1", "--fail-on-change")
    assert same.exit_code == 0, same.output

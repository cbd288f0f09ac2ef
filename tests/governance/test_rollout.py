"""Sticky rollout: deterministic buckets from a configurable key, a 10% split within ±2 over 10,000 keys,
the same key always lands on the same version, and the bucket never enters the message data."""

from __future__ import annotations

from typing import Any

from app.engine import ChannelWorkflow, Engine, Message, RunOptions, compile_workflow, rollout_bucket
from app.governance.rollout import record_rollout_bucket, record_rollout_key
from tests.governance.conftest import make_view


def _wf(wid: str) -> Any:
    return compile_workflow(
        {
            "workflow_id": wid,
            "name": wid,
            "tasks": [
                {
                    "id": "mark",
                    "name": "mark",
                    "function": {
                        "name": "map",
                        "input": {"mappings": [{"path": "data.version", "logic": wid}]},
                    },
                }
            ],
        }
    )


def _engine() -> Engine:
    # newest first: the canary owns [0, 10), the stable version [10, 100) (the snapshot's ranges)
    return Engine(
        {
            "ch": [
                ChannelWorkflow(_wf("canary"), rollout=(0, 10)),
                ChannelWorkflow(_wf("stable"), rollout=(10, 100)),
            ]
        }
    )


def test_ten_percent_split_over_10000_keys_is_within_two_points() -> None:
    view = make_view("ch", {"rollout_key": "$kafka_key"}).channel
    engine = _engine()
    canary = 0
    for i in range(10_000):
        bucket = record_rollout_bucket(view, f"customer-{i}".encode(), {}, {}, {})
        msg = engine.process_sync("ch", Message.from_request({"n": i}, {}), RunOptions(rollout_bucket=bucket))
        out = msg.to_response()
        assert "_rollout_bucket" not in out["data"] and "_rollout_bucket" not in msg.context["data"]
        canary += out["data"]["version"] == "canary"
    assert 800 <= canary <= 1200, canary


def test_same_key_same_version_every_time() -> None:
    view = make_view("ch", {"rollout_key": "X-User"}).channel
    engine = _engine()
    for user in ("alice", "bob", "carol", "dave"):
        versions = set()
        for _ in range(20):
            bucket = record_rollout_bucket(view, None, {"x-user": user}, {}, {})
            msg = engine.process_sync("ch", Message.from_request({}, {}), RunOptions(rollout_bucket=bucket))
            versions.add(msg.to_response()["data"]["version"])
        assert len(versions) == 1
        expected = "canary" if rollout_bucket(user) < 10 else "stable"
        assert versions == {expected}


def test_record_key_sources() -> None:
    headers = {"x-user": "u1"}
    data = {"customer": {"id": 42}}
    assert record_rollout_key(make_view("a", {"rollout_key": "X-User"}).channel, b"k", headers, data, {}) == "u1"
    assert (
        record_rollout_key(make_view("b", {"rollout_key": {"kafka_key": True}}).channel, b"k1", headers, data, {})
        == "k1"
    )
    assert record_rollout_key(make_view("c", {"rollout_key": "$kafka_key"}).channel, None, headers, data, {}) is None
    logic = make_view("d", {"rollout_key": {"var": "data.customer.id"}}).channel
    assert record_rollout_key(logic, b"k", headers, data, {}) == "42"  # non-strings are JSON-encoded
    assert record_rollout_key(logic, b"k", headers, {}, {}) is None  # null: no sticky key
    by_key = make_view("e", {"rollout_key": {"cat": ["t-", {"var": "key"}]}}).channel
    assert record_rollout_key(by_key, b"abc", headers, data, {}) == "t-abc"
    assert record_rollout_key(make_view("f", {}).channel, b"k", headers, data, {}) is None
    assert record_rollout_key(None, b"k", headers, data, {}) is None
    # the bucket is the engine's own sticky hash of the key
    assert record_rollout_bucket(
        make_view("g", {"rollout_key": "$kafka_key"}).channel, b"abc", {}, {}, {}
    ) == rollout_bucket("abc")

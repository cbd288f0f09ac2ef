"""The runtime view built from a folded config (`app.config_store.snapshot`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from app.config_store.operations import Activate, Create, NewVersion, Operation, Put, Update
from app.config_store.snapshot import build_snapshot, rollout_ranges
from app.config_store.state import CompileResult, ConfigState, proposal_key
from app.gateway.data import route_table
from app.kafka.names import TopicNames

NOW = "2025-01-01T00:00:00.000Z"
WF = {"name": "wf", "condition": True, "tasks": []}


def compiler(kind: str, oid: str, definition: Mapping[str, Any]) -> CompileResult:
    if definition.get("broken"):
        return CompileResult(errors=({"field": "tasks", "message": "broken on purpose"},))
    return CompileResult(compiled=f"{kind}:{oid}:{definition.get('name')}")


class Store:
    def __init__(self) -> None:
        self.state = ConfigState(compiler=compiler)

    def op(self, kind: str, oid: str, *ops: Operation) -> Store:
        for operation in ops:
            cur = self.state.get_any(kind, oid)
            rev = cur.revision if cur else 0
            change = operation(kind, oid, cur if cur and not cur.deleted else None, NOW)
            value = {
                "kind": kind,
                "id": oid,
                "op": change.op,
                "expected_revision": rev,
                "revision": rev + 1,
                "object": {"versions": {str(n): d for n, d in change.versions.items()}},
            }
            out = self.state.apply(self.state.offset + 1, proposal_key(kind, oid, rev + 1, "n"), orjson.dumps(value))
            assert out.applied, out
        return self


def canary_store() -> Store:
    s = Store()
    s.op("workflow", "wf", Create(WF), Activate(), NewVersion(), Update({**WF, "name": "wf2"}), Activate(30))
    return s


def test_rollout_ranges_are_newest_first_half_open() -> None:
    obj = canary_store().state.get("workflow", "wf")
    assert rollout_ranges(obj) == [(2, (0, 30)), (1, (30, 100))]


def test_a_lone_version_at_p_percent_owns_only_the_first_p_buckets() -> None:
    s = Store().op("workflow", "wf", Create(WF), Activate(10))
    assert rollout_ranges(s.state.get("workflow", "wf")) == [(1, (0, 10))]


def test_channels_bind_workflows_and_the_engine_gets_every_active_version() -> None:
    s = canary_store()
    s.op("workflow", "other", Create({**WF, "name": "other"}), Activate())
    s.op(
        "channel",
        "orders",
        Create({"name": "orders", "channel_type": "sync", "protocol": "http", "workflow_ids": ["wf", "other"]}),
        Activate(),
    )
    s.op("channel", "draft-only", Create({"name": "draft-only", "workflow_id": "wf"}))
    seen: dict[str, Any] = {}

    def factory(channels: Mapping[str, list[tuple[Any, tuple[int, int]]]], rulesets: Any = None) -> str:
        seen.update(channels)
        return "engine"

    snap = build_snapshot(s.state, engine_factory=factory)
    assert snap.engine == "engine"
    assert list(snap.channels) == ["orders"]  # drafts are not served
    view = snap.channels["orders"]
    assert [(b.workflow_id, b.version, b.rollout) for b in view.workflows] == [
        ("wf", 2, (0, 30)),
        ("wf", 1, (30, 100)),
        ("other", 1, (0, 100)),
    ]
    assert seen == {
        "orders": [
            ("workflow:wf:wf2", (0, 30)),
            ("workflow:wf:wf", (30, 100)),
            ("workflow:other:other", (0, 100)),
        ]
    }
    assert snap.offset == s.state.offset and snap.generation == s.state.generation


def test_invalid_versions_are_left_out_of_the_engine_and_reported() -> None:
    s = Store()
    s.op("workflow", "wf", Create({**WF, "broken": True}), Activate())
    s.op("channel", "c", Create({"name": "c", "workflow_id": "wf"}), Activate())
    s.op("channel", "d", Create({"name": "d", "workflow_id": "missing"}), Activate())
    snap = build_snapshot(s.state, engine_factory=lambda ch, **_: dict(ch))
    assert snap.engine == {"c": [], "d": []}
    assert snap.channels["c"].workflows[0].errors[0]["message"] == "broken on purpose"
    problems = {(p["kind"], p["id"]): p["errors"][0]["message"] for p in snap.problems}
    assert problems == {
        ("workflow", "wf"): "broken on purpose",
        ("channel", "d"): "workflow 'missing' has no active version",
    }


def test_route_table_is_ordered_like_orion() -> None:
    s = Store()
    s.op(
        "channel",
        "a",
        Create({"name": "a", "protocol": "rest", "route_pattern": "/orders/{id}", "methods": ["get"]}),
        Activate(),
    )
    s.op(
        "channel",
        "b",
        Create({"name": "b", "protocol": "rest", "route_pattern": "/orders/{id}/items/{item}"}),
        Activate(),
    )
    s.op("channel", "c", Create({"name": "c", "protocol": "rest", "route_pattern": "/x", "priority": 5}), Activate())
    s.op("channel", "k", Create({"name": "k", "protocol": "kafka", "topic": "t"}), Activate())
    snap = build_snapshot(s.state, engine_factory=None)
    table = route_table(snap)
    assert [(r.channel, r.segments, r.methods) for r in table.entries] == [
        ("c", (("static", "x"),), frozenset()),
        ("b", (("static", "orders"), ("param", "id"), ("static", "items"), ("param", "item")), frozenset()),
        ("a", (("static", "orders"), ("param", "id")), frozenset({"GET"})),
    ]
    assert snap.channels["k"].channel.topic == "t" and snap.engine is None


def test_channels_sharing_a_name_share_one_engine_channel() -> None:
    s = Store()
    s.op("workflow", "w1", Create({**WF, "name": "w1"}), Activate())
    s.op("workflow", "w2", Create({**WF, "name": "w2"}), Activate())
    s.op("channel", "r1", Create({"name": "orders", "workflow_id": "w1", "priority": 1}), Activate())
    s.op("channel", "r2", Create({"name": "orders", "workflow_id": "w2"}), Activate())
    view = build_snapshot(s.state, engine_factory=None).channels["orders"]
    assert view.id == "r1"
    assert [b.workflow_id for b in view.workflows] == ["w1", "w2"]


def test_active_connectors_are_listed() -> None:
    s = Store().op(
        "connector",
        "db",
        Put({"name": "db", "connector_type": "http"}),
        Put({"name": "db", "connector_type": "http", "config": {"u": 1}}),
    )
    snap = build_snapshot(s.state, engine_factory=None)
    assert snap.connectors["db"]["config"] == {"u": 1} and snap.connectors["db"]["version"] == 2


def test_an_api_key_reference_that_cannot_resolve_is_a_reported_problem(monkeypatch: Any) -> None:
    monkeypatch.delenv("SNAPSHOT_UNSET_KEY", raising=False)
    monkeypatch.setenv("SNAPSHOT_SET_KEY", "k")
    s = Store()
    config = {"api_keys": ["env://SNAPSHOT_UNSET_KEY", "env://SNAPSHOT_SET_KEY", "plain"]}
    s.op("channel", "keyed", Create({"name": "keyed", "config": config}), Activate())
    snap = build_snapshot(s.state, engine_factory=None)
    assert "keyed" in snap.channels  # it still runs, refusing callers of the missing key
    assert [p["errors"] for p in snap.problems] == [
        [{"field": "config.api_keys", "message": "env://SNAPSHOT_UNSET_KEY is not set: this key matches no caller"}]
    ]


def test_a_channel_invalid_under_the_strict_contract_is_left_out_and_reported() -> None:
    s = Store()
    s.op("channel", "typo", Create({"name": "typo", "config": {"failure_mod": "fail_closed"}}), Activate())
    snap = build_snapshot(s.state, engine_factory=None)
    assert "typo" not in snap.channels
    assert snap.problems[0]["errors"][0]["field"] == "config.failure_mod"


def test_a_consumer_group_the_workers_do_not_use_is_reported_not_ignored() -> None:
    s = Store()
    orion = {"name": "k", "channel_type": "async", "protocol": "kafka", "topic": "t", "consumer_group": "orion-orders"}
    s.op("channel", "k", Create(orion), Activate())
    s.op("channel", "w", Create({"name": "w", "consumer_group": "acme.worker"}), Activate())
    snap = build_snapshot(s.state, engine_factory=None, topics=TopicNames("acme."))
    assert set(snap.channels) == {"k", "w"}  # Orion's documented channel still runs
    assert [(p["id"], p["errors"][0]["field"]) for p in snap.problems] == [("k", "consumer_group")]
    assert "not honoured" in snap.problems[0]["errors"][0]["message"]

"""The config store against the real broker: readers, writers, readiness, audit, backup/restore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from app.config_store import (
    Activate,
    ConfigReader,
    ConfigWriter,
    Create,
    Delete,
    NewVersion,
    Rollout,
    Snapshot,
    Update,
)
from app.config_store.reader import ConfigTopicMissing
from app.config_store.state import proposal_key
from app.engine import CompiledWorkflow, Engine
from app.errors import BadRequest, Conflict, ValidationFailed
from app.kafka.config import reader_config
from app.kafka.consumer import read_partition
from app.kafka.names import TopicNames
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings

WF = {
    "name": "orders",
    "condition": True,
    "tasks": [{"id": "t1", "name": "log", "function": {"name": "log", "input": {"message": "hi"}}}],
}

Readers = Callable[..., Awaitable[ConfigReader]]


@pytest.fixture
async def readers(settings: Settings, kafka_admin: AdminClient) -> AsyncIterator[Readers]:
    """`await make()` -> a ready ConfigReader on this test's own config/audit topics (stopped after)."""
    names = TopicNames(settings.topic_prefix)
    plans = [p for p in fixed_topic_plans(load_specs(), settings) if p.name in (names.config, names.audit)]
    apply_topics(kafka_admin, plans)
    made: list[ConfigReader] = []

    async def make(**kwargs: Any) -> ConfigReader:
        reader = ConfigReader(settings, name=f"reader-{len(made)}", **kwargs)
        made.append(reader)
        await reader.ready(20)
        return reader

    yield make
    for reader in made:
        await reader.stop()


async def test_writer_returns_only_after_its_change_is_applied(readers: Readers) -> None:
    reader = await readers()
    writer = ConfigWriter(reader)
    created = await writer.apply("workflow", "orders", Create(WF), actor="alice")
    # No waiting here: the local reader has folded the write when apply returns.
    assert reader.state.get("workflow", "orders").revision == created.revision == 1
    assert reader.applied_offset >= created.offset
    assert reader.outcome_at(created.offset).status == "applied"
    assert created.object is not None and created.object.draft == 1

    await writer.apply("workflow", "orders", Activate(), actor="alice")
    await writer.apply("channel", "orders", Create({"name": "orders", "workflow_id": "orders"}), actor="alice")
    activated = await writer.apply("channel", "orders", Activate(), actor="alice")
    snap = reader.snapshot
    assert snap.offset >= activated.offset
    assert isinstance(snap.engine, Engine)
    bound = snap.channels["orders"].workflows
    assert [(b.workflow_id, b.version, b.rollout) for b in bound] == [("orders", 1, (0, 100))]
    assert isinstance(bound[0].compiled, CompiledWorkflow)


async def test_a_later_reader_becomes_ready_via_a_marker_and_folds_the_same_state(readers: Readers) -> None:
    first = await readers()
    writer = ConfigWriter(first)
    await writer.apply("workflow", "orders", Create(WF))
    await writer.apply("workflow", "orders", Activate())
    await writer.apply("workflow", "orders", NewVersion())
    await writer.apply("workflow", "orders", Update({**WF, "name": "orders v2"}))
    await writer.apply("workflow", "orders", Activate(30))
    await writer.apply("workflow", "gone", Create(WF))
    await writer.apply("workflow", "gone", Delete())
    await writer.apply(
        "connector",
        "api",
        Create({"name": "api", "connector_type": "http", "config": {"type": "http", "url": "http://127.0.0.1:1"}}),
    )
    late = await readers()
    assert late.is_ready
    assert late.state.fingerprint() == first.state.fingerprint()
    obj = late.state.get("workflow", "orders")
    assert {n: (d["status"], d["rollout_percentage"]) for n, d in obj.versions.items()} == {
        1: ("active", 70),
        2: ("active", 30),
    }  # history kept, both versions readable
    assert obj.versions[2]["name"] == "orders v2"
    assert late.state.get("workflow", "gone") is None
    assert late.snapshot.workflows["orders"][0].rollout == (0, 30)
    assert late.snapshot.connectors["api"]["version"] == 1


async def test_stale_write_is_rejected_identically_on_every_reader(readers: Readers) -> None:
    a, b = await readers(), await readers()
    wa, wb = ConfigWriter(a), ConfigWriter(b)
    await wa.apply("workflow", "orders", Create(WF))
    await b.sync()
    # Both writers saw revision 1 and race; the fold lets exactly one through.
    results = await asyncio.gather(
        wa.apply("workflow", "orders", Update({**WF, "name": "from a"}), expected_revision=1),
        wb.apply("workflow", "orders", Update({**WF, "name": "from b"}), expected_revision=1),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1 and len(losses) == 1 and isinstance(losses[0], Conflict)
    await a.sync()
    await b.sync()
    assert a.state.fingerprint() == b.state.fingerprint()
    assert a.state.get("workflow", "orders").revision == 2
    rejected_a = [(o.offset, o.key, o.reason) for o in a.recent_outcomes() if o.status == "rejected"]
    rejected_b = [(o.offset, o.key, o.reason) for o in b.recent_outcomes() if o.status == "rejected"]
    assert rejected_a == rejected_b and len(rejected_a) >= 1


async def test_retry_safe_operations_are_retried_on_fresh_state(readers: Readers) -> None:
    a, b = await readers(), await readers()
    wa, wb = ConfigWriter(a), ConfigWriter(b)
    await wa.apply("workflow", "orders", Create(WF))
    await wa.apply("workflow", "orders", Activate())
    await wa.apply("workflow", "orders", NewVersion())
    await b.sync()
    # Both activate the same draft at once: one activates it, the retried one finds no draft left.
    results = await asyncio.gather(
        wa.apply("workflow", "orders", Activate(40)),
        wb.apply("workflow", "orders", Activate(40)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and "no draft" in str(errors[0])


async def test_invalid_definition_is_refused_by_the_writer_and_recorded_by_readers(readers: Readers) -> None:
    reader = await readers()
    writer = ConfigWriter(reader)
    bad = {**WF, "condition": {"==": [1]}}
    with pytest.raises(ValidationFailed, match="condition"):
        await writer.apply("workflow", "bad", Create(bad))
    assert reader.state.get("workflow", "bad") is None
    # A record written without validation (another tool, an older version) must not crash readers.
    await writer.apply("workflow", "bad", Create(bad), validate=False)
    raw = {
        "kind": "workflow",
        "id": "bad",
        "op": "x",
        "expected_revision": 1,
        "revision": 2,
        "object": {"versions": {"1": {**bad, "status": "active", "rollout_percentage": 100}}},
    }
    await reader.propose(proposal_key("workflow", "bad", 2, "raw"), orjson.dumps(raw))
    await reader.propose("workflow/bad#9.junk", b"{not json")
    other = await readers()
    obj = other.state.get("workflow", "bad")
    assert obj is not None and "condition" in obj.errors_of(1)[0]["field"]
    assert other.snapshot.workflows["bad"][0].compiled is None
    assert any(p["id"] == "bad" for p in other.snapshot.problems)


async def test_audit_records_every_applied_change(readers: Readers, settings: Settings) -> None:
    reader = await readers()
    writer = ConfigWriter(reader)
    await writer.apply("workflow", "orders", Create(WF), actor="alice")
    await writer.apply("workflow", "orders", Activate(), actor="bob")
    with pytest.raises(Conflict):
        await writer.apply("workflow", "orders", Create(WF), actor="eve")  # refused: no audit record
    records: list[dict[str, Any]] = []
    consumer = Consumer(reader_config(settings))
    try:
        await asyncio.to_thread(
            read_partition,
            consumer,
            TopicNames(settings.topic_prefix).audit,
            0,
            0,
            until=lambda m: len(records) >= 2,
            on_message=lambda m: records.append({"key": m.key().decode(), **orjson.loads(m.value())}),
        )
    finally:
        consumer.close()
    assert [(r["key"], r["who"], r["what"]) for r in records] == [
        ("workflow/orders", "alice", "create"),
        ("workflow/orders", "bob", "activate"),
    ]
    assert records[1]["before"] == {"1": {"status": "draft", "rollout_percentage": 100}}
    assert records[1]["after"] == {"1": {"status": "active", "rollout_percentage": 100}}
    assert records[1]["revision"] == 2 and "when" in records[1]


async def test_wait_for_offset_and_change_listeners(readers: Readers) -> None:
    reader = await readers()
    seen: list[Snapshot] = []
    unsubscribe = reader.add_listener(seen.append)
    assert await reader.wait_for_offset(reader.applied_offset + 1000, 0.05) is False
    result = await ConfigWriter(reader).apply("workflow", "orders", Create(WF))
    assert await reader.wait_for_offset(result.offset, 0.05) is True
    assert seen and seen[-1].generation == reader.state.generation
    unsubscribe()


async def test_rollout_through_the_writer_and_bad_requests_change_nothing(readers: Readers) -> None:
    reader = await readers()
    writer = ConfigWriter(reader)
    await writer.apply("workflow", "orders", Create(WF))
    before = reader.applied_offset
    with pytest.raises(BadRequest, match="two active versions"):
        await writer.apply("workflow", "orders", Rollout(50))
    with pytest.raises(ValidationFailed, match="name"):
        await writer.apply("workflow", "orders", Update({**WF, "name": ""}))
    with pytest.raises(BadRequest, match="invalid workflow id"):
        await writer.apply("workflow", "no spaces allowed", Create(WF))
    assert reader.state.get("workflow", "orders").revision == 1
    assert reader.applied_offset == before  # nothing was written


async def test_backup_and_restore_round_trip(
    readers: Readers, settings: Settings, kafka_admin: AdminClient, kafka_bootstrap: str
) -> None:
    source = await readers()
    writer = ConfigWriter(source)
    await writer.apply("workflow", "orders", Create(WF))
    await writer.apply("workflow", "orders", Activate())
    await writer.apply("channel", "orders", Create({"name": "orders", "workflow_id": "orders"}))
    backup = await writer.backup()
    assert [(o["kind"], o["id"]) for o in backup["objects"]] == [
        ("channel", "orders"),
        ("workflow", "orders"),
    ]

    target_settings = make_test_settings(kafka_bootstrap)
    names = TopicNames(target_settings.topic_prefix)
    apply_topics(
        kafka_admin,
        [p for p in fixed_topic_plans(load_specs(), target_settings) if p.name in (names.config, names.audit)],
    )
    target = ConfigReader(target_settings)
    try:
        await target.ready(20)
        target_writer = ConfigWriter(target)
        await target_writer.apply("workflow", "extra", Create(WF))
        results = await target_writer.restore(orjson.loads(orjson.dumps(backup)), actor="ops", replace=True)
        assert sorted((r.kind, r.id, r.op) for r in results) == [
            ("channel", "orders", "restore"),
            ("workflow", "extra", "delete"),
            ("workflow", "orders", "restore"),
        ]
        again = await target_writer.restore(backup)
        assert [r.changed for r in again] == [False, False]
        restored = {(o.kind, o.id): o.versions for o in target.state.objects()}
        assert restored == {(o.kind, o.id): o.versions for o in source.state.objects()}
        with pytest.raises(Exception, match="not a Quasar config backup"):
            await target_writer.restore({"objects": []})
    finally:
        await target.stop()


async def test_reader_refuses_a_missing_config_topic(kafka_bootstrap: str) -> None:
    reader = ConfigReader(make_test_settings(kafka_bootstrap))
    with pytest.raises(ConfigTopicMissing, match="topics apply"):
        await reader.ready(5)
    await reader.stop()

"""Config records do not grow with an object's history (issue 14, low: "workflows whose history nears 1 MB
can no longer get new versions").

Archived versions are immutable records of their own, listed by chained index records; a proposal carries
only the draft and active versions and names the newest index (app/config_store/state.py). The fold stays
deterministic and compaction-safe, and proposals of the layout before (archived versions inline) still fold.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from app.config_store import Activate, ConfigReader, ConfigWriter, Create, NewVersion, Rollback, Update
from app.config_store.operations import Operation
from app.config_store.state import ARCHIVE_INDEX_SIZE, ARCHIVE_PREFIX, ConfigState, proposal_key
from app.config_store.writer import proposal_records
from app.kafka.config import reader_config
from app.kafka.consumer import read_partition
from app.kafka.names import TopicNames
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings


def sizeable_workflow(tasks: int = 100, tag: str = "") -> dict[str, Any]:
    """A workflow of about 250 bytes per task (100 tasks: ~27 kB stored per version)."""
    return {
        "name": f"big{tag}",
        "condition": True,
        "tasks": [
            {
                "id": f"t{i}",
                "name": f"t{i}",
                "function": {
                    "name": "map",
                    "input": {"mappings": [{"path": f"data.f{i}", "logic": {"cat": [tag, "x" * 180]}}]},
                },
            }
            for i in range(tasks)
        ],
    }


class Log:
    """A config log written the way ConfigWriter writes it, folded by a reader as it grows."""

    def __init__(self) -> None:
        self.state = ConfigState()
        self.records: list[tuple[str, bytes | None]] = []

    def append(self, key: str, value: bytes | None) -> Any:
        self.records.append((key, value))
        return self.state.apply(len(self.records) - 1, key, value)

    def write(self, kind: str, oid: str, op: Operation) -> Any:
        current = self.state.get_any(kind, oid)
        live = current if current is not None and not current.deleted else None
        change = op(kind, oid, live, "2026-12-03T12:00:00Z")
        releases = change.releases if change.releases is not None else (dict(live.releases) if live else {})
        rev = self.state.revision_of(kind, oid)
        *archives, proposal = proposal_records(
            kind, oid, change, releases, rev, "test", 0, previous=live, written=self.state.has_record
        )
        for archive in archives:
            assert self.append(*archive).reason == "archive"
        outcome = self.append(*proposal)
        assert outcome.applied, outcome
        if current is not None:  # the writer's GC: the superseded proposal is tombstoned
            self.append(current.key, None)
        return outcome

    def compacted(self) -> list[tuple[int, str, bytes | None]]:
        """What compaction leaves: the latest record of every key, tombstoned keys gone, offsets kept."""
        last = {key: i for i, (key, _) in enumerate(self.records)}
        return [(i, k, v) for i, (k, v) in enumerate(self.records) if last[k] == i and v is not None]


def fold(records: list[tuple[int, str, bytes | None]]) -> ConfigState:
    state = ConfigState()
    for offset, key, value in records:
        state.apply(offset, key, value)
    return state


def grow(log: Log, versions: int, wf: dict[str, Any]) -> None:
    log.write("workflow", "big", Create(wf))
    log.write("workflow", "big", Activate())
    for n in range(2, versions + 1):
        log.write("workflow", "big", NewVersion())
        if n % 50 == 0:  # some versions change the definition (each one compiles: ~40 ms for 100 tasks)
            log.write("workflow", "big", Update({**wf, "name": f"big v{n}"}))
        log.write("workflow", "big", Activate())


def test_500_versions_of_a_sizeable_workflow_keep_every_record_small() -> None:
    wf = sizeable_workflow()
    one_version = len(orjson.dumps(wf))
    log = Log()
    grow(log, 500, wf)
    obj = log.state.get("workflow", "big")
    assert obj is not None and obj.active == [500] and len(obj.versions) == 500
    assert obj.versions[500]["name"] == "big v500" and obj.versions[1]["status"] == "archived"
    # A proposal holds the draft and the active versions at most; an index lists ARCHIVE_INDEX_SIZE digests.
    bound = 3 * one_version + 16_384
    sizes = [len(v) for _, v in log.records if v is not None]
    assert max(sizes) < bound, (max(sizes), bound)
    index_sizes = [len(v) for k, v in log.records if v is not None and "/index." in k]
    assert max(index_sizes) < ARCHIVE_INDEX_SIZE * 64
    # The same history in the layout before would have been one record of every version.
    assert len(orjson.dumps({str(n): d for n, d in obj.versions.items()})) > 500 * one_version


def test_the_fold_is_deterministic_and_compaction_safe() -> None:
    log = Log()
    grow(log, 300, sizeable_workflow(10))
    log.write("workflow", "big", Rollback(7))  # an archived version comes back as a new active version
    log.write("workflow", "other", Create(sizeable_workflow(3, "o")))
    want = log.state.fingerprint()
    full = [(i, k, v) for i, (k, v) in enumerate(log.records)]
    assert fold(full).fingerprint() == want
    compacted = log.compacted()
    assert len(compacted) < len(full) / 2
    assert fold(compacted).fingerprint() == want
    rnd = random.Random(7)  # compaction in progress: any older records may still be there
    last = {key: i for i, (key, _) in enumerate(log.records)}
    partial = [(i, k, v) for i, k, v in full if last[k] == i or rnd.random() < 0.5]
    assert fold(partial).fingerprint() == want
    obj = log.state.get("workflow", "big")
    assert obj is not None and obj.active == [301] and obj.versions[301]["name"] == obj.versions[7]["name"]


def test_a_proposal_in_the_layout_before_still_folds_and_the_next_write_moves_it_over() -> None:
    log = Log()
    grow(log, 3, sizeable_workflow(2))
    state = log.state.get("workflow", "big")
    assert state is not None
    # The same object as one record with every version inline (what Quasar wrote before).
    old = {
        "kind": "workflow", "id": "big", "op": "activate", "expected_revision": 0, "revision": 1, "ts": 0,
        "object": {"versions": {str(n): d for n, d in state.versions.items()}},
    }  # fmt: skip
    legacy = Log()
    assert legacy.append(proposal_key("workflow", "big", 1, "old"), orjson.dumps(old)).applied
    assert legacy.state.get("workflow", "big").versions == state.versions  # type: ignore[union-attr]
    legacy.write("workflow", "big", NewVersion())
    legacy.write("workflow", "big", Activate())
    after = legacy.state.get("workflow", "big")
    assert after is not None and after.active == [4] and len(after.versions) == 4
    assert fold(legacy.compacted()).fingerprint() == legacy.state.fingerprint()


def test_archive_records_that_are_missing_or_forged_leave_the_proposal_unapplied() -> None:
    log = Log()
    grow(log, 2, sizeable_workflow(2))
    records = list(log.records)
    archives = [(k, v) for k, v in records if k.startswith(ARCHIVE_PREFIX)]
    proposals = [(k, v) for k, v in records if not k.startswith(ARCHIVE_PREFIX) and v is not None]
    last_key, last_value = proposals[-1]
    # The proposal alone, without the archive records it names: ignored, identically on every reader.
    alone = ConfigState()
    outcome = alone.apply(0, last_key, last_value)
    assert outcome.status == "ignored" and "not on the log" in outcome.reason
    # An archive record whose content does not match the digest in its key is not kept.
    key, value = archives[0]
    assert value is not None
    forged = ConfigState()
    assert "digest" in forged.apply(0, key, value.replace(b"big", b"bad")).reason
    assert not forged.has_record(key)


# -- on the real broker: the writer, a late reader, backup and restore -----------------------------------

Readers = Callable[..., Awaitable[ConfigReader]]


@pytest.fixture
async def small_budget(kafka_bootstrap: str, kafka_admin: AdminClient) -> AsyncIterator[tuple[Settings, Readers]]:
    """Config topics under a 1,000,000-byte record budget (librdkafka's default message.max.bytes)."""
    settings = make_test_settings(kafka_bootstrap, max_record_bytes=1_000_000, max_payload_size=800_000)
    names = TopicNames(settings.topic_prefix)
    apply_topics(
        kafka_admin, [p for p in fixed_topic_plans(load_specs(), settings) if p.name in (names.config, names.audit)]
    )
    made: list[ConfigReader] = []

    async def make(target: Settings = settings) -> ConfigReader:
        reader = ConfigReader(target, name=f"reader-{len(made)}")
        made.append(reader)
        await reader.ready(20)
        return reader

    yield settings, make
    for reader in made:
        await reader.stop()


def config_record_sizes(settings: Settings) -> list[int]:
    topic = TopicNames(settings.topic_prefix).config
    consumer = Consumer(reader_config(settings))
    sizes: list[int] = []
    end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    try:
        read_partition(
            consumer,
            topic,
            0,
            0,
            until=lambda m: (m.offset() or 0) >= end - 1,
            on_message=lambda m: sizes.append(len(m.value() or b"") + len(m.key() or b"")),
            timeout=30,
        )
    finally:
        consumer.close()
    return sizes


@pytest.mark.timeout(300)
async def test_a_workflow_whose_history_passes_the_record_budget_still_gets_new_versions(
    small_budget: tuple[Settings, Readers], kafka_admin: AdminClient
) -> None:
    settings, readers = small_budget
    wf = sizeable_workflow()  # ~27 kB a version: 40 versions are over the 1,000,000-byte budget
    reader = await readers()
    writer = ConfigWriter(reader)
    await writer.apply("workflow", "big", Create(wf))
    await writer.apply("workflow", "big", Activate())
    for _ in range(2, 46):
        await writer.apply("workflow", "big", NewVersion())
        await writer.apply("workflow", "big", Activate())
    obj = reader.state.get("workflow", "big")
    assert obj is not None and obj.active == [45] and len(obj.versions) == 45
    assert reader.snapshot.workflows["big"][0].version == 45
    sizes = config_record_sizes(settings)
    assert max(sizes) < 3 * len(orjson.dumps(wf)) + 16_384, max(sizes)
    assert sum(sizes) > settings.max_record_bytes  # the history itself is larger than one record may be

    late = await readers()  # a reader starting now folds the same config from the log
    assert late.state.fingerprint() == reader.state.fingerprint()

    backup = await writer.backup()
    (entry,) = [o for o in backup["objects"] if o["id"] == "big"]
    assert len(entry["versions"]) == 45
    elsewhere = make_test_settings(settings.kafka_bootstrap or "", max_record_bytes=1_000_000, max_payload_size=800_000)
    names = TopicNames(elsewhere.topic_prefix)
    apply_topics(
        kafka_admin, [p for p in fixed_topic_plans(load_specs(), elsewhere) if p.name in (names.config, names.audit)]
    )
    restored_reader = await readers(elsewhere)
    await ConfigWriter(restored_reader).restore(backup)
    restored = restored_reader.state.get("workflow", "big")
    assert restored is not None and restored.versions == obj.versions
    assert max(config_record_sizes(elsewhere)) < 3 * len(orjson.dumps(wf)) + 16_384

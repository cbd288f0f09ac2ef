"""Topic specs (topics/*.toml), `apply_topics`, channel topics and `quasar topics` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from app.cli import topics as topics_cli
from app.kafka.admin import topic_partitions
from app.kafka.names import TopicNames
from app.kafka.topics import (
    FIXED_ROLES,
    TopicMismatch,
    TopicPlan,
    TopicSpecError,
    apply_topics,
    channel_topic_plan,
    default_topics_dir,
    ensure_channel_topic,
    fixed_topic_plans,
    load_specs,
    output_topic_plan,
)
from app.settings import Settings

SPECS = load_specs()


def test_repo_specs_declare_every_topic_with_the_documented_shape() -> None:
    assert set(SPECS) == {
        *("config", "audit", "replies", "traces", "dlq", "channel", "output"),
        *("flow_events", "flow_state", "flow_results", "tasks"),
    }
    # Flow state is co-partitioned with the instance events: one owner per instance for both.
    assert SPECS["flow_events"].partitions == SPECS["flow_state"].partitions
    assert SPECS["flow_state"].configs["cleanup.policy"] == "compact"
    config = SPECS["config"]
    assert config.partitions == 1
    assert config.configs["cleanup.policy"] == "compact"
    # Recent proposals must never be compacted (the fold must see rival proposals): at least a day.
    assert int(config.configs["min.compaction.lag.ms"]) >= 86_400_000
    assert SPECS["traces"].configs["cleanup.policy"] == "compact,delete"
    assert SPECS["channel"].partitions is None and SPECS["channel"].is_template


def test_plans_take_names_from_the_prefix_and_default_partitions() -> None:
    s = Settings(kafka_bootstrap="x:1", topic_prefix="acme.", default_partitions=6)
    plans = {p.name: p for p in fixed_topic_plans(SPECS, s)}
    assert set(plans) == {getattr(TopicNames("acme."), role) for role in FIXED_ROLES}
    assert "acme.flows.events" in plans and "acme.dlq" in plans
    assert plans["acme.replies"].partitions == SPECS["replies"].partitions
    ch = channel_topic_plan(SPECS, s, "orders")
    assert (ch.name, ch.partitions) == ("acme.ch.orders", 6)
    assert channel_topic_plan(SPECS, s, "orders", declared="legacy-orders", partitions=3).name == "legacy-orders"
    assert output_topic_plan(SPECS, s, "orders").name == "acme.out.orders"
    with pytest.raises(TopicSpecError, match="invalid topic name"):
        channel_topic_plan(SPECS, s, "orders", declared="bad name!")


def _spec_dir(tmp_path: Path, **overrides: str) -> Path:
    for src in default_topics_dir().glob("*.toml"):
        (tmp_path / src.name).write_text(overrides.pop(src.stem, src.read_text()))
    for name, text in overrides.items():
        (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("replies", 'role = "replies"\npartitions = 0\n', "partitions must be an integer >= 1"),
        ("replies", 'role = "replies"\npartitions = "8"\n', "partitions must be an integer >= 1"),
        ("replies", 'role = "replies"\n', "needs `partitions`"),
        ("replies", 'role = "replys"\npartitions = 8\n', "role must be one of"),
        ("replies", 'role = "replies"\npartitions = 8\nretention = 1\n', r"unknown keys \['retention'\]"),
        ("replies", 'role = "replies"\npartitions = 8\nconfigs = 3\n', r"\[configs\] must be a table"),
        ("replies", 'role = "replies"\npartitions = 8\n[configs]\na = [1]\n', "config values must be"),
        ("replies", 'role = "replies"\npartitions = [', "replies.toml"),
        ("extra", 'role = "dlq"\npartitions = 1\n', "role 'dlq' already declared"),
    ],
)
def test_invalid_spec_files_are_rejected_with_the_file_and_reason(
    tmp_path: Path, file: str, text: str, message: str
) -> None:
    with pytest.raises(TopicSpecError, match=message) as info:
        load_specs(_spec_dir(tmp_path, **{file: text}))
    assert str(tmp_path) in info.value.message


def test_missing_spec_files_are_named(tmp_path: Path) -> None:
    (_spec_dir(tmp_path) / "audit.toml").unlink()
    with pytest.raises(TopicSpecError, match=r"no spec for \['audit'\]"):
        load_specs(tmp_path)
    with pytest.raises(TopicSpecError, match="does not exist"):
        load_specs(tmp_path / "nope")


def test_apply_creates_every_topic_then_is_idempotent(kafka_admin: AdminClient, settings: Settings) -> None:
    plans = fixed_topic_plans(SPECS, settings)
    first = apply_topics(kafka_admin, plans)
    assert [(r.name, r.status) for r in first] == [(p.name, "created") for p in plans]
    on_broker = topic_partitions(kafka_admin)
    assert {p.name: on_broker[p.name] for p in plans} == {p.name: p.partitions for p in plans}

    second = apply_topics(kafka_admin, plans)
    assert [r.status for r in second] == ["ok"] * len(plans)
    assert topic_partitions(kafka_admin) == on_broker  # nothing created or changed


def test_partition_mismatch_refuses_with_a_clear_message(kafka_admin: AdminClient, settings: Settings) -> None:
    replies = TopicNames(settings.topic_prefix).replies
    apply_topics(kafka_admin, [TopicPlan(replies, 3)])
    plans = fixed_topic_plans(SPECS, settings)
    with pytest.raises(TopicMismatch, match=f"topic {replies} has 3 partitions, spec says 8") as info:
        apply_topics(kafka_admin, plans)
    assert info.value.details == [replies]
    # Non-strict: the same finding as data, and everything else was still created.
    results = {r.name: r for r in apply_topics(kafka_admin, plans, strict=False)}
    assert results[replies].status == "mismatch" and results[replies].partitions == 3
    assert {r.status for n, r in results.items() if n != replies} == {"ok"}


def test_config_drift_is_reported_not_fatal(kafka_admin: AdminClient, settings: Settings) -> None:
    config = TopicNames(settings.topic_prefix).config
    apply_topics(kafka_admin, [TopicPlan(config, 1, configs={"cleanup.policy": "delete"})])
    (result,) = [r for r in apply_topics(kafka_admin, fixed_topic_plans(SPECS, settings)) if r.name == config]
    assert result.status == "drift"
    assert "cleanup.policy=delete (spec compact)" in result.detail


def test_channel_topic_creation_is_idempotent(kafka_admin: AdminClient, settings: Settings) -> None:
    plan = channel_topic_plan(SPECS, settings, "orders")
    first = ensure_channel_topic(kafka_admin, plan.name, plan.partitions, configs=plan.configs)
    again = ensure_channel_topic(kafka_admin, plan.name, plan.partitions, configs=plan.configs)
    assert (first.status, again.status) == ("created", "ok")
    assert topic_partitions(kafka_admin)[plan.name] == settings.default_partitions
    other = ensure_channel_topic(kafka_admin, plan.name, plan.partitions + 1)
    assert other.status == "mismatch" and other.partitions == plan.partitions


def test_concurrent_channel_topic_creators_both_succeed(kafka_bootstrap: str, settings: Settings) -> None:
    name = TopicNames(settings.topic_prefix).channel("race")
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        barrier.wait()
        try:
            results.append(ensure_channel_topic(admin, name, 2).status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(results).count("created") <= 1 and len(results) == 4
    assert set(results) <= {"created", "ok"}


def test_channel_topic_rejects_bad_names_and_partitions(kafka_admin: AdminClient) -> None:
    with pytest.raises(TopicSpecError, match="invalid topic name"):
        ensure_channel_topic(kafka_admin, "no spaces", 1)
    with pytest.raises(TopicSpecError, match="partitions must be >= 1"):
        ensure_channel_topic(kafka_admin, "fine.name", 0)


def test_cli_topics_apply_exit_codes_and_list(
    kafka_admin: AdminClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUASAR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("QUASAR_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    created = runner.invoke(topics_cli.app, ["apply"])
    assert created.exit_code == 0, created.output
    assert created.output.count("created") == len(FIXED_ROLES)
    again = runner.invoke(topics_cli.app, ["apply"])
    assert again.exit_code == 0 and "created" not in again.output

    listed = runner.invoke(topics_cli.app, ["list"])
    assert listed.exit_code == 0
    assert f"{settings.topic_prefix}replies" in listed.output

    monkeypatch.setenv("QUASAR_TOPIC_PREFIX", settings.topic_prefix + "b.")
    apply_topics(kafka_admin, [TopicPlan(f"{settings.topic_prefix}b.dlq", 2)])
    mismatch = runner.invoke(topics_cli.app, ["apply"])
    assert mismatch.exit_code == 2
    assert "mismatch" in mismatch.output


def test_cli_topics_apply_without_broker_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUASAR_KAFKA_BOOTSTRAP", raising=False)
    result = CliRunner().invoke(topics_cli.app, ["apply"])
    assert result.exit_code == 1
    assert "QUASAR_KAFKA_BOOTSTRAP" in result.output


def test_quasar_cli_registers_the_topics_group() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "topics", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert "apply" in out.stdout and "list" in out.stdout


@pytest.mark.parametrize("process", ["worker", "gateway"])
def test_processes_refuse_to_start_on_a_partition_mismatch(
    kafka_admin: AdminClient, settings: Settings, process: str
) -> None:
    replies = TopicNames(settings.topic_prefix).replies
    apply_topics(kafka_admin, [TopicPlan(replies, 3)])
    apply_topics(kafka_admin, fixed_topic_plans(SPECS, settings), strict=False)  # every other topic exists
    env = {
        **os.environ,
        "QUASAR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", process], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert f"refusing to run: topic {replies} has 3 partitions, spec says 8" in done.stderr

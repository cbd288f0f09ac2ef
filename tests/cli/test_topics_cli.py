"""`quasar topics apply` covers the active channels' request and output topics and `--fix` repairs config
drift (plan printed first), on the real broker."""

from __future__ import annotations

import asyncio
import uuid

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from typer.testing import CliRunner

from app.cli import _register, cli
from app.kafka.admin import topic_partitions
from app.kafka.names import TopicNames
from app.settings import Settings
from bench._worker_setup import activate_channel
from bench.faults import RID_WORKFLOW

_register()
runner = CliRunner()


def _retention(admin: AdminClient, topic: str) -> str:
    (fut,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    return str(fut.result()["retention.ms"].value)


def test_apply_creates_the_channel_topics_and_fix_repairs_drift(
    module_settings: Settings, env: dict[str, str], kafka_admin: AdminClient
) -> None:
    settings = module_settings
    names = TopicNames(settings.topic_prefix)
    env = {**env, "QUASAR_DEFAULT_PARTITIONS": str(settings.default_partitions)}
    first = runner.invoke(cli, ["topics", "apply", "--no-channels"], env=env)
    assert first.exit_code == 0, first.output
    channel = f"ch{uuid.uuid4().hex[:6]}"
    doc = {
        "channel_id": channel,
        "name": channel,
        "channel_type": "async",
        "protocol": "kafka",
        "workflow_ids": [channel],
        "config": {"output": True},
    }
    asyncio.run(activate_channel(settings, channel, {**RID_WORKFLOW, "workflow_id": channel}, channel_doc=doc))
    request, output = names.channel(channel), names.output(channel)
    # Nothing consumes the channel yet: `topics apply` is what creates its topics.
    result = runner.invoke(cli, ["topics", "apply"], env=env)
    assert result.exit_code == 0, result.output
    present = topic_partitions(kafka_admin)
    assert present.get(request) == 2 and present.get(output) == 2, result.output
    assert _retention(kafka_admin, output) == "604800000"

    # Someone shortens the output topic's retention: reported as drift, then fixed with --fix.
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        output,
        incremental_configs=[ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)],
    )
    for fut in kafka_admin.incremental_alter_configs([resource]).values():
        fut.result()
    drift = runner.invoke(cli, ["topics", "apply"], env=env)
    assert drift.exit_code == 0 and "drift" in drift.output, drift.output
    refused = runner.invoke(cli, ["topics", "apply", "--fix"], env=env, input="n\n")
    assert refused.exit_code == 1 and "retention.ms" in refused.output, refused.output
    assert _retention(kafka_admin, output) == "1000"  # answered no: nothing changed
    fixed = runner.invoke(cli, ["topics", "apply", "--fix", "--yes"], env=env)
    assert fixed.exit_code == 0, fixed.output
    assert fixed.output.index("config changes (--fix)") < fixed.output.index("fixed 1 config(s)"), fixed.output
    assert _retention(kafka_admin, output) == "604800000"
    again = runner.invoke(cli, ["topics", "apply", "--fix"], env=env)
    assert again.exit_code == 0 and "no config drift to fix" in again.output, again.output

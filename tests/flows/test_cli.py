"""`quasar flows|schedules|instances` against a real gateway, a real runner process and the broker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from app.cli import _register, cli
from app.settings import Settings
from tests.cli.admin_gateway import admin_gateway
from tests.fixtures.polling import poll
from tests.flows.runtime_support import RunnerProcess

_register()
runner = CliRunner()


def test_start_list_get_signal_and_preview_from_the_command_line(settings: Settings, tmp_path: Path) -> None:
    env = {"QUASAR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "", "QUASAR_TOPIC_PREFIX": settings.topic_prefix}
    with admin_gateway(settings) as gateway:
        url = ["--url", gateway.url]
        flow = {
            "flow_id": "cli-flow",
            "name": "CLI",
            "steps": [{"id": "d", "type": "delay", "delay": {"duration": "100ms"}}],
        }
        (tmp_path / "flow.json").write_text(json.dumps(flow))
        assert runner.invoke(cli, ["flows", "apply", "-f", str(tmp_path / "flow.json"), *url], env=env).exit_code == 0
        assert runner.invoke(cli, ["flows", "activate", "cli-flow", *url], env=env).exit_code == 0
        flows_runner = RunnerProcess(settings, "cli-runner", tmp_path)
        try:
            poll(lambda: flows_runner.owned(), within=90, what="the runner owns its partitions")
            started = runner.invoke(
                cli,
                ["instances", "start", "cli-flow", "--data", '{"a": 1}', "--key", "k1", "--wait", "30", *url],
                env=env,
            )
            assert started.exit_code == 0, started.output
            instance = json.loads(started.output)
            assert (instance["id"], instance["status"], instance["output"]) == ("cli-flow:k1", "completed", {"a": 1})

            listed = runner.invoke(cli, ["instances", "list", "--flow", "cli-flow", *url], env=env)
            assert listed.exit_code == 0 and "cli-flow:k1" in listed.output and "completed" in listed.output
            got = runner.invoke(cli, ["instances", "get", "cli-flow:k1", *url], env=env)
            assert got.exit_code == 0 and json.loads(got.output)["outputs"]["d"]["due"] > 0
            refused = runner.invoke(cli, ["instances", "signal", "cli-flow:k1", "cancel", *url], env=env)
            assert refused.exit_code == 4 and "CONFLICT" in refused.output  # 409 -> exit 4
            missing = runner.invoke(cli, ["instances", "get", "nope", *url], env=env)
            assert missing.exit_code == 3
        finally:
            flows_runner.stop()

        schedule = {
            "schedule_id": "cli-s",
            "name": "S",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "flow_id": "cli-flow",
        }
        created = httpx.post(f"{gateway.url}/api/v1/admin/schedules", json=schedule, timeout=30)
        assert created.status_code == 201, created.text
        preview = runner.invoke(cli, ["schedules", "preview", "cli-s", "--count", "3", *url], env=env)
        assert preview.exit_code == 0, preview.output
        assert preview.output.count("T02:30:00+0") == 3 and preview.output.count("T01:30:00+00:00") == 3

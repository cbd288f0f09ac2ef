"""`quasar keys|policies|release`: the governed-change verbs, directly on the config topic (no gateway),
with the exit codes scripts rely on (4 = a policy refused it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import _register, cli
from app.settings import Settings
from tests.cli.test_cli_admin import uid, wf
from tests.gateway.conftest import apply_quasar_topics

_register()
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def topics(module_settings: Settings) -> None:
    apply_quasar_topics(module_settings)


def run(args: list[str], env: dict[str, str]) -> Any:
    return runner.invoke(cli, args, env=env)


def test_release_flow_from_the_command_line(env: dict[str, str], tmp_path: Path, module_settings: Settings) -> None:
    wid = uid("cli-rel")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"match": {"ids": [wid]}, "min_approvers": 1, "exclude_author": False}))
    applied = run(["policies", "apply", f"gov-{wid}", "-f", str(policy)], env)
    assert applied.exit_code == 0, applied.output
    doc = tmp_path / "wf.json"
    doc.write_text(json.dumps(wf(wid)))
    assert run(["workflows", "apply", "-f", str(doc)], env).exit_code == 0

    refused = run(["workflows", "activate", wid], env)
    assert refused.exit_code == 4, refused.output
    assert "POLICY_REFUSED" in refused.output

    r = run(["release", "request", "workflow", wid, "--json", "-m", "ship it"], env)
    assert r.exit_code == 0, r.output
    rid = json.loads(r.output)["id"]
    assert rid == f"workflow:{wid}:1"
    early = run(["release", "execute", rid], env)
    assert early.exit_code == 4 and "approved" in early.output
    assert run(["release", "approve", rid, "-m", "ok"], env).exit_code == 0
    done = run(["release", "execute", rid, "--json"], env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["state"] == "active"
    status = run(["release", "status", rid], env)
    assert status.exit_code == 0 and "executed" in status.output and "cli:" in status.output
    assert run(["release", "status", "workflow:nope:1"], env).exit_code == 3

    # A new draft that stops writing a field: `quasar diff` shows it and can fail a CI job on it.
    assert run(["workflows", "new-version", wid], env).exit_code == 0
    changed = wf(wid)
    changed["tasks"] = changed["tasks"][:1]
    doc.write_text(json.dumps(changed))
    assert run(["workflows", "apply", "-f", str(doc)], env).exit_code == 0
    shown = run(["diff", "workflow", wid], env)
    assert shown.exit_code == 0 and "breaking no longer writes data.order.flagged" in shown.output
    as_json = json.loads(run(["diff", "workflow", wid, "--json"], env).output)
    assert {"path": "tasks[flag]", "change": "removed"} in [
        {k: c[k] for k in ("path", "change")} for c in as_json["changes"]
    ]
    assert run(["diff", "workflow", wid, "--fail-on-breaking"], env).exit_code == 1


def test_keys_from_the_command_line(env: dict[str, str]) -> None:
    name = uid("k")
    created = run(["keys", "create", name, "--role", "editor", "--id", "orders-*"], env)
    assert created.exit_code == 0, created.output
    assert "qsr_" in created.output
    listed = run(["keys", "list"], env)
    assert name in listed.output and "qsr_" not in listed.output
    assert run(["keys", "revoke", name], env).exit_code == 0
    assert run(["keys", "create", uid("k"), "--role", "root"], env).exit_code == 2

"""`quasar workflows|channels|connectors|backup|restore`: against a gateway (`--url`) and directly on the
config topic (no `--url`), with the exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import _register, cli
from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway

_register()
runner = CliRunner()


def wf(wid: str, threshold: int = 10000) -> dict[str, Any]:
    return {
        "workflow_id": wid,
        "name": f"wf {wid}",
        "tags": ["cli"],
        "tasks": [
            {"id": "parse", "name": "Parse",
             "function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}}},
            {"id": "flag", "name": "Flag", "condition": {">": [{"var": "data.order.total"}, threshold]},
             "function": {"name": "map",
                          "input": {"mappings": [{"path": "data.order.flagged", "logic": True}]}}},
        ],
    }  # fmt: skip


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gateway(module_settings: Settings) -> Iterator[AdminGateway]:
    with admin_gateway(module_settings) as gw:
        yield gw


def run(args: list[str], env: dict[str, str], input: str | None = None) -> Any:
    result = runner.invoke(cli, args, env=env, input=input)
    return result


def sync_gateway(gw: AdminGateway) -> None:
    """Read barrier on the gateway's config reader: it has folded everything written before this call
    (another process wrote the config topic; an admin read does not sync by itself)."""
    reader = gw.app.state.config_reader
    asyncio.run_coroutine_threadsafe(reader.sync(10), gw.loop).result(15)


def write(tmp_path: Path, name: str, body: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def test_apply_activate_list_get_versions_via_gateway(gateway: AdminGateway, env: dict[str, str],
                                                      tmp_path: Path) -> None:  # fmt: skip
    url = ["--url", gateway.url]
    wid = uid("cli")
    f = write(tmp_path, "wf.json", wf(wid))
    r = run(["workflows", "apply", "-f", f, *url], env)
    assert r.exit_code == 0, r.output
    assert "created" in r.output
    r = run(["workflows", "activate", wid, *url], env)
    assert r.exit_code == 0 and "version 1 active" in r.output, r.output

    # Applying again on an active workflow makes a new draft from it and replaces that draft.
    f2 = write(tmp_path, "wf2.json", wf(wid, threshold=5))
    r = run(["workflows", "apply", "-f", f2, "--activate", *url], env)
    assert r.exit_code == 0 and "updated, activated" in r.output, r.output
    r = run(["workflows", "versions", wid, "--json", *url], env)
    assert r.exit_code == 0, r.output
    versions = json.loads(r.output)["data"]
    assert [(v["version"], v["status"]) for v in versions] == [(2, "active"), (1, "archived")]

    r = run(["workflows", "get", wid, *url], env)
    assert r.exit_code == 0 and json.loads(r.output)["tasks"][1]["condition"][">"][1] == 5
    r = run(["workflows", "list", "--tag", "cli", "--status", "active", *url], env)
    assert r.exit_code == 0 and wid in r.output

    r = run(["workflows", "test", wid, "-d", '{"total": 7}', *url], env)
    assert r.exit_code == 0, r.output
    assert "matched=True" in r.output and '"flagged": true' in r.output


def test_exit_codes_not_found_conflict_validation_and_usage(gateway: AdminGateway, env: dict[str, str],
                                                            tmp_path: Path) -> None:  # fmt: skip
    url = ["--url", gateway.url]
    assert run(["workflows", "get", uid("missing"), *url], env).exit_code == 3
    assert run(["channels", "activate", uid("missing"), *url], env).exit_code == 3

    wid = uid("dup")
    f = write(tmp_path, "wf.json", wf(wid))
    assert run(["workflows", "import", "-f", f, *url], env).exit_code == 0
    r = run(["workflows", "new-version", wid, *url], env)  # v1 is still a draft
    assert r.exit_code == 4 and "CONFLICT" in r.output
    assert run(["workflows", "import", "-f", f, *url], env).exit_code == 4

    bad = wf(uid("bad"))
    bad["tasks"][1]["function"] = {"name": "validation", "input": {"rules": [{"logic": True}]}}
    fb = write(tmp_path, "bad.json", bad)
    r = run(["workflows", "validate", "-f", fb, *url], env)
    assert r.exit_code == 2 and "rules[0].message" in r.output
    assert run(["workflows", "validate", "-f", f, *url], env).exit_code == 0
    assert run(["workflows", "apply", "-f", fb, *url], env).exit_code == 2
    (tmp_path / "broken.json").write_text("{nope")
    assert run(["workflows", "apply", "-f", str(tmp_path / "broken.json"), *url], env).exit_code == 2
    assert run(["workflows", "apply", "-f", str(tmp_path / "absent.json"), *url], env).exit_code == 2
    assert run(["workflows", "test", wid, "-d", "{bad", *url], env).exit_code == 2
    assert run(["workflows", "rollout", wid, "50", *url], env).exit_code == 2  # needs two active versions
    assert run(["workflows", "frobnicate"], env).exit_code == 2  # usage error
    # An unreachable gateway is a plain error.
    assert run(["workflows", "list", "--url", "http://127.0.0.1:9"], env).exit_code == 1


def test_export_import_with_progress_and_rollout(gateway: AdminGateway, env: dict[str, str], tmp_path: Path) -> None:
    url = ["--url", gateway.url]
    ids = [uid("bulk") for _ in range(4)]
    f = write(tmp_path, "many.json", [wf(i) for i in ids])
    r = run(["workflows", "import", "-f", f, *url], env)
    assert r.exit_code == 0 and "imported 4, failed 0" in r.output, r.output
    out = tmp_path / "export.json"
    r = run(["workflows", "export", "--tag", "cli", "-o", str(out), *url], env)
    assert r.exit_code == 0, r.output
    exported = {w["workflow_id"] for w in json.loads(out.read_text())["data"]}
    assert set(ids) <= exported

    wid = ids[0]
    assert run(["workflows", "activate", wid, *url], env).exit_code == 0
    assert run(["workflows", "new-version", wid, *url], env).exit_code == 0
    r = run(["workflows", "activate", wid, "--rollout", "20", *url], env)
    assert r.exit_code == 0 and "(20%)" in r.output, r.output
    r = run(["workflows", "rollout", wid, "60", *url], env)
    assert r.exit_code == 0 and "at 60%" in r.output, r.output
    r = run(["workflows", "archive", wid, *url], env)
    assert r.exit_code == 0 and "archived" in r.output


def test_direct_mode_talks_to_the_config_topic(gateway: AdminGateway, env: dict[str, str], tmp_path: Path) -> None:
    """Without --url the CLI writes the config topic itself; the gateway sees the change."""
    wid = uid("direct")
    f = write(tmp_path, "wf.json", wf(wid))
    r = run(["workflows", "apply", "-f", f, "--activate"], env)
    assert r.exit_code == 0, r.output
    sync_gateway(gateway)
    seen = httpx.get(f"{gateway.url}/api/v1/admin/workflows/{wid}", timeout=30)
    assert seen.status_code == 200 and seen.json()["data"]["status"] == "active", seen.text

    r = run(["workflows", "get", wid], env)
    assert r.exit_code == 0 and json.loads(r.output)["workflow_id"] == wid
    assert run(["workflows", "get", uid("nope")], env).exit_code == 3
    config = {"type": "http", "url": "https://x", "token": "tok-secret"}
    conn = write(tmp_path, "c.json", {"name": uid("conn"), "connector_type": "http", "config": config})
    r = run(["connectors", "apply", "-f", conn], env)
    assert r.exit_code == 0, r.output
    r = run(["connectors", "list", "--json"], env)
    assert r.exit_code == 0 and "tok-secret" not in r.output and "******" in r.output

    # Direct mode with no broker configured is a clear error, not a traceback.
    r = run(["workflows", "list"], {**env, "QUASAR_KAFKA_BOOTSTRAP": ""})
    assert r.exit_code == 1 and "QUASAR_KAFKA_BOOTSTRAP" in r.output


def test_backup_restore_commands(settings: Settings, tmp_path: Path) -> None:
    with admin_gateway(settings) as gw:
        env = {"QUASAR_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap), "QUASAR_URL": "",
               "QUASAR_TOPIC_PREFIX": settings.topic_prefix, "QUASAR_FETCH_WAIT_MAX_MS": "10"}  # fmt: skip
        url = ["--url", gw.url]
        f = write(tmp_path, "wfs.json", [wf("a"), wf("b")])
        assert run(["workflows", "import", "-f", f, *url], env).exit_code == 0
        out = tmp_path / "backup.json"
        r = run(["backup", "-o", str(out), *url], env)
        assert r.exit_code == 0, r.output
        assert {o["id"] for o in json.loads(out.read_text())["objects"]} == {"a", "b"}
        assert run(["workflows", "delete", "a", *url], env).exit_code == 0
        assert run(["workflows", "import", "-f", write(tmp_path, "c.json", wf("c")), *url], env).exit_code == 0

        r = run(["restore", "-f", str(out)], env)  # direct mode
        assert r.exit_code == 0 and "deleted 1" in r.output, r.output
        sync_gateway(gw)
        ids = {w["workflow_id"] for w in httpx.get(f"{gw.url}/api/v1/admin/workflows", timeout=30).json()["data"]}
        assert ids == {"a", "b"}
        assert run(["restore", "-f", write(tmp_path, "bad.json", {"objects": 1}), *url], env).exit_code == 2

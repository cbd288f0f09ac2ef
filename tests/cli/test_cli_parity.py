"""Issue 15 (defect 12 and CLI features): Orion's CLI lines work as the guide writes them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import _register, cli
from app.cli.admin import request_body
from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway

_register()
runner = CliRunner()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wf(wid: str) -> dict[str, Any]:
    return {
        "workflow_id": wid,
        "name": wid,
        "tasks": [
            {"id": "p", "name": "p", "function": {"name": "parse_json", "input": {"source": "payload", "target": "x"}}}
        ],
    }


@pytest.fixture(scope="module")
def gateway(module_settings: Settings) -> Iterator[AdminGateway]:
    with admin_gateway(module_settings) as gw:
        yield gw


@pytest.fixture
def env(gateway: AdminGateway) -> dict[str, str]:
    return {"QUASAR_URL": gateway.url, "COLUMNS": "200"}


def test_send_posts_an_orion_body_as_is_and_wraps_bare_data() -> None:
    assert request_body({"data": {"order_id": 1}}) == {"data": {"order_id": 1}}
    assert request_body({"data": {"a": 1}, "metadata": {"m": 2}}) == {"data": {"a": 1}, "metadata": {"m": 2}}
    assert request_body({"order_id": 1}) == {"data": {"order_id": 1}}
    assert request_body({"data": 1, "other": 2}) == {"data": {"data": 1, "other": 2}}
    assert request_body([1, 2]) == {"data": [1, 2]}


def test_apply_takes_the_file_as_an_argument_as_the_quickstart_shows(
    gateway: AdminGateway, env: dict[str, str], tmp_path: Path
) -> None:
    wid = uid("quick")
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf(wid)))
    result = runner.invoke(cli, ["workflows", "apply", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert httpx.get(f"{gateway.url}/api/v1/admin/workflows/{wid}").status_code == 200
    result = runner.invoke(cli, ["workflows", "apply"], env=env)
    assert result.exit_code == 2 and "missing the JSON file" in result.output


def test_import_dry_run_reports_and_writes_nothing(gateway: AdminGateway, env: dict[str, str], tmp_path: Path) -> None:
    good, bad = uid("dry"), uid("dry")
    path = tmp_path / "wfs.json"
    path.write_text(json.dumps([wf(good), {"workflow_id": bad, "name": bad, "tasks": "nope"}]))
    result = runner.invoke(cli, ["workflows", "import", str(path), "--dry-run"], env=env)
    assert result.exit_code == 2, result.output
    assert "would import 1, would fail 1" in result.output and "nothing written" in result.output
    assert httpx.get(f"{gateway.url}/api/v1/admin/workflows/{good}").status_code == 404


def test_a_token_without_bearer_gets_a_clear_401(settings: Settings) -> None:
    secured = settings.model_copy(update={"admin_auth_enabled": True, "admin_api_key": "s3cret"})
    with admin_gateway(secured) as gw:
        r = httpx.get(f"{gw.url}/api/v1/admin/workflows", headers={"Authorization": "s3cret"})
        assert r.status_code == 401
        assert "expected 'Authorization: Bearer <key>'" in r.json()["error"]["message"]
        r = httpx.get(f"{gw.url}/api/v1/admin/workflows")
        assert r.status_code == 401 and "Missing admin credentials" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QUASAR_GATEWAY_PORT": "abc"}, "invalid setting QUASAR_GATEWAY_PORT='abc'"),
        ({"QUASAR_LOG_FORMAT": "xml"}, "unknown log format 'xml'"),
        ({"QUASAR_LOG_LEVEL": "loud"}, "unknown log level 'loud'"),
    ],
)
def test_a_bad_setting_is_a_one_line_error_not_a_traceback(env: dict[str, str], expected: str) -> None:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "gateway"], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and expected in r.stderr


def test_orion_log_format_pretty_is_accepted_as_console() -> None:
    assert Settings(log_format="pretty", log_level="WARN").log_format == "console"

"""Issue 15 (missing features): the TOML config file with ${VAR} substitution and Orion's sections,
`quasar --version`, `quasar validate-config`, `quasar health`, the saved server profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app import __version__
from app.cli import _register, cli
from app.config_file import ConfigFileError, load_config_file, substitute
from app.settings import Settings
from tests.cli.admin_gateway import admin_gateway

_register()
runner = CliRunner()

ORION_TOML = """
[server]
host = "0.0.0.0"
port = ${PORT:-9090}
shutdown_drain_secs = 5

[server.tls]
cert_path = "${CERTS}/cert.pem"
key_path = "${CERTS}/key.pem"

[engine.circuit_breaker]
failure_threshold = 7

[admin_auth]
enabled = true
api_key = "${ADMIN_KEY}"

[cors]
allowed_origins = ["https://app.example.com", "https://admin.example.com"]

[kafka]
enabled = true
brokers = ["k1:9092", "k2:9092"]

[[kafka.topics]]
topic = "incoming-orders"
channel = "orders"

[storage]
url = "sqlite:orion.db"

[logging]
level = "warn"
format = "pretty"

[channels]
include = ["orders.*"]
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    return {**env, **extra}


def test_substitution_of_set_unset_and_defaulted_variables() -> None:
    env = {"A": "1"}
    assert substitute("x${A}y${B:-2}z${C:-}", env) == "x1y2z"
    with pytest.raises(ConfigFileError, match="environment variable B is not set"):
        substitute("${B}", env, "f: k")


def test_an_orion_config_file_maps_onto_quasar_settings(tmp_path: Path) -> None:
    path = tmp_path / "orion.toml"
    path.write_text(ORION_TOML)
    loaded = load_config_file(path, Settings.model_fields, {"CERTS": "/etc/certs", "ADMIN_KEY": "k3y"})
    assert loaded.values["gateway_port"] == 9090 and loaded.values["gateway_host"] == "0.0.0.0"
    assert loaded.values["gateway_tls_cert"] == "/etc/certs/cert.pem"
    assert loaded.values["kafka_bootstrap"] == "k1:9092,k2:9092"
    assert loaded.values["cors_allowed_origins"] == "https://app.example.com,https://admin.example.com"
    assert any(w.startswith("kafka.topics: not applicable") for w in loaded.warnings)
    assert any(w.startswith("storage.url: not applicable") for w in loaded.warnings)


def test_settings_read_the_file_below_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "quasar.toml"
    path.write_text('[gateway]\nport = 9191\nhost = "0.0.0.0"\n\n[logging]\nformat = "pretty"\n')
    monkeypatch.setenv("QUASAR_CONFIG_FILE", str(path))
    monkeypatch.setenv("QUASAR_GATEWAY_PORT", "9292")
    settings = Settings()
    assert settings.gateway_port == 9292  # the environment wins
    assert settings.gateway_host == "0.0.0.0" and settings.log_format == "console"


def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gateway]\nprot = 1\n")
    with pytest.raises(ConfigFileError, match=r"unknown setting 'gateway\.prot'"):
        load_config_file(path, Settings.model_fields, {})


def test_validate_config_accepts_orions_file_and_reports_what_does_not_apply(tmp_path: Path) -> None:
    path = tmp_path / "orion.toml"
    path.write_text(ORION_TOML)
    env = _clean_env(CERTS="/etc/certs", ADMIN_KEY="k3y", COLUMNS="200")
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "validate-config", "-c", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout and "gateway 0.0.0.0:9090" in r.stdout
    assert "storage.url: not applicable" in r.stdout
    # An unset variable is named; nothing starts.
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "validate-config", "-c", str(path)],
        env=_clean_env(CERTS="/etc/certs"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "ADMIN_KEY is not set" in r.stderr


def test_global_config_option_reaches_every_command(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[gateway]\nport = 'abc'\n")
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "-c", str(path), "gateway"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "invalid setting QUASAR_GATEWAY_PORT='abc'" in r.stderr, r.stderr


def test_version() -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"quasar {__version__}"


def test_health_and_the_saved_server_profile(settings: Settings, tmp_path: Path) -> None:
    env = {"QUASAR_CLI_CONFIG": str(tmp_path / "cli.toml"), "QUASAR_URL": "", "COLUMNS": "200"}
    with admin_gateway(settings) as gw:
        result = runner.invoke(cli, ["config", "set-server", gw.url, "--token", "t0k"], env=env)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "cli.toml").stat().st_mode & 0o077 == 0  # owner only: it holds a token
        shown = runner.invoke(cli, ["config", "show"], env=env)
        assert gw.url in shown.output and "t0k" not in shown.output
        # No --url: the saved server is used.
        result = runner.invoke(cli, ["workflows", "list", "--json"], env=env)
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["health"], env=env)
        assert gw.url in result.output and "broker" in result.output
    result = runner.invoke(cli, ["health"], env=env)  # gateway gone
    assert result.exit_code == 1 and "unreachable" in result.output

"""`quasar --version`, `quasar validate-config`, `quasar health`, `quasar config set-server|show`."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import typer
from rich.console import Console

from app.cli.profile import Profile, load_profile, profile_path, save_profile

__all__ = ["config_app", "health", "root_options", "validate_config"]

console = Console()
err_console = Console(stderr=True)

config_app = typer.Typer(help="The CLI's saved server profile.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from app import __version__

        typer.echo(f"quasar {__version__}")
        raise typer.Exit()


def root_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    config: Path | None = typer.Option(
        None, "-c", "--config", help="TOML configuration file (also QUASAR_CONFIG_FILE); QUASAR_* variables win."
    ),
) -> None:
    """Quasar: Kafka-native declarative services runtime."""
    if config is not None:
        # Every Settings() of this process reads it (app/settings.py, app/config_file.py).
        os.environ["QUASAR_CONFIG_FILE"] = str(config)


def validate_config(
    config: Path | None = typer.Option(None, "-c", "--config", help="the file to check (default: QUASAR_CONFIG_FILE)"),
) -> None:
    """Check the configuration (file + QUASAR_* variables) without starting anything; exit 2 when invalid."""
    from pydantic import ValidationError

    from app.config_file import CONFIG_FILE_ENV, ConfigFileError, load_config_file
    from app.settings import Settings, settings_error_lines

    if config is not None:
        os.environ[CONFIG_FILE_ENV] = str(config)
    path = os.environ.get(CONFIG_FILE_ENV)
    try:
        warnings = load_config_file(path, Settings.model_fields).warnings if path else []
        settings = Settings()
    except ConfigFileError as exc:
        err_console.print(f"[red]invalid[/] {exc}")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        for line in settings_error_lines(exc):
            err_console.print(f"[red]invalid[/] {line}")
        raise typer.Exit(2) from None
    for warning in warnings:
        console.print(f"[yellow]warning[/] {warning}")
    source = f"{path} + environment" if path else "environment only (no config file)"
    console.print(f"[green]valid[/] configuration ({source}); gateway {settings.gateway_host}:{settings.gateway_port}")


def health(
    url: str | None = typer.Option(None, "--url", envvar="QUASAR_URL", help="gateway (default: saved profile)"),
) -> None:
    """Show a gateway's /health; exit 1 when it is degraded or unreachable."""
    base = (url or load_profile().url or "http://127.0.0.1:8080").rstrip("/")
    try:
        r = httpx.get(f"{base}/health", timeout=10)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]unreachable[/] {base}: {exc}")
        raise typer.Exit(1) from None
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    status = body.get("status", f"HTTP {r.status_code}")
    colour = "green" if r.status_code == 200 else "red"
    console.print(f"[{colour}]{status}[/] {base} (version {body.get('version')}, up {body.get('uptime_seconds')}s)")
    for name, state in (body.get("components") or {}).items():
        console.print(f"  {name}: {state}")
    raise typer.Exit(0 if r.status_code == 200 else 1)


@config_app.command("set-server")
def set_server(
    url: str = typer.Argument(..., help="gateway base URL, e.g. https://quasar.example.com"),
    token: str | None = typer.Option(None, "--token", help="admin API key / bearer token to send"),
    auth_header: str | None = typer.Option(None, "--auth-header", help="Authorization (default) or e.g. X-API-Key"),
) -> None:
    """Save the server (and token) commands use when given no --url / --token."""
    path = save_profile(Profile(url.rstrip("/"), token, auth_header))
    console.print(f"saved server {url} to {path}")


@config_app.command("show")
def show() -> None:
    """Print the saved profile (token masked)."""
    profile = load_profile()
    shown = {"path": str(profile_path()), "url": profile.url, "token": "******" if profile.token else None}
    console.print_json(orjson.dumps(shown).decode())

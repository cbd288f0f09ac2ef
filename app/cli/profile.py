"""The CLI's saved server profile: `quasar config set-server URL [--token T]`, used when a command is given
no `--url` / `QUASAR_URL` (and no `--token` / `QUASAR_ADMIN_TOKEN`).

Stored as TOML in `$QUASAR_CLI_CONFIG`, else `$XDG_CONFIG_HOME/quasar/cli.toml`, else
`~/.config/quasar/cli.toml`, readable by its owner only (it may hold a token).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Profile", "load_profile", "profile_path", "save_profile"]


@dataclass(frozen=True)
class Profile:
    url: str | None = None
    token: str | None = None
    auth_header: str | None = None


def profile_path() -> Path:
    explicit = os.environ.get("QUASAR_CLI_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "quasar" / "cli.toml"


def load_profile() -> Profile:
    path = profile_path()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return Profile()
    raw = data.get("server")
    server: dict[str, object] = raw if isinstance(raw, dict) else {}
    url, token, header = (server.get(k) for k in ("url", "token", "auth_header"))
    return Profile(
        url=url if isinstance(url, str) else None,
        token=token if isinstance(token, str) else None,
        auth_header=header if isinstance(header, str) else None,
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_profile(profile: Profile) -> Path:
    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[server]"]
    for key in ("url", "token", "auth_header"):
        value = getattr(profile, key)
        if value:
            lines.append(f"{key} = {_quote(value)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path

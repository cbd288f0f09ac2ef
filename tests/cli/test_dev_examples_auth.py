"""Issue 14 (Low): `quasar dev` with admin auth on could not load its examples (every write got 401)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.dev import admin_headers, load_examples
from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "hello-world.json"


@pytest.fixture(scope="module")
def locked(module_settings: Settings) -> Iterator[tuple[AdminGateway, Settings]]:
    settings = module_settings.model_copy(update={"admin_auth_enabled": True, "admin_api_key": "dev-admin-key"})
    with admin_gateway(settings) as gw:
        yield gw, settings


def test_examples_load_with_the_configured_admin_credentials(
    locked: tuple[AdminGateway, Settings], tmp_path: Path
) -> None:
    gw, settings = locked
    (tmp_path / "hello-world.json").write_bytes(EXAMPLE.read_bytes())
    anonymous = load_examples(gw.url, tmp_path)
    assert sum(v for k, v in anonymous.items() if k != "skipped") == 0  # 401 for every write
    assert admin_headers(settings) == {"Authorization": "Bearer dev-admin-key"}
    loaded = load_examples(gw.url, tmp_path, admin_headers(settings))
    assert loaded["workflows"] >= 1 and loaded["channels"] >= 1, loaded
    raw = settings.model_copy(update={"admin_auth_header": "X-Admin-Key"})
    assert admin_headers(raw) == {"X-Admin-Key": "dev-admin-key"}
    assert admin_headers(settings.model_copy(update={"admin_auth_enabled": False})) == {}

"""Admin-API tests over a real gateway run in a thread (sync httpx clients, as the CLI uses it).

`gateway` here overrides tests/gateway/conftest.py's async in-loop gateway for this package.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway


@pytest.fixture(scope="module")
def gateway(module_settings: Settings) -> Iterator[AdminGateway]:
    with admin_gateway(module_settings) as gw:
        yield gw


@pytest.fixture
def http(gateway: AdminGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client

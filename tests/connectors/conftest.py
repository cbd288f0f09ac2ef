"""Fixtures of the connector tests (real local servers; the shared ones come from tests/fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.connectors.servers import AcceptCounter, HttpTestServer


@pytest.fixture
async def http_server() -> AsyncIterator[HttpTestServer]:
    server = await HttpTestServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def accept_counter() -> AsyncIterator[AcceptCounter]:
    counter = await AcceptCounter().start()
    yield counter
    await counter.stop()

"""CLI test fixtures."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.fixture
def env(module_settings: Settings) -> dict[str, str]:
    """Environment for direct mode: the same broker and topic prefix as the gateway."""
    return {
        "QUASAR_KAFKA_BOOTSTRAP": str(module_settings.kafka_bootstrap),
        "QUASAR_TOPIC_PREFIX": module_settings.topic_prefix,
        "QUASAR_FETCH_WAIT_MAX_MS": "10",
        "QUASAR_INSTANCE_ID": "cli-test",
        "QUASAR_URL": "",
        "COLUMNS": "200",
    }

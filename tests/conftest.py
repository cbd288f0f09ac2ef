"""Shared fixtures: each concern lives in tests/fixtures/<concern>.py and is registered here."""

from __future__ import annotations

from tests.fixtures.kafka import (  # noqa: F401
    kafka_admin,
    kafka_bootstrap,
    module_settings,
    settings,
    topic_factory,
    unique_topic,
)
from tests.fixtures.schema_registry import schema_registry_url, secured_schema_registry  # noqa: F401
from tests.fixtures.services import postgres_dsn, redis_key_prefix, redis_server, redis_url  # noqa: F401

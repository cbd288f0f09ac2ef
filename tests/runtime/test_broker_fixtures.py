"""The shared service fixtures hand out working, isolated services."""

from __future__ import annotations

import subprocess

import redis

from app.settings import Settings


def test_redis_url_is_a_clean_database_of_its_own(redis_url: str, redis_key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set(f"{redis_key_prefix}k", b"v")
        assert client.get(f"{redis_key_prefix}k") == b"v"
    finally:
        client.close()


def test_postgres_dsn_accepts_queries(postgres_dsn: str) -> None:
    out = subprocess.run(["psql", postgres_dsn, "-tAc", "SELECT 40 + 2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_settings_fixtures_isolate_topic_prefixes(settings: Settings, module_settings: Settings) -> None:
    assert settings.topic_prefix != module_settings.topic_prefix
    assert settings.kafka_bootstrap == module_settings.kafka_bootstrap
    assert settings.fetch_wait_max_ms == 10

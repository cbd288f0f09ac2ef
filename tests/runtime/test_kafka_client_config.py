"""Client security and passthrough: every config builder carries the same connection properties, and
librdkafka accepts the built configs (clients are created for real; they validate every property on
creation). The Faust app opens no Kafka connection at all (app/worker/app.py), so these are all."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from app.kafka.config import (
    KafkaSettingsError,
    admin_config,
    connection_properties,
    consumer_config,
    producer_config,
    reader_config,
)
from app.secrets import SecretMissing
from app.settings import Settings

BOOT = "127.0.0.1:1"  # nothing listens: creating a client does no blocking I/O


def token_provider() -> tuple[str, float]:
    """A `kafka_oauth_token_provider` target (module:callable) for the tests below."""
    return "token-from-provider", time.time() + 60


def _all_configs(settings: Settings) -> list[dict[str, Any]]:
    return [
        producer_config(settings),
        consumer_config(settings, group_id="g"),
        reader_config(settings),
        admin_config(settings),
    ]


def test_typed_sasl_ssl_settings_reach_every_client_and_secrets_resolve_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    settings = Settings(
        kafka_bootstrap=BOOT,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="quasar",
        kafka_sasl_password="env://KAFKA_PW",
        kafka_ssl_ca_location="/etc/ssl/certs/ca-certificates.crt",
    )
    for cfg in _all_configs(settings):
        assert cfg["security.protocol"] == "SASL_SSL"
        assert cfg["sasl.mechanism"] == "SCRAM-SHA-512"
        assert cfg["sasl.username"] == "quasar"
        assert cfg["sasl.password"] == "s3cret"  # resolved at use
        assert cfg["ssl.ca.location"] == "/etc/ssl/certs/ca-certificates.crt"
    assert "s3cret" not in repr(settings) and "env://KAFKA_PW" not in repr(settings)
    # librdkafka validates every property when a client is created.
    Producer(producer_config(settings)).flush(0)
    Consumer(consumer_config(settings, group_id="g")).close()
    AdminClient(admin_config(settings))


def test_a_missing_env_secret_is_a_clear_error() -> None:
    settings = Settings(kafka_bootstrap=BOOT, kafka_sasl_password="env://QUASAR_TEST_UNSET_VAR")
    with pytest.raises(SecretMissing, match="QUASAR_TEST_UNSET_VAR"):
        producer_config(settings)


def test_passthrough_env_properties_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_KAFKA_BOOTSTRAP", BOOT)
    monkeypatch.setenv("QUASAR_KAFKA__SOCKET_KEEPALIVE_ENABLE", "true")
    monkeypatch.setenv("QUASAR_KAFKA__CLIENT_RACK", "use1-az1")
    monkeypatch.setenv("QUASAR_KAFKA__LOG_LEVEL", "3")  # the one underscore name librdkafka has
    monkeypatch.setenv("QUASAR_KAFKA__SASL_PASSWORD", "env://KAFKA_PW2")
    monkeypatch.setenv("KAFKA_PW2", "pw2")
    settings = Settings()
    for cfg in _all_configs(settings):
        assert cfg["socket.keepalive.enable"] == "true"
        assert cfg["client.rack"] == "use1-az1"
        assert cfg["log_level"] == "3"
        assert cfg["sasl.password"] == "pw2"
    Producer(producer_config(settings)).flush(0)


def test_user_properties_win_over_tuning_defaults_but_not_over_per_client_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUASAR_KAFKA__COMPRESSION_TYPE", "zstd")
    monkeypatch.setenv("QUASAR_KAFKA__FETCH_WAIT_MAX_MS", "500")
    settings = Settings(kafka_bootstrap=BOOT)
    assert producer_config(settings)["compression.type"] == "zstd"
    assert consumer_config(settings, group_id="g")["fetch.wait.max.ms"] == "500"
    # A reader's own fetch wait (config-log latency) is what that client needs: it wins.
    assert reader_config(settings, **{"fetch.wait.max.ms": 7})["fetch.wait.max.ms"] == 7


def test_properties_file_names_the_cluster_and_env_passthrough_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shape of the client config Confluent Cloud hands out.
    props = tmp_path / "client.properties"
    props.write_text(
        "# Required connection configs for Kafka producer, consumer, and admin\n"
        "bootstrap.servers=pkc-00000.us-east-1.aws.confluent.cloud:9092\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanisms=PLAIN\n"
        "sasl.username=KEY\n"
        "sasl.password=env://CC_SECRET\n"
        "\n"
        "session.timeout.ms=45000\n"
        "client.dns.lookup: use_all_dns_ips\n"
    )
    monkeypatch.setenv("CC_SECRET", "cc-secret")
    monkeypatch.setenv("QUASAR_KAFKA__SASL_USERNAME", "OTHERKEY")
    settings = Settings(kafka_properties_file=props)
    assert settings.kafka_bootstrap == "pkc-00000.us-east-1.aws.confluent.cloud:9092"
    cfg = producer_config(settings)
    assert cfg["bootstrap.servers"] == "pkc-00000.us-east-1.aws.confluent.cloud:9092"
    assert cfg["sasl.mechanism"] == "PLAIN" and "sasl.mechanisms" not in cfg
    assert cfg["sasl.username"] == "OTHERKEY"
    assert cfg["sasl.password"] == "cc-secret"
    assert cfg["client.dns.lookup"] == "use_all_dns_ips"
    # A user property wins over a tuning default.
    assert consumer_config(settings, group_id="g")["session.timeout.ms"] == "45000"


def test_a_bad_properties_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.properties"
    bad.write_text("security.protocol SSL\n")
    with pytest.raises(ValueError, match=r"bad.properties:1: expected `key=value`"):
        Settings(kafka_properties_file=bad)
    with pytest.raises(ValueError, match="cannot read Kafka properties file"):
        Settings(kafka_properties_file=tmp_path / "missing.properties")


def test_conflicting_and_protected_properties_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_KAFKA__SECURITY_PROTOCOL", "SSL")
    with pytest.raises(KafkaSettingsError, match=r"security\.protocol is set twice"):
        connection_properties(Settings(kafka_bootstrap=BOOT, kafka_security_protocol="SASL_SSL"))
    # The same value twice is not a conflict.
    assert connection_properties(Settings(kafka_bootstrap=BOOT, kafka_security_protocol="SSL"))
    monkeypatch.setenv("QUASAR_KAFKA__ENABLE_AUTO_COMMIT", "true")
    with pytest.raises(KafkaSettingsError, match=r"enable\.auto\.commit are managed by Quasar"):
        consumer_config(Settings(kafka_bootstrap=BOOT), group_id="g")


def test_an_unknown_librdkafka_property_fails_when_the_client_is_created(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_KAFKA__NO_SUCH_PROPERTY", "1")
    with pytest.raises(KafkaException, match=r"no\.such\.property"):
        Producer(producer_config(Settings(kafka_bootstrap=BOOT)))


def test_oidc_and_token_provider_configs_are_accepted_by_librdkafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIDC_SECRET", "shh")
    oidc = Settings(
        kafka_bootstrap=BOOT,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauthbearer_method="oidc",
        kafka_sasl_oauthbearer_token_endpoint_url="https://idp.example/oauth2/token",
        kafka_sasl_oauthbearer_client_id="quasar",
        kafka_sasl_oauthbearer_client_secret="env://OIDC_SECRET",
        kafka_sasl_oauthbearer_scope="kafka",
        kafka_sasl_oauthbearer_extensions="logicalCluster=lkc-1,identityPoolId=pool-1",
    )
    cfg = producer_config(oidc)
    assert cfg["sasl.oauthbearer.method"] == "oidc" and cfg["sasl.oauthbearer.client.secret"] == "shh"
    Producer(cfg).flush(0)
    callable_source = Settings(
        kafka_bootstrap=BOOT,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_oauth_token_provider=f"{__name__}:token_provider",
    )
    cfg = admin_config(callable_source)
    assert cfg["oauth_cb"]("ignored config")[0] == "token-from-provider"
    AdminClient(cfg)
    with pytest.raises(KafkaSettingsError, match="cannot be loaded"):
        connection_properties(Settings(kafka_bootstrap=BOOT, kafka_oauth_token_provider="nope.module:fn"))
    with pytest.raises(KafkaSettingsError, match="module:callable"):
        connection_properties(Settings(kafka_bootstrap=BOOT, kafka_oauth_token_provider="no_colon"))

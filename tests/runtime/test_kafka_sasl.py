"""SASL against a real SASL server: the embedded broker (Tansu 0.6) with `--authentication` speaks SASL
SCRAM-SHA-256/512 only, and keeps users in its storage, which is memory here: users made by `tansu user
create` live on a broker that does not require authentication and are gone when one that does starts, so
a successful login cannot be shown with it. What runs: Quasar's built client configs go through the
SCRAM exchange with the server (which answers `unknown-user`), and PLAIN is refused by the server's
mechanism list — the client side of SASL, proven against a real server. A successful SCRAM login and
OAUTHBEARER are covered only by the built-config tests (tests/runtime/test_kafka_client_config.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from app.kafka.broker import EmbeddedBroker
from app.kafka.config import admin_config
from app.settings import Settings


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(authentication=True) as broker:
        yield broker


def _attempt(broker: EmbeddedBroker, mechanism: str) -> list[str]:
    """Errors the client reports while trying to get metadata with `mechanism` as user `quasar`."""
    errors: list[Any] = []
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
        kafka_sasl_username="quasar",
        kafka_sasl_password="not-a-user-here",
    )
    admin = AdminClient(admin_config(settings, error_cb=errors.append, log_level=0))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    admin.poll(1.0)  # serves the error callbacks queued meanwhile
    return [str(e) for e in errors]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_exchange_reaches_the_server_and_is_refused_for_an_unknown_user(
    sasl_broker: EmbeddedBroker, mechanism: str
) -> None:
    errors = _attempt(sasl_broker, mechanism)
    assert any("SASL SCRAM authentication failed" in e and "unknown-user" in e for e in errors), errors


def test_plain_is_not_offered_by_the_server(sasl_broker: EmbeddedBroker) -> None:
    errors = _attempt(sasl_broker, "PLAIN")
    assert any("PLAIN" in e and ("mechanism" in e or "handshake" in e) for e in errors), errors

"""SASL against a real SASL server: the embedded broker (Tansu 0.6) with `--authentication` speaks SASL
SCRAM-SHA-256/512 only, and can hold no user: its only storage engine in this build (dynostore: memory://
and s3://) accepts AlterUserScramCredentials and `tansu user create` but stores nothing and finds no
credential at login (checked in Tansu v0.6.0's source and against an S3-backed pair of brokers; details
in docs/operations.md), so every login is refused with `unknown-user` and a successful login cannot be
shown with it. What runs: Quasar's built client configs go through the SCRAM exchange with the server,
PLAIN is refused by the server's mechanism list, and the refusal reaches Quasar's broker probe (what
/health and /readyz report) and startup wait by name, not as a bare transport failure. A successful SCRAM
login and OAUTHBEARER are covered only by the built-config tests (tests/runtime/test_kafka_client_config.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from app.kafka.admin import wait_for_cluster
from app.kafka.broker import EmbeddedBroker
from app.kafka.config import admin_config
from app.settings import Settings
from tests.fixtures.kafka import probe_unreachable_status


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(authentication=True) as broker:
        yield broker


def _sasl_settings(broker: EmbeddedBroker, mechanism: str) -> Settings:
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
        kafka_sasl_username="quasar",
        kafka_sasl_password="not-a-user-here",
    )


def _attempt(broker: EmbeddedBroker, mechanism: str) -> list[str]:
    """Errors the client reports while trying to get metadata with `mechanism` as user `quasar`."""
    errors: list[Any] = []
    admin = AdminClient(admin_config(_sasl_settings(broker, mechanism), error_cb=errors.append, log_level=0))
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


def test_the_broker_probe_reports_the_refusal_not_a_transport_failure(sasl_broker: EmbeddedBroker) -> None:
    status = probe_unreachable_status(_sasl_settings(sasl_broker, "SCRAM-SHA-512"), "quasar.config")
    assert "SASL authentication error" in status and "unknown-user" in status, status
    assert "not-a-user-here" not in status  # the password never reaches health output


class _GaveUp(Exception):
    pass


def test_startup_wait_names_the_refusal(sasl_broker: EmbeddedBroker) -> None:
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        raise _GaveUp  # one attempt is enough: the wait itself retries forever

    with pytest.raises(_GaveUp):
        wait_for_cluster(_sasl_settings(sasl_broker, "SCRAM-SHA-256"), report=report, first_backoff=2.0)
    assert "is unreachable" in lines[0] and "SASL authentication error" in lines[0] and "unknown-user" in lines[0]

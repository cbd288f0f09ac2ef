"""The Kafka-ingest governance decisions without a broker: key derivation, dedup identity, the store's
failure modes (a real Redis client against a closed port), the key space shared with the gateway, and
the circuit-breaker settings."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.connectors.breaker import BreakerConfig
from app.governance import Governance
from app.governance.kafka_ingest import (
    ADMIT,
    CHANNEL_WIDE,
    KafkaIngestGovernance,
    Verdict,
    dedup_store_key,
    duplicate_trace,
    rate_store_key,
    record_context,
    record_dedup_key,
    record_rate_key,
)
from app.governance.policy import build_policy
from app.governance.store import MemoryStore, RedisStore
from app.kafka.broker import free_port
from app.settings import Settings
from tests.governance.conftest import make_view

SETTINGS = Settings(topic_prefix="unit.", kafka_bootstrap="127.0.0.1:1")


def _ctx(data: Any = None, headers: dict[str, str] | None = None, key: str | None = "kk") -> Any:
    return lambda: record_context("ch", key, headers or {}, data, {"source": "erp"})


def test_rate_key_comes_from_key_logic_then_the_kafka_key_then_the_channel() -> None:
    with_logic = build_policy("ch", {"rate_limit": {"requests_per_second": 5, "key_logic": {"var": "data.user"}}})
    assert record_rate_key(with_logic, b"kk", _ctx({"user": "u1"})) == "u1"
    assert record_rate_key(with_logic, b"kk", _ctx({"other": 1})) == "kk"  # null result -> Kafka key
    assert record_rate_key(with_logic, None, _ctx({"other": 1}, key=None)) == CHANNEL_WIDE
    plain = build_policy("ch", {"rate_limit": {"requests_per_second": 5}})
    assert record_rate_key(plain, "kafka-key", _ctx()) == "kafka-key"
    assert record_rate_key(plain, b"", _ctx()) == CHANNEL_WIDE
    # A non-string result is JSON-encoded, as on the HTTP path.
    numeric = build_policy("ch", {"rate_limit": {"requests_per_second": 5, "key_logic": {"var": "data.n"}}})
    assert record_rate_key(numeric, None, _ctx({"n": 7})) == "7"


def test_key_logic_sees_headers_metadata_and_the_kafka_key() -> None:
    ctx = record_context("ch", b"kk", {"X-Tenant": "t1"}, {"a": 1}, {"source": "erp"})
    assert ctx["key"] == "kk" and ctx["headers"] == {"X-Tenant": "t1"} and ctx["channel"] == "ch"
    assert ctx["metadata"] == {"source": "erp", "kafka_key": "kk", "headers": {"X-Tenant": "t1"}}
    assert ctx["client_ip"] is None and ctx["query"] == {} and ctx["params"] == {}
    # A record's own metadata fields win over the derived ones.
    own = record_context("ch", b"kk", {}, None, {"kafka_key": "mine"})
    assert own["metadata"]["kafka_key"] == "mine"
    # Metadata that is not an object (undecodable record) gives an empty one, not an error.
    assert record_context("ch", None, {}, None, None)["metadata"] == {"kafka_key": None, "headers": {}}


def test_dedup_key_reads_the_header_in_any_case_or_the_key_logic() -> None:
    header = build_policy("ch", {"deduplication": {"header": "Idempotency-Key"}}).dedup
    assert header is not None
    assert record_dedup_key(header, {"Idempotency-Key": "k1"}, _ctx()) == "k1"
    assert record_dedup_key(header, {"IDEMPOTENCY-KEY": "k2"}, _ctx()) == "k2"
    assert record_dedup_key(header, {"other": "x"}, _ctx()) is None
    assert record_dedup_key(header, {"idempotency-key": ""}, _ctx()) is None
    logic = build_policy("ch", {"deduplication": {"key_logic": {"var": "data.order_id"}}}).dedup
    assert logic is not None
    assert record_dedup_key(logic, {}, _ctx({"order_id": "o-9"})) == "o-9"
    assert record_dedup_key(logic, {}, _ctx({})) is None


def _gov(store: Any, **kw: Any) -> KafkaIngestGovernance:
    return KafkaIngestGovernance(SETTINGS, store=store, **kw)


async def _admit(gov: KafkaIngestGovernance, config: dict[str, Any], *, offset: int = 0,
                 headers: dict[str, str] | None = None, data: Any = None) -> Verdict:  # fmt: skip
    return await gov.admit(
        build_policy("ch", config),
        key=b"client",
        headers=headers or {},
        decode=lambda: (data, {}),
        where=("unit.ch.ch", 0, offset),
        trace_id=f"t{offset}",
    )


async def test_refused_record_is_held_for_the_buckets_retry_after() -> None:
    gov = _gov(MemoryStore())
    limit = {"rate_limit": {"requests_per_second": 10, "burst": 2}}
    assert await _admit(gov, limit) is ADMIT
    assert await _admit(gov, limit, offset=1) is ADMIT
    held = await _admit(gov, limit, offset=2)
    assert held.action == "hold" and 0 < held.retry_after <= 0.1


async def test_duplicate_is_reported_with_the_original_and_a_redelivery_runs_again() -> None:
    gov = _gov(MemoryStore())
    dedup = {"deduplication": {"header": "idempotency-key"}}
    hdr = {"idempotency-key": "k1"}
    assert await _admit(gov, dedup, offset=5, headers=hdr) is ADMIT
    # The same record redelivered (crash before commit): not a duplicate of itself.
    assert await _admit(gov, dedup, offset=5, headers=hdr) is ADMIT
    dup = await _admit(gov, dedup, offset=6, headers=hdr)
    assert dup == Verdict("duplicate", dedup_key="k1", original="t5")
    assert await _admit(gov, dedup, offset=7) is ADMIT  # no key: no dedup


async def test_key_claimed_by_the_gateway_is_a_duplicate_on_the_kafka_path() -> None:
    store = MemoryStore()
    await store.claim(dedup_store_key("unit.", "ch", "k1"), b"P", 60_000)  # the gateway's pending marker
    dup = await _admit(_gov(store), {"deduplication": {}}, headers={"idempotency-key": "k1"})
    assert dup.action == "duplicate" and dup.original is None


async def test_rate_limit_and_dedup_share_the_gateways_store_keys() -> None:
    store = MemoryStore()
    gateway = Governance(SETTINGS, store=store)
    await gateway.acquire("ch", "client", 1, 1)
    assert rate_store_key("unit.", "ch", "client") in store._data
    # The gateway's bucket is the worker's: the one token is gone for the Kafka path too.
    verdict = await _admit(_gov(store), {"rate_limit": {"requests_per_second": 1, "burst": 1}})
    assert verdict.action == "hold"
    long = "x" * 500  # client-chosen keys are bounded the same way on both paths
    await gateway.acquire("ch", long, 1, 1)
    assert rate_store_key("unit.", "ch", long) in store._data


@pytest.mark.parametrize("feature", ["rate_limit", "deduplication"])
async def test_unreachable_store_fails_open_or_holds_the_partition(feature: str) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    await dead.start()
    try:
        gov = _gov(dead, closed_retry_s=0.7)
        config: dict[str, Any] = (
            {"rate_limit": {"requests_per_second": 5}} if feature == "rate_limit" else {"deduplication": {}}
        )
        hdr = {"idempotency-key": "k"}
        assert await _admit(gov, config, headers=hdr) is ADMIT
        closed = await _admit(gov, {**config, "failure_mode": "fail_closed"}, headers=hdr)
        assert closed == Verdict("hold", 0.7)
        assert dead.degraded
    finally:
        await dead.aclose()


async def test_undecodable_record_with_key_logic_falls_back_to_the_kafka_key() -> None:
    gov = _gov(MemoryStore())
    policy = build_policy("ch", {"rate_limit": {"requests_per_second": 1, "burst": 1, "key_logic": {"var": "data.u"}}})

    def broken() -> tuple[Any, Any]:
        raise ValueError("not JSON")

    verdict = await gov.admit(policy, key=b"kk", headers={}, decode=broken, where=("t", 0, 0), trace_id="x")
    assert verdict is ADMIT  # the worker then dead-letters the record with the decode error
    assert rate_store_key("unit.", "ch", "kk") in gov.store._data  # type: ignore[attr-defined]


def test_governed_lists_only_channels_with_a_rate_limit_or_dedup_and_is_cached_per_snapshot() -> None:
    views = {
        "a": make_view("a", {"rate_limit": {"requests_per_second": 5}}),
        "b": make_view("b", {"deduplication": {}}),
        "c": make_view("c", {"cache": {"enabled": True}}),
        "d": make_view("d", {"rate_limit": {"requests_per_second": -1}}),  # invalid: disabled, logged
    }
    snap = SimpleNamespace(channels=views)
    gov = _gov(MemoryStore())
    governed = gov.governed(snap)
    assert sorted(governed) == ["a", "b"]
    assert gov.governed(snap) is governed
    assert gov.governed(SimpleNamespace(channels={})) == {}


def test_duplicate_trace_never_reuses_the_originals_trace_id() -> None:
    verdict = Verdict("duplicate", dedup_key="k1", original="a")
    key, value = duplicate_trace(channel="ch", headers={}, trace_id="b", created_ms=1_700_000_000_000,
                                 verdict=verdict, where=("topic", 1, 42))  # fmt: skip
    doc = orjson.loads(value)
    assert key == "b" and doc["id"] == "b" and doc["status"] == "duplicate" and doc["mode"] == "async"
    assert doc["created_at"] == "2023-11-14T22:13:20.000Z" and doc["record"] == {
        "topic": "topic", "partition": 1, "offset": 42}  # fmt: skip
    key, _ = duplicate_trace(channel="ch", headers={"quasar-reply-to": "r:0"}, trace_id="a", created_ms=0,
                             verdict=verdict, where=("topic", 1, 43))  # fmt: skip
    assert key == "topic-1-43"


def test_breaker_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_CIRCUIT_BREAKER_ENABLED", "false")
    monkeypatch.setenv("QUASAR_CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3")
    monkeypatch.setenv("QUASAR_CIRCUIT_BREAKER_RECOVERY_TIMEOUT_SECS", "0.5")
    monkeypatch.setenv("QUASAR_CIRCUIT_BREAKER_MAX_BREAKERS", "7")
    assert BreakerConfig.from_settings(Settings()) == BreakerConfig(False, 3, 0.5, 7)
    monkeypatch.delenv("QUASAR_CIRCUIT_BREAKER_ENABLED")
    monkeypatch.delenv("QUASAR_CIRCUIT_BREAKER_FAILURE_THRESHOLD")
    monkeypatch.delenv("QUASAR_CIRCUIT_BREAKER_RECOVERY_TIMEOUT_SECS")
    monkeypatch.delenv("QUASAR_CIRCUIT_BREAKER_MAX_BREAKERS")
    assert BreakerConfig.from_settings(Settings()) == BreakerConfig(True, 5, 30.0, 10_000)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("circuit_breaker_failure_threshold", 0),
        ("circuit_breaker_recovery_timeout_secs", -1),
        ("circuit_breaker_max_breakers", 0),
    ],
)
def test_bad_breaker_settings_are_refused_naming_the_setting(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})

"""The Kafka-ingest governance decisions without a broker: key derivation, dedup identity, the store's
failure modes (a real Redis client against a closed port), the key space shared with the gateway, and
the circuit-breaker settings."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.channels import CompiledChannel, compile_channel
from app.connectors.breaker import BreakerConfig
from app.governance import ADMIT, Admission, Decision, DedupClaim, Governor, StoredResponse
from app.governance.governor import CHANNEL_WIDE
from app.governance.kafka_ingest import KafkaIngestGovernance, duplicate_trace
from app.governance.keys import rate_store_key
from app.governance.store import MemoryStore, RedisStore
from app.kafka.broker import free_port
from app.settings import Settings
from tests.governance.conftest import make_view

SETTINGS = Settings(topic_prefix="unit.", kafka_bootstrap="127.0.0.1:1")


def _channel(config: dict[str, Any]) -> CompiledChannel:
    return compile_channel("ch", {"name": "ch", "channel_type": "async", "protocol": "kafka", "config": config})


def _record(config: dict[str, Any], data: Any = None, headers: dict[str, str] | None = None,
            key: str | None = "kk") -> Admission:  # fmt: skip
    return Admission(_channel(config), headers or {}, "t", key=key, data=data, metadata={"source": "erp"},
                     where=("unit.ch.ch", 0, 0))  # fmt: skip


def test_rate_key_comes_from_key_logic_then_the_kafka_key_then_the_channel() -> None:
    gov = Governor(SETTINGS, store=MemoryStore())
    with_logic = {"rate_limit": {"requests_per_second": 5, "key_logic": {"var": "data.user"}}}
    assert gov.rate_key(_record(with_logic, {"user": "u1"})) == "u1"
    assert gov.rate_key(_record(with_logic, {"other": 1})) == "kk"  # null result -> Kafka key
    assert gov.rate_key(_record(with_logic, {"other": 1}, key=None)) == CHANNEL_WIDE
    plain = {"rate_limit": {"requests_per_second": 5}}
    assert gov.rate_key(_record(plain, key="kafka-key")) == "kafka-key"
    assert gov.rate_key(_record(plain, key=None)) == CHANNEL_WIDE
    # A non-string result is JSON-encoded, as on the HTTP path.
    numeric = {"rate_limit": {"requests_per_second": 5, "key_logic": {"var": "data.n"}}}
    assert gov.rate_key(_record(numeric, {"n": 7}, key=None)) == "7"


def test_key_logic_sees_headers_metadata_and_the_kafka_key() -> None:
    ctx = _record({}, {"a": 1}, {"x-tenant": "t1"}).context()
    assert ctx["key"] == "kk" and ctx["headers"] == {"x-tenant": "t1"} and ctx["channel"] == "ch"
    assert ctx["metadata"] == {"source": "erp", "kafka_key": "kk", "headers": {"x-tenant": "t1"}}
    assert ctx["client_ip"] is None and ctx["query"] == {} and ctx["params"] == {}
    # A record's own metadata fields win over the derived ones.
    own = Admission(_channel({}), {}, "t", key="kk", metadata={"kafka_key": "mine"}).context()
    assert own["metadata"]["kafka_key"] == "mine"
    # Metadata that is not an object (undecodable record) gives an empty one, not an error.
    assert Admission(_channel({}), {}, "t", metadata=None).context()["metadata"] == {"headers": {}}


def test_dedup_key_reads_the_header_in_any_case_or_the_key_logic() -> None:
    header = {"deduplication": {"header": "Idempotency-Key"}}
    key = Governor.idempotency_key
    assert key(_record(header, headers={"Idempotency-Key": "k1"})) == "k1"
    assert key(_record(header, headers={"IDEMPOTENCY-KEY": "k2"})) == "k2"
    assert key(_record(header, headers={"other": "x"})) is None
    assert key(_record(header, headers={"idempotency-key": ""})) is None
    logic = {"deduplication": {"key_logic": {"var": "data.order_id"}}}
    assert key(_record(logic, {"order_id": "o-9"})) == "o-9"
    assert key(_record(logic, {})) is None


def _gov(store: Any, **kw: Any) -> KafkaIngestGovernance:
    return KafkaIngestGovernance(SETTINGS, store=store, **kw)


async def _admit(gov: KafkaIngestGovernance, config: dict[str, Any], *, offset: int = 0,
                 headers: dict[str, str] | None = None, data: Any = None) -> Decision:  # fmt: skip
    return await gov.admit(
        _channel(config),
        key=b"client",
        headers=headers or {},
        decode=lambda: (data, {}),
        where=("unit.ch.ch", 0, offset),
        trace_id=f"t{offset}",
    )


async def test_refused_record_is_throttled_for_the_buckets_retry_after() -> None:
    gov = _gov(MemoryStore())
    limit = {"rate_limit": {"requests_per_second": 10, "burst": 2}}
    assert await _admit(gov, limit) is ADMIT
    assert await _admit(gov, limit, offset=1) is ADMIT
    held = await _admit(gov, limit, offset=2)
    assert held.action == "throttle" and 0 < held.retry_after <= 0.1


async def test_duplicate_is_reported_with_the_original_and_a_redelivery_runs_again() -> None:
    gov = _gov(MemoryStore())
    dedup = {"deduplication": {"header": "idempotency-key"}}
    hdr = {"idempotency-key": "k1"}
    assert (await _admit(gov, dedup, offset=5, headers=hdr)).admitted
    # The same record redelivered (crash before commit): not a duplicate of itself.
    assert (await _admit(gov, dedup, offset=5, headers=hdr)).admitted
    dup = await _admit(gov, dedup, offset=6, headers=hdr)
    assert (dup.action, dup.dedup_key, dup.original, dup.response) == ("duplicate", "k1", "t5", None)
    assert await _admit(gov, dedup, offset=7) is ADMIT  # no key: no dedup


async def test_one_dedup_record_format_and_idempotency_keys_scoped_by_caller() -> None:
    store = MemoryStore()
    ch = _channel({"deduplication": {"return_original": True}})
    http = Governor(SETTINGS, store=store)
    caller = {"idempotency-key": "k1", "authorization": "Bearer user-1"}
    first = await http.decide(Admission(ch, caller, "t-http", sync=True, client="10.0.0.1"))
    assert first.admitted and first.dedup_key == "k1"
    await http.complete(Admission(ch, caller, "t-http", sync=True, client="10.0.0.1"), first,
                        StoredResponse(200, b'{"ok":1}'))  # fmt: skip
    (claim,) = [DedupClaim.decode(v[0]) for k, v in store._data.items() if ":dd:" in k]
    assert (claim.trace_id, claim.where, claim.response) == ("t-http", None, StoredResponse(200, b'{"ok":1}'))
    # The same caller again gets the first answer; another caller with the same key is not a duplicate.
    again = await http.decide(Admission(ch, caller, "t2", sync=True, client="10.0.0.9"))
    assert again.action == "duplicate" and again.response == StoredResponse(200, b'{"ok":1}')
    other = {"idempotency-key": "k1", "authorization": "Bearer user-2"}
    assert (await http.decide(Admission(ch, other, "t3", sync=True, client="10.0.0.1"))).admitted
    # Kafka records have no caller of their own: they share one key space per channel.
    kafka = _gov(store)
    assert (await _admit(kafka, {"deduplication": {}}, offset=1, headers={"idempotency-key": "k1"})).admitted
    dup = await _admit(kafka, {"deduplication": {}}, offset=2, headers={"idempotency-key": "k1"})
    assert dup.action == "duplicate" and dup.original == "t1"


async def test_rate_limit_and_dedup_share_one_set_of_store_keys_on_both_paths() -> None:
    store = MemoryStore()
    gateway = Governor(SETTINGS, store=store)
    ch = _channel({"rate_limit": {"requests_per_second": 1, "burst": 1}})
    over_http = await gateway.decide(Admission(ch, {}, "h1", sync=True, client="client"))
    assert over_http.admitted and rate_store_key("unit.", "ch", "client") in store._data
    # The gateway's bucket is the worker's: the one token is gone for the Kafka path too.
    decision = await _admit(_gov(store), {"rate_limit": {"requests_per_second": 1, "burst": 1}})
    assert decision.action == "throttle"
    long = "x" * 500  # client-chosen keys are bounded the same way on both paths
    await gateway.decide(Admission(ch, {}, "h2", client=long))
    assert rate_store_key("unit.", "ch", long) in store._data and len(rate_store_key("unit.", "ch", long)) < 100


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
        assert (closed.action, closed.retry_after, closed.error and closed.error.status) == ("unavailable", 0.7, 503)
        assert dead.degraded
    finally:
        await dead.aclose()


async def test_undecodable_record_with_key_logic_falls_back_to_the_kafka_key() -> None:
    gov = _gov(MemoryStore())
    channel = _channel({"rate_limit": {"requests_per_second": 1, "burst": 1, "key_logic": {"var": "data.u"}}})

    def broken() -> tuple[Any, Any]:
        raise ValueError("not JSON")

    decision = await gov.admit(channel, key=b"kk", headers={}, decode=broken, where=("t", 0, 0), trace_id="x")
    assert decision is ADMIT  # the worker then dead-letters the record with the decode error
    assert rate_store_key("unit.", "ch", "kk") in gov.store._data  # type: ignore[attr-defined]


async def test_input_guards_deny_kafka_records_too() -> None:
    gov = _gov(MemoryStore())
    # validation_logic is the record pipeline's (it validates every decoded record), not checked twice
    rule = {"validation_logic": {">": [{"var": "data.amount"}, 0]}}
    assert (await _admit(gov, rule, data={"amount": -1})).admitted
    denied = await Governor(SETTINGS, store=MemoryStore()).decide(_record(rule, {"amount": -1}))
    assert denied.action == "deny" and denied.error is not None and denied.error.code == "BAD_REQUEST"
    keyed = {"api_keys": ["s3cret"]}
    assert (await _admit(gov, keyed)).action == "deny"
    assert (await _admit(gov, keyed, headers={"X-API-Key": "s3cret"})).admitted
    small = await gov.admit(_channel({"max_payload_size": 10}), key=None, headers={}, decode=lambda: ({}, {}),
                            where=("t", 0, 1), trace_id="x", size=11)  # fmt: skip
    assert small.action == "deny" and small.error is not None and small.error.status == 413


def test_governed_lists_only_channels_with_something_to_check_and_is_cached_per_snapshot() -> None:
    views = {
        "a": make_view("a", {"rate_limit": {"requests_per_second": 5}}),
        "b": make_view("b", {"deduplication": {}}),
        "c": make_view("c", {"cache": {"enabled": True}}),
        "d": make_view("d", {"validation_logic": {"var": "data.ok"}}),  # the pipeline's
        "e": make_view("e", {"timeout_ms": 5}),
        "f": make_view("f", {"api_keys": ["k"]}),
    }
    snap = SimpleNamespace(channels=views)
    gov = _gov(MemoryStore())
    governed = gov.governed(snap)
    assert sorted(governed) == ["a", "b", "f"]
    assert gov.governed(snap) is governed
    assert gov.governed(SimpleNamespace(channels={})) == {}


def test_duplicate_trace_never_reuses_the_originals_trace_id() -> None:
    decision = Decision("duplicate", dedup_key="k1", original="a")
    key, value = duplicate_trace(channel="ch", headers={}, trace_id="b", created_ms=1_700_000_000_000,
                                 decision=decision, where=("topic", 1, 42))  # fmt: skip
    doc = orjson.loads(value)
    assert key == "b" and doc["id"] == "b" and doc["status"] == "duplicate" and doc["mode"] == "async"
    assert doc["created_at"] == "2023-11-14T22:13:20.000Z" and doc["record"] == {
        "topic": "topic", "partition": 1, "offset": 42}  # fmt: skip
    key, _ = duplicate_trace(channel="ch", headers={"quasar-reply-to": "r:0"}, trace_id="a", created_ms=0,
                             decision=decision, where=("topic", 1, 43))  # fmt: skip
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

"""The compile step: a channel document -> one `CompiledChannel` (no broker, no store)."""

from __future__ import annotations

from typing import Any

import pytest

from app.channels import ChannelInvalid, CompiledChannel, compile_channel
from app.kafka.names import TopicNames


def _compile(config: dict[str, Any] | None = None, **doc: Any) -> CompiledChannel:
    return compile_channel("c", {"name": "c", **doc, "config": config or {}})


def _errors(config: dict[str, Any] | None = None, **doc: Any) -> list[dict[str, str]]:
    with pytest.raises(ChannelInvalid) as err:
        _compile(config, **doc)
    return err.value.errors


def test_defaults_as_orion() -> None:
    ch = _compile({"rate_limit": {"requests_per_second": 10}, "deduplication": {}, "cache": {"enabled": True}})
    p = ch.governance
    assert p.rate_limit is not None and p.rate_limit.rate == 10.0 and p.rate_limit.burst == 6  # rps/2+1
    assert p.dedup is not None and p.dedup.header == "idempotency-key" and p.dedup.window_ms == 300_000
    assert not p.dedup.return_original
    assert p.cache is not None and p.cache.ttl_ms == 300_000 and p.cache.fields is None
    assert not p.fail_closed and p.active
    assert (ch.channel_type, ch.protocol, ch.envelope, ch.timeout_ms) == ("sync", "http", "quasar", None)


def test_empty_config_is_inactive() -> None:
    ch = _compile()
    assert not ch.governance.active and ch.rollout is None and ch.guards.api_keys == ()
    assert not _compile({"cache": {"enabled": False}}).governance.active


def test_accepted_spellings() -> None:
    ch = _compile(
        {
            "deduplication": {"header": "X-Request-Key", "retention_secs": 60, "return_original": True},
            "cache": {"enabled": True, "ttl_secs": 5, "cache_key_fields": ["data.user_id", "region"]},
            "rate_limit": {"requests_per_second": 0.5, "burst": 3},
            "failure_mode": "fail_closed",
            "api_keys": "single",
        }
    )
    p = ch.governance
    assert p.dedup is not None and p.dedup.header == "x-request-key" and p.dedup.window_ms == 60_000
    assert p.dedup.return_original
    assert p.cache is not None and p.cache.fields == ("user_id", "region") and p.cache.ttl_ms == 5000
    assert p.rate_limit is not None and p.rate_limit.burst == 3 and p.rate_limit.rate == 0.5
    assert p.fail_closed and ch.guards.api_keys == ("single",)
    # the name and its alias together are ambiguous: refused
    assert _errors({"deduplication": {"window_secs": 7, "retention_secs": 9}})


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"api_key": ["k"]}, "config.api_key"),  # singular: would have left the channel open
        ({"failure_mod": "fail_closed"}, "config.failure_mod"),  # would have failed open
        ({"rate_limit": {"requests_per_second": 5, "brust": 9}}, "config.rate_limit.brust"),
        ({"deduplication": {"windows_secs": 5}}, "config.deduplication.windows_secs"),
        ({"rate_limit": {"requests_per_second": 0}}, "config.rate_limit.requests_per_second"),
        ({"rate_limit": {"requests_per_second": "fast"}}, "config.rate_limit.requests_per_second"),
        ({"failure_mode": "maybe"}, "config.failure_mode"),
        ({"rollout_key": 42}, "config.rollout_key"),
        ({"rollout_key": {"==": [1]}}, "config.rollout_key"),
        ({"validation_logic": {"==": [1]}}, "config.validation_logic"),
        ({"rate_limit": {"requests_per_second": 5, "key_logic": {"==": [1]}}}, "config.rate_limit.key_logic"),
        ({"key_logic": {"==": [1]}}, "config.key_logic"),
        ({"tracing": "sometimes"}, "config.tracing"),
        ({"tracing": "sample:1.5"}, "config.tracing"),
        ({"output": "no spaces allowed"}, "config.output"),
        ({"envelope": "avro"}, "config.envelope"),
        ({"headers": {"propagate": "some"}}, "config.headers.propagate"),
        ({"retry": {"max_attempts": 0}}, "config.retry.max_attempts"),
    ],
)
def test_bad_settings_are_field_errors(config: dict[str, Any], field: str) -> None:
    assert field in [e["field"] for e in _errors(config)]


def test_unknown_keys_say_so_and_every_problem_is_listed_at_once() -> None:
    errors = _errors({"api_key": ["k"], "failure_mod": "x"}, workflow="w")
    assert {e["field"] for e in errors} == {"config.api_key", "config.failure_mod", "workflow"}
    assert all("unknown setting" in e["message"] for e in errors)


@pytest.mark.parametrize("pattern", ["/orders//items", "/orders/{id", "/orders/x{id}", "/a/{id}/{id}", "/", "/{1bad}"])
def test_unusable_route_patterns_are_refused(pattern: str) -> None:
    assert [e["field"] for e in _errors(protocol="rest", route_pattern=pattern)] == ["route_pattern"]


def test_route_is_compiled_once() -> None:
    ch = _compile(protocol="rest", route_pattern="/Orders/{id}", methods=["get"])
    assert ch.route is not None and ch.route.methods == frozenset({"GET"})
    assert ch.route.segments == (("static", "orders"), ("param", "id"))


def test_rollout_key_forms() -> None:
    def rollout(value: Any) -> Any:
        return _compile({"rollout_key": value}).rollout

    assert rollout("X-User-Id").header == "x-user-id"
    assert rollout({"header": "X-U"}).header == "x-u"
    assert rollout("$kafka_key").kafka_key and rollout({"kafka_key": True}).kafka_key
    assert rollout({"var": "data.user"}).logic is not None
    assert rollout({"logic": {"var": "data.user"}}).logic is not None


def test_topics_envelope_and_output_defaults() -> None:
    names = TopicNames("acme.")
    kafka = compile_channel("k", {"name": "k", "channel_type": "async", "protocol": "kafka", "topic": "orders"}, names)
    assert (kafka.topic, kafka.output_topic, kafka.envelope) == ("orders", "acme.out.k", "raw")
    http_async = compile_channel("h", {"name": "h", "channel_type": "async"}, names)
    assert (http_async.topic, http_async.output_topic, http_async.envelope) == ("acme.ch.h", "acme.out.h", "quasar")
    opted_out = compile_channel("o", {"name": "o", "channel_type": "async", "config": {"output": False}}, names)
    assert opted_out.output_topic is None
    named = compile_channel("n", {"name": "n", "channel_type": "async", "config": {"output": "results"}}, names)
    assert named.output_topic == "results"
    sync = compile_channel("s", {"name": "s"}, names)
    assert sync.output_topic is None and not sync.is_async
    assert compile_channel("s", {"name": "s", "config": {"output": True}}, names).output_topic == "acme.out.s"
    raw_http = compile_channel("r", {"name": "r", "protocol": "kafka", "config": {"envelope": "quasar"}}, names)
    assert raw_http.envelope == "quasar"


def test_orion_kafka_channel_with_consumer_group_compiles() -> None:
    # seed 004, "Kafka (Async)": every documented field is accepted
    doc = {
        "name": "kafka-orders",
        "channel_type": "async",
        "protocol": "kafka",
        "topic": "incoming-orders",
        "consumer_group": "orion-orders",
        "workflow_id": "order-processing",
    }
    ch = compile_channel("kafka-orders", doc)
    assert ch.consumer_group == "orion-orders" and ch.workflow_ids == ("order-processing",)
    assert "consumer_group" in [e["field"] for e in _errors(consumer_group="bad group!")]


def test_tracing_policy() -> None:
    assert _compile().tracing.mode == "all"
    sample = _compile({"tracing": "sample:0.25"}).tracing
    assert (sample.mode, sample.ratio) == ("sample", 0.25)
    assert sample.traces(failed=True, draw=0.9) and sample.traces(failed=False, draw=0.1)
    assert not sample.traces(failed=False, draw=0.3)
    errors = _compile({"tracing": {"policy": "errors", "per_task": True}}).tracing
    assert errors.per_task and errors.traces(failed=True, draw=0) and not errors.traces(failed=False, draw=0)
    assert not _compile({"tracing": "off"}).tracing.traces(failed=True, draw=0)
    assert _compile({"tracing": {"task_details": True}}).tracing.per_task  # Orion's later name


def test_without_a_tracing_setting_kafka_ingested_records_are_traced_only_when_they_fail() -> None:
    unset = _compile().tracing
    assert not unset.explicit and unset.mode == "all"  # records the gateway produced: every one
    ingested = unset.ingested()
    assert ingested.mode == "errors" and not ingested.per_task
    assert ingested.traces(failed=True, draw=0) and not ingested.traces(failed=False, draw=0)
    for setting in ("all", "off", "sample:0.5", {"per_task": True}, {"policy": "errors"}):
        explicit = _compile({"tracing": setting}).tracing
        assert explicit.explicit and explicit.ingested() is explicit, setting  # applies to both kinds


def test_credentials_are_not_persisted_unless_kept() -> None:
    headers = {
        "authorization": "Bearer t",
        "Cookie": "s=1",
        "proxy-authorization": "Basic x",
        "x-session": "abc",
        "x-api-key": "k",
        "x-tenant": "t1",
    }
    plain = _compile().headers
    assert plain.persisted(headers) == {"x-session": "abc", "x-api-key": "k", "x-tenant": "t1"}
    keyed = _compile({"api_keys": ["k"], "headers": {"secret": ["X-Session"]}}).headers
    assert keyed.persisted(headers) == {"x-tenant": "t1"}  # its API key header is a credential too
    keeps = _compile({"headers": {"keep_credentials": ["Authorization"]}}).headers
    assert keeps.persisted(headers)["authorization"] == "Bearer t" and "Cookie" not in keeps.persisted(headers)


def test_header_propagation_settings() -> None:
    allow = _compile({"headers": {"propagate": ["X-Tenant", "traceparent"], "drop": ["traceparent"]}}).headers
    assert allow.propagates("x-tenant") and not allow.propagates("x-other") and not allow.propagates("traceparent")
    assert not allow.propagates("authorization")
    every = _compile().headers
    assert every.propagates("x-anything") and not every.propagates("Cookie")
    assert not _compile({"headers": {"propagate": "none"}}).headers.propagates("x-tenant")


def test_retry_policy() -> None:
    assert _compile().retry.max_attempts is None
    retry = _compile({"retry": {"max_attempts": 5, "backoff_ms": 100, "max_backoff_ms": 2000}}).retry
    assert (retry.max_attempts, retry.backoff_ms, retry.max_backoff_ms) == (5, 100, 2000)


def test_compiled_channel_is_immutable() -> None:
    ch = _compile()
    with pytest.raises(AttributeError):
        ch.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"topic": "quasar.config"}, "topic"),
        ({"topic": "quasar.dlq"}, "topic"),
        ({"channel_type": "async", "config": {"output": "quasar.replies"}}, "config.output"),
        ({"channel_type": "async", "topic": "loop", "config": {"output": "loop"}}, "config.output"),
    ],
)
def test_quasars_own_topics_and_loops_are_refused(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ChannelInvalid) as err:
        compile_channel("c", {"name": "c", **doc})
    assert [e["field"] for e in err.value.errors] == [field]


def test_value_formats_compile_to_a_registry_policy() -> None:
    assert (_compile().value_format, _compile().registry) == ("json", None)
    avro = _compile({"avro_schema": "order"})
    assert (avro.value_format, avro.registry) == ("avro", None)
    plain = _compile({"value_format": "avro_registry"}, protocol="kafka", channel_type="async")
    assert plain.value_format == "avro_registry" and plain.registry is not None
    assert (plain.registry.format, plain.registry.url, plain.registry.subject_name_strategy) == ("avro", None, "topic")
    assert not plain.registry.auto_register  # production safety: outputs use registered schemas only
    sr = {
        "url": "https://psrc-1.confluent.cloud",
        "basic_auth_user_info": "env://SR_AUTH",
        "subject_name_strategy": "topic_record",
        "output_schema": "priced_order",
        "auto_register": True,
    }
    full = _compile({"value_format": "json_schema_registry", "schema_registry": sr}, protocol="kafka")
    assert full.registry is not None and full.registry.format == "json_schema"
    assert (full.registry.url, full.registry.basic_auth_user_info) == (sr["url"], "env://SR_AUTH")
    assert (full.registry.subject_name_strategy, full.registry.output_schema, full.registry.auto_register) == (
        "topic_record",
        "priced_order",
        True,
    )


def test_registry_formats_are_for_kafka_channels() -> None:
    errors = _errors({"value_format": "avro_registry"}, protocol="http", channel_type="sync")
    assert {"field": "config.value_format", "message": "avro_registry needs protocol kafka"} in errors


@pytest.mark.parametrize(
    ("config", "field", "text"),
    [
        ({"value_format": "avro"}, "config.avro_schema", "needs avro_schema"),
        ({"value_format": "avro_registry", "avro_schema": "order"}, "config.avro_schema", "not avro_registry"),
        ({"schema_registry": {}}, "config.schema_registry", "not json"),
        ({"value_format": "avro_registry", "envelope": "quasar"}, "config.envelope", "does not apply"),
        (
            {"value_format": "protobuf_registry", "schema_registry": {"output_schema": "x"}},
            "config.schema_registry.output_schema",
            "latest version",
        ),
        (
            {"value_format": "protobuf_registry", "schema_registry": {"subject_name_strategy": "record"}},
            "config.schema_registry.subject_name_strategy",
            "topic strategy",
        ),
        (
            {"value_format": "avro_registry", "schema_registry": {"subject_name_strategy": "record"}},
            "config.schema_registry.output_schema",
            "needs output_schema",
        ),
        (
            {"value_format": "avro_registry", "schema_registry": {"auto_register": True}},
            "config.schema_registry.auto_register",
            "needs output_schema",
        ),
        ({"value_format": "xml"}, "config.value_format", "Input should be"),
        (
            {"value_format": "avro_registry", "schema_registry": {"url": "ftp://x"}},
            "config.schema_registry.url",
            "http",
        ),
        ({"value_format": "avro_registry", "schema_registry": {"urll": "x"}}, "config.schema_registry.urll", "unknown"),
        (
            {"value_format": "avro_registry", "schema_registry": {"subject_name_strategy": "tpoic"}},
            "config.schema_registry.subject_name_strategy",
            "Input should be",
        ),
    ],
)
def test_value_format_settings_that_do_not_go_together_are_field_errors(
    config: dict[str, Any], field: str, text: str
) -> None:
    errors = _errors(config, protocol="kafka", channel_type="async")
    assert any(e["field"] == field and text in e["message"] for e in errors), errors


def test_start_from_defaults_to_latest_and_accepts_earliest_or_a_zoned_time() -> None:
    assert _compile().start_from == "latest"
    assert _compile(start_from="earliest").start_from == "earliest"
    assert _compile(start_from="2026-12-01T00:00:00Z").start_from == 1_796_083_200_000
    assert _compile(start_from="2026-12-01T01:00:00+01:00").start_from == 1_796_083_200_000
    for bad, words in [
        ("yesterday", "ISO 8601"),
        ("2026-12-01T00:00:00", "time zone"),
        ("2026-12-32T00:00:00Z", "ISO 8601"),
        ("Latest", "ISO 8601"),
    ]:
        (err,) = _errors(start_from=bad)
        assert err["field"] == "start_from" and words in err["message"], err

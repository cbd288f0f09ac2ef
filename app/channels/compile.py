"""Compile a channel document into a `CompiledChannel` (pure; run once per config version, at fold time).

Every problem is reported at once as `{field, message}` with the field's path (`config.rate_limit.burst`),
so the admin API answers a write with all of them (400 `VALIDATION_ERROR`) and `/health` lists them for
a stored version that cannot run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from app.channels.compiled import (
    CREDENTIAL_HEADERS,
    CachePolicy,
    CompiledChannel,
    DedupPolicy,
    GovernancePolicy,
    HeaderPolicy,
    InputGuards,
    RateLimitPolicy,
    RegistryPolicy,
    RetryPolicy,
    RolloutKey,
    RoutePattern,
    TracingMode,
    TracingPolicy,
)
from app.engine.jsonlogic import Logic, compile_logic
from app.engine.models import REGISTRY_FORMATS, ChannelConfig, ChannelDoc, HeadersConfig, TracingConfig
from app.errors import ValidationFailed
from app.kafka.names import TopicNames

__all__ = ["KAFKA_KEY", "ChannelInvalid", "compile_channel", "compile_route"]

KAFKA_KEY = "$kafka_key"
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class ChannelInvalid(ValidationFailed):
    """A channel document that cannot be compiled; `errors` lists `{field, message}` per problem."""

    def __init__(self, channel_id: str, errors: list[dict[str, str]]) -> None:
        text = "; ".join(f"{e['field'] or '<root>'}: {e['message']}" for e in errors)
        super().__init__(f"channel '{channel_id}' is invalid: {text}", details=errors)
        self.errors = errors


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        # Union members add their type name to the path (`tracing.str`, `output.bool`): drop it.
        loc = [p for p in loc if p not in _UNION_TAGS]
        message = str(e.get("msg", ""))
        if e.get("type") == "extra_forbidden":
            message = "unknown setting (check its spelling; see docs/concepts.md#channel-settings)"
        out.append({"field": ".".join(loc), "message": message})
    return out


_UNION_TAGS = frozenset({"str", "bool", "list[str]", "dict[str,any]", "TracingConfig", "literal['all','none']"})


def compile_route(pattern: str, methods: tuple[str, ...] | list[str] = ()) -> RoutePattern:
    """Compile `route_pattern`; `ValueError` for an empty segment, a bad or repeated `{param}`."""
    segments: list[tuple[str, str]] = []
    seen: set[str] = set()
    parts = pattern.strip().strip("/").split("/")
    if parts == [""]:
        raise ValueError("route_pattern needs at least one segment")
    for raw in parts:
        if not raw:
            raise ValueError(f"route_pattern {pattern!r} has an empty segment")
        if "{" in raw or "}" in raw:
            m = _PARAM.match(raw)
            if m is None:
                raise ValueError(f"route_pattern segment {raw!r} must be literal text or one whole {{name}}")
            if m.group(1) in seen:
                raise ValueError(f"route_pattern repeats the parameter {{{m.group(1)}}}")
            seen.add(m.group(1))
            segments.append(("param", m.group(1)))
        else:
            segments.append(("static", raw.lower()))
    if segments[-1] == ("static", "async"):
        # A request path ending in /async selects async processing of the path before it: no request
        # could ever reach this route.
        raise ValueError(f"route_pattern {pattern!r} ends in 'async', which is reserved (it selects async mode)")
    return RoutePattern(pattern, tuple(segments), frozenset(m.upper() for m in methods))


class _Compiler:
    """Collects errors while compiling the parts of one validated document."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def logic(self, rule: Any, where: str) -> Logic | None:
        if rule is None:
            return None
        try:
            return compile_logic(rule)
        except Exception as exc:
            self.errors.append({"field": where, "message": f"invalid JSONLogic: {exc}"})
            return None

    def rollout(self, cfg: Any) -> RolloutKey | None:
        if cfg is None:
            return None
        if isinstance(cfg, str):
            if not cfg.strip():
                self.errors.append({"field": "config.rollout_key", "message": "must not be blank"})
                return None
            return RolloutKey(kafka_key=True) if cfg == KAFKA_KEY else RolloutKey(header=cfg.lower())
        if cfg.get("kafka_key") is True and len(cfg) == 1:
            return RolloutKey(kafka_key=True)
        if isinstance(cfg.get("header"), str) and len(cfg) == 1:
            return RolloutKey(header=cfg["header"].lower())
        rule = cfg["logic"] if "logic" in cfg and len(cfg) == 1 else cfg
        logic = self.logic(rule, "config.rollout_key")
        return RolloutKey(logic=logic) if logic is not None else None


def _tracing(value: str | TracingConfig | None) -> TracingPolicy:
    cfg = TracingConfig.model_validate({"policy": value}) if isinstance(value, str) else value
    policy = cfg.policy if cfg is not None else "all"
    per_task = cfg.per_task if cfg is not None else False
    explicit = cfg is not None  # without the setting, Kafka-ingested records get `TracingPolicy.ingested()`
    if policy.startswith("sample:"):
        return TracingPolicy("sample", float(policy.split(":", 1)[1]), per_task, explicit)
    mode: TracingMode = "all" if policy == "all" else "errors" if policy == "errors" else "off"
    return TracingPolicy(mode, 1.0 if mode == "all" else 0.0, per_task, explicit)


def _headers(cfg: HeadersConfig | None, api_key_header: str | None) -> HeaderPolicy:
    # The header that carries this channel's API key is a credential like `authorization`.
    secret = CREDENTIAL_HEADERS | ({api_key_header} if api_key_header else set())
    if cfg is None:
        return HeaderPolicy(secret=frozenset(secret))
    propagate = cfg.propagate if isinstance(cfg.propagate, str) else frozenset(h.lower() for h in cfg.propagate)
    return HeaderPolicy(
        propagate=propagate,
        drop=frozenset(h.lower() for h in cfg.drop),
        secret=frozenset(secret | {h.lower() for h in cfg.secret}),
        keep=frozenset(h.lower() for h in cfg.keep_credentials),
    )


def _value_format(cfg: ChannelConfig, errors: list[dict[str, str]]) -> tuple[Any, RegistryPolicy | None]:
    """The channel's value format and, for the `*_registry` ones, its registry policy (settings that do not
    go together are field errors)."""
    fmt = cfg.value_format or ("avro" if cfg.avro_schema is not None else "json")
    sr = cfg.schema_registry

    def bad(where: str, message: str) -> None:
        errors.append({"field": f"config.{where}", "message": message})

    if fmt == "avro" and cfg.avro_schema is None:
        bad("avro_schema", "value_format avro needs avro_schema (a schema file name or the schema itself)")
    if fmt != "avro" and cfg.avro_schema is not None:
        bad("avro_schema", f"avro_schema is for value_format avro, not {fmt}")
    if fmt not in REGISTRY_FORMATS:
        if sr is not None:
            bad("schema_registry", f"applies to value formats {', '.join(sorted(REGISTRY_FORMATS))}, not {fmt}")
        return fmt, None
    if cfg.envelope == "quasar":
        bad("envelope", f"a {fmt} value is the payload itself: envelope quasar does not apply")
    if sr is None:
        return fmt, RegistryPolicy(fmt.removesuffix("_registry"))  # type: ignore[arg-type]
    if fmt == "protobuf_registry" and sr.output_schema is not None:
        # Python has no .proto compiler: message types come from the registry's serialized descriptors.
        bad(
            "schema_registry.output_schema",
            "not for protobuf_registry: outputs use the output subject's latest version",
        )
    elif fmt == "protobuf_registry" and sr.subject_name_strategy != "topic":
        bad("schema_registry.subject_name_strategy", "protobuf_registry outputs use the topic strategy")
    elif sr.subject_name_strategy != "topic" and sr.output_schema is None:
        bad(
            "schema_registry.output_schema",
            f"subject_name_strategy {sr.subject_name_strategy} names the output subject after the output "
            "record: it needs output_schema",
        )
    if sr.auto_register and sr.output_schema is None:
        bad("schema_registry.auto_register", "needs output_schema (the schema to register)")
    return fmt, RegistryPolicy(
        fmt.removesuffix("_registry"),  # type: ignore[arg-type]
        url=sr.url,
        basic_auth_user_info=sr.basic_auth_user_info,
        bearer_token=sr.bearer_token,
        subject_name_strategy=sr.subject_name_strategy,
        output_schema=sr.output_schema,
        auto_register=sr.auto_register,
    )


def _start_from(value: str) -> Literal["earliest", "latest"] | int:
    if value == "earliest":
        return "earliest"
    if value == "latest":
        return "latest"
    return int(datetime.fromisoformat(value).timestamp() * 1000)  # validated by ChannelDoc: has a zone


def compile_channel(
    channel_id: str, definition: Mapping[str, Any], topics: TopicNames | None = None
) -> CompiledChannel:
    """Validate and compile one channel definition; raises `ChannelInvalid` listing every problem.

    `topics` resolves the default request and output topic names (the deployment's topic prefix).
    """
    try:
        doc = ChannelDoc.model_validate({**definition, "channel_id": channel_id})
    except ValidationError as exc:
        raise ChannelInvalid(channel_id, _field_errors(exc)) from None
    names = topics or TopicNames()
    c = _Compiler()
    cfg = doc.config

    route: RoutePattern | None = None
    if doc.route_pattern:
        try:
            route = compile_route(doc.route_pattern, doc.methods)
        except ValueError as exc:
            c.errors.append({"field": "route_pattern", "message": str(exc)})

    rate = None
    if cfg.rate_limit is not None:
        rl = cfg.rate_limit
        burst = rl.burst if rl.burst is not None else int(rl.requests_per_second / 2) + 1
        rate = RateLimitPolicy(rl.requests_per_second, burst, c.logic(rl.key_logic, "config.rate_limit.key_logic"))
    dedup = None
    if cfg.deduplication is not None:
        dd = cfg.deduplication
        dedup = DedupPolicy(
            header=dd.header.lower(),
            window_ms=dd.window_secs * 1000,
            key_logic=c.logic(dd.key_logic, "config.deduplication.key_logic"),
            return_original=dd.return_original,
        )
    cache = None
    if cfg.cache is not None and cfg.cache.enabled:
        fields = cfg.cache.cache_key_fields
        # Orion matches top-level fields only, so its docs' "data.user_id" never matched: accept both.
        cache = CachePolicy(
            ttl_ms=cfg.cache.ttl_secs * 1000,
            fields=tuple(f.removeprefix("data.") for f in fields) if fields else None,
        )
    cors = cfg.cors
    guards = InputGuards(
        api_keys=tuple(cfg.api_keys or ()),
        api_key_header=cfg.api_key_header.lower(),
        validation=c.logic(cfg.validation_logic, "config.validation_logic"),
        max_payload_bytes=cfg.max_payload_size,
        allowed_origins=frozenset(cors.allowed_origins) if cors and cors.allowed_origins is not None else None,
        allowed_methods=tuple(cors.allowed_methods) if cors and cors.allowed_methods is not None else None,
        allowed_headers=tuple(cors.allowed_headers) if cors and cors.allowed_headers is not None else None,
    )
    governance = GovernancePolicy(
        channel=doc.name,
        rate_limit=rate,
        dedup=dedup,
        cache=cache,
        fail_closed=cfg.failure_mode == "fail_closed",
        max_concurrent=cfg.backpressure.max_concurrent if cfg.backpressure else None,
    )
    rollout = c.rollout(cfg.rollout_key)
    key_logic = c.logic(cfg.key_logic, "config.key_logic")

    # Every async channel writes its results to an output topic unless it opts out (`output: false`); a
    # sync channel answers its caller and has one only when it asks (`output: true` or a topic name).
    value_format, registry = _value_format(cfg, c.errors)
    if registry is not None and doc.protocol != "kafka":
        # The gateway writes HTTP requests to the channel topic as JSON: they could never be decoded.
        c.errors.append({"field": "config.value_format", "message": f"{value_format} needs protocol kafka"})
    output = cfg.output if cfg.output is not None else doc.channel_type == "async"
    output_topic = output if isinstance(output, str) else names.output(doc.name) if output else None
    request_topic = names.channel(doc.name, doc.topic)
    if names.is_internal(request_topic):
        c.errors.append({"field": "topic", "message": f"'{request_topic}' is internal to Quasar: not a channel topic"})
    if output_topic is not None and names.is_internal(output_topic):
        c.errors.append({"field": "config.output", "message": f"'{output_topic}' is internal to Quasar"})
    elif output_topic is not None and output_topic == request_topic:
        c.errors.append({"field": "config.output", "message": "the output topic is the channel's own topic (a loop)"})
    if c.errors:
        raise ChannelInvalid(channel_id, c.errors)

    retry = cfg.retry
    return CompiledChannel(
        id=channel_id,
        name=doc.name,
        channel_type=doc.channel_type,
        protocol=doc.protocol,
        priority=doc.priority,
        workflow_ids=tuple(doc.bound_workflow_ids),
        route=route,
        topic=request_topic,
        output_topic=output_topic,
        consumer_group=doc.consumer_group,
        envelope=cfg.envelope or ("raw" if doc.protocol == "kafka" else "quasar"),
        key_logic=key_logic,
        timeout_ms=cfg.timeout_ms,
        guards=guards,
        governance=governance,
        rollout=rollout,
        retry=RetryPolicy(retry.max_attempts, retry.backoff_ms, retry.max_backoff_ms) if retry else RetryPolicy(),
        tracing=_tracing(cfg.tracing),
        headers=_headers(cfg.headers, guards.api_key_header if guards.api_keys else None),
        avro_schema=cfg.avro_schema,
        value_format=value_format,
        registry=registry,
        start_from=_start_from(doc.start_from),
        document=doc,
    )

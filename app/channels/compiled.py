"""The compiled channel: one typed, immutable object per channel version, shared by every reader.

`compile_channel` (in `app.channels.compile`) builds it once per config version at fold time; the
gateway (routes, guards, topics), governance (rate limit, dedup, cache, failure mode) and the worker
(topics, envelope, keys, output, retry, tracing, headers) read it. Nobody parses the document again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.engine.jsonlogic import Logic
from app.engine.models import ChannelDoc

__all__ = [
    "CREDENTIAL_HEADERS",
    "INGESTED_DEFAULT",
    "CachePolicy",
    "CompiledChannel",
    "DedupPolicy",
    "GovernancePolicy",
    "HeaderPolicy",
    "InputGuards",
    "RateLimitPolicy",
    "RegistryPolicy",
    "RetryPolicy",
    "RolloutKey",
    "RoutePattern",
    "TracingMode",
    "TracingPolicy",
    "ValueFormat",
]

# Request headers that carry credentials: never written to a topic unless a channel keeps them.
CREDENTIAL_HEADERS: frozenset[str] = frozenset({"authorization", "cookie", "proxy-authorization"})

Envelope = Literal["raw", "quasar"]
TracingMode = Literal["all", "errors", "sample", "off"]
ValueFormat = Literal["json", "avro", "avro_registry", "json_schema_registry", "protobuf_registry"]


@dataclass(frozen=True, slots=True)
class RoutePattern:
    """A compiled `route_pattern`: each segment is `("static", lower-cased text)` or `("param", name)`."""

    pattern: str
    segments: tuple[tuple[str, str], ...]
    methods: frozenset[str]  # empty = any method


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    rate: float
    burst: int
    key_logic: Logic | None = None


@dataclass(frozen=True, slots=True)
class DedupPolicy:
    header: str = "idempotency-key"  # lower case: header maps are matched lower-cased
    window_ms: int = 300_000
    key_logic: Logic | None = None
    return_original: bool = False


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_ms: int = 300_000
    fields: tuple[str, ...] | None = None  # top-level `data` fields of the key; None = all of `data`


@dataclass(frozen=True, slots=True)
class RolloutKey:
    """Where a request's sticky rollout key comes from: one of header, Kafka key, or logic."""

    header: str | None = None
    kafka_key: bool = False
    logic: Logic | None = None


@dataclass(frozen=True, slots=True)
class InputGuards:
    """Checks on what comes in, before any work: API keys (401), size (413), validation (400), CORS (403)."""

    api_keys: tuple[str, ...] = ()  # references as written (`env://VAR` resolved at use)
    api_key_header: str = "x-api-key"
    validation: Logic | None = None
    max_payload_bytes: int | None = None  # the channel's own limit; the global one always applies too
    allowed_origins: frozenset[str] | None = None
    allowed_methods: tuple[str, ...] | None = None
    allowed_headers: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class GovernancePolicy:
    """Shared-state governance of a channel (state in the governance store: Redis or memory)."""

    channel: str
    rate_limit: RateLimitPolicy | None = None
    dedup: DedupPolicy | None = None
    cache: CachePolicy | None = None
    fail_closed: bool = False
    max_concurrent: int | None = None  # backpressure (per gateway instance)

    @property
    def active(self) -> bool:
        """Anything that needs the store at all (the common ungoverned channel costs nothing)."""
        return bool(self.rate_limit or self.dedup or self.cache or self.fail_closed)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Record-level retries of transient failures; None = the worker's setting."""

    max_attempts: int | None = None
    backoff_ms: int | None = None
    max_backoff_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TracingPolicy:
    """`tracing: all | errors | sample:<ratio> | off`. A channel without the setting traces every record the
    gateway produced (`all`: an async HTTP caller polls its trace, Orion traces HTTP results) but only the
    failures of records produced straight to its topic (`ingested()`: Orion's Kafka ingest writes no trace)."""

    mode: TracingMode = "all"
    ratio: float = 1.0  # share of successful requests traced in `sample` mode
    per_task: bool = False  # each task's input and output on the trace (Orion's tracing.per_task)
    explicit: bool = False  # the channel sets `tracing`: it applies to Kafka-ingested records as well

    def ingested(self) -> TracingPolicy:
        """The policy for records produced straight to the channel topic (no gateway `quasar-mode` header)."""
        return self if self.explicit else INGESTED_DEFAULT

    def traces(self, *, failed: bool, draw: float | None = None) -> bool:
        """Whether a request is traced; `draw` is uniform in [0, 1), drawn here when not given and only in
        `sample` mode for a success (the common `errors` success draws nothing). Failures are traced unless
        `off`."""
        if self.mode == "all":
            return True
        if self.mode == "off":
            return False
        if failed or self.mode != "sample":
            return failed
        return (random.random() if draw is None else draw) < self.ratio


# Kafka-ingested records of a channel without a `tracing` setting: failures (dead letters) only.
INGESTED_DEFAULT = TracingPolicy("errors", 0.0)


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """Which headers reach the records written for a request. Names are lower case.

    - `persisted`: request headers kept in `metadata.headers` on the channel topic: everything but the
      credential headers (`authorization`, `cookie`, `proxy-authorization`, the channel's `secret`
      ones), unless the channel lists them in `keep_credentials`.
    - `propagates`: input headers copied to output, reply, trace and DLQ records (`all`, `none` or an
      allow-list), minus `drop` and minus credentials.
    """

    propagate: Literal["all", "none"] | frozenset[str] = "all"
    drop: frozenset[str] = frozenset()
    secret: frozenset[str] = CREDENTIAL_HEADERS
    keep: frozenset[str] = frozenset()  # credentials this channel explicitly persists

    def persisted(self, headers: Mapping[str, str]) -> dict[str, str]:
        """`headers` without the credentials the channel did not ask to keep (keys compared lower-cased)."""
        secret, keep = self.secret, self.keep
        return {k: v for k, v in headers.items() if k.lower() not in secret or k.lower() in keep}

    def propagates(self, name: str) -> bool:
        """Whether input header `name` is copied to the records produced for it."""
        lower = name.lower()
        if lower in self.drop or (lower in self.secret and lower not in self.keep):
            return False
        if self.propagate == "all":
            return True
        if self.propagate == "none":
            return False
        return lower in self.propagate


@dataclass(frozen=True, slots=True)
class RegistryPolicy:
    """How a channel's values go through a Confluent Schema Registry (the wire format: magic byte 0, a 4-byte
    schema id, the payload). Unset URL and credentials mean the worker's QUASAR_SCHEMA_REGISTRY_URL settings;
    credentials stay references (`env://VAR`), resolved by the worker."""

    format: Literal["avro", "json_schema", "protobuf"]
    url: str | None = None
    basic_auth_user_info: str | None = None
    bearer_token: str | None = None
    subject_name_strategy: Literal["topic", "record", "topic_record"] = "topic"
    output_schema: str | Mapping[str, Any] | None = None
    auto_register: bool = False


@dataclass(frozen=True, slots=True)
class CompiledChannel:
    """One channel version, compiled: everything any reader needs, typed and immutable."""

    id: str
    name: str
    channel_type: Literal["sync", "async"]
    protocol: Literal["rest", "http", "kafka"]
    priority: int
    workflow_ids: tuple[str, ...]
    route: RoutePattern | None  # from `route_pattern` (the gateway routes only sync rest/http ones)
    topic: str  # request topic: the declared `topic`, else `<prefix>ch.<name>`
    output_topic: str | None  # async: `<prefix>out.<name>` unless `output: false`; sync: None
    consumer_group: str | None  # None = the worker's group (`<prefix>worker`)
    envelope: Envelope  # record value format on the channel topic
    key_logic: Logic | None  # record key of outputs (None: keep the input key)
    timeout_ms: int | None  # None = QUASAR_PROCESSING_TIMEOUT_MS
    guards: InputGuards = field(default_factory=InputGuards)
    governance: GovernancePolicy = field(default_factory=lambda: GovernancePolicy(""))
    rollout: RolloutKey | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tracing: TracingPolicy = field(default_factory=TracingPolicy)
    headers: HeaderPolicy = field(default_factory=HeaderPolicy)
    avro_schema: str | Mapping[str, Any] | None = None
    value_format: ValueFormat = "json"
    registry: RegistryPolicy | None = None  # set for the `*_registry` value formats
    # Where the worker group starts on a partition without a committed offset: epoch ms for a timestamp.
    start_from: Literal["earliest", "latest"] | int = "latest"
    document: ChannelDoc | None = None  # the validated document it was compiled from

    @property
    def is_async(self) -> bool:
        return self.channel_type == "async"

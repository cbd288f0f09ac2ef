"""Documents in Orion's admin-API shape: workflows, tasks, channels, connectors (pydantic v2).

Unknown keys of workflows and connectors are dropped as Orion does (`extra="ignore"`; connector
`config` keeps them). Channels are strict: an unknown key anywhere in a channel is a field error.
Managed fields (version, status, rollout_percentage, timestamps) are owned by the config store.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from app.secrets import mask_secrets

__all__ = [
    "REGISTRY_FORMATS",
    "ApiKeyAuth",
    "BackpressureConfig",
    "BasicAuth",
    "BearerAuth",
    "CacheConfig",
    "CacheConnectorConfig",
    "ChannelConfig",
    "ChannelDoc",
    "ConnectorDoc",
    "CorsConfig",
    "DbConnectorConfig",
    "DeduplicationConfig",
    "FunctionDoc",
    "HeadersConfig",
    "HttpConnectorConfig",
    "KafkaConnectorConfig",
    "RateLimitConfig",
    "RecordRetryConfig",
    "RetryConfig",
    "SchemaRegistryConfig",
    "Status",
    "StorageConnectorConfig",
    "TaskDoc",
    "TracingConfig",
    "ValueFormat",
    "WorkflowDoc",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Status = Literal["draft", "active", "archived"]


def _new_id() -> str:
    return str(uuid.uuid4())


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Managed(_Doc):
    """Fields the config store owns; users never need to send them."""

    version: int = Field(1, ge=1)
    status: Status = "draft"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    activated_at: datetime | None = None


class FunctionDoc(_Doc):
    """`{"name": ..., "input": {...}}`: the input's shape depends on the function."""

    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class TaskDoc(_Doc):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str | None = None
    condition: Any = True
    continue_on_error: bool = False
    function: FunctionDoc


class WorkflowDoc(_Managed):
    """A workflow. `workflow_id` may also be sent as `id` (the seed quick-start does that)."""

    workflow_id: str = Field(
        default_factory=_new_id,
        validation_alias=AliasChoices("workflow_id", "id"),
        pattern=ID_PATTERN,
        max_length=128,
    )
    name: str = Field(min_length=1, max_length=255, pattern=r"\S")
    description: str | None = Field(None, max_length=2048)
    priority: int = Field(0, ge=0, description="Lower runs first")
    condition: Any = True
    tasks: list[TaskDoc] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    continue_on_error: bool = False
    rollout_percentage: int = Field(100, ge=0, le=100)

    @property
    def id(self) -> str:
        return self.workflow_id


# --- channels -------------------------------------------------------------------------------
# Channel settings are strict: an unknown or mistyped key (`api_key` for `api_keys`, `failure_mod`) is a
# field error at write time, never a silently ignored setting that leaves a channel open or failing open.
# Each setting is compiled once per config version into `app.channels.CompiledChannel`.

TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
# Kafka group ids: librdkafka accepts any string; keep them printable and bounded like topic names.
GROUP_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# tracing policy: every request, failed ones only, a sampled share, or none.
TRACING_PATTERN = r"^(all|errors|off|sample:(0(\.[0-9]+)?|1(\.0+)?))$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RateLimitConfig(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int | None = Field(None, ge=1, description="Default: requests_per_second / 2 + 1")
    key_logic: Any = Field(None, description="JSONLogic giving the client key (default: client IP / Kafka key)")


class BackpressureConfig(_Strict):
    max_concurrent: int = Field(ge=1)
    queue_depth: int | None = Field(None, ge=0, description="Accepted for Orion compatibility; unused (as in Orion)")


class CorsConfig(_Strict):
    """Browser access to the channel; unset fields come from the global `QUASAR_CORS_*` settings."""

    allowed_origins: list[str] | None = None
    allowed_methods: list[str] | None = None
    allowed_headers: list[str] | None = None
    allow_credentials: bool | None = None
    max_age: int | None = Field(None, ge=0, description="Seconds a browser may cache a preflight answer")


class DeduplicationConfig(_Strict):
    header: str = Field("Idempotency-Key", min_length=1)
    window_secs: int = Field(
        300,
        ge=1,
        validation_alias=AliasChoices("window_secs", "retention_secs"),
        description="Alias: retention_secs",
    )
    key_logic: Any = Field(None, description="JSONLogic giving the idempotency key (instead of the header)")
    return_original: bool = Field(False, description="Answer a duplicate with the first request's response")
    connector: str | None = Field(None, description="Not supported: dedup state lives in QUASAR_REDIS_URL")

    @model_validator(mode="after")
    def _no_connector(self) -> DeduplicationConfig:
        _refuse_state_connector("deduplication", self.connector)
        return self


def _refuse_state_connector(section: str, connector: str | None) -> None:
    # Orion keeps dedup/cache state per instance unless a cache connector is named; Quasar shares it for
    # every channel through QUASAR_REDIS_URL, so a named connector would be silently ignored: refuse it.
    if connector is not None:
        raise ValueError(
            f"{section}.connector is not supported: governance state is shared through QUASAR_REDIS_URL "
            f"(remove '{connector}')"
        )


class CacheConfig(_Strict):
    enabled: bool = False
    ttl_secs: int = Field(300, ge=1)
    cache_key_fields: list[str] | None = None
    connector: str | None = Field(None, description="Not supported: the response cache lives in QUASAR_REDIS_URL")

    @model_validator(mode="after")
    def _no_connector(self) -> CacheConfig:
        _refuse_state_connector("cache", self.connector)
        return self


class TracingConfig(_Strict):
    """`tracing` as an object; the string form `"errors"` is `{"policy": "errors"}`."""

    policy: str = Field("all", pattern=TRACING_PATTERN, description="all | errors | sample:<ratio> | off")
    per_task: bool = Field(False, validation_alias=AliasChoices("per_task", "task_details"))


class HeadersConfig(_Strict):
    """Which headers reach the records Quasar writes for a request (channel topic, outputs, replies, DLQ)."""

    propagate: Literal["all", "none"] | list[str] = Field(
        "all", description="Input headers copied to output/reply/trace/DLQ records: all, none, or an allow-list"
    )
    drop: list[str] = Field(default_factory=list, description="Headers never propagated")
    secret: list[str] = Field(
        default_factory=list, description="More credential headers: never written to a topic (like authorization)"
    )
    keep_credentials: list[str] = Field(
        default_factory=list,
        description="Credential headers (authorization, cookie, proxy-authorization, `secret`) this channel "
        "explicitly wants kept in metadata.headers on its topic",
    )


class RecordRetryConfig(_Strict):
    """Record-level retries of transient failures (connector calls retry per their own connector `retry`)."""

    max_attempts: int | None = Field(None, ge=1, le=100, description="Default: QUASAR_WORKER_MAX_ATTEMPTS")
    backoff_ms: int | None = Field(None, ge=0, le=3_600_000, description="First backoff; doubles per attempt")
    max_backoff_ms: int | None = Field(None, ge=0, le=3_600_000)


ValueFormat = Literal["json", "avro", "avro_registry", "json_schema_registry", "protobuf_registry"]
REGISTRY_FORMATS: frozenset[str] = frozenset({"avro_registry", "json_schema_registry", "protobuf_registry"})


class SchemaRegistryConfig(_Strict):
    """A channel's Schema Registry settings (value formats `*_registry`); unset URL and credentials: the
    worker's QUASAR_SCHEMA_REGISTRY_URL and its credential settings."""

    url: str | None = Field(None, description="Registry URL(s), comma-separated; default QUASAR_SCHEMA_REGISTRY_URL")
    basic_auth_user_info: str | None = Field(None, description="`key:secret` or env://VAR")
    bearer_token: str | None = Field(None, description="Static bearer token or env://VAR")
    subject_name_strategy: Literal["topic", "record", "topic_record"] = Field(
        "topic",
        description="Subject of output records: <topic>-value, <record name>, or <topic>-<record name>",
    )
    output_schema: str | dict[str, Any] | None = Field(
        None,
        description="Schema of output records: a file name in QUASAR_SCHEMAS_DIR or the schema itself; "
        "unset: the latest version registered under the output subject",
    )
    auto_register: bool = Field(
        False, description="Register output_schema under the output subject if it is not there (default off)"
    )

    @field_validator("url")
    @classmethod
    def _http_urls(cls, value: str | None) -> str | None:
        if value is not None:
            for url in value.split(","):
                if urlsplit(url.strip()).scheme not in ("http", "https") or not urlsplit(url.strip()).netloc:
                    raise ValueError(f"{url.strip()!r} is not an http(s) URL")
        return value


class ChannelConfig(_Strict):
    """Per-channel settings (Orion's `config_json` keys plus Quasar's). Unknown keys are rejected."""

    rate_limit: RateLimitConfig | None = None
    timeout_ms: int | None = Field(None, ge=1)
    validation_logic: Any = None
    max_payload_size: int | None = Field(
        None, ge=1, description="Bytes; lower than QUASAR_MAX_PAYLOAD_SIZE to tighten it for this channel"
    )
    backpressure: BackpressureConfig | None = None
    cors: CorsConfig | None = None
    deduplication: DeduplicationConfig | None = None
    cache: CacheConfig | None = None
    failure_mode: Literal["fail_open", "fail_closed"] = Field(
        "fail_open", description="When the shared governance store is unreachable"
    )
    api_keys: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, description="Accepted data API keys (`env://VAR` allowed); a single string is one key"
    )
    api_key_header: str = Field("X-API-Key", min_length=1)
    rollout_key: str | dict[str, Any] | None = Field(
        None, description="Header name, `$kafka_key`, {kafka_key: true}, {header}, {logic} or JSONLogic"
    )
    key_logic: Any = Field(None, description="JSONLogic giving the record key (default: the input record's key)")
    envelope: Literal["raw", "quasar"] | None = Field(
        None, description="Record value format: raw (default for protocol kafka) or quasar {data, metadata}"
    )
    output: bool | str | None = Field(
        None,
        description="Async channels write results to <prefix>out.<channel> unless false; a string names the topic",
    )
    avro_schema: str | dict[str, Any] | None = Field(
        None, description="Schemaless Avro (value_format avro): a file name in QUASAR_SCHEMAS_DIR or the schema"
    )
    value_format: ValueFormat | None = Field(
        None,
        description="Record value format: json (default), avro (schemaless, needs avro_schema), or the Confluent "
        "wire format through a Schema Registry: avro_registry, json_schema_registry, protobuf_registry",
    )
    schema_registry: SchemaRegistryConfig | None = None
    tracing: str | TracingConfig | None = Field(
        None,
        description="all | errors | sample:<ratio> | off, or {policy, per_task}. Unset: all for records the "
        "gateway produced, errors for records produced straight to the channel topic",
    )
    headers: HeadersConfig | None = None
    retry: RecordRetryConfig | None = None

    @field_validator("output")
    @classmethod
    def _output_topic(cls, value: bool | str | None) -> bool | str | None:
        if isinstance(value, str) and not re.match(TOPIC_PATTERN, value):
            raise ValueError("must be true, false or a topic name (1-249 of A-Z a-z 0-9 . _ -)")
        return value

    @field_validator("tracing")
    @classmethod
    def _tracing_policy(cls, value: str | TracingConfig | None) -> str | TracingConfig | None:
        if isinstance(value, str) and not re.match(TRACING_PATTERN, value):
            raise ValueError("must be all, errors, sample:<ratio between 0 and 1> or off")
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, raw: Any) -> Any:
        # `"api_keys": "k"` is one key, as Orion-style configs write it.
        if isinstance(raw, dict) and isinstance(raw.get("api_keys"), str):
            raw = {**raw, "api_keys": [raw["api_keys"]]}
        return raw


class ChannelDoc(_Managed):
    """A channel. Binds one `workflow_id` (Orion) or a list `workflow_ids` (Quasar). Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    channel_id: str | None = Field(None, pattern=ID_PATTERN, max_length=128, description="Default: name")
    name: str = Field(min_length=1, max_length=255, pattern=ID_PATTERN)
    description: str | None = Field(None, max_length=2048)
    channel_type: Literal["sync", "async"] = "sync"
    protocol: Literal["rest", "http", "kafka"] = "http"
    methods: list[str] = Field(default_factory=list)
    route_pattern: str | None = Field(None, max_length=1024)
    topic: str | None = Field(None, pattern=TOPIC_PATTERN)
    consumer_group: str | None = Field(
        None,
        pattern=GROUP_PATTERN,
        description="Kafka consumer group of this channel (default: the worker's group, <prefix>worker)",
    )
    start_from: str = Field(
        "latest",
        description="Where the worker group starts on a partition it has no committed offset for: earliest, "
        "latest (records produced since the channel version was activated) or an ISO 8601 timestamp",
    )
    workflow_id: str | None = None
    workflow_ids: list[str] = Field(default_factory=list)
    config: ChannelConfig = Field(default_factory=lambda: ChannelConfig.model_validate({}))
    priority: int = 0
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ChannelDoc:
        if self.channel_id is None:
            self.channel_id = self.name
        if self.protocol == "rest" and not self.route_pattern:
            raise ValueError("a rest channel needs route_pattern")
        return self

    @field_validator("start_from")
    @classmethod
    def _start_from(cls, value: str) -> str:
        if value in ("earliest", "latest"):
            return value
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be earliest, latest or an ISO 8601 timestamp such as 2026-12-01T00:00:00Z") from None
        if when.tzinfo is None:
            raise ValueError("the timestamp needs a time zone: add Z (UTC) or an offset such as +01:00")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        upper = [m.upper() for m in methods]
        unknown = [m for m in upper if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method(s) {unknown}; use {', '.join(HTTP_METHODS)}")
        return upper

    @property
    def id(self) -> str:
        return self.channel_id or self.name

    @property
    def bound_workflow_ids(self) -> list[str]:
        """`workflow_id` first, then `workflow_ids`, without duplicates."""
        ids = ([self.workflow_id] if self.workflow_id else []) + self.workflow_ids
        return list(dict.fromkeys(ids))


# --- connectors -----------------------------------------------------------------------------


class RetryConfig(_Open):
    max_retries: int = Field(3, ge=0)
    retry_delay_ms: int = Field(1000, ge=0)


class BearerAuth(_Open):
    type: Literal["bearer"]
    token: str


class BasicAuth(_Open):
    type: Literal["basic"]
    username: str
    password: str


class ApiKeyAuth(_Open):
    type: Literal["apikey"]
    header: str = "X-API-Key"
    key: str


class HttpConnectorConfig(_Open):
    type: Literal["http"] = "http"
    url: str = Field(min_length=1)
    method: str = Field("", description="Default method of http_call tasks that give none (empty: GET)")
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Annotated[BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")] | None = None
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig.model_validate({}))
    max_response_size: int = Field(10 * 1024 * 1024, ge=1)
    allow_private_urls: bool = False
    timeout_ms: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_url_and_method(self) -> HttpConnectorConfig:
        # Orion validates connector URLs at creation; a typo must fail here, not on the first request.
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in self.url):
            raise ValueError(f"url must be an absolute http:// or https:// URL with a host, got {self.url!r}")
        if self.method and self.method.upper() not in HTTP_METHODS:
            raise ValueError(f"method must be one of {', '.join(HTTP_METHODS)}, got {self.method!r}")
        return self


class KafkaConnectorConfig(_Open):
    type: Literal["kafka"] = "kafka"
    brokers: list[str] = Field(default_factory=list)
    topic: str | None = None
    group_id: str | None = None


class DbConnectorConfig(_Open):
    type: Literal["db"] = "db"
    connection_string: str = Field(min_length=1)
    driver: Literal["postgres", "mysql", "sqlite", "mongodb"] = "postgres"
    max_connections: int | None = Field(None, ge=1)
    connect_timeout_ms: int | None = Field(None, ge=1)
    query_timeout_ms: int | None = Field(None, ge=1)
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig.model_validate({}))


class CacheConnectorConfig(_Open):
    type: Literal["cache"] = "cache"
    backend: Literal["redis", "memory"]
    url: str | None = None
    default_ttl_secs: int | None = Field(None, ge=0)
    max_connections: int | None = Field(None, ge=1)
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig.model_validate({}))

    @model_validator(mode="after")
    def _url_for_redis(self) -> CacheConnectorConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("a redis cache connector needs url")
        return self


class StorageConnectorConfig(_Open):
    type: Literal["storage"] = "storage"
    provider: Literal["s3", "gcs", "local"]
    bucket: str | None = None
    region: str | None = None
    base_path: str | None = None
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig.model_validate({}))


ConnectorConfig = Annotated[
    HttpConnectorConfig | KafkaConnectorConfig | DbConnectorConfig | CacheConnectorConfig | StorageConnectorConfig,
    Field(discriminator="type"),
]


class ConnectorDoc(_Doc):
    """A named connector; workflows reference it by `name`. Secrets live only here."""

    id: str = Field(default_factory=_new_id, validation_alias=AliasChoices("id", "connector_id"))
    name: str = Field(min_length=1, max_length=255, pattern=ID_PATTERN)
    connector_type: Literal["http", "kafka", "db", "cache", "storage"]
    config: ConnectorConfig
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _config_type(cls, raw: Any) -> Any:
        # Orion repeats the type inside config; accept it missing and fill it from connector_type.
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict) and "type" not in raw["config"]:
            raw = {**raw, "config": {**raw["config"], "type": raw.get("connector_type")}}
        return raw

    @model_validator(mode="after")
    def _types_agree(self) -> ConnectorDoc:
        if self.config.type != self.connector_type:
            raise ValueError(f"config.type '{self.config.type}' does not match connector_type '{self.connector_type}'")
        return self

    def masked(self) -> dict[str, Any]:
        """The document as JSON with every secret field replaced by `"******"`."""
        masked: dict[str, Any] = mask_secrets(self.model_dump(mode="json"))
        return masked

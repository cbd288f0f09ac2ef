"""Documents in Orion's admin-API shape: workflows, tasks, channels, connectors (pydantic v2).

Unknown keys are dropped as Orion does (`extra="ignore"`), except in channel `config` and
connector `config`, which keep extra keys for forward compatibility. Managed fields (version,
status, rollout_percentage, timestamps) are owned by the config store, not by users.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from app.secrets import mask_secrets

__all__ = [
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
    "HttpConnectorConfig",
    "KafkaConnectorConfig",
    "RateLimitConfig",
    "RetryConfig",
    "Status",
    "StorageConnectorConfig",
    "TaskDoc",
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


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RateLimitConfig(_Open):
    requests_per_second: float = Field(gt=0)
    burst: int | None = Field(None, ge=1, description="Default: requests_per_second / 2 + 1")
    key_logic: Any = None


class BackpressureConfig(_Open):
    max_concurrent: int = Field(ge=1)
    queue_depth: int | None = Field(None, ge=0)


class CorsConfig(_Open):
    allowed_origins: list[str] | None = None
    allowed_methods: list[str] | None = None
    allowed_headers: list[str] | None = None


class DeduplicationConfig(_Open):
    header: str = "Idempotency-Key"
    window_secs: int = Field(
        300,
        ge=1,
        validation_alias=AliasChoices("window_secs", "retention_secs"),
        description="Alias: retention_secs",
    )
    connector: str | None = None


class CacheConfig(_Open):
    enabled: bool = False
    ttl_secs: int = Field(300, ge=1)
    cache_key_fields: list[str] | None = None
    connector: str | None = None


class ChannelConfig(_Open):
    """Per-channel governance. Extra keys are kept (forward compatible)."""

    rate_limit: RateLimitConfig | None = None
    timeout_ms: int | None = Field(None, ge=1)
    validation_logic: Any = None
    backpressure: BackpressureConfig | None = None
    cors: CorsConfig | None = None
    deduplication: DeduplicationConfig | None = None
    cache: CacheConfig | None = None


class ChannelDoc(_Managed):
    """A channel. Binds one `workflow_id` (Orion) or a list `workflow_ids` (Quasar)."""

    channel_id: str | None = Field(None, pattern=ID_PATTERN, max_length=128, description="Default: name")
    name: str = Field(min_length=1, max_length=255, pattern=ID_PATTERN)
    description: str | None = Field(None, max_length=2048)
    channel_type: Literal["sync", "async"] = "sync"
    protocol: Literal["rest", "http", "kafka"] = "http"
    methods: list[str] = Field(default_factory=list)
    route_pattern: str | None = None
    topic: str | None = None
    consumer_group: str | None = None
    workflow_id: str | None = None
    workflow_ids: list[str] = Field(default_factory=list)
    config: ChannelConfig = Field(default_factory=lambda: ChannelConfig.model_validate({}))
    priority: int = 0

    @model_validator(mode="after")
    def _check(self) -> ChannelDoc:
        if self.channel_id is None:
            self.channel_id = self.name
        if self.protocol == "rest" and not self.route_pattern:
            raise ValueError("a rest channel needs route_pattern")
        self.methods = [m.upper() for m in self.methods]
        return self

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
    method: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Annotated[BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")] | None = None
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig.model_validate({}))
    max_response_size: int = Field(10 * 1024 * 1024, ge=1)
    allow_private_urls: bool = False
    timeout_ms: int | None = Field(None, ge=1)


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

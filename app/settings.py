"""The one settings object (pydantic-settings, env prefix `QUASAR_`)."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUASAR_", env_nested_delimiter="__", extra="ignore")

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers. Unset: `quasar dev` starts the embedded broker."
    )
    topic_prefix: str = Field(default="quasar.", description="Prefix of every topic Quasar owns.")
    fetch_wait_max_ms: int = Field(
        default=100,
        description="Consumer fetch.wait.max.ms. Real Kafka answers as soon as data arrives; Tansu only when "
        "the wait expires, so dev and tests use ~10 ms.",
    )
    config_fetch_wait_max_ms: int = Field(
        default=50,
        ge=1,
        description="fetch.wait.max.ms of config-log readers (never below `fetch_wait_max_ms`). Config changes "
        "are rare and each poll costs the broker CPU; a longer wait only delays requests right after an admin "
        "write (they carry the config offset and the worker waits for it).",
    )
    gateway_linger_ms: float = Field(
        default=5.0,
        ge=0,
        description="linger.ms of the gateway's request producer; each linger window's requests share one "
        "partition batch (Tansu's cost is per batch).",
    )
    worker_linger_ms: float = Field(
        default=1.0,
        ge=0,
        description="linger.ms of the worker's producer (replies, outputs, traces). A sync reply waits up to "
        "this long; the records of one consumed batch are batched whatever the value (5 ms measured "
        "~20% fewer sync req/s than 1 ms).",
    )
    session_timeout_ms: int = Field(
        default=10000, description="Consumer group session timeout (Tansu joins take about half of it)."
    )
    default_partitions: int = Field(default=4, description="Partitions of channel topics created on activation.")
    replication_factor: int = Field(default=1, description="Replication factor of topics Quasar creates.")

    # Processes
    instance_id: str = Field(default_factory=socket.gethostname, description="Name of this instance.")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    worker_metrics_port: int = 9091
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the worker's ops port (no auth: loopback unless a scraper needs it; "
        "the container image sets 0.0.0.0).",
    )
    worker_max_attempts: int = Field(
        default=3, description="Attempts for a retryable failure (with backoff) before the record goes to the DLQ."
    )
    worker_retry_backoff_ms: int = Field(default=200, description="First retry delay; doubles per attempt.")

    # Limits (Orion defaults)
    max_payload_size: int = Field(default=1_048_576, description="Max request body in bytes (413 above).")
    max_admin_body_size: int = Field(
        default=16_777_216, description="Max admin API request body in bytes (413 above; restores are big)."
    )
    max_url_bytes: int = Field(default=8192, description="Max request path + query in bytes (414 above).")
    max_header_bytes: int = Field(default=65_536, description="Max total request header bytes (431 above).")
    body_read_timeout_ms: int = Field(
        default=30_000, description="Max time to receive a whole request body (408 above: slow clients)."
    )
    header_read_timeout_ms: int = Field(
        default=10_000,
        gt=0,
        description="Max time to receive a request head (request line + headers) once a connection is open "
        "or the next request has begun (408 and close above; held half-sent heads cost a connection each).",
    )
    max_connections_per_client: int = Field(
        default=1000,
        gt=0,
        description="Max connections one client address may hold open to the gateway at once (more are "
        "closed at once). Behind a proxy every client shares its address: raise it there.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed "
        "(comma-separated). Empty: the client is always the connecting address, so rate "
        "limits and audit entries cannot be steered by a forged header.",
    )
    worker_max_record_bytes: int = Field(
        default=2_097_152,
        description="Max channel record value the worker runs (DLQ PAYLOAD_TOO_LARGE above). Larger than "
        "max_payload_size: the gateway's envelope adds metadata to the body.",
    )
    max_result_size_bytes: int = Field(default=1_048_576, description="Max response size (502 above).")
    processing_timeout_ms: int = Field(default=60_000, description="Default sync timeout when a channel has none.")
    max_channel_call_depth: int = 10
    default_channel_call_timeout_ms: int = 30_000

    # Shared state
    redis_url: str | None = Field(default=None, description="Redis for shared governance; unset = in-memory.")

    # Circuit breakers of connector calls (Orion's [engine.circuit_breaker]; Orion defaults enabled=false)
    circuit_breaker_enabled: bool = Field(
        default=True, description="Per `channel:connector` circuit breakers on connector calls."
    )
    circuit_breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive connector failures that open a breaker."
    )
    circuit_breaker_recovery_timeout_secs: float = Field(
        default=30.0, ge=0, description="Seconds an open breaker waits before letting one probe call through."
    )
    circuit_breaker_max_breakers: int = Field(
        default=10_000, ge=1, description="Max breakers kept per process (least recently used dropped first)."
    )

    # Admin API authentication (Orion's [admin_auth]); the key may be an env://VAR reference
    admin_auth_enabled: bool = Field(default=False, description="Require admin credentials on /api/v1/admin.")
    admin_api_key: str | None = Field(default=None, description="Admin API key (or env://VAR).", repr=False)
    admin_keys: list[dict[str, Any]] = Field(
        default_factory=list,
        description='Bootstrap admin keys with roles: JSON list of {"name", "role", "key" (or env://VAR), '
        '"scope": {"ids": [globs], "tags": [globs]}}; roles reader, editor, approver, admin.',
        repr=False,
    )
    admin_auth_header: str = Field(
        default="Authorization", description="Authorization (Bearer <key>) or a header with the raw key."
    )

    # Logging
    log_level: str = "info"
    log_format: str = Field(default="json", description="json or console")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""The one settings object (pydantic-settings, env prefix `QUASAR_`)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from app.config_file import CONFIG_FILE_ENV, load_config_file

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "RECORD_FRAMING_BYTES",
    "REPLY_HEADERS_ROOM",
    "Settings",
    "get_settings",
    "property_name",
    "read_properties_file",
    "request_record_room",
    "settings_error_lines",
]

DEFAULT_MAX_RECORD_BYTES = 2_097_152  # 2 MiB: a 1 MiB body with its headers, or its echo, fits in one record
_LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUASAR_", env_nested_delimiter="__", extra="ignore")

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers. Unset: `quasar dev` starts the embedded broker."
    )
    # Connection and security of every Kafka client Quasar creates (producers, consumers, admin, the Faust
    # app). Secrets may be `env://VAR` references. Any other librdkafka property: `QUASAR_KAFKA__<NAME>`
    # (e.g. QUASAR_KAFKA__SSL_CIPHER_SUITES) or a Java-style properties file; see docs/operations.md.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        default=None, description="security.protocol (unset: librdkafka's default, PLAINTEXT)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        default=None, description="sasl.mechanism for SASL_PLAINTEXT / SASL_SSL."
    )
    kafka_sasl_username: str | None = Field(default=None, description="sasl.username (PLAIN, SCRAM).")
    kafka_sasl_password: str | None = Field(
        default=None, description="sasl.password (PLAIN, SCRAM); or env://VAR.", repr=False
    )
    kafka_sasl_oauthbearer_method: Literal["default", "oidc"] | None = Field(
        default=None,
        description="OAUTHBEARER token source: `oidc` (client-credentials grant against the token endpoint) or "
        "`default` (a token provider callable, see kafka_oauth_token_provider).",
    )
    kafka_sasl_oauthbearer_token_endpoint_url: str | None = Field(
        default=None, description="OIDC token endpoint (sasl.oauthbearer.token.endpoint.url)."
    )
    kafka_sasl_oauthbearer_client_id: str | None = Field(default=None, description="OIDC client id.")
    kafka_sasl_oauthbearer_client_secret: str | None = Field(
        default=None, description="OIDC client secret; or env://VAR.", repr=False
    )
    kafka_sasl_oauthbearer_scope: str | None = Field(default=None, description="OIDC scope (optional).")
    kafka_sasl_oauthbearer_extensions: str | None = Field(
        default=None, description="SASL extensions, `key=value,key=value` (Confluent Cloud: logicalCluster...)."
    )
    kafka_oauth_token_provider: str | None = Field(
        default=None,
        description="`module:callable` returning `(token, expiry_epoch_seconds)` for OAUTHBEARER (method "
        "`default`), called by every client when a token is due: e.g. an AWS MSK IAM signer.",
    )
    kafka_ssl_ca_location: str | None = Field(default=None, description="CA bundle (PEM) the broker is verified with.")
    kafka_ssl_certificate_location: str | None = Field(default=None, description="Client certificate (PEM, mTLS).")
    kafka_ssl_key_location: str | None = Field(default=None, description="Client private key (PEM, mTLS).")
    kafka_ssl_key_password: str | None = Field(
        default=None, description="Password of the client key; or env://VAR.", repr=False
    )
    kafka_ssl_endpoint_identification: bool = Field(
        default=True, description="Verify the broker's hostname against its certificate (https)."
    )
    kafka_properties_file: Path | None = Field(
        default=None,
        description="Java-style `key=value` librdkafka properties (e.g. the client config Confluent Cloud "
        "downloads), applied to every client; QUASAR_KAFKA__* and the typed settings above win over it.",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties for every client: QUASAR_KAFKA__SOCKET_KEEPALIVE_ENABLE=true "
        "sets socket.keepalive.enable (underscores become dots; values may be env://VAR).",
        repr=False,
    )
    topic_prefix: str = Field(default="quasar.", description="Prefix of every topic Quasar owns.")
    schemas_dir: Path | None = Field(
        default=None,
        description="Directory of named Avro schemas (`<name>.avsc`). Unset: `schemas/` of the source tree when "
        "running from a checkout, else `./schemas` (the Docker image sets /srv/quasar/schemas).",
    )
    # Confluent Schema Registry (channels with value_format avro_registry / json_schema_registry /
    # protobuf_registry). A channel's `schema_registry.url` overrides the URL; secrets may be `env://VAR`.
    schema_registry_url: str | None = Field(
        default=None,
        description="Schema Registry URL(s), comma-separated (Confluent Cloud: https://psrc-....confluent.cloud).",
    )
    schema_registry_basic_auth_user_info: str | None = Field(
        default=None,
        description="Basic auth `key:secret` (Confluent Cloud: the Schema Registry API key and secret); or env://VAR.",
        repr=False,
    )
    schema_registry_bearer_token: str | None = Field(
        default=None,
        description="Static bearer token for the registry (instead of basic auth); or env://VAR.",
        repr=False,
    )
    schema_registry_ssl_ca_location: str | None = Field(
        default=None, description="CA bundle (PEM) the registry's certificate is verified with (unset: system CAs)."
    )
    schema_registry_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Timeout of one registry request; a slower registry counts as down."
    )
    schema_registry_cache_capacity: int = Field(
        default=1000, ge=10, le=100_000, description="Schemas kept per registry client (by id and by subject; LRU)."
    )
    schema_registry_down_cooldown_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="After a failed registry request, records needing it fail fast (retried with backoff) for "
        "this long instead of each waiting for a timeout.",
    )
    fetch_wait_max_ms: int = Field(
        default=100,
        description="Consumer fetch.wait.max.ms. Real Kafka answers as soon as data arrives; Tansu only after "
        "(part of) the wait, and each answer costs it CPU: tests use 10 ms, `quasar dev` 150 ms (idle cost).",
    )
    reply_fetch_wait_max_ms: int = Field(
        default=10,
        ge=1,
        description="fetch.wait.max.ms of the gateway's reply consumer. It fetches only while a reply is awaited "
        "(its partitions are released when idle), so a short wait costs nothing idle and keeps the sync reply "
        "hop short on Tansu; real Kafka answers as soon as the reply arrives whatever the wait.",
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
    worker_static_membership: bool = Field(
        default=False,
        description="Static group membership (group.instance.id = QUASAR_INSTANCE_ID): a worker restarted within "
        "the session timeout gets its partitions back without a rebalance. Needs an instance id unique per "
        "worker and stable across restarts (a StatefulSet pod name); two workers with one id fence each other.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="`exactly_once`: every consumed batch's outputs, replies, traces and dead letters and its "
        "input offsets are committed in one Kafka transaction (read_committed consumers see each result once, "
        "also after a crash). Needs a broker with transactions (Apache Kafka, Redpanda, MSK, Confluent Cloud); "
        "the worker refuses to start on one without (the embedded broker). See docs/operations.md.",
    )
    worker_commit_interval_ms: int | None = Field(
        default=None,
        ge=0,
        description="How often the worker commits what it has processed: consumed offsets (at_least_once) or "
        "the open transaction (exactly_once); 0: after every consumed batch. Unset: 0 with at_least_once, 100 "
        "with exactly_once (a transaction per batch costs a commit round trip and markers on every partition "
        "it wrote). Longer: fewer commit requests, more records run again after a crash, and with "
        "exactly_once results reach read_committed readers only at each commit.",
    )
    worker_max_uncommitted_records: int = Field(
        default=0,
        ge=0,
        description="At-least-once: consumed records whose offsets are not committed yet beyond which the worker "
        "stops consuming until commits catch up; bounds what a crash runs again (their outputs may already "
        "be written) when the broker acknowledges slower than the worker processes. 0: no bound.",
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
    gateway_tls_cert: str | None = Field(
        default=None, description="PEM certificate file: the gateway serves HTTPS (Orion's [server.tls])."
    )
    gateway_tls_key: str | None = Field(default=None, description="PEM private key file of `gateway_tls_cert`.")
    shutdown_drain_secs: float = Field(
        default=30.0, ge=0, description="On SIGTERM/SIGINT, how long in-flight HTTP requests may finish."
    )
    shutdown_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        description="After the drain, how long `quasar worker` / `quasar gateway` may take to stop cleanly "
        "(commit, close clients) before exiting anyway; uncommitted records are redelivered.",
    )
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
    flows_idle_fetch_interval_ms: int = Field(
        default=0,
        ge=0,
        description="Experimental, for brokers that answer a waiting fetch only when it expires (Tansu): "
        "a flow runner (and a gateway's instance view) idle for 2 s pauses its partitions and fetches for a short "
        "window once per this interval (broker cost measured 14% -> 3-5% of a core at 1000); a start, signal or "
        "worker result then waits about this long or more (measured up to 2 s after idle; docs/flows.md). 0 (the "
        "default, also in `quasar dev`): always fetch.",
    )
    flow_view_max_finished: int = Field(
        default=10_000,
        ge=0,
        description="Finished (completed, failed, cancelled) instances a gateway's instance view keeps, least "
        "recently written or read first out; running ones are always kept. An evicted instance answers 404.",
    )
    flow_view_max_finished_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bound on the finished instances of the instance view, in bytes of their state records (the "
        "objects in memory take a few times that).",
    )
    flow_view_finished_ttl_secs: float = Field(
        default=86_400.0,
        ge=0,
        description="Finished instances older than this (since their last change) leave the instance view; "
        "0 keeps them until the count or bytes bound.",
    )
    task_bridge_max_polls: int = Field(
        default=256,
        ge=0,
        description="Concurrent long-polls of the gateway's HTTP task bridge (`POST /api/v1/tasks/{handler}/poll`, "
        "docs/flows.md); more are refused with 429. 0 turns the bridge off (503).",
    )
    task_bridge_max_wait_ms: int = Field(
        default=30_000, ge=0, le=120_000, description="Longest wait a task-bridge poll may ask for (`wait_ms`)."
    )
    task_bridge_max_result_bytes: int = Field(
        default=262_144,
        ge=1024,
        description="Largest body of a task-bridge completion or failure (413 above): the output becomes part "
        "of the instance's state record, which must fit the broker's message size.",
    )
    worker_flows: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="The durable-flow runner inside `quasar worker` (docs/flows.md): `auto` starts it once the "
        "config holds a flow or a schedule (a worker of a deployment without flows joins no flow group and "
        "polls nothing), `on` with the worker (missing flow topics stop the worker), `off` never (run "
        "`quasar flows run` processes instead).",
    )

    # Limits (Orion defaults)
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES,
        ge=65_536,
        description="Record-size budget: the largest Kafka record (value + key + headers) Quasar produces. "
        "Producers get message.max.bytes and every topic max.message.bytes of this plus 4 KiB of framing "
        "(`quasar topics apply` sets it on existing topics); the request body limit (with room for the "
        "request's headers and URL in its record) and the response limit must fit inside it, and every "
        "reply, output, trace and DLQ record is bounded by it.",
    )
    max_payload_size: int = Field(
        default=1_048_576,
        description="Max request body in bytes (413 above; also 413 when the body's record would exceed "
        "max_record_bytes).",
    )
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
    keep_alive_timeout_ms: int = Field(
        default=75_000,
        gt=0,
        description="How long an idle kept-alive HTTP connection stays open before the gateway closes it. "
        "Longer than the idle timeouts of clients and load balancers (httpx 5 s, AWS ALB 60 s) so that the "
        "client always closes first: a server closing a connection just as the client reuses it fails that "
        "request (a reset, a 502 at the balancer).",
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
    worker_max_record_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Max channel record value the worker runs (DLQ PAYLOAD_TOO_LARGE above). Default: "
        "max_record_bytes (every record the gateway writes fits).",
    )
    max_result_size_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Max response size (502 above). Default: max_record_bytes less 36 KiB for the reply's "
        "headers, so the answer of a body at max_payload_size fits; never more than that.",
    )
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
    ingest_seal_key: str | None = Field(
        default=None,
        description="Key gateways seal their channel records with (or env://VAR; default: admin_api_key). Workers "
        "skip Kafka-path governance (rate limit, dedup) only for records whose seal verifies.",
        repr=False,
    )

    # Rules
    require_passing_tests: bool = Field(
        default=True,
        description="Refuse to activate a workflow or ruleset version whose test suite (its `tests`) fails; "
        "the result is recorded on the version with its content digest.",
    )

    explain_requests: bool = Field(
        default=True,
        description="Honour `x-quasar-explain: 1` / `?explain=1` (and the Kafka header `quasar-explain: 1`): the "
        "reply carries the decision path of decision tables and rulesets. Turn off to keep rule internals private.",
    )

    # CORS (Orion's [cors]); a channel's `config.cors` overrides these per channel
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins browsers may call from (comma-separated; * for any). Empty: no cross-origin access.",
    )
    cors_allowed_methods: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"],
        description="Methods allowed in cross-origin requests (comma-separated).",
    )
    cors_allowed_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "content-type",
            "authorization",
            "x-api-key",
            "x-request-id",
            "idempotency-key",
            "traceparent",
        ],
        description="Request headers allowed in cross-origin requests (comma-separated; * for any).",
    )
    cors_allow_credentials: bool = Field(default=False, description="Allow cookies / credentials cross-origin.")
    cors_max_age: int = Field(default=600, ge=0, description="Seconds a browser may cache a preflight answer.")
    cors_expose_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["x-request-id"], description="Response headers a page may read."
    )

    # Platform rate limit (Orion's [rate_limit]): per client address, per instance, before any routing
    rate_limit_enabled: bool = Field(default=False, description="Platform-wide rate limit of every request.")
    rate_limit_default_rps: float = Field(default=100.0, gt=0, description="Requests/s per client (other routes).")
    rate_limit_default_burst: int = Field(default=50, ge=1, description="Burst allowance per client.")
    rate_limit_admin_rps: float | None = Field(default=None, gt=0, description="Requests/s per client on admin routes.")
    rate_limit_data_rps: float | None = Field(default=None, gt=0, description="Requests/s per client on data routes.")

    # Topology (Orion's [channels]): which channels this instance serves and consumes
    channels_include: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Channel name globs to serve (comma-separated; empty: all)."
    )
    channels_exclude: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Channel name globs not to serve (comma-separated)."
    )

    # OpenTelemetry (Orion's [tracing])
    tracing_enabled: bool = Field(default=False, description="Export OpenTelemetry spans over OTLP.")
    tracing_otlp_endpoint: str = Field(
        default="http://localhost:4318", description="OTLP/HTTP collector base URL (spans go to /v1/traces)."
    )
    tracing_service_name: str = Field(default="quasar", description="service.name of exported spans.")
    tracing_sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of new traces sampled.")

    # Logging
    log_level: str = Field(default="info", description="trace, debug, info, warning (warn), error or critical")
    log_format: str = Field(default="json", description="json, or console (Orion: pretty)")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in _LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r}; use one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        fmt = value.strip().lower()
        fmt = "console" if fmt == "pretty" else fmt  # Orion's name for the human format
        if fmt not in ("json", "console"):
            raise ValueError(f"unknown log format {value!r}; use json or console (pretty)")
        return fmt

    @field_validator(
        "trusted_proxies",
        "cors_allowed_origins",
        "cors_allowed_methods",
        "cors_allowed_headers",
        "cors_expose_headers",
        "channels_include",
        "channels_exclude",
        mode="before",
    )
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments, then QUASAR_* variables, then the config file (QUASAR_CONFIG_FILE), then defaults.
        return (init_settings, env_settings, dotenv_settings, _ConfigFileSource(settings_cls), file_secret_settings)

    @model_validator(mode="after")
    def _limits_fit_the_record_budget(self) -> Settings:
        """Every limit follows `max_record_bytes`: a body the gateway accepts, or a response the worker
        returns, must fit in one record the producer and the topic take (else 5xx inside the limits)."""
        room = request_record_room(self)
        if self.max_payload_size + room > self.max_record_bytes:
            raise ValueError(
                f"max_payload_size ({self.max_payload_size}) plus room for the request's headers and URL in "
                f"its record ({room}) exceeds max_record_bytes ({self.max_record_bytes}): raise "
                "QUASAR_MAX_RECORD_BYTES (and the brokers' limits with it) or lower QUASAR_MAX_PAYLOAD_SIZE"
            )
        most = self.max_record_bytes - REPLY_HEADERS_ROOM
        if self.max_result_size_bytes is not None and self.max_result_size_bytes > most:
            raise ValueError(
                f"max_result_size_bytes ({self.max_result_size_bytes}) exceeds what a reply record can carry "
                f"under max_record_bytes ({self.max_record_bytes}): at most {most}"
            )
        return self

    @property
    def kafka_message_max_bytes(self) -> int:
        """Producers' `message.max.bytes` and topics' `max.message.bytes`: the budget plus Kafka's framing."""
        return self.max_record_bytes + RECORD_FRAMING_BYTES

    @property
    def result_limit_bytes(self) -> int:
        """The response limit in force (`max_result_size_bytes`, else what a reply record can carry)."""
        return self.max_result_size_bytes or self.max_record_bytes - REPLY_HEADERS_ROOM

    @property
    def worker_record_limit_bytes(self) -> int:
        """The largest channel record value the worker runs (`worker_max_record_bytes`, else the budget)."""
        return self.worker_max_record_bytes or self.max_record_bytes

    @model_validator(mode="after")
    def _bootstrap_from_properties(self) -> Settings:
        """A properties file or QUASAR_KAFKA__BOOTSTRAP_SERVERS may name the cluster (Confluent Cloud's file does)."""
        if not self.kafka_bootstrap:
            self.kafka_bootstrap = self.kafka_user_properties().get("bootstrap.servers") or None
        return self

    def commit_interval_s(self) -> float:
        """The worker's commit cadence in seconds (`worker_commit_interval_ms`, or its per-guarantee default)."""
        ms = self.worker_commit_interval_ms
        if ms is None:
            ms = 100 if self.processing_guarantee == "exactly_once" else 0
        return ms / 1000.0

    def kafka_user_properties(self) -> dict[str, str]:
        """The user's librdkafka properties: the properties file, then QUASAR_KAFKA__* (which wins).

        Values are as written (`env://VAR` references are resolved when a client config is built).
        """
        merged = read_properties_file(self.kafka_properties_file) if self.kafka_properties_file else {}
        merged.update({property_name(k): str(v) for k, v in self.kafka.items()})
        return merged


# Kafka's framing around one record's key, value and headers (record batch header 61 bytes, record
# varints): producers and topics allow this much more than the record budget.
RECORD_FRAMING_BYTES = 4096
# Room a reply/output/trace record keeps for its headers (propagated ones are bounded at 32 KiB) and the
# trace's own fields next to the result body.
REPLY_HEADERS_ROOM = 36_864


def request_record_room(settings: Settings) -> int:
    """Bytes a request's record may need beyond its body: the headers, query and path parameters copied
    into `metadata` (JSON escaping may double them) and the envelope's own fields."""
    return 2 * settings.max_header_bytes + 2 * settings.max_url_bytes + 4096


# librdkafka properties whose names contain underscores (every other one is dotted).
_UNDERSCORE_PROPERTIES = frozenset({"log_level"})


def property_name(key: str) -> str:
    """librdkafka name of a passthrough key: `SSL_CA_LOCATION` / `ssl_ca_location` -> `ssl.ca.location`."""
    lowered = key.strip().lower()
    if "." in lowered or lowered in _UNDERSCORE_PROPERTIES:
        return lowered
    return lowered.replace("_", ".")


def read_properties_file(path: Path) -> dict[str, str]:
    """`key=value` lines (Java properties style: `#`/`!` comments, `:` also separates, blank lines skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read Kafka properties file {path}: {exc.strerror or exc}") from None
    properties: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if cut < 0:
            raise ValueError(f"{path}:{number}: expected `key=value`, got {line[:80]!r}")
        properties[line[:cut].strip()] = line[cut + 1 :].strip()
    return properties


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML file named by QUASAR_CONFIG_FILE (app/config_file.py), below the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything comes from __call__

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        return load_config_file(path, self.settings_cls.model_fields).values


def settings_error_lines(exc: ValidationError) -> list[str]:
    """One line per bad setting, named as the user sets it (`QUASAR_GATEWAY_PORT=abc: ...`)."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error.get("loc", ())) or "?"
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float | bool) else ""
        lines.append(f"invalid setting QUASAR_{field.upper()}{shown}: {error.get('msg', 'invalid')}")
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

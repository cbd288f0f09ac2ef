"""The configuration file: TOML, `${VAR}` / `${VAR:-default}` substitution, Orion's sections mapped.

`quasar -c quasar.toml ...` (or `QUASAR_CONFIG_FILE`) names the file; every `Settings()` then reads it
below the environment: a `QUASAR_*` variable always wins over the file, the file over the defaults.

A key is either Quasar's own setting name, flat (`gateway_port = 8080`) or split into sections
(`[gateway] port = 8080`), or one of Orion's config keys (`[server] port = 8080`) mapped in
`ORION_KEYS`. Orion keys that have no meaning on Kafka are accepted with a warning (`NOT_APPLICABLE`
says why); anything else is an error, reported with its dotted name. Pure: no Settings import.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_FILE_ENV",
    "NOT_APPLICABLE",
    "ORION_KEYS",
    "ConfigFile",
    "ConfigFileError",
    "load_config_file",
    "substitute",
]

CONFIG_FILE_ENV = "QUASAR_CONFIG_FILE"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _join(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


# Orion key (section.key) -> (Quasar setting, value conversion)
ORION_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "server.host": ("gateway_host", lambda v: v),
    "server.port": ("gateway_port", lambda v: v),
    "server.shutdown_drain_secs": ("shutdown_drain_secs", lambda v: v),
    "server.tls.cert_path": ("gateway_tls_cert", lambda v: v),
    "server.tls.key_path": ("gateway_tls_key", lambda v: v),
    "ingest.max_payload_size": ("max_payload_size", lambda v: v),
    "engine.max_channel_call_depth": ("max_channel_call_depth", lambda v: v),
    "engine.default_channel_call_timeout_ms": ("default_channel_call_timeout_ms", lambda v: v),
    "engine.circuit_breaker.enabled": ("circuit_breaker_enabled", lambda v: v),
    "engine.circuit_breaker.failure_threshold": ("circuit_breaker_failure_threshold", lambda v: v),
    "engine.circuit_breaker.recovery_timeout_secs": ("circuit_breaker_recovery_timeout_secs", lambda v: v),
    "engine.circuit_breaker.max_breakers": ("circuit_breaker_max_breakers", lambda v: v),
    "queue.processing_timeout_ms": ("processing_timeout_ms", lambda v: v),
    "queue.max_result_size_bytes": ("max_result_size_bytes", lambda v: v),
    "rate_limit.enabled": ("rate_limit_enabled", lambda v: v),
    "rate_limit.default_rps": ("rate_limit_default_rps", lambda v: v),
    "rate_limit.default_burst": ("rate_limit_default_burst", lambda v: v),
    "rate_limit.endpoints.admin_rps": ("rate_limit_admin_rps", lambda v: v),
    "rate_limit.endpoints.data_rps": ("rate_limit_data_rps", lambda v: v),
    "admin_auth.enabled": ("admin_auth_enabled", lambda v: v),
    "admin_auth.api_key": ("admin_api_key", lambda v: v),
    "admin_auth.header": ("admin_auth_header", lambda v: v),
    "cors.allowed_origins": ("cors_allowed_origins", _join),
    "kafka.brokers": ("kafka_bootstrap", _join),
    "logging.level": ("log_level", lambda v: v),
    "logging.format": ("log_format", lambda v: v),
    "tracing.enabled": ("tracing_enabled", lambda v: v),
    "tracing.otlp_endpoint": ("tracing_otlp_endpoint", lambda v: v),
    "tracing.service_name": ("tracing_service_name", lambda v: v),
    "tracing.sample_rate": ("tracing_sample_rate", lambda v: v),
    "channels.include": ("channels_include", _join),
    "channels.exclude": ("channels_exclude", _join),
}

# Orion keys (or sections, ending in ".") accepted but without effect, and why.
NOT_APPLICABLE: dict[str, str] = {
    "storage.": "definitions live in the compacted config topic (no database)",
    "kafka.enabled": "Kafka is always on",
    "kafka.group_id": "workers use the group <topic_prefix>worker",
    "kafka.topics": "a Kafka channel declares its own `topic`",
    "kafka.dlq.": "dead letters always go to <topic_prefix>dlq",
    "kafka.processing_timeout_ms": "use queue.processing_timeout_ms / QUASAR_PROCESSING_TIMEOUT_MS",
    "kafka.max_inflight": "the worker bounds in-flight records itself",
    "kafka.lag_poll_interval_secs": "consumer lag is exported on every fetch",
    "metrics.enabled": "/metrics is always served",
    "queue.": "async requests ride on Kafka topics, not an in-process queue",
    "engine.health_check_timeout_secs": "no engine lock to wait for",
    "engine.reload_timeout_secs": "reloads are config-topic folds",
    "engine.global_http_timeout_secs": "set timeout_ms per http connector or task",
    "engine.max_pool_cache_entries": "one pool per connector, rebuilt on change",
    "engine.cache_cleanup_interval_secs": "one pool per connector, rebuilt on change",
}


class ConfigFileError(ValueError):
    """The configuration file cannot be used; the message names the file and the key or variable."""


@dataclass
class ConfigFile:
    """Settings values read from a file (flat setting names) and warnings about keys without effect."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def substitute(value: str, env: Mapping[str, str], where: str = "") -> str:
    """`${VAR}` -> its value, `${VAR:-default}` -> its value or `default`; an unset `${VAR}` is an error."""

    def one(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigFileError(f"{where}: environment variable {name} is not set (write ${{{name}:-default}})")

    return _VAR.sub(one, value)


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _not_applicable(key: str) -> str | None:
    for pattern, why in NOT_APPLICABLE.items():
        if key == pattern or (pattern.endswith(".") and key.startswith(pattern)):
            return why
    return None


def load_config_file(path: str | Path, fields: Iterable[str], env: Mapping[str, str] | None = None) -> ConfigFile:
    """Read `path` into `{setting: value}` for the settings named in `fields`."""
    env = os.environ if env is None else env
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    # Substituted in the text, as Orion does, so `port = ${PORT:-8080}` stays a number; comments untouched.
    lines = [
        line if line.lstrip().startswith("#") else substitute(line, env, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), start=1)
    ]
    try:
        tree = tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML (after substitution): {exc}") from None
    known = set(fields)
    out = ConfigFile(path)
    for key, value in _leaves(tree):
        if key in ORION_KEYS:
            name, convert = ORION_KEYS[key]
            out.values[name] = convert(value)
        elif key.replace(".", "_") in known:
            out.values[key.replace(".", "_")] = value
        elif (why := _not_applicable(key)) is not None:
            out.warnings.append(f"{key}: not applicable in Quasar ({why})")
        else:
            raise ConfigFileError(f"{path}: unknown setting {key!r} (see docs/configuration.md)")
    return out

"""Connector secrets: `env://VAR` references resolved at use, never stored resolved.

Masking for API responses lives in `app.gateway.admin_masking` (one implementation, pure); it is
re-exported here so connector code and the admin API mask the same fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from app.connectors.errors import SecretMissing
from app.gateway.admin_masking import MASK, is_secret_field, mask_secrets

__all__ = ["ENV_PREFIX", "MASK", "is_secret_field", "mask_secrets", "resolve_secret", "resolve_secrets"]

ENV_PREFIX = "env://"


def resolve_secret(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """`env://VAR` -> the variable's value; anything else unchanged. Unset variable -> `SecretMissing`."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        source = os.environ if env is None else env
        resolved = source.get(name)
        if resolved is None:
            raise SecretMissing(f"environment variable '{name}' (referenced as {value}) is not set")
        return resolved
    return value


def resolve_secrets(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """A copy of a JSON tree with every `env://VAR` string resolved (the input is not touched)."""
    if isinstance(value, dict):
        return {k: resolve_secrets(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, env) for v in value]
    return resolve_secret(value, env)

"""Secrets, in one place and pure: masking for every response, `env://VAR` references resolved at use.

Orion masks fields named `token`, `password`, `key`, `secret`, `api_key` and `connection_string`; we do it
at any depth and also for names ending in `_token`, `_password`, `_secret`, `_api_key` and
`_connection_string` (e.g. `access_token`, `db_password`), and item by item in lists under such a name
(a channel's `api_keys`). `env://VAR` references are not secrets: they are kept as written, so a
read-modify-write round trip keeps them, and they are resolved only when used — never stored resolved.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from app.errors import EngineFailure

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "SecretMissing",
    "is_secret_field",
    "mask_secrets",
    "resolve_secret",
    "resolve_secrets",
    "unmask_with",
]

MASK = "******"
ENV_PREFIX = "env://"

_EXACT = frozenset({"token", "password", "key", "secret", "api_key", "apikey", "connection_string", "api_keys"})
_SUFFIXES = ("_token", "_password", "_secret", "_api_key", "_connection_string", "-token", "-password")


class SecretMissing(EngineFailure):
    """An `env://VAR` reference names an environment variable that is not set."""

    code = "SECRET_MISSING"
    retryable = False


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in _EXACT or lowered.endswith(_SUFFIXES)


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def mask_secrets(value: Any) -> Any:
    """A copy of `value` with every secret field's value replaced by `MASK` (any depth)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if is_secret_field(str(k)) and v is not None and not isinstance(v, dict | list):
                out[k] = v if _is_reference(v) else MASK
            elif isinstance(v, list) and is_secret_field(str(k)):  # a list of secrets (a channel's api_keys)
                out[k] = [
                    mask_secrets(x) if x is None or isinstance(x, dict | list) or _is_reference(x) else MASK for x in v
                ]
            else:
                out[k] = mask_secrets(v)
        return out
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def unmask_with(new: Any, stored: Any) -> Any:
    """`new` with every `MASK` placeholder replaced by the value stored at the same path.

    Lets a client GET a connector, edit a field and PUT it back without wiping its secrets
    (the masked value it read is not the secret). A `MASK` with nothing stored stays as written.
    """
    if isinstance(new, dict):
        base = stored if isinstance(stored, dict) else {}
        return {k: unmask_with(v, base.get(k)) for k, v in new.items()}
    if isinstance(new, list):
        base_list = stored if isinstance(stored, list) else []
        return [unmask_with(v, base_list[i] if i < len(base_list) else None) for i, v in enumerate(new)]
    if new == MASK and stored is not None and not isinstance(stored, dict | list):
        return stored
    return new


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

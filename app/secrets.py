"""Secrets, in one place and pure: masking for every response and log line, `env://VAR` references
resolved at use.

Masking is by pattern, not by a list of exact names (Orion's `token`, `password`, `key`, ... missed
`Authorization` header values, `aws_secret_access_key`, a Redis URL's password):

- a field is secret when a word of its name (split at `_`, `-`, `.` and camelCase) is one of
  `_SECRET_WORDS` (token, secret, password, key, credential, auth, dsn, cookie, ...), unless its last word
  says it names something else (`key_logic`, `api_key_header`, `cache_key_fields`) or it is one of
  Quasar's non-secret settings (`rollout_key`); secret scalars are masked, secret lists item by item;
- in every string, wherever it is: a URL's userinfo (`redis://:pw@h` -> `redis://:******@h`), secret
  query parameters (`?token=...`) and `Bearer`/`Basic` credentials.

`env://VAR` references are not secrets: they are kept as written, so a read-modify-write round trip keeps
them, and they are resolved only when used, never stored resolved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from app.errors import EngineFailure

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "SecretMissing",
    "is_secret_field",
    "mask_secrets",
    "mask_text",
    "masked_paths",
    "resolve_secret",
    "resolve_secrets",
    "unmask_with",
]

MASK = "******"
ENV_PREFIX = "env://"

_SECRET_WORDS = frozenset(
    {
        "token", "tokens", "secret", "secrets", "password", "passwords", "passwd", "pwd", "passphrase",
        "key", "keys", "apikey", "apikeys", "credential", "credentials", "creds", "auth", "authorization",
        "dsn", "cookie", "cookies", "private", "bearer", "signature", "sessionid", "connectionstring",
    }
)  # fmt: skip
# A last word that makes the field a name, rule or selector of a secret rather than the secret itself.
_NAMING_WORDS = frozenset(
    {"header", "headers", "logic", "field", "fields", "name", "names", "type", "path", "id", "ids", "url",
     "uri", "ref", "env", "mode", "enabled", "required", "length", "prefix", "expiry", "ttl", "count"}
)  # fmt: skip
# Quasar settings that contain a secret word and name no secret.
_NOT_SECRET = frozenset({"keys", "rollout_key", "kafka_key", "partition_key", "sort_key", "primary_key", "key_by"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@?#:]*)(?P<pw>:[^\s/@?#]*)?@")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#\s;]+)=(?P<value>[^&#\s;]*)")
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token|Digest)\s+(?P<cred>[A-Za-z0-9._~+/=\-]{4,})", re.I)


class SecretMissing(EngineFailure):
    """An `env://VAR` reference names an environment variable that is not set."""

    code = "SECRET_MISSING"
    retryable = False
    expose_message = True  # names the variable to set, never its value


def is_secret_field(name: str) -> bool:
    """Whether a field of this name holds a secret (see the module docstring for the pattern)."""
    lowered = name.lower()
    if lowered in _NOT_SECRET:
        return False
    if lowered in ("connection_string", "connectionstring"):
        return True
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words or words[-1] in _NAMING_WORDS:
        return False
    return any(w in _SECRET_WORDS for w in words)


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def _mask_userinfo(match: re.Match[str]) -> str:
    if match.group("pw") is not None:
        return f"{match.group('scheme')}{match.group('user')}:{MASK}@"
    return f"{match.group('scheme')}{MASK}@"  # a user part alone is often the token itself


def _mask_param(match: re.Match[str]) -> str:
    if not is_secret_field(match.group("name")) or not match.group("value"):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"


def mask_text(text: str) -> str:
    """`text` with URL userinfo, secret query parameters and Bearer/Basic credentials masked."""
    if "://" in text and "@" in text:
        text = _USERINFO.sub(_mask_userinfo, text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_mask_param, text)
    if " " in text:
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')} {MASK}", text)
    return text


def mask_secrets(value: Any) -> Any:
    """A copy of `value` with every secret field's value replaced by `MASK` and every string passed
    through `mask_text` (any depth)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            secret = is_secret_field(str(k))
            if secret and v is not None and not isinstance(v, dict | list | bool):
                out[k] = v if _is_reference(v) else MASK
            elif isinstance(v, list) and secret:  # a list of secrets (a channel's api_keys)
                out[k] = [
                    mask_secrets(x) if x is None or isinstance(x, dict | list) or _is_reference(x) else MASK for x in v
                ]
            else:
                out[k] = mask_secrets(v)
        return out
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
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
    if isinstance(new, str) and MASK in new and isinstance(stored, str) and mask_text(stored) == new:
        return stored  # a URL sent back with its password masked
    return new


def masked_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths (`config.auth.token`, `api_keys[0]`) whose value is still the `MASK` placeholder."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in masked_paths(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in masked_paths(v, f"{prefix}[{i}]")]
    return [prefix] if value == MASK else []


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

"""Per-channel governance shared across instances: rate limit, dedup, response cache, API keys, rollout keys,
admin authentication. See `guards.Governance` (the gateway seam) and `store` (Redis / memory backends).

The gateway-facing parts (`Governance`, `AdminAuth`) load lazily so the worker can import the rollout
helpers without pulling in the HTTP stack.
"""

from __future__ import annotations

from typing import Any

from app.governance.policy import GovernancePolicy, build_policy, policy_for
from app.governance.rollout import record_rollout_bucket, record_rollout_key
from app.governance.store import MemoryStore, RedisStore, Store, StoreUnavailable, open_store

__all__ = [
    "AdminAuth",
    "Governance",
    "GovernancePolicy",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreUnavailable",
    "build_policy",
    "open_store",
    "policy_for",
    "record_rollout_bucket",
    "record_rollout_key",
    "require_admin",
]

_LAZY = {
    "Governance": "app.governance.guards",
    "AdminAuth": "app.governance.auth",
    "require_admin": "app.governance.auth",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'app.governance' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

"""Per-channel governance below the gateway: input guards, rate limit, dedup, response cache, rollout keys.

`Governor.decide(Admission) -> Decision` serves the HTTP path (the gateway acts on the decision in
`app/gateway/governance.py`) and the Kafka path (`kafka_ingest`, the worker) alike; state lives in a
`Store` (Redis shared by every instance, or memory). Admin authentication is in `auth`.
"""

from __future__ import annotations

from app.governance.decision import ADMIT, Admission, Decision, StoredResponse
from app.governance.governor import DedupClaim, Governor, rollout_key
from app.governance.rollout import record_rollout_bucket, record_rollout_key
from app.governance.store import MemoryStore, RedisStore, Store, StoreUnavailable, open_store

__all__ = [
    "ADMIT",
    "Admission",
    "Decision",
    "DedupClaim",
    "Governor",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreUnavailable",
    "StoredResponse",
    "open_store",
    "record_rollout_bucket",
    "record_rollout_key",
    "rollout_key",
]

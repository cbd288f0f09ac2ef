"""Governance metrics: the objects are defined once in `app.observability.metrics` (the one metrics module);
re-exported here under short names for the governance code."""

from __future__ import annotations

from app.observability.metrics import CACHE_HITS, CACHE_MISSES
from app.observability.metrics import DATA_UNAUTHORIZED as UNAUTHORIZED
from app.observability.metrics import DEDUP_DUPLICATES as DUPLICATES
from app.observability.metrics import GOVERNANCE_DEGRADED as DEGRADED
from app.observability.metrics import RATE_LIMIT_REJECTIONS as RATE_LIMITED

__all__ = ["CACHE_HITS", "CACHE_MISSES", "DEGRADED", "DUPLICATES", "RATE_LIMITED", "UNAUTHORIZED"]

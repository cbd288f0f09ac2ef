"""Channel config -> compiled governance policy: Orion's names and defaults, accepted spellings, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from app.governance.policy import build_policy, policy_for
from tests.governance.conftest import make_view


def test_defaults_as_orion() -> None:
    p = build_policy(
        "c",
        {"rate_limit": {"requests_per_second": 10}, "deduplication": {}, "cache": {"enabled": True}},
    )
    assert p.rate_limit is not None and p.rate_limit.rate == 10.0 and p.rate_limit.burst == 6  # rps/2+1
    assert p.dedup is not None and p.dedup.header == "idempotency-key" and p.dedup.window_ms == 300_000
    assert not p.dedup.return_original
    assert p.cache is not None and p.cache.ttl_ms == 300_000 and p.cache.fields is None
    assert not p.fail_closed and p.active and p.problems == ()


def test_empty_config_is_inactive() -> None:
    p = build_policy("c", {})
    assert not p.active and p.rollout is None
    assert not build_policy("c", {"cache": {"enabled": False}}).active


def test_accepted_spellings() -> None:
    p = build_policy(
        "c",
        {
            "deduplication": {"header": "X-Request-Key", "retention_secs": 60, "return_original": True},
            "cache": {"enabled": True, "ttl_secs": 5, "cache_key_fields": ["data.user_id", "region"]},
            "rate_limit": {"requests_per_second": 0.5, "burst": 3},
            "failure_mode": "fail_closed",
            "api_keys": "single",
        },
    )
    assert p.dedup is not None and p.dedup.header == "x-request-key" and p.dedup.window_ms == 60_000
    assert p.dedup.return_original
    assert p.cache is not None and p.cache.fields == ("user_id", "region") and p.cache.ttl_ms == 5000
    assert p.rate_limit is not None and p.rate_limit.burst == 3 and p.rate_limit.rate == 0.5
    assert p.fail_closed and p.api_keys == ("single",)
    # window_secs wins over the alias when both are given
    both = build_policy("c", {"deduplication": {"window_secs": 7, "retention_secs": 9}})
    assert both.dedup is not None and both.dedup.window_ms == 7000


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"rate_limit": {"requests_per_second": 0}}, "requests_per_second"),
        ({"rate_limit": {"requests_per_second": "fast"}}, "requests_per_second"),
        ({"rate_limit": {"requests_per_second": 5, "key_logic": {"==": [1]}}}, "rate_limit.key_logic"),
        ({"failure_mode": "maybe"}, "failure_mode"),
        ({"rollout_key": 42}, "rollout_key"),
    ],
)
def test_bad_config_is_reported_and_that_part_disabled(config: dict[str, Any], problem: str) -> None:
    p = build_policy("c", config)
    assert any(problem in text for text in p.problems), p.problems


def test_rollout_key_forms() -> None:
    assert build_policy("c", {"rollout_key": "X-User-Id"}).rollout.header == "x-user-id"  # type: ignore[union-attr]
    assert build_policy("c", {"rollout_key": {"header": "X-U"}}).rollout.header == "x-u"  # type: ignore[union-attr]
    assert build_policy("c", {"rollout_key": "$kafka_key"}).rollout.kafka_key  # type: ignore[union-attr]
    assert build_policy("c", {"rollout_key": {"kafka_key": True}}).rollout.kafka_key  # type: ignore[union-attr]
    logic = build_policy("c", {"rollout_key": {"var": "data.user"}}).rollout
    assert logic is not None and logic.logic is not None
    wrapped = build_policy("c", {"rollout_key": {"logic": {"var": "data.user"}}}).rollout
    assert wrapped is not None and wrapped.logic is not None


def test_policy_compiled_once_per_view() -> None:
    view = make_view("c", {"rate_limit": {"requests_per_second": 3}})
    assert policy_for(view) is policy_for(view)
    newer = make_view("c", {"rate_limit": {"requests_per_second": 9}}, version=2)
    assert policy_for(newer).rate_limit.rate == 9.0  # type: ignore[union-attr]

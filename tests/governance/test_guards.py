"""The gateway's guard seam acting on the `Governor`'s decisions, driven directly (memory store, real Redis,
dead Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.responses import Response

from app.errors import BadRequest, Conflict, ServiceUnavailable, Unauthorized
from app.gateway.guards import ChannelGuards, ChannelPolicy
from app.governance import Governor
from app.governance.store import MemoryStore, RedisStore
from app.kafka.broker import free_port
from app.settings import Settings
from tests.governance.conftest import make_ctx, make_view

SETTINGS = Settings(topic_prefix="tgov.")


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def gov() -> AsyncIterator[ChannelGuards]:
    g = ChannelGuards(governor=Governor(SETTINGS, store=MemoryStore()))
    await g.start()
    yield g
    await g.stop()


def _ok(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), 200, media_type="application/json")


async def test_channel_without_governance_passes(gov: ChannelGuards) -> None:
    view = make_view("plain", {})
    assert await gov.check(make_ctx(view), _policy(view)) is None


def _policy(view: Any) -> ChannelPolicy:
    return ChannelPolicy.build(view.channel, SETTINGS)


async def test_rate_limit_429_with_retry_after_per_client(gov: ChannelGuards) -> None:
    view = make_view("rl", {"rate_limit": {"requests_per_second": 1, "burst": 2}})
    before = _metric("rate_limit_rejections_total", channel="rl")
    got = [await gov.check(make_ctx(view, client_ip="1.1.1.1"), _policy(view)) for _ in range(3)]
    assert got[:2] == [None, None]
    rejected = got[2]
    assert rejected is not None and rejected.status_code == 429
    assert rejected.headers["retry-after"] == "1"
    assert orjson.loads(rejected.body) == {"error": {"code": "RATE_LIMITED", "message": "Too many requests"}}
    assert _metric("rate_limit_rejections_total", channel="rl") == before + 1
    # another client has its own bucket
    assert await gov.check(make_ctx(view, client_ip="2.2.2.2"), _policy(view)) is None


async def test_rate_limit_key_logic(gov: ChannelGuards) -> None:
    view = make_view(
        "rlk",
        {"rate_limit": {"requests_per_second": 1, "burst": 1, "key_logic": {"var": "headers.x-tenant-id"}}},
    )
    pol = _policy(view)
    assert await gov.check(make_ctx(view, headers={"X-Tenant-Id": "t1"}, client_ip="a"), pol) is None
    # same tenant from another IP shares the bucket
    r = await gov.check(make_ctx(view, headers={"X-Tenant-Id": "t1"}, client_ip="b"), pol)
    assert r is not None and r.status_code == 429
    assert await gov.check(make_ctx(view, headers={"X-Tenant-Id": "t2"}, client_ip="a"), pol) is None


async def test_rate_limit_key_logic_error_falls_back_to_client_ip(gov: ChannelGuards) -> None:
    view = make_view("rle", {"rate_limit": {"requests_per_second": 1, "burst": 1, "key_logic": {"throw": "x"}}})
    pol = _policy(view)
    assert await gov.check(make_ctx(view, client_ip="a"), pol) is None
    assert await gov.check(make_ctx(view, client_ip="b"), pol) is None  # per IP, not one shared bucket
    r = await gov.check(make_ctx(view, client_ip="a"), pol)
    assert r is not None and r.status_code == 429


async def test_dedup_409_scoped_per_channel(gov: ChannelGuards) -> None:
    a = make_view("da", {"deduplication": {}})
    b = make_view("db", {"deduplication": {}})
    hdr = {"Idempotency-Key": "k-1"}
    assert await gov.check(make_ctx(a, headers=hdr), _policy(a)) is None
    with pytest.raises(Conflict) as info:
        await gov.check(make_ctx(a, headers=hdr), _policy(a))
    assert info.value.status == 409 and "k-1" in info.value.message
    # quirk 16 fixed: the same key on another channel is not a duplicate
    assert await gov.check(make_ctx(b, headers=hdr), _policy(b)) is None
    # requests without the header pass
    assert await gov.check(make_ctx(a), _policy(a)) is None
    assert await gov.check(make_ctx(a), _policy(a)) is None


async def test_dedup_custom_header_and_key_logic(gov: ChannelGuards) -> None:
    h = make_view("dh", {"deduplication": {"header": "X-Req"}})
    assert await gov.check(make_ctx(h, headers={"x-req": "1"}), _policy(h)) is None
    with pytest.raises(Conflict):
        await gov.check(make_ctx(h, headers={"X-Req": "1"}), _policy(h))
    lg = make_view("dl", {"deduplication": {"key_logic": {"var": "data.order_id"}}})
    assert await gov.check(make_ctx(lg, {"order_id": 7}), _policy(lg)) is None
    with pytest.raises(Conflict):
        await gov.check(make_ctx(lg, {"order_id": 7, "other": 1}), _policy(lg))
    assert await gov.check(make_ctx(lg, {"order_id": 8}), _policy(lg)) is None
    # a key rule yielding null means "no key": not deduplicated
    assert await gov.check(make_ctx(lg, {}), _policy(lg)) is None
    assert await gov.check(make_ctx(lg, {}), _policy(lg)) is None


async def test_dedup_return_original(gov: ChannelGuards) -> None:
    view = make_view("dr", {"deduplication": {"return_original": True}})
    hdr = {"Idempotency-Key": "abc"}
    first = make_ctx(view, {"x": 1}, hdr)
    assert await gov.check(first, _policy(view)) is None
    # while the first is still running, a duplicate is a conflict
    with pytest.raises(Conflict):
        await gov.check(make_ctx(view, {"x": 1}, hdr), _policy(view))
    await gov.complete(first, _ok({"id": "1", "status": "ok", "data": {"n": 1}, "errors": []}))
    replay = await gov.check(make_ctx(view, {"x": 2}, hdr), _policy(view))
    assert replay is not None and replay.status_code == 200
    assert orjson.loads(replay.body)["data"] == {"n": 1}
    assert replay.headers["idempotent-replayed"] == "true"


async def test_cache_hit_miss_and_only_clean_200s(gov: ChannelGuards) -> None:
    view = make_view("cc", {"cache": {"enabled": True, "cache_key_fields": ["data.user"]}})
    pol = _policy(view)
    hits = _metric("quasar_response_cache_hits_total", channel="cc")
    misses = _metric("quasar_response_cache_misses_total", channel="cc")
    ctx = make_ctx(view, {"user": "u1", "noise": 1})
    assert await gov.check(ctx, pol) is None
    await gov.complete(ctx, _ok({"id": "1", "status": "ok", "data": {"v": 1}, "errors": []}))
    hit = await gov.check(make_ctx(view, {"user": "u1", "noise": 2}), pol)  # noise is not a key field
    assert hit is not None and hit.status_code == 200 and hit.headers["x-cache"] == "hit"
    assert orjson.loads(hit.body)["data"] == {"v": 1}
    assert _metric("quasar_response_cache_hits_total", channel="cc") == hits + 1
    assert _metric("quasar_response_cache_misses_total", channel="cc") == misses + 1
    # bodies with errors, error answers and non-200s are not cached
    for i, (status, body) in enumerate(
        [
            (200, {"id": "2", "status": "ok", "data": {}, "errors": [{"code": "X"}]}),
            (500, {"error": {"code": "ENGINE_ERROR", "message": "m"}}),
            (202, {"trace_id": "t"}),
        ]
    ):
        c = make_ctx(view, {"user": f"bad{i}"})
        assert await gov.check(c, pol) is None
        await gov.complete(c, Response(orjson.dumps(body), status))
        assert await gov.check(make_ctx(view, {"user": f"bad{i}"}), pol) is None


async def test_cache_skips_async_requests(gov: ChannelGuards) -> None:
    view = make_view("ca", {"cache": {"enabled": True}})
    sync = make_ctx(view, {"a": 1})
    await gov.check(sync, _policy(view))
    await gov.complete(sync, _ok({"status": "ok", "data": {}, "errors": []}))
    assert await gov.check(make_ctx(view, {"a": 1}, is_async=True), _policy(view)) is None


async def test_cache_whole_data_and_route_params(gov: ChannelGuards) -> None:
    view = make_view("cw", {"cache": {"enabled": True}})
    pol = _policy(view)
    first = make_ctx(view, {"a": 1}, params={"id": "1"})
    await gov.check(first, pol)
    await gov.complete(first, _ok({"status": "ok", "data": {}, "errors": []}))
    assert await gov.check(make_ctx(view, {"a": 1}, params={"id": "1"}), pol) is not None
    assert await gov.check(make_ctx(view, {"a": 1}, params={"id": "2"}), pol) is None
    assert await gov.check(make_ctx(view, {"a": 2}, params={"id": "1"}), pol) is None


async def test_channel_api_keys(gov: ChannelGuards, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_TEST_CH_KEY", "from-env")
    view = make_view("ak", {"api_keys": ["plain-key", "env://QUASAR_TEST_CH_KEY", "env://QUASAR_TEST_UNSET_VAR"]})
    pol = _policy(view)
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "plain-key"},
    ):
        with pytest.raises(Unauthorized):
            await gov.check(make_ctx(view, headers=headers), pol)
    for headers in (
        {"X-API-Key": "plain-key"},
        {"Authorization": "Bearer from-env"},
        {"x-api-key": "from-env"},
    ):
        assert await gov.check(make_ctx(view, headers=headers), pol) is None
    # resolved at use: changing the variable changes the accepted key, nothing was stored resolved
    monkeypatch.setenv("QUASAR_TEST_CH_KEY", "rotated")
    with pytest.raises(Unauthorized):
        await gov.check(make_ctx(view, headers={"X-API-Key": "from-env"}), pol)
    assert await gov.check(make_ctx(view, headers={"X-API-Key": "rotated"}), pol) is None
    custom = make_view("akh", {"api_keys": ["k"], "api_key_header": "X-Channel-Key"})
    assert await gov.check(make_ctx(custom, headers={"X-Channel-Key": "k"}), _policy(custom)) is None


async def test_rollout_key_from_header_or_logic(gov: ChannelGuards) -> None:
    hv = make_view("rh", {"rollout_key": "X-User"})
    assert gov.rollout_key(make_ctx(hv, headers={"X-User": "u7"})) == "u7"
    assert gov.rollout_key(make_ctx(hv)) is None
    lv = make_view("rlg", {"rollout_key": {"cat": [{"var": "data.tenant"}, ":", {"var": "headers.x-user"}]}})
    assert gov.rollout_key(make_ctx(lv, {"tenant": "t"}, {"X-User": "u"})) == "t:u"
    assert gov.rollout_key(make_ctx(make_view("none", {}))) is None


async def test_shared_state_across_two_governance_objects_on_redis(redis_url: str) -> None:
    """Two instances = two governors on one Redis: one limit, one key space, one cache."""
    one, two = (
        ChannelGuards(governor=Governor(SETTINGS, store=RedisStore(redis_url))),
        ChannelGuards(governor=Governor(SETTINGS, store=RedisStore(redis_url))),
    )
    await one.start()
    await two.start()
    try:
        view = make_view(
            "shared",
            {
                "rate_limit": {"requests_per_second": 1, "burst": 2},
                "deduplication": {},
                "cache": {"enabled": True},
            },
        )
        pol = _policy(view)
        # One caller (its credentials, whatever address it comes from) shares one key space over both.
        caller = {"Idempotency-Key": "x", "Authorization": "Bearer caller-x"}
        assert await one.check(make_ctx(view, {"q": 1}, caller), pol) is None
        with pytest.raises(Conflict):
            await two.check(make_ctx(view, {"q": 1}, caller, client_ip="9.9.9.9"), pol)
        assert await two.check(make_ctx(view, {"q": 1}), pol) is None
        r = await one.check(make_ctx(view, {"q": 1}), pol)  # third request of 10.0.0.1 over both
        assert r is not None and r.status_code == 429
        who = {"Authorization": "Bearer caller-y"}
        c = make_ctx(view, {"q": 2}, who, client_ip="5.5.5.5")
        assert await one.check(c, pol) is None
        await one.complete(c, _ok({"status": "ok", "data": {"cached": True}, "errors": []}))
        hit = await two.check(make_ctx(view, {"q": 2}, who, client_ip="6.6.6.6"), pol)
        assert hit is not None and orjson.loads(hit.body)["data"] == {"cached": True}
    finally:
        await one.stop()
        await two.stop()


async def test_dead_redis_fail_open_and_fail_closed() -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    g = ChannelGuards(governor=Governor(SETTINGS, store=dead))
    await g.start()
    try:
        cfg: dict[str, Any] = {"rate_limit": {"requests_per_second": 1, "burst": 1}, "deduplication": {},
                               "cache": {"enabled": True}}  # fmt: skip
        open_view = make_view("fo", cfg)
        closed_view = make_view("fc", {**cfg, "failure_mode": "fail_closed"})
        before = _metric("quasar_governance_degraded_total", channel="fo", feature="rate_limit", mode="fail_open")
        hdr = {"Idempotency-Key": "same"}
        # fail open: everything passes (no limit, no dedup, no cache), and it is counted
        for _ in range(3):
            assert await g.check(make_ctx(open_view, {"a": 1}, hdr), _policy(open_view)) is None
        after = _metric("quasar_governance_degraded_total", channel="fo", feature="rate_limit", mode="fail_open")
        assert after == before + 3
        assert g.health().startswith("degraded")
        # fail closed: 503
        with pytest.raises(ServiceUnavailable) as info:
            await g.check(make_ctx(closed_view, {"a": 1}, hdr), _policy(closed_view))
        assert info.value.status == 503 and "fc" in info.value.message
        # completing a request while the store is down never raises
        ctx = make_ctx(open_view, {"a": 1})
        resp = _ok({"status": "ok", "data": {}, "errors": []})
        assert await g.complete(ctx, resp) is resp
    finally:
        await g.stop()


async def test_memory_backend_health_is_ok(gov: ChannelGuards) -> None:
    assert gov.health() == "ok"


async def test_cached_responses_belong_to_one_caller_and_one_query(gov: ChannelGuards) -> None:
    """Issue 14 item 8: the cache used to ignore who asked and the query string."""
    view = make_view("cs", {"cache": {"enabled": True}})
    pol = _policy(view)
    first = make_ctx(view, {"a": 1}, client_ip="10.0.0.1")
    first.metadata["query"] = {"page": "1"}
    assert await gov.check(first, pol) is None
    await gov.complete(first, _ok({"status": "ok", "data": {"owner": "10.0.0.1"}, "errors": []}))
    again = make_ctx(view, {"a": 1}, client_ip="10.0.0.1")
    again.metadata["query"] = {"page": "1"}
    assert await gov.check(again, pol) is not None  # same caller, same request: a hit
    other_caller = make_ctx(view, {"a": 1}, client_ip="10.0.0.2")
    other_caller.metadata["query"] = {"page": "1"}
    assert await gov.check(other_caller, pol) is None
    other_query = make_ctx(view, {"a": 1}, client_ip="10.0.0.1")
    other_query.metadata["query"] = {"page": "2"}
    assert await gov.check(other_query, pol) is None
    # Behind one address, callers with different credentials are different callers too.
    bearer = make_ctx(view, {"a": 1}, {"Authorization": "Bearer user-1"}, client_ip="10.0.0.1")
    bearer.metadata["query"] = {"page": "1"}
    assert await gov.check(bearer, pol) is None


async def test_idempotency_keys_belong_to_one_caller(gov: ChannelGuards) -> None:
    view = make_view("dk", {"api_keys": ["key-1", "key-2"], "deduplication": {"return_original": True}})
    pol = _policy(view)
    hdr = {"Idempotency-Key": "same"}
    first = make_ctx(view, {"x": 1}, {**hdr, "X-API-Key": "key-1"})
    assert await gov.check(first, pol) is None
    await gov.complete(first, _ok({"status": "ok", "data": {"secret": "of caller 1"}, "errors": []}))
    # Another caller using the same key is not a duplicate and never sees the stored answer.
    assert await gov.check(make_ctx(view, {"x": 1}, {**hdr, "X-API-Key": "key-2"}), pol) is None
    replay = await gov.check(make_ctx(view, {"x": 1}, {**hdr, "X-API-Key": "key-1"}), pol)
    assert replay is not None and orjson.loads(replay.body)["data"] == {"secret": "of caller 1"}


async def test_a_request_refused_before_it_ran_frees_its_idempotency_key(gov: ChannelGuards) -> None:
    """Issue 14 item 9: a 503 used to keep the key, and the retry got 409 for 300 s."""
    view = make_view("dfree", {"deduplication": {}})
    pol = _policy(view)
    hdr = {"Idempotency-Key": "retry-me"}
    refused = make_ctx(view, headers=hdr)
    assert await gov.check(refused, pol) is None
    await gov.abandon(refused)
    assert await gov.check(make_ctx(view, headers=hdr), pol) is None  # the retry runs
    with pytest.raises(Conflict):
        await gov.check(make_ctx(view, headers=hdr), pol)  # a completed (or running) one still holds it


async def test_the_api_key_is_checked_before_validation_logic(gov: ChannelGuards) -> None:
    """Low: validation answers used to come before the key check, so the rule could be probed."""
    view = make_view("authfirst", {"api_keys": ["k"], "validation_logic": {"==": [{"var": "data.ok"}, True]}})
    with pytest.raises(Unauthorized):
        await gov.check(make_ctx(view, {"ok": False}), _policy(view))
    with pytest.raises(BadRequest):
        await gov.check(make_ctx(view, {"ok": False}, {"X-API-Key": "k"}), _policy(view))

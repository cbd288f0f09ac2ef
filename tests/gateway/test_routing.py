"""REST route matching: Orion's order (priority desc, then segment count desc), params, methods, fallback."""

from __future__ import annotations

from typing import Any

from app.channels import compile_channel
from app.config_store.snapshot import ChannelView, Snapshot
from app.gateway.data import route_table
from app.gateway.routing import RouteEntry, RouteTable, split_async, split_path


def _table(*channels: dict[str, Any]) -> RouteTable:
    return RouteTable.of(compile_channel(str(doc["name"]), doc) for doc in channels)


def test_params_are_captured_as_strings() -> None:
    pattern = "/orders/{order_id}/items/{item_id}"
    table = _table({"name": "items", "methods": ["GET"], "route_pattern": pattern})
    res = table.resolve("GET", "orders/ORD-123/items/42")
    assert res is not None
    assert (res.channel, res.params, res.is_async, res.via_route) == (
        "items",
        {"order_id": "ORD-123", "item_id": "42"},
        False,
        True,
    )


def test_static_segments_compare_case_insensitively_params_keep_case() -> None:
    table = _table({"name": "orders", "methods": ["GET"], "route_pattern": "/Orders/{id}"})
    res = table.resolve("GET", "ORDERS/AbC")
    assert res is not None and res.params == {"id": "AbC"}


def test_method_must_be_listed_and_empty_list_means_any() -> None:
    table = _table(
        {"name": "get-only", "methods": ["GET"], "route_pattern": "/a/{x}"},
        {"name": "any", "methods": [], "route_pattern": "/b/{x}"},
    )
    assert table.resolve("POST", "a/1") is None
    assert table.resolve("get", "a/1") is not None
    for method in ("GET", "POST", "DELETE", "PATCH"):
        res = table.resolve(method, "b/1")
        assert res is not None and res.channel == "any"


def test_higher_priority_wins_over_more_specific() -> None:
    table = _table(
        {"name": "specific", "methods": ["GET"], "route_pattern": "/x/{a}", "priority": 0},
        {"name": "catchall", "methods": ["GET"], "route_pattern": "/{kind}/{a}", "priority": 5},
    )
    res = table.resolve("GET", "x/1")
    assert res is not None and res.channel == "catchall"


def test_more_segments_sort_first_at_equal_priority_and_segment_count_must_match() -> None:
    table = _table(
        {"name": "two", "methods": ["GET"], "route_pattern": "/orders/{id}"},
        {"name": "three", "methods": ["GET"], "route_pattern": "/orders/{id}/items"},
    )
    assert table.entries[0].channel == "three"  # more segments sort first at equal priority
    three = table.resolve("GET", "orders/1/items")
    two = table.resolve("GET", "orders/1")
    assert three is not None and three.channel == "three"
    assert two is not None and two.channel == "two"
    assert table.resolve("GET", "orders/1/items/9") is None


def test_trailing_async_is_stripped_for_routes_and_channel_names() -> None:
    table = _table({"name": "orders", "methods": ["POST"], "route_pattern": "/orders/{id}"})
    routed = table.resolve("POST", "orders/7/async")
    named = table.resolve("POST", "orders/async")
    assert routed is not None and routed.is_async and routed.params == {"id": "7"}
    assert named is not None and named.is_async and named.channel == "orders" and not named.via_route


def test_single_segment_falls_back_to_an_active_channel_name_only() -> None:
    table = _table({"name": "orders", "methods": ["POST"], "route_pattern": "/api-orders"}, {"name": "plain"})
    res = table.resolve("POST", "plain")
    assert res is not None and res.channel == "plain" and res.params == {}
    # Quirk 9 fixed: an unknown single segment is not a channel.
    assert table.resolve("POST", "unknown") is None
    assert table.resolve("POST", "") is None
    assert table.resolve("POST", "a/b/c") is None


def test_async_and_kafka_channels_are_not_in_the_rest_table() -> None:
    table = _table(
        {"name": "bg", "channel_type": "async", "methods": ["POST"], "route_pattern": "/bg/{id}"},
        {"name": "ingest", "protocol": "kafka", "methods": ["POST"], "route_pattern": "/in/{id}"},
    )
    assert table.resolve("POST", "bg/1") is None
    assert table.resolve("POST", "in/1") is None
    res = table.resolve("POST", "bg")  # still reachable by name
    assert res is not None and res.channel == "bg"


def test_route_table_from_a_config_snapshot_keeps_only_sync_routes() -> None:
    def view(doc: dict[str, Any]) -> ChannelView:
        return ChannelView(doc["name"], 1, compile_channel(doc["name"], doc), ())

    orders = {"name": "orders", "route_pattern": "/orders/{id}", "methods": ["GET"]}
    bg = {"name": "bg", "channel_type": "async", "route_pattern": "/bg/{id}", "methods": ["POST"]}
    snap = Snapshot(offset=3, generation=1, channels={"orders": view(orders), "bg": view(bg)})
    table = route_table(snap)
    res = table.resolve("GET", "orders/1")
    assert res is not None and res.channel == "orders" and res.params == {"id": "1"}
    assert table.resolve("POST", "bg/1") is None
    assert table.has_channel("bg")


def test_path_helpers() -> None:
    assert split_path("/a//b/") == ["a", "b"]
    assert split_async(["async"]) == (["async"], False)  # a channel may be called "async"
    assert split_async(["x", "async"]) == (["x"], True)
    entry = RouteEntry.compile("c", "/{a}/static", ["post"])
    assert entry.match("POST", ["1", "STATIC"]) == {"a": "1"}
    assert entry.match("POST", ["1", "other"]) is None


def test_literal_routes_and_channel_names_win_over_parameters() -> None:
    """Issue 14 (Low): a `/{any}` route used to take traffic meant for other channels."""
    table = _table(
        {"name": "catch-all", "route_pattern": "/{any}", "priority": 5},
        {"name": "orders", "route_pattern": "/orders/{id}"},
        {"name": "special", "route_pattern": "/orders/special"},
        {"name": "billing"},
    )
    assert table.resolve("POST", "billing").channel == "billing"  # a channel's own name
    assert table.resolve("POST", "unknown").channel == "catch-all"
    assert table.resolve("GET", "orders/special").channel == "special"  # literal before {id}
    assert table.resolve("GET", "orders/7").channel == "orders"


def test_ambiguous_patterns_are_found_and_distinguishable_ones_are_not() -> None:
    from app.gateway.routing import ambiguous_with

    existing = [RouteEntry.compile("a", "/orders/{id}", ["GET"]), RouteEntry.compile("b", "/users/{id}")]
    assert ambiguous_with(RouteEntry.compile("c", "/orders/{key}"), existing).channel == "a"
    assert ambiguous_with(RouteEntry.compile("c", "/orders/{key}", ["POST"]), existing) is None  # other methods
    assert ambiguous_with(RouteEntry.compile("c", "/orders/{key}", priority=1), existing) is None
    assert ambiguous_with(RouteEntry.compile("c", "/orders/new"), existing) is None  # more literal: wins
    assert ambiguous_with(RouteEntry.compile("a", "/orders/{id}"), existing) is None  # itself (an update)

"""TraceIndex keeps trace records as raw bytes and parses on lookup: same answers as parsing at once."""

from __future__ import annotations

import orjson

from app.gateway.traces import TraceIndex
from app.settings import Settings

__all__: list[str] = []


def _index(capacity: int = 100) -> TraceIndex:
    return TraceIndex(Settings(kafka_bootstrap="127.0.0.1:1"), capacity=capacity)


def _feed(index: TraceIndex, key: bytes | None, doc: object) -> None:
    index._ingest(key, orjson.dumps(doc))


def test_raw_records_merge_in_arrival_order_with_local_records() -> None:
    index = _index()
    index.record("t1", {"id": "t1", "status": "pending", "mode": "async", "channel": "c", "request_id": "r"})
    _feed(index, b"t1", {"id": "t1", "status": "running", "channel": "c"})
    _feed(index, b"t1", {"id": "t1", "status": "completed", "channel": "c", "result": {"x": 1}})
    # A late `running` must not move the status back, exactly as with eager parsing.
    _feed(index, b"t1", {"id": "t1", "status": "running", "channel": "c"})
    trace = index.get("t1")
    assert trace == {
        "id": "t1",
        "status": "completed",
        "mode": "async",
        "channel": "c",
        "request_id": "r",
        "result": {"x": 1},
    }
    # A record merged after raw ones sees them first (order-dependent merge).
    _feed(index, b"t1", {"id": "t1", "status": "failed", "error": "boom"})
    index.record("t1", {"note": "local"})
    trace = index.get("t1")
    assert trace is not None and trace["status"] == "failed" and trace["note"] == "local"


def test_invalid_and_foreign_records_behave_as_before() -> None:
    index = _index()
    index._ingest(b"bad", b'{"id":"bad", not json')
    index._ingest(b"arr", b'{"id":"arr"}]')
    assert index.get("bad") is None and index.get("arr") is None
    assert index.list() == ([], 0)
    # Key differs from the id: filed under the id (parsed at once).
    _feed(index, b"other-key", {"id": "real", "status": "completed", "channel": "c"})
    assert index.get("other-key") is None
    assert index.get("real") == {"id": "real", "status": "completed", "channel": "c"}
    # No id in the document: the key names the trace.
    _feed(index, b"k", {"status": "completed", "channel": "c"})
    assert index.get("k") == {"status": "completed", "channel": "c", "id": "k"}
    # A key with characters JSON escapes takes the parsing path and still works.
    _feed(index, b'q"uote', {"id": 'q"uote', "status": "completed"})
    assert index.get('q"uote') == {"id": 'q"uote', "status": "completed"}
    # Markers are ignored.
    _feed(index, b"__marker__/x", {"id": "__marker__/x"})
    assert index.get("__marker__/x") is None


def test_list_filters_and_order_over_unparsed_records() -> None:
    index = _index(capacity=3)
    for i, (channel, status, mode) in enumerate(
        [("a", "completed", "sync"), ("b", "failed", "sync"), ("a", "completed", "async"), ("a", "failed", "sync")]
    ):
        _feed(index, f"t{i}".encode(), {"id": f"t{i}", "channel": channel, "status": status, "mode": mode})
    # Capacity 3: the oldest (t0) is gone; newest first.
    items, total = index.list()
    assert [t["id"] for t in items] == ["t3", "t2", "t1"] and total == 3
    assert index.get("t0") is None
    items, total = index.list(channel="a")
    assert [t["id"] for t in items] == ["t3", "t2"] and total == 2
    items, total = index.list(status="failed", mode="sync", limit=1)
    assert [t["id"] for t in items] == ["t3"] and total == 2
    # An update moves a trace to the front (LRU by last update) without parsing it first.
    _feed(index, b"t1", {"id": "t1", "status": "completed"})
    items, _ = index.list()
    assert [t["id"] for t in items] == ["t1", "t3", "t2"]
    assert items[0]["status"] == "completed"  # final statuses rank equal: the later one wins


def test_listing_parses_transiently_and_pages_are_bounded_in_bytes() -> None:
    """Issue 14 item 3: a full listing does not parse every trace into the index; a page has a byte cap."""
    index = _index(capacity=100)
    index.max_page_bytes = 3000
    for i in range(20):
        _feed(index, f"t{i}".encode(), {"id": f"t{i}", "channel": "c", "status": "completed", "result": "x" * 1000})
    items, total = index.list(limit=50)
    assert total == 20
    assert 1 <= len(items) <= 3  # ~1 kB each: the byte cap ends the page, the caller pages on
    assert all(entry[0] is None for entry in index._traces.values())  # still raw: nothing kept parsed
    items, _ = index.list(limit=50, visible=lambda channel: channel != "c")
    assert items == []


def test_the_index_is_bounded_by_bytes_too() -> None:
    index = _index(capacity=10_000)
    index.max_bytes = 50_000
    for i in range(200):
        _feed(index, f"t{i}".encode(), {"id": f"t{i}", "channel": "c", "status": "completed", "result": "y" * 1000})
    assert len(index) < 60 and index._bytes <= 50_000
    assert index.get("t199") is not None and index.get("t0") is None
    index.record("local", {"status": "pending", "channel": "c", "blob": "z" * 30_000})
    assert index._bytes <= 50_000

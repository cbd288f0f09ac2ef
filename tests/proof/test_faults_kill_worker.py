"""kill -9 one of two `quasar worker` processes mid-stream: every request id is accounted for."""

from __future__ import annotations

from bench.faults import kill_worker
from tests.proof._fault_support import ci_scale, show


def test_kill_minus_9_one_worker_loses_nothing(kafka_bootstrap: str) -> None:
    n = ci_scale(10_000, 20_000)
    result = kill_worker(kafka_bootstrap, n, rate=3000.0, kill_at=0.3, timeout=180)
    print(show(result))  # the duplicate count is part of the report (pytest -s)
    assert result["killed_worker_ok_before_kill"] > 0, "the killed worker had processed nothing\n" + show(result)
    assert result["produced_at_kill"] < n, "the kill came after the stream ended\n" + show(result)
    assert result["lost"] == 0, show(result)
    assert result["distinct_accounted"] == n, show(result)
    assert result["unexpected_ids"] == [] and result["unreadable_records"] == 0, show(result)
    assert result["sentinels_seen"] and result["survivor_alive"], show(result)
    # At-least-once accounting: every record seen = each id once (+ one sentinel per partition) + duplicates.
    assert result["results"] + result["dlq"] == n + result["partitions"] + result["duplicates"], show(result)
    assert result["dlq"] == 0, "this workflow cannot fail: a DLQ record means a worker bug\n" + show(result)

"""Dependencies going away under load: a private Redis (rate limit + dedup), an http_call upstream."""

from __future__ import annotations

from pathlib import Path

from bench.faults import redis_restart, upstream_restart
from tests.proof._fault_support import show


def _failures(summary: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in summary.items() if not k.startswith("2")}


def test_redis_killed_and_restarted_under_governed_load(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = redis_restart(kafka_bootstrap, log_dir=tmp_path, concurrency=10, phase=2.0)
    print(show(result))
    # Dedup is enforced through Redis before the outage and again after it (the store reconnects).
    assert result["dedup_before"] == [200, 409], show(result)
    assert result["dedup_after"][0] == 200 and result["dedup_after"][1] == 409, show(result)
    # fail_open (the default): the outage costs governance, not availability; no call hangs.
    assert result["redis_down"].get("200", 0) > 0, show(result)
    assert all(k.isdigit() and k[0] in "24" for k in result["redis_down"]), show(result)
    assert _failures(result["before"]) == {} and _failures(result["after_restart"]) == {}, show(result)
    assert result["max_call_seconds"] < 5.0, show(result)
    assert result["health_after"]["components"]["redis"] == "ok", show(result)


def test_http_upstream_stopped_and_restarted(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = upstream_restart(kafka_bootstrap, log_dir=tmp_path, concurrency=5, phase=2.0, recover_timeout=60)
    print(show(result))
    assert result["before"].get("200", 0) > 0, show(result)
    down = result["upstream_down"]
    # While the upstream is gone: error responses (5xx: upstream error, then the open circuit), no 200.
    assert down and down.get("200", 0) == 0, show(result)
    assert all(k.isdigit() and k[0] == "5" for k in down), show(result)
    # After it is back (and the circuit breaker's recovery timeout), calls succeed again.
    assert result["recovered_after_seconds"] < 60, show(result)
    assert result["after_recovery"].get("200", 0) > 0, show(result)
    assert _failures(result["after_recovery"]) == {}, show(result)
    assert result["reply_after"]["data"]["reply"]["upstream"] == "ok", show(result)
    assert result["max_call_seconds"] < 5.0, show(result)

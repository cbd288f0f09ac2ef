"""kill -9 + restart of the gateway under sync load: bounded failures, then service resumes."""

from __future__ import annotations

from pathlib import Path

from bench.faults import gateway_restart
from tests.proof._fault_support import show


def test_gateway_restart_under_load_fails_fast_and_resumes(kafka_bootstrap: str, tmp_path: Path) -> None:
    timeout = 5.0
    result = gateway_restart(kafka_bootstrap, log_dir=tmp_path, concurrency=20, before=2.0, after=3.0,
                             client_timeout=timeout)  # fmt: skip
    print(show(result))
    assert result["before_kill"].get("200", 0) > 0, show(result)
    # Callers in flight when the process died got an error (connection reset / 5xx), not a hang.
    assert result["failed_calls_spanning_kill"] > 0, show(result)
    assert result["non_5xx_failures"] == 0, show(result)
    assert result["max_call_seconds"] <= timeout + 1.0, show(result)
    # Service resumes: after the new process is ready (+1 s), calls succeed again.
    assert result["after_ready"].get("200", 0) > 0, show(result)
    assert result["ok_ratio_after_ready_plus_1s"] >= 0.99, show(result)

"""Broker unreachable at startup: `quasar worker` and `quasar gateway` wait for it, then come up."""

from __future__ import annotations

from bench.faults import broker_unreachable
from tests.proof._fault_support import show


def test_worker_and_gateway_retry_with_a_clear_line_and_come_up_with_the_broker() -> None:
    result = broker_unreachable(down_seconds=3.0, timeout=60)
    for name, state in result["while_down"].items():
        assert state["alive"], f"{name} exited while the broker was down\n{show(result)}"
        text = state["text"]
        assert "Kafka broker 127.0.0.1:" in text and "unreachable" in text and "retrying in" in text, show(result)
        # Backoff, not a busy loop: a handful of lines in a few seconds (librdkafka alone printed ~20/s).
        assert state["lines"] <= 8, show(result)
        assert "Traceback" not in text, show(result)
    assert result["traceback_lines"] == 0, show(result)
    assert result["ready_seconds_after_broker"] < 60, show(result)

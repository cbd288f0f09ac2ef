"""`python -m bench.record_path` runs the worker's real batch loop: every record yields its output and, per the
channel's tracing, its trace record."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from bench.record_path import BATCH, main, worker_seconds


def test_the_worker_row_produces_an_output_and_a_trace_per_record() -> None:
    # A producer that never reaches a broker: produce() only enqueues, so the queue counts what was produced.
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 600_000, "log_level": 0})
    worker_seconds(BATCH, "all", "127.0.0.1:9", producer)
    assert len(producer) == 2 * BATCH  # output + trace
    worker_seconds(BATCH, "errors", "127.0.0.1:9", producer)
    assert len(producer) == 3 * BATCH  # successes are not traced under `errors`
    producer.purge()


def test_it_prints_a_row_per_path(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QUASAR_KAFKA_BOOTSTRAP", kafka_bootstrap)  # the bench's broker: the test's
    assert main(["--n", str(BATCH), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("hand-written logic", "engine alone", "tracing all", "tracing errors"):
        assert row in out

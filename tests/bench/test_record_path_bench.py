"""`python -m bench.record_path` runs the worker's real batch loop: every record yields its output and, per the
channel's tracing, its trace record (queued on a producer that never reaches a broker)."""

from __future__ import annotations

import pytest

from bench.record_path import BATCH, _producer, main, worker_seconds


def test_the_worker_row_produces_an_output_and_a_trace_per_record() -> None:
    producer = _producer()
    worker_seconds(BATCH, "all", producer)
    assert len(producer) == 2 * BATCH  # output + trace
    worker_seconds(BATCH, "errors", producer)
    assert len(producer) == 3 * BATCH  # successes are not traced under `errors`


def test_it_prints_a_row_per_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", str(BATCH), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("hand-written logic", "engine alone", "tracing all", "tracing errors"):
        assert row in out

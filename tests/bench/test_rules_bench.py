"""`python -m bench.rules` does the agreed work (row 40 of the table decides, the ruleset approves) and reports."""

from __future__ import annotations

from bench.rules import MATCH_ROW, main, render, run, shipping_table


def test_the_bench_table_is_a_50_row_first_table_decided_by_row_40() -> None:
    from app.engine.rules import compile_table

    doc = shipping_table()
    assert len(doc["rules"]) == 50 and doc["hit_policy"] == "first"
    rows, _ = compile_table(doc).decide({"data": {"parcel": {"weight": 39.5, "zone": "eu", "express": True}}})
    assert rows == [MATCH_ROW - 1]


def test_a_short_run_reports_every_row() -> None:
    report = run(messages=50, warmup=5, rounds=1)
    assert set(report["msgs_per_s"]) == {"complex", "table50", "ruleset5", "both"}
    assert all(v[0] > 0 for v in report["msgs_per_s"].values())
    text = render(report)
    assert "50-row first table" in text and "Ordo publishes 1.63 us per rule" in text
    assert main(["--messages", "20", "--warmup", "0", "--rounds", "1", "--no-write"]) == 0

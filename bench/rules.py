"""Rules benchmark: decision tables and rulesets per message, next to the engine's complex-workflow row.

`python -m bench.rules` (= `make bench-rules`). Every row is measured in this process, in the same run,
JSON bytes in -> JSON response bytes out, one message at a time, exactly like `bench/engine.py`'s Quasar
side (whose complex workload is the baseline row here); rounds alternate between rows and the best
round of each counts. Rows:

- complex workflow (4 tasks): Orion's complex benchmark workload, the engine's reference row;
- 50-row `first` table: parse_json + one decision_table task of 50 rows (3 inputs), matching row 40;
- 5-step ruleset: parse_json + a `rule` task running docs/examples' loan approval (5 steps to APPROVED);
- table + ruleset: both tasks in one workflow.

It also times the decision alone (no message, no JSON): a 50-row table evaluation and a 5-step ruleset
run, reported per call and per rule (per row examined / per step), to compare with Ordo's published
1.63 us per rule in its interpreter (Ordo runs Rust; we run Python). Writes `bench/results/rules.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.engine import QuasarRunner
from bench.workloads import load_workloads

__all__ = ["ROWS", "main", "shipping_table"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "rules.json"
LOAN = json.loads((BENCH_DIR.parent / "docs" / "examples" / "rules" / "loan-approval.json").read_text())
MATCH_ROW = 40  # 1-based row the benchmark payload matches (39 rows tried before it)
ORDO_US_PER_RULE = 1.63


def shipping_table(rows: int = 50) -> dict[str, Any]:
    """A `first` table of `rows` rows over weight (range), zone (set) and express (exact)."""
    rules = []
    for i in range(rows - 1):
        rules.append(
            {
                "when": [f"[{i}..{i + 1})", "in [domestic, eu]" if i % 2 else "in [uk, us]", "true" if i % 3 else "-"],
                "then": [round(5 + i * 0.75, 2), "courier" if i % 2 else "post"],
            }
        )
    rules.append({"when": ["-", "-", "-"], "then": [99, "freight"]})
    return {
        "name": "bench_rates",
        "hit_policy": "first",
        "inputs": [
            {"name": "weight", "expression": "data.parcel.weight", "type": "number"},
            {"name": "zone", "expression": "data.parcel.zone", "type": "string"},
            {"name": "express", "expression": "data.parcel.express", "type": "boolean"},
        ],
        "outputs": [{"name": "rate", "type": "number"}, {"name": "carrier", "type": "string"}],
        "rules": rules,
        "target": "data.quote",
    }


_PARSE = {
    "id": "parse",
    "name": "parse",
    "function": {"name": "parse_json", "input": {"source": "payload", "target": "parcel"}},
}
_TABLE_TASK = {"id": "rate", "name": "rate", "function": {"name": "decision_table", "input": shipping_table()}}
_RULE_TASK = {
    "id": "decide",
    "name": "decide",
    "function": {
        "name": "rule",
        "input": {"ruleset": "loan-approval", "input": {"applicant": {"var": "data.parcel.applicant"}}},
    },
}
# weight 39.5 falls in row 40's range [39..40); row 40 (i = 39) wants zone in [domestic, eu] and express
_BODY = orjson.dumps(
    {
        "data": {
            "weight": 39.5,
            "zone": "eu",
            "express": True,
            "applicant": {"age": 35, "income": 5000, "debt": 1000, "credit_score": 760},
        }
    }
)


class _Row:
    """One workflow on one channel, with the same per-message work as bench/engine.py's runner."""

    def __init__(self, name: str, tasks: list[dict[str, Any]], check: Callable[[dict[str, Any]], None]) -> None:
        from app.engine import ChannelWorkflow, Engine, Message, RunOptions, compile_workflow
        from app.testing import ruleset_catalog

        self.name = name
        wf = compile_workflow({"id": name, "name": name, "tasks": tasks})
        self.engine = Engine({"bench": [ChannelWorkflow(wf)]}, rulesets=ruleset_catalog(LOAN["rulesets"]))
        self._message = Message
        self._options = RunOptions(rollout_bucket=37)
        self._check = check

    def handle(self, body: bytes) -> bytes:
        doc = orjson.loads(body)
        msg = self._message.from_request(doc["data"], doc.get("metadata"))
        self.engine.process_sync("bench", msg, self._options)
        return orjson.dumps(msg.to_response())

    def check(self) -> None:
        self._check(orjson.loads(self.handle(_BODY)))

    def timed(self, messages: int, warmup: int) -> float:
        handle = self.handle
        for _ in range(warmup):
            handle(_BODY)
        start = time.perf_counter()
        for _ in range(messages):
            handle(_BODY)
        return messages / (time.perf_counter() - start)


def _expect_quote(response: dict[str, Any]) -> None:
    quote = response["data"].get("quote")
    if quote != {"rate": round(5 + (MATCH_ROW - 1) * 0.75, 2), "carrier": "courier"}:
        raise RuntimeError(f"table row {MATCH_ROW} should decide, got {quote!r}")


def _expect_decision(response: dict[str, Any]) -> None:
    if response["data"].get("decision", {}).get("code") != "APPROVED":
        raise RuntimeError(f"the loan ruleset should approve, got {response['data'].get('decision')!r}")


def _both(response: dict[str, Any]) -> None:
    _expect_quote(response)
    _expect_decision(response)


ROWS: dict[str, tuple[str, list[dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "table50": ("50-row first table (match at row 40)", [_PARSE, _TABLE_TASK], _expect_quote),
    "ruleset5": ("5-step ruleset (loan approval)", [_PARSE, _RULE_TASK], _expect_decision),
    "both": ("table + ruleset", [_PARSE, _TABLE_TASK, _RULE_TASK], _both),
}


def _decision_alone(iterations: int) -> dict[str, float]:
    """us per call for the decision itself: table.decide and ruleset.run on a ready context."""
    from app.engine.rules import compile_ruleset, compile_table

    table = compile_table(shipping_table())
    ctx: dict[str, Any] = {"data": {"parcel": {"weight": 39.5, "zone": "eu", "express": True}}}
    ruleset = compile_ruleset(LOAN["rulesets"][0], "loan-approval")
    applicant = {"age": 35, "income": 5000, "debt": 1000, "credit_score": 760}

    def best(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(iterations):
                fn()
            times.append((time.perf_counter() - start) / iterations * 1e6)
        return min(times)

    table_us = best(lambda: table.decide(ctx))
    ruleset_us = best(lambda: ruleset.run({"data": {"applicant": applicant}, "metadata": {}, "temp_data": {}}))
    return {
        "table50_us_per_decision": table_us,
        "table50_us_per_row_examined": table_us / MATCH_ROW,
        "ruleset5_us_per_run": ruleset_us,
        "ruleset5_us_per_step": ruleset_us / 5,
    }


def run(messages: int, warmup: int, rounds: int) -> dict[str, Any]:
    complex_workload = next(w for w in load_workloads() if w.name == "complex")
    reference = QuasarRunner(complex_workload)
    asyncio.run(reference.check())
    rows = {key: _Row(key, tasks, check) for key, (_title, tasks, check) in ROWS.items()}
    for row in rows.values():
        row.check()
    results: dict[str, list[float]] = {"complex": [], **{k: [] for k in rows}}
    for _ in range(rounds):  # alternate rows per round: a neighbour's burst hits every row alike
        results["complex"].append(asyncio.run(reference.timed(messages, warmup)))
        for key, row in rows.items():
            results[key].append(row.timed(messages, warmup))
    return {"msgs_per_s": results, "decision_alone": _decision_alone(max(2000, messages // 2))}


def render(report: dict[str, Any]) -> str:
    titles = {"complex": "complex workflow (4 tasks), engine reference", **{k: t for k, (t, _, _) in ROWS.items()}}
    best = {k: max(v) for k, v in report["msgs_per_s"].items()}
    lines = ["row                                             msgs/s   vs complex", "-" * 66]
    for key, value in best.items():
        lines.append(f"{titles[key]:<45} {value:>9,.0f}   {value / best['complex']:.2f}x")
    alone = report["decision_alone"]
    lines += [
        "",
        f"50-row first table, decision alone: {alone['table50_us_per_decision']:.2f} us "
        f"({alone['table50_us_per_row_examined'] * 1000:.0f} ns per row examined)",
        f"5-step ruleset, decision alone:     {alone['ruleset5_us_per_run']:.2f} us "
        f"({alone['ruleset5_us_per_step']:.2f} us per step; "
        f"Ordo publishes {ORDO_US_PER_RULE} us per rule, interpreter)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20_000, help="timed messages per row and round")
    p.add_argument("--warmup", type=int, default=2_000, help="untimed messages per row and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="do not write bench/results/rules.json")
    args = p.parse_args(argv)
    if args.messages <= 0 or args.rounds <= 0 or args.warmup < 0:
        print("--messages and --rounds must be > 0, --warmup >= 0", file=sys.stderr)
        return 2
    report = run(args.messages, args.warmup, args.rounds)
    print(render(report))
    if not args.no_write:
        doc = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "load_avg_1m": os.getloadavg()[0],
            },
            "config": {"messages": args.messages, "warmup": args.warmup, "rounds": args.rounds},
            **report,
        }
        RESULTS_FILE.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

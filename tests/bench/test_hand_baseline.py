"""The hand-written baseline does the complex workflow's work: same answer as the engine, id and time aside."""

from __future__ import annotations

import re

import orjson

from app.engine import Engine, Message, compile_workflow
from bench.worker import (
    COMPLEX_PAYLOAD,
    COMPLEX_WORKFLOW,
    HAND_LOOP_ROW,
    WORKER_ROW,
    Result,
    acceptance_ratios,
    complex_by_hand,
    median_ratios,
)

_RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _without_clock(response: dict[str, object]) -> dict[str, object]:
    out = orjson.loads(orjson.dumps(response))
    out.pop("id")
    order = out["data"]["order"]
    assert _RFC3339_SECONDS.match(order.pop("processed_at"))
    return out  # type: ignore[no-any-return]


def test_hand_written_logic_answers_what_the_workflow_answers() -> None:
    engine = Engine({"orders": [compile_workflow(COMPLEX_WORKFLOW)]})
    message = Message.from_request(COMPLEX_PAYLOAD["data"])
    engine.process_sync("orders", message)
    by_engine = _without_clock(message.to_response())
    by_hand = _without_clock(orjson.loads(complex_by_hand(orjson.dumps(COMPLEX_PAYLOAD))))
    assert by_hand == by_engine
    assert by_hand["data"]["order"]["tier"] == "standard"  # type: ignore[index]


def test_hand_written_ids_are_fresh() -> None:
    body = orjson.dumps(COMPLEX_PAYLOAD)
    assert orjson.loads(complex_by_hand(body))["id"] != orjson.loads(complex_by_hand(body))["id"]


def test_ratios_print_only_for_pairs_measured_in_the_run() -> None:
    rates = {
        "hand-written loop, complex logic by hand": 100_000.0,
        "quasar worker, complex 4-task workflow, default tracing": 60_000.0,
    }
    assert acceptance_ratios(rates) == ["worker (default tracing) / hand-written loop = 0.60 (goal >= 0.50)"]


def test_rounds_report_each_ratio_by_its_median_with_every_round() -> None:
    def round_of(hand_s: float, worker_s: float, hand_cpu: float, worker_cpu: float) -> list[Result]:
        return [
            Result(HAND_LOOP_ROW, 1000, hand_s, hand_cpu),
            Result(WORKER_ROW, 1000, worker_s, worker_cpu),
        ]

    rounds = [round_of(1.0, 2.0, 10.0, 20.0), round_of(1.0, 4.0, 10.0, 25.0), round_of(1.0, 1.25, 10.0, 40.0)]
    lines = median_ratios(rounds)
    assert lines == [
        "worker (default tracing) / hand-written loop: median 0.50 over 3 rounds (0.50, 0.25, 0.80; goal >= 0.50)",
        "CPU per record: hand-written loop / worker (default tracing): median 0.40 over 3 rounds "
        "(0.50, 0.40, 0.25; goal >= 0.50)",
    ]

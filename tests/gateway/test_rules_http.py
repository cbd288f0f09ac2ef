"""Rules over the data API end to end (gateway -> Kafka -> worker -> Kafka -> gateway): decisions,
explanations on demand (`x-quasar-explain: 1`, `?explain=1`) and none by default."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import Admin, Gateway

pytestmark = pytest.mark.timeout(180)

FRAUD = json.loads((Path(__file__).resolve().parents[2] / "docs/examples/rules/fraud-scoring.json").read_text())


@pytest.fixture(scope="module")
async def fraud(admin: Admin) -> None:
    for ruleset in FRAUD["rulesets"]:  # callee first: the caller's pinned call must resolve at activation
        await admin._ok(admin.http.post("/api/v1/admin/rulesets", json=ruleset))
        await admin._ok(
            admin.http.patch(f"/api/v1/admin/rulesets/{ruleset['ruleset_id']}/status", json={"status": "active"})
        )
    await admin.workflow(copy.deepcopy(FRAUD["workflows"][0]))
    await admin.channel({**FRAUD["channels"][0], "methods": ["POST"]})


async def test_a_decision_over_http_without_explanation(gateway: Gateway, fraud: None) -> None:
    r = await gateway.http.post("/api/v1/data/fraud-check", json=FRAUD["request"]["body"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"] == FRAUD["response_data"]
    assert "explain" not in body


@pytest.mark.parametrize(("headers", "params"), [({"x-quasar-explain": "1"}, {}), ({}, {"explain": "1"})])
async def test_explanations_on_demand_carry_the_decision_path(
    gateway: Gateway, fraud: None, headers: dict[str, str], params: dict[str, str]
) -> None:
    r = await gateway.http.post(
        "/api/v1/data/fraud-check", json=FRAUD["request"]["body"], headers=headers, params=params
    )
    assert r.status_code == 200, r.text
    explain: list[dict[str, Any]] = r.json()["explain"]
    table, rule = explain
    assert table["table"] == "country_risk" and table["hit_policy"] == "priority"
    assert table["inputs"] == {"country": "BR", "amount": 700}
    assert [m["row"] for m in table["matched_rows"]] == [2, 4] and table["result"] == {"risk": "medium"}
    assert rule["ruleset"] == "fraud-decision" and rule["version"] == 1 and rule["code"] == "REVIEW"
    steps = [(s["ruleset"], s["step"]) for s in rule["steps"]]
    assert steps == [
        ("fraud-signals", "score"),
        ("fraud-signals", "scored"),
        ("fraud-decision", "signals"),
        ("fraud-decision", "decide"),
        ("fraud-decision", "review"),
    ]
    decide = rule["steps"][3]
    assert decide["branch"] == 1 and decide["why"]["operands"] == [50, 40]
    assert all(s["elapsed_us"] >= 0 for s in rule["steps"])

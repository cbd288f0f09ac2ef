"""Orion's benchmark workloads are valid workflows and make our engine do exactly Orion's work.

§1g caveat 1: the fixtures have no `parse_json`, so every `data.*` read is null. The complex
workflow must therefore take the "standard" branch and the 12-workflow channel must fire 5 rules,
on our engine as on Orion's (the second half is checked against the real baseline under node).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from app.engine import ChannelWorkflow, Engine, Message, RunOptions, compile_workflow, validate_workflow
from bench.engine import BenchError, BenchResult, QuasarRunner, ensure_node_deps, render_table, run_baseline
from bench.workloads import Expectation, Workload, load_workloads

WORKLOADS = {w.name: w for w in load_workloads()}


async def _run(workload: Workload) -> Message:
    wfs = [compile_workflow(doc) for doc in workload.workflow_docs()]
    engine = Engine({workload.channel: [ChannelWorkflow(wf, rollout=(0, 100)) for wf in wfs]})
    body = orjson.loads(workload.body())
    return await engine.process(
        workload.channel,
        Message.from_request(body["data"], body.get("metadata")),
        RunOptions(rollout_bucket=0),
    )


def test_manifest_lists_orions_three_scenarios() -> None:
    assert set(WORKLOADS) == {"simple", "complex", "multi"}
    assert len(WORKLOADS["multi"].workflow_docs()) == 12
    priorities = sorted(d["priority"] for d in WORKLOADS["multi"].workflow_docs())
    assert priorities == [*range(11), 100]


def test_payloads_are_orions_request_bodies() -> None:
    simple = orjson.loads(WORKLOADS["simple"].body())
    complex_ = orjson.loads(WORKLOADS["complex"].body())
    assert simple == {
        "data": {
            "amount": 250,
            "type": "premium",
            "region": "US",
            "active": True,
            "source": "api",
            "customer_id": "cust-12345",
            "timestamp": "2025-01-15T10:30:00Z",
        }
    }
    assert complex_["data"]["amount"] == 750
    assert complex_["data"]["shipping_address"] == {"city": "New York", "state": "NY", "zip": "10001"}
    assert WORKLOADS["multi"].payload_file == WORKLOADS["simple"].payload_file


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workflows_pass_our_validation(name: str) -> None:
    for doc in WORKLOADS[name].workflow_docs():
        report = validate_workflow(doc)
        assert report["valid"], (doc.get("workflow_id"), report["errors"])
        assert report["errors"] == []


def test_no_workflow_parses_the_payload() -> None:
    # Caveat 1 is the point of the fixtures: without parse_json every data.* read is null.
    for w in WORKLOADS.values():
        for doc in w.workflow_docs():
            assert all(t["function"]["name"] != "parse_json" for t in doc["tasks"])


async def test_complex_always_takes_the_standard_tier() -> None:
    out = await _run(WORKLOADS["complex"])
    data = out.to_response()["data"]
    assert data["tier"] == "standard"
    assert (data["discount_pct"], data["free_shipping"]) == (0, False)
    # country is null too: cat skips it, `in` with a null needle is false.
    assert (data["label"], data["priority"]) == ("standard-", "normal")
    assert isinstance(data["processed_at"], str)
    assert [a.task_id for a in out.audit_trail] == ["standard_tier", "enrich"]


async def test_twelve_workflows_fire_five_rules() -> None:
    out = await _run(WORKLOADS["multi"])
    fired = {a.workflow_id for a in out.audit_trail}
    assert len(fired) == 5
    # null < 50 and !null are true; the three unconditional rules always fire.
    assert fired == {
        "rule-00-always",
        "rule-02-low-amount",
        "rule-07-tier",
        "rule-10-inactive",
        "rule-100-label",
    }
    assert out.to_response()["data"]["label"] == "order-bronze-"


async def test_simple_logs_and_leaves_data_empty() -> None:
    out = await _run(WORKLOADS["simple"])
    assert out.to_response()["data"] == {}
    assert [(a.task_id, a.status) for a in out.audit_trail] == [("log", 200)]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
async def test_benchmark_check_accepts_our_engine(name: str) -> None:
    runner = QuasarRunner(WORKLOADS[name])
    await runner.check()
    assert orjson.loads(await runner.handle(runner.body))["status"] == "ok"


async def test_benchmark_check_rejects_different_work() -> None:
    w = WORKLOADS["complex"]
    wrong = Workload(
        name=w.name,
        title=w.title,
        channel=w.channel,
        workflows_file=w.workflows_file,
        payload_file=w.payload_file,
        expect=Expectation(
            executed=("bench-complex-ecommerce/vip_tier", "bench-complex-ecommerce/enrich"),
            data=w.expect.data,
            volatile=w.expect.volatile,
        ),
    )
    with pytest.raises(BenchError, match="executed"):
        await QuasarRunner(wrong).check()


def test_expectation_reports_wrong_or_missing_data() -> None:
    exp = WORKLOADS["complex"].expect
    assert exp.data_mismatch({**exp.data, "processed_at": "2025-01-01T00:00:00Z"}) is None
    assert "volatile" in (exp.data_mismatch(dict(exp.data)) or "")
    assert "expected" in (exp.data_mismatch({**exp.data, "tier": "vip", "processed_at": "x"}) or "")
    assert "not an object" in (exp.data_mismatch([1]) or "")


def test_loader_rejects_an_empty_workflow_file(tmp_path: Path) -> None:
    (tmp_path / "wf.json").write_text("[]")
    (tmp_path / "body.json").write_text('{"data": {}}')
    (tmp_path / "m.json").write_text(
        orjson.dumps(
            {
                "workloads": [
                    {
                        "name": "x",
                        "channel": "c",
                        "workflows": "wf.json",
                        "payload": "body.json",
                        "expect": {"executed": [], "data": {}},
                    }
                ]
            }
        ).decode()
    )
    (w,) = load_workloads(tmp_path / "m.json")
    with pytest.raises(ValueError, match="non-empty array"):
        w.workflow_docs()


@pytest.mark.parametrize("name", ["complex", "multi"])
def test_orions_engine_does_the_same_work(name: str) -> None:
    # The real baseline (dataflow-wasm under node), a handful of messages: same steps, same data.
    w = WORKLOADS[name]
    result = run_baseline(ensure_node_deps(), w, messages=5, warmup=0)
    assert tuple(result["executed"]) == w.expect.executed
    assert w.expect.data_mismatch(result["data"]) is None
    assert result["msgs_per_s"] > 0


def test_table_reports_best_rounds_and_the_paired_median() -> None:
    complex_, simple = WORKLOADS["complex"], WORKLOADS["simple"]
    # Round 2 had a load burst on the baseline only: best/best says 0.75x, the paired median 1.75x.
    r = BenchResult(complex_, quasar=[3.0, 2.0], orion=[1.0, 4.0])
    assert (r.quasar_best, r.orion_best, r.ratio, r.paired_ratio) == (3.0, 4.0, 0.75, 1.75)
    noted = BenchResult(simple, quasar=[5.0], orion=[], baseline_note="substitute")
    assert noted.ratio is None and noted.paired_ratio is None
    lines = render_table([r, noted]).splitlines()
    assert lines[0].split() == [
        "workload",
        "Quasar",
        "msgs/s",
        "Orion",
        "engine",
        "msgs/s",
        "ratio",
        "paired",
        "median",
        "ratio",
    ]
    assert lines[2].split()[-2:] == ["0.75x", "1.75x"]
    assert lines[3].startswith("simple (1 log task) [1]") and lines[3].split()[-1] == "-"
    assert lines[4] == "[1] substitute"

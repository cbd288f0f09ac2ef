"""Rulesets: step kinds, compile-time graph checks, pinned calls, the `rule` task, decision paths."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.engine import Message, compile_workflow, dry_run
from app.engine.rules import (
    RuleError,
    RulesetCatalog,
    RulesetInvalid,
    RulesetUnavailable,
    analyse_ruleset,
    check_calls,
    compile_ruleset,
    rule_stats,
)
from app.testing import load_bundle, ruleset_catalog, send

RULES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "rules"


def bundle(name: str) -> dict[str, Any]:
    return dict(json.loads((RULES / f"{name}.json").read_text()))


def loan() -> dict[str, Any]:
    return copy.deepcopy(bundle("loan-approval")["rulesets"][0])


def ctx(**data: Any) -> dict[str, Any]:
    return {"data": data, "metadata": {}, "temp_data": {}}


def applicant(**fields: Any) -> dict[str, Any]:
    base = {"age": 35, "income": 5000, "debt": 1000, "credit_score": 760}
    return ctx(applicant={**base, **fields})


def errors_of(doc: dict[str, Any]) -> list[dict[str, str]]:
    compiled, errors = analyse_ruleset(doc, "r")
    assert compiled is None
    return errors


# -- running ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({}, "APPROVED", "approved"),
        ({"age": 17}, "REJECTED", "applicant must be 18 or older"),
        ({"income": 0}, "REJECTED", "no declared income"),
        ({"debt": 2000}, "REFER", "manual review: medium credit score"),
        ({"credit_score": 500}, "REJECTED", "credit score 500 is below 640"),
    ],
)
def test_loan_approval_reaches_the_right_terminal(fields: dict[str, Any], code: str, message: str) -> None:
    result = compile_ruleset(loan(), "loan-approval").run(applicant(**fields))
    assert (result["code"], result["message"]) == (code, message)


def test_terminal_output_and_action_assignments() -> None:
    context = applicant()
    result = compile_ruleset(loan(), "loan-approval").run(context)
    assert result["output"] == {"limit": 20000}
    assert context["temp_data"] == {"dti": 0.2, "limit": 20000}


def test_decision_path_names_branches_operands_and_timings() -> None:
    steps: list[dict[str, Any]] = []
    compile_ruleset(loan(), "loan-approval").run(applicant(credit_score=650), explain=steps)
    assert [s["step"] for s in steps] == ["check_age", "check_income", "score", "decide", "refer"]
    age = steps[0]
    assert age["branch"] == "default" and age["next"] == "check_income"
    assert age["why"] == [
        {"condition": {"<": [{"var": "data.applicant.age"}, 18]}, "op": "<", "operands": [35, 18], "result": False}
    ]
    decide = steps[3]
    assert decide["branch"] == 1 and decide["next"] == "refer"
    assert decide["why"]["operands"] == [650, 640] and decide["why"]["result"] is True
    assert steps[-1]["result"] == {"code": "REFER"}
    assert all(s["elapsed_us"] >= 0 for s in steps)


def test_action_step_metric_and_table_are_counted() -> None:
    before = rule_stats().metrics.get(("loan-approval", "scored"), 0)
    compile_ruleset(loan(), "loan-approval").run(applicant())
    assert rule_stats().metrics[("loan-approval", "scored")] == before + 1


def test_an_action_step_can_run_a_decision_table() -> None:
    signals = bundle("fraud-scoring")["rulesets"][0]
    rs = compile_ruleset(signals, "fraud-signals")
    steps: list[dict[str, Any]] = []
    result = rs.run(ctx(amount=1500, country_risk="high", account_age_days=2, tx_last_hour=6), explain=steps)
    assert result == {"code": "SCORED", "message": "", "output": {"score": 115}}
    table = steps[0]["table"]
    assert table["selected_rows"] == [1, 3, 5, 6] and table["result"] == {"points": 115}
    assert rs.run(ctx(amount=1))["output"] == {"score": 0}  # no row: the table's default


def test_evaluation_errors_propagate() -> None:
    doc = loan()
    doc["steps"]["score"]["set"][0]["logic"] = {"/": [1, 0]}
    from app.engine.jsonlogic import LogicError

    with pytest.raises(LogicError):
        compile_ruleset(doc, "loan").run(applicant())


# -- graph checks ----------------------------------------------------------------------------------
def test_missing_step_is_a_field_error() -> None:
    doc = loan()
    doc["steps"]["check_age"]["default"] = "nowhere"
    assert errors_of(doc) == [
        {"field": "steps.check_age", "message": "step 'check_age' goes to unknown step 'nowhere'"}
    ]


def test_unreachable_step_is_a_field_error() -> None:
    doc = loan()
    doc["steps"]["orphan"] = {"kind": "terminal", "code": "X"}
    assert errors_of(doc) == [
        {"field": "steps.orphan", "message": "step 'orphan' is unreachable from entry 'check_age'"}
    ]


def test_cycles_are_refused() -> None:
    doc = loan()
    doc["steps"]["score"]["next"] = "check_age"
    errors = errors_of(doc)
    assert {"field": "steps.check_age", "message": "cycle: check_age -> check_income -> score -> check_age"} in errors


def test_steps_without_a_way_to_a_terminal_are_refused() -> None:
    doc = {
        "entry": "a",
        "steps": {
            "a": {"kind": "decision", "branches": [{"when": True, "next": "end"}], "default": "b"},
            "b": {"kind": "action", "next": "c"},
            "c": {"kind": "action", "next": "b"},
            "end": {"kind": "terminal", "code": "OK"},
        },
    }
    messages = [e["message"] for e in errors_of(doc)]
    assert "step 'b' has no way to a terminal step" in messages and "step 'c' has no way to a terminal step" in messages


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        ({"kind": "loop"}, "steps.s.kind", "unknown step kind 'loop'"),
        ({"kind": "decision", "branches": []}, "steps.s.default", "is required"),
        ({"kind": "decision", "branches": [{"when": True}], "default": "end"}, "steps.s.branches[0]", "must be"),
        ({"kind": "action"}, "steps.s.next", "is required"),
        ({"kind": "action", "set": [{"path": "data.x"}], "next": "end"}, "steps.s.set[0]", "must be {path, logic}"),
        ({"kind": "action", "log": {"message": "x", "level": "loud"}, "next": "end"}, "steps.s.log.level", "must be"),
        (
            {"kind": "action", "table": {"inputs": [], "outputs": [], "hit_policy": "best"}, "next": "end"},
            "steps.s.table.hit_policy",
            "unknown hit policy",
        ),
        ({"kind": "call", "ruleset": "x", "next": "end"}, "steps.s.version", "pinned to an exact version"),
        ({"kind": "call", "version": 1, "next": "end"}, "steps.s.ruleset", "is required"),
        (
            {"kind": "call", "ruleset": "x", "version": 1, "output": {"data.y": "result"}, "next": "end"},
            "steps.s.output.data.y",
            "must name a result field",
        ),
        ({"kind": "terminal"}, "steps.s.code", "is required"),
        ({"kind": "terminal", "code": "X", "output": {"==": [1]}}, "steps.s.output", "invalid JSONLogic"),
    ],
)
def test_bad_steps_are_field_errors(step: dict[str, Any], field: str, message: str) -> None:
    doc = {"entry": "s", "steps": {"s": step, "end": {"kind": "terminal", "code": "END"}}}
    errors = errors_of(doc)
    assert errors[0]["field"] == field and message in errors[0]["message"], errors


def test_document_level_errors() -> None:
    assert errors_of({"steps": {"t": {"kind": "terminal", "code": "X"}}})[0]["field"] == "entry"
    assert errors_of({"entry": "t", "steps": {}})[0] == {"field": "steps", "message": "needs at least one step"}
    assert errors_of({"entry": "t", "steps": "x"})[0]["field"] == "steps"
    assert analyse_ruleset([1], "r")[1] == [{"field": "", "message": "a ruleset must be a JSON object"}]
    with pytest.raises(RulesetInvalid):
        compile_ruleset({"entry": "missing", "steps": {"t": {"kind": "terminal", "code": "X"}}})


def test_steps_may_be_a_list_with_ids() -> None:
    doc = {
        "entry": "a",
        "steps": [{"id": "a", "kind": "action", "next": "b"}, {"id": "b", "kind": "terminal", "code": "OK"}],
    }
    assert compile_ruleset(doc).run(ctx())["code"] == "OK"
    dup = {
        "entry": "a",
        "steps": [{"id": "a", "kind": "terminal", "code": "A"}, {"id": "a", "kind": "terminal", "code": "B"}],
    }
    assert errors_of(dup)[0]["message"] == "duplicate step id 'a'"


# -- calls -----------------------------------------------------------------------------------------
def fraud() -> tuple[dict[str, Any], dict[str, Any]]:
    signals, decision = bundle("fraud-scoring")["rulesets"]
    return signals, decision


def test_a_call_runs_the_pinned_version_with_bindings_and_maps_its_result() -> None:
    signals, decision = fraud()
    catalog = ruleset_catalog([signals])
    steps: list[dict[str, Any]] = []
    result = compile_ruleset(decision, "fraud-decision").run(
        ctx(payment={"amount": 700, "account_age_days": 3, "tx_last_hour": 1}, country_risk="medium"),
        catalog,
        explain=steps,
    )
    assert result == {"code": "REVIEW", "message": "send to an analyst", "output": {"score": 50}}
    assert [(s["ruleset"], s["step"]) for s in steps] == [
        ("fraud-signals", "score"),
        ("fraud-signals", "scored"),
        ("fraud-decision", "signals"),
        ("fraud-decision", "decide"),
        ("fraud-decision", "review"),
    ]
    assert steps[2]["called"]["version"] == 1 and steps[2]["called"]["result"]["output"] == {"score": 50}


def test_a_call_to_a_version_that_is_not_loaded_fails_clearly() -> None:
    _, decision = fraud()
    with pytest.raises(RulesetUnavailable, match="calls fraud-signals v1, which is not loaded"):
        compile_ruleset(decision, "fraud-decision").run(ctx(payment={}), RulesetCatalog())
    signals, _ = fraud()
    with pytest.raises(RulesetUnavailable):  # version 2 does not exist; version 1 would
        compile_ruleset(decision, "fraud-decision").run(ctx(payment={}), ruleset_catalog([{**signals, "version": 2}]))


def test_runtime_call_depth_is_bounded() -> None:
    doc = {
        "entry": "c",
        "steps": {
            "c": {"kind": "call", "ruleset": "self", "version": 1, "next": "t"},
            "t": {"kind": "terminal", "code": "T"},
        },
    }
    looping = compile_ruleset(doc, "self", 1)
    with pytest.raises(RuleError, match="nested deeper than 8"):
        looping.run(ctx(), RulesetCatalog.of([looping]))


def _resolver(table: dict[tuple[str, int], tuple[str, Any]]) -> Any:
    return lambda rid, n: table.get((rid, n))


def test_activation_checks_pinned_versions_exist_and_are_active() -> None:
    signals, decision = fraud()
    caller = compile_ruleset(decision, "fraud-decision", 1)
    callee = compile_ruleset(signals, "fraud-signals", 1)
    assert check_calls(caller, _resolver({("fraud-signals", 1): ("active", callee)})) == []
    unknown = check_calls(caller, _resolver({}))
    assert unknown == [
        {"field": "steps", "message": "calls unknown ruleset version fraud-signals v1 (via fraud-decision v1)"}
    ]
    archived = check_calls(caller, _resolver({("fraud-signals", 1): ("archived", callee)}))
    assert "which is archived: only active versions can be called" in archived[0]["message"]
    draft = check_calls(caller, _resolver({("fraud-signals", 1): ("draft", callee)}))
    assert "which is draft" in draft[0]["message"]
    invalid = check_calls(caller, _resolver({("fraud-signals", 1): ("active", None)}))
    assert "which is invalid" in invalid[0]["message"]


def test_activation_refuses_cycles_through_calls_and_deep_nesting() -> None:
    def caller(rid: str, target: str) -> Any:
        doc = {
            "entry": "c",
            "steps": {
                "c": {"kind": "call", "ruleset": target, "version": 1, "next": "t"},
                "t": {"kind": "terminal", "code": "T"},
            },
        }
        return compile_ruleset(doc, rid, 1)

    a, b = caller("a", "b"), caller("b", "a")
    problems = check_calls(a, _resolver({("b", 1): ("active", b), ("a", 1): ("active", a)}))
    assert problems == [{"field": "steps", "message": "cycle through calls: a v1 -> b v1 -> a v1"}]
    chain = {(f"r{i}", 1): ("active", caller(f"r{i}", f"r{i + 1}")) for i in range(1, 12)}
    deep = check_calls(caller("r0", "r1"), _resolver(chain), max_depth=8)
    assert "calls nested deeper than 8" in deep[0]["message"]


# -- the rule task ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["loan-approval", "shipping-rates", "fraud-scoring"])
def test_examples_answer_their_documented_response(name: str) -> None:
    doc = bundle(name)
    request = doc["request"]
    response = send(load_bundle(RULES / f"{name}.json"), request["channel"], request["body"]["data"])
    assert response["status"] == "ok" and response["errors"] == []
    assert response["data"] == doc["response_data"]


def test_rule_task_counts_results_and_explains() -> None:
    engine = load_bundle(RULES / "loan-approval.json")
    before = rule_stats().results.get(("loan-approval", "REJECTED"), 0)
    message = Message.from_request({"age": 16, "income": 1, "debt": 0, "credit_score": 1})
    message.explain = []
    engine.process_sync("loans", message)
    assert message.data["decision"]["code"] == "REJECTED"
    assert rule_stats().results[("loan-approval", "REJECTED")] == before + 1
    (entry,) = message.explain
    assert entry["ruleset"] == "loan-approval" and entry["version"] == 1 and entry["code"] == "REJECTED"
    assert entry["task_id"] == "decide" and [s["step"] for s in entry["steps"]] == ["check_age", "reject_minor"]


def test_rule_task_without_input_runs_on_the_message_context() -> None:
    rs = {
        "entry": "a",
        "steps": {
            "a": {"kind": "action", "set": {"data.seen": True}, "next": "t"},
            "t": {"kind": "terminal", "code": "OK"},
        },
    }
    wf = compile_workflow(
        {
            "id": "w",
            "name": "w",
            "tasks": [{"id": "r", "name": "r", "function": {"name": "rule", "input": {"ruleset": rs}}}],
        }
    )
    report = dry_run(wf, {})
    assert report["output"] == {"seen": True, "decision": {"code": "OK", "message": "", "output": None}}
    assert report["decisions"][0]["ruleset"] == "inline"


def test_rule_task_naming_an_unknown_ruleset_fails_the_run() -> None:
    wf = compile_workflow(
        {
            "id": "w",
            "name": "w",
            "tasks": [
                {"id": "r", "name": "r", "function": {"name": "rule", "input": {"ruleset": "ghost", "version": 3}}}
            ],
        }
    )
    report = dry_run(wf, {})
    assert report["errors"][0]["code"] == "TASK_ERROR"
    assert "ruleset 'ghost' has no version 3 loaded" in report["errors"][0]["message"]


@pytest.mark.parametrize(
    ("inp", "field"),
    [
        ({}, "tasks[0].function.input.ruleset"),
        ({"ruleset": 5}, "tasks[0].function.input.ruleset"),
        ({"ruleset": "x", "version": 0}, "tasks[0].function.input.version"),
        ({"ruleset": "x", "input": []}, "tasks[0].function.input.input"),
        (
            {"ruleset": {"entry": "nope", "steps": {"t": {"kind": "terminal", "code": "T"}}}},
            "tasks[0].function.input.ruleset.entry",
        ),
    ],
)
def test_rule_task_input_errors_name_the_field(inp: dict[str, Any], field: str) -> None:
    from app.engine import validate_workflow

    report = validate_workflow(
        {"name": "w", "tasks": [{"id": "r", "name": "r", "function": {"name": "rule", "input": inp}}]}
    )
    assert report["errors"][0]["field"] == field, report

"""Test suites on the pure engine: passing and failing cases, stubs for connectors, JUnit XML."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from app.engine import compile_workflow
from app.engine.rules import compile_ruleset
from app.engine.rules.testsuite import check_cases, content_digest, junit_xml, run_suite
from app.testing import ruleset_catalog

RULES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "rules"


def bundle(name: str) -> dict[str, Any]:
    return dict(json.loads((RULES / f"{name}.json").read_text()))


@pytest.mark.parametrize("name", ["loan-approval", "shipping-rates", "fraud-scoring"])
def test_every_example_suite_passes(name: str) -> None:
    doc = bundle(name)
    catalog = ruleset_catalog(doc.get("rulesets", []))
    targets: list[Any] = [compile_ruleset(r, r["ruleset_id"]) for r in doc.get("rulesets", [])]
    targets += [compile_workflow(w) for w in doc["workflows"]]
    for target, source in zip(targets, doc.get("rulesets", []) + doc["workflows"], strict=True):
        report = run_suite(target, source["tests"], catalog=catalog)
        assert report["ok"], report
        assert report["total"] == len(source["tests"]) > 0


def test_failures_say_what_differed() -> None:
    rs = bundle("loan-approval")["rulesets"][0]
    tests = [
        {"name": "wrong code", "input": {"applicant": {"age": 17}}, "expect": {"code": "APPROVED"}},
        {
            "name": "wrong output",
            "input": {"applicant": {"age": 30, "income": 10, "debt": 0, "credit_score": 800}},
            "expect": {"output": {"limit": 1, "extra": 2}},
        },
        {
            "name": "right",
            "input": {"applicant": {"age": 17}},
            "expect": {"code": "REJECTED", "data": {"applicant": {"age": 17}}},
        },
    ]
    report = run_suite(compile_ruleset(rs, "loan-approval"), tests, digest="sha256:x")
    assert (report["total"], report["passed"], report["failed"], report["ok"]) == (3, 1, 2, False)
    wrong_code, wrong_output, right = report["cases"]
    assert wrong_code["failures"] == ['code: expected "APPROVED", got "REJECTED"']
    assert wrong_output["failures"] == ["output.limit: expected 1, got 40", "output.extra: missing (expected 2)"]
    assert wrong_code["decisions"][0]["step"] == "check_age"  # failing cases carry the decision path
    assert right["passed"] and "decisions" not in right
    assert report["digest"] == "sha256:x"


def test_a_ruleset_error_is_the_case_code() -> None:
    doc = {
        "entry": "t",
        "steps": {
            "t": {
                "kind": "action",
                "table": {
                    "hit_policy": "unique",
                    "inputs": [{"name": "x", "expression": "data.x"}],
                    "outputs": [{"name": "o"}],
                    "rules": [
                        {"when": [{">": [{"var": "value"}, 0]}], "then": [1]},
                        {"when": [{">": [{"var": "value"}, 1]}], "then": [2]},
                    ],
                },
                "next": "end",
            },
            "end": {"kind": "terminal", "code": "OK"},
        },
    }
    tests = [
        {
            "name": "overlap at run time",
            "input": {"x": 5},
            "expect": {"code": "DECISION_NOT_UNIQUE", "errors": ["DECISION_NOT_UNIQUE"]},
        }
    ]
    assert run_suite(compile_ruleset(doc, "u"), tests)["ok"]


def test_workflow_connectors_are_stubbed_from_fixtures() -> None:
    wf = compile_workflow(
        {
            "id": "enrich",
            "name": "enrich",
            "tasks": [
                {
                    "id": "parse",
                    "name": "p",
                    "function": {"name": "parse_json", "input": {"source": "payload", "target": "in"}},
                },
                {
                    "id": "fetch_user",
                    "name": "f",
                    "function": {
                        "name": "http_call",
                        "input": {"connector": "users", "method": "GET", "path": "/u", "response_path": "data.user"},
                    },
                },
                {
                    "id": "tier",
                    "name": "t",
                    "function": {
                        "name": "decision_table",
                        "input": {
                            "hit_policy": "first",
                            "inputs": [{"name": "tier", "expression": "data.user.tier"}],
                            "outputs": [{"name": "discount"}],
                            "rules": [{"when": ["gold"], "then": [10]}, {"when": ["-"], "then": [0]}],
                        },
                    },
                },
                {
                    "id": "notify",
                    "name": "n",
                    "function": {"name": "publish_kafka", "input": {"connector": "bus", "topic": "t"}},
                },
            ],
        }
    )
    tests = [
        {
            "name": "gold user",
            "input": {},
            "stubs": {"fetch_user": {"set": {"data.user": {"tier": "gold"}}}},
            "expect": {"data": {"discount": 10}, "errors": []},
        },
        {"name": "no stub: the call is only recorded", "input": {}, "expect": {"data": {"discount": 0}}},
        {
            "name": "a failing stub fails the run",
            "input": {},
            "stubs": {"fetch_user": {"status": 503}},
            "expect": {"code": "ENGINE_ERROR"},
        },
    ]
    report = run_suite(wf, tests)
    assert report["ok"], report


def test_malformed_suites_fail_instead_of_passing() -> None:
    assert check_cases("x") == [{"field": "tests", "message": "must be an array of {name, input, expect}"}]
    problems = check_cases(
        [{"name": "a"}, {"name": "a", "expect": {"cod": 1}}, 3, {"expect": {"code": "X"}, "stubs": []}]
    )
    assert [p["field"] for p in problems] == [
        "tests[0].expect",
        "tests[1].name",
        "tests[1].expect",
        "tests[2]",
        "tests[3].name",
        "tests[3].stubs",
    ]
    rs = compile_ruleset(bundle("loan-approval")["rulesets"][0], "loan-approval")
    report = run_suite(rs, [{"name": "x"}])
    assert not report["ok"] and report["failed"] == 1


def test_junit_xml_lists_cases_and_failures() -> None:
    rs = bundle("loan-approval")["rulesets"][0]
    tests = copy.deepcopy(rs["tests"])
    tests[0]["expect"]["code"] = "NOPE"
    report = run_suite(compile_ruleset(rs, "loan-approval"), tests, digest=content_digest(rs))
    root = ElementTree.fromstring(junit_xml([report]))
    suite = root.find("testsuite")
    assert suite is not None
    assert (
        suite.get("name") == "ruleset:loan-approval@v1" and suite.get("tests") == "4" and suite.get("failures") == "1"
    )
    prop = suite.find("properties/property")
    assert prop is not None and prop.get("value", "").startswith("sha256:")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [t["name"] for t in tests]
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("message") == 'code: expected "NOPE", got "APPROVED"'
    assert cases[1].find("failure") is None


def test_content_digest_is_canonical() -> None:
    assert content_digest({"a": 1, "b": [1, 2]}) == content_digest({"b": [1, 2], "a": 1})
    assert content_digest({"a": 1}) != content_digest({"a": 2})


def test_testsuite_documents_are_checked_at_write_time() -> None:
    from app.engine.rules.testsuite import TestSuiteInvalid, compile_testsuite

    good = compile_testsuite(
        {"target": {"kind": "ruleset", "id": "r"}, "tests": [{"name": "a", "expect": {"code": "X"}}]}
    )
    assert (good.kind, good.target, len(good.tests)) == ("ruleset", "r", 1)
    with pytest.raises(TestSuiteInvalid) as info:
        compile_testsuite({"target": {"kind": "channel", "id": "r"}, "tests": [{"name": "a"}]})
    assert [e["field"] for e in info.value.errors] == ["target", "tests[0].expect"]
    with pytest.raises(TestSuiteInvalid, match="needs at least one case"):
        compile_testsuite({"target": {"kind": "workflow", "id": "w"}, "tests": []})

"""Decision tables: every cell kind, every DMN hit policy, defaults, write-time checks, CSV round trip."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine import Message, compile_workflow, dry_run
from app.engine.rules import (
    DecisionConflict,
    DecisionNotUnique,
    TableInvalid,
    analyse_table,
    compile_table,
    rule_stats,
)
from app.engine.rules.cells import CellError, parse_cell
from app.engine.rules.table_csv import table_from_csv, table_to_csv
from app.errors import QuasarError


def table(rules: list[Any], policy: str = "first", *, expression: str = "data.x", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "t",
        "hit_policy": policy,
        "inputs": [{"name": "x", "expression": expression}],
        "outputs": [{"name": "out"}],
        "rules": [{"when": [w], "then": [t]} for w, t in rules],
    }
    doc.update(extra)
    return doc


def decide(doc: dict[str, Any], **data: Any) -> Any:
    return compile_table(doc).decide({"data": data, "metadata": {}, "temp_data": {}})[1]


# -- cell kinds ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "matching", "not_matching"),
    [
        ("-", [1, "a", None, True], []),
        ("", [1, None], []),
        (None, [0, "x"], []),
        ("500", [500, 500.0], ["500", 501, True]),
        (500, [500], ["500"]),
        ("gold", ["gold"], ["Gold", 1]),
        ('"500"', ["500"], [500]),
        ("true", [True], [1, "true"]),
        (True, [True], [1]),
        ("null", [None], [0, ""]),
        (">= 500", [500, 600.5], [499, "600", None, True]),
        ("> 5", [6], [5]),
        ("< 10", [9.9, -1], [10, None]),
        ("<= 10", [10], [10.1]),
        ("== 3", [3], [4]),
        ("= 3", [3], [4]),
        ("!= 3", [4, "3", None], [3]),
        ('> "m"', ["n", "z"], ["a", 5]),
        ("[100..500)", [100, 499.99], [500, 99, "200"]),
        ("(100..500]", [500, 100.5], [100]),
        ("]1..2[", [1.5], [1, 2]),
        ('["a".."c"]', ["b", "c"], ["d"]),
        ("in [1, 2, gold]", [1, 2.0, "gold"], [3, "1", True]),
        ('in ["a, b", c]', ["a, b", "c"], ["a"]),
        ("in [true, null]", [True, None], [1, 0, False]),
        ([1, "x"], [1, "x"], [2]),
        ("not in [1, 2]", [3, "1"], [1, 2]),
        ("not(>= 500)", [499, "x"], [500]),
        ("not([1..2])", [3], [1.5]),
        ("NOT(gold)", ["silver"], ["gold"]),
        ({">": [{"var": "value"}, {"var": "data.limit"}]}, [11], [10, 9]),
    ],
)
def test_cell_kinds_match_exactly_what_they_say(cell: Any, matching: list[Any], not_matching: list[Any]) -> None:
    doc = table([(cell, "hit")])
    for value in matching:
        assert decide(doc, x=value, limit=10) == {"out": "hit"}, (cell, value)
    for value in not_matching:
        assert decide(doc, x=value, limit=10) is None, (cell, value)


def test_a_missing_input_is_null() -> None:
    doc = table([("null", "missing"), ("-", "other")])
    assert decide(doc) == {"out": "missing"}


@pytest.mark.parametrize(
    ("cell", "column_type", "message"),
    [
        (">= abc", "number", "string value"),
        ("[1..x)", "any", "must both be numbers or both strings"),
        ("[5..1]", "any", "empty range"),
        ("(1..1)", "any", "empty range"),
        ("in []", "any", "empty set"),
        ('in [1, "a]', "any", "unterminated"),
        ("< true", "any", "needs a number or a string"),
        ("gold", "number", "string value 'gold' in a number column"),
        (7, "string", "number value 7 in a string column"),
        ("in [1, x]", "number", "string value"),
        ("not(-)", "any", "matches nothing"),
        ("<> 3", "any", "cannot parse"),
        ([{"a": 1}], "any", "set members"),
        ({"==": [1]}, "any", "invalid JSONLogic"),
    ],
)
def test_bad_cells_are_refused_with_a_reason(cell: Any, column_type: str, message: str) -> None:
    with pytest.raises(CellError) as info:
        parse_cell(cell, column_type)
    assert message in str(info.value)


# -- hit policies ----------------------------------------------------------------------------------
def test_first_takes_the_first_matching_row_in_order() -> None:
    doc = table([(">= 10", "big"), (">= 5", "medium"), ("-", "small")])
    assert decide(doc, x=12) == {"out": "big"}
    assert decide(doc, x=7) == {"out": "medium"}
    assert decide(doc, x=1) == {"out": "small"}


def test_unique_returns_the_single_match_and_refuses_two() -> None:
    doc = table([("< 5", "low"), ("[5..10)", "mid"), (">= 10", "high")], "unique")
    assert decide(doc, x=7) == {"out": "mid"}
    overlapping = table([("< 5", "low"), ({"<": [{"var": "value"}, 7]}, "mid")], "unique")
    with pytest.raises(DecisionNotUnique) as info:
        decide(overlapping, x=3)
    assert info.value.code == "DECISION_NOT_UNIQUE" and info.value.status == 422
    assert "rows 1, 2" in info.value.message


def test_unique_is_the_default_policy() -> None:
    doc = table([("< 5", "low")])
    del doc["hit_policy"]
    assert compile_table(doc).hit_policy == "unique"


def test_any_accepts_agreeing_rows_and_refuses_disagreement() -> None:
    doc = table([("< 5", "yes"), ("< 3", "yes"), ("> 100", "no"), ("> 50", "maybe")], "any")
    assert decide(doc, x=1) == {"out": "yes"}
    with pytest.raises(DecisionConflict) as info:
        decide(doc, x=101)
    assert info.value.code == "DECISION_CONFLICT"
    assert "rows 3 and 4" in info.value.message


def test_priority_picks_the_highest_priority_output_value() -> None:
    doc = table(
        [("> 0", "ok"), ("> 10", "review"), ("> 100", "reject")],
        "priority",
        outputs=[{"name": "out", "values": ["reject", "review", "ok"]}],
    )
    assert decide(doc, x=5) == {"out": "ok"}
    assert decide(doc, x=50) == {"out": "review"}
    assert decide(doc, x=500) == {"out": "reject"}


def test_priority_needs_output_values_that_cover_every_row() -> None:
    _, errors = analyse_table(table([("> 0", "ok")], "priority"))
    assert errors[0]["field"] == "outputs" and "values" in errors[0]["message"]
    _, errors = analyse_table(table([("> 0", "odd")], "priority", outputs=[{"name": "out", "values": ["ok"]}]))
    assert errors[0]["field"] == "rules[0].then.out"


def test_collect_lists_every_match_in_row_order() -> None:
    doc = table([("> 0", "a"), ("> 10", "b"), ("-", "c")], "collect")
    assert decide(doc, x=20) == [{"out": "a"}, {"out": "b"}, {"out": "c"}]
    assert decide(doc, x=-1) == [{"out": "c"}]


def test_rule_order_lists_every_match_in_row_order() -> None:
    doc = table([("-", "first"), ("> 10", "second")], "rule_order")
    assert decide(doc, x=20) == [{"out": "first"}, {"out": "second"}]


@pytest.mark.parametrize(("aggregation", "expected"), [("sum", 35), ("min", 5), ("max", 20), ("count", 3)])
def test_collect_aggregators(aggregation: str, expected: int) -> None:
    doc = table([("> 0", 10), ("> 5", 20), ("-", 5), ("< 0", 1000)], "collect", aggregation=aggregation)
    assert decide(doc, x=7) == {"out": expected}


@pytest.mark.parametrize(
    ("alias", "policy", "aggregation"),
    [
        ("C+", "collect", "sum"),
        ("C#", "collect", "count"),
        ("F", "first", None),
        ("U", "unique", None),
        ("R", "rule_order", None),
    ],
)
def test_dmn_one_letter_policies(alias: str, policy: str, aggregation: str | None) -> None:
    compiled = compile_table(table([("-", 1)], alias))
    assert (compiled.hit_policy, compiled.aggregation) == (policy, aggregation)


def test_aggregation_only_on_collect_and_known() -> None:
    _, errors = analyse_table(table([("-", 1)], "first", aggregation="sum"))
    assert errors == [{"field": "aggregation", "message": "only a collect table can aggregate"}]
    _, errors = analyse_table(table([("-", 1)], "collect", aggregation="avg"))
    assert errors[0]["field"] == "aggregation" and "unknown aggregation 'avg'" in errors[0]["message"]


def test_unknown_hit_policy_is_a_field_error() -> None:
    _, errors = analyse_table(table([("-", 1)], "best"))
    assert errors[0]["field"] == "hit_policy" and "unknown hit policy 'best'" in errors[0]["message"]


@pytest.mark.parametrize("policy", ["unique", "first", "priority", "any", "collect", "rule_order"])
def test_empty_tables_match_nothing_and_write_the_default_or_nothing(policy: str) -> None:
    outputs = [{"name": "out", "values": ["a"]}]
    doc = table([], policy, outputs=outputs)
    assert decide(doc, x=1) is None
    doc["default"] = {"out": "a"}
    assert decide(doc, x=1) == {"out": "a"}
    message = Message({})
    compiled = compile_table(doc)
    compiled.apply(message.context, compiled.decide(message.context)[1])
    assert message.data == {"out": "a"}


def test_no_match_writes_nothing_without_a_default() -> None:
    wf = _workflow(table([("> 100", "big")], expression="data.in.x"))
    assert dry_run(wf, {"x": 1})["output"] == {"in": {"x": 1}}


# -- outputs ---------------------------------------------------------------------------------------
def test_outputs_go_to_their_paths_or_to_one_target_object() -> None:
    base = {
        "hit_policy": "first",
        "inputs": [{"name": "w", "expression": "data.w", "type": "number"}],
        "outputs": [{"name": "rate", "path": "data.shipping.rate"}, {"name": "carrier", "path": "temp_data.carrier"}],
        "rules": [{"when": {"w": "< 5"}, "then": {"rate": 4.5, "carrier": "post"}}],
    }
    ctx: dict[str, Any] = {"data": {"w": 1}, "metadata": {}, "temp_data": {}}
    compiled = compile_table(base)
    changes = compiled.apply(ctx, compiled.decide(ctx)[1])
    assert ctx["data"]["shipping"] == {"rate": 4.5} and ctx["temp_data"] == {"carrier": "post"}
    assert changes == [("data.shipping.rate", None, 4.5), ("temp_data.carrier", None, "post")]
    ctx = {"data": {"w": 1}, "metadata": {}, "temp_data": {}}
    compiled = compile_table({**base, "target": "data.quote"})
    compiled.apply(ctx, compiled.decide(ctx)[1])
    assert ctx["data"]["quote"] == {"rate": 4.5, "carrier": "post"}


def test_output_cells_may_be_jsonlogic_and_inputs_may_be_expressions() -> None:
    doc = {
        "hit_policy": "first",
        "inputs": [{"name": "total", "expression": {"*": [{"var": "data.qty"}, {"var": "data.price"}]}}],
        "outputs": [{"name": "discount"}],
        "rules": [
            {"when": [">= 100"], "then": [{"*": [{"var": "data.qty"}, 2]}]},
            {"when": ["-"], "then": [0]},
        ],
    }
    assert decide(doc, qty=10, price=20) == {"discount": 20}
    assert decide(doc, qty=1, price=20) == {"discount": 0}


def test_multi_hit_results_are_lists_per_output_path() -> None:
    doc = table([("> 0", "a"), ("> 5", "b")], "collect")
    ctx: dict[str, Any] = {"data": {"x": 9}, "metadata": {}, "temp_data": {}}
    compiled = compile_table(doc)
    compiled.apply(ctx, compiled.decide(ctx)[1])
    assert ctx["data"]["out"] == ["a", "b"]


# -- write-time checks -----------------------------------------------------------------------------
def test_unique_tables_with_statically_overlapping_rows_are_refused() -> None:
    doc = {
        "hit_policy": "unique",
        "inputs": [{"name": "amount", "expression": "data.amount"}, {"name": "tier", "expression": "data.tier"}],
        "outputs": [{"name": "out"}],
        "rules": [
            {"when": ["[100..500)", "gold"], "then": [1]},
            {"when": [">= 500", "gold"], "then": [2]},  # disjoint from row 1 on amount
            {"when": ["[400..450]", "in [gold, silver]"], "then": [3]},  # overlaps row 1
            {"when": ["-", "bronze"], "then": [4]},  # disjoint on tier
            {"when": [450, "-"], "then": [5]},  # overlaps rows 1 and 3
        ],
    }
    _, errors = analyse_table(doc)
    assert [e["field"] for e in errors] == ["rules[2].when", "rules[4].when", "rules[4].when", "rules[4].when"]
    assert "overlaps rules[0]" in errors[0]["message"] and "amount: [100..500) / [400..450]" in errors[0]["message"]


def test_touching_ranges_do_not_overlap_but_closed_ends_do() -> None:
    disjoint = table([("[0..10)", 1), ("[10..20)", 2), ("< 0", 3), (">= 20", 4)], "unique")
    assert analyse_table(disjoint)[1] == []
    touching = table([("[0..10]", 1), ("[10..20)", 2)], "unique")
    assert analyse_table(touching)[1][0]["field"] == "rules[1].when"
    # negations and JSONLogic cannot be decided statically: accepted, checked at run time
    undecidable = table([("not(5)", 1), ("!= 6", 2)], "unique")
    assert analyse_table(undecidable)[1] == []


def test_write_time_errors_carry_field_paths() -> None:
    columns = {
        "hit_policy": "first",
        "inputs": [
            {"name": "x", "expression": "data.x"},
            {"name": "y"},
            {"name": "x", "expression": "data.z", "type": "date"},
        ],
        "outputs": [{"name": "o"}, {"path": "data.p"}],
        "rules": [],
    }
    _, errors = analyse_table(columns)
    assert [e["field"] for e in errors] == [
        "inputs[1].expression",
        "inputs[2].name",
        "inputs[2].type",
        "outputs[1].name",
    ]
    rows = {
        "hit_policy": "first",
        "inputs": [{"name": "x", "expression": "data.x", "type": "number"}],
        "outputs": [{"name": "o", "type": "number"}],
        "rules": [
            {"when": ["abc"], "then": ["text"]},
            {"when": ["-", "-"], "then": [1]},
            "oops",
            {"when": {"z": 1}, "then": {"o": 1}},
        ],
    }
    _, errors = analyse_table(rows)
    assert [e["field"] for e in errors] == [
        "rules[0].when[0]",
        "rules[0].then[0]",
        "rules[1].when",
        "rules[2]",
        "rules[3].when",
    ]
    assert errors[0]["message"] == "input 'x': 'abc': string value 'abc' in a number column"
    with pytest.raises(TableInvalid):
        compile_table(rows)


def test_a_workflow_with_a_bad_table_reports_the_field() -> None:
    from app.engine import validate_workflow

    report = validate_workflow(
        {
            "name": "w",
            "tasks": [
                {
                    "id": "t",
                    "name": "t",
                    "function": {"name": "decision_table", "input": table([(">= x", 1)], "unknown")},
                }
            ],
        }
    )
    assert not report["valid"]
    assert report["errors"][0]["field"] == "tasks[0].function.input.hit_policy"


# -- in a workflow ---------------------------------------------------------------------------------
def _workflow(doc: dict[str, Any]) -> Any:
    return compile_workflow(
        {
            "id": "shipping",
            "name": "shipping",
            "tasks": [
                {
                    "id": "parse",
                    "name": "parse",
                    "function": {"name": "parse_json", "input": {"source": "payload", "target": "in"}},
                },
                {"id": "rate", "name": "rate", "function": {"name": "decision_table", "input": doc}},
            ],
        }
    )


def test_decision_table_task_writes_outputs_audits_and_counts_hits() -> None:
    doc = table([("< 5", "light"), ("-", "heavy")], name="weights", expression="data.in.x")
    before = dict(rule_stats().table_hits)
    report = dry_run(_workflow(doc), {"x": 9})
    assert report["output"] == {"in": {"x": 9}, "out": "heavy"}
    assert rule_stats().table_hits[("weights", "2")] == before.get(("weights", "2"), 0) + 1


def test_unique_violation_fails_the_run_with_its_code() -> None:
    doc = table([("> 0", 1), ({">": [{"var": "value"}, 1]}, 2)], "unique", name="u", expression="data.in.x")
    report = dry_run(_workflow(doc), {"x": 5})
    assert report["error"]["code"] == "DECISION_NOT_UNIQUE" and report["error"]["status"] == 422
    assert report["errors"][0]["code"] == "TASK_ERROR"


def test_explain_records_inputs_matches_and_result() -> None:
    from app.engine import Engine

    doc = table([("< 5", "light"), ("-", "heavy")], "collect", name="weights", expression="data.in.x")
    message = Message({"x": 3})
    message.explain = []
    Engine({"c": [_workflow(doc)]}).process_sync("c", message)
    (entry,) = message.explain
    assert entry["table"] == "weights" and entry["hit_policy"] == "collect"
    assert entry["inputs"] == {"x": 3}
    assert entry["matched_rows"] == [{"row": 1}, {"row": 2}]
    assert entry["selected_rows"] == [1, 2]
    assert entry["result"] == [{"out": "light"}, {"out": "heavy"}]
    assert entry["task_id"] == "rate" and entry["elapsed_us"] >= 0


def test_rule_errors_are_quasar_errors() -> None:
    assert issubclass(DecisionNotUnique, QuasarError)


# -- CSV -------------------------------------------------------------------------------------------
SHIPPING_CSV = '''\
input:data.weight (number),input:data.region (string),output:data.rate (number),output:data.carrier,description
< 1,"in [EU, UK]",4.5,post,light parcels in Europe
[1..10),-,9.99,"""12""",
-,US,"{""*"": [{""var"": ""data.weight""}, 2]}",ups,
-,-,25,freight,everything else
'''


def test_csv_import_builds_a_table_that_runs() -> None:
    doc = table_from_csv(SHIPPING_CSV, {"name": "shipping", "hit_policy": "first"})
    assert doc["inputs"] == [
        {"name": "weight", "expression": "data.weight", "type": "number"},
        {"name": "region", "expression": "data.region", "type": "string"},
    ]
    assert doc["outputs"][1] == {"name": "carrier", "path": "data.carrier"}
    assert doc["rules"][1]["then"] == [9.99, "12"]
    assert doc["rules"][0]["description"] == "light parcels in Europe"
    compiled = compile_table(doc)
    assert compiled.decide({"data": {"weight": 0.5, "region": "UK"}})[1] == {"rate": 4.5, "carrier": "post"}
    assert compiled.decide({"data": {"weight": 20, "region": "US"}})[1] == {"rate": 40, "carrier": "ups"}
    assert compiled.decide({"data": {"weight": 20, "region": "JP"}})[1] == {"rate": 25, "carrier": "freight"}


def test_csv_round_trip_keeps_rows_and_decisions() -> None:
    doc = table_from_csv(SHIPPING_CSV, {"name": "shipping", "hit_policy": "first"})
    text = table_to_csv(doc)
    again = table_from_csv(text, {"name": "shipping", "hit_policy": "first"})
    assert again == doc
    assert table_to_csv(again) == text


def test_csv_export_of_a_json_table_quotes_ambiguous_strings() -> None:
    doc = {
        "name": "t",
        "hit_policy": "first",
        "inputs": [{"name": "x", "expression": "data.x"}, {"name": "y", "expression": {"var": "data.nested.y"}}],
        "outputs": [{"name": "o"}],
        "rules": [
            {"when": [None, [1, "a"]], "then": ["123"]},
            {"when": [5, {">": [{"var": "value"}, 1]}], "then": ["-"]},
            {"when": ["gold", True], "then": [None]},
        ],
    }
    text = table_to_csv(doc)
    again = table_from_csv(text, doc)
    assert [r["then"] for r in again["rules"]] == [["123"], ["-"], [None]]
    assert again["inputs"] == doc["inputs"]
    for data in ({"x": 5, "nested": {"y": 2}}, {"x": "gold", "nested": {"y": True}}, {"x": 0, "nested": {"y": "a"}}):
        ctx = {"data": data}
        assert compile_table(again).decide(ctx) == compile_table(doc).decide(ctx)


def test_csv_with_a_bad_header_is_refused() -> None:
    with pytest.raises(TableInvalid) as info:
        table_from_csv("weight,output:rate\n1,2\n")
    assert info.value.errors[0]["field"] == "csv.header[0]"
    with pytest.raises(TableInvalid):
        table_from_csv("")

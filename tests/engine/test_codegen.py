"""Generated workflow code (app/engine/codegen.py) answers exactly what the interpreter answers.

A differential suite: hypothesis builds random channels (workflows with conditions, priorities,
continue_on_error; map / filter / validation / parse_json tasks and functions that raise or fail) out of
random JSONLogic (every operator fastlogic covers, plus operators only datalogic knows) and random
messages, and runs each through `Engine(generated=True)` and `Engine(generated=False)` (the interpreter,
which `test_executor.py` and the rest of the engine suite pin to Orion's semantics). Responses, the whole
context (metadata.progress included), errors, audit trails (changes and statuses), exceptions and their
HTTP mapping must be identical; only timestamps may differ.
"""

from __future__ import annotations

import copy
import time
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import ChannelWorkflow, Engine, Message, RunOptions, compile_workflow
from app.engine.codegen import generate, needs_task_context
from app.engine.functions import default_registry
from app.engine.registry import FunctionSpec, SyncFunction, TaskContext
from app.errors import QuasarError
from tests.engine._support import mapping, task, workflow

# -- functions outside the inlined built-ins: raise, fail with a reason, or write through `ctx.changes` ----


class _Boom(SyncFunction):
    def run(self, message: Message, ctx: TaskContext) -> int:
        raise ValueError(f"boom in {ctx.workflow_id}/{ctx.task_id}")


class _Fail(SyncFunction):
    def run(self, message: Message, ctx: TaskContext) -> int:
        ctx.reason = "upstream said no"
        return 503


class _Stamp(SyncFunction):
    def run(self, message: Message, ctx: TaskContext) -> int:
        data = message.context["data"]
        if isinstance(data, dict):
            data["stamped"] = ctx.task_id
        ctx.changes = [("data.stamped", None, ctx.task_id)]
        return 201


def _registry() -> Any:
    registry = default_registry(entry_points=False)
    registry.register(FunctionSpec("boom", lambda _raw: _Boom()))
    registry.register(FunctionSpec("fail", lambda _raw: _Fail()))
    registry.register(FunctionSpec("stamp", lambda _raw: _Stamp()))
    return registry


REGISTRY = _registry()

# -- JSONLogic --------------------------------------------------------------------------------------------

PATHS = ["data.a", "data.b", "data.a.b", "data.list.0", "data.list.1", "metadata.progress.status_code", "x", "data"]
LITERALS = st.sampled_from(
    [None, True, False, 0, 1, -1, 0.0, -0.0, 2.5, 100, 500, 2**53 + 1, "", "a", "US", "1", "100", "abc"]
)


def _var() -> st.SearchStrategy[Any]:
    path = st.sampled_from(PATHS)
    return st.one_of(
        path.map(lambda p: {"var": p}),
        st.tuples(path, LITERALS).map(lambda t: {"var": [t[0], t[1]]}),
    )


def _rules(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        two = st.lists(inner, min_size=2, max_size=2)
        some = st.lists(inner, min_size=1, max_size=4)
        return st.one_of(
            st.tuples(st.sampled_from(["<", "<=", ">", ">="]), two).map(lambda t: {t[0]: t[1]}),
            st.tuples(st.sampled_from(["<", "<="]), st.lists(inner, min_size=3, max_size=3)).map(
                lambda t: {t[0]: t[1]}
            ),
            st.tuples(st.sampled_from(["==", "===", "!=", "!=="]), two).map(lambda t: {t[0]: t[1]}),
            st.tuples(st.sampled_from(["!", "!!"]), inner).map(lambda t: {t[0]: [t[1]]}),
            st.tuples(st.sampled_from(["and", "or"]), some).map(lambda t: {t[0]: t[1]}),
            st.tuples(st.sampled_from(["if", "?:"]), st.lists(inner, min_size=2, max_size=5)).map(
                lambda t: {t[0]: t[1]}
            ),
            st.tuples(inner, st.lists(st.sampled_from(["US", "UK", 1, 2.5, 100, "a"]), max_size=4)).map(
                lambda t: {"in": [t[0], t[1]]}
            ),
            two.map(lambda args: {"in": args}),
            some.map(lambda args: {"cat": args}),
            two.map(lambda args: {"+": args}),  # only datalogic knows these
            st.lists(inner, min_size=1, max_size=3).map(lambda args: {"max": args}),
            inner.map(lambda a: {"missing": [a]}),
        )

    return st.recursive(leaf, extend, max_leaves=6)


RULES = _rules(st.one_of(LITERALS, _var()))
# the shape of most real conditions: a var against a number, combined with and/or
CONDITIONS = st.one_of(
    RULES,
    st.tuples(st.sampled_from(["<", "<=", ">", ">="]), _var(), st.sampled_from([0, 100, 2.5, -1])).map(
        lambda t: {t[0]: [t[1], t[2]]}
    ),
    st.just(True),
)

# -- workflows and messages ---------------------------------------------------------------------------------

WRITE_PATHS = st.sampled_from(
    [
        "data",
        "metadata",
        "temp_data",
        "data.a",
        "data.b",
        "data.a.b",
        "data.a.c",
        "data.order.tier",
        "data.order.label",
        "data.order",
        "data.list.0",
        "data.list.3",
        "data.#1",
        "temp_data.x.y",
    ]
)


_MAPPINGS = st.lists(
    st.fixed_dictionaries({"path": WRITE_PATHS, "logic": st.one_of(RULES, LITERALS, st.just({"k": 1}))}),
    min_size=1,
    max_size=4,
)
_RULE_LIST = st.lists(
    st.fixed_dictionaries({"logic": RULES, "message": st.sampled_from(["bad a", "bad b"])}),
    min_size=1,
    max_size=3,
)
FUNCTIONS = st.one_of(
    _MAPPINGS.map(lambda m: {"name": "map", "input": {"mappings": m}}),
    st.tuples(CONDITIONS, st.sampled_from(["halt", "skip"])).map(
        lambda t: {"name": "filter", "input": {"condition": t[0], "on_reject": t[1]}}
    ),
    _RULE_LIST.map(lambda r: {"name": "validation", "input": {"rules": r}}),
    st.sampled_from(["payload", "payload.a", "data.a"]).map(
        lambda s: {"name": "parse_json", "input": {"source": s, "target": "a"}}
    ),
    st.sampled_from(["boom", "fail", "stamp"]).map(lambda n: {"name": n, "input": {}}),
)
TASKS = st.lists(
    st.fixed_dictionaries(
        {"function": FUNCTIONS}, optional={"condition": CONDITIONS, "continue_on_error": st.booleans()}
    ),
    min_size=1,
    max_size=5,
).map(lambda tasks: [dict(t, id=f"t{j}", name=f"t{j}") for j, t in enumerate(tasks)])
WORKFLOWS = st.fixed_dictionaries(
    {"tasks": TASKS},
    optional={"condition": CONDITIONS, "priority": st.integers(0, 3), "continue_on_error": st.booleans()},
)
CHANNELS = st.lists(WORKFLOWS, min_size=1, max_size=3).map(
    lambda wfs: [dict(w, workflow_id=f"w{i}", name=f"w{i}") for i, w in enumerate(wfs)]
)
JSON = st.recursive(
    st.one_of(LITERALS, st.sampled_from([[1, 2], {"b": 1}])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "list", "order", "amount"]), inner, max_size=4),
    ),
    max_leaves=8,
)
MESSAGES = st.tuples(
    JSON,  # payload
    st.dictionaries(st.sampled_from(["a", "b", "list", "order"]), JSON, max_size=4),  # initial data
)

# -- comparison ---------------------------------------------------------------------------------------------


def _outcome(
    engine: Engine, payload: Any, data: dict[str, Any], deadline: float | None, *, changes: bool = True
) -> dict[str, Any]:
    """What a run answers; `changes=False`: a lean run (`RunOptions.changes`), compared without the entries'
    changes (the one thing a lean run leaves out)."""
    message = Message(copy.deepcopy(payload), data=copy.deepcopy(data), id="m-1")
    raised: Any = None
    try:
        # one `processed_at` for both runs: old values in the audit trail may hold the metadata object
        with mock.patch("app.engine.executor.rfc3339", return_value="2026-01-01T00:00:00Z"):
            engine.process_sync("ch", message, RunOptions(rollout_bucket=50, deadline=deadline, changes=changes))
    except QuasarError as exc:
        raised = (type(exc).__name__, exc.status, str(exc), type(exc.__cause__).__name__, str(exc.__cause__))
    except Exception as exc:  # an error the interpreter lets through must come through identically
        raised = (type(exc).__name__, str(exc))
    doc = message.to_dict()
    for entry in doc["audit_trail"]:
        entry.pop("timestamp")
        if not changes:
            entry.pop("changes")
    for error in doc["errors"]:
        error.pop("timestamp")
    # through JSON, so 1 and 1.0 and True stay three different answers and key order counts
    return {"raised": raised, "message": orjson.dumps(doc, default=repr).decode()}


def _engines(docs: list[dict[str, Any]]) -> tuple[Engine, Engine] | None:
    try:
        workflows = [compile_workflow(doc, REGISTRY) for doc in docs]
    except Exception:
        return None  # an invalid random workflow: nothing to run
    entries = [ChannelWorkflow(wf) for wf in workflows]
    return Engine({"ch": entries}, generated=True), Engine({"ch": entries}, generated=False)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(docs=CHANNELS, message=MESSAGES, late=st.booleans())
def test_generated_code_matches_the_interpreter(
    docs: list[dict[str, Any]], message: tuple[Any, dict[str, Any]], late: bool
) -> None:
    engines = _engines(docs)
    if engines is None:
        return
    generated, interpreted = engines
    payload, data = message
    deadline = 1.0 if late else None  # an expired deadline: Timeout before the first task that runs
    assert _outcome(generated, payload, data, deadline) == _outcome(interpreted, payload, data, deadline)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(docs=CHANNELS, message=MESSAGES, late=st.booleans())
def test_lean_generated_code_matches_the_interpreter_but_for_changes(
    docs: list[dict[str, Any]], message: tuple[Any, dict[str, Any]], late: bool
) -> None:
    """Without changes (the worker's channels that do not trace per task) everything else is identical:
    data, metadata and its progress, errors, statuses, exceptions, the entries themselves."""
    engines = _engines(docs)
    if engines is None:
        return
    generated, interpreted = engines
    payload, data = message
    deadline = 1.0 if late else None
    lean = _outcome(generated, payload, data, deadline, changes=False)
    assert lean == _outcome(interpreted, payload, data, deadline, changes=False)


@settings(max_examples=200, deadline=None)
@given(rule=RULES, message=MESSAGES)
def test_generated_rules_evaluate_as_logic_does(rule: Any, message: tuple[Any, dict[str, Any]]) -> None:
    """One rule as a mapping, a filter condition and a validation rule: every value, error and test."""
    doc = workflow(
        "w",
        mapping("m", ("temp_data.r", rule)),
        task("v", "validation", {"rules": [{"logic": rule, "message": "no"}]}),
        task("f", "filter", {"condition": rule, "on_reject": "skip"}, condition=rule),
    )
    engines = _engines([doc])
    assert engines is not None
    generated, interpreted = engines
    payload, data = message
    assert _outcome(generated, payload, data, None) == _outcome(interpreted, payload, data, None)


# -- targeted cases -----------------------------------------------------------------------------------------


def _run(engine: Engine, data: dict[str, Any]) -> Message:
    message = Message(None, data=data, id="m")
    engine.process_sync("ch", message)
    return message


def test_the_generated_path_really_runs_and_skips_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = workflow("w", mapping("t", ("data.x", 1)))
    wf = compile_workflow(doc)
    engine = Engine({"ch": [wf]})

    def interpreter_called(*_args: Any) -> None:
        raise AssertionError("the interpreter ran")

    monkeypatch.setattr(Engine, "_tasks_sync", interpreter_called)
    assert _run(engine, {}).context["data"] == {"x": 1}
    assert not wf.needs_context  # inlined built-ins: no TaskContext is built


def test_a_parent_replaced_between_mappings_is_walked_again() -> None:
    doc = workflow(
        "w",
        mapping(
            "t",
            ("data.order.tier", "vip"),
            ("data.order", {"if": [True, {"fresh": 1}, None]}),
            ("data.order.label", "x"),
            ("data", {"if": [True, {"order": {"again": 1}}, None]}),
            ("data.order.tier", "gold"),
        ),
    )
    for generated in (True, False):
        message = _run(Engine({"ch": [compile_workflow(doc)]}, generated=generated), {})
        assert message.context["data"] == {"order": {"again": 1, "tier": "gold"}}


def test_a_lean_run_writes_the_same_data_and_records_entries_without_changes() -> None:
    doc = workflow(
        "w",
        mapping("m", ("data.order.tier", "vip"), ("data.order.label", {"cat": ["x-", {"var": "data.k"}]})),
        mapping("root", ("data", {"var": "data.order"})),
    )
    engine = Engine({"ch": [compile_workflow(doc)]})
    full, lean = Message(None, data={"k": "y"}, id="m"), Message(None, data={"k": "y"}, id="m")
    engine.process_sync("ch", full)
    engine.process_sync("ch", lean, RunOptions(changes=False))
    assert (
        lean.context["data"]
        == full.context["data"]
        == {
            "k": "y",
            "order": {"tier": "vip", "label": "x-y"},
            "tier": "vip",
            "label": "x-y",
        }
    )
    assert lean.context["metadata"]["progress"] == full.context["metadata"]["progress"]
    assert [(e.task_id, e.status) for e in lean.audit_trail] == [(e.task_id, e.status) for e in full.audit_trail]
    assert [len(e.changes) for e in full.audit_trail] == [2, 1]
    assert [len(e.changes) for e in lean.audit_trail] == [0, 0]


def test_a_blocked_parent_writes_nothing_and_records_the_change() -> None:
    doc = workflow("w", mapping("t", ("data.order.tier", "vip"), ("data.order.x", 1)))
    message = _run(Engine({"ch": [compile_workflow(doc)]}), {"order": "a string"})
    assert message.context["data"] == {"order": "a string"}
    assert message.audit_trail[0].changes == [("data.order.tier", None, "vip"), ("data.order.x", None, 1)]


def test_now_is_datalogics_now() -> None:
    """`now` runs in Python (fastlogic); datalogic's answer, taken within the same second, is the same."""
    import datalogic_py

    native = datalogic_py.Engine(templating=True).compile_checked({"now": []})
    doc = workflow("w", mapping("t", ("data.at", {"now": []})))
    engine = Engine({"ch": [compile_workflow(doc)]})
    while True:  # retried only when a second boundary falls between the two reads
        before = int(time.time())
        ours = _run(engine, {}).context["data"]["at"]
        theirs = native.evaluate({})
        if int(time.time()) == before:
            break
    assert ours == theirs


def test_functions_called_through_run_get_a_task_context() -> None:
    doc = workflow("w", mapping("m", ("data.a", 1)), task("s", "stamp", {}))
    wf = compile_workflow(doc, REGISTRY)
    assert needs_task_context(wf)
    message = _run(Engine({"ch": [wf]}), {})
    assert message.context["data"] == {"a": 1, "stamped": "s"}
    assert [(e.task_id, e.status, e.changes) for e in message.audit_trail] == [
        ("m", 200, [("data.a", None, 1)]),
        ("s", 201, [("data.stamped", None, "s")]),
    ]


def test_wide_rules_stay_within_pythons_nesting_limits() -> None:
    wide = {"and": [{">": [{"var": f"data.v{i}"}, i]} for i in range(300)]}
    deep: Any = {"var": "data.x"}
    for _ in range(60):
        deep = {"!": [deep]}
    doc = workflow("w", mapping("a", ("data.a", 1), condition=wide), mapping("b", ("data.b", deep)))
    wf = compile_workflow(doc)
    source, _ = generate(wf)
    assert max(len(line) - len(line.lstrip()) for line in source.splitlines()) // 4 < 60
    data = {f"v{i}": i + 1 for i in range(300)} | {"x": None}
    generated = _run(Engine({"ch": [wf]}), dict(data))
    interpreted = _run(Engine({"ch": [wf]}, generated=False), dict(data))
    assert generated.context["data"] == interpreted.context["data"]
    assert generated.context["data"]["a"] == 1


def test_dry_runs_keep_the_interpreter_with_its_steps() -> None:
    doc = workflow("w", mapping("t", ("data.a", 1)))
    opts = RunOptions(steps=[])
    message = Message(None, id="m")
    Engine({"ch": [compile_workflow(doc)]}).process_sync("ch", message, opts)
    assert opts.steps == [{"workflow_id": "w", "task_id": "t", "result": "executed", "status": 200}]


def test_a_spent_work_budget_stops_the_run_on_both_paths() -> None:
    from app.engine.budget import BudgetExceeded, WorkBudget

    doc = workflow("w", mapping("t", ("data.a", 1)))
    for generated in (True, False):
        engine = Engine({"ch": [compile_workflow(doc)]}, generated=generated)
        message = Message(None, id="m")
        with pytest.raises(BudgetExceeded, match="before task t"):
            engine.process_sync("ch", message, RunOptions(budget=WorkBudget(time_s=-1.0)))
        assert message.context["data"] == {}

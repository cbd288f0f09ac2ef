"""The worker's record pipeline without a broker: keys, headers, envelopes, metadata, failure classes, trust."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from app.channels import TracingPolicy
from app.connectors.errors import ConnectorError, UpstreamStatus
from app.engine import Engine, compile_workflow
from app.engine.functions import default_registry
from app.engine.jsonlogic import compile_logic
from app.engine.registry import AsyncFunction, FunctionSpec
from app.errors import Timeout
from app.kafka import headers as H
from app.kafka.names import TopicNames
from app.worker.pipeline import (
    MAX_PRODUCE_BYTES,
    ChannelRoute,
    Outcome,
    Pipeline,
    Record,
    WorkerView,
    routes_of,
)

NAMES = TopicNames("t.")
TOPIC = NAMES.channel("orders")
OUTPUT = NAMES.output("orders")
NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


class Calls:
    """A fake connector: counts calls per function, fails as told."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.fail: dict[str, BaseException] = {}


def _registry(calls: Calls) -> Any:
    registry = default_registry(entry_points=False)

    def spec(name: str) -> FunctionSpec:
        class Fake(AsyncFunction):
            def __init__(self, _input: Mapping[str, Any]) -> None:
                pass

            async def arun(self, message: Any, ctx: Any) -> int:
                calls.count[name] = calls.count.get(name, 0) + 1
                if name in calls.fail:
                    raise calls.fail[name]
                message.context["data"][name] = "done"
                return 200

        return FunctionSpec(name, Fake, side_effects=True)

    for name in ("charge", "status"):
        registry.register(spec(name))
    return registry


def _task(task_id: str, function: str, inp: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"id": task_id, "name": task_id, "function": {"name": function, "input": dict(inp or {})}}


MAP = _task("copy", "parse_json", {"source": "payload", "target": "got"})
TRACE_ALL = TracingPolicy("all", explicit=True)  # `tracing: all` set on the channel


def _view(
    tasks: list[dict[str, Any]],
    *,
    calls: Calls | None = None,
    envelope: str = "raw",
    key_logic: Any = None,
    validation: Any = None,
    channel_type: str = "async",
) -> WorkerView:
    registry = _registry(calls or Calls())
    wf = compile_workflow({"id": "wf", "name": "wf", "condition": True, "tasks": tasks}, registry)
    route = ChannelRoute(
        "orders",
        TOPIC,
        channel_type == "async",
        OUTPUT if channel_type == "async" else None,
        None,
        None,
        envelope,
        compile_logic(key_logic) if key_logic is not None else None,
        compile_logic(validation) if validation is not None else None,
        ingested_tracing=TRACE_ALL,  # these tests read the trace of records produced straight to the topic
    )
    return WorkerView({TOPIC: route}, Engine({"orders": [wf]}, registry), {NAMES.replies: 4})


def _pipeline(**kwargs: Any) -> Pipeline:
    return Pipeline(NAMES, max_record_bytes=1_000_000, max_result_bytes=1_000_000, retry_backoff_s=0.01, **kwargs)


def _record(value: Any, *, key: bytes | None = b"cust-A", headers: dict[str, str] | None = None) -> Record:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    hdrs = [(k, v.encode()) for k, v in (headers or {}).items()]
    return Record(TOPIC, raw, key, hdrs or None, partition_=3, offset_=41, timestamp_ms=int(NOW * 1000) - 5)


def _by_topic(outcome: Outcome) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r for r in outcome.records}


def _headers(record: tuple[Any, ...]) -> dict[str, str]:
    return H.header_map(record[3])


async def test_raw_record_is_the_payload_and_output_keeps_the_input_key() -> None:
    out = await _pipeline().handle(_record({"order_id": "K-1", "amount": 12}), _view([MAP]), clock)
    assert out.status == "ok"
    records = _by_topic(out)
    _topic, value, key, _hdrs, _partition = records[OUTPUT]
    assert key == b"cust-A"
    assert orjson.loads(value)["data"]["got"] == {"order_id": "K-1", "amount": 12}
    assert records[NAMES.traces][2] != b"cust-A"  # traces are keyed by trace id


async def test_every_message_gets_its_kafka_coordinates_and_no_client_internal_fields() -> None:
    task = _task("meta", "map", {"mappings": [{"path": "data.meta", "logic": {"var": "metadata"}}]})
    value = {"data": {}, "metadata": {"_quasar_call_chain": ["x"] * 10, "kafka_offset": 999, "mine": 1}}
    out = await _pipeline().handle(_record(value), _view([task], envelope="quasar"), clock)
    meta = orjson.loads(_by_topic(out)[OUTPUT][1])["data"]["meta"]
    assert meta["kafka_topic"] == TOPIC and meta["kafka_partition"] == 3 and meta["kafka_offset"] == 41
    assert meta["kafka_key"] == "cust-A" and meta["mine"] == 1
    assert "_quasar_call_chain" not in meta


async def test_quasar_envelope_without_data_is_dead_lettered() -> None:
    out = await _pipeline().handle(_record({"order_id": 1}), _view([MAP], envelope="quasar"), clock)
    assert out.status == "dlq"
    assert _headers(_by_topic(out)[NAMES.dlq])[H.DLQ_ERROR_CODE] == "INVALID_ENVELOPE"


async def test_key_logic_chooses_the_output_key() -> None:
    view = _view([MAP], key_logic={"var": "data.got.order_id"})
    out = await _pipeline().handle(_record({"order_id": "K-9"}), view, clock)
    assert _by_topic(out)[OUTPUT][2] == "K-9"


async def test_application_headers_travel_to_output_reply_and_trace_but_control_headers_do_not() -> None:
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        H.REQUEST_ID: "req-1",
        "tenant": "acme",
        H.REPLY_TO: f"{NAMES.replies}:2",
        H.CORRELATION_ID: "c-1",
        H.MODE: "sync",
    }
    out = await _pipeline().handle(_record({"a": 1}, headers=headers), _view([MAP]), clock)
    records = _by_topic(out)
    for topic in (OUTPUT, NAMES.replies, NAMES.traces):
        hm = _headers(records[topic])
        assert hm["traceparent"] == headers["traceparent"] and hm[H.REQUEST_ID] == "req-1"
        assert hm["tenant"] == "acme"
        assert H.REPLY_TO not in hm and H.MODE not in hm and H.CORRELATION_ID not in hm
    reply = records[NAMES.replies]
    assert reply[2] == "c-1" and reply[4] == 2 and _headers(reply)[H.STATUS] == "200"


async def test_oversized_headers_are_dropped_with_a_header_saying_so() -> None:
    headers = {"big": "x" * 100_000, "small": "y"}
    out = await _pipeline().handle(_record({"a": 1}, headers=headers), _view([MAP]), clock)
    hm = _headers(_by_topic(out)[OUTPUT])
    assert "big" not in hm and hm["small"] == "y" and hm[H.HEADERS_DROPPED] == "1"


@pytest.mark.parametrize(
    "reply_to",
    ["t.config:0", "t.ch.other:0", f"{NAMES.replies}:99", "nonsense", f"{NAMES.replies}:-1"],
)
async def test_reply_to_outside_the_reply_topics_is_refused_and_nothing_is_written_there(reply_to: str) -> None:
    headers = {H.REPLY_TO: reply_to, H.CORRELATION_ID: "c"}
    calls = Calls()
    out = await _pipeline().handle(_record({"a": 1}, headers=headers), _view([MAP], calls=calls), clock)
    assert out.status == "dlq"
    assert {r[0] for r in out.records} == {NAMES.dlq, NAMES.traces}
    assert _headers(_by_topic(out)[NAMES.dlq])[H.DLQ_ERROR_CODE] == "REPLY_TO_REFUSED"


async def test_validation_logic_runs_on_kafka_records_too() -> None:
    view = _view([MAP], validation={">": [{"var": "data.amount"}, 0]})  # Orion: `data` is the payload here
    ok = await _pipeline().handle(_record({"amount": 5}), view, clock)
    refused = await _pipeline().handle(_record({"amount": -5}), view, clock)
    assert ok.status == "ok" and refused.status == "dlq"
    assert _headers(_by_topic(refused)[NAMES.dlq])[H.DLQ_ERROR_CODE] == "VALIDATION_ERROR"


async def test_control_headers_do_not_switch_off_validation() -> None:
    view = _view([MAP], validation={">": [{"var": "data.amount"}, 0]})  # Orion: `data` is the payload here
    out = await _pipeline().handle(_record({"amount": -5}, headers={H.MODE: "async"}), view, clock)
    assert out.status == "dlq"


async def test_engine_error_is_dead_lettered_at_once_with_task_function_and_inner_message() -> None:
    boom = _task("y", "map", {"mappings": [{"path": "data.y", "logic": {"throw": "boom"}}]})
    out = await _pipeline().handle(_record({"a": 1}), _view([MAP, boom]), clock)
    assert out.status == "dlq"
    hm = _headers(_by_topic(out)[NAMES.dlq])
    assert hm[H.DLQ_ERROR_CODE] == "ENGINE_ERROR" and hm[H.DLQ_TASK_ID] == "y"
    assert hm[H.DLQ_CLASS_NAME] == "map" and "boom" in hm[H.DLQ_ERROR_MESSAGE]
    assert hm[H.DLQ_CONNECTOR_NAME] == "orders" and hm[H.DLQ_STAGE] == "TASK_PUT"
    assert hm[H.DLQ_ORIGINAL_TOPIC] == TOPIC and hm[H.DLQ_ORIGINAL_OFFSET] == "41"
    assert hm[H.DLQ_FIRST_FAILED_AT] == str(int(NOW * 1000)) and hm[H.DLQ_ATTEMPTS] == "1"
    trace = orjson.loads(_by_topic(out)[NAMES.traces][1])
    assert trace["status"] == "failed" and trace["error"]["task_id"] == "y" and "boom" in trace["error"]["cause"]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectorError("connection refused"), True),
        (UpstreamStatus("c", 503), True),
        (UpstreamStatus("c", 429), True),
        (UpstreamStatus("c", 400), False),
        (Timeout("took too long"), False),
    ],
)
async def test_only_transient_failures_are_retried(error: BaseException, retried: bool) -> None:
    calls = Calls()
    calls.fail["status"] = error
    out = await _pipeline().handle(_record({}), _view([_task("s", "status")], calls=calls), clock)
    assert (out.status == "retry") is retried
    if retried:
        assert out.retry_in > 0 and out.records == []


async def test_no_record_retry_after_a_side_effect_completed() -> None:
    calls = Calls()
    calls.fail["status"] = UpstreamStatus("status", 500)
    view = _view([_task("charge", "charge"), _task("status", "status")], calls=calls)
    out = await _pipeline().handle(_record({}), view, clock)
    assert out.status == "dlq" and calls.count == {"charge": 1, "status": 1}
    assert "not retried: task 'charge' already completed" in _headers(_by_topic(out)[NAMES.dlq])[H.DLQ_ERROR_MESSAGE]


async def test_attempts_are_bounded_and_the_first_failure_time_is_kept() -> None:
    calls = Calls()
    calls.fail["status"] = ConnectorError("down")
    view = _view([_task("s", "status")], calls=calls)
    pipeline = _pipeline(max_attempts=3)
    first = await pipeline.handle(_record({}), view, clock, attempt=1)
    assert first.status == "retry"
    later = NOW + 60
    last = await pipeline.handle(_record({}), view, lambda: later, attempt=3, first_failed_ms=first.first_failed_ms)
    hm = _headers(_by_topic(last)[NAMES.dlq])
    assert last.status == "dlq" and hm[H.DLQ_ATTEMPTS] == "3"
    assert hm[H.DLQ_FIRST_FAILED_AT] == str(int(NOW * 1000))


async def test_expired_record_is_traced_not_run() -> None:
    calls = Calls()
    past = str(int(NOW * 1000) - 1)
    out = await _pipeline().handle(
        _record({}, headers={H.DEADLINE: past}), _view([_task("c", "charge")], calls=calls), clock
    )
    assert out.status == "expired" and calls.count == {}
    assert [r[0] for r in out.records] == [NAMES.traces]


async def test_dead_letter_of_an_oversized_record_drops_the_value_and_bounds_headers() -> None:
    headers = {f"h{i}": "v" * 8000 for i in range(200)}  # ~1.6 MB of headers
    big = b'"' + b"x" * 980_000 + b'"'
    budget = 990_000  # QUASAR_MAX_RECORD_BYTES
    out = await _pipeline(max_produce_bytes=budget).handle(_record(big, headers=headers), _view([MAP]), clock)
    (dlq,) = [r for r in out.records if r[0] == NAMES.dlq]
    assert dlq[1] is None and _headers(dlq)[H.DLQ_VALUE_DROPPED] == str(len(big))
    for topic, value, key, hdrs, _ in out.records:
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in hdrs or [])
        assert size <= budget, topic


async def test_huge_client_call_chain_cannot_blow_up_the_error_reply() -> None:
    # issue 14 item 1: the chain came from client metadata and the error repeated it untruncated
    value = {"data": {}, "metadata": {"_quasar_call_chain": [""] * 300_000}}
    headers = {H.REPLY_TO: f"{NAMES.replies}:0", H.CORRELATION_ID: "c"}
    boom = _task("y", "map", {"mappings": [{"path": "data.y", "logic": {"throw": "x" * 2_000_000}}]})
    out = await _pipeline().handle(_record(value, headers=headers), _view([boom], envelope="quasar"), clock)
    assert out.status == "dlq"
    for _topic, value_, _key, hdrs, _ in out.records:
        assert len(value_ or b"") + sum(len(k) + len(v or b"") for k, v in hdrs or []) <= MAX_PRODUCE_BYTES


# Text that `str.isdigit()` accepts but `int()` refuses ('²', more than 4,300 digits), and other near-numbers.
_NOT_NUMBERS = ["²", "³", "1²", "9" * 5000, "٣", "-1", " 1", "1e3", ""]


@pytest.mark.parametrize("text", _NOT_NUMBERS)
@pytest.mark.parametrize("header", [H.DEADLINE, H.REPLY_TO, H.DLQ_FIRST_FAILED_AT, H.ATTEMPT])
async def test_numeric_headers_that_are_not_ascii_numbers_never_make_the_pipeline_raise(header: str, text: str) -> None:
    # Review finding: '²' passed isdigit() and int() raised, out of `handle`: the worker crash-looped.
    value = f"{NAMES.replies}:{text}" if header == H.REPLY_TO else text
    headers = {header: value, H.CORRELATION_ID: "c"}
    fails = _task("t", "map", {"mappings": [{"path": "data.y", "logic": {"throw": "boom"}}]})
    for tasks in ([MAP], [fails]):
        out = await _pipeline().handle(_record({}, headers=headers), _view(tasks), clock)
        assert out.status in ("ok", "dlq"), out.status
        if header in (H.DEADLINE, H.REPLY_TO):  # a malformed control header refuses the record
            assert out.status == "dlq"


async def test_a_pipeline_bug_still_dead_letters_the_record_with_nothing_from_it_but_its_value() -> None:
    record = _record({"a": 1}, headers={"x-app": "v"})
    out = _pipeline().last_resort(record, RuntimeError("bug"), "orders")
    ((topic, value, key, headers, _),) = out.records
    hm = H.header_map(headers)
    assert (topic, value, key, out.status, out.channel) == (NAMES.dlq, record.value(), b"cust-A", "dlq", "orders")
    assert hm[H.DLQ_ERROR_CODE] == "INTERNAL_ERROR" and "RuntimeError" in hm[H.DLQ_ERROR_MESSAGE]
    assert (hm[H.DLQ_ORIGINAL_PARTITION], hm[H.DLQ_ORIGINAL_OFFSET]) == ("3", "41") and "x-app" not in hm


async def test_unknown_topic_is_dead_lettered() -> None:
    record = Record("t.ch.gone", b"{}", b"k")
    out = await _pipeline().handle(record, _view([MAP]), clock)
    assert out.status == "dlq" and _headers(_by_topic(out)[NAMES.dlq])[H.DLQ_ERROR_CODE] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("tracing", "gateway", "traced_ok", "traced_failed"),
    [
        (None, False, False, True),  # no setting, produced straight to the topic: failures (dead letters) only
        (None, True, True, True),  # no setting, produced by the gateway: the async HTTP caller polls its trace
        ("all", False, True, True),  # an explicit setting applies to Kafka-ingested records as well
        ("all", True, True, True),
        ({"per_task": True}, False, True, True),  # any `tracing` object is explicit (its policy: all)
        ("errors", False, False, True),
        ("errors", True, False, True),
        ("off", False, False, False),
        ("off", True, False, False),
        ("sample:0", False, False, True),
        ("sample:1", False, True, True),
    ],
)
async def test_the_channel_tracing_policy_decides_which_records_get_a_trace(
    tracing: Any, gateway: bool, traced_ok: bool, traced_failed: bool
) -> None:
    config = {"tracing": tracing} if tracing is not None else {}
    sent = {H.MODE: "async"} if gateway else {}
    ok = await _pipeline().handle(_record({"a": 1}, headers=sent), _with_config(config), clock)
    failed = await _pipeline().handle(_record({"a": 1}, headers=sent), _with_config(config, failing=True), clock)
    assert (ok.status, failed.status) == ("ok", "dlq")
    assert OUTPUT in _by_topic(ok) and NAMES.dlq in _by_topic(failed)  # the work itself is not affected
    assert (NAMES.traces in _by_topic(ok), NAMES.traces in _by_topic(failed)) == (traced_ok, traced_failed)


async def test_by_default_a_replayed_dead_letter_is_traced_when_it_succeeds() -> None:
    """`quasar dlq replay` sets `quasar-attempt`: the success replaces the failed trace of the same id."""
    replayed = _record({"a": 1}, headers={H.ATTEMPT: "2", H.REQUEST_ID: "r-1"})
    out = await _pipeline().handle(replayed, _with_config({}), clock)
    assert out.status == "ok"
    trace = _by_topic(out)[NAMES.traces]
    assert trace[2] == "r-1" and orjson.loads(trace[1])["status"] == "completed"


async def test_by_default_an_expired_kafka_ingested_record_is_still_traced() -> None:
    """A record whose deadline passed is a failure: traced under the default like a dead letter."""
    expired = _record({"a": 1}, headers={H.DEADLINE: str(int(NOW * 1000) - 1)})
    out = await _pipeline().handle(expired, _with_config({}), clock)
    assert out.status == "expired"
    assert orjson.loads(_by_topic(out)[NAMES.traces][1])["status"] == "failed"


# -- the channel's `headers` setting decides what input headers travel (drop list / allow-list) --------
_SENT = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    H.REQUEST_ID: "req-1",
    "Tenant": "acme",  # Kafka header names keep their case; the setting compares them lower-cased
    "x-debug": "1",
    "Authorization": "Bearer s3cret",  # a credential: never copied unless the channel keeps it
    H.REPLY_TO: f"{NAMES.replies}:2",
    H.CORRELATION_ID: "c-1",
}


def _with_config(config: dict[str, Any], *, failing: bool = False) -> WorkerView:
    """The test view whose route comes from a compiled channel, through the worker's own `routes_of`."""
    from types import SimpleNamespace

    from app.channels.compile import compile_channel

    doc: dict[str, Any] = {"name": "orders", "channel_type": "async", "protocol": "kafka", "workflow_id": "wf"}
    if config:
        doc["config"] = config
    compiled = compile_channel("orders", doc, NAMES)
    view = _view(
        [_task("boom", "map", {"mappings": [{"path": "data.x", "logic": {"throw": "boom"}}]})] if failing else [MAP]
    )
    snapshot = SimpleNamespace(channels={"orders": SimpleNamespace(channel=compiled, active_since_ms=0)})
    (route,) = routes_of(snapshot, NAMES).values()  # type: ignore[arg-type]
    return WorkerView({TOPIC: route}, view.engine, view.reply_topics)


async def _every_kind(headers: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """Headers of the output, reply, trace (of a success) and DLQ, error reply and trace (of a failure)."""
    # `tracing: all`: the success trace of a Kafka-ingested record is one of the kinds checked here.
    config: dict[str, Any] = {"tracing": "all"} if headers is None else {"tracing": "all", "headers": headers}
    ok = await _pipeline().handle(_record({"a": 1}, headers=_SENT), _with_config(config), clock)
    bad = await _pipeline().handle(_record({"a": 1}, headers=_SENT), _with_config(config, failing=True), clock)
    assert (ok.status, bad.status) == ("ok", "dlq")
    done, failed = _by_topic(ok), _by_topic(bad)
    return {
        "output": _headers(done[OUTPUT]),
        "reply": _headers(done[NAMES.replies]),
        "trace": _headers(done[NAMES.traces]),
        "dlq": _headers(failed[NAMES.dlq]),
        "error reply": _headers(failed[NAMES.replies]),
        "failed trace": _headers(failed[NAMES.traces]),
    }


async def test_by_default_every_application_header_travels_to_every_record_kind_but_credentials_do_not() -> None:
    for kind, hm in (await _every_kind(None)).items():
        assert hm["traceparent"] == _SENT["traceparent"] and hm[H.REQUEST_ID] == "req-1", kind
        assert hm["Tenant"] == "acme" and hm["x-debug"] == "1", kind
        assert "Authorization" not in hm, kind
        assert (H.REPLY_TO in hm) == (kind == "dlq"), kind  # a dead letter keeps control headers for replay


async def test_a_drop_list_removes_a_header_from_every_record_kind() -> None:
    kinds = await _every_kind({"drop": ["X-Debug", "tenant"]})
    for kind, hm in kinds.items():
        assert "x-debug" not in hm and "Tenant" not in hm, kind
        assert hm["traceparent"] == _SENT["traceparent"] and hm[H.REQUEST_ID] == "req-1", kind
    assert kinds["dlq"][H.REPLY_TO] == _SENT[H.REPLY_TO]  # control headers are not the setting's business
    assert kinds["output"][H.CHANNEL] == "orders" and kinds["reply"][H.STATUS] == "200"


async def test_an_allow_list_keeps_only_the_named_headers() -> None:
    kinds = await _every_kind({"propagate": ["traceparent", "TENANT", "authorization"]})
    for kind, hm in kinds.items():
        carried = {k for k in hm if k in _SENT and k not in (H.REPLY_TO, H.CORRELATION_ID)}
        assert carried == {"traceparent", "Tenant"}, kind  # a credential needs keep_credentials too
    assert H.TRACE_ID in kinds["output"] and H.STATUS in kinds["error reply"]  # Quasar's own headers stay


async def test_propagate_none_carries_no_input_header_and_keep_credentials_lets_one_through() -> None:
    for kind, hm in (await _every_kind({"propagate": "none"})).items():
        assert not {k for k in hm if k in _SENT and k not in (H.REPLY_TO, H.CORRELATION_ID)}, kind
    for kind, hm in (await _every_kind({"keep_credentials": ["authorization"]})).items():
        assert hm["Authorization"] == "Bearer s3cret", kind


@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"drop": ["x-debug"]},
        {"propagate": "none"},
        {"propagate": ["traceparent", "x-debug", "cookie"], "drop": ["x-debug"]},
        {"secret": ["x-debug"], "keep_credentials": ["cookie"]},
    ],
)
def test_the_precomputed_filter_agrees_with_the_compiled_policy(setting: dict[str, Any]) -> None:
    from app.channels.compile import compile_channel
    from app.worker.pipeline import HeaderFilter, propagated_headers

    doc = {
        "name": "orders",
        "channel_type": "async",
        "protocol": "kafka",
        "workflow_id": "wf",
        "config": {"headers": setting},
    }
    policy = compile_channel("orders", doc, NAMES).headers
    check = HeaderFilter.of(policy)
    for name in ("traceparent", "X-Debug", "x-debug", "Cookie", "authorization", "tenant", H.REQUEST_ID):
        assert bool(propagated_headers([(name, b"v")], allow=check)) == policy.propagates(name), name

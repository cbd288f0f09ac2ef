"""Schema Registry channels on the real broker and a registry over HTTP (tests/fixtures/schema_registry.py, or
QUASAR_TEST_SCHEMA_REGISTRY_URL for a real one).

Records are produced with confluent_kafka's own serializers, the worker decodes them, runs the workflow and
writes its outputs in the Confluent wire format; confluent_kafka's deserializers read them back.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

from app.kafka import headers as H
from app.kafka.broker import free_port
from app.settings import Settings
from tests.fixtures.schema_registry import LocalRegistry
from tests.runtime.worker_support import Runtime, dlq_headers, read_records

pytestmark = pytest.mark.timeout(240)

ORDER_IN = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "double"}],
}
ORDER_OUT = {
    "type": "record",
    "name": "PricedOrder",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "total", "type": "double"},
        {"name": "status", "type": "string"},
    ],
}
JSON_IN = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["id", "amount"],
}
JSON_OUT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "amount": {"type": "number"},
        "total": {"type": "number"},
        "status": {"type": "string"},
    },
    "required": ["id", "total", "status"],
}
PRICE = {  # the decoded record is the payload: parse it into data.in, then id, amount, total (x1.2), status
    "name": "price",
    "condition": True,
    "tasks": [
        {
            "id": "parse",
            "name": "Parse",
            "function": {"name": "parse_json", "input": {"source": "payload", "target": "in"}},
        },
        {
            "id": "price",
            "name": "Price",
            "function": {
                "name": "map",
                "input": {
                    "mappings": [
                        {"path": "data.id", "logic": {"var": "data.in.id"}},
                        {"path": "data.amount", "logic": {"var": "data.in.amount"}},
                        {"path": "data.total", "logic": {"*": [{"var": "data.in.amount"}, 1.2]}},
                        {"path": "data.status", "logic": "priced"},
                    ]
                },
            },
        },
    ],
}


def _proto_class(file: str, name: str, fields: list[tuple[str, int]]) -> Any:
    """A message class built at run time (no generated code), as a producer's generated class would be."""
    fdp = descriptor_pb2.FileDescriptorProto(name=file, package="shop", syntax="proto3")
    message = fdp.message_type.add(name=name)
    for number, (field, kind) in enumerate(fields, start=1):
        message.field.add(
            name=field, number=number, type=kind, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return GetMessageClass(pool.FindMessageTypeByName(f"shop.{name}"))


_STRING, _DOUBLE = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE


@pytest.fixture
async def rt(settings: Settings, schema_registry_url: str) -> AsyncIterator[Runtime]:
    runtime = Runtime(
        settings.model_copy(
            update={
                "worker_retry_backoff_ms": 10,
                "worker_max_attempts": 3,
                "schema_registry_url": schema_registry_url,
            }
        )
    )
    await runtime.reader.ready(20)
    yield runtime
    await runtime.close()


def _ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def _send(rt: Runtime, channel: str, value: bytes, key: str, trace: str | None = None) -> None:
    rt.send(channel, value, key=key, headers={H.TRACE_ID: trace} if trace else None)


async def test_avro_records_round_trip_through_the_registry(rt: Runtime, schema_registry_url: str) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("prices"), rt.names.output("prices")
    out_id = sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(ORDER_OUT).decode(), "AVRO"))
    await rt.activate("prices", PRICE, envelope=None, config={"value_format": "avro_registry"})
    await rt.worker()
    serialize = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())  # registers <topic>-value, as producers do
    sent = [{"id": f"o-{i}", "amount": 10.0 * (i + 1)} for i in range(3)]
    for order in sent:
        _send(rt, "prices", serialize(order, _ctx(in_topic)), key=order["id"])
    outs = await asyncio.to_thread(rt.outputs, "prices", 3)
    deserialize = AvroDeserializer(sr)
    got = {m.key().decode(): (deserialize(m.value(), _ctx(out_topic)), m.value()) for m in outs}
    for order in sent:
        value, raw = got[order["id"]]  # keys kept
        assert value == {**order, "total": pytest.approx(order["amount"] * 1.2), "status": "priced"}
        assert raw[0] == 0 and int.from_bytes(raw[1:5], "big") == out_id  # wire format, the subject's schema


async def test_json_schema_records_round_trip_through_the_registry(rt: Runtime, schema_registry_url: str) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("jprices"), rt.names.output("jprices")
    out_id = sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(JSON_OUT).decode(), "JSON"))
    await rt.activate("jprices", PRICE, envelope=None, config={"value_format": "json_schema_registry"})
    await rt.worker()
    serialize = JSONSerializer(orjson.dumps(JSON_IN).decode(), sr)
    for i in range(2):
        _send(rt, "jprices", serialize({"id": f"j-{i}", "amount": 5 + i}, _ctx(in_topic)), key=f"j-{i}")
    frame = serialize({"id": "f", "amount": 1}, _ctx(in_topic))[:5]  # magic byte + the input schema's id
    deep = '{"id": "deep", "amount": 1, "deep": ' + '{"d": ' * 300 + "1" + "}" * 301  # extra properties are allowed
    _send(rt, "jprices", frame + deep.encode(), key="deep", trace="deep")  # valid, but too deep for a JSON reply
    _send(rt, "jprices", frame + b'{"id": "no-amount"}', key="invalid", trace="invalid")
    _send(rt, "jprices", frame + b'{"id": ', key="broken", trace="broken")
    outs = await asyncio.to_thread(rt.outputs, "jprices", 2)
    dead = {dlq_headers(d)[H.TRACE_ID]: dlq_headers(d) for d in await asyncio.to_thread(rt.dlq, 3)}
    for trace, text in (
        ("deep", "nests deeper than"),
        ("invalid", "'amount' is a required property"),
        ("broken", "not JSON"),
    ):
        hm = dead[trace]
        assert hm[H.DLQ_ERROR_CODE] == "SCHEMA_MISMATCH" and text in hm[H.DLQ_ERROR_MESSAGE], hm
    deserialize = JSONDeserializer(orjson.dumps(JSON_OUT).decode(), schema_registry_client=sr)
    for m in outs:
        i = int(m.key().decode().split("-")[1])
        decoded = deserialize(m.value(), _ctx(out_topic))
        assert decoded.pop("in") == {"id": f"j-{i}", "amount": 5 + i}  # JSON Schema allows more properties
        assert decoded == {
            "id": f"j-{i}",
            "amount": 5 + i,
            "total": pytest.approx((5 + i) * 1.2),
            "status": "priced",
        }
        assert m.value()[0] == 0 and int.from_bytes(m.value()[1:5], "big") == out_id


async def test_bad_wire_format_unknown_ids_and_mismatches_are_dead_lettered(
    rt: Runtime, schema_registry_url: str
) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("strict"), rt.names.output("strict")
    sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(ORDER_OUT).decode(), "AVRO"))
    in_id = sr.register_schema(f"{in_topic}-value", Schema(orjson.dumps(ORDER_IN).decode(), "AVRO"))
    await rt.activate("strict", PRICE, envelope=None, config={"value_format": "avro_registry"})
    await rt.worker()
    good = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())({"id": "ok", "amount": 1.0}, _ctx(in_topic))
    cases = {
        "magic": (b"\x01" + good[1:], "WIRE_FORMAT_INVALID", "magic byte 1"),
        "json": (b'{"id": "x", "amount": 1}', "WIRE_FORMAT_INVALID", "magic byte 123"),
        "short": (b"\x00\x00\x00", "WIRE_FORMAT_INVALID", "3 bytes"),
        "unknown": (b"\x00" + (in_id + 10_000).to_bytes(4, "big") + good[5:], "SCHEMA_NOT_FOUND", "schema id"),
        "garbage": (b"\x00" + in_id.to_bytes(4, "big") + b"\x02", "SCHEMA_MISMATCH", f"schema id {in_id}"),
        "trailing": (good + b"\x00\x00", "SCHEMA_MISMATCH", "2 trailing bytes"),
    }
    for name, (value, _code, _text) in cases.items():
        _send(rt, "strict", value, key=name, trace=name)
    _send(rt, "strict", good, key="ok")
    dead = await asyncio.to_thread(rt.dlq, len(cases))
    by_trace = {dlq_headers(d)[H.TRACE_ID]: d for d in dead}
    for name, (value, code, text) in cases.items():
        hm = dlq_headers(by_trace[name])
        assert hm[H.DLQ_ERROR_CODE] == code and text in hm[H.DLQ_ERROR_MESSAGE], (name, hm)
        assert hm[H.DLQ_ATTEMPTS] == "1"  # deterministic: never retried
        assert by_trace[name].value() == value and by_trace[name].key() == name.encode()  # nothing lost
    (out,) = await asyncio.to_thread(rt.outputs, "strict", 1)  # the good record still went through
    assert AvroDeserializer(sr)(out.value(), _ctx(out_topic))["id"] == "ok"


async def test_output_without_a_registered_schema_is_dead_lettered(rt: Runtime, schema_registry_url: str) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic = rt.names.channel("unregistered")
    await rt.activate("unregistered", PRICE, envelope=None, config={"value_format": "avro_registry"})
    await rt.worker()
    value = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())({"id": "u", "amount": 2.0}, _ctx(in_topic))
    _send(rt, "unregistered", value, key="u", trace="u")
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.DLQ_ERROR_CODE] == "SCHEMA_NOT_FOUND" and rt.names.output("unregistered") in hm[H.DLQ_ERROR_MESSAGE]
    assert dead.value() == value


async def test_result_that_does_not_fit_the_output_schema_is_dead_lettered(
    rt: Runtime, schema_registry_url: str
) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("misfit"), rt.names.output("misfit")
    narrow = {**JSON_OUT, "properties": {**JSON_OUT["properties"], "total": {"type": "number", "maximum": 10}}}
    sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(narrow).decode(), "JSON"))
    await rt.activate("misfit", PRICE, envelope=None, config={"value_format": "json_schema_registry"})
    await rt.worker()
    serialize = JSONSerializer(orjson.dumps(JSON_IN).decode(), sr)
    _send(rt, "misfit", serialize({"id": "big", "amount": 100}, _ctx(in_topic)), key="big", trace="big")
    _send(rt, "misfit", serialize({"id": "small", "amount": 1}, _ctx(in_topic)), key="small", trace="small")
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.TRACE_ID] == "big" and hm[H.DLQ_ERROR_CODE] == "SCHEMA_MISMATCH"
    assert "maximum" in hm[H.DLQ_ERROR_MESSAGE]
    (out,) = await asyncio.to_thread(rt.outputs, "misfit", 1)
    assert out.key() == b"small"


async def test_auto_registered_output_schema_under_the_record_subject(rt: Runtime, schema_registry_url: str) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("autoreg"), rt.names.output("autoreg")
    name = f"shop.Priced{uuid.uuid4().hex[:8]}"
    out_schema: dict[str, Any] = {**ORDER_OUT, "name": name.split(".")[1]}
    registry = {"subject_name_strategy": "record", "output_schema": out_schema, "auto_register": True}
    await rt.activate(
        "autoreg", PRICE, envelope=None, config={"value_format": "avro_registry", "schema_registry": registry}
    )
    await rt.worker()
    value = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())({"id": "a", "amount": 3.0}, _ctx(in_topic))
    _send(rt, "autoreg", value, key="a")
    (out,) = await asyncio.to_thread(rt.outputs, "autoreg", 1)
    registered = sr.get_latest_version(name)  # the record strategy's subject: the record's full name
    assert int.from_bytes(out.value()[1:5], "big") == registered.schema_id
    assert AvroDeserializer(sr)(out.value(), _ctx(out_topic)) == {
        "id": "a",
        "amount": 3.0,
        "total": pytest.approx(3.6),
        "status": "priced",
    }


async def test_registry_down_is_retried_then_dead_lettered_without_stalling_other_channels(
    rt: Runtime, schema_registry_url: str
) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    await rt.activate(
        "down", PRICE, envelope=None, config={"value_format": "avro_registry", "schema_registry": {"url": dead_url}}
    )
    patient = {"retry": {"max_attempts": 5, "backoff_ms": 5, "max_backoff_ms": 20}}
    await rt.activate(
        "patient",
        PRICE,
        envelope=None,
        config={"value_format": "avro_registry", "schema_registry": {"url": dead_url}, "retry": patient["retry"]},
    )
    await rt.activate("plain", PRICE, envelope=None)
    await rt.worker()
    value = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())(
        {"id": "d", "amount": 1.0}, _ctx(rt.names.channel("down"))
    )
    for i in range(3):
        _send(rt, "down", value, key=f"d-{i}", trace=f"d-{i}")
    _send(rt, "patient", value, key="p", trace="patient")  # the channel's own retry setting
    for i in range(5):
        rt.send("plain", {"id": f"p-{i}", "amount": i}, key=f"p-{i}")
    outs = await asyncio.to_thread(rt.outputs, "plain", 5)  # the other channel kept going
    assert sorted(m.key() for m in outs) == [f"p-{i}".encode() for i in range(5)]
    dead = await asyncio.to_thread(rt.dlq, 4)
    for d in dead:
        hm = dlq_headers(d)
        assert hm[H.DLQ_ERROR_CODE] == "SCHEMA_REGISTRY_UNAVAILABLE", hm
        # transient: retried with backoff first, as often as the worker (3) or the channel (5) says
        assert hm[H.DLQ_ATTEMPTS] == ("5" if hm[H.TRACE_ID] == "patient" else "3")
        assert "127.0.0.1" in hm[H.DLQ_ERROR_MESSAGE]
        assert d.value() == value


def test_credentials_resolve_from_env_and_a_channel_registry_never_gets_the_global_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.channels import RegistryPolicy
    from app.worker.registry import SchemaRegistry, SchemaRegistryRefused

    monkeypatch.setenv("SR_AUTH", "key:secret")
    settings = Settings(schema_registry_url="https://sr.example", schema_registry_basic_auth_user_info="env://SR_AUTH")
    registry = SchemaRegistry(settings)
    target = registry._target(RegistryPolicy("avro"))
    assert (target.url, target.user_info, target.bearer) == ("https://sr.example", "key:secret", None)
    own = registry._target(RegistryPolicy("avro", url="https://other.example"))
    assert (own.url, own.user_info) == ("https://other.example", None)
    with pytest.raises(SchemaRegistryRefused, match="QUASAR_SCHEMA_REGISTRY_URL"):
        SchemaRegistry(Settings(schema_registry_url=None))._target(RegistryPolicy("avro"))


async def test_protobuf_records_round_trip_without_generated_classes(rt: Runtime, schema_registry_url: str) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("pprices"), rt.names.output("pprices")
    priced = _proto_class(
        f"priced_{uuid.uuid4().hex[:6]}.proto",
        "PricedOrder",
        [("id", _STRING), ("amount", _DOUBLE), ("total", _DOUBLE), ("status", _STRING)],
    )
    # Registered the way confluent_kafka's ProtobufSerializer registers a schema: a base64 FileDescriptorProto.
    fdp = descriptor_pb2.FileDescriptorProto()
    priced.DESCRIPTOR.file.CopyToProto(fdp)
    out_id = sr.register_schema(
        f"{out_topic}-value", Schema(base64.b64encode(fdp.SerializeToString()).decode(), "PROTOBUF")
    )
    await rt.activate("pprices", PRICE, envelope=None, config={"value_format": "protobuf_registry"})
    await rt.worker()
    order = _proto_class(f"order_{uuid.uuid4().hex[:6]}.proto", "Order", [("id", _STRING), ("amount", _DOUBLE)])
    serialize = ProtobufSerializer(order, sr, {"use.deprecated.format": False})
    for i in range(2):
        _send(rt, "pprices", serialize(order(id=f"p-{i}", amount=10.0 + i), _ctx(in_topic)), key=f"p-{i}")
    garbage = serialize(order(id="x", amount=1.0), _ctx(in_topic))[:6] + b"\xff\xff\xff"  # truncated varint
    _send(rt, "pprices", garbage, key="bad", trace="bad")
    outs = await asyncio.to_thread(rt.outputs, "pprices", 2)
    deserialize = ProtobufDeserializer(priced, {"use.deprecated.format": False})
    for m in outs:
        i = int(m.key().decode().split("-")[1])
        msg = deserialize(m.value(), _ctx(out_topic))
        assert (msg.id, msg.amount, msg.status) == (f"p-{i}", 10.0 + i, "priced")
        assert msg.total == pytest.approx((10.0 + i) * 1.2)
        assert m.value()[0] == 0 and int.from_bytes(m.value()[1:5], "big") == out_id
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.TRACE_ID] == "bad" and hm[H.DLQ_ERROR_CODE] == "SCHEMA_MISMATCH", hm


async def test_basic_auth_reaches_a_secured_registry_and_wrong_credentials_are_refused(
    rt: Runtime, secured_schema_registry: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, user, password = secured_schema_registry
    monkeypatch.setenv("SR_AUTH_OK", f"{user}:{password}")
    monkeypatch.setenv("SR_AUTH_BAD", f"{user}:wrong")
    sr = SchemaRegistryClient({"url": url, "basic.auth.user.info": f"{user}:{password}"})
    with pytest.raises(SchemaRegistryError) as refused:
        SchemaRegistryClient({"url": url}).get_subjects()
    assert refused.value.http_status_code == 401  # the registry does refuse anonymous callers
    in_topic, out_topic = rt.names.channel("authed"), rt.names.output("authed")
    sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(ORDER_OUT).decode(), "AVRO"))
    for channel, secret in (("authed", "env://SR_AUTH_OK"), ("unauthed", "env://SR_AUTH_BAD")):
        registry = {"url": url, "basic_auth_user_info": secret}
        config = {"value_format": "avro_registry", "schema_registry": registry}
        await rt.activate(channel, PRICE, envelope=None, config=config)
    await rt.worker()
    value = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())({"id": "s", "amount": 5.0}, _ctx(in_topic))
    _send(rt, "authed", value, key="s")
    _send(rt, "unauthed", value, key="u", trace="u")
    (out,) = await asyncio.to_thread(rt.outputs, "authed", 1)
    assert AvroDeserializer(sr)(out.value(), _ctx(out_topic))["total"] == pytest.approx(6.0)
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.DLQ_ERROR_CODE] == "SCHEMA_REGISTRY_REFUSED" and "401" in hm[H.DLQ_ERROR_MESSAGE], hm
    assert hm[H.DLQ_ATTEMPTS] == "1" and "wrong" not in hm[H.DLQ_ERROR_MESSAGE]  # no secret in the reason


LEDGER = {
    "type": "record",
    "name": "Ledger",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "digest", "type": "bytes"},
        {"name": "ref", "type": ["null", {"type": "string", "logicalType": "uuid"}], "default": None},
    ],
}


async def test_avro_logical_types_reach_the_workflow_as_json_and_round_trip(
    rt: Runtime, schema_registry_url: str
) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic, out_topic = rt.names.channel("ledger"), rt.names.output("ledger")
    sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(LEDGER).decode(), "AVRO"))
    fields = [f["name"] for f in LEDGER["fields"]]
    copy = {  # parse the payload, copy every field, and record what the workflow saw for `amount` and `at`
        "name": "copy",
        "condition": True,
        "tasks": [
            {
                "id": "p",
                "name": "p",
                "function": {"name": "parse_json", "input": {"source": "payload", "target": "in"}},
            },
            {
                "id": "m",
                "name": "m",
                "function": {
                    "name": "map",
                    "input": {"mappings": [{"path": f"data.{f}", "logic": {"var": f"data.in.{f}"}} for f in fields]},
                },
            },
        ],
    }
    await rt.activate("ledger", copy, envelope=None, config={"value_format": "avro_registry", "tracing": "all"})
    await rt.worker()
    sent = {
        "id": "l-1",
        "amount": decimal.Decimal("1234.56"),
        "at": datetime.datetime(2026, 12, 3, 10, 0, 1, 234000, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 12, 3),
        "digest": b"\x00\xffbin",
        "ref": None,
    }
    _send(rt, "ledger", AvroSerializer(sr, orjson.dumps(LEDGER).decode())(sent, _ctx(in_topic)), key="l-1")
    (out,) = await asyncio.to_thread(rt.outputs, "ledger", 1)
    assert AvroDeserializer(sr)(out.value(), _ctx(out_topic)) == sent  # exact decimal, bytes, timestamp, date
    traces = await asyncio.to_thread(rt.traces, lambda r: len(r) >= 1)
    seen = orjson.loads(traces[0].value())["result"]["data"]["in"]  # JSON forms the workflow worked with
    assert seen == {
        "id": "l-1",
        "amount": "1234.56",
        "at": "2026-12-03T10:00:01.234000+00:00",
        "day": "2026-12-03",
        "digest": "AP9iaW4=",
        "ref": None,
    }


async def test_schemas_already_used_keep_working_while_the_registry_is_down(rt: Runtime, kafka_bootstrap: str) -> None:
    own = LocalRegistry().start()  # this test stops it
    try:
        sr = SchemaRegistryClient({"url": own.url})
        in_topic, out_topic = rt.names.channel("outage"), rt.names.output("outage")
        sr.register_schema(f"{out_topic}-value", Schema(orjson.dumps(ORDER_OUT).decode(), "AVRO"))
        config = {"value_format": "avro_registry", "schema_registry": {"url": own.url}}
        await rt.activate("outage", PRICE, envelope=None, config=config)
        await rt.worker()
        known = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())
        newer_schema = {**ORDER_IN, "fields": [*ORDER_IN["fields"], {"name": "note", "type": "string", "default": ""}]}
        newer = AvroSerializer(sr, orjson.dumps(newer_schema).decode())
        unseen = newer({"id": "c", "amount": 3.0, "note": "n"}, _ctx(in_topic))  # registered, never read by the worker
        _send(rt, "outage", known({"id": "a", "amount": 1.0}, _ctx(in_topic)), key="a")
        await asyncio.to_thread(rt.outputs, "outage", 1)
        later = known({"id": "b", "amount": 2.0}, _ctx(in_topic))
    finally:
        own.stop()
    _send(rt, "outage", unseen, key="c", trace="c")
    _send(rt, "outage", later, key="b")  # the same schema id as "a": decoded and encoded from the caches
    outs = await asyncio.to_thread(rt.outputs, "outage", 2)
    assert sorted(m.key() for m in outs) == [b"a", b"b"]
    (dead,) = await asyncio.to_thread(rt.dlq, 1)
    hm = dlq_headers(dead)
    assert hm[H.TRACE_ID] == "c" and hm[H.DLQ_ERROR_CODE] == "SCHEMA_REGISTRY_UNAVAILABLE" and hm[H.DLQ_ATTEMPTS] == "3"


def test_output_schemas_resolve_from_the_schemas_directory_by_format(tmp_path: Path) -> None:
    from app.channels import RegistryPolicy
    from app.worker.registry import SchemaNotFound, SchemaRegistry, SchemaRegistryRefused

    (tmp_path / "priced.avsc").write_text('{"type": "string"}')
    (tmp_path / "priced.json").write_text('{"type": "object"}')
    registry = SchemaRegistry(Settings(), schemas_dir=tmp_path)
    assert registry._schema_text(RegistryPolicy("avro", output_schema="priced")) == '{"type": "string"}'
    assert registry._schema_text(RegistryPolicy("avro", output_schema="priced.avsc")) == '{"type": "string"}'
    assert registry._schema_text(RegistryPolicy("json_schema", output_schema="priced")) == '{"type": "object"}'
    inline = RegistryPolicy("avro", output_schema={"type": "record", "name": "R", "fields": []})
    assert orjson.loads(registry._schema_text(inline))["name"] == "R"
    with pytest.raises(SchemaNotFound, match="'missing' not found"):
        registry._schema_text(RegistryPolicy("avro", output_schema="missing"))
    for bad in ("../etc/passwd", ".hidden", "a/b", ""):
        with pytest.raises(SchemaRegistryRefused, match="invalid output schema name"):
            registry._schema_text(RegistryPolicy("avro", output_schema=bad))


async def test_sync_caller_over_kafka_gets_a_json_reply(rt: Runtime, schema_registry_url: str) -> None:
    sr = SchemaRegistryClient({"url": schema_registry_url})
    in_topic = rt.names.channel("quote")
    await rt.activate(
        "quote", PRICE, envelope=None, channel_type="sync", output=False, config={"value_format": "avro_registry"}
    )
    await rt.worker()
    cid = uuid.uuid4().hex
    value = AvroSerializer(sr, orjson.dumps(ORDER_IN).decode())({"id": "q", "amount": 10.0}, _ctx(in_topic))
    rt.send("quote", value, key="q", headers={H.REPLY_TO: f"{rt.names.replies}:0", H.CORRELATION_ID: cid})
    replies = await asyncio.to_thread(
        read_records, rt.settings, rt.names.replies, until=lambda r: any(m.key() == cid.encode() for m in r)
    )
    (reply,) = [m for m in replies if m.key() == cid.encode()]
    body = orjson.loads(reply.value())
    assert (
        body["status"] == "ok" and body["data"]["total"] == pytest.approx(12.0) and body["data"]["status"] == "priced"
    )

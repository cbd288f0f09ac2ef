"""Record values in the Confluent wire format, through a Schema Registry (the IO edge of channel decoding).

A channel with `value_format: avro_registry | json_schema_registry | protobuf_registry` reads values framed
as magic byte 0, a 4-byte big-endian schema id and the payload; `confluent_kafka.schema_registry` fetches the
writer schema by id and decodes. Its outputs are encoded the same way under the output topic's subject.

Failures, and what the worker does with them (docs/operations.md, "Schema Registry"):
- `WIRE_FORMAT_INVALID`: not framed (too short, magic byte not 0): dead-lettered at once;
- `SCHEMA_NOT_FOUND`: unknown schema id, or no output schema under the output subject: dead-lettered;
- `SCHEMA_MISMATCH`: the payload does not decode with its schema, or a result does not fit the output schema;
- `SCHEMA_REGISTRY_REFUSED`: 401/403 and other refusals, no registry URL: dead-lettered (a configuration fix
  is needed; the DLQ keeps the records for a replay);
- `SCHEMA_REGISTRY_UNAVAILABLE`: connection error, timeout, 5xx / 408 / 429: transient, retried with the
  record's backoff. After one failed request the registry counts as down for a cooldown, so the records
  that need it fail fast instead of each holding a worker slot for a timeout; records of other channels
  (and cached schema ids) are not held up.

Clients, deserializers and serializers are cached (bounded LRU); each client bounds its schema cache by
QUASAR_SCHEMA_REGISTRY_CACHE_CAPACITY, so a stream of distinct schema ids cannot grow memory without limit.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import fastavro
import jsonschema.exceptions
import orjson
from cachetools import LRUCache
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema
from confluent_kafka.schema_registry._async.avro import AsyncAvroDeserializer, AsyncAvroSerializer
from confluent_kafka.schema_registry._async.json_schema import AsyncJSONDeserializer, AsyncJSONSerializer
from confluent_kafka.schema_registry._async.protobuf import AsyncProtobufDeserializer
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import empty_pb2, json_format
from google.protobuf.message_factory import GetMessageClass

from app.channels import RegistryPolicy
from app.errors import BadRequest, QuasarError, ServiceUnavailable
from app.jsonlimits import MAX_JSON_DEPTH, json_too_deep
from app.secrets import resolve_secret
from app.settings import Settings
from app.worker.codec import avro_to_json, json_to_avro

__all__ = [
    "SchemaMismatch",
    "SchemaNotFound",
    "SchemaRegistry",
    "SchemaRegistryRefused",
    "SchemaRegistryUnavailable",
    "WireFormatInvalid",
]

MAGIC_BYTE = 0
_MAX_CLIENTS = 32  # distinct (url, credentials) a worker talks to
_MAX_SERDES = 256  # de/serializers kept (one per client and format, one per output schema)
_LATEST_TTL_S = 60  # how long "the latest version of the output subject" is cached
_SCHEMA_TYPES = {"avro": "AVRO", "json_schema": "JSON", "protobuf": "PROTOBUF"}
_SCHEMA_FILE_SUFFIX = {"avro": ".avsc", "json_schema": ".json", "protobuf": ".proto"}
_NETWORK_MODULES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "anyio", "ssl"})
T = TypeVar("T")


class WireFormatInvalid(BadRequest):
    """The value is not in the Confluent wire format (magic byte 0, 4-byte schema id, payload)."""

    code = "WIRE_FORMAT_INVALID"


class SchemaNotFound(BadRequest):
    """The registry has no such schema id, or no (matching) schema under the output subject."""

    code = "SCHEMA_NOT_FOUND"


class SchemaMismatch(BadRequest):
    """The payload does not decode with its registered schema, or a result does not fit the output schema."""

    code = "SCHEMA_MISMATCH"


class SchemaRegistryRefused(BadRequest):
    """The registry refused the request (credentials, permissions, an invalid schema) or none is configured."""

    code = "SCHEMA_REGISTRY_REFUSED"


class SchemaRegistryUnavailable(ServiceUnavailable):
    """The registry cannot be reached or answers 5xx / 408 / 429: transient, the record is retried."""

    code = "SCHEMA_REGISTRY_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class _Target:
    """One registry as a client sees it: URL(s) and resolved credentials."""

    url: str
    user_info: str | None
    bearer: str | None


class SchemaRegistry:
    """Decodes and encodes channel values through the registry each channel names (one per worker)."""

    def __init__(self, settings: Settings | None = None, schemas_dir: Path | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.schemas_dir = schemas_dir if schemas_dir is not None else Path("schemas")
        self._clients: LRUCache[Any, Any] = LRUCache(_MAX_CLIENTS)
        self._serdes: LRUCache[Any, Any] = LRUCache(_MAX_SERDES)
        self._avro_schemas: LRUCache[Any, Any] = LRUCache(_MAX_SERDES)  # output schema text -> fastavro-parsed
        # (registry, format, schema id) -> parsed Avro writer schema or JSON Schema validator
        self._writer_schemas: LRUCache[Any, Any] = LRUCache(self.settings.schema_registry_cache_capacity)
        # (registry, output topic, encoder) -> (schema id, parsed Avro schema or JSON Schema validator, until):
        # encoding is pure until then
        self._outputs: LRUCache[Any, Any] = LRUCache(_MAX_SERDES)
        self._building: dict[Any, asyncio.Future[Any]] = {}
        self._down_until: dict[_Target, float] = {}
        # what decoded or encoded before (schema ids, output subjects): usable from caches while it is down
        self._known: LRUCache[Any, Any] = LRUCache(self.settings.schema_registry_cache_capacity)

    # -- the two operations ------------------------------------------------------------------------
    async def decode(self, policy: RegistryPolicy, value: bytes | None, topic: str) -> Any:
        """The value of a record read from `topic`, decoded with the schema its id names."""
        if value is None:
            raise WireFormatInvalid("null record value (tombstone): expected the Confluent wire format")
        if len(value) < 6:
            raise WireFormatInvalid(
                f"record value of {len(value)} bytes: the Confluent wire format needs a magic byte, a 4-byte "
                "schema id and a payload"
            )
        if value[0] != MAGIC_BYTE:
            raise WireFormatInvalid(
                f"magic byte {value[0]} (expected {MAGIC_BYTE}): the value was not written by a Schema Registry "
                "serializer"
            )
        target = self._target(policy)
        schema_id = int.from_bytes(value[1:5], "big")
        deserializer = await self._serde(target, ("de", policy.format), lambda: self._deserializer(target, policy))
        if policy.format == "protobuf":
            decoded = await self._call(
                target,
                lambda: _protobuf_to_dict(deserializer, value),
                what=f"schema id {schema_id}",
                seen=(policy.format, schema_id),
            )
            return _bounded_depth(decoded, None, schema_id)
        # IO once per schema id: the writer schema (references resolved) parsed, or its JSON Schema validator;
        # after that decoding is pure.
        writer = self._writer_schemas.get((target, policy.format, schema_id))
        if writer is None:
            fetch = _avro_writer_schema if policy.format == "avro" else _json_validator
            writer = await self._call(
                target,
                lambda: fetch(deserializer, schema_id),
                what=f"schema id {schema_id}",
                seen=(policy.format, schema_id),
            )
            self._writer_schemas[(target, policy.format, schema_id)] = writer
        if policy.format == "avro":
            return _bounded_depth(avro_to_json(_read_avro(writer, value, schema_id)), None, schema_id)
        return _read_json(writer, value, schema_id)

    async def encode(self, policy: RegistryPolicy, data: Any, topic: str) -> bytes:
        """`data` encoded for `topic` under its subject (the output schema, or the subject's latest version)."""
        target = self._target(policy)
        if policy.format == "protobuf":
            deserializer = await self._serde(target, ("de", "protobuf"), lambda: self._deserializer(target, policy))
            return await self._call(
                target,
                lambda: _protobuf_encode(deserializer, self._client(target, serialized=True), data, f"{topic}-value"),
                what=f"output subject '{topic}-value'",
                seen=("protobuf", topic),
            )
        key = (
            "ser",
            policy.format,
            policy.subject_name_strategy,
            _schema_key(policy.output_schema),
            policy.auto_register,
        )
        subject = (
            f"{topic}-value"
            if policy.subject_name_strategy == "topic"
            else f"the {policy.subject_name_strategy} subject"
        )
        known = self._outputs.get((target, topic, *key))
        if known is not None and known[2] > time.monotonic():  # pure: the id and schema of a recent encode
            write = _write_avro if policy.format == "avro" else _write_json
            return write(known[0], known[1], data, subject)
        serializer = await self._serde(target, key, lambda: self._serializer(target, policy))
        ctx = SerializationContext(topic, MessageField.VALUE)
        writer: Any = None

        async def serialize() -> Any:
            nonlocal writer
            value = data
            if policy.format == "avro":  # JSON forms of bytes, decimals, timestamps back to Avro values
                writer = await self._avro_output_schema(target, policy, topic)
                value = json_to_avro(writer, data)
            out = await serializer(value, ctx)
            if policy.format == "json_schema":
                writer = await self._json_output_validator(serializer, target, policy, topic)
            return out

        out = await self._call(target, serialize, what=f"output subject {subject!r}", seen=(topic, *key))
        if not isinstance(out, bytes):
            raise SchemaMismatch(f"the output for {subject!r} encoded to nothing (a null result)")
        if writer is not None and not _raw_bytes(writer):
            # Later outputs skip the serializer for as long as "the latest version" is cached anyway.
            entry = (int.from_bytes(out[1:5], "big"), writer, time.monotonic() + _LATEST_TTL_S)
            self._outputs[(target, topic, *key)] = entry
        return out

    async def _json_output_validator(self, serializer: Any, target: _Target, policy: RegistryPolicy, topic: str) -> Any:
        """The output schema's validator, as the serializer builds it (references resolved)."""
        if policy.output_schema is not None:
            schema = Schema(self._schema_text(policy), "JSON")
        else:
            schema = (await self._client(target).get_latest_version(f"{topic}-value")).schema
        parsed, references = await serializer._get_parsed_schema(schema)
        return await serializer._get_validator(schema, parsed, references)

    async def _avro_output_schema(self, target: _Target, policy: RegistryPolicy, topic: str) -> Any:
        """The output schema, parsed by fastavro (None when it cannot be: the serializer then decides alone)."""
        if policy.output_schema is not None:
            text = self._schema_text(policy)
        else:  # the topic strategy's subject (compile refuses the others without output_schema)
            latest = await self._client(target).get_latest_version(f"{topic}-value")  # cached for _LATEST_TTL_S
            text = latest.schema.schema_str or ""
        parsed = self._avro_schemas.get(text)
        if parsed is None:
            try:
                parsed = fastavro.parse_schema(orjson.loads(text))
            except Exception:  # references to other subjects, or not JSON: no conversion
                parsed = False
            self._avro_schemas[text] = parsed
        return parsed or None

    # -- clients and serdes ------------------------------------------------------------------------
    def _target(self, policy: RegistryPolicy) -> _Target:
        s = self.settings
        url = policy.url or s.schema_registry_url
        if not url:
            raise SchemaRegistryRefused(
                "no Schema Registry URL: set QUASAR_SCHEMA_REGISTRY_URL or the channel's schema_registry.url"
            )
        own = policy.url is not None  # a channel's own registry never gets the global credentials
        user_info = policy.basic_auth_user_info or (None if own else s.schema_registry_basic_auth_user_info)
        bearer = policy.bearer_token or (None if own else s.schema_registry_bearer_token)
        return _Target(url, resolve_secret(user_info), resolve_secret(bearer))

    def _client(self, target: _Target, *, serialized: bool = False) -> AsyncSchemaRegistryClient:
        # Protobuf schemas are fetched as serialized descriptors; the library's schema cache does not key by
        # format, so they get a client of their own.
        key = (target, serialized)
        client: AsyncSchemaRegistryClient | None = self._clients.get(key)
        if client is None:
            s = self.settings
            conf: dict[str, Any] = {
                "url": target.url,
                "timeout": s.schema_registry_timeout_s,
                "cache.capacity": s.schema_registry_cache_capacity,
                "cache.latest.ttl.sec": _LATEST_TTL_S,
                "max.retries": 0,  # the worker retries the record, with its backoff, outside the slot
            }
            if target.user_info is not None:
                if ":" not in target.user_info:
                    raise SchemaRegistryRefused("schema registry basic auth must be `key:secret`")
                conf["basic.auth.user.info"] = target.user_info
            elif target.bearer is not None:
                token = target.bearer
                conf["bearer.auth.credentials.source"] = "CUSTOM"
                conf["bearer.auth.custom.provider.function"] = lambda _conf: {
                    "bearer.auth.token": token,
                    "bearer.auth.logical.cluster": "",
                }
                conf["bearer.auth.custom.provider.config"] = {}
            if s.schema_registry_ssl_ca_location:
                conf["ssl.ca.location"] = s.schema_registry_ssl_ca_location
            try:
                client = AsyncSchemaRegistryClient(conf)
            except (ValueError, TypeError) as exc:
                raise SchemaRegistryRefused(f"schema registry client settings: {exc}") from None
            self._clients[key] = client
        return client

    async def _serde(self, target: _Target, key: tuple[Any, ...], build: Callable[[], Awaitable[Any]]) -> Any:
        full = (target, *key)
        serde = self._serdes.get(full)
        if serde is not None:
            return serde
        pending = self._building.get(full)
        if pending is None:
            pending = self._building[full] = asyncio.ensure_future(build())
            pending.add_done_callback(lambda _f: self._building.pop(full, None))
        try:
            serde = await asyncio.shield(pending)
        except QuasarError:
            raise
        except Exception as exc:  # an unusable output schema, a setting the library refuses
            raise SchemaRegistryRefused(
                f"cannot set up the {key[1]} {'decoder' if key[0] == 'de' else 'encoder'}: {exc}"
            ) from None
        self._serdes[full] = serde
        return serde

    async def _deserializer(self, target: _Target, policy: RegistryPolicy) -> Callable[..., Awaitable[Any]]:
        # TOPIC: the writer schema comes from the id; the strategy only keeps the library from asking the
        # registry for subject associations (not every registry has that API).
        conf = {"subject.name.strategy.type": "TOPIC"}
        if policy.format == "avro":
            return await AsyncAvroDeserializer(self._client(target), conf=conf)  # type: ignore[no-any-return]
        if policy.format == "json_schema":
            client = self._client(target)
            return await AsyncJSONDeserializer(None, schema_registry_client=client, conf=conf)  # type: ignore[no-any-return]
        # Protobuf without generated classes: the placeholder type is never parsed into; `_protobuf_to_dict`
        # builds the writer's message type from the registry's descriptors (cached per schema by the library).
        pb_client = self._client(target, serialized=True)
        return await AsyncProtobufDeserializer(empty_pb2.Empty, conf=conf, schema_registry_client=pb_client)  # type: ignore[no-any-return]

    async def _serializer(self, target: _Target, policy: RegistryPolicy) -> Callable[..., Awaitable[Any]]:
        client = self._client(target)
        conf: dict[str, Any] = {"subject.name.strategy.type": policy.subject_name_strategy.upper()}
        schema: Schema | None = None
        if policy.output_schema is None:
            conf.update({"auto.register.schemas": False, "use.latest.version": True})
        else:
            schema = Schema(self._schema_text(policy), _SCHEMA_TYPES[policy.format])
            conf["auto.register.schemas"] = policy.auto_register
        if policy.format == "avro":
            return await AsyncAvroSerializer(client, schema, conf=conf)  # type: ignore[no-any-return]
        if policy.format == "json_schema":
            return await AsyncJSONSerializer(schema, client, conf=conf)  # type: ignore[no-any-return]
        raise SchemaRegistryRefused(f"value format {policy.format}_registry is not supported")

    def _schema_text(self, policy: RegistryPolicy) -> str:
        declared = policy.output_schema
        if isinstance(declared, Mapping):
            return orjson.dumps(dict(declared)).decode()
        assert isinstance(declared, str)
        text = declared.strip()
        if text.startswith(("{", "[", '"')) or "\n" in text or text.startswith("syntax"):
            return text  # the schema itself
        suffix = _SCHEMA_FILE_SUFFIX[policy.format]
        name = text.removesuffix(suffix)
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise SchemaRegistryRefused(f"invalid output schema name {declared!r}")
        path = self.schemas_dir / f"{name}{suffix}"
        try:
            return path.read_text()
        except FileNotFoundError:
            raise SchemaNotFound(f"output schema {name!r} not found ({path})") from None

    # -- calls and their failures ------------------------------------------------------------------
    async def _call(self, target: _Target, call: Callable[[], Awaitable[T]], *, what: str, seen: Any) -> T:
        """Run one de/serialization that may ask the registry. `seen` names what it needs (a schema id, an
        output subject): while the registry counts as down, only what worked before (so is cached) runs."""
        down = self._down_until.get(target, 0.0) > time.monotonic()
        if down and self._known.get((target, seen)) is None:
            raise SchemaRegistryUnavailable(f"schema registry {_host(target)} is down (failed moments ago); {what}")
        try:
            result = await call()
        except QuasarError:
            raise
        except SchemaRegistryError as exc:
            raise self._registry_error(target, exc, what) from None
        except Exception as exc:
            if _is_network(exc):
                self._mark_down(target)
                raise SchemaRegistryUnavailable(
                    f"schema registry {_host(target)} unreachable ({type(exc).__name__}: {exc}); {what}"
                ) from None
            # SerializationError, fastavro's and jsonschema's errors, EOFError...: the data does not fit.
            raise SchemaMismatch(f"{what}: {type(exc).__name__}: {exc}") from None
        if not down:
            self._down_until.pop(target, None)
        self._known[(target, seen)] = True
        return result

    def _registry_error(self, target: _Target, exc: SchemaRegistryError, what: str) -> QuasarError:
        status = exc.http_status_code
        text = f"{exc.error_message} (HTTP {status}, registry code {exc.error_code}); {what}"
        if status == 404:
            return SchemaNotFound(text)
        if status in (408, 429) or status >= 500:
            self._mark_down(target)
            return SchemaRegistryUnavailable(f"schema registry {_host(target)}: {text}")
        if status in (409, 422):
            return SchemaMismatch(text)  # incompatible or invalid output schema
        return SchemaRegistryRefused(f"schema registry {_host(target)}: {text}")

    def _mark_down(self, target: _Target) -> None:
        cooldown = self.settings.schema_registry_down_cooldown_ms / 1000.0
        if cooldown > 0:
            self._down_until[target] = time.monotonic() + cooldown


async def _protobuf_to_dict(deserializer: Any, value: bytes) -> Any:
    """A Protobuf wire-format value as a dict (proto3 JSON mapping, field names as declared, defaults included),
    its message type built from the writer schema's descriptors (the value's message indexes pick it)."""
    schema_id = SchemaId("PROTOBUF")
    payload = deserializer._schema_id_deserializer(value, None, schema_id)
    writer = await deserializer._get_writer_schema(schema_id, None, "serialized")
    fd_proto, pool = await deserializer._get_parsed_schema(writer)
    desc = deserializer._get_message_desc(pool, pool.FindFileByName(fd_proto.name), schema_id.message_indexes or [0])
    message = GetMessageClass(desc)()
    message.ParseFromString(payload.read())
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


async def _protobuf_encode(deserializer: Any, client: AsyncSchemaRegistryClient, data: Any, subject: str) -> bytes:
    """`data` as the first message of the subject's latest Protobuf schema, in the wire format (message index
    [0] is the single byte 0). Fields the message does not declare are left out, as Avro and JSON Schema do."""
    latest = await client.get_latest_version(subject)
    if latest.schema_id is None:
        raise SchemaNotFound(f"subject {subject!r} has no schema id")
    schema_id: int = latest.schema_id
    schema = await client.get_schema(schema_id, None, "serialized")
    fd_proto, pool = await deserializer._get_parsed_schema(schema)
    desc = deserializer._get_message_desc(pool, pool.FindFileByName(fd_proto.name), [0])
    if not isinstance(data, Mapping):
        raise SchemaMismatch(f"a Protobuf message needs an object, got {type(data).__name__}")
    message = json_format.ParseDict(data, GetMessageClass(desc)(), ignore_unknown_fields=True)
    body: bytes = message.SerializeToString()
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big") + b"\x00" + body


async def _avro_writer_schema(deserializer: Any, schema_id: int) -> Any:
    """The parsed writer schema of an id, as confluent_kafka's deserializer gets it (named references resolved)."""
    writer = await deserializer._get_writer_schema(SchemaId("AVRO", schema_id), None)
    return await deserializer._get_parsed_schema(writer)


async def _json_validator(deserializer: Any, schema_id: int) -> Any:
    """The JSON Schema validator of an id, as confluent_kafka's deserializer builds it (references resolved)."""
    writer = await deserializer._get_writer_schema(SchemaId("JSON", schema_id), None)
    parsed, references = await deserializer._get_parsed_schema(writer)
    return await deserializer._get_validator(writer, parsed, references)


def _read_json(validator: Any, value: bytes, schema_id: int) -> Any:
    """The JSON document after the 5-byte header, checked against its schema."""
    payload = value[5:]
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SchemaMismatch(f"schema id {schema_id}: not JSON: {exc}") from None
    _bounded_depth(doc, payload, schema_id)
    _check_json(validator, doc, f"schema id {schema_id}")
    return doc


def _check_json(validator: Any, doc: Any, what: str) -> None:
    """A document the JSON Schema refuses is a mismatch, with the most relevant reason."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise SchemaMismatch(f"{what}: {error.message}")


def _read_avro(writer: Any, value: bytes, schema_id: int) -> Any:
    """The Avro payload after the 5-byte header; a payload that is short, malformed or has trailing bytes is
    a mismatch. A top-level `bytes` schema is the raw payload (as Confluent's serializers write it)."""
    if _raw_bytes(writer):
        return value[5:]
    buf = io.BytesIO(value)
    buf.seek(5)
    try:
        record = fastavro.schemaless_reader(buf, writer, None)
    except Exception as exc:  # EOFError, ValueError, UnicodeDecodeError...: the payload does not match
        raise SchemaMismatch(f"schema id {schema_id}: {type(exc).__name__}: {exc}") from None
    if buf.tell() != len(value):
        raise SchemaMismatch(f"schema id {schema_id}: {len(value) - buf.tell()} trailing bytes after the record")
    return record


def _raw_bytes(schema: Any) -> bool:
    return schema == "bytes" or (
        isinstance(schema, dict) and schema.get("type") == "bytes" and "logicalType" not in schema
    )


def _write_avro(schema_id: int, writer: Any, data: Any, subject: str) -> bytes:
    buf = io.BytesIO()
    buf.write(bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big"))
    try:
        fastavro.schemaless_writer(buf, writer, json_to_avro(writer, data))
    except Exception as exc:  # ValueError, TypeError...: the result does not fit the output schema
        raise SchemaMismatch(f"output subject {subject!r}: {type(exc).__name__}: {exc}") from None
    return buf.getvalue()


def _write_json(schema_id: int, validator: Any, data: Any, subject: str) -> bytes:
    _check_json(validator, data, f"output subject {subject!r}")
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big") + orjson.dumps(data)


def _bounded_depth(decoded: Any, raw: bytes | None, schema_id: int) -> Any:
    # Replies, outputs and traces are JSON with a bounded depth (app.jsonlimits): refuse deeper records here
    # (a recursive Avro type or a deep JSON document), as the JSON codec does.
    if json_too_deep(raw, decoded):
        raise SchemaMismatch(f"schema id {schema_id}: the record nests deeper than {MAX_JSON_DEPTH} levels")
    return decoded


def _is_network(exc: BaseException) -> bool:
    return isinstance(exc, OSError | TimeoutError) or type(exc).__module__.split(".")[0] in _NETWORK_MODULES


def _host(target: _Target) -> str:
    from urllib.parse import urlsplit

    return urlsplit(target.url.split(",")[0].strip()).netloc.rpartition("@")[2] or "?"


def _schema_key(declared: Any) -> Any:
    return orjson.dumps(declared, option=orjson.OPT_SORT_KEYS) if isinstance(declared, Mapping) else declared

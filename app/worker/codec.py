"""Decoding channel request records: raw JSON (the whole value is the payload, Orion's Kafka format), the
JSON envelope `{"data", "metadata"}` (the HTTP bridge's format) or Avro (fastavro, schemaless).

A channel declares Avro with `config.avro_schema`: either the name of `schemas/<name>.avsc` or an inline
schema object. The decoded Avro record is the request's `data` (metadata empty). Every failure is a
non-retryable `QuasarError` whose code ends up in the DLQ headers.
"""

from __future__ import annotations

import base64
import binascii
import io
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import fastavro
import orjson

from app.errors import BadRequest, PayloadTooLarge
from app.jsonlimits import MAX_JSON_DEPTH, json_too_deep
from app.settings import Settings

__all__ = [
    "SCHEMAS_DIR",
    "AvroMismatch",
    "DecodeError",
    "InvalidEnvelope",
    "RecordTooLarge",
    "SchemaCache",
    "avro_to_json",
    "check_record_size",
    "decode_avro",
    "decode_json",
    "decode_raw",
    "json_to_avro",
    "schemas_dir",
]

# `schemas/` of a source checkout (next to `app/`); an installed wheel has none there.
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def schemas_dir(settings: Settings | None = None, *, source_tree: Path = SCHEMAS_DIR, cwd: Path | None = None) -> Path:
    """Where named Avro schemas live: QUASAR_SCHEMAS_DIR, else the source tree's `schemas/`, else `./schemas`.

    The same in every layout: a checkout finds its own `schemas/`; an installed wheel (whose package sits in
    site-packages) uses the working directory's `schemas/`; the Docker image sets QUASAR_SCHEMAS_DIR.
    """
    if settings is not None and settings.schemas_dir is not None:
        return settings.schemas_dir
    if source_tree.is_dir():
        return source_tree
    return (cwd or Path.cwd()) / "schemas"


class DecodeError(BadRequest):
    """The record value is not valid JSON (or is empty)."""

    code = "DECODE_ERROR"


class InvalidEnvelope(BadRequest):
    """Valid JSON, but not a request envelope `{"data": ..., "metadata": {...}}`."""

    code = "INVALID_ENVELOPE"


class AvroMismatch(BadRequest):
    """The record does not match the channel's Avro schema (or the schema itself is unusable)."""

    code = "AVRO_MISMATCH"


class RecordTooLarge(PayloadTooLarge):
    """The record value exceeds `worker_max_record_bytes` (not decoded: bounded work per record)."""


def check_record_size(value: bytes | None, limit: int) -> None:
    """Refuse a record value above `limit` bytes before any decoding."""
    if value is not None and len(value) > limit:
        raise RecordTooLarge(f"record value of {len(value)} bytes exceeds the worker limit of {limit} bytes")


def _loads(value: bytes | None, expected: str) -> Any:
    if value is None:
        # A tombstone is not a request; dead-lettered like any other undecodable record, never dropped.
        raise DecodeError(f"null record value (tombstone): expected {expected}")
    if not value:
        raise DecodeError(f"empty record value: expected {expected}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"record value is not valid JSON: {exc}") from None
    # `json_too_deep`'s own fast test first, spelled here: this runs for every record a worker decodes
    if value.count(b"[") + value.count(b"{") > MAX_JSON_DEPTH and json_too_deep(value, doc):
        # orjson reads 1024 levels but writes only 255: the reply could not be encoded.
        raise DecodeError(f"record value nests JSON deeper than {MAX_JSON_DEPTH} levels")
    return doc


def decode_raw(value: bytes | None) -> tuple[Any, dict[str, Any]]:
    """(data, {}) of a raw JSON record: the whole value is the payload (Orion's Kafka channels)."""
    return _loads(value, "a JSON value"), {}


def decode_json(value: bytes | None) -> tuple[Any, dict[str, Any]]:
    """(data, metadata) of a JSON request envelope."""
    doc = _loads(value, 'a JSON object {"data": ..., "metadata": {...}}')
    if type(doc) is not dict:
        raise InvalidEnvelope(f"request must be a JSON object with a 'data' field, got {type(doc).__name__}")
    if "data" not in doc:
        raise InvalidEnvelope("request envelope has no 'data' field")
    metadata = doc.get("metadata")
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict:
        raise InvalidEnvelope("'metadata' must be a JSON object")
    return doc["data"], metadata


class SchemaCache:
    """Parsed Avro schemas by declaration (a name under `directory`, or an inline schema)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else schemas_dir()
        self._parsed: dict[bytes, Any] = {}

    def get(self, declared: object) -> Any:
        key = orjson.dumps(declared, option=orjson.OPT_SORT_KEYS)
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = self._parse(declared)
        return parsed

    def _parse(self, declared: object) -> Any:
        if isinstance(declared, str):
            name = declared.removesuffix(".avsc")
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise AvroMismatch(f"invalid Avro schema name {declared!r}")
            path = self.directory / f"{name}.avsc"
            try:
                raw: Any = orjson.loads(path.read_bytes())
            except FileNotFoundError:
                raise AvroMismatch(f"Avro schema {name!r} not found ({path})") from None
            except orjson.JSONDecodeError as exc:
                raise AvroMismatch(f"Avro schema file {path} is not JSON: {exc}") from None
        elif isinstance(declared, Mapping):
            raw = dict(declared)
        else:
            raise AvroMismatch("config.avro_schema must be a schema name or an inline schema object")
        try:
            return fastavro.parse_schema(raw)
        except Exception as exc:  # fastavro raises several types for bad schemas
            raise AvroMismatch(f"invalid Avro schema: {exc}") from None


def decode_avro(value: bytes | None, schema: Any) -> tuple[Any, dict[str, Any]]:
    """(data, {}) of a schemaless Avro record; trailing or missing bytes are a mismatch."""
    if not value:
        kind = "null (tombstone)" if value is None else "empty"
        raise AvroMismatch(f"{kind} record value for an Avro channel")
    buf = io.BytesIO(value)
    try:
        record = fastavro.schemaless_reader(buf, schema, None)
    except Exception as exc:  # EOFError, ValueError, UnicodeDecodeError, ... all mean "does not match"
        raise AvroMismatch(f"record does not match Avro schema {_name(schema)}: {type(exc).__name__}: {exc}") from None
    if buf.tell() != len(value):
        raise AvroMismatch(
            f"record does not match Avro schema {_name(schema)}: {len(value) - buf.tell()} trailing bytes"
        )
    data = avro_to_json(record)
    if json_too_deep(None, data):  # a recursive type: replies and traces could not be written
        raise AvroMismatch(f"record of Avro schema {_name(schema)} nests deeper than {MAX_JSON_DEPTH} levels")
    return data, {}


def avro_to_json(value: Any) -> Any:
    """A decoded Avro value with JSON types only, so workflows, replies and traces can carry it: `bytes` and
    `fixed` as base64, `decimal` as its exact decimal string, timestamps / dates / times as ISO 8601, `uuid`
    as text. `json_to_avro` turns them back for an output schema."""
    if isinstance(value, dict):
        return {k: avro_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [avro_to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def json_to_avro(schema: Any, value: Any, named: Mapping[str, Any] | None = None) -> Any:
    """`value` (JSON types, as `avro_to_json` writes them) made writable with a fastavro-parsed `schema`:
    base64 text for `bytes` / `fixed`, numbers or text for `decimal`, ISO 8601 text for timestamps, dates
    and times. Anything else is left for the writer to accept or refuse. A union takes the first branch the
    value converts to."""
    if named is None:
        named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    if isinstance(schema, str):
        schema = named.get(schema, {"type": schema})  # a named type, or a primitive
    if isinstance(schema, list):
        if value is None and "null" in schema:
            return None
        for branch in schema:
            if branch == "null":
                continue
            try:
                return json_to_avro(branch, value, named)
            except (ValueError, TypeError, InvalidOperation):
                continue
        return value
    if not isinstance(schema, dict):
        return value
    kind, logical = schema.get("type"), schema.get("logicalType")
    if kind == "record" and isinstance(value, dict):
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        return {k: json_to_avro(fields[k], v, named) if k in fields else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [json_to_avro(schema["items"], v, named) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: json_to_avro(schema["values"], v, named) for k, v in value.items()}
    if logical == "decimal" and isinstance(value, str | int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if kind in ("bytes", "fixed") and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError(f"expected base64 text for Avro {kind}") from None
    if isinstance(value, str) and logical in _ISO_PARSERS:
        return _ISO_PARSERS[logical](value)
    return value


_ISO_PARSERS: dict[str, Any] = {
    "timestamp-millis": datetime.fromisoformat,
    "timestamp-micros": datetime.fromisoformat,
    "local-timestamp-millis": datetime.fromisoformat,
    "local-timestamp-micros": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time-millis": time.fromisoformat,
    "time-micros": time.fromisoformat,
}


def _name(schema: Any) -> str:
    return repr(schema.get("name", "?")) if isinstance(schema, Mapping) else "?"

"""The record pipeline: one consumed record -> what to produce, or when to try it again.

`Pipeline.handle(record, view, clock)` is the whole per-record contract of the worker, as a function a test
can drive without a broker: it returns an `Outcome` holding the reply / output / trace / DLQ records (topic,
value, key, headers, partition) or a retry decision. The only IO it does is the workflow run itself (the
engine, with the connector runtime for connector tasks). The consume loop (`app/worker/runner.py`) feeds
records in, and the delivery tracker (`app/worker/delivery.py`) produces what comes out and commits.

The record contract (docs/concepts.md, "The record contract"):
- keys: an output keeps the input record's key unless the channel declares `key_logic`; a reply is keyed
  by the caller's correlation id, a trace by its trace id, a dead letter by the input key;
- headers: application headers, `traceparent` and `x-request-id` travel to every record the input causes,
  as the channel's `headers` setting allows (drop list, allow-list, credentials left out); control
  headers (`quasar-*`) do not; the propagated set is bounded (`quasar-headers-dropped` says so);
- envelopes: `raw` (the whole value is the payload, Orion's Kafka format, default for `protocol: kafka`)
  or `quasar` (`{"data", "metadata"}`, the HTTP bridge's format); every message gets
  `metadata.kafka_topic/partition/offset/key`; client metadata never supplies `_quasar_*` fields;
- failures: deterministic ones (decode, validation, engine errors, unknown function) are dead-lettered at
  once; transient ones (connection errors, upstream 5xx / 408 / 429, config lag) are retried with backoff,
  and only while no side-effecting task of the record has completed (a side effect happens once per
  delivery); the DLQ record carries the cause (task id, function, inner message);
- trust: `quasar-reply-to` must name a configured reply topic, else the record is dead-lettered
  (`REPLY_TO_REFUSED`) and nothing is written anywhere else;
- bounds: every produced record fits the producer's limit (messages truncated, oversized values and
  headers dropped with a header saying so);
- traces: by the channel's `tracing`; without it, every record the gateway produced (`quasar-mode`) and
  replayed dead letter (`quasar-attempt`), but only the failures of records produced straight to the topic
  (Orion's Kafka ingest writes no trace);
- per-task tracing (`tracing.per_task`): the trace record also carries the run's audit trail (each executed
  task's id, function, status, duration and changed fields old -> new), bounded per value and in total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from app.channels import INGESTED_DEFAULT, CompiledChannel, HeaderPolicy, RegistryPolicy, TracingPolicy
from app.config_store import Snapshot
from app.digits import is_uint, parse_uint
from app.engine.executor import RunOptions, rollout_bucket
from app.engine.jsonlogic import Logic, is_truthy
from app.engine.message import AuditEntry, rfc3339
from app.engine.message import Message as EngineMessage
from app.engine.rules.explain import explain_requested, is_yes
from app.errors import (
    BadRequest,
    CircuitOpen,
    EngineFailure,
    NotFound,
    QuasarError,
    ResponseTooLarge,
    ServiceUnavailable,
)
from app.governance.rollout import record_rollout_key
from app.kafka import headers as H
from app.kafka.names import TopicNames
from app.observability.metrics import Run
from app.settings import DEFAULT_MAX_RECORD_BYTES
from app.worker.codec import InvalidEnvelope, SchemaCache, check_record_size, decode_avro, decode_json, decode_raw
from app.worker.registry import SchemaRegistry

__all__ = [
    "MAX_HEADER_VALUE",
    "MAX_PRODUCE_BYTES",
    "ChannelRoute",
    "Clock",
    "HeaderList",
    "Outcome",
    "Pipeline",
    "Produce",
    "Record",
    "RecordLike",
    "ReplyToRefused",
    "WorkerView",
    "bounded_dlq",
    "is_transient",
    "propagated_headers",
    "routes_of",
]

# The record budget (QUASAR_MAX_RECORD_BYTES; producers and topics take it plus framing): nothing the
# pipeline returns may be larger. The worker passes its setting; this default is the setting's.
MAX_PRODUCE_BYTES = DEFAULT_MAX_RECORD_BYTES
# A synchronous record this slow marks its channel heavy: its records then run in a thread, so one costly
# channel does not stall the other partitions of the worker (bench.noisy_neighbour: 0.5-0.8 s -> 13-35 ms);
# an offloaded record this fast brings the channel back onto the loop (a hand-off costs ~0.2 ms).
HEAVY_RECORD_S = 0.05
LIGHT_RECORD_S = 0.005
MAX_MESSAGE_CHARS = 4096  # error messages in replies, traces and DLQ headers
MAX_HEADER_VALUE = 8192  # one propagated header value
MAX_HEADERS_TOTAL = 32_768  # all propagated headers of one record
MAX_TRAIL_VALUE_BYTES = 2048  # one old/new value on a per-task trace (longer: a truncation marker)
MAX_TRAIL_CHANGES = 64  # changes kept per task on a per-task trace
MAX_TRAIL_BYTES = 256 * 1024  # a per-task trace's whole audit trail

Clock = Callable[[], float]  # epoch seconds
HeaderList = list[tuple[str, str | bytes | None]]  # what confluent-kafka's produce() takes
Produce = tuple[str, bytes | None, bytes | str | None, HeaderList | None, int]
"""One record to produce: (topic, value, key, headers, partition or -1 for the partitioner)."""


class RecordLike(Protocol):
    """What the pipeline reads of a consumed record (confluent-kafka's `Message` has exactly this)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class Record:
    """A record built in code (tests, failed deliveries); same accessors as a consumed `Message`."""

    topic_: str
    value_: bytes | None
    key_: bytes | None = None
    headers_: Sequence[tuple[str, bytes | None]] | None = None
    partition_: int = 0
    offset_: int = 0
    timestamp_ms: int = 0

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return list(self.headers_) if self.headers_ is not None else None

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms) if self.timestamp_ms else (0, -1)


class ReplyToRefused(BadRequest):
    """`quasar-reply-to` names a topic that is not a configured reply topic (or no such partition)."""

    code = "REPLY_TO_REFUSED"


class ValidationRefused(BadRequest):
    """The channel's `validation_logic` refused the record (same rule as over HTTP)."""

    code = "VALIDATION_ERROR"


@dataclass(frozen=True, slots=True)
class HeaderFilter:
    """The channel's `headers` setting (`HeaderPolicy.propagates`) precomputed for the record path: which
    input headers may reach its output, reply, trace and DLQ records. Names compare lower-cased."""

    blocked: frozenset[str]  # `drop` + credentials the channel does not keep
    allowed: frozenset[str] | None  # None: every header not blocked; else only these (`propagate: none` = empty)

    @classmethod
    def of(cls, policy: HeaderPolicy) -> HeaderFilter:
        blocked = policy.drop | (policy.secret - policy.keep)
        if policy.propagate == "all":
            return cls(blocked, None)
        if policy.propagate == "none":
            return cls(blocked, frozenset())
        return cls(blocked, policy.propagate - blocked)


DEFAULT_HEADERS = HeaderFilter.of(HeaderPolicy())
DEFAULT_TRACING = TracingPolicy()  # a channel without `tracing`, for the records the gateway produced


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    """What the worker needs to know about one active channel (rebuilt on every config change), taken
    from its compiled channel (`app.channels.CompiledChannel`): nothing is parsed here."""

    name: str
    topic: str
    is_async: bool
    output_topic: str | None
    avro_schema: Any  # declaration (name or inline), None for JSON
    rollout_channel: CompiledChannel | None = None  # set when the channel declares a `rollout_key`
    envelope: str = "quasar"  # "raw": the whole value is the payload; "quasar": {"data", "metadata"}
    key_logic: Logic | None = None  # output record key; None keeps the input key
    validation: Logic | None = None  # `validation_logic`, also applied to Kafka-ingested records
    config_error: str | None = None  # a setting that cannot be used: every record is dead-lettered
    channel: CompiledChannel | None = None  # everything else the channel declares
    headers: HeaderFilter = DEFAULT_HEADERS  # input headers its produced records may carry
    per_task: bool = False  # `tracing.per_task`: traces carry the audit trail (read once here, not per record)
    registry: RegistryPolicy | None = None  # Confluent wire format through a Schema Registry (`*_registry`)
    start_from: str | int = "latest"  # where a partition without a committed offset starts (int: epoch ms)
    active_since_ms: int = 0  # when the channel version was activated (`start_from: latest`)
    # `tracing` for records the gateway produced (`quasar-mode` header) and for records produced straight to
    # the topic: decided here once per channel version, so a record only picks one (`_traced`).
    tracing: TracingPolicy = DEFAULT_TRACING
    ingested_tracing: TracingPolicy = INGESTED_DEFAULT
    channel_header: tuple[str, bytes] = field(init=False)  # `quasar-channel: <name>` of its output records

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_header", (H.CHANNEL, self.name.encode()))


def routes_of(snapshot: Snapshot, names: TopicNames | None = None) -> dict[str, ChannelRoute]:
    """Request topic -> route for every active channel of `snapshot` (topics come compiled; a channel
    bound to one of Quasar's own topics is refused when it is compiled, so it never gets here)."""
    out: dict[str, ChannelRoute] = {}
    for view in snapshot.channels.values():
        ch = view.channel
        out[ch.topic] = ChannelRoute(
            ch.name,
            ch.topic,
            ch.is_async,
            ch.output_topic,
            ch.avro_schema,
            ch if ch.rollout is not None else None,
            ch.envelope,
            ch.key_logic,
            ch.guards.validation,
            None,
            ch,
            HeaderFilter.of(ch.headers),
            ch.tracing.per_task,
            ch.registry,
            ch.start_from,
            view.active_since_ms,
            ch.tracing,
            ch.tracing.ingested(),
        )
    return out


@dataclass(frozen=True, slots=True)
class WorkerView:
    """The worker's compiled config snapshot: routes by request topic, the engine, the reply topics."""

    routes: Mapping[str, ChannelRoute]
    engine: Any
    reply_topics: Mapping[str, int] = field(default_factory=dict)  # allowed reply topic -> partition count

    def reply_to(self, hm: Mapping[str, str]) -> tuple[str, int] | None:
        """The validated reply address of a record, or None when it asks for no reply."""
        raw = hm.get(H.REPLY_TO)
        if raw is None:
            return None
        topic, sep, part = raw.rpartition(":")
        if not sep or not topic or not is_uint(part):
            raise ReplyToRefused(f"malformed {H.REPLY_TO} header {raw[:200]!r}: expected '<topic>:<partition>'")
        if H.CORRELATION_ID not in hm:
            raise ReplyToRefused(f"{H.REPLY_TO} without {H.CORRELATION_ID}")
        partitions = self.reply_topics.get(topic)
        if partitions is None:
            raise ReplyToRefused(f"{H.REPLY_TO} names {topic[:200]!r}, which is not a reply topic")
        if int(part) >= partitions:
            raise ReplyToRefused(f"{H.REPLY_TO} {raw[:200]!r}: reply topic has no partition {part}")
        return topic, int(part)


class Outcome:
    """What one record caused: records to produce and a status, or a retry after `retry_in` seconds."""

    __slots__ = ("channel", "error", "first_failed_ms", "records", "retry_in", "status")

    def __init__(
        self,
        status: str,
        channel: str,
        records: list[Produce],
        *,
        retry_in: float = 0.0,
        error: QuasarError | None = None,
        first_failed_ms: int = 0,
    ) -> None:
        self.status = status  # ok | dlq | expired | retry
        self.channel = channel
        self.records = records
        self.retry_in = retry_in
        self.error = error
        self.first_failed_ms = first_failed_ms


# Headers that steer processing (never propagated). A value that is not UTF-8 makes the record invalid.
_CONTROL = frozenset(
    {
        H.REPLY_TO,
        H.CORRELATION_ID,
        H.DEADLINE,
        H.CONFIG_OFFSET,
        H.ATTEMPT,
        H.MODE,
        H.ROLLOUT_KEY,
        H.CHANNEL,
        H.GATEWAY_SEAL,
    }
)
_NOT_PROPAGATED = _CONTROL | {H.STATUS, H.TRACE_ID, H.HEADERS_DROPPED} | H.DLQ_CONTEXT
_DLQ_LEAVE_OUT = H.DLQ_CONTEXT | {H.ATTEMPT, H.HEADERS_DROPPED}
_STATUS_200 = (H.STATUS, b"200")
_TRACE_ID, _DEADLINE = H.TRACE_ID, H.DEADLINE  # read per record: one global load instead of two
_EXPIRED = {"code": "DEADLINE_EXCEEDED", "message": "the caller's deadline passed before processing"}
_NO_OPTIONS = RunOptions()
# The trail of a channel without per-task traces only feeds metrics: its entries need no changes.
_NO_OPTIONS_LEAN = RunOptions(changes=False)
log = logging.getLogger("quasar.worker")
_READ_ONLY = frozenset({"db_read", "cache_read", "mongo_read"})  # tasks whose re-run changes nothing


def propagated_headers(
    raw: Any, leave_out: frozenset[str] = _NOT_PROPAGATED, allow: HeaderFilter = DEFAULT_HEADERS
) -> HeaderList:
    """The input headers every produced record carries (control headers removed, then the channel's
    `headers` setting applied), bounded in size."""
    if not raw:
        return []
    out: HeaderList = []
    total = dropped = 0
    blocked, allowed = allow.blocked, allow.allowed  # locals: this runs for every record
    for name, value in raw.items() if isinstance(raw, Mapping) else raw:
        if name in leave_out or name.startswith(H.CONNECT_PREFIX):
            continue
        lower = name.lower()
        if lower in blocked or (allowed is not None and lower not in allowed):
            continue
        data = value.encode() if isinstance(value, str) else value  # None stays None (a header without value)
        length = len(data) if data is not None else 0
        size = len(name) + length
        if length > MAX_HEADER_VALUE or total + size > MAX_HEADERS_TOTAL:
            dropped += 1
            continue
        total += size
        out.append((name, data))
    if dropped:
        out.append((H.HEADERS_DROPPED, str(dropped).encode()))
    return out


def _check_control_headers(raw: Any) -> None:
    for name, value in raw.items() if isinstance(raw, Mapping) else raw:
        if name in _CONTROL and isinstance(value, bytes):
            try:
                value.decode()
            except UnicodeDecodeError:
                raise InvalidEnvelope(f"header {name} is not valid UTF-8: {value[:64]!r}") from None


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def is_transient(exc: BaseException) -> bool:
    """A failure that may heal by itself: connection errors, upstream 5xx / 408 / 429, a service (config,
    store) not ready. Not: timeouts (the connector's own `retry` policy decides), an open circuit (it fails
    fast on purpose), anything deterministic (engine errors, validation, unknown function, bad input)."""
    from app.connectors.errors import ConnectorError  # connectors sit beside the worker, loaded lazily

    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ConnectorError | CircuitOpen):
            return bool(err.retryable)
        if isinstance(err, ServiceUnavailable):
            return bool(err.retryable)
        err = err.__cause__
    return False


@dataclass(slots=True)
class _Cause:
    task_id: str | None = None
    function: str | None = None
    inner: str | None = None
    stage: str = "TASK_PUT"  # Kafka Connect's stage names
    stacktrace: str | None = None


class Pipeline:
    """Turns records into outcomes. One per worker; holds no per-record state."""

    def __init__(
        self,
        names: TopicNames,
        *,
        max_record_bytes: int,
        max_result_bytes: int,
        max_produce_bytes: int = MAX_PRODUCE_BYTES,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.5,
        schemas: SchemaCache | None = None,
        registry: SchemaRegistry | None = None,
        services: Any = None,
        observe: Callable[[str, Any, float, float], None] | None = None,
        explain_requests: bool = True,
    ) -> None:
        self.names = names
        self.explain_requests = explain_requests  # honour x-quasar-explain / ?explain=1 (docs/rules.md)
        self.max_record_bytes = max_record_bytes
        self.max_produce_bytes = max_produce_bytes
        self.max_result_bytes = min(max_result_bytes, max_produce_bytes - MAX_HEADERS_TOTAL - 1024)
        self.max_attempts = max(1, max_attempts)
        self.retry_backoff_s = retry_backoff_s
        self.schemas = schemas or SchemaCache()
        self._registry = registry
        self.services = services
        self.tracing: Any = None  # app.observability.tracing.Tracing when QUASAR_TRACING_ENABLED
        self._observe = observe
        self._tasks: tuple[Any, dict[tuple[str, str], Any]] = (None, {})
        self.heavy: set[str] = set()  # channels whose synchronous records run in a thread (_classify)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def registry(self) -> SchemaRegistry:
        """The Schema Registry codec (made on first use: most workers have no registry channel)."""
        if self._registry is None:
            self._registry = SchemaRegistry()
        return self._registry

    # -- heavy channels run off the loop -----------------------------------------------------------
    def _classify(self, channel: str, elapsed: float) -> None:
        """A synchronous run of HEAVY_RECORD_S or more marks its channel heavy (its next records run in a
        thread, and the worker takes them off its in-order batch loop); a run under LIGHT_RECORD_S unmarks it.
        Light records stay on the loop: a thread hand-off costs more than a whole light record."""
        if elapsed >= HEAVY_RECORD_S:
            self.heavy.add(channel)
        elif elapsed < LIGHT_RECORD_S and channel in self.heavy:
            self.heavy.discard(channel)

    def _offload_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # One thread: the GIL runs one record at a time anyway; the point is the loop's responsiveness.
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quasar-heavy-record")
        return self._pool

    def close(self) -> None:
        """Stop the heavy-record thread (after the last record)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- the contract ------------------------------------------------------------------------------
    def _span(self, channel: str, hm: Mapping[str, str], metadata: dict[str, Any]) -> Any:
        """Start this record's span (tracing on) and put the trace context in the message's metadata, so
        every `http_call` of the request continues the caller's trace (one trace id per request)."""
        incoming = hm.get(H.TRACEPARENT)
        tracing = self.tracing
        if tracing is None:
            if incoming and "traceparent" not in metadata:
                metadata["traceparent"] = incoming
            return None
        span = tracing.tracer.start_span(
            f"process {channel}",
            context=tracing.context_of(incoming),
            attributes={"quasar.channel": channel, "messaging.system": "kafka"},
        )
        metadata["traceparent"] = tracing.traceparent_of(span)
        return span

    def _end_span(self, span: Any, audit_trail: Any, started: float, error: BaseException | None = None) -> None:
        assert self.tracing is not None
        self.tracing.record_run(span, audit_trail, int(started * 1e9))
        if error is not None:
            span.record_exception(error)
        span.end()

    async def handle(
        self,
        record: RecordLike,
        view: WorkerView,
        clock: Clock = time.time,
        *,
        attempt: int = 1,
        first_failed_ms: int = 0,
        headers: tuple[Any, dict[str, str]] | None = None,
        runs: list[Run] | None = None,
    ) -> Outcome:
        """Process one record. Never raises for anything a record can contain.

        `headers`: the record's raw headers and their `header_map`, when the caller already read them
        (confluent-kafka builds a new list on every `headers()` call). `runs`: where the run goes to be
        observed later (`WorkflowObserver.observe_runs`, the batch loop's); without it, observed now."""
        topic = record.topic() or ""
        route = view.routes.get(topic)
        if headers is None:
            raw = record.headers()
            hm = H.header_map(raw) if raw else {}
        else:
            raw, hm = headers
        if route is None:
            route = ChannelRoute(hm.get(H.CHANNEL, "")[:255], topic, True, None, None)
            return self.failed(record, route, hm, NotFound(f"no active channel reads topic '{topic}'"), view, clock)
        now = clock()
        deadline = hm.get(_DEADLINE)
        deadline_ms = parse_uint(deadline) if deadline is not None else None
        if deadline_ms is not None and deadline_ms <= now * 1000:
            traced = _traced(route, hm, failed=True)
            return Outcome(
                "expired", route.name, [self._trace(record, route, hm, now, clock, failed=_EXPIRED)] if traced else []
            )
        message: EngineMessage | None = None
        span: Any = None
        try:
            if route.config_error is not None:
                raise BadRequest(route.config_error)
            if deadline is not None and deadline_ms is None:
                raise InvalidEnvelope(f"malformed {H.DEADLINE} header {deadline[:64]!r}: expected epoch ms")
            if raw and len(raw) != len(hm):  # some value was dropped as undecodable
                _check_control_headers(raw)
            reply_to = view.reply_to(hm) if H.REPLY_TO in hm else None
            value = record.value()
            if value is not None and len(value) > self.max_record_bytes:
                check_record_size(value, self.max_record_bytes)
            if route.registry is not None:
                data = await self.registry.decode(route.registry, value, topic)
                metadata: dict[str, Any] = {}
            elif route.avro_schema is not None:
                data, metadata = decode_avro(value, self.schemas.get(route.avro_schema))
            elif route.envelope == "raw":
                data, metadata = decode_raw(value)
            else:
                data, metadata = decode_json(value)
            _ingest_metadata(metadata, record, topic)
            if route.validation is not None:
                _validate(route.validation, data, metadata)
            engine = view.engine
            if engine is None or not engine.has_channel(route.name):
                raise NotFound(f"Channel '{route.name}' not found")
            trace_id = trace_id_of(record, hm)
            if self.tracing is not None or H.TRACEPARENT in hm:
                span = self._span(route.name, hm, metadata)  # OpenTelemetry; also continues the caller's trace
            # `metadata` is this record's own (just decoded): no copy, unlike `Message.from_request`.
            message = EngineMessage(data, metadata=metadata, id=(hm.get(H.REQUEST_ID) if hm else None) or trace_id)
            if self.explain_requests and (
                (H.EXPLAIN in hm and is_yes(hm[H.EXPLAIN]))
                or (("headers" in metadata or "query" in metadata) and explain_requested(metadata))
            ):
                message.explain = []  # rule functions record their decision paths (docs/rules.md)
            if (
                deadline is None
                and route.rollout_channel is None
                and H.ROLLOUT_KEY not in hm
                and route.name in engine.sync_channels
            ):
                # the common case, decided without building anything
                options = _NO_OPTIONS if route.per_task else _NO_OPTIONS_LEAN
            else:
                options = self._options(record, route, hm, data, metadata, deadline, engine)
            if route.per_task:  # each task's changes, encoded as the task finishes (docs/concepts.md)
                message.audit_trail = TaskTrail(self._task_index(engine))
            started = time.perf_counter()
            if options.services is None:
                if route.name in self.heavy:  # off the loop: other partitions keep flowing meanwhile
                    await asyncio.get_running_loop().run_in_executor(
                        self._offload_pool(), engine.process_sync, route.name, message, options
                    )
                else:
                    engine.process_sync(route.name, message, options)
                elapsed = time.perf_counter() - started
                if elapsed >= HEAVY_RECORD_S or self.heavy:
                    self._classify(route.name, elapsed)
            else:
                await engine.process(route.name, message, options)
                elapsed = time.perf_counter() - started
            if runs is not None:
                runs.append((route.name, message.audit_trail, now, elapsed))
            elif self._observe is not None:
                self._observe(route.name, message.audit_trail, now, elapsed)
            if span is not None:
                self._end_span(span, message.audit_trail, now)
                span = None
            body: bytes = message.response_json()
            if len(body) > self.max_result_bytes:
                raise ResponseTooLarge(
                    f"Response of {len(body)} bytes exceeds the limit of {self.max_result_bytes} bytes"
                )
            output: bytes | None = None  # the output record's value when it is not `body`
            if route.registry is not None and route.output_topic is not None and route.is_async:
                # The result's `data` in the wire format, under the output topic's subject.
                output = await self.registry.encode(route.registry, message.context["data"], route.output_topic)
                if len(output) > self.max_result_bytes:
                    raise ResponseTooLarge(
                        f"Output of {len(output)} bytes exceeds the limit of {self.max_result_bytes} bytes"
                    )
        except QuasarError as exc:
            if span is not None:
                self._end_span(span, message.audit_trail if message else (), now, exc)
            return self.failed(
                record, route, hm, exc, view, clock, message=message, attempt=attempt, first_failed_ms=first_failed_ms
            )
        except Exception as exc:  # an engine bug must not stop the partition
            if span is not None:
                self._end_span(span, message.audit_trail if message else (), now, exc)
            err = EngineFailure("An internal engine error occurred")
            err.__cause__ = exc
            return self.failed(
                record, route, hm, err, view, clock, message=message, attempt=attempt, first_failed_ms=first_failed_ms
            )
        return self._ok(record, raw, route, hm, body, reply_to, now, clock, trace_id, message, output)

    def failed(
        self,
        record: RecordLike,
        route: ChannelRoute,
        hm: Mapping[str, str],
        exc: QuasarError,
        view: WorkerView,
        clock: Clock = time.time,
        *,
        message: EngineMessage | None = None,
        attempt: int = 1,
        first_failed_ms: int = 0,
    ) -> Outcome:
        """A retry decision (transient failure, attempts left, no side effect done) or the DLQ outcome:
        the dead letter, the error reply to a sync caller and the failed trace."""
        now = clock()
        first = hm.get(H.DLQ_FIRST_FAILED_AT)
        first_ms = parse_uint(first) or first_failed_ms or int(now * 1000)
        done = self._side_effects_done(route, message, view.engine)
        policy = route.channel.retry if route.channel is not None else None  # the channel's `retry` setting
        max_attempts = policy.max_attempts if policy is not None and policy.max_attempts else self.max_attempts
        if is_transient(exc) and attempt < max_attempts and not done:
            backoff = self.retry_backoff_s
            if policy is not None and policy.backoff_ms is not None:
                backoff = policy.backoff_ms / 1000.0
            delay = backoff * (2 ** (attempt - 1))
            if policy is not None and policy.max_backoff_ms is not None:
                delay = min(delay, policy.max_backoff_ms / 1000.0)
            return Outcome("retry", route.name, [], retry_in=delay, error=exc, first_failed_ms=first_ms)
        cause = self._cause(exc, message, route, view.engine)
        text = exc.message
        if cause.inner and cause.inner not in text:
            where = f"task '{cause.task_id}' ({cause.function})" if cause.task_id else "cause"
            text = f"{text}; {where}: {cause.inner}"
        if done and is_transient(exc):
            text += f" (not retried: task '{done}' already completed)"
        text = _clip(text)
        prior = hm.get(H.ATTEMPT)
        prior_n = parse_uint(prior)
        attempts = (prior_n - 1 if prior_n else 0) + attempt
        topic, partition, offset = where_of(record)
        headers = _dlq_headers(
            record.headers(),
            route.headers,
            channel=route.name,
            code=exc.code,
            message=text,
            attempts=attempts,
            first_failed_ms=first_ms,
            where=(topic, partition, offset),
            cause=cause,
        )
        value = record.value()
        value, headers = bounded_dlq(value, record.key(), headers, self.max_produce_bytes)
        out: list[Produce] = [(self.names.dlq, value, record.key(), headers, -1)]
        reply_to = None
        if not isinstance(exc, ReplyToRefused):
            with contextlib.suppress(QuasarError):
                reply_to = view.reply_to(hm)
        error_doc: dict[str, Any] = {"code": exc.code, "message": _clip(exc.message)}
        if reply_to is not None:
            reply_headers = [
                (H.STATUS, str(exc.status).encode()),
                *propagated_headers(record.headers(), allow=route.headers),
            ]
            body = orjson.dumps({"error": error_doc})
            out.append((reply_to[0], body, hm[H.CORRELATION_ID], reply_headers, reply_to[1]))
        trace_error = dict(error_doc)
        if cause.task_id:
            trace_error["task_id"] = cause.task_id
            trace_error["function"] = cause.function
        if cause.inner:
            trace_error["cause"] = _clip(cause.inner)
        if _traced(route, hm, failed=True):
            trail = b""
            if route.per_task and message is not None and isinstance(message.audit_trail, TaskTrail):
                trail = message.audit_trail.encode(MAX_TRAIL_BYTES)
            out.append(self._trace(record, route, hm, now, clock, failed=trace_error, trail=trail))
        return Outcome("dlq", route.name, out, error=exc, first_failed_ms=first_ms)

    def last_resort(self, record: RecordLike, exc: BaseException, channel: str = "") -> Outcome:
        """The dead letter of a record whose processing raised (a bug, never the record's content by design):
        built from nothing that could have failed (no original headers, no reply, no trace), so the record is
        kept and its partition moves on."""
        topic, partition, offset = where_of(record)
        key = record.key()
        if isinstance(key, bytes) and len(key) > MAX_HEADER_VALUE:
            key = None
        headers: HeaderList = [
            (H.DLQ_ORIGINAL_TOPIC, topic.encode()),
            (H.DLQ_ORIGINAL_PARTITION, str(partition).encode()),
            (H.DLQ_ORIGINAL_OFFSET, str(offset).encode()),
            (H.DLQ_STAGE, b"WORKER"),
            (H.DLQ_CLASS_NAME, b"quasar.worker"),
            (H.DLQ_ERROR_CODE, b"INTERNAL_ERROR"),
            (H.DLQ_ERROR_MESSAGE, f"internal worker error: {type(exc).__name__}".encode()),
            (H.DLQ_ATTEMPTS, b"1"),
            (H.DLQ_FIRST_FAILED_AT, str(int(time.time() * 1000)).encode()),
        ]
        value, headers = bounded_dlq(record.value(), key, headers, self.max_produce_bytes)
        err = EngineFailure("An internal worker error occurred")
        err.__cause__ = exc
        return Outcome("dlq", channel, [(self.names.dlq, value, key, headers, -1)], error=err)

    # -- pieces ------------------------------------------------------------------------------------
    def _options(
        self,
        record: RecordLike,
        route: ChannelRoute,
        hm: Mapping[str, str],
        data: Any,
        metadata: Any,
        deadline: str | None,
        engine: Any,
    ) -> RunOptions:
        rkey = hm.get(H.ROLLOUT_KEY)
        if not rkey and route.rollout_channel is not None:  # governance: Kafka-ingested sticky key
            rkey = record_rollout_key(route.rollout_channel, record.key(), hm, data, metadata)
        changes = route.per_task  # what TaskTrail encodes; otherwise the trail only feeds metrics
        if engine.is_sync(route.name):
            if not rkey and not deadline:
                return _NO_OPTIONS if changes else _NO_OPTIONS_LEAN
            return RunOptions(
                rollout_bucket=rollout_bucket(rkey) if rkey else None,
                deadline=int(deadline) / 1000.0 if deadline else None,
                changes=changes,
            )
        return RunOptions(
            rollout_bucket(rkey) if rkey else None,
            int(deadline) / 1000.0 if deadline else None,
            self.services if self.services is not None else _NoServices(),
            changes=changes,
        )

    def _ok(
        self,
        record: RecordLike,
        raw: Any,
        route: ChannelRoute,
        hm: Mapping[str, str],
        body: bytes,
        reply_to: tuple[str, int] | None,
        now: float,
        clock: Clock,
        trace_id: str,
        message: EngineMessage,
        output: bytes | None = None,
    ) -> Outcome:
        carried = propagated_headers(raw, allow=route.headers) if raw else []
        out: list[Produce] = []
        if reply_to is not None:
            out.append((reply_to[0], body, hm[H.CORRELATION_ID], [_STATUS_200, *carried], reply_to[1]))
        if route.output_topic is not None and route.is_async:
            headers = [route.channel_header, (_TRACE_ID, trace_id.encode()), *carried]
            key = record.key() if route.key_logic is None else self._output_key(route, record, message)
            out.append((route.output_topic, body if output is None else output, key, headers, -1))
        if _traced(route, hm, failed=False):
            trail = b""
            if route.per_task and isinstance(message.audit_trail, TaskTrail):
                # the room the (bounded) result leaves; 2048 covers the trace's own fields (id, channel, ...)
                room = self.max_produce_bytes - MAX_HEADERS_TOTAL - len(body) - 2048
                trail = message.audit_trail.encode(min(MAX_TRAIL_BYTES, room))
            out.append(
                self._trace(record, route, hm, now, clock, result=body, trace_id=trace_id, carried=carried, trail=trail)
            )
        return Outcome("ok", route.name, out)

    @staticmethod
    def _output_key(route: ChannelRoute, record: RecordLike, message: EngineMessage) -> bytes | str | None:
        key = record.key()
        if route.key_logic is None:
            return key
        ctx = message.context
        try:
            value = route.key_logic.evaluate(
                {"data": ctx["data"], "metadata": ctx["metadata"], "payload": message.payload, "key": _text(key)}
            )
        except Exception:
            return key  # a rule that cannot be evaluated keeps the input key (never loses the record)
        if value is None or value == "":
            return key
        return value if isinstance(value, str) else orjson.dumps(value)

    def _trace(
        self,
        record: RecordLike,
        route: ChannelRoute,
        hm: Mapping[str, str],
        now: float,
        clock: Clock,
        *,
        result: bytes | None = None,
        failed: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
        carried: HeaderList | None = None,
        trail: bytes = b"",
    ) -> Produce:
        trace_id = trace_id or trace_id_of(record, hm)
        created = record.timestamp()[1]
        done_ms = int(clock() * 1000)
        if created <= 0:
            created = int(now * 1000)
        # The same bytes as orjson.dumps({"id", "status", "mode", "channel", "created_at", "completed_at",
        # "duration_ms", "result" | "error", per-task "audit_trail"}), but the constant middle is encoded once
        # per (channel, status, mode) and the result body is spliced in, never parsed again.
        completed = failed is None
        mode = hm.get(H.MODE) or ("sync" if H.REPLY_TO in hm else "async")
        middle = _trace_middle(route.name, completed, mode)
        value = (_COMPLETED_TRACE if completed else _FAILED_TRACE) % (
            orjson.dumps(trace_id),
            middle,
            _iso(created),
            _iso(done_ms),
            max(0, done_ms - created),
            (result if result is not None else b"null") if completed else orjson.dumps(failed),
            trail,
        )
        if carried is None:
            carried = propagated_headers(record.headers(), allow=route.headers)
        return (self.names.traces, value, trace_id, carried or None, -1)

    def _task_index(self, engine: Any) -> dict[tuple[str, str], Any]:
        """(workflow id, task id) -> compiled task, for the engine of the current snapshot."""
        cached_for, index = self._tasks
        if cached_for is engine:
            return index
        index = {}
        for channel in getattr(engine, "channels", ()):
            for wf in engine.workflows(channel):
                for task in wf.tasks:
                    index[(wf.id, task.id)] = task
        self._tasks = (engine, index)
        return index

    def _side_effects_done(self, route: ChannelRoute, message: EngineMessage | None, engine: Any) -> str | None:
        """The id of a task with side effects that completed on this delivery (None: re-running is safe)."""
        if message is None or not message.audit_trail:
            return None
        index = self._task_index(engine)
        for entry in message.audit_trail:
            if entry.status >= 400:
                continue
            task = index.get((entry.workflow_id, entry.task_id))
            if task is not None and task.side_effects and task.function_name not in _READ_ONLY:
                return str(entry.task_id)
        return None

    def _cause(self, exc: QuasarError, message: EngineMessage | None, route: ChannelRoute, engine: Any) -> _Cause:
        cause = _Cause()
        if message is None:
            cause.stage = "VALUE_CONVERTER" if exc.status < 500 else "TASK_PUT"
        failing = next((e for e in reversed(message.errors) if e.get("task_id")), None) if message else None
        if failing is not None:  # a task raised: the engine recorded a TASK_ERROR
            cause.task_id = str(failing.get("task_id"))
            workflow_id = str(failing.get("workflow_id"))
            cause.inner = str(failing.get("message", ""))
        elif message is not None and message.audit_trail and message.audit_trail[-1].status >= 500:
            last = message.audit_trail[-1]  # a task answered a failure status
            cause.task_id, workflow_id = str(last.task_id), str(last.workflow_id)
        if cause.task_id is not None:
            task = self._task_index(engine).get((workflow_id, cause.task_id))
            cause.function = task.function_name if task is not None else None
        inner = exc.__cause__
        if inner is not None:
            text = getattr(inner, "message", None) or str(inner)
            if not cause.inner:
                cause.inner = f"{type(inner).__name__}: {text}"
            if not isinstance(inner, QuasarError):  # a bug: keep where it happened
                cause.stacktrace = "".join(traceback.format_exception(inner))[-MAX_HEADER_VALUE:]
        return cause


class _NoServices:
    """Connector runtime of a pipeline built without one: every connector task fails clearly."""

    def __getattr__(self, name: str) -> Any:
        raise ServiceUnavailable("no connector runtime in this worker")


def _validate(rule: Logic, data: Any, metadata: Mapping[str, Any]) -> None:
    # The gateway's context: Orion's real paths (metadata.headers/params) and its documented ones.
    context = {
        "data": data,
        "metadata": metadata,
        "headers": metadata.get("headers", {}),
        "path": metadata.get("params", {}),
        "params": metadata.get("params", {}),
        "query": metadata.get("query", {}),
    }
    try:
        ok = is_truthy(rule.evaluate(context))
    except Exception as exc:
        raise ValidationRefused(f"Input validation error: {exc}") from None
    if not ok:
        raise ValidationRefused("Input validation failed")


def _ingest_metadata(metadata: dict[str, Any], record: RecordLike, topic: str) -> None:
    """Drop client-supplied internal fields; say where the record came from."""
    if metadata:
        internal = [k for k in metadata if k.startswith("_quasar_")]
        for k in internal:
            del metadata[k]
    metadata["kafka_topic"] = topic
    metadata["kafka_partition"] = record.partition()
    metadata["kafka_offset"] = record.offset()
    metadata["kafka_key"] = _text(record.key())


def _text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


def _dlq_headers(
    original: Any,
    allow: HeaderFilter,
    *,
    channel: str,
    code: str,
    message: str,
    attempts: int,
    first_failed_ms: int,
    where: tuple[str, int, int],
    cause: _Cause,
) -> HeaderList:
    """Original headers (bounded, minus old error context) + Kafka Connect's error context + Quasar's."""
    topic, partition, offset = where
    out = propagated_headers(original, _DLQ_LEAVE_OUT, allow)  # control headers kept: a replay needs them
    out += [
        (H.DLQ_ORIGINAL_TOPIC, topic.encode()),
        (H.DLQ_ORIGINAL_PARTITION, str(partition).encode()),
        (H.DLQ_ORIGINAL_OFFSET, str(offset).encode()),
        (H.DLQ_CONNECTOR_NAME, channel.encode()),
        (H.DLQ_TASK_ID, (cause.task_id or "").encode()),
        (H.DLQ_STAGE, cause.stage.encode()),
        (H.DLQ_CLASS_NAME, (cause.function or "quasar.worker").encode()),
        (H.DLQ_ERROR_CODE, code.encode()),
        (H.DLQ_ERROR_MESSAGE, message.encode()[:MAX_HEADER_VALUE]),
        (H.DLQ_CHANNEL, channel.encode()),
        (H.DLQ_ATTEMPTS, str(attempts).encode()),
        (H.DLQ_FIRST_FAILED_AT, str(first_failed_ms).encode()),
    ]
    if cause.stacktrace:
        out.append((H.DLQ_STACKTRACE, cause.stacktrace.encode()[-MAX_HEADER_VALUE:]))
    return out


def bounded_dlq(
    value: bytes | None, key: bytes | str | None, headers: HeaderList, limit: int
) -> tuple[bytes | None, HeaderList]:
    """The DLQ copy of `value`: itself, or None plus `quasar-dlq-value-dropped: <size>` when the record
    would be larger than `limit` (the original stays readable at its topic/partition/offset)."""
    if value is None:
        return None, headers
    size = len(value) + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
    if size <= limit:
        return value, headers
    return None, [*headers, (H.DLQ_VALUE_DROPPED, str(len(value)).encode())]


_MIDDLES: dict[tuple[str, bool, str], bytes] = {}
_COMPLETED_TRACE = b'{"id":%b%b"created_at":"%b","completed_at":"%b","duration_ms":%d,"result":%b%b}'
_FAILED_TRACE = b'{"id":%b%b"created_at":"%b","completed_at":"%b","duration_ms":%d,"error":%b%b}'


def _traced(route: ChannelRoute, hm: Mapping[str, str], *, failed: bool) -> bool:
    """The channel's `tracing` policy (all | errors | sample:<ratio> | off) for one record: with `off` (or a
    success under `errors` / outside the sample) no trace record is built at all. Without the setting, a
    record the gateway produced (it always sets `quasar-mode`) is traced, one produced straight to the topic
    only when it fails (`TracingPolicy.ingested`) or is a replayed dead letter (`quasar-attempt`: its success
    replaces the failed trace). A forged header only buys its producer a trace."""
    policy = route.tracing if hm and (H.MODE in hm or H.ATTEMPT in hm) else route.ingested_tracing
    return policy.traces(failed=failed)


def _trail_value(value: Any) -> Any:
    """A value for a per-task trace: itself (pre-encoded) or, if longer than MAX_TRAIL_VALUE_BYTES encoded,
    a marker with its size and the start of its text."""
    try:
        raw = orjson.dumps(value, default=str)
    except (TypeError, orjson.JSONEncodeError):
        raw = orjson.dumps(repr(value)[: MAX_TRAIL_VALUE_BYTES * 2])
    if len(raw) <= MAX_TRAIL_VALUE_BYTES:
        return orjson.Fragment(raw)
    return {"_truncated": True, "bytes": len(raw), "preview": raw[:256].decode("utf-8", "ignore")}


class TaskTrail(list[AuditEntry]):
    """A message's audit trail that, for per-task tracing, encodes each entry the moment the engine records
    it (both engine paths append to `message.audit_trail`), so a value a later task mutates in place still
    shows as it was after this task. Entries are Orion's (`workflow_id`, `task_id`, `timestamp`, `changes`,
    `status`) plus `function` and `duration_ms` (since the run started or the previous task finished).

    Bounded: a value longer than MAX_TRAIL_VALUE_BYTES becomes `{"_truncated": true, "bytes", "preview"}`,
    changes past MAX_TRAIL_CHANGES are counted (`changes_omitted`), and entries stop being encoded past
    MAX_TRAIL_BYTES; `encode(budget)` counts what does not fit (`audit_trail_omitted`)."""

    def __init__(self, tasks: Mapping[tuple[str, str], Any]) -> None:
        super().__init__()
        self._tasks = tasks
        self._previous = time.time()
        self._encoded: list[bytes] = []
        self._size = 0

    def append(self, entry: AuditEntry) -> None:
        super().append(entry)
        if self._size > MAX_TRAIL_BYTES:
            return  # counted as omitted by `encode`
        task = self._tasks.get((entry.workflow_id, entry.task_id))
        changes = entry.changes
        doc: dict[str, Any] = {
            "workflow_id": entry.workflow_id,
            "task_id": entry.task_id,
            "function": task.function_name if task is not None else None,
            "timestamp": rfc3339(entry.ts),
            "status": entry.status,
            "duration_ms": round(max(0.0, entry.ts - self._previous) * 1000, 3),
            "changes": [
                {"path": path, "old_value": _trail_value(old), "new_value": _trail_value(new)}
                for path, old, new in changes[:MAX_TRAIL_CHANGES]
            ],
        }
        if len(changes) > MAX_TRAIL_CHANGES:
            doc["changes_omitted"] = len(changes) - MAX_TRAIL_CHANGES
        self._previous = entry.ts
        part = orjson.dumps(doc)
        self._encoded.append(part)
        self._size += len(part) + 1

    def encode(self, budget: int) -> bytes:
        """`,"audit_trail":[...]` in at most about `budget` bytes, plus `,"audit_trail_omitted":<n>` if cut."""
        used = len(b',"audit_trail":[]') + 40  # 40: room for the omitted counter
        kept = 0
        for part in self._encoded:
            if used + len(part) + 1 > budget:
                break
            used += len(part) + 1
            kept += 1
        out = b',"audit_trail":[' + b",".join(self._encoded[:kept]) + b"]"
        if kept < len(self):
            out += b',"audit_trail_omitted":%d' % (len(self) - kept)
        return out


def _trace_middle(channel: str, completed: bool, mode: str) -> bytes:
    """`,"status":..,"mode":..,"channel":..,` of a trace record, encoded once per combination."""
    key = (channel, completed, mode)
    middle = _MIDDLES.get(key)
    if middle is None:
        middle = (
            b',"status":'
            + (b'"completed"' if completed else b'"failed"')
            + b',"mode":'
            + orjson.dumps(mode[:32])
            + b',"channel":'
            + orjson.dumps(channel)
            + b","
        )
        if mode in ("sync", "async") and len(_MIDDLES) < 4096:  # `mode` is a header: cache the known ones
            _MIDDLES[key] = middle
    return middle


def where_of(record: RecordLike) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record; confluent types them optional, but a record
    without an error always has all three (the fallbacks only satisfy the types)."""
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    return topic or "", -1 if partition is None else partition, -1 if offset is None else offset


def trace_id_of(record: RecordLike, hm: Mapping[str, str]) -> str:
    # Deterministic fallback: a redelivered record overwrites its own trace instead of adding one.
    if hm:  # most records produced straight to a topic carry no headers at all
        found = hm.get(H.TRACE_ID) or hm.get(H.CORRELATION_ID) or hm.get(H.REQUEST_ID)
        if found:
            return found[:256]
    return f"{record.topic()}-{record.partition()}-{record.offset()}"


_SECONDS: dict[int, bytes] = {}
_STAMPS: dict[int, bytes] = {}  # ms -> the whole stamp: a trace's two stamps and a batch's records share a few


def _iso(ms: int) -> bytes:
    """RFC 3339 UTC with milliseconds, as bytes for a trace record; cached per millisecond and per second."""
    text = _STAMPS.get(ms)
    if text is None:
        if len(_STAMPS) > 4096:
            _STAMPS.clear()
        secs, rem = divmod(ms, 1000)
        head = _SECONDS.get(secs)
        if head is None:
            if len(_SECONDS) > 64:
                _SECONDS.clear()
            head = _SECONDS[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode()
        text = _STAMPS[ms] = b"%b.%03dZ" % (head, rem)
    return text

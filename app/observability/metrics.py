"""Every Prometheus metric Quasar exports, defined once (prometheus-client, default registry).

Naming: Orion's metrics keep Orion's exact names and labels (`messages_total`, `http_requests_total`,
`circuit_breaker_trips_total`, ...), so dashboards and alerts written for Orion keep working; metrics
Orion does not have carry the `quasar_` namespace. Base units (`_seconds`), counters end in `_total`.

Labels are bounded: channel, workflow and task ids come from the config (operator-controlled), HTTP
paths are route templates (never raw URLs), error types are error codes.

Code elsewhere imports the objects from here and never creates its own; `metric_names()` lists what
this process exports so tests can prove that dashboards and alert rules only use real metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "ACTIVE_WORKFLOWS",
    "BREAKER_REJECTIONS",
    "BREAKER_TRIPS",
    "BUILD_INFO",
    "CACHE_HITS",
    "CACHE_MISSES",
    "CONFIG_APPLIED_OFFSET",
    "CONFIG_CHANGES_APPLIED",
    "CONFIG_PROPAGATION_DELAY",
    "DATA_UNAUTHORIZED",
    "DEDUP_DUPLICATES",
    "DLQ_RECORDS",
    "ENGINE_RELOADS",
    "ENGINE_RELOAD_DURATION",
    "ERRORS",
    "EXPIRED",
    "GOVERNANCE_DEGRADED",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "LAG",
    "MESSAGES",
    "MESSAGE_DURATION",
    "RATE_LIMIT_REJECTIONS",
    "REPLY_TIMEOUTS",
    "RETRIES",
    "SYNC_IN_FLIGHT",
    "TASK_DURATION",
    "TASK_RUNS",
    "WORKFLOW_DURATION",
    "WORKFLOW_RUNS",
    "ConsumerLagCollector",
    "WorkflowObserver",
    "consumer_lag",
    "metric_names",
    "observe_config_record",
    "observe_reload",
]

# Sub-millisecond buckets: a workflow run on this engine takes tens of microseconds.
_FAST_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_PROPAGATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# -- Orion's set ------------------------------------------------------------------------------------
MESSAGES = Counter(
    "messages_total",
    "Channel records processed by the worker, by outcome (ok, dlq, expired).",
    ["channel", "status"],
)
MESSAGE_DURATION = Histogram(
    "message_duration_seconds",
    "Time to run a channel's workflows on one record (engine time).",
    ["channel"],
    buckets=_FAST_BUCKETS,
)
ERRORS = Counter("errors_total", "Errors answered or dead-lettered, by error code.", ["type"])
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served (path = route template).", ["method", "path", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency, first byte in to last byte out.",
    ["method", "path", "status"],
    buckets=_HTTP_BUCKETS,
)
ENGINE_RELOADS = Counter(
    "engine_reloads_total", "Engine rebuilds after a config change (ok, error).", ["status"]
)
ENGINE_RELOAD_DURATION = Histogram(
    "engine_reload_duration_seconds",
    "Time to rebuild the engine after a config change.",
    buckets=_FAST_BUCKETS,
)
ACTIVE_WORKFLOWS = Gauge("active_workflows", "Workflows loaded in the engine (active versions).")
BREAKER_TRIPS = Counter(
    "circuit_breaker_trips_total",
    "Circuit breaker trip events (closed/half-open -> open).",
    ["connector", "channel"],
)
BREAKER_REJECTIONS = Counter(
    "circuit_breaker_rejections_total", "Calls rejected by an open circuit breaker.", ["connector", "channel"]
)
# Orion labels this by client; a client key is unbounded, so Quasar labels by channel.
RATE_LIMIT_REJECTIONS = Counter(
    "rate_limit_rejections_total", "Requests rejected by a channel's rate limit (429).", ["channel"]
)

# -- Quasar additions ---------------------------------------------------------------------------------
BUILD_INFO = Gauge("quasar_build_info", "Always 1; labels say what runs.", ["version", "component"])
WORKFLOW_RUNS = Counter(
    "quasar_workflow_runs_total", "Workflow runs (a workflow that executed at least one task).",
    ["channel", "workflow"],
)
WORKFLOW_DURATION = Histogram(
    "quasar_workflow_duration_seconds",
    "Time from the run's start to a workflow's last task (approximate per workflow).",
    ["channel", "workflow"],
    buckets=_FAST_BUCKETS,
)
TASK_RUNS = Counter(
    "quasar_task_runs_total", "Executed tasks by result status code.", ["workflow", "task", "status"]
)
TASK_DURATION = Histogram(
    "quasar_task_duration_seconds",
    "Task latency measured between consecutive audit entries (includes skipped-condition checks).",
    ["workflow", "task"],
    buckets=_FAST_BUCKETS,
)
DLQ_RECORDS = Counter(
    "quasar_dlq_records_total", "Records sent to the dead letter topic.", ["channel", "code"]
)
RETRIES = Counter("quasar_retries_total", "Retry attempts of retryable failures.", ["channel"])
EXPIRED = Counter(
    "quasar_expired_total", "Requests skipped because their quasar-deadline had passed.", ["channel"]
)
CONFIG_CHANGES_APPLIED = Counter(
    "quasar_config_changes_applied_total",
    "Config proposals folded by this process's config reader, by outcome (applied, rejected).",
    ["kind", "outcome"],
)
CONFIG_PROPAGATION_DELAY = Histogram(
    "quasar_config_propagation_delay_seconds",
    "Config record timestamp to applied in this process (only after the initial catch-up).",
    buckets=_PROPAGATION_BUCKETS,
)
CONFIG_APPLIED_OFFSET = Gauge(
    "quasar_config_applied_offset", "Offset of the last config record this process folded."
)
SYNC_IN_FLIGHT = Gauge("quasar_sync_requests_in_flight", "Sync HTTP requests waiting for their reply.")
REPLY_TIMEOUTS = Counter(
    "quasar_reply_timeouts_total", "Sync requests answered 504 because no reply came in time.", ["channel"]
)
DEDUP_DUPLICATES = Counter(
    "quasar_dedup_duplicates_total",
    "Requests caught as duplicates of an idempotency key.",
    ["channel", "outcome"],
)
CACHE_HITS = Counter("quasar_response_cache_hits_total", "Response cache hits.", ["channel"])
CACHE_MISSES = Counter("quasar_response_cache_misses_total", "Response cache misses.", ["channel"])
GOVERNANCE_DEGRADED = Counter(
    "quasar_governance_degraded_total",
    "Governance decisions taken without the shared store (Redis unreachable), by channel, feature and mode.",
    ["channel", "feature", "mode"],
)
DATA_UNAUTHORIZED = Counter(
    "quasar_data_unauthorized_total",
    "Data API requests refused for a missing or wrong channel API key.",
    ["channel"],
)

_LAG_NAME = "quasar_consumer_lag_records"


# -- helpers for the hot paths ---------------------------------------------------------------------------
class WorkflowObserver:
    """Per-workflow and per-task metrics from a processed message's audit trail.

    The engine is pure (no prometheus), but every executed task leaves an audit entry
    (`workflow_id`, `task_id`, wall-clock `ts`, `status`); durations are the gaps between them.
    Label children are cached: `labels()` costs more than the increment itself.
    """

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, key: tuple[str, ...]) -> Any:
        full = (metric._name, *key)
        child = self._children.get(full)
        if child is None:
            child = self._children[full] = metric.labels(*key)
        return child

    def observe(self, channel: str, audit_trail: Iterable[Any], started: float) -> None:
        """Record one run; `started` is `time.time()` taken just before the engine ran."""
        prev = started
        wf_id: str | None = None
        wf_last = started
        for entry in audit_trail:
            wid, tid, ts = entry.workflow_id, entry.task_id, entry.ts
            if wid != wf_id:
                if wf_id is not None:
                    self._end_workflow(channel, wf_id, wf_last - started)
                wf_id = wid
            self._child(TASK_RUNS, (wid, tid, str(entry.status))).inc()
            self._child(TASK_DURATION, (wid, tid)).observe(max(0.0, ts - prev))
            prev = wf_last = ts
        if wf_id is not None:
            self._end_workflow(channel, wf_id, wf_last - started)

    def _end_workflow(self, channel: str, workflow: str, seconds: float) -> None:
        self._child(WORKFLOW_RUNS, (channel, workflow)).inc()
        self._child(WORKFLOW_DURATION, (channel, workflow)).observe(max(0.0, seconds))


def observe_config_record(kind: str | None, outcome: str, record_ts_ms: int, *, caught_up: bool) -> None:
    """Count one folded config proposal; after catch-up also observe its propagation delay."""
    if outcome not in ("applied", "rejected"):
        return
    CONFIG_CHANGES_APPLIED.labels(kind or "unknown", outcome).inc()
    if caught_up and outcome == "applied" and record_ts_ms > 0:
        CONFIG_PROPAGATION_DELAY.observe(max(0.0, time.time() - record_ts_ms / 1000.0))


def observe_reload(seconds: float, *, ok: bool, active_workflows: int | None = None) -> None:
    """One engine rebuild after a config change."""
    ENGINE_RELOADS.labels("ok" if ok else "error").inc()
    ENGINE_RELOAD_DURATION.observe(seconds)
    if active_workflows is not None:
        ACTIVE_WORKFLOWS.set(active_workflows)


# -- consumer lag ---------------------------------------------------------------------------------------
class _LagSource(Protocol):
    def assignment(self) -> list[Any]: ...
    def position(self, partitions: list[Any]) -> list[Any]: ...
    def get_watermark_offsets(self, partition: Any, timeout: float = ..., cached: bool = ...) -> Any: ...


def consumer_lag(consumer: _LagSource) -> dict[tuple[str, int], int]:
    """Lag per assigned (topic, partition): the high watermark of the last fetch response minus the
    consumer's position. No broker round trip (`cached=True`). Partitions without a fetch yet or
    without a position are left out. On Tansu the watermark can be low when the last batch holds
    several records, so lag there is a lower bound.
    """
    out: dict[tuple[str, int], int] = {}
    try:
        assigned = consumer.assignment()
        if not assigned:
            return out
        positions = consumer.position(assigned)
    except Exception:  # closed or never subscribed: nothing to report
        return out
    for tp in positions:
        if tp.offset is None or tp.offset < 0:
            continue
        try:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
        except Exception:
            continue
        if high is None or high < 0:
            continue
        out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
    return out


class ConsumerLagCollector(Collector):
    """`quasar_consumer_lag_records{group,topic,partition}` computed at scrape time from tracked consumers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, tuple[str, Callable[[], _LagSource | None]]] = {}

    def track(self, group: str, get_consumer: Callable[[], _LagSource | None]) -> Callable[[], None]:
        """Report the consumer `get_consumer()` returns (None = nothing now); returns an untrack function."""
        token = id(get_consumer)
        with self._lock:
            self._sources[token] = (group, get_consumer)

        def untrack() -> None:
            with self._lock:
                self._sources.pop(token, None)

        return untrack

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared so `metric_names()` and registry checks see the family before any consumer exists.
        yield GaugeMetricFamily(_LAG_NAME, _LAG_HELP, labels=["group", "topic", "partition"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(_LAG_NAME, _LAG_HELP, labels=["group", "topic", "partition"])
        with self._lock:
            sources = list(self._sources.values())
        for group, get in sources:
            consumer = get()
            if consumer is None:
                continue
            for (topic, partition), lag in sorted(consumer_lag(consumer).items()):
                family.add_metric([group, topic, str(partition)], float(lag))
        yield family


_LAG_HELP = "Records behind the high watermark of the last fetch, per assigned partition."
LAG = ConsumerLagCollector()
REGISTRY.register(LAG)


def metric_names(registry: Any = REGISTRY) -> set[str]:
    """Every sample name this registry can export (counters with `_total`, histograms with
    `_bucket`/`_sum`/`_count`, ...), for checking dashboards and rules against the code."""
    names: set[str] = set()
    for family in registry.collect():
        base = family.name
        kind = family.type
        if kind == "counter":
            names.update({f"{base}_total", f"{base}_created"})
        elif kind == "histogram":
            names.update({f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"})
        elif kind == "summary":
            names.update({base, f"{base}_sum", f"{base}_count", f"{base}_created"})
        elif kind == "info":
            names.add(f"{base}_info")
        else:
            names.add(base)
        names.update(s.name for s in family.samples)
    return names

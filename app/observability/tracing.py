"""OpenTelemetry spans over OTLP/HTTP (Orion's `[tracing]`), off unless `QUASAR_TRACING_ENABLED`.

One span per HTTP request (gateway), per record a worker runs, per workflow and task of that run (from the
audit trail's timestamps: the pure engine never sees a tracer), and per `http_call`. Context crosses
processes as W3C `traceparent`: HTTP header -> Kafka record header -> the message's metadata -> the
outgoing call's header. Sampling: `tracing_sample_rate` for new traces, the parent's decision otherwise.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from app.settings import Settings

__all__ = ["Tracing", "tracing_for"]

_lock = threading.Lock()
_providers: dict[tuple[str, str, float], Tracing] = {}


class Tracing:
    """A tracer provider exporting to one OTLP endpoint; `None`-safe helpers for the hot paths."""

    def __init__(self, endpoint: str, service: str, sample_rate: float) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            sampler=ParentBased(TraceIdRatioBased(sample_rate)),
        )
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self.tracer = self.provider.get_tracer("quasar")
        self._propagator = TraceContextTextMapPropagator()

    def context_of(self, traceparent: str | None) -> Any:
        return self._propagator.extract({"traceparent": traceparent}) if traceparent else None

    def traceparent_of(self, span: Any) -> str | None:
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier.get("traceparent")

    @contextlib.contextmanager
    def span(self, name: str, traceparent: str | None, kind: str = "internal", **attributes: Any) -> Iterator[Any]:
        """A span under the remote parent `traceparent` (or a new trace); yields the span."""
        from opentelemetry.trace import SpanKind

        kinds = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "consumer": SpanKind.CONSUMER}
        with self.tracer.start_as_current_span(
            name,
            context=self.context_of(traceparent),
            kind=kinds.get(kind, SpanKind.INTERNAL),
            attributes={k: v for k, v in attributes.items() if v is not None},
        ) as span:
            yield span

    def record_run(self, parent: Any, audit_trail: Iterable[Any], started_ns: int) -> None:
        """Workflow and task spans of one run, from the audit trail (`workflow_id`, `task_id`, `ts`, `status`)."""
        from opentelemetry import trace

        workflow: Any = None
        workflow_id = None
        previous = started_ns
        for entry in audit_trail:
            ts = int(entry.ts * 1e9)
            if entry.workflow_id != workflow_id:
                if workflow is not None:
                    workflow.end(end_time=previous)
                workflow_id = entry.workflow_id
                workflow = self.tracer.start_span(
                    f"workflow {workflow_id}",
                    context=trace.set_span_in_context(parent),
                    start_time=previous,
                    attributes={"quasar.workflow_id": str(workflow_id)},
                )
            task = self.tracer.start_span(
                f"task {entry.task_id}",
                context=trace.set_span_in_context(workflow),
                start_time=previous,
                attributes={"quasar.task_id": str(entry.task_id), "quasar.status": str(entry.status)},
            )
            task.end(end_time=max(ts, previous))
            previous = max(ts, previous)
        if workflow is not None:
            workflow.end(end_time=previous)

    def flush(self, timeout_ms: int = 5000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))


def tracing_for(settings: Settings) -> Tracing | None:
    """The process's `Tracing` for these settings (one provider per endpoint/service/rate), or None when off."""
    if not settings.tracing_enabled:
        return None
    key = (settings.tracing_otlp_endpoint, settings.tracing_service_name, settings.tracing_sample_rate)
    with _lock:
        found = _providers.get(key)
        if found is None:
            found = _providers[key] = Tracing(*key)
        return found

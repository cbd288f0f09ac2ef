"""`quasar flows|schedules|instances`: flow documents, the flow runner process, and running instances."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from app.cli.admin import (
    HeaderOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    _group,
    _parse_json_arg,
    _print_json,
    _run,
    console,
)
from app.cli.client import AdminClient
from app.cli.startup import settings_waiting_for_cluster

__all__ = ["flows_app", "instances_app", "schedules_app"]

flows_app = _group("flow", "flows", lifecycle=True)
schedules_app = _group("schedule", "schedules", lifecycle=True)


@flows_app.command("run")
def run(
    instance_id: str | None = typer.Option(None, "--instance-id", help="Instance name (default: hostname)."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus /metrics port (default: QUASAR_WORKER_METRICS_PORT; 0 = off)."
    ),
    log_level: str | None = typer.Option(None, help="Log level (default: QUASAR_LOG_LEVEL)."),
) -> None:
    """Run a flow runner: owns partitions of the flow topics, runs instances, fires timers and cron."""
    from app.observability.logs import configure_logging

    settings = settings_waiting_for_cluster(
        "flows",
        lambda n: (n.config, n.dlq, n.flow_events, n.flow_state, n.flow_results),
        instance_id=instance_id or None,
        worker_metrics_port=metrics_port,
    )
    configure_logging(log_level or settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))


async def _serve(settings: Any) -> None:
    from app.flow_runtime.runner import FlowRunner
    from app.observability.server import start_ops_server

    runner = FlowRunner(settings)
    await runner.start()
    ops = start_ops_server(
        settings.worker_metrics_port,
        settings.worker_metrics_host,
        health=lambda: {"flows": runner.status()},  # /readyz: joined and recovered
        info=lambda: {"instance": settings.instance_id, "partitions": runner.owned(), "applied": runner.applied},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.create_task(runner.wait_failed())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await runner.stop()
    if ops is not None:
        ops.close()
    if failed.done() and failed.result() is not None:
        raise typer.Exit(1)


# -- instances (through a gateway) ------------------------------------------------------------------
instances_app = typer.Typer(
    help="Flow instances through a gateway (exit codes: see quasar --help).", no_args_is_help=True
)
_GATEWAY = "http://127.0.0.1:8080"


@instances_app.command("list")
def instances_list(
    flow: str | None = typer.Option(None, "--flow", help="only instances of this flow"),
    status: str | None = typer.Option(None, help="scheduled, running, waiting, paused, completed, failed, cancelled"),
    limit: int = typer.Option(100, help="at most this many"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """List instances, newest first."""

    async def job(c: AdminClient) -> None:
        page = await c.request("GET", "/api/v1/instances", params={"flow_id": flow, "status": status, "limit": limit})
        if as_json:
            _print_json(page)
            return
        table = Table(title=f"instances ({page['total']})")
        for column in ("id", "flow", "version", "status", "step", "updated"):
            table.add_column(column)
        for row in page["data"]:
            updated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["updated_at"]))
            table.add_row(
                row["id"], row["flow_id"], str(row["flow_version"]), row["status"], row["cursor"] or "", updated
            )
        console.print(table)

    _run(url, token, header, job, default_url=_GATEWAY)


@instances_app.command("get")
def instances_get(
    instance_id: str, url: str | None = UrlOpt, token: str | None = TokenOpt, header: str = HeaderOpt
) -> None:
    """Show one instance as JSON (status, context, step outputs, timers, timeline)."""

    async def job(c: AdminClient) -> None:
        _print_json((await c.request("GET", f"/api/v1/instances/{instance_id}"))["data"])

    _run(url, token, header, job, default_url=_GATEWAY)


@instances_app.command("start")
def instances_start(
    flow_id: str,
    data: str = typer.Option("{}", help="JSON input (the instance's data)"),
    key: str | None = typer.Option(None, "--key", help="idempotency key: the same key starts one instance"),
    wait: float = typer.Option(0, help="wait up to this many seconds for a final status"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Start an instance of the flow's active version."""
    body = {"data": _parse_json_arg(data, "--data"), "idempotency_key": key, "wait_ms": int(wait * 1000)}

    async def job(c: AdminClient) -> None:
        _print_json((await c.request("POST", f"/api/v1/flows/{flow_id}/instances", json=body))["data"])

    _run(url, token, header, job, default_url=_GATEWAY)


@instances_app.command("signal")
def instances_signal(
    instance_id: str,
    signal_type: str = typer.Argument(..., metavar="SIGNAL", help="pause, resume, cancel, update_context, custom"),
    name: str | None = typer.Option(None, help="the custom signal's name"),
    payload: str | None = typer.Option(None, help="JSON payload"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Send a signal to an instance."""
    body = {"signal": signal_type, "name": name, "payload": _parse_json_arg(payload, "--payload") if payload else None}

    async def job(c: AdminClient) -> None:
        _print_json((await c.request("POST", f"/api/v1/instances/{instance_id}/signals", json=body))["data"])

    _run(url, token, header, job, default_url=_GATEWAY)


# -- schedules: preview ------------------------------------------------------------------------------
@schedules_app.command("preview")
def schedules_preview(
    schedule_id: str,
    count: int = typer.Option(10, min=1, max=1000, help="how many fire times"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """The next fire times of a stored schedule, in its timezone and UTC (DST rules: docs/flows.md)."""
    from app.flows.compiler import compile_schedule
    from app.flows.models import ScheduleDoc

    async def job(c: AdminClient) -> None:
        doc = (await c.admin("GET", f"/schedules/{schedule_id}"))["data"]
        fields = set(ScheduleDoc.model_fields) - {"created_at", "updated_at", "activated_at", "version", "status"}
        schedule = compile_schedule({k: v for k, v in doc.items() if k in fields})
        table = Table(title=f"{schedule_id}: {schedule.doc.cron} ({schedule.doc.timezone})")
        table.add_column("local")
        table.add_column("UTC")
        for fire in schedule.cron.preview(time.time(), count):
            local = datetime.fromtimestamp(fire, schedule.cron.timezone).isoformat()
            table.add_row(local, datetime.fromtimestamp(fire, UTC).isoformat())
        console.print(table)

    _run(url, token, header, job)

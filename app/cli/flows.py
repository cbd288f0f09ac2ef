"""`quasar flows|schedules|instances`: flow documents, the flow runner process, and running instances."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import typer

from app.cli.admin import _group
from app.cli.startup import settings_waiting_for_cluster

__all__ = ["flows_app", "schedules_app"]

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

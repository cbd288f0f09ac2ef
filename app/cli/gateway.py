"""`quasar gateway`: serve the HTTP bridge (data API, admin API, health) with uvicorn."""

from __future__ import annotations

import typer

from app.cli.startup import settings_waiting_for_cluster

__all__ = ["app"]

app = typer.Typer(help="Run the HTTP gateway (data + admin API) against the configured Kafka broker.")


@app.callback(invoke_without_command=True)
def gateway(
    host: str | None = typer.Option(None, help="Bind address (default: QUASAR_GATEWAY_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: QUASAR_GATEWAY_PORT, 8080)."),
    instance_id: str | None = typer.Option(
        None, "--instance-id", help="Instance name; picks this gateway's reply partition (default: hostname)."
    ),
    reply_partition: list[int] | None = typer.Option(
        None, "--reply-partition", help="Own these reply partitions (default: hash of the instance id)."
    ),
    log_level: str | None = typer.Option(None, help="uvicorn log level (default: QUASAR_LOG_LEVEL)."),
) -> None:
    """Start the gateway; it serves once the config is caught up and its reply partitions are positioned."""
    import uvicorn

    from app.gateway.app import create_app
    from app.gateway.server import server_config

    settings = settings_waiting_for_cluster(
        "gateway", lambda names: (names.config, names.replies, names.traces), instance_id=instance_id or None
    )
    from app.observability.logs import configure_logging

    configure_logging(log_level or settings.log_level, settings.log_format, take_over=True)
    application = create_app(settings, reply_partitions=reply_partition or None)
    config = server_config(
        application,
        settings,
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        log_level=(log_level or settings.log_level).lower(),
        loop="uvloop",
    )
    uvicorn.Server(config).run()

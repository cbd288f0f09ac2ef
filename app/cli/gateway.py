"""`quasar gateway`: serve the HTTP bridge (data API, admin API, health) with uvicorn."""

from __future__ import annotations

import typer

from app.settings import Settings

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

    overrides: dict[str, object] = {}
    if instance_id:
        overrides["instance_id"] = instance_id
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not settings.kafka_bootstrap:
        typer.echo(
            "error: QUASAR_KAFKA_BOOTSTRAP is not set (or run `quasar dev` for the embedded broker)", err=True
        )
        raise typer.Exit(1)
    # Broker down or topics not applied yet: say so and retry with backoff instead of a traceback + exit.
    from app.kafka.admin import wait_for_cluster
    from app.kafka.names import TopicNames

    names = TopicNames(settings.topic_prefix)
    try:
        wait_for_cluster(
            settings,
            topics=(names.config, names.replies, names.traces),
            report=lambda line: typer.echo(f"quasar gateway: {line}", err=True),
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    from app.observability.logs import configure_logging

    configure_logging(log_level or settings.log_level, settings.log_format, take_over=True)
    application = create_app(settings, reply_partitions=reply_partition or None)
    uvicorn.run(
        application,
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        log_level=(log_level or settings.log_level).lower(),
        log_config=None,  # keep the structlog handler installed above (uvicorn would replace it)
        access_log=False,  # one line per request costs more than the request on the hot path
        loop="uvloop",
        http="httptools",
    )

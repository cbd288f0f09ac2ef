"""The Faust application behind `quasar worker`.

Faust runs the process: worker lifecycle, signal handling, logging, service supervision (a crashed
service stops the worker with a non-zero exit so the orchestrator restarts it) and the broker transport
(`quasar://`, whose fetch wait comes from `QUASAR_FETCH_WAIT_MAX_MS`). The channel hot path is
`ChannelWorker`, a confluent-kafka batch consumer running as a Faust service: Faust's per-event stream
measured 2-5k msgs/s on this box against ~60-120k for the raw loop (bench/worker.py), so the hot path
does not go through it.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service

from app import __version__
from app.flow_runtime.service import FlowService
from app.kafka.config import bootstrap_of
from app.kafka.names import TopicNames
from app.kafka.probe import BrokerProbe
from app.observability.health import config_problems, worker_components
from app.observability.logs import configure_logging
from app.observability.metrics import BUILD_INFO
from app.observability.server import OpsServer, start_ops_server
from app.settings import Settings
from app.worker.runner import ChannelWorker
from app.worker.transport import broker_url

__all__ = ["ChannelService", "create_app"]


class ChannelService(Service):
    """Runs a `ChannelWorker` and the flow runner (`worker_flows`) inside the Faust worker; a failure of
    either crashes the app."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.worker = ChannelWorker(settings)
        self.flows = FlowService(settings, self.worker.reader)
        self.ops: OpsServer | None = None
        self.probe: BrokerProbe | None = None

    async def on_start(self) -> None:
        # Faust has set up its own logging by now; take over the root handlers (one JSON line per log).
        configure_logging(self.settings.log_level, self.settings.log_format, take_over=True)
        BUILD_INFO.labels(__version__, "worker").set(1)
        # /metrics and /health(z) answer from the start: a worker catching up reports not_ready.
        # The cluster answering (health) and every channel topic's committed-offset lag (metrics).
        self.probe = BrokerProbe(
            self.settings,
            topic=TopicNames(self.settings.topic_prefix).config,
            lag_targets=self.worker.subscriptions,
            name=f"worker-probe-{self.settings.instance_id}",
        ).start()
        self.ops = start_ops_server(
            self.settings.worker_metrics_port,
            self.settings.worker_metrics_host,
            health=lambda: {
                **worker_components(self.worker, self.settings.redis_url, self.probe),
                "flows": self.flows.status(),
            },
            info=lambda: {
                "instance": self.settings.instance_id,
                "config_offset": self.worker.reader.applied_offset,
                "flows": self.flows.info(),
                **config_problems(self.worker.reader.snapshot),
            },
        )
        await self.worker.start()
        # `task` steps of flows use the worker's connector runtime (started by now).
        self.flows.services = self.worker.services
        await self.flows.start()
        self.add_future(self._watch())
        self.add_future(self._watch_flows())

    async def _watch(self) -> None:
        failure = await self.worker.wait_failed()
        if not self.worker._stopping:
            await self.crash(failure)

    async def _watch_flows(self) -> None:
        await self.crash(await self.flows.wait_failed())

    async def on_stop(self) -> None:
        await self.flows.stop()
        await self.worker.stop()
        if self.probe is not None:
            self.probe.stop()
        if self.ops is not None:
            self.ops.close()


class _NoKafkaBoot(BootStrategy):
    """Faust runs the process, not the Kafka traffic: its own consumer would join a second group
    (`<prefix>worker-app`) and create an undeclared `...-__assignor-__leader` topic, its producer
    would hold connections nothing uses. The channel worker has its own clients."""

    enable_kafka = False


def create_app(settings: Settings) -> faust.App:
    """A Faust app whose single service is the channel worker (no Faust web server, no tables)."""
    app = faust.App(
        f"{settings.topic_prefix}worker-app",
        broker=broker_url(bootstrap_of(settings)),
        web_enabled=False,
        topic_allow_declare=False,
        broker_session_timeout=max(1.0, settings.session_timeout_ms / 1000.0),
        broker_heartbeat_interval=max(0.1, settings.session_timeout_ms / 3000.0),
        producer_linger=0.002,
        store="memory://",
    )
    app.conf.fetch_wait_max_ms = settings.fetch_wait_max_ms
    app.boot_strategy = _NoKafkaBoot(app)
    app.service(ChannelService(settings, loop=app.loop))  # type: ignore[arg-type]
    return app

"""Faust's aiokafka transport with the consumer fetch wait taken from Quasar's settings.

faust-streaming's aiokafka driver hard-codes `fetch_max_wait_ms=1500`. On Tansu a waiting fetch is
answered only when that wait expires, so consumer latency equals it. This module registers the
`quasar://` broker scheme in Faust's transport registry (its plugin mapping, the same one the
`faust.transports` entry-point namespace feeds) with a consumer whose fetch wait is
`app.conf.fetch_wait_max_ms` (default: `Settings.fetch_wait_max_ms`). No site-packages edits.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.settings import get_settings

__all__ = ["SCHEME", "Consumer", "ConsumerThread", "Transport", "broker_url"]

SCHEME = "quasar"


def broker_url(bootstrap: str) -> str:
    """Faust broker URL(s) for a comma-separated bootstrap list, using this transport."""
    return ";".join(f"{SCHEME}://{host.strip()}" for host in bootstrap.split(",") if host.strip())


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The driver's consumer thread; only the fetch wait of the worker consumer differs."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app.conf, "fetch_wait_max_ms", None)
        if wait_ms is None:
            wait_ms = get_settings().fetch_wait_max_ms
        # The driver passes 1500 to the constructor; aiokafka reads this attribute only in start(),
        # which has not run yet, so setting it here is equivalent to the constructor argument.
        consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """aiokafka transport with a configurable consumer fetch wait."""

    Consumer = Consumer


# FactoryMapping is Faust's documented plugin registry for transports (scheme -> "module:Class").
drivers.TRANSPORTS.setdefault(SCHEME, f"{__name__}:Transport")

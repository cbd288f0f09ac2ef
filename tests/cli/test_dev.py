"""`quasar dev` is the README's first command: it must start everything, serve the quickstart verbatim
and stop cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.kafka.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def _readme_quickstart(port: int) -> str:
    """The shell block under "Your first service" in README.md, pointed at `port`."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your first service", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README lost its quickstart block"
    return block.group(1).replace("127.0.0.1:8080", f"127.0.0.1:{port}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "quasar dev exited during start-up"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # polling a local HTTP probe
    raise AssertionError(f"{url} never became ready")


def test_quasar_dev_serves_the_readme_quickstart_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "QUASAR_WORKER_METRICS_PORT": str(free_port()),
        "QUASAR_LOG_LEVEL": "warning",
    }
    env.pop("QUASAR_KAFKA_BOOTSTRAP", None)  # the embedded default is the point of this test
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/readyz", proc)
        # the examples were loaded and activated (hello-world is one of them)
        for _ in range(100):
            channels = httpx.get(f"{base}/api/v1/admin/channels", timeout=5).json()["data"]
            if any(c["name"] == "hello" and c["status"] == "active" for c in channels):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"examples not loaded: {channels}")

        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _readme_quickstart(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        # every admin call succeeded (no error bodies), and the last line is the documented answer
        assert '"error"' not in out.stdout, out.stdout
        answer = json.loads(out.stdout[out.stdout.rindex('{"id"') :])
        assert answer["status"] == "ok"
        assert answer["data"] == {
            "order": {
                "order_id": "ORD-9182",
                "total": 25000,
                "flagged": True,
                "alert": "High-value order: $25000",
            }
        }
        assert answer["errors"] == []
    finally:
        # Ctrl-C: the dev command stops gateway and worker, then the broker, and exits
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]

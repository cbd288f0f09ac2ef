"""Idle cost of `quasar dev` and the first request after idle: `python -m bench.idle`.

Starts `quasar dev` (embedded broker, worker, gateway, the examples) on free ports, lets it settle, then
measures each process's CPU over `--seconds` from /proc (utime + stime of its whole process tree), then
`--gaps` sync calls (`POST /api/v1/data/hello`, a new connection each) each after `--gap` seconds of idle,
then 10 back-to-back calls. Extra `NAME=VALUE` arguments are set in dev's environment, e.g.
`QUASAR_FETCH_WAIT_MAX_MS=10 QUASAR_CONFIG_FETCH_WAIT_MAX_MS=50` for the waits before issue 19, so two
stacks can run side by side in the same minutes (the box is shared: compare runs from the same minutes).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

_CLK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _parent(int(entry)) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _tree(pid: int) -> list[int]:
    return [pid, *(p for c in _children(pid) for p in _tree(c))]


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLK
    return total


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return str(pid)
    if "tansu" in cmd[0]:
        return "broker"
    if "app.cli" in cmd:
        return cmd[cmd.index("app.cli") + 1]
    return Path(cmd[0]).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="idle CPU measurement window")
    parser.add_argument("--gaps", type=int, default=9, help="first requests, each after --gap seconds idle")
    parser.add_argument("--gap", type=float, default=5.0)
    parser.add_argument("env", nargs="*", help="NAME=VALUE set in dev's environment")
    args = parser.parse_args(argv)
    port = _free_port()
    env = dict(os.environ, QUASAR_WORKER_METRICS_PORT=str(_free_port()))
    env.update(item.split("=", 1) for item in args.env)
    log_path = Path(f"/tmp/quasar-bench-idle-{port}.log")
    with log_path.open("w") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "\nexamples: " not in log_path.read_text():
            if time.monotonic() > deadline or dev.poll() is not None:
                print(log_path.read_text()[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.5)  # waiting for a subprocess's start-up line
        url = f"http://127.0.0.1:{port}/api/v1/data/hello"

        def call(client: httpx.Client) -> float:
            started = time.perf_counter()
            client.post(url, json={"data": {"name": "idle"}}).raise_for_status()
            return (time.perf_counter() - started) * 1000

        with httpx.Client(timeout=30) as client:
            call(client)  # the first call ever (group joins, first fetches) is not what we measure
        time.sleep(10)  # let the stack settle into idle
        roles = {pid: _role(pid) for pid in _children(dev.pid)}
        before = {pid: _cpu_seconds(pid) for pid in roles}
        started = time.monotonic()
        time.sleep(args.seconds)  # the idle window itself
        elapsed = time.monotonic() - started
        shares = {roles[pid]: (_cpu_seconds(pid) - before[pid]) * 100 / elapsed for pid in roles}
        parts = " ".join(f"{role}={pct:.1f}%" for role, pct in shares.items())
        print(f"idle {args.seconds:.0f} s: total {sum(shares.values()):.1f}% of one core ({parts})")
        first = []
        for _ in range(args.gaps):
            time.sleep(args.gap)  # idle before each first request
            with httpx.Client(timeout=30) as client:
                first.append(call(client))
        print(f"first request after {args.gap:.0f} s idle: median {statistics.median(first):.0f} ms", end=" ")
        print("(" + " ".join(f"{ms:.0f}" for ms in first) + ")")
        with httpx.Client(timeout=30) as client:
            back = [call(client) for _ in range(10)]
        print(f"back-to-back: median {statistics.median(back):.0f} ms")
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP load for the benchmarks: `hey` when it is installed, else an async httpx loop; one result shape.

`bench.gateway` and `bench.run_all` both drive their scenarios through `load()`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["Load", "load", "parse_hey", "tool"]


@dataclass
class Load:
    rps: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    errors: int
    total: int


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_AVERAGE = re.compile(r"Average:\s+([\d.]+) secs")
_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")
_ERRORS = re.compile(r"^\s+\[(\d+)\]\s+(.+)$", re.M)
_P50 = re.compile(r"^\s*50% in ([\d.]+) secs", re.M)
_P99 = re.compile(r"^\s*99% in ([\d.]+) secs", re.M)


def tool() -> str:
    return "hey" if shutil.which("hey") else "httpx"


def load(url: str, seconds: float, concurrency: int, body: Path | None) -> Load:
    """`concurrency` connections for `seconds`: POST `body` (JSON) to `url`, or GET it without one."""
    if tool() == "hey":
        return _hey(url, seconds, concurrency, body)
    return asyncio.run(_httpx(url, seconds, concurrency, body.read_bytes() if body else None))


def _hey(url: str, seconds: float, concurrency: int, body: Path | None) -> Load:
    args = ["hey", "-z", f"{seconds}s", "-c", str(concurrency)]
    if body is not None:
        args += ["-m", "POST", "-T", "application/json", "-D", str(body)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return parse_hey(out)


def parse_hey(out: str) -> Load:
    """hey's text summary: non-200 answers and transport errors both count as errors."""
    statuses = {int(code): int(n) for code, n in _STATUS.findall(out)}
    total = sum(statuses.values())
    errors = sum(n for code, n in statuses.items() if code != 200)
    if "Error distribution" in out:
        errors += sum(int(n) for n, _ in _ERRORS.findall(out.split("Error distribution", 1)[1]))

    def seconds_of(pattern: re.Pattern[str]) -> float:
        found = pattern.search(out)
        return float(found.group(1)) * 1000 if found else float("nan")

    rps = _RPS.search(out)
    return Load(
        float(rps.group(1)) if rps else 0.0, seconds_of(_AVERAGE), seconds_of(_P50), seconds_of(_P99), errors, total
    )


async def _httpx(url: str, seconds: float, concurrency: int, body: bytes | None) -> Load:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def loop() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    if body is None:
                        r = await client.get(url)
                    else:
                        r = await client.post(url, content=body, headers={"content-type": "application/json"})
                    errors += r.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    if not latencies:
        return Load(0.0, float("nan"), float("nan"), float("nan"), errors, 0)
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    mean = sum(latencies) / len(latencies) * 1000
    return Load(len(latencies) / elapsed, mean, q(0.5), q(0.99), errors, len(latencies))

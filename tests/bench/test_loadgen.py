"""The benchmarks' load generator reads hey's summary: rate, mean, p50, p99 and every failed answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import loadgen
from bench.loadgen import load, parse_hey


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        failing = self.path == "/fail"
        self.send_response(500 if failing else 200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("generator", ["hey", "httpx"])
def test_a_run_against_a_local_server_reports_its_latencies(
    generator: str, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loadgen, "tool", lambda: generator)
    body = tmp_path / "body.json"
    body.write_text('{"data": {}}')
    ok = load(f"{server}/ok", 1, 2, body)
    assert ok.total > 0 and ok.errors == 0 and ok.rps > 0
    assert 0 < ok.p50_ms <= ok.p99_ms
    failed = load(f"{server}/fail", 1, 2, body)
    assert failed.total > 0 and failed.errors == failed.total


def test_transport_errors_count_as_errors() -> None:
    out = """
Summary:
  Total:	1.0012 secs
  Requests/sec:	120.5

  Average:	0.0150 secs

Latency distribution:
  10% in 0.0100 secs
  50% in 0.0140 secs
  99% in 0.0300 secs

Status code distribution:
  [200]	100 responses
  [503]	10 responses

Error distribution:
  [7]	Post "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
"""
    result = parse_hey(out)
    assert (result.rps, result.mean_ms, result.p50_ms, result.p99_ms) == (120.5, 15.0, 14.0, 30.0)
    assert (result.total, result.errors) == (110, 17)

"""`quasar dev`: the embedded default — broker, topics, worker, gateway, examples, one Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import typer
from rich.console import Console

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["admin_headers", "app", "load_examples"]

app = typer.Typer(help="Run Quasar locally on the embedded broker.")
console = Console()

_REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


_Docs = list[dict[str, Any]]


def _iter_documents(root: Path) -> tuple[_Docs, _Docs, _Docs, _Docs]:
    """Workflows, channels, connectors and rulesets in the example files (single docs, lists or bundles)."""
    workflows: _Docs = []
    channels: _Docs = []
    connectors: _Docs = []
    rulesets: _Docs = []

    def classify(doc: Any) -> None:
        if isinstance(doc, list):
            for item in doc:
                classify(item)
        elif isinstance(doc, dict):
            if "steps" in doc and "entry" in doc:
                rulesets.append(doc)
            elif "tasks" in doc:
                workflows.append(doc)
            elif "channel_type" in doc or "channel_id" in doc:
                channels.append(doc)
            elif "connector_type" in doc or ("type" in doc and "config" in doc):
                connectors.append(doc)
            elif doc.get("load_in_dev", True):
                for key in ("rulesets", "workflows", "channels", "connectors"):
                    if key in doc:
                        classify(doc[key])

    for path in sorted(root.rglob("*.json")):
        if "expected" in path.parts or path.name.endswith(".expected.json"):
            continue
        try:
            classify(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError as exc:
            console.print(f"[yellow]skipping {path}: not JSON ({exc})[/]")
    return workflows, channels, connectors, rulesets


def admin_headers(settings: Settings) -> dict[str, str]:
    """The admin credentials of `settings` as request headers (none when admin auth is off)."""
    if not settings.admin_auth_enabled or not settings.admin_api_key:
        return {}
    from app.secrets import resolve_secret

    key = str(resolve_secret(settings.admin_api_key))
    header = settings.admin_auth_header or "Authorization"
    return {header: f"Bearer {key}"} if header.lower() == "authorization" else {header: key}


def load_examples(base_url: str, root: Path = _REPO_EXAMPLES, headers: dict[str, str] | None = None) -> dict[str, int]:
    """Create and activate every example through the admin API (with `headers`: the admin credentials when
    admin auth is on); existing ones are left as they are."""
    workflows, channels, connectors, rulesets = _iter_documents(root)
    counts = {"workflows": 0, "channels": 0, "connectors": 0, "rulesets": 0, "skipped": 0}
    with httpx.Client(base_url=base_url, timeout=30, headers=headers or {}) as http:
        for kind, docs, id_keys in (
            ("connectors", connectors, ("id", "name")),
            # rulesets before workflows, in file order: a ruleset's pinned callees are activated first
            ("rulesets", rulesets, ("ruleset_id", "id")),
            ("workflows", workflows, ("workflow_id", "id")),
            ("channels", channels, ("channel_id", "name")),
        ):
            for doc in docs:
                ident = next((doc[k] for k in id_keys if doc.get(k)), None)
                created = http.post(f"/api/v1/admin/{kind}", json=doc)
                if created.status_code == 409:
                    counts["skipped"] += 1
                    continue
                if created.status_code >= 400:
                    console.print(f"[red]{kind[:-1]} {ident}: {created.status_code} {created.text}[/]")
                    continue
                ident = ident or created.json().get("id") or created.json().get(id_keys[0])
                if kind != "connectors":
                    activated = http.patch(f"/api/v1/admin/{kind}/{ident}/status", json={"status": "active"})
                    if activated.status_code >= 400:
                        console.print(f"[red]activate {kind[:-1]} {ident}: {activated.text}[/]")
                        continue
                counts[kind] += 1
    return counts


class _Stop(Exception):
    """SIGTERM or SIGINT reached `quasar dev`."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when `quasar dev` dies, however it dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the ExitStack still stops children on every normal exit
        pass


def _port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (checked before start-up, so a busy port fails up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} during start-up")
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a local HTTP probe, not waiting on the broker
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s")


@app.callback(invoke_without_command=True)
def dev(
    port: int = typer.Option(8080, help="Gateway port."),
    examples: Path = typer.Option(_REPO_EXAMPLES, help="Folder of example workflows/channels to load."),
    no_examples: bool = typer.Option(False, "--no-examples", help="Start empty."),
    processes: int = typer.Option(
        1, "--processes", help="Worker processes (`quasar worker --processes`; 0: per core)."
    ),
    gateway_workers: int = typer.Option(
        1, "--gateway-workers", help="Gateway processes on the port (`quasar gateway --workers`; 0 = per core)."
    ),
) -> None:
    """Start broker (embedded unless QUASAR_KAFKA_BOOTSTRAP is set), topics, worker and gateway."""
    from app.settings import Settings

    settings = Settings()
    env = dict(os.environ)
    # Explicit handlers: started in the background by a script, SIGINT arrives ignored (no
    # KeyboardInterrupt), and SIGTERM would end dev without stopping its children.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    busy = [p for p in (port, settings.worker_metrics_port) if p and not _port_free(settings.gateway_host, p)]
    if busy:
        console.print(f"[red]port {', '.join(map(str, busy))} on {settings.gateway_host} is already in use[/]")
        raise typer.Exit(1)
    try:
        _run_dev(settings, env, port, examples, no_examples, processes, gateway_workers)
    except _Stop as stop:
        console.print(f"{stop}: stopped")


def _run_dev(
    settings: Any,
    env: dict[str, str],
    port: int,
    examples: Path,
    no_examples: bool,
    processes: int,
    gateway_workers: int,
) -> None:
    from app.kafka.broker import EmbeddedBroker
    from app.kafka.topics import apply_topics_for_settings
    from app.settings import Settings

    with ExitStack() as stack:
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
            console.print(f"broker: [bold]{bootstrap}[/] (QUASAR_KAFKA_BOOTSTRAP)")
        else:
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap = broker.bootstrap
            console.print(
                f"broker: embedded Tansu at [bold]{bootstrap}[/] — [yellow]in-memory: all data is lost "
                "when it stops[/] (keep the config with `quasar backup` / `quasar restore`)"
            )
            # Tansu answers a fetch only after (part of) its max wait, data or not, and each answered fetch
            # costs it CPU: idle cost ~ fetches per second, request latency ~ the wait. Measured on the idle
            # stack with the examples (docs/performance.md): 10 ms burned ~21% of a core, 150 ms ~5% with
            # the first request after idle ~1.3x as slow. The reply consumer keeps its own short wait
            # (QUASAR_REPLY_FETCH_WAIT_MAX_MS: it fetches only while a reply is awaited); config readers
            # wait longer still (config changes are rare; an admin write waits for its read-back).
            env.setdefault("QUASAR_FETCH_WAIT_MAX_MS", "150")
            env.setdefault("QUASAR_CONFIG_FETCH_WAIT_MAX_MS", "500")
            env.setdefault("QUASAR_SESSION_TIMEOUT_MS", "3000")
        env["QUASAR_KAFKA_BOOTSTRAP"] = bootstrap
        env["QUASAR_GATEWAY_PORT"] = str(port)
        settings = Settings(kafka_bootstrap=bootstrap)
        apply_topics_for_settings(settings)

        procs: list[subprocess.Popen[bytes]] = []

        def spawn(*args: str) -> None:
            # Own session: Ctrl-C reaches only `quasar dev`, which stops gateway and worker before the broker.
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # if dev is killed outright, the children still go
            )
            procs.append(proc)
            stack.callback(_stop, proc)

        spawn("worker", "--processes", str(processes))
        spawn("gateway", "--port", str(port), "--workers", str(gateway_workers))
        base = f"http://{settings.gateway_host}:{port}"
        _wait_ready(f"{base}/readyz", procs)
        if not no_examples and examples.is_dir():
            counts = load_examples(base, examples, admin_headers(Settings()))
            console.print(f"examples: {counts}")
        console.print(f"gateway:  [bold]{base}[/]   docs: {base}/docs   metrics: {base}/metrics")
        console.print(f"worker metrics: http://127.0.0.1:{settings.worker_metrics_port}/metrics")
        console.print("Ctrl-C (or SIGTERM) stops everything.")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        console.print("[red]a process exited; stopping[/]")
        raise typer.Exit(1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # No signal may interrupt the stop itself: children must not outlive dev.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN), signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)  # the child bounds its own stop (shutdown_timeout_secs)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])

"""`quasar worker --processes N` / `quasar gateway --workers N`: one parent supervising N children.

Why processes: the worker's record loop and the gateway are CPU-bound Python, and one CPython process uses
one core. Each child is an ordinary single-process `quasar worker` (a member of the channel consumer group,
so the partitions spread over the children) or `quasar gateway` (its own instance id, hence its own reply
partitions, listening on the shared port with SO_REUSEPORT so the kernel spreads connections).

The parent only starts, watches and stops: a child that exits while the parent runs is restarted after a
backoff (1 s, doubling to 30 s, reset once a child has stayed up a minute); SIGINT / SIGTERM are passed
to every child and the parent returns when all have exited. Children die with the parent
(`PR_SET_PDEATHSIG`), so a parent killed with SIGKILL leaves no consumer behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["child_argv", "processes_for", "supervise"]

_PR_SET_PDEATHSIG = 1
_BACKOFF_MAX_S = 30.0
_STABLE_S = 60.0


def processes_for(requested: int) -> int:
    """`requested` processes; 0 means one per core."""
    if requested < 0:
        raise ValueError("the number of processes must be 0 (one per core) or more")
    return requested or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def child_argv(command: str, *args: str) -> list[str]:
    """The command line of one child: `python -m app.cli <command> <args>` with this interpreter."""
    return [sys.executable, "-m", "app.cli", command, *args]


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child before exec
    # not Linux (no libc.so.6): the children would outlive a parent killed with SIGKILL
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Child:
    __slots__ = ("argv", "backoff", "proc", "restart_at", "started")

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.backoff = 1.0
        self.restart_at = 0.0
        self.started = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
        self.started = time.monotonic()


def supervise(commands: Sequence[list[str]], name: str, *, echo: bool = True) -> int:
    """Run every command as a supervised child until SIGINT / SIGTERM; returns the exit status (0)."""
    children = [_Child(argv) for argv in commands]
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.start()
        if echo:
            pids = ", ".join(str(c.proc.pid) for c in children if c.proc is not None)
            print(f"quasar {name}: {len(children)} processes (pids {pids})", file=sys.stderr, flush=True)
        while not stopping:
            now = time.monotonic()
            for child in children:
                proc = child.proc
                if proc is not None and proc.poll() is not None and not stopping:
                    up = now - child.started
                    child.backoff = 1.0 if up > _STABLE_S else min(child.backoff * 2, _BACKOFF_MAX_S)
                    child.restart_at = now + child.backoff
                    print(
                        f"quasar {name}: child {proc.pid} exited with {proc.returncode}; "
                        f"restarting in {child.backoff:.0f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                    child.proc = None
                elif proc is None and now >= child.restart_at and not stopping:
                    child.start()
            time.sleep(0.5)  # watching child pids; signals interrupt the wait
        for child in children:
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

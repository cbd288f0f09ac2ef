"""`--processes` / `--workers`: the supervising parent restarts, stops and never orphans its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.supervise import processes_for
from tests.fixtures.polling import poll

# A child that records its pid; its first incarnation exits at once (a crash), the later ones stay up.
_CHILD = """
import os, sys, time
path = sys.argv[1]
with open(path, "a") as f:
    f.write(f"{os.getpid()}\\n")
if len(open(path).read().split()) == 1:
    sys.exit(3)
while True:
    time.sleep(60)
"""


def _parent(tmp_path: Path, children: int) -> tuple[subprocess.Popen[bytes], list[Path]]:
    files = [tmp_path / f"child{i}.pids" for i in range(children)]
    commands = [[sys.executable, "-c", _CHILD, str(f)] for f in files]
    code = f"import sys; from app.cli.supervise import supervise; sys.exit(supervise({commands!r}, 'test'))"
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE), files


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_crashed_child_is_restarted_and_sigterm_stops_every_child(tmp_path: Path) -> None:
    parent, files = _parent(tmp_path, 2)
    try:
        # each child crashed once and was started again (after the backoff)
        poll(lambda: all(len(_pids(f)) == 2 for f in files), within=30, what="both children restarted")
        running = [_pids(f)[1] for f in files]
        assert all(_alive(pid) for pid in running)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        assert not any(_alive(pid) for pid in running)
        assert b"exited with 3; restarting" in parent.stderr.read()  # type: ignore[union-attr]
    finally:
        parent.kill()
        parent.wait()


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    parent, files = _parent(tmp_path, 1)
    try:
        poll(lambda: len(_pids(files[0])) == 2, within=30, what="child restarted")
        child = _pids(files[0])[1]
        parent.kill()  # SIGKILL: the parent cannot pass anything on
        parent.wait()
        poll(lambda: not _alive(child), within=10, what="child gone with its parent")
    finally:
        parent.kill()
        parent.wait()


def test_process_counts() -> None:
    assert processes_for(3) == 3
    assert processes_for(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="0 \\(one per core\\) or more"):
        processes_for(-1)

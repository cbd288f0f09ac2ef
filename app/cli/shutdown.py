"""A bounded stop: once shutdown starts, a process gets `shutdown_timeout_secs` to stop cleanly, then exits.

A clean stop commits what was delivered and closes clients; with the broker gone, librdkafka's close and
flush can block for minutes (an orphaned worker took 40-70 s to exit). Past the deadline the process
exits anyway: nothing is lost, because offsets are only committed after results are delivered
(at-least-once), so uncommitted records are delivered again to the next member.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

__all__ = ["exit_deadline"]

log = logging.getLogger("quasar.shutdown")

_started = threading.Event()


def exit_deadline(seconds: float, code: int = 1) -> None:
    """Start (once per process) a daemon timer that ends the process `seconds` from now."""
    if _started.is_set():
        return
    _started.set()

    def expire() -> None:
        log.error("clean shutdown did not finish within %.0fs; exiting now", seconds)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream must not keep the process alive
                stream.flush()
        os._exit(code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()

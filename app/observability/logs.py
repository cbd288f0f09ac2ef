"""Logging setup: every log line (structlog's and the stdlib's) rendered by structlog.

`configure_logging(settings)` installs one root handler whose formatter is structlog's
`ProcessorFormatter`, so `logging.getLogger("quasar.worker").warning(...)` from any module and
`structlog.get_logger()` both come out as one JSON object per line (or coloured console lines),
carrying the request id / channel / workflow / trace id bound in `app.observability.context`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from app.secrets import MASK, is_secret_field, mask_secrets, mask_text

__all__ = [
    "KAFKA_CLIENT_LOGGER",
    "LOG_FORMATS",
    "RepeatFilter",
    "configure_logging",
    "get_logger",
    "kafka_client_logger",
]

KAFKA_CLIENT_LOGGER = "quasar.kafka.client"

LOG_FORMATS = ("json", "console")
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    level: str = "info", fmt: str = "json", *, stream: TextIO | None = None, take_over: bool = False
) -> None:
    """Route all logging through structlog. Raises ValueError on an unknown level or format.

    `take_over` removes every other root handler (a framework's own console handler would print each
    line twice); otherwise only a previous Quasar handler is replaced.
    """
    # The real stderr: Faust's worker replaces sys.stderr with a proxy that logs, which would loop.
    out = stream or sys.__stderr__ or sys.stderr
    lvl = _LEVELS.get(level.lower())
    if lvl is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(sorted(_LEVELS))}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared = _shared_processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("quasar")
    root = logging.getLogger()
    for old in [h for h in root.handlers if take_over or h.get_name() == "quasar"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    # Uncaught exceptions in threads (a library's consumer thread dying at shutdown) went to stderr as
    # raw tracebacks; they are log records like everything else.
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("quasar.threads").error("uncaught exception in thread %s", thread, exc_info=args.exc_value)


def _mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No secret in a log line, whoever logged it (httpx logs request URLs with their userinfo)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = MASK if is_secret_field(key) and key != "event" else mask_text(value)
        elif isinstance(value, dict | list):
            event[key] = mask_secrets(value)
    return event


def _drop_color_message(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # uvicorn adds an ANSI-coloured copy of each message as `extra`; it is noise in JSON.
    event.pop("color_message", None)
    return event


class RepeatFilter(logging.Filter):
    """Let a message through once per `window_s`; its repeats (digits ignored: ports, times, counts)
    are dropped and counted, and the next one let through says how many were dropped.

    A client retrying a dead broker logs the same failure several times a second (8,146 librdkafka lines
    in 2.5 minutes were seen); one line per window says as much.
    """

    def __init__(self, window_s: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (last let through, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, _DIGITS.sub("#", record.getMessage())[:300])
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.getMessage()} ({last[1]} similar messages suppressed in {self.window_s:.0f}s)"
            record.args = None
        if len(self._seen) > 10_000:  # bounded: forget everything rather than grow
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True


_DIGITS = re.compile(r"\d+")


def kafka_client_logger() -> logging.Logger:
    """The logger librdkafka's own log lines go to (`"logger"` in every client config): they leave
    through the one logging setup (JSON in JSON mode) instead of raw `%3|...` lines on stderr, with
    repeats rate-limited."""
    logger = logging.getLogger(KAFKA_CLIENT_LOGGER)
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
    return logger


def get_logger(name: str) -> Any:
    """A structlog logger (use keyword arguments for fields: `log.info("applied", offset=3)`)."""
    return structlog.get_logger(name)

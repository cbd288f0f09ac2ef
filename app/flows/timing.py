"""Time arithmetic for flows: durations, delay due times, business days, deterministic jitter.

All instants are epoch seconds (float, UTC). Pure: the current time is always passed in.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.flows.models import BusinessCalendar

__all__ = [
    "TimingError",
    "add_business_days",
    "jitter_seconds",
    "next_business_instant",
    "parse_duration",
    "parse_instant",
    "zone",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(\d+(ms|s|m|h|d|w))+$")
MAX_DURATION = 10 * 366 * 86400.0  # ten years: beyond that a "delay" is a configuration mistake


class TimingError(ValueError):
    """A duration, timestamp or timezone that cannot be used; the message says which and why."""


def parse_duration(value: str | float | int) -> float:
    """`"1h30m"` / `"3d"` / `"250ms"` / seconds as a number -> seconds."""
    if isinstance(value, bool):
        raise TimingError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.match(value.strip()):
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value.strip()))
    else:
        raise TimingError(f"not a duration: {value!r} (use e.g. 90s, 1h30m, 3d, 250ms or a number of seconds)")
    if not 0 <= seconds <= MAX_DURATION:
        raise TimingError(f"duration out of range: {value!r} (0 .. 10 years)")
    return seconds


def zone(name: str) -> ZoneInfo:
    """An IANA timezone, or `TimingError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimingError(f"unknown timezone: {name!r}") from exc


def parse_instant(value: object, tz: ZoneInfo) -> float:
    """An ISO 8601 timestamp (naive = local time in `tz`) or epoch seconds -> epoch seconds."""
    if isinstance(value, bool):
        raise TimingError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise TimingError(f"not a timestamp: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise TimingError(f"not an ISO 8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = local_to_utc(parsed, tz)
    return parsed.timestamp()


def local_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in `tz` -> aware UTC. DST rules (the same for delays and cron):

    - a time skipped by a spring-forward gap maps to the first valid instant after the gap
      (Berlin 02:30 on the last Sunday of March -> 03:00 CEST);
    - a repeated time (fall-back) maps to its first occurrence.
    """
    after_gap = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if after_gap.astimezone(tz).replace(tzinfo=None) == local:
        return after_gap
    # In a gap, fold=0 reads the wall time with the offset from before the gap (an instant after the
    # transition) and fold=1 with the offset from after it (an instant before): the transition, the
    # first valid instant, lies between them. Transitions fall on whole seconds.
    before_gap = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = int(before_gap.timestamp()), int(after_gap.timestamp())
    target = after_gap.astimezone(tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def is_business_day(day: date, calendar: BusinessCalendar) -> bool:
    return day.isoweekday() not in calendar.weekend and day not in calendar.holidays


def add_business_days(start: datetime, days: int, calendar: BusinessCalendar) -> datetime:
    """`start` (aware, local) plus `days` business days, keeping the local time of day."""
    if len(set(calendar.weekend)) >= 7:
        raise TimingError("a business calendar needs at least one working weekday")
    current = start
    remaining = days
    while remaining > 0:
        current = _same_wall_time_next_day(current)
        if is_business_day(current.date(), calendar):
            remaining -= 1
    return current


def next_business_instant(instant: datetime, calendar: BusinessCalendar) -> datetime:
    """`instant` (aware, local) if it is on a business day, else the same local time on the next one."""
    if len(set(calendar.weekend)) >= 7:
        raise TimingError("a business calendar needs at least one working weekday")
    current = instant
    for _ in range(3700):  # ten years of holidays at most
        if is_business_day(current.date(), calendar):
            return current
        current = _same_wall_time_next_day(current)
    raise TimingError("no business day within ten years")


def _same_wall_time_next_day(aware: datetime) -> datetime:
    tz = aware.tzinfo
    assert isinstance(tz, ZoneInfo)
    wall = aware.replace(tzinfo=None) + timedelta(days=1)
    return local_to_utc(wall, tz).astimezone(tz)


def jitter_seconds(seed: str, limit: float) -> float:
    """A deterministic offset in `[0, limit)`: replaying the same event gives the same due time."""
    if limit <= 0:
        return 0.0
    fraction = int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "big") / 2**64
    return fraction * limit

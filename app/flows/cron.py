"""Cron fire times in an IANA timezone, with stated DST rules (croniter + zoneinfo).

5 fields (`min hour dom month dow`) or 6 with seconds first (`sec min hour dom month dow`).
Matching happens on local wall-clock time; each matching wall time becomes an instant with
`local_to_utc`:

- a wall time skipped by a spring-forward gap fires at the first valid instant after the gap, and
  several skipped wall times collapse into that one fire;
- a wall time repeated by a fall-back fires once, at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from app.flows.timing import TimingError, local_to_utc, zone

__all__ = ["CronSpec", "compile_cron"]

# A schedule matching nothing for this long (e.g. "0 0 30 2 *") is refused at compile time.
_MAX_YEARS = 8
_MAX_PREVIEW = 1000


@dataclass(frozen=True, slots=True)
class CronSpec:
    expression: str
    timezone: ZoneInfo
    seconds_first: bool

    def _walls(self, after_local: datetime) -> Iterator[datetime]:
        it = croniter(
            self.expression,
            after_local,
            ret_type=datetime,
            second_at_beginning=self.seconds_first,
            max_years_between_matches=_MAX_YEARS,
        )
        while True:
            yield it.get_next(datetime)

    def next_after(self, instant: float) -> float:
        """The first fire time strictly after `instant` (epoch seconds)."""
        local = datetime.fromtimestamp(instant, self.timezone).replace(tzinfo=None)
        for count, wall in enumerate(self._walls(local)):
            fire = local_to_utc(wall, self.timezone).timestamp()
            if fire > instant:
                return fire
            if count > 10_000:  # only wall times inside a repeated hour map backwards; a few at most
                break
        raise TimingError(f"cron {self.expression!r}: no fire time found after {instant}")

    def preview(self, after: float, count: int) -> list[float]:
        """The next `count` fire times after `after`."""
        fires: list[float] = []
        current = after
        for _ in range(min(count, _MAX_PREVIEW)):
            current = self.next_after(current)
            fires.append(current)
        return fires

    def due_between(self, start: float, end: float, limit: int = 10_000) -> list[float]:
        """Fire times in `(start, end]`, at most `limit` (the oldest ones)."""
        fires: list[float] = []
        current = start
        while len(fires) < limit:
            current = self.next_after(current)
            if current > end:
                break
            fires.append(current)
        return fires


def compile_cron(expression: str, timezone: str = "UTC") -> CronSpec:
    """Validate a 5- or 6-field expression and a timezone; raises `TimingError` with the reason."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise TimingError(f"cron {expression!r}: expected 5 fields (or 6 with seconds first), got {len(fields)}")
    seconds_first = len(fields) == 6
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized, second_at_beginning=seconds_first):
        raise TimingError(f"cron {expression!r}: not a valid expression")
    spec = CronSpec(normalized, zone(timezone), seconds_first)
    try:
        spec.next_after(0.0)
    except Exception as exc:  # croniter raises its own errors for impossible dates (Feb 30)
        raise TimingError(f"cron {expression!r}: never fires ({exc})") from exc
    return spec

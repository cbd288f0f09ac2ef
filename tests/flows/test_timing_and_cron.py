"""Durations, timestamps, timezones, business days and cron fire times (DST rules stated in cron.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.flows.cron import compile_cron
from app.flows.models import BusinessCalendar
from app.flows.timing import (
    TimingError,
    add_business_days,
    jitter_seconds,
    local_to_utc,
    next_business_instant,
    parse_duration,
    parse_instant,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("1h30m", 5400), ("3d", 259200), ("250ms", 0.25), ("2w", 1209600), (12, 12), (0.5, 0.5)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "3 days", "-1s", "1x", "P1D", True, -5, 10**10])
def test_bad_durations_say_why(bad: object) -> None:
    with pytest.raises(TimingError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_instants_naive_in_zone_and_offsets_kept() -> None:
    assert parse_instant("2026-07-01T09:00:00", BERLIN) == utc(2026, 7, 1, 7)
    assert parse_instant("2026-07-01T09:00:00Z", BERLIN) == utc(2026, 7, 1, 9)
    assert parse_instant("2026-07-01T09:00:00-04:00", BERLIN) == utc(2026, 7, 1, 13)
    assert parse_instant(1_700_000_000, BERLIN) == 1_700_000_000.0
    with pytest.raises(TimingError, match="ISO 8601"):
        parse_instant("next tuesday", BERLIN)
    with pytest.raises(TimingError):
        parse_instant({"a": 1}, BERLIN)


def test_skipped_local_time_maps_to_the_end_of_the_gap() -> None:
    # Berlin jumps from 02:00 CET to 03:00 CEST on 2026-03-29 (01:00 UTC).
    assert local_to_utc(datetime(2026, 3, 29, 2, 30), BERLIN).timestamp() == utc(2026, 3, 29, 1, 0)
    assert local_to_utc(datetime(2026, 3, 29, 2, 0), BERLIN).timestamp() == utc(2026, 3, 29, 1, 0)
    # New York: 02:00 EST -> 03:00 EDT on 2026-03-08 (07:00 UTC).
    assert local_to_utc(datetime(2026, 3, 8, 2, 15), NEW_YORK).timestamp() == utc(2026, 3, 8, 7, 0)


def test_repeated_local_time_maps_to_its_first_occurrence() -> None:
    # Berlin falls back from 03:00 CEST to 02:00 CET on 2026-10-25: 02:30 happens at 00:30 and 01:30 UTC.
    assert local_to_utc(datetime(2026, 10, 25, 2, 30), BERLIN).timestamp() == utc(2026, 10, 25, 0, 30)


def test_business_days_skip_weekends_and_holidays() -> None:
    calendar = BusinessCalendar(holidays=[date(2026, 12, 28)])
    friday = datetime(2026, 12, 25, 10, 0, tzinfo=BERLIN)  # a Friday
    assert add_business_days(friday, 1, calendar) == datetime(2026, 12, 29, 10, 0, tzinfo=BERLIN)
    assert add_business_days(friday, 3, calendar) == datetime(2026, 12, 31, 10, 0, tzinfo=BERLIN)
    saturday = datetime(2026, 12, 26, 8, 0, tzinfo=BERLIN)
    assert next_business_instant(saturday, calendar) == datetime(2026, 12, 29, 8, 0, tzinfo=BERLIN)
    monday = datetime(2026, 12, 21, 8, 0, tzinfo=BERLIN)
    assert next_business_instant(monday, calendar) == monday


def test_business_days_keep_local_time_across_dst() -> None:
    friday = datetime(2026, 3, 27, 9, 0, tzinfo=BERLIN)  # CET; the clocks change on Sunday
    monday = add_business_days(friday, 1, BusinessCalendar())
    assert monday.replace(tzinfo=None) == datetime(2026, 3, 30, 9, 0)
    assert monday.timestamp() - friday.timestamp() == 3 * 86400 - 3600


def test_a_calendar_without_working_days_is_refused() -> None:
    with pytest.raises(TimingError, match="working weekday"):
        add_business_days(datetime(2026, 1, 1, tzinfo=UTC), 1, BusinessCalendar(weekend=[1, 2, 3, 4, 5, 6, 7]))


def test_jitter_is_deterministic_and_bounded() -> None:
    values = {jitter_seconds(f"i{n}:step", 30.0) for n in range(200)}
    assert all(0 <= v < 30 for v in values)
    assert len(values) > 150
    assert jitter_seconds("i1:step", 30.0) == jitter_seconds("i1:step", 30.0)
    assert jitter_seconds("i1:step", 0) == 0


# --- cron ----------------------------------------------------------------------------------------


def fires(expression: str, tz: str, start: float, count: int) -> list[str]:
    spec = compile_cron(expression, tz)
    zone = ZoneInfo(tz)
    return [datetime.fromtimestamp(f, zone).isoformat() for f in spec.preview(start, count)]


def test_weekday_mornings_in_berlin() -> None:
    start = utc(2026, 1, 1)  # a Thursday
    assert fires("0 9 * * MON-FRI", "Europe/Berlin", start, 3) == [
        "2026-01-01T09:00:00+01:00",
        "2026-01-02T09:00:00+01:00",
        "2026-01-05T09:00:00+01:00",
    ]


def test_six_fields_have_seconds_first() -> None:
    assert fires("30 0 12 * * *", "UTC", utc(2026, 1, 1), 2) == [
        "2026-01-01T12:00:30+00:00",
        "2026-01-02T12:00:30+00:00",
    ]


def test_daily_fire_in_the_spring_gap_fires_at_the_gaps_end() -> None:
    assert fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 3) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that day
        "2026-03-30T02:30:00+02:00",
    ]


def test_skipped_times_collapse_into_one_fire() -> None:
    assert fires("*/20 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 30), 5) == [
        "2026-03-29T01:40:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00, 02:20, 02:40 skipped -> one fire at 03:00
        "2026-03-29T03:20:00+02:00",
        "2026-03-29T03:40:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


def test_repeated_time_fires_once() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25; the schedule fires at the first.
    assert fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    hourly = compile_cron("0 * * * *", "America/New_York").due_between(utc(2026, 11, 1, 4), utc(2026, 11, 1, 8, 30))
    walls = [datetime.fromtimestamp(f, NEW_YORK).strftime("%H:%M%z") for f in hourly]
    assert walls == ["01:00-0400", "02:00-0500", "03:00-0500"]  # the second 01:00 (EST) does not fire


def test_fire_times_strictly_increase_through_a_year_of_dst() -> None:
    spec = compile_cron("*/30 * * * *", "Europe/Berlin")
    times = spec.preview(utc(2026, 1, 1), 1000)
    march = spec.due_between(utc(2026, 3, 28), utc(2026, 3, 30))
    october = spec.due_between(utc(2026, 10, 24), utc(2026, 10, 26))
    for series in (times, march, october):
        assert all(a < b for a, b in itertools.pairwise(series))
    # 48 real hours each. In March the skipped wall times 02:00/02:30 are not real instants, so every
    # real half hour still fires; in October the repeated hour fires once, so two real half hours do not.
    assert len(march) == 96
    assert len(october) == 94


@pytest.mark.parametrize(
    ("expression", "tz", "reason"),
    [
        ("0 9 * *", "UTC", "expected 5 fields"),
        ("61 9 * * *", "UTC", "not a valid"),
        ("0 9 * * *", "Mars/Olympus", "unknown timezone"),
        ("0 0 30 2 *", "UTC", "never fires|not a valid"),
    ],
)
def test_bad_schedules_say_why(expression: str, tz: str, reason: str) -> None:
    with pytest.raises(TimingError, match=reason):
        compile_cron(expression, tz)

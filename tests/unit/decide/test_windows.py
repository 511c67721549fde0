"""Maintenance windows: edges, overlaps, time zones and DST, validation, a brute-force oracle."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from etcdagent.decide.windows import WindowState, describe, window_state
from etcdagent.settings.windows import MaintenanceWindow, shortest_period


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def window(schedule: str, duration: str | float, timezone: str = "UTC") -> MaintenanceWindow:
    return MaintenanceWindow(schedule=schedule, duration=duration, timezone=timezone)  # type: ignore[arg-type]


NIGHTLY = window("0 2 * * *", "1h")


# --- edges -----------------------------------------------------------------------------------


def test_start_is_inclusive_and_end_exclusive() -> None:
    before = window_state([NIGHTLY], utc(2026, 5, 4, 1, 59, 59))
    at_start = window_state([NIGHTLY], utc(2026, 5, 4, 2, 0))
    last = window_state([NIGHTLY], utc(2026, 5, 4, 2, 59, 59, 999999))
    at_end = window_state([NIGHTLY], utc(2026, 5, 4, 3, 0))

    assert not before.open and before.ends_at is None and before.window is None
    assert before.next_start == utc(2026, 5, 4, 2, 0)
    assert at_start.open and at_start.ends_at == utc(2026, 5, 4, 3, 0)
    assert at_start.window == NIGHTLY
    assert last.open
    assert not at_end.open and at_end.ends_at is None


def test_next_start_is_strictly_after_now() -> None:
    at_start = window_state([NIGHTLY], utc(2026, 5, 4, 2, 0))
    assert at_start.next_start == utc(2026, 5, 5, 2, 0)
    after = window_state([NIGHTLY], utc(2026, 5, 4, 3, 0))
    assert after.next_start == utc(2026, 5, 5, 2, 0)


def test_no_windows_is_closed_without_next_start() -> None:
    state = window_state([], utc(2026, 5, 4, 2, 0))
    assert state == WindowState(open=False, window=None, ends_at=None, next_start=None)
    assert describe(state) == "closed; no maintenance window configured"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_state([NIGHTLY], datetime(2026, 5, 4, 2, 0))


def test_results_are_utc_whatever_zone_now_is_given_in() -> None:
    now = utc(2026, 5, 4, 2, 30).astimezone(ZoneInfo("Asia/Tokyo"))
    state = window_state([NIGHTLY], now)
    assert state.open and state.ends_at == utc(2026, 5, 4, 3, 0)
    assert state.ends_at is not None and state.ends_at.utcoffset() == timedelta(0)
    assert state.next_start is not None and state.next_start.tzinfo is UTC


def test_weekday_schedule() -> None:
    weekend = window("0 1 * * sat,sun", "4h")
    # 2026-05-08 is a Friday.
    friday = window_state([weekend], utc(2026, 5, 8, 2, 0))
    assert not friday.open and friday.next_start == utc(2026, 5, 9, 1, 0)
    saturday = window_state([weekend], utc(2026, 5, 9, 4, 59))
    assert saturday.open and saturday.ends_at == utc(2026, 5, 9, 5, 0)
    assert saturday.next_start == utc(2026, 5, 10, 1, 0)


# --- several windows -------------------------------------------------------------------------


def test_overlapping_windows_the_later_end_wins() -> None:
    short = window("0 2 * * *", "1h")
    long = window("30 2 * * *", "2h")
    state = window_state([short, long], utc(2026, 5, 4, 2, 45))
    assert state.open and state.window == long and state.ends_at == utc(2026, 5, 4, 4, 30)
    # Order of configuration does not matter.
    assert window_state([long, short], utc(2026, 5, 4, 2, 45)) == state
    # Before the second opens only the first is open.
    early = window_state([short, long], utc(2026, 5, 4, 2, 15))
    assert early.window == short and early.ends_at == utc(2026, 5, 4, 3, 0)
    assert early.next_start == utc(2026, 5, 4, 2, 30)


def test_a_window_contained_in_another_does_not_shorten_it() -> None:
    outer = window("0 1 * * *", "4h")
    inner = window("0 2 * * *", "30m")
    state = window_state([inner, outer], utc(2026, 5, 4, 2, 10))
    assert state.window == outer and state.ends_at == utc(2026, 5, 4, 5, 0)


def test_equal_ends_report_the_first_listed() -> None:
    a = window("0 2 * * *", "1h")
    b = window("30 2 * * *", "30m")
    assert window_state([a, b], utc(2026, 5, 4, 2, 40)).window == a
    assert window_state([b, a], utc(2026, 5, 4, 2, 40)).window == b


def test_next_start_is_the_earliest_of_all_windows() -> None:
    daily = window("0 2 * * *", "1h")
    hourly = window("15 * * * *", "10m")
    state = window_state([daily, hourly], utc(2026, 5, 4, 2, 20))
    assert state.window == daily  # the hourly one (02:15-02:25) is open too, but ends first
    assert state.ends_at == utc(2026, 5, 4, 3, 0)
    assert state.next_start == utc(2026, 5, 4, 3, 15)


# --- time zones and DST ----------------------------------------------------------------------

BERLIN = "Europe/Berlin"


def test_berlin_is_utc_plus_one_in_winter_and_plus_two_in_summer() -> None:
    w = window("0 2 * * *", "1h", BERLIN)
    winter = window_state([w], utc(2026, 1, 15, 1, 0))
    assert winter.open and winter.ends_at == utc(2026, 1, 15, 2, 0)
    summer = window_state([w], utc(2026, 7, 15, 0, 0))
    assert summer.open and summer.ends_at == utc(2026, 7, 15, 1, 0)
    assert not window_state([w], utc(2026, 7, 15, 1, 0)).open
    # The same schedule in UTC is an hour or two later.
    assert not window_state([window("0 2 * * *", "1h")], utc(2026, 7, 15, 0, 0)).open


def test_next_start_across_spring_forward() -> None:
    w = window("0 1 * * *", "1h", BERLIN)
    # 2026-03-29: 02:00 CET becomes 03:00 CEST.
    state = window_state([w], utc(2026, 3, 28, 12, 0))
    assert state.next_start == utc(2026, 3, 29, 0, 0)  # 01:00 CET
    after = window_state([w], utc(2026, 3, 29, 12, 0))
    assert after.next_start == utc(2026, 3, 29, 23, 0)  # 01:00 CEST


def test_start_skipped_by_spring_forward_opens_when_the_clocks_jump() -> None:
    """02:30 does not exist on 2026-03-29 in Berlin: the window opens at 03:00 CEST (01:00 UTC)
    and lasts its full hour."""
    w = window("30 2 * * *", "1h", BERLIN)
    assert window_state([w], utc(2026, 3, 28, 12, 0)).next_start == utc(2026, 3, 29, 1, 0)
    assert not window_state([w], utc(2026, 3, 29, 0, 59, 59)).open
    state = window_state([w], utc(2026, 3, 29, 1, 0))
    assert state.open and state.ends_at == utc(2026, 3, 29, 2, 0)
    assert state.next_start == utc(2026, 3, 30, 0, 30)  # 02:30 CEST the next day
    assert not window_state([w], utc(2026, 3, 29, 2, 0)).open
    assert describe(state) == "open until 2026-03-29 02:00 UTC"


def test_starts_in_the_skipped_hour_collapse_onto_the_jump() -> None:
    w = window("*/20 * * * *", "10m", BERLIN)
    # 01:40 CET (00:40 UTC) is the last start before the change; 02:00, 02:20 and 02:40 do not
    # exist and all open at 03:00 CEST (01:00 UTC); the next is 03:20 CEST.
    assert window_state([w], utc(2026, 3, 29, 0, 55)).next_start == utc(2026, 3, 29, 1, 0)
    state = window_state([w], utc(2026, 3, 29, 1, 5))
    assert state.open and state.ends_at == utc(2026, 3, 29, 1, 10)
    assert state.next_start == utc(2026, 3, 29, 1, 20)


def test_repeated_hour_starts_the_window_once() -> None:
    """02:30 happens twice on 2026-10-25 in Berlin (CEST, then CET): the window opens at the
    first, 00:30 UTC, and not again at 01:30 UTC."""
    w = window("30 2 * * *", "1h", BERLIN)
    assert window_state([w], utc(2026, 10, 24, 12, 0)).next_start == utc(2026, 10, 25, 0, 30)
    state = window_state([w], utc(2026, 10, 25, 0, 30))
    assert state.open and state.ends_at == utc(2026, 10, 25, 1, 30)
    # 01:29 UTC is 02:29 CET, in the second pass of the repeated hour: still the same window.
    assert window_state([w], utc(2026, 10, 25, 1, 29)).open
    later = window_state([w], utc(2026, 10, 25, 1, 45))  # 02:45 CET, second pass
    assert not later.open
    assert later.next_start == utc(2026, 10, 26, 1, 30)  # 02:30 CET the next day


def test_duration_is_elapsed_time_across_fall_back() -> None:
    w = window("0 1 * * *", "3h", BERLIN)
    state = window_state([w], utc(2026, 10, 24, 23, 0))  # 01:00 CEST
    assert state.open and state.ends_at == utc(2026, 10, 25, 2, 0)  # 03:00 CET, 3 real hours


def test_half_hour_dst_zone() -> None:
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
    w = window("15 2 * * *", "1h", "Australia/Lord_Howe")
    state = window_state([w], utc(2026, 10, 3, 12, 0))
    jump = datetime(2026, 10, 4, 2, 30, tzinfo=ZoneInfo("Australia/Lord_Howe")).astimezone(UTC)
    assert state.next_start == jump


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"schedule": "0 2 * *"}, "has 4 fields"),
        ({"schedule": "0 0 2 * * *"}, "seconds and years are not supported"),
        ({"schedule": ""}, "empty schedule"),
        ({"schedule": "0 25 * * *"}, "not a valid cron expression"),
        ({"schedule": "0 2 * * funday"}, "not a valid cron expression"),
        ({"schedule": "H 2 * * *"}, "not a valid cron expression"),
        ({"schedule": "0 0 30 2 *"}, "never matches a date"),
        ({"timezone": "Europe/Berln"}, "did you mean 'Europe/Berlin'"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "Europe"}, "unknown time zone 'Europe'"),
        ({"timezone": "../etc/passwd"}, "unknown time zone"),
        ({"timezone": "localtime"}, "depends on the host"),
        ({"duration": "soon"}, "is not a duration"),
        ({"duration": 0}, "greater than 0"),
        ({"duration": "-1h"}, "is not a duration"),
        ({"duration": "8d"}, "longer than the 7d"),
        ({"schedule": "0 * * * *", "duration": "61m"}, "shortest time between two starts"),
        ({"schedule": "0 2,4 * * *", "duration": "3h"}, "(2h)"),
        ({"schedule": "0 23,1 * * *", "duration": "3h"}, "(2h)"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_windows_name_the_problem(fields: dict[str, object], problem: str) -> None:
    data: dict[str, object] = {"schedule": "0 2 * * *", "duration": "1h", "timezone": BERLIN}
    data.update(fields)
    with pytest.raises(ValidationError) as info:
        MaintenanceWindow.model_validate(data)
    assert problem in str(info.value)


def test_valid_forms() -> None:
    w = window("  0   2 * *   mon-fri ", "90m", BERLIN)
    assert w.schedule == "0 2 * * mon-fri" and w.duration == 5400.0
    assert window("@daily", 3600).duration == 3600.0
    assert window("0 2 * * 1", "7d").duration == 7 * 86400.0  # weekly, back to back
    assert window("0 * * * *", "1h").duration == 3600.0  # hourly, back to back


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [
        ("* * * * *", 60),
        ("*/15 2-4 * * *", 900),
        ("0 2 * * *", 86400),
        ("0 23,1 * * *", 7200),
        ("0 2 * * 1", 7 * 86400),
        ("0 2 * * mon-fri", 86400),
        ("0 2 1 * *", 28 * 86400),
        ("0 2 29 2 *", (3 * 365 + 366) * 86400),
        ("@hourly", 3600),
    ],
)
def test_shortest_period(schedule: str, seconds: int) -> None:
    assert shortest_period(schedule) == seconds


def test_window_is_frozen() -> None:
    with pytest.raises(ValidationError):
        NIGHTLY.duration = 5


# --- describe --------------------------------------------------------------------------------


def test_describe() -> None:
    assert describe(window_state([NIGHTLY], utc(2026, 11, 30, 2, 30))) == (
        "open until 2026-11-30 03:00 UTC"
    )
    assert describe(window_state([NIGHTLY], utc(2026, 11, 29, 12, 0))) == (
        "closed; next window 2026-11-30 02:00 UTC"
    )
    odd = window("0 2 * * *", "90s")
    assert describe(window_state([odd], utc(2026, 11, 30, 2, 0))) == (
        "open until 2026-11-30 02:01:30 UTC"
    )


# --- properties ------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
]
DOWS = ["*", "0", "1-5", "6,0", "3"]
CRON_DOW = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 0}  # date.weekday() -> cron day of week


def _dows(field: str) -> set[int] | None:
    if field == "*":
        return None
    days: set[int] = set()
    for part in field.split(","):
        low, _, high = part.partition("-")
        days.update(range(int(low), int(high or low) + 1))
    return days


@st.composite
def windows_strategy(draw: st.DrawFn) -> tuple[MaintenanceWindow, set[int], set[int], str]:
    minutes = draw(st.sets(st.integers(0, 59), min_size=1, max_size=2))
    # Hours 1-3 are where Europe, the US and Lord Howe change their clocks: drawn more often.
    hours = draw(st.sets(st.integers(1, 3) | st.integers(0, 23), min_size=1, max_size=3))
    dow = draw(st.sampled_from(DOWS))
    zone = draw(st.sampled_from(ZONES) | st.just(BERLIN))
    schedule = (
        f"{','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * {dow}"
    )
    longest = int(shortest_period(schedule))
    duration = draw(st.integers(60, min(longest, 2 * 86400)))
    w = MaintenanceWindow(schedule=schedule, duration=duration, timezone=zone)
    return w, minutes, hours, dow


def _oracle_starts(
    minutes: set[int], hours: set[int], dow: str, zone: str, now: datetime
) -> list[datetime]:
    """Every start within ten days of ``now``, from the documented rules, independently: the
    wall-clock times listed day by day, a skipped one moved to the first minute that exists."""
    tz = ZoneInfo(zone)
    days = _dows(dow)
    centre = now.astimezone(tz).date()
    starts: list[datetime] = []
    for offset in range(-10, 11):
        day: date = centre + timedelta(days=offset)
        if days is not None and CRON_DOW[day.weekday()] not in days:
            continue
        for hour in hours:
            for minute in minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                instant = wall.replace(tzinfo=tz).astimezone(UTC)
                if instant.astimezone(tz).replace(tzinfo=None) != wall:
                    # Skipped: the clocks jump at the first UTC minute whose wall time is later.
                    instant = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
                    while instant.astimezone(tz).replace(tzinfo=None) < wall:
                        instant += timedelta(minutes=1)
                starts.append(instant)
    return sorted(starts)


moments = st.integers(int(utc(2024, 1, 1).timestamp()), int(utc(2028, 1, 1).timestamp())).map(
    lambda s: datetime.fromtimestamp(s, UTC)
)
# Half the examples land within a day (often within two hours) of a DST change in Europe, the US
# or Lord Howe; Berlin, whose changes are at 01:00 UTC, is drawn more often.
TRANSITIONS = [
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 4, 4, 15),
    utc(2026, 10, 3, 15, 30),
]
near_transitions = st.builds(
    lambda base, seconds: base + timedelta(seconds=seconds),
    st.sampled_from(TRANSITIONS) | st.sampled_from(TRANSITIONS[:2]),
    st.integers(-2 * 3600, 2 * 3600) | st.integers(-86400, 86400),
)


def _berlin_0230() -> list[tuple[MaintenanceWindow, set[int], set[int], str]]:
    return [(window("30 2 * * *", "1h", BERLIN), {30}, {2}, "*")]


@settings(max_examples=300, deadline=None)
@example(configured=_berlin_0230(), now=utc(2026, 3, 29, 1, 15))  # in the skipped hour
@example(configured=_berlin_0230(), now=utc(2026, 10, 25, 1, 29))  # second pass, fold=1
@given(
    configured=st.lists(windows_strategy(), min_size=0, max_size=3),
    now=st.one_of(moments, near_transitions),
)
def test_state_matches_brute_force(
    configured: list[tuple[MaintenanceWindow, set[int], set[int], str]], now: datetime
) -> None:
    windows = [w for w, *_ in configured]
    state = window_state(windows, now)

    # The properties the daemon relies on.
    assert state.open == (state.ends_at is not None and now < state.ends_at)
    assert state.open == (state.window is not None)
    if windows:
        assert state.next_start is not None and state.next_start > now
        assert window_state(windows, state.next_start).open  # start inclusive
    else:
        assert state.next_start is None
    if state.open:
        assert state.ends_at is not None
        assert window_state(windows, state.ends_at - timedelta(microseconds=1)).open

    # The oracle: all starts near now, by the documented DST rules.
    open_ends: list[datetime] = []
    following: list[datetime] = []
    for w, minutes, hours, dow in configured:
        starts = _oracle_starts(minutes, hours, dow, w.timezone, now)
        length = timedelta(seconds=w.duration)
        open_ends += [s + length for s in starts if s <= now < s + length]
        following += [s for s in starts if s > now]
    assert state.ends_at == (max(open_ends) if open_ends else None)
    assert state.next_start == (min(following) if following else None)

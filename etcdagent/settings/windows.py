"""Maintenance windows: when planned maintenance may start, and until when it may run.

A window is a cron schedule (5 fields, read on the wall clock of its own time zone) plus a
duration. The daemon maintains only while a window is open and does not start a member's defrag
that would overrun the window's end, so the state it needs is "open, and until when" and, for
metrics, "when does the next one open". Everything here is pure: the caller passes ``now``.

Rules, chosen so that a window always has a well-defined start and nothing happens twice:

* A schedule is read on the wall clock of ``timezone``; the duration is elapsed time (a 3h window
  starting at 01:00 on the night the clocks go back ends at 03:00 of the new, later offset: 3 real
  hours).
* A start whose wall-clock time is skipped by a spring-forward change (02:30 in Europe/Berlin on
  the last Sunday of March) opens the window at the moment the clocks jump (03:00 CEST), and it
  lasts its full duration from there. That is what cron daemons do with jobs in the skipped hour,
  and it keeps starts in order (an every-20-minutes schedule does not run backwards).
* A wall-clock time that occurs twice when the clocks go back starts a window once, at its first
  occurrence (PEP 495 ``fold=0``).
* A window is open when ``now`` is in ``[start, start + duration)`` for the schedule's most recent
  start at or before ``now``: start inclusive, end exclusive.
"""

from __future__ import annotations

import difflib
import functools
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from etcdagent.units import format_duration, parse_duration

MAX_DURATION = 7 * 86400.0
"""Longest window accepted: longer ones are almost certainly a unit mistake, and a window that
never closes is better written as no window at all."""

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = "minute hour day-of-month month day-of-week"

# Validation looks at the schedule from a fixed, naive moment, so whether a configuration loads
# never depends on the day it is loaded (2000 is a leap year, which catches 29 February).
_REFERENCE = datetime(2000, 1, 1)
_DAY_SCAN_YEARS = 28  # the Gregorian weekday-and-date pattern repeats within 28 years (1901-2099)
_DAY_SCAN_MATCHES = 400
_MINUTE = timedelta(minutes=1)


def cron_fields(schedule: str) -> list[str]:
    """The five fields of a schedule, with the @daily-style aliases spelt out."""
    text = " ".join(schedule.split())
    return _ALIASES.get(text.lower(), text).split()


def _check_schedule(value: str) -> str:
    """Refuse what would only fail later: wrong field count, a bad field, a date that never
    occurs. The stored text is the one written, with whitespace collapsed."""
    text = " ".join(value.split())
    if not text:
        raise ValueError("empty schedule; use a 5-field cron expression such as '0 2 * * *'")
    fields = cron_fields(text)
    if len(fields) != 5:
        extra = " (seconds and years are not supported)" if len(fields) in (6, 7) else ""
        raise ValueError(
            f"schedule {text!r} has {len(fields)} fields, a cron expression has 5 "
            f"({_FIELD_NAMES}){extra}"
        )
    try:
        it = croniter(" ".join(fields), _REFERENCE)
    except CroniterError as exc:
        # croniter sometimes puts a traceback in the message: its last line is the problem.
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ValueError(f"schedule {text!r} is not a valid cron expression: {lines[-1]}") from None
    try:
        it.get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(
            f"schedule {text!r} never matches a date (such as 30 February), the window would "
            "never open"
        ) from None
    return text


def _check_timezone(value: str) -> str:
    """An IANA name that this host's time zone database knows; a typo gets a suggestion."""
    if value == "localtime":
        raise ValueError(
            "time zone 'localtime' depends on the host; name the zone, e.g. Europe/Berlin or UTC"
        )
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown time zone {value!r}{hint}; use an IANA name such as Europe/Berlin or UTC"
        ) from None
    return value


@functools.lru_cache(maxsize=256)
def _shortest_day_gap(dom: str, month: str, dow: str) -> int:
    """Fewest days between two days the schedule fires on (wall-clock calendar days)."""
    it = croniter(f"0 0 {dom} {month} {dow}", _REFERENCE - _MINUTE)
    previous: datetime = it.get_next(datetime)
    limit = previous.replace(year=previous.year + _DAY_SCAN_YEARS)
    best: int | None = None
    for _ in range(_DAY_SCAN_MATCHES):
        try:
            day: datetime = it.get_next(datetime)
        except CroniterBadDateError:  # pragma: no cover - only one day within 50 years
            break
        gap = (day - previous).days
        best = gap if best is None else min(best, gap)
        if best == 1 or day > limit:
            break
        previous = day
    return best if best is not None else 366 * _DAY_SCAN_YEARS


@functools.lru_cache(maxsize=256)
def shortest_period(schedule: str) -> float:
    """Fewest seconds between two consecutive starts of a (valid) schedule, on the wall clock.

    Exact for the times of day (from the expanded minute and hour fields); the days are scanned
    over up to 28 years or 400 firing days, which covers the repeating calendar. Real elapsed
    gaps can be shorter around a DST change (by the size of the change); that is not counted.
    """
    fields = cron_fields(schedule)
    expanded = croniter(" ".join(fields)).expanded
    minutes = range(60) if expanded[0] == ["*"] else [int(m) for m in expanded[0]]
    hours = range(24) if expanded[1] == ["*"] else [int(h) for h in expanded[1]]
    times = sorted(h * 60 + m for h in hours for m in minutes)
    span = times[-1] - times[0]
    gaps = [b - a for a, b in pairwise(times)]
    gaps.append(_shortest_day_gap(*fields[2:]) * 1440 - span)
    return 60.0 * min(gaps)


class MaintenanceWindow(BaseModel):
    """One recurring low-traffic window: planned maintenance may start only inside one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: str = Field(
        description="When the window opens: a 5-field cron expression (minute hour day-of-month "
        "month day-of-week, e.g. '0 2 * * *' or '30 1 * * sat,sun'; @daily-style aliases are "
        "accepted), read on the wall clock of `timezone`."
    )
    duration: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = Field(
        description="How long the window stays open (elapsed time, e.g. 1h or 90m). At most 7d, "
        "and not longer than the shortest time between two starts of the schedule, so a window "
        "closes before the next one of the same schedule opens (equal is allowed: back to back)."
    )
    timezone: str = Field(
        default="UTC",
        description="IANA time zone the schedule is read in, e.g. Europe/Berlin. A start skipped "
        "by a spring-forward change opens the window when the clocks jump; a repeated wall-clock "
        "time starts it once, at its first occurrence.",
    )

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        return _check_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("duration")
    @classmethod
    def _at_most_a_week(cls, value: float) -> float:
        if value > MAX_DURATION:
            raise ValueError(
                f"duration {format_duration(value)} is longer than the 7d a window may last"
            )
        return value

    @model_validator(mode="after")
    def _closes_before_reopening(self) -> MaintenanceWindow:
        period = shortest_period(self.schedule)
        if self.duration > period:
            raise ValueError(
                f"duration {format_duration(self.duration)} is longer than the shortest time "
                f"between two starts of schedule {self.schedule!r} ({format_duration(period)}): "
                "the window would never close; shorten it or use a sparser schedule"
            )
        return self

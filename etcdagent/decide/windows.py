"""Where now stands relative to the maintenance windows: open until when, next start.

The schedule rules (time zones, DST, validation) live with the setting in
:mod:`etcdagent.settings.windows`; this module only evaluates configured windows at a given
``now``, so the daemon can be driven by a clock the tests move by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field

from etcdagent.settings.windows import MaintenanceWindow, cron_fields

_MINUTE = timedelta(minutes=1)


class WindowState(BaseModel):
    """Where ``now`` stands relative to the configured windows (all times UTC)."""

    model_config = ConfigDict(frozen=True)

    open: bool = Field(description="Some window is open now.")
    window: MaintenanceWindow | None = Field(
        description="The open window; the one ending last if several overlap."
    )
    ends_at: datetime | None = Field(
        description="When the open window(s) close: the latest end among the open ones."
    )
    next_start: datetime | None = Field(
        description="The next start of any window strictly after now; None without windows."
    )


def _to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a naive wall-clock start of ``tz`` happens, by the module's DST rules."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # an ordinary time, or the first of two repeated ones
    # Skipped by a spring-forward change: fold=1 reads it with the new offset (an instant before
    # the change), fold=0 with the old one (after it). The change is between; find its second.
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    after = first
    old_offset = before.astimezone(tz).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + timedelta(seconds=(after - before).total_seconds() // 2)
        if middle.astimezone(tz).utcoffset() == old_offset:
            before = middle
        else:
            after = middle
    return after


def _starts_around(window: MaintenanceWindow, now: datetime) -> tuple[datetime, datetime]:
    """The schedule's latest start at or before ``now`` and its first start after it (UTC)."""
    tz = ZoneInfo(window.timezone)
    expression = " ".join(cron_fields(window.schedule))
    local = now.astimezone(tz)
    wall = local.replace(tzinfo=None)
    # In the second pass of a repeated hour (fold=1), wall times up to one fold later have
    # already started (at their first occurrence): search from there.
    first_offset = wall.replace(tzinfo=tz, fold=0).utcoffset()
    now_offset = local.utcoffset()
    assert first_offset is not None and now_offset is not None
    ahead = max(first_offset - now_offset, timedelta(0))
    upper = (wall + ahead).replace(second=0, microsecond=0) + _MINUTE
    backwards = croniter(expression, upper)
    start: datetime = backwards.get_prev(datetime)
    while _to_utc(start, tz) > now:  # pragma: no cover - defensive; `upper` is exact
        start = backwards.get_prev(datetime)
    forwards = croniter(expression, start)
    following: datetime = forwards.get_next(datetime)
    # Starts skipped by a spring-forward collapse onto one instant: skip those not after now.
    while _to_utc(following, tz) <= now:
        start, following = following, forwards.get_next(datetime)
    return _to_utc(start, tz), _to_utc(following, tz)


def window_state(windows: Sequence[MaintenanceWindow], now: datetime) -> WindowState:
    """Whether a window is open at ``now`` (timezone-aware), until when, and the next start.

    With overlapping windows the one ending last is reported (the first listed on a tie), as its
    end is how long maintenance may still run. No windows: closed, no next start.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    open_window: MaintenanceWindow | None = None
    ends_at: datetime | None = None
    next_start: datetime | None = None
    for window in windows:
        start, following = _starts_around(window, now)
        end = start + timedelta(seconds=window.duration)
        if now < end and (ends_at is None or end > ends_at):
            open_window, ends_at = window, end
        if next_start is None or following < next_start:
            next_start = following
    return WindowState(
        open=open_window is not None, window=open_window, ends_at=ends_at, next_start=next_start
    )


def _format_utc(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    shown = (
        f"{moment:%Y-%m-%d %H:%M:%S}"
        if moment.second or moment.microsecond
        else (f"{moment:%Y-%m-%d %H:%M}")
    )
    return shown + " UTC"


def describe(state: WindowState) -> str:
    """One line for logs and `status`: "open until 2026-11-30 03:00 UTC" or "closed; next window
    2026-11-30 02:00 UTC". Dates are always shown: a window may last up to a week."""
    if state.open and state.ends_at is not None:
        return f"open until {_format_utc(state.ends_at)}"
    if state.next_start is None:
        return "closed; no maintenance window configured"
    return f"closed; next window {_format_utc(state.next_start)}"

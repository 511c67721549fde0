"""How long a member's defragmentation will take, and whether it may start at all.

A defrag holds the member's backend: its liveness probe fails meanwhile (kubeadm's
``/health?serializable=true``, 8 failures 10 s apart, so etcd is restarted after about 80 s,
mid-defrag, which reclaims nothing). So a member whose estimate exceeds ``defrag.budget`` is
held back, with the numbers, and is to be defragmented offline. The estimate comes, in order:

1. from this member's last defrag the agent recorded (``/etcdagent/defrag/<id>``): the rate it
   rewrote its live data at, applied to the live data now. Trusted when that defrag took 1 s or
   more, or rewrote at least half of today's live data: below both, fixed costs (the fsyncs, the
   file swap) dominate and the rate would be far too low;
2. else from ``defrag.estimated_rate``; raised to etcd's own mean defrag duration on this member
   (``etcd_disk_backend_defrag_duration_seconds``, since its start) when that is longer: the
   disk there has been slower than the configured rate says. A mean of defrags of unknown sizes
   is no match for the agent's own measurement, so it does not override case 1.

The base is the data in use, not the file: a defrag copies the live keys into a new file and
never reads the free pages (measured on etcd 3.5.1: a 343 MiB file with 64 MiB in use took
0.7 s, a 276 MiB file with 258 MiB in use 1.4-1.9 s).

A member whose etcd restarted during a defrag the agent started (the attempt has no finish and
the process started after it) is not tried again for a day, or until a defrag of it succeeds.
Pure: a snapshot in, numbers and reasons out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from etcdagent.observe.snapshot import MemberSnapshot
from etcdagent.settings import DefragSettings, Settings
from etcdagent.units import format_bytes, format_duration

RESTART_HOLD = timedelta(days=1)
"""How long a member whose etcd restarted mid-defrag is left alone."""

MIN_TRUSTED_DURATION = 1.0
"""A recorded defrag at least this long measures the disk, not the fixed costs."""

OFFLINE_HINT = (
    "defragment it offline: stop the member, `etcdutl defrag --data-dir <its data dir>`, start it "
    "(docs/operations.md, the defrag budget)"
)


@dataclass(frozen=True)
class DefragEstimate:
    """Seconds a member's defrag is expected to take, and what that is based on."""

    seconds: float
    basis: str


def _live(snap: MemberSnapshot) -> int:
    """The bytes a defrag rewrites: the data in use (the file when in-use is not reported)."""
    if snap.status is None:
        return 0
    return snap.status.db_size_in_use or snap.status.db_size


def _history(snap: MemberSnapshot, live: int) -> DefragEstimate | None:
    record = snap.defrag_record
    if record is None or not record.duration or not record.in_use:
        return None
    if record.duration < MIN_TRUSTED_DURATION and record.in_use * 2 < live:
        return None
    rate = record.in_use / record.duration
    return DefragEstimate(
        seconds=live / rate,
        basis=f"{format_bytes(live)} in use at {format_bytes(int(rate))}/s, the rate of its last "
        f"defrag ({format_bytes(record.in_use)} in {format_duration(record.duration)})",
    )


def _etcd_mean(snap: MemberSnapshot) -> tuple[float, int] | None:
    """etcd's own mean defrag duration on this member since it started, and how many."""
    histogram = snap.metrics.defrag_duration if snap.metrics is not None else None
    if histogram is None or histogram.count < 1:
        return None
    return histogram.sum / histogram.count, int(histogram.count)


def estimate_defrag(snap: MemberSnapshot, settings: DefragSettings) -> DefragEstimate:
    """This member's defrag duration estimate (see the module's docstring for the order)."""
    live = _live(snap)
    from_history = _history(snap, live)
    if from_history is not None:
        return from_history
    rate = max(1, settings.estimated_rate)
    estimate = DefragEstimate(
        seconds=live / rate,
        basis=f"{format_bytes(live)} in use at defrag.estimated_rate {format_bytes(rate)}/s",
    )
    mean = _etcd_mean(snap)
    if mean is not None and mean[0] > estimate.seconds:
        seconds, count = mean
        return DefragEstimate(
            seconds=seconds,
            basis=f"etcd's own mean of its {count} defrag(s) since it started, slower than "
            f"{format_bytes(live)} at defrag.estimated_rate {format_bytes(rate)}/s",
        )
    return estimate


def estimate_defrag_seconds(snap: MemberSnapshot, settings: DefragSettings) -> float:
    """Seconds only: what the window check (``DefragStep``) compares with the window's end."""
    return estimate_defrag(snap, settings).seconds


def over_budget(snap: MemberSnapshot, settings: DefragSettings) -> str | None:
    """Why this member's defrag is not to start online (its estimate exceeds the budget)."""
    budget = settings.budget
    if budget is None or snap.status is None:
        return None
    estimate = estimate_defrag(snap, settings)
    if estimate.seconds <= budget:
        return None
    return (
        f"its defrag is estimated at {format_duration(estimate.seconds)} ({estimate.basis}), "
        f"over the {format_duration(budget)} budget (defrag.budget): the liveness probe would "
        f"restart etcd mid-defrag; {OFFLINE_HINT}"
    )


def restarted_mid_defrag(snap: MemberSnapshot, now: datetime) -> str | None:
    """Why this member is left alone after its etcd restarted during a defrag, if it was."""
    record = snap.defrag_record
    attempt = record.in_flight if record is not None else None
    start = snap.metrics.process_start_time if snap.metrics is not None else None
    if attempt is None or start is None:
        return None
    if start <= attempt.started_at.timestamp() or now - attempt.started_at >= RESTART_HOLD:
        return None
    until = attempt.started_at + RESTART_HOLD
    return (
        f"etcd restarted during its defrag started {attempt.started_at:%Y-%m-%d %H:%M:%S} UTC "
        f"(a liveness probe or the OOM killer?): not tried again before {until:%Y-%m-%d %H:%M} "
        f"UTC, unless a defrag of it succeeds or /etcdagent/defrag/{snap.member.id_hex} is "
        f"deleted; {OFFLINE_HINT}"
    )


def held_back(snap: MemberSnapshot, now: datetime, settings: DefragSettings) -> str | None:
    """Why this member's defrag must not start online now: restarted mid-defrag, or over the
    budget; None when it may."""
    return restarted_mid_defrag(snap, now) or over_budget(snap, settings)


def within_grace(settings: Settings) -> Settings:
    """The settings of a process that SIGTERM may stop (``run``, ``run --once``): the budget is
    at most ``daemon.grace_period``, the time the process is sure to have once asked to stop,
    so that a defrag it starts ends before it exits (else the lock's lease expires while etcd
    still defragments, and another agent may start a second one). A budget switched off still
    gets that cap."""
    grace = settings.daemon.grace_period
    budget = settings.defrag.budget
    if budget is not None and budget <= grace:
        return settings
    defrag = settings.defrag.model_copy(update={"budget": grace})
    return settings.model_copy(update={"defrag": defrag})

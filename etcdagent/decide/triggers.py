"""What the daemon does this cycle: a pure function of the snapshot, signals, settings and time.

The one-shot commands decide *how* to maintain (compaction, defrag, recovery); this decides
*whether and why now*: inside a maintenance window with every gate open, or on an emergency
(NOSPACE, quota pressure) outside windows. Every gate is named, so the log, the metric
etcdagent_gate_blocking and the operator all say the same thing about why nothing happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from etcdagent.decide.defrag import defrag_worth
from etcdagent.decide.defrag_budget import held_back
from etcdagent.decide.fence import GATE as FENCE_GATE
from etcdagent.decide.fence import defrag_fence
from etcdagent.decide.gates import cluster_gate_failures
from etcdagent.decide.windows import WindowState
from etcdagent.models import AlarmType
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings
from etcdagent.units import format_duration

# Every gate the daemon reports, in the order it checks them.
GATES = (
    "cluster_health",
    "defrag_inflight",
    "wal_fsync_p99",
    "backend_commit_p99",
    "leader_changes",
    "traffic",
    "defrag_budget",
)
WINDOW_ONLY_GATES = ("traffic",)
# Reported, never blocking: a member held back by the defrag budget is skipped by the plan, and
# the compaction and the other members' defrags still run.
ADVISORY_GATES = ("defrag_budget",)
# What still applies to emergencies; traffic is for windows only.
SAFETY_GATES = tuple(g for g in GATES if g not in WINDOW_ONLY_GATES + ADVISORY_GATES)
MAINTENANCE_GATES = tuple(g for g in GATES if g not in ADVISORY_GATES)


class Trigger(StrEnum):
    WINDOW = "window"
    EMERGENCY_NOSPACE = "emergency-nospace"
    EMERGENCY_QUOTA = "emergency-quota"


class Action(StrEnum):
    MAINTAIN = "maintain"  # compact, then defragment the members worth it
    RECOVER = "recover"  # NOSPACE recovery


class CycleDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: Action | None
    trigger: Trigger | None
    compact: bool  # run the periodic compaction on its own (no maintenance run this cycle)
    compact_due: bool = False  # the periodic compaction is due (a maintenance run may do it)
    pending: Trigger | None = None  # an emergency that is due but blocked by a gate
    gates: dict[str, str | None]  # gate -> blocking reason, None when open
    reasons: tuple[str, ...]  # one line each, for the log

    @property
    def blocking(self) -> dict[str, str]:
        return {g: r for g, r in self.gates.items() if r is not None}


def _latency_problem(
    name: str, sig: MemberSignals | None, attr: str, count_attr: str, limit: float
) -> str | None:
    """One member's p99 against its limit. A member with enough samples and no disk write in the
    lookback is idle, which is fine; no p99 for any other reason is not enough data."""
    if sig is None:
        return f"{name}: not enough data (none)"
    value = getattr(sig, attr)
    if value is None:
        if sig.not_enough_data is None and getattr(sig, count_attr) == 0:
            return None  # enough samples, no disk write in the lookback: an idle member is fine
        return f"{name}: not enough data ({sig.not_enough_data or 'none'})"
    if value > limit:
        return f"{name}: {value * 1000:.0f} ms > {limit * 1000:.0f} ms"
    return None


def _latency_gate(
    snapshot: ClusterSnapshot,
    signals: Mapping[int, MemberSignals],
    attr: str,
    count_attr: str,
    limit: float,
) -> str | None:
    """Blocks while any voting member's disk latency (``attr``, a p99) is over ``limit``."""
    problems = [
        problem
        for snap in snapshot.voting
        if (
            problem := _latency_problem(
                snap.member.display_name, signals.get(snap.member.id), attr, count_attr, limit
            )
        )
        is not None
    ]
    return "; ".join(problems) if problems else None


def _leader_changes_gate(
    snapshot: ClusterSnapshot, signals: Mapping[int, MemberSignals], limit: int
) -> str | None:
    """Blocks after more leader changes than ``limit`` seen by any member in the lookback."""
    changes = [
        sig.leader_changes
        for snap in snapshot.voting
        if (sig := signals.get(snap.member.id)) is not None and sig.leader_changes is not None
    ]
    if not changes:
        return "not enough data"
    most = max(changes)
    if most > limit:
        return f"{most} leader changes in the lookback (gate: {limit})"
    return None


def _traffic_gate(
    cluster_request_rate: float | None, limit: float | None, signals: Mapping[int, MemberSignals]
) -> str | None:
    """Blocks a window that is not actually quiet; off when ``limit`` is None."""
    if limit is None:
        return None
    if cluster_request_rate is None:
        return "not enough data"
    if cluster_request_rate > limit:
        reason = f"{cluster_request_rate:.0f} requests/s > {limit:.0f} (the window is not quiet)"
        if any(s.request_rate_source == "mvcc" for s in signals.values()):
            reason += (
                "; counted as store operations on etcd 3.6.0-3.6.5, whose gRPC counter sees one "
                "client listener only (writes count once per member)"
            )
        return reason
    return None


def _defrag_budget_gate(snapshot: ClusterSnapshot, settings: Settings) -> str | None:
    """Set while a voting member worth defragmenting is held back by the defrag budget (or
    after its etcd restarted mid-defrag): it needs the offline procedure. Advisory: the plan
    skips that member and maintains the others."""
    held = [
        f"{snap.member.display_name}: {reason}"
        for snap in snapshot.voting
        if defrag_worth(snap, settings.defrag)[0]
        and (reason := held_back(snap, snapshot.taken_at, settings.defrag)) is not None
    ]
    return "; ".join(held) if held else None


def evaluate_gates(
    snapshot: ClusterSnapshot,
    signals: Mapping[int, MemberSignals],
    settings: Settings,
    cluster_request_rate: float | None,
) -> dict[str, str | None]:
    """Each gate's blocking reason, or None when open. Missing data blocks: acting blind is the
    failure this agent exists to avoid, and two cycles give enough data."""
    gates = settings.gates
    health = cluster_gate_failures(snapshot, settings.defrag)
    checks = {
        "cluster_health": "; ".join(health) if health else None,
        FENCE_GATE: defrag_fence(snapshot),
        "wal_fsync_p99": _latency_gate(
            snapshot, signals, "wal_fsync_p99", "wal_fsyncs", gates.wal_fsync_p99_max
        ),
        "backend_commit_p99": _latency_gate(
            snapshot, signals, "backend_commit_p99", "backend_commits", gates.backend_commit_p99_max
        ),
        "leader_changes": _leader_changes_gate(snapshot, signals, gates.max_leader_changes),
        "traffic": _traffic_gate(cluster_request_rate, gates.max_request_rate, signals),
        "defrag_budget": _defrag_budget_gate(snapshot, settings),
    }
    return {gate: checks[gate] for gate in GATES}


def quota_pressure(
    snapshot: ClusterSnapshot, signals: Mapping[int, MemberSignals], settings: Settings
) -> str | None:
    """Why the quota calls for maintenance now, if it does."""
    emergency = settings.emergency
    for snap in snapshot.voting:
        use = snap.quota_use
        if use is not None and use >= emergency.quota_use:
            return f"{snap.member.display_name} uses {use:.0%} of its quota"
        sig = signals.get(snap.member.id)
        ttq = sig.time_to_quota if sig is not None else None
        if (
            emergency.time_to_quota is not None
            and ttq is not None
            and (ttq < emergency.time_to_quota)
        ):
            return (
                f"{snap.member.display_name} reaches its quota in about {format_duration(ttq)} "
                "at the current growth"
            )
    return None


def _compaction_due(settings: Settings, now: datetime, last_compaction: datetime | None) -> bool:
    interval = settings.daemon.compaction_interval
    return interval > 0 and (
        last_compaction is None or (now - last_compaction).total_seconds() >= interval
    )


def _nospace_reason(snapshot: ClusterSnapshot, settings: Settings) -> str | None:
    """A raised NOSPACE alarm, when that emergency is switched on."""
    nospace = [a for a in snapshot.alarms if a.alarm is AlarmType.NOSPACE]
    if not nospace or not settings.emergency.nospace:
        return None
    return f"NOSPACE alarm raised ({', '.join(str(a) for a in nospace)}): recover now"


def _blocking(gates: Mapping[str, str | None], names: tuple[str, ...]) -> dict[str, str]:
    return {g: r for g in names if (r := gates[g]) is not None}


def _listed(blocked: Mapping[str, str]) -> str:
    return ", ".join(f"{g}: {r}" for g, r in blocked.items())


def decide_cycle(
    snapshot: ClusterSnapshot,
    signals: Mapping[int, MemberSignals],
    settings: Settings,
    window: WindowState,
    now: datetime,
    *,
    cluster_request_rate: float | None,
    last_compaction: datetime | None,
) -> CycleDecision:
    """The rules in order: NOSPACE recovers at once; quota pressure maintains outside windows
    unless a safety gate blocks; an open window maintains when every gate is open; otherwise
    at most the periodic compaction runs, and only while the cluster is healthy."""
    gates = evaluate_gates(snapshot, signals, settings, cluster_request_rate)
    compact_due = _compaction_due(settings, now, last_compaction)

    def act(action: Action, trigger: Trigger, reasons: list[str]) -> CycleDecision:
        return CycleDecision(
            action=action,
            trigger=trigger,
            compact=False,
            compact_due=compact_due,
            gates=gates,
            reasons=tuple(reasons),
        )

    nospace = _nospace_reason(snapshot, settings)
    if nospace is not None:
        # Recovery checks the structural gates itself (quorum, leader, CORRUPT); latency cannot
        # wait while every write fails.
        return act(Action.RECOVER, Trigger.EMERGENCY_NOSPACE, [nospace])
    reasons: list[str] = []
    pending: Trigger | None = None
    pressure = quota_pressure(snapshot, signals, settings) if settings.emergency.quota else None
    if pressure is not None:
        safety_blocked = _blocking(gates, SAFETY_GATES)
        if not safety_blocked:
            reason = f"quota pressure: {pressure}: maintain outside the window"
            return act(Action.MAINTAIN, Trigger.EMERGENCY_QUOTA, [reason])
        pending = Trigger.EMERGENCY_QUOTA
        reasons.append(f"quota pressure ({pressure}), but blocked by {_listed(safety_blocked)}")
    if window.open:
        blocked = _blocking(gates, MAINTENANCE_GATES)
        if not blocked:
            reasons.append("window open and every gate open: maintain")
            return act(Action.MAINTAIN, Trigger.WINDOW, reasons)
        reasons.append("window open, blocked by " + _listed(blocked))
    elif pressure is None:
        reasons.append("outside maintenance windows")
    return _no_maintenance(gates, compact_due, pending, reasons)


def _no_maintenance(
    gates: dict[str, str | None], compact_due: bool, pending: Trigger | None, reasons: list[str]
) -> CycleDecision:
    """No maintenance run this cycle: at most the periodic compaction, on a healthy cluster."""
    compact = compact_due and gates["cluster_health"] is None
    if compact:
        reasons.append("periodic compaction due")
    return CycleDecision(
        action=None,
        trigger=None,
        pending=pending,
        compact=compact,
        compact_due=compact_due,
        gates=gates,
        reasons=tuple(reasons),
    )

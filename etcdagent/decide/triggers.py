"""What the daemon does this cycle: a pure function of the snapshot, signals, settings and time.

The one-shot commands decide *how* to maintain (decide.py); this decides *whether and why now*:
inside a maintenance window with every gate open, or on an emergency (NOSPACE, quota pressure)
outside windows. Every gate is named, so the log, the metric etcdagent_gate_blocking and the
operator all say the same thing about why nothing happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

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
    "wal_fsync_p99",
    "backend_commit_p99",
    "leader_changes",
    "traffic",
)
SAFETY_GATES = GATES[:4]  # what still applies to emergencies; traffic is for windows only


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


def evaluate_gates(
    snapshot: ClusterSnapshot,
    signals: Mapping[int, MemberSignals],
    settings: Settings,
    cluster_request_rate: float | None,
) -> dict[str, str | None]:
    """Each gate's blocking reason, or None when open. Missing data blocks: acting blind is the
    failure this agent exists to avoid, and two cycles give enough data."""
    gates = settings.gates
    result: dict[str, str | None] = dict.fromkeys(GATES)
    health = cluster_gate_failures(snapshot, settings.defrag)
    if health:
        result["cluster_health"] = "; ".join(health)
    for gate, attr, count_attr, limit in (
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsyncs", gates.wal_fsync_p99_max),
        (
            "backend_commit_p99",
            "backend_commit_p99",
            "backend_commits",
            gates.backend_commit_p99_max,
        ),
    ):
        problems = []
        for snap in snapshot.voting:
            sig = signals.get(snap.member.id)
            value = getattr(sig, attr) if sig is not None else None
            if (
                value is None
                and sig is not None
                and sig.not_enough_data is None
                and (getattr(sig, count_attr) == 0)
            ):
                continue  # enough samples, no disk write in the lookback: an idle member is fine
            if value is None:
                why = sig.not_enough_data if sig is not None else None
                problems.append(f"{snap.member.display_name}: not enough data ({why or 'none'})")
            elif value > limit:
                problems.append(
                    f"{snap.member.display_name}: {value * 1000:.0f} ms > {limit * 1000:.0f} ms"
                )
        if problems:
            result[gate] = "; ".join(problems)
    changes = [
        (snap.member.display_name, sig.leader_changes)
        for snap in snapshot.voting
        if (sig := signals.get(snap.member.id)) is not None and sig.leader_changes is not None
    ]
    if not changes:
        result["leader_changes"] = "not enough data"
    else:
        most = max(n for _, n in changes)
        if most > gates.max_leader_changes:
            result["leader_changes"] = (
                f"{most} leader changes in the lookback (gate: {gates.max_leader_changes})"
            )
    if gates.max_request_rate is not None:
        if cluster_request_rate is None:
            result["traffic"] = "not enough data"
        elif cluster_request_rate > gates.max_request_rate:
            result["traffic"] = (
                f"{cluster_request_rate:.0f} requests/s > {gates.max_request_rate:.0f} "
                "(the window is not quiet)"
            )
    return result


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
    gates = evaluate_gates(snapshot, signals, settings, cluster_request_rate)
    reasons: list[str] = []
    pending: Trigger | None = None
    interval = settings.daemon.compaction_interval
    compact_due = interval > 0 and (
        last_compaction is None or (now - last_compaction).total_seconds() >= interval
    )
    safety_blocked = {g: gates[g] for g in SAFETY_GATES if gates[g] is not None}

    nospace = [a for a in snapshot.alarms if a.alarm is AlarmType.NOSPACE]
    if nospace and settings.emergency.nospace:
        reasons.append(f"NOSPACE alarm raised ({', '.join(str(a) for a in nospace)}): recover now")
        # Recovery checks the structural gates itself (quorum, leader, CORRUPT); latency cannot
        # wait while every write fails.
        return CycleDecision(
            action=Action.RECOVER,
            trigger=Trigger.EMERGENCY_NOSPACE,
            compact=False,
            compact_due=compact_due,
            gates=gates,
            reasons=tuple(reasons),
        )
    pressure = quota_pressure(snapshot, signals, settings) if settings.emergency.quota else None
    if pressure is not None:
        if safety_blocked:
            pending = Trigger.EMERGENCY_QUOTA
            reasons.append(
                f"quota pressure ({pressure}), but blocked by "
                + ", ".join(f"{g}: {r}" for g, r in safety_blocked.items())
            )
        else:
            reasons.append(f"quota pressure: {pressure}: maintain outside the window")
            return CycleDecision(
                action=Action.MAINTAIN,
                trigger=Trigger.EMERGENCY_QUOTA,
                compact=False,
                compact_due=compact_due,
                gates=gates,
                reasons=tuple(reasons),
            )
    if window.open:
        blocked = {g: r for g, r in gates.items() if r is not None}
        if blocked:
            reasons.append(
                "window open, blocked by " + ", ".join(f"{g}: {r}" for g, r in blocked.items())
            )
        else:
            reasons.append("window open and every gate open: maintain")
            return CycleDecision(
                action=Action.MAINTAIN,
                trigger=Trigger.WINDOW,
                compact=False,
                compact_due=compact_due,
                gates=gates,
                reasons=tuple(reasons),
            )
    elif pressure is None:
        reasons.append("outside maintenance windows")
    if compact_due and gates["cluster_health"] is None:
        reasons.append("periodic compaction due")
    return CycleDecision(
        action=None,
        trigger=None,
        pending=pending,
        compact=compact_due and gates["cluster_health"] is None,
        compact_due=compact_due,
        gates=gates,
        reasons=tuple(reasons),
    )

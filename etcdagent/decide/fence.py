"""The defrag fence: no defragmentation or leadership move starts while a member defragments.

The maintenance lock keeps two agents apart only while both hold it honestly: an agent killed
mid-defrag leaves etcd defragmenting after its lease expired, and the next agent would start
another member. Without this fence only an accident prevents that (a defragmenting member usually
does not answer its status, so the health gate refuses); a member behind a proxy or a future etcd
that serves reads during its defrag would let the second one start. So each member's own word is
asked, right before acting: its ``etcd_disk_defrag_inflight`` gauge (etcd 3.4.23, 3.5.1, 3.5.30
and 3.6.14 export it, measured), or, where its etcd does not, whether its applied index trails
its commit index (a defrag blocks the apply loop). A voting member that cannot be asked counts
as busy; a learner only when its gauge says so.

Kept apart from ``gates.cluster_gate_failures`` so that it has its own name (the daemon's gate
``defrag_inflight``) and so that NOSPACE recovery, which some health rules do not block, still
passes through it. Pure: a snapshot in, reasons out.
"""

from __future__ import annotations

from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot

GATE = "defrag_inflight"
FALLBACK_APPLY_LAG = 50
"""Raft entries a member without the gauge may have committed but not applied before it counts
as defragmenting: a defrag blocks applying, a busy but healthy member trails by a few."""


def member_fence_reason(snap: MemberSnapshot) -> str | None:
    """Why this member may be defragmenting now, or None when it says it is not."""
    name = snap.member.display_name
    if not snap.member.started:
        return None  # added but never started: no process that could be defragmenting
    metrics = snap.metrics
    if metrics is not None and metrics.defrag_inflight:
        return f"{name} is being defragmented now (etcd_disk_defrag_inflight=1)"
    if snap.is_learner:
        # Only a learner's own word fences: the sweep never defragments learners (so no agent
        # left one defragmenting), a learner's defrag costs no quorum, and one that is down must
        # not stop the maintenance of the voting members.
        return None
    if metrics is None:
        why = snap.metrics_error or "its metrics were not read"
        return f"cannot tell whether {name} is defragmenting: /metrics: {why}"
    if snap.status is None:
        why = snap.error or "it did not answer"
        return f"cannot tell whether {name} is defragmenting: status: {why}"
    if metrics.defrag_inflight is None and snap.status.apply_lag > FALLBACK_APPLY_LAG:
        return (
            f"{name} may be defragmenting now: its etcd {snap.status.version} exports no "
            f"etcd_disk_defrag_inflight and it trails {snap.status.apply_lag} raft entries in "
            f"applying (fence: {FALLBACK_APPLY_LAG})"
        )
    return None


def busy_members(snapshot: ClusterSnapshot) -> list[tuple[MemberSnapshot, str]]:
    """Every member that is, or may be, defragmenting now, with why: a learner only when its
    gauge says so, a voting member also when it cannot be asked."""
    return [(snap, r) for snap in snapshot.members if (r := member_fence_reason(snap)) is not None]


def fence_reasons(snapshot: ClusterSnapshot) -> list[str]:
    """Why each busy member is busy; empty: no member defragments."""
    return [reason for _, reason in busy_members(snapshot)]


def fence_refusal(snapshot: ClusterSnapshot) -> str | None:
    """The fence as a plan's refusal, naming the members first: "a defrag is running on m2: ..."
    when one says so, "may be running" when a member cannot tell."""
    busy = busy_members(snapshot)
    if not busy:
        return None
    certain = any(s.metrics is not None and s.metrics.defrag_inflight for s, _ in busy)
    names = ", ".join(s.member.display_name for s, _ in busy)
    verb = "is" if certain else "may be"
    return f"a defrag {verb} running on {names}: " + "; ".join(r for _, r in busy)


def defrag_fence(snapshot: ClusterSnapshot) -> str | None:
    """Why no defragmentation or leadership move may start now, or None when none runs.

    The snapshot must be fresh and taken with metrics: a status-only one names every member.
    """
    reasons = fence_reasons(snapshot)
    return "; ".join(reasons) if reasons else None

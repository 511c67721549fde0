"""Safety gates every disruptive step must pass: cluster health and quorum with a spare.

Kept apart from the plans so that the executor re-checks exactly the same rules on a fresh
snapshot right before each step (a plan is made from an older one), and the daemon's triggers
name the same reasons. Pure: a snapshot in, reasons out.
"""

from __future__ import annotations

from etcdagent.models import AlarmType
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import DefragSettings

# -- gates -------------------------------------------------------------------------------------


def cluster_gate_failures(snapshot: ClusterSnapshot, settings: DefragSettings) -> list[str]:
    """Why the cluster is not safe for a disruptive step now (empty: safe).

    NOSPACE does not block: recovering from it needs exactly these steps.
    """
    reasons: list[str] = []
    for snap in snapshot.voting:
        if not snap.reachable:
            reasons.append(f"{snap.member.display_name} does not answer ({snap.error})")
    if snapshot.leader_id is None:
        reasons.append("no leader")
    for alarm in snapshot.alarms:
        if alarm.alarm is AlarmType.CORRUPT:
            owner = snapshot.by_id(alarm.member_id)
            where = owner.member.display_name if owner else alarm.member_id_hex
            reasons.append(
                f"CORRUPT alarm on {where}: the members' data may differ; investigate before "
                "any maintenance"
            )
    target = snapshot.downgrade_target
    if target is not None:
        reasons.append(
            f"a downgrade of the cluster to {target} is in progress: maintenance waits until it "
            "completes or is cancelled (etcdctl downgrade cancel)"
        )
    for snap in snapshot.voting:
        if snap.status is not None and snap.status.apply_lag > settings.max_apply_lag:
            reasons.append(
                f"{snap.member.display_name} is {snap.status.apply_lag} raft entries behind in "
                f"applying (gate: {settings.max_apply_lag})"
            )
    return reasons


def quorum_failure(snapshot: ClusterSnapshot, target: MemberSnapshot) -> str | None:
    """Why blocking ``target`` (a defrag blocks all its requests) could cost quorum, if it could.

    The members answering without it must still be a quorum: the target is the one to spare.
    """
    others = [m for m in snapshot.voting if m.reachable and m.member.id != target.member.id]
    if len(others) >= snapshot.quorum:
        return None
    voting = len(snapshot.voting)
    if voting <= 2:
        return (
            f"a {voting}-member cluster has no member to spare: while "
            f"{target.member.display_name} is defragmented, writes would stop"
        )
    return (
        f"without {target.member.display_name} only {len(others)} of {voting} voting members "
        f"would answer; quorum needs {snapshot.quorum}"
    )


def is_local(snapshot: ClusterSnapshot, snap: MemberSnapshot, local: str) -> bool:
    """``--local-member`` names ``snap``: by name, by an advertised client URL, or as the member
    answering on the URL given (resolved by observe: ``ClusterSnapshot.local_member_id``)."""
    found = snapshot.local(local)
    return found is not None and found.member.id == snap.member.id


def local_member_unmatched(snapshot: ClusterSnapshot, local: str) -> str | None:
    """Why ``--local-member`` names no member of this cluster (None: it names one), listing the
    members that exist, so the fix is in the message (kubespray names members etcd1..3, not
    after their nodes)."""
    if snapshot.local(local) is not None:
        return None
    listed = "; ".join(
        f"{m.member.display_name} ({', '.join(m.member.client_urls) or 'no client URL'})"
        for m in snapshot.members
    )
    why = f": {snapshot.local_member_unresolved}" if snapshot.local_member_unresolved else ""
    return (
        f"--local-member {local!r} names no member of this cluster{why}; the members are "
        f"{listed}: set it to one of their names or client URLs"
    )

"""Decide how healthy the cluster is from a snapshot: a pure function, testable without etcd.

The verdict follows what etcd can still do, not what the agent can see: "unavailable" means no
quorum or no leader (writes fail), "degraded" means something is wrong but writes still work
(a member down, an alarm, a disagreement), "healthy" means nothing to report.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from etcdagent.observe.snapshot import ClusterSnapshot


class Verdict(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


class Health(BaseModel):
    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    reasons: tuple[str, ...] = ()


def assess(snapshot: ClusterSnapshot) -> Health:
    unavailable: list[str] = []
    degraded: list[str] = []
    voting = snapshot.voting
    answering = [m for m in voting if m.reachable]
    if len(answering) < snapshot.quorum:
        unavailable.append(
            f"no quorum: {len(answering)} of {len(voting)} voting members answer, "
            f"{snapshot.quorum} needed"
        )
    leader = snapshot.leader_id
    if leader is None:
        unavailable.append("no leader: no answering member reports one")
    elif snapshot.by_id(leader) is None:
        degraded.append(f"the reported leader {leader:x} is not in the member list")
    for snap in snapshot.members:
        if not snap.reachable:
            degraded.append(f"{snap.member.display_name} does not answer")
            continue
        assert snap.status is not None
        if leader is None:
            continue  # already the headline; "m1 has no leader" for each member adds nothing
        if snap.metrics is not None and snap.metrics.has_leader is False:
            degraded.append(f"{snap.member.display_name} has no leader")
        elif snap.status.leader and snap.status.leader != leader:
            degraded.append(
                f"{snap.member.display_name} follows {snap.status.leader:x}, the others {leader:x}"
            )
    for alarm in snapshot.alarms:
        owner = snapshot.by_id(alarm.member_id)
        where = owner.member.display_name if owner else alarm.member_id_hex
        degraded.append(f"{alarm.alarm.value} alarm on {where}")
    if snapshot.downgrade_target is not None:
        degraded.append(
            f"downgrade to {snapshot.downgrade_target} in progress (the agent does no maintenance "
            "meanwhile)"
        )
    if snapshot.alarms_error:
        degraded.append("alarms unknown: the alarm list could not be read")
    if unavailable:
        return Health(verdict=Verdict.UNAVAILABLE, reasons=tuple(unavailable + degraded))
    if degraded:
        return Health(verdict=Verdict.DEGRADED, reasons=tuple(degraded))
    return Health(verdict=Verdict.HEALTHY)

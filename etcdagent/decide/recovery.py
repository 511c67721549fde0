"""NOSPACE recovery: compact, defragment every member, disarm, prove a write.

Recovery ignores windows and the worth-it thresholds (the cluster refuses writes until it is done)
but not quorum, and refuses to disarm while the live data would fill the quota again at once.
"""

from __future__ import annotations

from etcdagent.decide.compaction import compact_step, compacted_revision, current_revision
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import Plan, Step, StepKind
from etcdagent.models import AlarmType
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings
from etcdagent.units import format_bytes

# -- NOSPACE recovery --------------------------------------------------------------------------


def plan_recover(snapshot: ClusterSnapshot, settings: Settings) -> Plan:
    """Compact (to the current revision), defragment every member, disarm, prove a write."""
    nospace = [a for a in snapshot.alarms if a.alarm is AlarmType.NOSPACE]
    corrupt = [a for a in snapshot.alarms if a.alarm is AlarmType.CORRUPT]
    if corrupt:
        return Plan(
            command="recover",
            refusal="CORRUPT alarm raised: compaction and defragmentation do not fix corruption; "
            "restore the member from a healthy one",
        )
    if not nospace:
        return Plan(command="recover", notes=("nothing to recover: no NOSPACE alarm is raised",))
    current = current_revision(snapshot)
    if current is None:
        return Plan(command="recover", refusal="no member reports a revision")
    notes = [
        "retention shortened to 0 for the recovery: the cluster refuses every write until space "
        "is reclaimed; watchers whose history is dropped will relist"
    ]
    steps: list[Step] = []
    compacted = compacted_revision(snapshot)
    if compacted is None or current > compacted:
        step, problem = compact_step(snapshot, current, "NOSPACE recovery")
        if step is None:
            return Plan(command="recover", refusal=problem)
        steps.append(step)
    defrags = plan_defrag(snapshot, settings, force=True, command="recover", no_spare_ok=True)
    if defrags.refusal:
        return Plan(command="recover", refusal=defrags.refusal, notes=tuple(notes))
    steps.extend(defrags.steps)
    notes.extend(defrags.notes)
    over = recover_disarm_problem(snapshot, settings.defrag.recover_max_quota_use)
    if over is not None:
        notes.append(f"the alarm may stay armed: {over} (checked again after defragmentation)")
    raised = ", ".join(
        (owner.member.display_name if (owner := snapshot.by_id(a.member_id)) else a.member_id_hex)
        for a in nospace
    )
    steps.append(
        Step(
            kind=StepKind.DISARM,
            reason=f"space reclaimed on every member; deactivates each NOSPACE alarm listed then "
            f"(now: {raised})",
            alarm=nospace[0],
        )
    )
    steps.append(
        Step(kind=StepKind.PROBE_WRITE, reason="prove that writes work again (put and delete)")
    )
    return Plan(command="recover", steps=tuple(steps), skipped=defrags.skipped, notes=tuple(notes))


def recover_disarm_problem(snapshot: ClusterSnapshot, max_quota_use: float) -> str | None:
    """Why disarming would be pointless: the data in use alone (nearly) fills the quota."""
    for snap in snapshot.voting:
        quota = snap.quota
        in_use = snap.db_size_in_use
        if quota is None or in_use is None:
            continue
        limit = int(quota * max_quota_use)
        if in_use >= limit:
            return (
                f"{snap.member.display_name} holds {format_bytes(in_use)} of live data against a "
                f"{format_bytes(quota)} quota: delete at least {format_bytes(in_use - limit + 1)} "
                f"(to get below {max_quota_use:.0%}) or raise --quota-backend-bytes"
            )
    return None
